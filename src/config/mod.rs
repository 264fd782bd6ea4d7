//! The `pipelines.yaml` model: what a user declares, checked before anything runs.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! turns into a default. [`load`] adds the checks serde cannot express and
//! reports each problem with the file, line and a fix.

mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

pub use load::{LoadedConfig, load};

/// A source's compiled regex and, per column, its group index.
pub type RegexGroups = (regex::Regex, Vec<Option<usize>>);

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
    pub queries: Vec<QueryConfig>,
    /// How often `update` queries emit their changed windows (processing time).
    /// A replay that runs faster than real time triggers after every micro-batch.
    #[serde(default = "default_trigger", with = "duration")]
    pub trigger: Duration,
    /// Where Parquet outputs and dead letters go; relative to pipelines.yaml.
    pub output_dir: Option<PathBuf>,
    /// How often sinks commit: a Parquet file is written per commit epoch.
    #[serde(default = "default_commit_interval", with = "duration")]
    pub commit_interval: Duration,
    /// Where state and source positions are checkpointed at every commit.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Values for the `$name` placeholders of the queries' SQL (thresholds
    /// and other constants an analyst tunes without editing SQL).
    #[serde(default)]
    pub params: BTreeMap<String, serde_yaml::Value>,
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

/// An event stream: where its bytes come from, how they decode, and its event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The table name queries select from; `<name>_late` holds its late rows.
    pub name: String,
    pub format: Format,
    /// Exactly one of `replay` (local files) and `kafka`.
    pub replay: Option<ReplayConfig>,
    pub kafka: Option<KafkaConfig>,
    pub columns: Vec<ColumnConfig>,
    pub event_time: EventTimeConfig,
    /// Bounded out-of-orderness: watermark = max event time seen - this delay.
    #[serde(with = "duration")]
    pub watermark_delay: Duration,
    #[serde(default)]
    pub csv: CsvOptions,
    /// For `format: regex`: a pattern with one named group per column,
    /// `(?P<column>...)`; a group that does not take part makes a NULL.
    pub regex: Option<String>,
    /// Adds the wall-clock time each row was read (UTC ms) as a `timestamp`
    /// column of this name: processing time, for lag measurements.
    pub processing_time_column: Option<String>,
}

impl SourceConfig {
    /// The Arrow schema of the source's rows: the declared columns, then the
    /// Kafka message timestamp when `kafka.timestamp_column` asks for it,
    /// then the processing time when `processing_time_column` does.
    pub fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.data_type(), true))
            .collect();
        for name in self.added_columns() {
            fields.push(Field::new(name, ColumnType::Timestamp.data_type(), true));
        }
        Arc::new(Schema::new(fields))
    }

    /// The columns the source adds after the declared ones.
    pub fn added_columns(&self) -> impl Iterator<Item = &String> {
        let kafka = self
            .kafka
            .as_ref()
            .and_then(|k| k.timestamp_column.as_ref());
        kafka
            .into_iter()
            .chain(self.processing_time_column.as_ref())
    }

    /// For `format: regex` with a `regex`: the compiled pattern and, per
    /// column, the index of its named group (`None`: no group of that name).
    /// `check` reports what is wrong; the decoder uses it as it is.
    pub fn regex_groups(&self) -> Option<Result<RegexGroups, regex::Error>> {
        if self.format != Format::Regex {
            return None;
        }
        let compiled = regex::Regex::new(self.regex.as_ref()?).map(|regex| {
            let groups = self
                .columns
                .iter()
                .map(|c| {
                    regex
                        .capture_names()
                        .position(|n| n == Some(c.name.as_str()))
                })
                .collect();
            (regex, groups)
        });
        Some(compiled)
    }

    /// Rows per micro-batch, whichever the source.
    pub fn batch_rows(&self) -> usize {
        match (&self.replay, &self.kafka) {
            (_, Some(kafka)) => kafka.batch_rows,
            (Some(replay), None) => replay.batch_rows,
            (None, None) => default_batch_rows(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Json,
    /// Text lines matched by the source's `regex` (web server logs and the like).
    Regex,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether each replayed file starts with a header line to skip.
    #[serde(default)]
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: default_delimiter(),
            header: false,
        }
    }
}

fn default_delimiter() -> char {
    ','
}

/// The embedded default source: replays the lines of local files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// A glob, relative to pipelines.yaml; matches are replayed in name order.
    /// Files ending in `.gz` are decompressed.
    pub path: String,
    /// Rows per micro-batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

fn default_batch_rows() -> usize {
    8192
}

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
    #[serde(default = "default_batch_timeout", with = "duration")]
    pub batch_timeout: Duration,
    /// A partition without messages for this long stops holding the
    /// watermark back (the watermark is the minimum over active partitions).
    #[serde(default = "default_idle_timeout", with = "duration")]
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
    #[serde(default, with = "optional_duration")]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// For a `timestamp` column written otherwise than ISO 8601: a chrono
    /// `strftime` pattern, e.g. `%d/%b/%Y:%H:%M:%S %z` (Apache logs) or
    /// `%H:%M:%S` (a time of day, taken on 1970-01-01 UTC).
    pub format: Option<String>,
}

/// Column types an analyst can declare, with the names SQL users know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    #[serde(alias = "int", alias = "integer")]
    Int32,
    #[serde(alias = "bigint", alias = "long")]
    Int64,
    #[serde(alias = "double")]
    Float64,
    #[serde(alias = "float")]
    Float32,
    #[serde(alias = "string", alias = "varchar", alias = "text")]
    Utf8,
    #[serde(alias = "bool")]
    Boolean,
    /// An ISO-8601 / RFC 3339 timestamp string, stored as UTC milliseconds.
    Timestamp,
}

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeConfig {
    pub column: String,
    /// Unit of an integer event-time column; ignored for `timestamp` columns.
    #[serde(default)]
    pub unit: EventTimeUnit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventTimeUnit {
    S,
    #[default]
    Ms,
    Us,
    Ns,
}

impl EventTimeUnit {
    /// How many of this unit make one millisecond (or, for seconds, the inverse).
    pub fn to_millis(self, value: i64) -> i64 {
        match self {
            EventTimeUnit::S => value.saturating_mul(1000),
            EventTimeUnit::Ms => value,
            EventTimeUnit::Us => value.div_euclid(1_000),
            EventTimeUnit::Ns => value.div_euclid(1_000_000),
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SinkConfig {
    /// Parquet files under `<output_dir>/<query>/`, one per commit epoch.
    Parquet(ParquetSinkConfig),
    /// Prints the first rows emitted to the terminal.
    Console(ConsoleSinkConfig),
    /// Bulk upserts into an Elasticsearch (or OpenSearch) index.
    Elasticsearch(ElasticsearchSinkConfig),
}

impl SinkConfig {
    /// One line for `explain`.
    pub fn describe(&self) -> String {
        match self {
            SinkConfig::Parquet(_) => "parquet (a file per commit epoch)".to_string(),
            SinkConfig::Console(c) => format!("console (first {} rows)", c.rows),
            SinkConfig::Elasticsearch(e) => format!(
                "elasticsearch {} index {} _id [{}] (bulk {} rows / {} bytes / {:?})",
                e.url,
                e.index,
                e.id_columns.join(", "),
                e.bulk_rows,
                e.bulk_bytes,
                e.flush_interval
            ),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// How many rows to print in all (the rest are only counted).
    #[serde(default = "default_console_rows")]
    pub rows: usize,
}

fn default_console_rows() -> usize {
    20
}

/// Each emitted row becomes a document whose `_id` is made of `id_columns`,
/// so a replayed or updated window overwrites its own document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Base URL of the cluster, e.g. `http://127.0.0.1:9200`.
    pub url: String,
    /// The index, or a pattern naming a timestamp column and a date format,
    /// e.g. `task-failures-{window_start:%Y.%m.%d}` (one index per day).
    pub index: String,
    /// The columns whose values make the document `_id`: for a window
    /// query, `window_start` and the GROUP BY keys.
    pub id_columns: Vec<String>,
    /// Credentials, read from environment variables (never from this file).
    pub auth: Option<ElasticsearchAuth>,
    /// A bulk request is sent when this many rows are buffered...
    #[serde(default = "default_bulk_rows")]
    pub bulk_rows: usize,
    /// ... or when the buffered request reaches this many bytes...
    #[serde(default = "default_bulk_bytes")]
    pub bulk_bytes: usize,
    /// ... or when the oldest buffered row is this old (and at every commit).
    #[serde(default = "default_flush_interval", with = "duration")]
    pub flush_interval: Duration,
    /// Retries of a bulk request answered 429/502/503/504 or not answered,
    /// and of items answered 429, before the pipeline stops with an error.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry's delay; each further retry doubles it (at most 30 s).
    #[serde(default = "default_retry_backoff", with = "duration")]
    pub retry_backoff: Duration,
    /// How long one request may take.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
}

/// Where the Elasticsearch sink finds its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ElasticsearchAuth {
    /// `basic: { username_env: ES_USERNAME, password_env: ES_PASSWORD }`
    Basic {
        username_env: String,
        password_env: String,
    },
    /// `api_key_env: ES_API_KEY`: the base64 `id:key` an API key's
    /// `encoded` field shows.
    ApiKeyEnv(String),
}

fn default_bulk_rows() -> usize {
    5_000
}

fn default_bulk_bytes() -> usize {
    5 * 1024 * 1024
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_retries() -> u32 {
    8
}

fn default_retry_backoff() -> Duration {
    Duration::from_millis(200)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// An optional [`duration`].
mod optional_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// `30s`, `2m`, `500ms`: human-readable durations in YAML.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{text}` ({e}); write it like `30s`, `2m` or `500ms`"
            ))
        })
    }
}
