//! Where results go: Parquet files for offline analysis, Elasticsearch for
//! dashboards, the terminal, and dead letters for what could not be processed.
//!
//! Sinks buffer what they are given and make it durable on `commit`, once
//! per commit epoch, so every output file belongs to exactly one epoch and a
//! checkpoint never covers a row a sink has not made durable.

mod console;
mod dead_letter;
pub mod elasticsearch;
mod parquet;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

pub use console::ConsoleSink;
pub use dead_letter::DeadLetterSink;
pub use elasticsearch::ElasticsearchSink;
pub use parquet::ParquetSink;

use self::elasticsearch::DocumentEncoder;
use crate::config::{LoadedConfig, QueryConfig, SinkConfig};
use crate::error::{Diagnostic, Result};
use crate::plan::QueryPlan;

pub enum Sink {
    Parquet(ParquetSink),
    Console(ConsoleSink),
    Elasticsearch(Box<ElasticsearchSink>),
}

impl Sink {
    /// Takes a batch of emitted rows; rows a sink refuses for good go to
    /// `dead_letters`. May wait for the sink (back-pressure).
    pub async fn write(
        &mut self,
        batch: &RecordBatch,
        dead_letters: &mut DeadLetterSink,
    ) -> Result<()> {
        match self {
            Sink::Parquet(s) => s.write(batch),
            Sink::Console(s) => s.write(batch),
            Sink::Elasticsearch(s) => s.write(batch, dead_letters).await,
        }
    }

    /// Sends what has waited long enough (called after every micro-batch).
    pub async fn flush_if_due(&mut self, dead_letters: &mut DeadLetterSink) -> Result<()> {
        match self {
            Sink::Elasticsearch(s) => s.flush_if_due(dead_letters).await,
            Sink::Parquet(_) | Sink::Console(_) => Ok(()),
        }
    }

    /// Makes everything written durable, as epoch `epoch`.
    pub async fn commit(&mut self, epoch: u64, dead_letters: &mut DeadLetterSink) -> Result<()> {
        match self {
            Sink::Parquet(s) => s.commit(epoch),
            Sink::Console(_) => Ok(()),
            Sink::Elasticsearch(s) => s.commit(dead_letters).await,
        }
    }
}

/// Checks each sink's settings against the query's output columns.
pub fn check_settings(
    loaded: &LoadedConfig,
    pipeline: &str,
    query: &QueryConfig,
    plan: &QueryPlan,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for sink in &query.sinks {
        if let SinkConfig::Elasticsearch(settings) = sink
            && let Err(found) = DocumentEncoder::new(settings, &plan.output_schema)
        {
            let anchor = format!("name: {}", query.name);
            problems.extend(found.into_iter().map(|p| {
                Diagnostic::new(
                    loaded.path.display().to_string(),
                    loaded.line_of(pipeline, &anchor, &format!("{}:", p.key)),
                    format!("query `{}`, elasticsearch sink: {}", query.name, p.message),
                )
                .with_fix(p.fix)
            }));
        }
    }
    problems
}

/// Starts the sinks of a query.
pub async fn start(
    loaded: &LoadedConfig,
    pipeline: &str,
    query: &QueryConfig,
    plan: &QueryPlan,
    output_dir: &Path,
    keep_through: Option<u64>,
) -> Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    for sink in &query.sinks {
        sinks.push(match sink {
            SinkConfig::Parquet(_) => Sink::Parquet(ParquetSink::create(
                &output_dir.join(&plan.name),
                Arc::clone(&plan.output_schema),
                keep_through,
            )?),
            SinkConfig::Console(c) => Sink::Console(ConsoleSink::new(&plan.name, c.rows)),
            SinkConfig::Elasticsearch(settings) => {
                let credentials =
                    elasticsearch::credentials(settings.auth.as_ref()).map_err(|variable| {
                        let anchor = format!("name: {}", query.name);
                        Diagnostic::new(
                            loaded.path.display().to_string(),
                            loaded.line_of(pipeline, &anchor, &variable),
                            format!(
                                "query `{}`, elasticsearch sink: environment variable `{variable}` is not set",
                                query.name
                            ),
                        )
                        .with_fix(format!("export {variable}=... before `streamsql run`"))
                    })?;
                Sink::Elasticsearch(Box::new(
                    ElasticsearchSink::start(
                        settings,
                        credentials,
                        pipeline,
                        &plan.name,
                        Arc::clone(&plan.output_schema),
                    )
                    .await?,
                ))
            }
        });
    }
    Ok(sinks)
}
