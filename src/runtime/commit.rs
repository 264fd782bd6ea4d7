//! The commit protocol, and starting a pipeline from its newest checkpoint.
//!
//! An epoch ends with [`Pipeline::commit`]: every sink makes its rows
//! durable (Parquet parts renamed into place, Elasticsearch acknowledged),
//! then the late rows and dead letters, then the checkpoint writes each
//! operator's state and each source's position and watermark, manifest
//! last. A restart loads the newest complete checkpoint and removes the
//! output parts of later epochs, which it writes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Pipeline, QueryNode, RunOptions, SourceNode, Tables, Workers};
use crate::config::{LoadedConfig, PipelineConfig};
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::metrics::{Metrics, Restored, Summary};
use crate::plan::plan_pipeline;
use crate::sink::{self, DeadLetterSink};
use crate::source::Source;
use crate::state::{
    Checkpoint, CheckpointStore, Manifest, QueryCheckpoint, RunLock, SourceCheckpoint,
};

const FROM_SCRATCH: &str = "undo the change, or run with --from-scratch to drop the \
                            checkpoints and recompute from the start of the input";

impl Pipeline {
    /// Plans the pipeline and restores its newest checkpoint (unless
    /// `options.from_scratch`): state, watermarks and source positions; the
    /// output files of epochs after the checkpoint are removed, to be written
    /// again.
    pub async fn build(loaded: &LoadedConfig, name: &str, options: &RunOptions) -> Result<Self> {
        let config = loaded.pipeline(name)?.clone();
        let parallelism = options
            .parallelism
            .unwrap_or_else(|| config.parallelism_or_cores());
        let plan = plan_pipeline(loaded, name, parallelism).await?;
        let output_dir = options
            .output_dir
            .clone()
            .unwrap_or_else(|| loaded.output_dir(name, &config));
        let lock = RunLock::acquire(&output_dir)?;
        // Lookup tables are read before anything else starts: a table that
        // cannot be read stops the run here.
        let (mut lookups, mut lookup_rows) = (Vec::new(), Vec::new());
        for (table, def) in config.tables.iter().zip(&plan.lookups) {
            let rows = (def.lookup.clone())
                .ok_or_else(|| crate::internal_error!("lookup table {} has no rows", def.name))?;
            lookups.push(crate::table::start(
                table,
                rows.clone(),
                &loaded.base_dir,
                name,
            )?);
            lookup_rows.push((table.name.clone(), rows));
        }
        let checkpoints = open_store(loaded, &config, &output_dir)?;
        let started = Instant::now();
        let checkpoint = if options.from_scratch {
            checkpoints.clear().await?;
            None
        } else {
            checkpoints.latest(name).await?
        };
        let keep_through = checkpoint.as_ref().map(|c| c.manifest.sequence);
        if let Some(sequence) = keep_through {
            checkpoints.discard_after(sequence).await?;
        }
        let mut sources = Vec::new();
        for source in &config.sources {
            let saved = source_state(loaded, checkpoint.as_ref(), &source.name)?;
            sources.push(SourceNode {
                name: source.name.clone(),
                delay: i64::try_from(source.watermark_delay.as_millis()).unwrap_or(i64::MAX),
                input: Source::start(
                    source,
                    &loaded.base_dir,
                    name,
                    saved.position.as_ref(),
                    options.inline_sources.get(&source.name),
                    parallelism,
                )?,
                position: saved.position,
                watermark: saved.watermark,
                late_sink: sink::parquet_parts(
                    &output_dir.join(format!("{}_late", source.name)),
                    source.schema(),
                    keep_through,
                )?,
                done: false,
                rows_in: 0,
                late_rows: 0,
            });
        }
        // Kafka lag and watermark lag move while a source is idle: the
        // metrics read them when scraped.
        let metrics = Arc::new(Metrics::new(
            name,
            sources
                .iter()
                .filter_map(|s| s.input.kafka_lag().cloned())
                .collect(),
            lookup_rows,
        ));
        let tables = Tables {
            sources: sources.len(),
        };
        let mut queries = Vec::new();
        for (planned, query) in plan.queries.into_iter().zip(&config.queries) {
            let inputs = (planned.inputs.iter())
                .map(|input| {
                    (plan.tables.iter().position(|t| t.name == *input)).ok_or_else(|| {
                        crate::internal_error!("{} reads an unknown table", planned.name)
                    })
                })
                .collect::<Result<Vec<usize>>>()?;
            let sinks = sink::start(
                loaded,
                name,
                query,
                &planned.output_schema,
                &output_dir,
                keep_through,
                &metrics,
            )
            .await?;
            // A query resumes at its inputs' watermarks, which the sources
            // (and the queries before it) have restored.
            let watermarks: Vec<i64> = (inputs.iter())
                .map(|input| match input.checked_sub(tables.query(0)) {
                    Some(q) => queries
                        .get(q)
                        .map_or(i64::MIN, |q: &QueryNode| q.watermark()),
                    None => sources[input / 2].watermark,
                })
                .collect();
            let mut node = QueryNode {
                name: query.name.clone(),
                inputs,
                workers: Workers::new(&query.name, planned.operators),
                sinks,
                watermarks: watermarks.clone(),
                rows_out: 0,
            };
            if let Some(checkpoint) = &checkpoint {
                restore_query(
                    loaded,
                    name,
                    checkpoint,
                    &query.name,
                    &mut node.workers,
                    &watermarks,
                )?;
            }
            queries.push(node);
        }
        let dead_letters = DeadLetterSink::create(&output_dir.join("dead_letters"), keep_through)?;
        let restored = checkpoint.map(|c| Restored {
            sequence: c.manifest.sequence,
            bytes: c.bytes,
            duration: started.elapsed(),
        });
        Ok(Self {
            name: name.to_string(),
            config,
            sources,
            queries,
            tables,
            dead_letters,
            output_dir,
            _lock: lock,
            checkpoints,
            epoch: keep_through.map_or(0, |s| s + 1),
            restored,
            metrics,
            lookups,
        })
    }

    /// Ends the epoch: the sinks make its rows durable, then the checkpoint
    /// records the state and positions they correspond to.
    pub(super) async fn commit(&mut self, summary: &mut Summary) -> Result<()> {
        for query in &mut self.queries {
            for sink in &mut query.sinks {
                sink.commit(self.epoch, &mut self.dead_letters).await?;
            }
        }
        for source in &mut self.sources {
            source
                .late_sink
                .commit(self.epoch, &mut self.dead_letters)
                .await?;
        }
        self.dead_letters.commit(self.epoch)?;
        let started = Instant::now();
        let bytes = self.checkpoint().await?;
        summary.checkpoints.record(started.elapsed(), bytes);
        self.metrics.checkpoint_written(started.elapsed());
        tracing::info!(
            pipeline = %self.name,
            sequence = self.epoch,
            bytes,
            millis = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        self.epoch += 1;
        Ok(())
    }

    /// Writes checkpoint `epoch`; returns its size in bytes.
    async fn checkpoint(&mut self) -> Result<u64> {
        let sources = self
            .sources
            .iter()
            .map(|s| {
                let saved = SourceCheckpoint {
                    position: s.position.clone(),
                    watermark: s.watermark,
                };
                (s.name.clone(), saved)
            })
            .collect();
        let mut queries = BTreeMap::new();
        let mut states = BTreeMap::new();
        for query in &mut self.queries {
            let Some(signature) = query.workers.signature()? else {
                continue;
            };
            let entry = QueryCheckpoint {
                signature,
                file: None,
                rows: 0,
                bytes: 0,
            };
            states.insert(query.name.clone(), query.workers.snapshot()?);
            queries.insert(query.name.clone(), entry);
        }
        let manifest = Manifest {
            format: crate::state::FORMAT_VERSION,
            pipeline: self.name.clone(),
            sequence: self.epoch,
            written_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            sources,
            queries,
        };
        let bytes = self.checkpoints.write(manifest, states).await?;
        for source in &self.sources {
            if let Some(position) = &source.position {
                source.input.checkpointed(position);
            }
        }
        Ok(bytes)
    }
}

/// The pipeline's checkpoint store: `checkpoint.location` (a URL, or a
/// directory relative to pipelines.yaml), by default `<output>/_checkpoints`.
fn open_store(
    loaded: &LoadedConfig,
    config: &PipelineConfig,
    output_dir: &Path,
) -> Result<CheckpointStore> {
    let location = loaded.checkpoint_location(config, output_dir);
    CheckpointStore::open(&location, config.checkpoint.retain).map_err(|e| {
        Diagnostic::new(
            loaded.path.display().to_string(),
            None,
            format!("cannot open checkpoint location `{location}`: {e}"),
        )
        .with_fix("set `checkpoint.location` to a writable directory or an s3:// URL")
        .into()
    })
}

/// Where source `name` resumes: its checkpointed position and watermark, or
/// the start of its input.
fn source_state(
    loaded: &LoadedConfig,
    checkpoint: Option<&Checkpoint>,
    name: &str,
) -> Result<SourceCheckpoint> {
    let Some(checkpoint) = checkpoint else {
        return Ok(SourceCheckpoint {
            position: None,
            watermark: i64::MIN,
        });
    };
    checkpoint
        .manifest
        .sources
        .get(name)
        .cloned()
        .ok_or_else(|| {
            Diagnostic::new(
                loaded.path.display().to_string(),
                None,
                format!(
                    "source `{name}` is not in checkpoint {} (it was added or renamed since)",
                    checkpoint.manifest.sequence
                ),
            )
            .with_fix(FROM_SCRATCH)
            .into()
        })
}

/// Loads query `query`'s state into its workers (each the key groups it
/// owns, whatever the parallelism that wrote it), refusing state written by
/// a query whose window, keys, aggregates or history differ.
fn restore_query(
    loaded: &LoadedConfig,
    pipeline: &str,
    checkpoint: &Checkpoint,
    query: &str,
    workers: &mut Workers,
    watermarks: &[i64],
) -> Result<()> {
    let Some(signature) = workers.signature()? else {
        return Ok(());
    };
    let sequence = checkpoint.manifest.sequence;
    let (sql_path, _) = loaded.sql_of(pipeline, query);
    let refuse = |message: String| -> StreamSqlError {
        Diagnostic::new(sql_path.display().to_string(), None, message)
            .with_fix(FROM_SCRATCH)
            .into()
    };
    let Some(saved) = checkpoint.manifest.queries.get(query) else {
        return Err(refuse(format!(
            "query `{query}` keeps state, but checkpoint {sequence} has none for it \
             (it was added, renamed or made stateful since)"
        )));
    };
    if saved.signature != signature {
        return Err(refuse(format!(
            "query `{query}` changed since checkpoint {sequence}, and its state no longer fits:\n  \
             checkpointed: {}\n  now:          {signature}",
            saved.signature,
        )));
    }
    workers.restore(&checkpoint.states[query], watermarks)
}
