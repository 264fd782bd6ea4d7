//! The Kafka source's settings: `kafka: { brokers, topic, group, ... }`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;
use crate::source::replay::default_batch_rows;

/// A Kafka topic, read by a consumer group (librdkafka).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group id; default `streamsql-<pipeline>-<source>`.
    pub group: Option<String>,
    /// Most rows per micro-batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// A micro-batch is cut after this long even when not full.
    #[serde(default = "default_batch_timeout", with = "duration::positive")]
    pub batch_timeout: Duration,
    /// A partition without messages for this long stops holding the
    /// watermark back (the watermark is the minimum over active partitions).
    #[serde(default = "default_idle_timeout", with = "duration::positive")]
    pub idle_timeout: Duration,
    /// Where a partition with no checkpointed or committed offset starts.
    #[serde(default)]
    pub start: StartOffset,
    /// Treat the topic as finite: stop (closing every window, like the end
    /// of a file) once every assigned partition has been read up to the end
    /// offset it had when it was assigned.
    #[serde(default)]
    pub stop_at_end: bool,
    /// Treat the topic as finite: stop (closing every window) once no
    /// message arrived for this long.
    #[serde(default, with = "duration::optional")]
    pub stop_when_idle: Option<Duration>,
    /// Adds the message timestamp (UTC ms) as a `timestamp` column of this name.
    pub timestamp_column: Option<String>,
    /// More librdkafka consumer properties (e.g. security settings).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_batch_timeout() -> Duration {
    Duration::from_millis(500)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartOffset {
    #[default]
    Earliest,
    Latest,
}
