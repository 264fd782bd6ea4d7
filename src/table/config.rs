//! What a lookup table declares in pipelines.yaml: its name, format,
//! columns, key, and where its rows come from ([`TableInput`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;
use crate::source::{ColumnConfig, CsvOptions};

/// A table that queries join by key: a file, or a compacted Kafka topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "TableFields")]
pub struct TableConfig {
    /// The table name queries join with.
    pub name: String,
    pub format: TableFormat,
    pub input: TableInput,
    /// The columns of a row; a Parquet file's columns are found by name.
    pub columns: Vec<ColumnConfig>,
    /// Of rows with the same values here, a file keeps the last. (A Kafka
    /// table is keyed by the message key, as compaction is.)
    pub key: Vec<String>,
    pub csv: CsvOptions,
    /// How often a file is checked for a change, and how often the changes
    /// read from a topic are applied.
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Csv,
    Json,
    Parquet,
}

/// Where a table's rows come from: exactly one of `file` and `kafka`.
#[derive(Debug, Clone)]
pub enum TableInput {
    /// A CSV, JSON-lines (either may be gzipped) or Parquet file, relative
    /// to pipelines.yaml, read again whenever it changes.
    File(PathBuf),
    /// A (compacted) topic: the latest value per message key, a message
    /// without a value deleting its key.
    Kafka(KafkaTableConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTableConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    pub topic: String,
    /// How long the run waits, at start, to read the topic to its end.
    #[serde(default = "default_load_timeout", with = "duration::positive")]
    pub load_timeout: Duration,
    /// More librdkafka consumer properties (e.g. security settings).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_load_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(10)
}

/// The keys of a table as written in pipelines.yaml, before [`TableInput`]
/// makes `file` and `kafka` one choice.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFields {
    name: String,
    format: TableFormat,
    file: Option<PathBuf>,
    kafka: Option<KafkaTableConfig>,
    columns: Vec<ColumnConfig>,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    csv: CsvOptions,
    #[serde(default = "default_refresh_interval", with = "duration::positive")]
    refresh_interval: Duration,
}

impl TryFrom<TableFields> for TableConfig {
    type Error = String;

    fn try_from(f: TableFields) -> Result<Self, String> {
        let input = match (f.file, f.kafka) {
            (Some(file), None) => TableInput::File(file),
            (None, Some(kafka)) => TableInput::Kafka(kafka),
            _ => {
                return Err(format!(
                    "table `{}` needs exactly one of `file` (`file: machines.csv`) and `kafka` \
                     (`kafka: {{ brokers: ..., topic: ... }}`)",
                    f.name
                ));
            }
        };
        Ok(Self {
            name: f.name,
            format: f.format,
            input,
            columns: f.columns,
            key: f.key,
            csv: f.csv,
            refresh_interval: f.refresh_interval,
        })
    }
}

impl TableConfig {
    /// What the table is and what bounds it, for `explain`.
    pub fn describe(&self) -> String {
        let rows = match (&self.input, self.key.as_slice()) {
            (TableInput::File(path), []) => format!("every row of {}", path.display()),
            (TableInput::File(path), key) => format!(
                "the last row per ({}) of {}",
                key.join(", "),
                path.display()
            ),
            (TableInput::Kafka(kafka), _) => format!(
                "the latest value per message key of Kafka topic `{}`",
                kafka.topic
            ),
        };
        let refresh = match &self.input {
            TableInput::File(_) => "read again when the file changes, checked",
            TableInput::Kafka(_) => "new messages applied",
        };
        format!(
            "lookup table {}: {rows}, held in memory (bounded by the table's size); {refresh} \
             every {:?}; joined with each event row as it is when the row is processed",
            self.name, self.refresh_interval
        )
    }
}
