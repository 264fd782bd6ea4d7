//! What a source declares in pipelines.yaml: its name, format, columns, event
//! time and watermark, and which connector reads it ([`SourceInput`]).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use super::kafka::KafkaConfig;
use super::replay::ReplayConfig;
use crate::config::duration;

/// A source's compiled regex and, per column, its group index.
pub type RegexGroups = (regex::Regex, Vec<Option<usize>>);

/// An event stream: where its bytes come from, how they decode, and its event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SourceFields")]
pub struct SourceConfig {
    /// The table name queries select from; `<name>_late` holds its late rows.
    pub name: String,
    pub format: Format,
    /// Where the bytes come from.
    pub input: SourceInput,
    pub columns: Vec<ColumnConfig>,
    pub event_time: EventTimeConfig,
    /// Bounded out-of-orderness: watermark = max event time seen - this delay.
    pub watermark_delay: Duration,
    /// Longer records (lines, Kafka messages) become dead letters unread,
    /// so one runaway line cannot take the memory of the whole run.
    pub max_record_bytes: usize,
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
        let mut fields: Vec<Field> = self.columns.iter().map(ColumnConfig::field).collect();
        for name in self.added_columns() {
            fields.push(Field::new(name, ColumnType::Timestamp.data_type(), true));
        }
        Arc::new(Schema::new(fields))
    }

    /// The columns the source adds after the declared ones.
    pub fn added_columns(&self) -> impl Iterator<Item = &String> {
        let kafka = match &self.input {
            SourceInput::Kafka(kafka) => kafka.timestamp_column.as_ref(),
            SourceInput::Replay(_) => None,
        };
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
        match &self.input {
            SourceInput::Kafka(kafka) => kafka.batch_rows,
            SourceInput::Replay(replay) => replay.batch_rows,
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

/// Where a source's bytes come from: exactly one of the connectors, written
/// as its key (`replay: { path: ... }` or `kafka: { brokers: ..., topic: ... }`).
#[derive(Debug, Clone)]
pub enum SourceInput {
    /// Local files, replayed line by line (the embedded default).
    Replay(ReplayConfig),
    /// A Kafka topic, read by a consumer group.
    Kafka(KafkaConfig),
}

/// The keys of a source as written in pipelines.yaml (`replay` and `kafka`
/// side by side), before [`SourceInput`] makes them one choice.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFields {
    /// The table name queries select from; `<name>_late` holds its late rows.
    name: String,
    format: Format,
    /// Exactly one of `replay` (local files) and `kafka`.
    replay: Option<ReplayConfig>,
    kafka: Option<KafkaConfig>,
    columns: Vec<ColumnConfig>,
    event_time: EventTimeConfig,
    /// Bounded out-of-orderness: watermark = max event time seen - this delay.
    #[serde(with = "duration")]
    watermark_delay: Duration,
    #[serde(default = "default_max_record_bytes")]
    max_record_bytes: usize,
    #[serde(default)]
    csv: CsvOptions,
    /// For `format: regex`: a pattern with one named group per column,
    /// `(?P<column>...)`; a group that does not take part makes a NULL.
    regex: Option<String>,
    /// Adds the wall-clock time each row was read (UTC ms) as a `timestamp`
    /// column of this name: processing time, for lag measurements.
    processing_time_column: Option<String>,
}

impl TryFrom<SourceFields> for SourceConfig {
    type Error = String;

    fn try_from(f: SourceFields) -> Result<Self, String> {
        let input = match (f.replay, f.kafka) {
            (Some(replay), None) => SourceInput::Replay(replay),
            (None, Some(kafka)) => SourceInput::Kafka(kafka),
            _ => {
                return Err(format!(
                    "source `{}` needs exactly one of `replay` (local files: `replay: {{ path: ... }}`) \
                     and `kafka` (`kafka: {{ brokers: ..., topic: ... }}`)",
                    f.name
                ));
            }
        };
        Ok(Self {
            name: f.name,
            format: f.format,
            input,
            columns: f.columns,
            event_time: f.event_time,
            watermark_delay: f.watermark_delay,
            max_record_bytes: f.max_record_bytes,
            csv: f.csv,
            regex: f.regex,
            processing_time_column: f.processing_time_column,
        })
    }
}

/// 1 MiB, Kafka's default message size limit.
fn default_max_record_bytes() -> usize {
    1 << 20
}

/// The largest `max_record_bytes` accepted: 256 MiB.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

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

impl ColumnConfig {
    /// The column as an Arrow field: its declared type, nullable (an empty
    /// value is NULL).
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.column_type.data_type(), true)
    }
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
    /// Rows whose event time is further ahead of the wall clock than this
    /// become dead letters instead of holding the watermark in the future.
    #[serde(default, with = "duration::optional")]
    pub max_ahead: Option<std::time::Duration>,
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
    /// `value` of this unit in milliseconds; `None` when that overflows.
    pub fn to_millis(self, value: i64) -> Option<i64> {
        match self {
            EventTimeUnit::S => value.checked_mul(1000),
            EventTimeUnit::Ms => Some(value),
            EventTimeUnit::Us => Some(value.div_euclid(1_000)),
            EventTimeUnit::Ns => Some(value.div_euclid(1_000_000)),
        }
    }
}
