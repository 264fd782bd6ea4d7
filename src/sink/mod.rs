//! Where results go: Parquet files for offline analysis, Elasticsearch
//! (Kibana) and Prometheus (Grafana) for dashboards, the terminal, and dead
//! letters for what could not be processed.
//!
//! Every sink is a [`Sink`]: it buffers what it is given and makes it
//! durable on `commit`, once per commit epoch, so every output file belongs
//! to exactly one epoch and a checkpoint never covers a row a sink has not
//! made durable. Each sink kind owns its settings (`sink/<kind>` or the
//! kind's file); [`SinkConfig`] is the one place that knows them all.

mod console;
mod dead_letter;
pub mod elasticsearch;
mod parquet;
pub mod prometheus;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::Deserialize;

pub use console::ConsoleSinkConfig;
pub(crate) use dead_letter::{DeadLetter, DeadLetterKind, DeadLetterSink};
pub use elasticsearch::ElasticsearchSinkConfig;
pub use parquet::ParquetSinkConfig;
pub use prometheus::PrometheusSinkConfig;

use crate::config::{LoadedConfig, QueryConfig};
use crate::error::{Diagnostic, Result};
use crate::metrics::Metrics;
use crate::plan::QueryPlan;

/// One destination of a query's rows.
#[async_trait]
pub(crate) trait Sink: Send {
    /// Names it in metrics, logs and the run summary.
    fn name(&self) -> &str;

    /// Takes a batch of emitted rows; rows it refuses for good go to
    /// `dead_letters`. May wait for the destination (back-pressure).
    async fn write(&mut self, batch: &RecordBatch, dead_letters: &mut DeadLetterSink)
    -> Result<()>;

    /// Sends what has waited long enough (called after every micro-batch and
    /// on the runtime's timer).
    async fn flush_if_due(&mut self, _dead_letters: &mut DeadLetterSink) -> Result<()> {
        Ok(())
    }

    /// Makes everything written durable, as epoch `epoch`.
    async fn commit(&mut self, epoch: u64, dead_letters: &mut DeadLetterSink) -> Result<()>;

    /// Requests or items it had to send again.
    fn retries(&self) -> u64 {
        0
    }

    /// One line about its work for the run summary, if it has something to say.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// A sink as declared under a query's `sinks:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SinkConfig {
    /// Parquet files under `<output_dir>/<query>/`, one per commit epoch.
    Parquet(ParquetSinkConfig),
    /// Prints the first rows emitted to the terminal.
    Console(ConsoleSinkConfig),
    /// Bulk upserts into an Elasticsearch (or OpenSearch) index.
    Elasticsearch(ElasticsearchSinkConfig),
    /// Window results as Prometheus gauges (scraped, or pushed).
    Prometheus(PrometheusSinkConfig),
}

impl SinkConfig {
    /// One line for `explain`.
    pub fn describe(&self, query: &str) -> String {
        match self {
            SinkConfig::Parquet(_) => "parquet (a file per commit epoch)".to_string(),
            SinkConfig::Console(c) => format!("console (first {} rows)", c.rows),
            SinkConfig::Elasticsearch(e) => e.describe(),
            SinkConfig::Prometheus(p) => p.describe(query),
        }
    }
}

/// Where a sink's setting problems are reported: at their key in the
/// query's block of pipelines.yaml.
pub(crate) struct SettingsAt<'a> {
    pub loaded: &'a LoadedConfig,
    pub pipeline: &'a str,
    pub query: &'a str,
    /// `elasticsearch`, `prometheus`.
    pub sink: &'static str,
}

impl SettingsAt<'_> {
    pub fn problem(&self, key: &str, message: String, fix: impl Into<String>) -> Diagnostic {
        let anchor = format!("name: {}", self.query);
        Diagnostic::new(
            self.loaded.path.display().to_string(),
            self.loaded
                .line_of(self.pipeline, &anchor, &format!("{key}:")),
            format!("query `{}`, {} sink: {message}", self.query, self.sink),
        )
        .with_fix(fix)
    }
}

/// Checks each sink's settings against the query's output columns.
pub(crate) fn check_settings(
    loaded: &LoadedConfig,
    pipeline: &str,
    query: &QueryConfig,
    plan: &QueryPlan,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let schema = &plan.output_schema;
    for sink in &query.sinks {
        let at = |sink| SettingsAt {
            loaded,
            pipeline,
            query: &query.name,
            sink,
        };
        problems.extend(match sink {
            SinkConfig::Elasticsearch(settings) => {
                elasticsearch::check(settings, schema, &at("elasticsearch"))
            }
            SinkConfig::Prometheus(settings) => {
                prometheus::check(settings, schema, &at("prometheus"))
            }
            SinkConfig::Parquet(_) | SinkConfig::Console(_) => Vec::new(),
        });
    }
    problems
}

/// Starts the sinks of a query. Parquet parts of epochs after `keep_through`
/// are removed (see [`parquet_parts`]).
pub(crate) async fn start(
    loaded: &LoadedConfig,
    pipeline: &str,
    query: &QueryConfig,
    schema: &SchemaRef,
    output_dir: &Path,
    keep_through: Option<u64>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for sink in &query.sinks {
        sinks.push(match sink {
            SinkConfig::Parquet(_) => parquet_parts(
                &output_dir.join(&query.name),
                Arc::clone(schema),
                keep_through,
            )?,
            SinkConfig::Console(c) => Box::new(console::ConsoleSink::new(&query.name, c.rows)),
            SinkConfig::Elasticsearch(settings) => Box::new(
                elasticsearch::ElasticsearchSink::start(
                    settings,
                    loaded,
                    pipeline,
                    &query.name,
                    Arc::clone(schema),
                )
                .await?,
            ),
            SinkConfig::Prometheus(settings) => Box::new(prometheus::PrometheusSink::start(
                settings,
                pipeline,
                &query.name,
                schema,
                Arc::clone(metrics),
            )?),
        });
    }
    Ok(sinks)
}

/// Parquet parts in `dir`, one per commit epoch (also a source's late rows).
/// Parts of epochs after `keep_through` (all, when `None`: a fresh start)
/// are removed: they belong to epochs no checkpoint covers, which this run
/// writes again.
pub(crate) fn parquet_parts(
    dir: &Path,
    schema: SchemaRef,
    keep_through: Option<u64>,
) -> Result<Box<dyn Sink>> {
    Ok(Box::new(parquet::ParquetSink::create(
        dir,
        schema,
        keep_through,
    )?))
}
