//! The `pipelines.yaml` model: what a user declares, checked before anything runs.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! turns into a default. [`load`] adds the checks serde cannot express and
//! reports each problem with the file, line and a fix. Each connector owns
//! its settings ([`crate::source::kafka::KafkaConfig`],
//! [`crate::sink::elasticsearch::ElasticsearchSinkConfig`], ...); this module
//! holds what is the pipeline's own.

pub(crate) mod duration;
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::sink::SinkConfig;
pub use crate::source::{SourceConfig, SourceInput};
pub use crate::table::TableConfig;
pub(crate) use load::is_identifier;
pub use load::{LoadedConfig, load};

/// The whole `pipelines.yaml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinesFile {
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

/// One pipeline: sources, the queries over them, and where results go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default)]
    pub description: String,
    pub sources: Vec<SourceConfig>,
    /// Lookup tables (files or compacted topics) that queries join by key.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    pub queries: Vec<QueryConfig>,
    /// How often `update` queries emit their changed windows (processing time).
    /// A replay that runs faster than real time triggers after every micro-batch;
    /// `0s` triggers after every micro-batch.
    #[serde(default = "default_trigger", with = "duration")]
    pub trigger: Duration,
    /// Where Parquet outputs and dead letters go; relative to pipelines.yaml.
    pub output_dir: Option<PathBuf>,
    /// How often sinks commit: a Parquet file is written per commit epoch
    /// (`0s`: after every micro-batch that brought rows).
    #[serde(default = "default_commit_interval", with = "duration")]
    pub commit_interval: Duration,
    /// Where state and source positions are checkpointed at every commit.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Values for the `$name` placeholders of the queries' SQL (thresholds
    /// and other constants an analyst tunes without editing SQL).
    #[serde(default)]
    pub params: BTreeMap<String, serde_yaml::Value>,
    /// How many workers run each query, each owning a share of its key
    /// groups, and how many threads decode each source (default: the
    /// machine's cores). Results do not depend on it.
    pub parallelism: Option<usize>,
}

/// The most threads `parallelism` may ask for.
pub const MAX_PARALLELISM: usize = crate::state::KEY_GROUPS as usize;

impl PipelineConfig {
    /// `parallelism`, or the machine's cores when it is not set.
    pub fn parallelism_or_cores(&self) -> usize {
        self.parallelism.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_PARALLELISM)
        })
    }
}

/// Checkpoints: one per commit epoch, the newest `retain` kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// A directory (relative to pipelines.yaml) or an object store URL such as
    /// `s3://bucket/prefix`; default `<output_dir>/_checkpoints`.
    pub location: Option<String>,
    /// How many complete checkpoints to keep (older ones are deleted).
    #[serde(default = "default_retain")]
    pub retain: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            location: None,
            retain: default_retain(),
        }
    }
}

fn default_retain() -> usize {
    3
}

fn default_trigger() -> Duration {
    Duration::from_secs(1)
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The query's result table name (for sinks, downstream queries, `query`).
    pub name: String,
    /// Path of the `.sql` file, relative to pipelines.yaml.
    pub sql: PathBuf,
    #[serde(default)]
    pub emit: EmitMode,
    /// Written as `- parquet: {}`, `- console: { rows: 5 }`.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub sinks: Vec<SinkConfig>,
}

/// When a windowed query emits rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmitMode {
    /// Every window whose value changed, at every trigger (for upserts).
    Update,
    /// Each window once, when the watermark passes its end (for append-only sinks).
    #[default]
    Final,
}
