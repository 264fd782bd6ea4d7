//! The micro-batch loop: pull a batch from a source, split off late rows, run
//! every query in declaration order (each may read what earlier ones emitted),
//! advance the watermark, close windows, and every commit epoch make the
//! sinks' files durable, then checkpoint state and source positions.

mod progress;
mod restore;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::config::{EmitMode, LoadedConfig, PipelineConfig};
use crate::error::{Diagnostics, Result, StreamSqlError};
use crate::history::KeyHistory;
use crate::plan::{BatchSlot, OverPlan, QueryPlan, QueryShape, TableDef, TableRole, WindowedPlan};
use crate::sink::{self, DeadLetterSink, ParquetSink, Sink};
use crate::source::{InlineBatch, KafkaLag, Source, SourceBatch, SourcePosition};
use crate::state::{CheckpointStore, Manifest, QueryCheckpoint, QueryState, SourceCheckpoint};
use crate::window::{WindowOperator, WindowSpec};
pub use progress::{CheckpointStats, Restored, Summary};

use crate::metrics::{Metrics, Snapshot};

/// Plans every query of a pipeline, reporting all problems at once.
pub async fn plan_pipeline(loaded: &LoadedConfig, name: &str) -> Result<Vec<QueryPlan>> {
    let pipeline = loaded.pipeline(name)?;
    let mut tables = Vec::new();
    for source in &pipeline.sources {
        let schema = source.schema();
        tables.push(TableDef {
            name: source.name.clone(),
            schema: Arc::clone(&schema),
            role: TableRole::Source {
                event_time: source.event_time.column.clone(),
            },
        });
        tables.push(TableDef {
            name: format!("{}_late", source.name),
            schema,
            role: TableRole::Late,
        });
    }
    let mut plans = Vec::new();
    let mut problems = Vec::new();
    for query in &pipeline.queries {
        let (path, sql) = loaded.sql_of(name, &query.name);
        match QueryPlan::build(
            &query.name,
            path,
            sql,
            query.emit,
            &tables,
            &pipeline.params,
        )
        .await
        {
            Ok(plan) => {
                problems.extend(sink::check_settings(loaded, name, query, &plan));
                // A windowed query's rows are window results, once each
                // unless it emits updates; a query reading another's rows
                // inherits what they are.
                let role = match &plan.shape {
                    QueryShape::Windowed(_) => TableRole::Query {
                        windows: true,
                        updates: plan.emit == EmitMode::Update,
                    },
                    _ => match tables
                        .iter()
                        .find(|t| t.name == plan.input)
                        .map(|t| &t.role)
                    {
                        Some(TableRole::Query { windows, updates }) => TableRole::Query {
                            windows: *windows,
                            updates: *updates,
                        },
                        _ => TableRole::Query {
                            windows: false,
                            updates: false,
                        },
                    },
                };
                tables.push(TableDef {
                    name: query.name.clone(),
                    schema: Arc::clone(&plan.output_schema),
                    role,
                });
                plans.push(plan);
            }
            Err(StreamSqlError::Invalid(Diagnostics(found))) => problems.extend(found),
            Err(other) => return Err(other),
        }
    }
    if !problems.is_empty() {
        return Err(StreamSqlError::Invalid(Diagnostics(problems)));
    }
    Ok(plans)
}

/// Options of `streamsql run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the pipeline's `output_dir`.
    pub output_dir: Option<PathBuf>,
    /// Print the live progress line.
    pub progress: bool,
    /// Delete the checkpoints and start from the beginning of the input.
    pub from_scratch: bool,
    /// Stop after this many micro-batches, with a checkpoint, without
    /// closing the open windows: the next run continues from there.
    pub stop_after_batches: Option<u64>,
    /// Rows to read instead of the declared inputs, by source (golden tests).
    pub inline_sources: HashMap<String, Vec<InlineBatch>>,
}

struct SourceRuntime {
    name: String,
    delay: i64,
    input: Source,
    /// How far the source has been read (for checkpoints).
    position: Option<SourcePosition>,
    /// Watermark in UTC ms; `i64::MIN` until the first row.
    watermark: i64,
    late_sink: ParquetSink,
    done: bool,
    /// Rows decoded and rows late, for metrics.
    rows_in: u64,
    late_rows: u64,
}

struct QueryRuntime {
    plan: QueryPlan,
    /// Index of the source it windows, with the operator.
    window: Option<(usize, WindowOperator)>,
    /// For window functions: each key's earlier rows.
    history: Option<KeyHistory>,
    sinks: Vec<Sink>,
    rows_out: u64,
}

impl QueryRuntime {
    /// What the query keeps between micro-batches, if anything.
    fn state(&mut self) -> Option<&mut dyn QueryState> {
        match (&mut self.window, &mut self.history) {
            (Some((_, operator)), _) => Some(operator),
            (None, Some(history)) => Some(history),
            (None, None) => None,
        }
    }
}

pub struct Pipeline {
    name: String,
    config: PipelineConfig,
    sources: Vec<SourceRuntime>,
    queries: Vec<QueryRuntime>,
    dead_letters: DeadLetterSink,
    output_dir: PathBuf,
    checkpoints: CheckpointStore,
    /// The commit epoch in progress; checkpoint `epoch` closes it.
    epoch: u64,
    restored: Option<Restored>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Plans the pipeline and restores its newest checkpoint (unless
    /// `options.from_scratch`): state, watermarks and source positions; the
    /// output files of epochs after the checkpoint are removed, to be written
    /// again.
    pub async fn build(loaded: &LoadedConfig, name: &str, options: &RunOptions) -> Result<Self> {
        let config = loaded.pipeline(name)?.clone();
        let plans = plan_pipeline(loaded, name).await?;
        let output_dir = options
            .output_dir
            .clone()
            .unwrap_or_else(|| loaded.output_dir(name, &config));
        let checkpoints = restore::open_store(loaded, &config, &output_dir)?;
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
            let saved = restore::source_state(loaded, checkpoint.as_ref(), &source.name)?;
            sources.push(SourceRuntime {
                name: source.name.clone(),
                delay: source.watermark_delay.as_millis() as i64,
                input: Source::start(
                    source,
                    &loaded.base_dir,
                    name,
                    saved.position.as_ref(),
                    options.inline_sources.get(&source.name),
                )?,
                position: saved.position,
                watermark: saved.watermark,
                late_sink: ParquetSink::create(
                    &output_dir.join(format!("{}_late", source.name)),
                    source.schema(),
                    keep_through,
                )?,
                done: false,
                rows_in: 0,
                late_rows: 0,
            });
        }
        let mut queries = Vec::new();
        for (plan, query) in plans.into_iter().zip(&config.queries) {
            let window = match &plan.shape {
                QueryShape::Windowed(windowed) => {
                    let WindowedPlan { aggregate, pre, .. } = windowed.as_ref();
                    let source = sources
                        .iter()
                        .position(|s| s.name == plan.input)
                        .ok_or_else(|| {
                            StreamSqlError::Internal(format!("{} windows a non-source", plan.name))
                        })?;
                    let operator =
                        WindowOperator::new(aggregate.clone(), &pre.schema(), plan.emit)?;
                    Some((source, operator))
                }
                _ => None,
            };
            let history = match &plan.shape {
                QueryShape::Over(over) => Some(KeyHistory::new(
                    over.history.clone(),
                    over.pre.schema(),
                    Arc::clone(over.post_input.schema()),
                )?),
                _ => None,
            };
            let sinks = sink::start(loaded, name, query, &plan, &output_dir, keep_through).await?;
            let mut runtime = QueryRuntime {
                plan,
                window,
                history,
                sinks,
                rows_out: 0,
            };
            if let (Some(checkpoint), Some(state)) = (&checkpoint, runtime.state()) {
                restore::query_state(loaded, name, checkpoint, &query.name, state)?;
            }
            queries.push(runtime);
        }
        // Kafka lag and watermark lag move while a source is idle: the
        // metrics read them when scraped.
        let metrics = Arc::new(Metrics::new(
            name,
            sources
                .iter()
                .filter_map(|s| s.input.kafka_lag().cloned())
                .collect(),
        ));
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
            dead_letters,
            output_dir,
            checkpoints,
            epoch: keep_through.map_or(0, |s| s + 1),
            restored,
            metrics,
        })
    }

    /// The run's metrics, updated after every micro-batch (to serve them,
    /// see [`crate::metrics::serve`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn output_dir(&self) -> &PathBuf {
        &self.output_dir
    }

    /// The checkpoint this pipeline was restored from, if any.
    pub fn restored(&self) -> Option<&Restored> {
        self.restored.as_ref()
    }

    /// Runs until every source is exhausted, then flushes all windows.
    pub async fn run(mut self, options: &RunOptions) -> Result<Summary> {
        let mut summary = Summary::new(&self.name);
        summary.restored = self.restored.clone();
        tracing::info!(
            pipeline = %self.name,
            restored_checkpoint = self.restored.as_ref().map(|r| r.sequence),
            "pipeline started"
        );
        let started = Instant::now();
        let mut batches = 0u64;
        let mut last_commit = Instant::now();
        let mut last_trigger = Instant::now();
        let mut progress = progress::Progress::new(options.progress);

        let mut next = 0;
        // Ctrl-C (SIGINT) stops between micro-batches, with a checkpoint.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        while let Some(index) = self.next_source(next) {
            next = index + 1;
            let next_batch = tokio::select! {
                biased;
                _ = &mut interrupted => {
                    summary.stopped_early = true;
                    break;
                }
                batch = self.sources[index].input.next_batch() => batch,
            };
            let batch = match next_batch {
                Some(batch) => batch?,
                None => {
                    self.sources[index].done = true;
                    continue;
                }
            };
            let batch_started = Instant::now();
            let trigger = last_trigger.elapsed() >= self.config.trigger;
            if trigger {
                last_trigger = Instant::now();
            }
            self.process(index, batch, trigger, &mut summary).await?;
            for query in &mut self.queries {
                for sink in &mut query.sinks {
                    sink.flush_if_due(&mut self.dead_letters).await?;
                }
            }
            batches += 1;
            if options.stop_after_batches == Some(batches) {
                summary.stopped_early = true;
                break;
            }
            self.metrics.batch_processed(batch_started.elapsed());
            if last_commit.elapsed() >= self.config.commit_interval {
                self.commit(&mut summary).await?;
                last_commit = Instant::now();
            }
            let snapshot = self.snapshot();
            self.metrics.publish(&snapshot);
            progress.update(&summary, &snapshot, started.elapsed());
        }
        if !summary.stopped_early {
            // End of a finite input: every window is complete.
            for index in 0..self.sources.len() {
                self.flush_source(index).await?;
            }
        }
        summary.state_groups = self.state_size().0;
        self.commit(&mut summary).await?;
        summary.elapsed = started.elapsed();
        summary.rows_out = self
            .queries
            .iter()
            .map(|q| (q.plan.name.clone(), q.rows_out))
            .collect();
        summary.dead_letters = self.dead_letters.counts.clone();
        summary.elasticsearch = self
            .queries
            .iter()
            .flat_map(|q| &q.sinks)
            .filter_map(|sink| match sink {
                Sink::Elasticsearch(s) => Some((s.name().to_string(), s.stats)),
                _ => None,
            })
            .collect();
        progress.finish();
        // The end of input emitted the last windows: a last scrape sees them.
        self.metrics.publish(&self.snapshot());
        tracing::info!(
            pipeline = %self.name,
            events_in = summary.events_in,
            late = summary.late,
            dead_letters = self.dead_letters.total(),
            seconds = summary.elapsed.as_secs_f64(),
            "pipeline finished"
        );
        Ok(summary)
    }

    /// The next source with data, round-robin from `from`.
    fn next_source(&self, from: usize) -> Option<usize> {
        let n = self.sources.len();
        (0..n)
            .map(|i| (from + i) % n)
            .find(|&i| !self.sources[i].done)
    }

    /// Where the run stands, for metrics and the progress line.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sources: self
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.rows_in, s.late_rows, s.watermark))
                .collect(),
            rows_out: self
                .queries
                .iter()
                .map(|q| (q.plan.name.clone(), q.rows_out))
                .collect(),
            dead_letters: self
                .dead_letters
                .counts
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            kafka_lag: self
                .sources
                .iter()
                .filter_map(|s| s.input.kafka_lag())
                .flat_map(KafkaLag::read)
                .collect(),
            state: self.state_size(),
            sink_retries: self
                .queries
                .iter()
                .flat_map(|q| &q.sinks)
                .filter_map(|sink| match sink {
                    Sink::Elasticsearch(s) => Some((s.name().to_string(), s.stats.retries)),
                    _ => None,
                })
                .collect(),
        }
    }

    fn state_size(&self) -> (usize, usize) {
        let windows = self
            .queries
            .iter()
            .filter_map(|q| q.window.as_ref().map(|(_, op)| op.state_size()));
        let histories = self
            .queries
            .iter()
            .filter_map(|q| q.history.as_ref().map(KeyHistory::size));
        windows
            .chain(histories)
            .fold((0, 0), |(k, b), (k2, b2)| (k + k2, b + b2))
    }

    /// Ends the epoch: the sinks make its files durable, then the checkpoint
    /// records the state and positions they correspond to.
    async fn commit(&mut self, summary: &mut Summary) -> Result<()> {
        for query in &mut self.queries {
            for sink in &mut query.sinks {
                sink.commit(self.epoch, &mut self.dead_letters).await?;
            }
        }
        for source in &mut self.sources {
            source.late_sink.commit(self.epoch)?;
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
            let name = query.plan.name.clone();
            if let Some(state) = query.state() {
                let entry = QueryCheckpoint {
                    signature: state.signature().to_string(),
                    file: None,
                    rows: 0,
                    bytes: 0,
                };
                states.insert(name.clone(), state.snapshot()?);
                queries.insert(name, entry);
            }
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

    async fn process(
        &mut self,
        index: usize,
        batch: SourceBatch,
        trigger: bool,
        summary: &mut Summary,
    ) -> Result<()> {
        self.dead_letters.write(&batch.dead_letters);
        summary.events_in += batch.rows.num_rows() as u64;
        let source = &self.sources[index];
        let from = source.watermark;
        let to = from.max(batch.event_time_progress.saturating_sub(source.delay));
        // A row is late for a windowed query when all its windows there are
        // closed; it goes to `<source>_late` when late for any of them.
        let mut open_rows: HashMap<usize, BooleanArray> = HashMap::new();
        let mut late = vec![false; batch.rows.num_rows()];
        for (q, query) in self.queries.iter().enumerate() {
            if let Some((s, op)) = &query.window
                && *s == index
            {
                let spec = op.spec();
                let open: BooleanArray = batch
                    .event_time
                    .iter()
                    .map(|t| Some(spec.last_end(*t) > from))
                    .collect();
                for (l, o) in late.iter_mut().zip(open.values().iter()) {
                    *l |= !o;
                }
                open_rows.insert(q, open);
            }
        }
        let late_rows = filter_record_batch(&batch.rows, &BooleanArray::from(late))?;
        summary.late += late_rows.num_rows() as u64;
        self.sources[index].rows_in += batch.rows.num_rows() as u64;
        self.sources[index].late_rows += late_rows.num_rows() as u64;
        self.sources[index].late_sink.write(&late_rows)?;
        let name = self.sources[index].name.clone();
        let streams = HashMap::from([
            (name.clone(), vec![batch.rows.clone()]),
            (format!("{name}_late"), vec![late_rows]),
        ]);
        let step = Step::Batch {
            batch: &batch,
            open_rows: &open_rows,
            trigger,
        };
        self.run_queries(index, streams, step, from, to).await?;
        self.sources[index].watermark = to;
        if let (Some(lag), SourcePosition::Kafka { offsets, .. }) =
            (self.sources[index].input.kafka_lag(), &batch.position)
        {
            lag.processed(offsets);
        }
        self.sources[index].position = Some(batch.position);
        Ok(())
    }

    /// The input of source `index` is exhausted: every window is complete.
    async fn flush_source(&mut self, index: usize) -> Result<()> {
        let from = self.sources[index].watermark;
        self.run_queries(index, HashMap::new(), Step::Flush, from, i64::MAX)
            .await?;
        self.sources[index].watermark = i64::MAX;
        Ok(())
    }

    /// Runs every query in declaration order on what this step brings: each
    /// reads `streams[its input]`, and its output becomes a stream too.
    async fn run_queries(
        &mut self,
        index: usize,
        mut streams: HashMap<String, Vec<RecordBatch>>,
        step: Step<'_>,
        from: i64,
        to: i64,
    ) -> Result<()> {
        for (q, query) in self.queries.iter_mut().enumerate() {
            let output = match (&query.plan.shape, &mut query.window) {
                (QueryShape::Stateless { plan }, _) => match streams.get(&query.plan.input) {
                    Some(input) => {
                        run_plan(&query.plan.input_slot, input.clone(), plan, &query.plan).await?
                    }
                    None => continue,
                },
                (QueryShape::Over(over), _) => {
                    match (streams.get(&query.plan.input), &mut query.history) {
                        (Some(input), Some(history)) => {
                            let OverPlan {
                                pre,
                                post_input,
                                post,
                                ..
                            } = over.as_ref();
                            let rows =
                                run_plan(&query.plan.input_slot, input.clone(), pre, &query.plan)
                                    .await?;
                            let rows = concat_batches(&pre.schema(), &rows)?;
                            if rows.num_rows() == 0 {
                                continue;
                            }
                            let output = run_plan(
                                post_input,
                                vec![history.with_history(&rows)?],
                                post,
                                &query.plan,
                            )
                            .await?;
                            history.remember(&rows)?;
                            output
                        }
                        _ => continue,
                    }
                }
                (QueryShape::Windowed(windowed), Some((s, operator))) if *s == index => {
                    let WindowedPlan {
                        pre,
                        post_input,
                        post,
                        ..
                    } = windowed.as_ref();
                    let mut emitted = Vec::new();
                    match &step {
                        Step::Batch {
                            batch,
                            open_rows,
                            trigger,
                        } => {
                            let rows = with_window_columns(
                                &batch.rows,
                                &batch.event_time,
                                operator.spec(),
                            )?;
                            let rows = filter_record_batch(&rows, &open_rows[&q])?;
                            for input in
                                run_plan(&query.plan.input_slot, vec![rows], pre, &query.plan)
                                    .await?
                            {
                                operator.update(&input)?;
                            }
                            if *trigger {
                                emitted.extend(operator.trigger(from)?);
                            }
                        }
                        Step::Flush => emitted.extend(operator.trigger(from)?),
                    }
                    emitted.extend(operator.advance(from, to)?);
                    if emitted.is_empty() {
                        continue;
                    }
                    run_plan(post_input, emitted, post, &query.plan).await?
                }
                _ => continue,
            };
            for sink in &mut query.sinks {
                for out in &output {
                    sink.write(out, &mut self.dead_letters).await?;
                }
            }
            query.rows_out += output.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            streams.insert(query.plan.name.clone(), output);
        }
        Ok(())
    }
}

/// What a pass over the queries brings.
enum Step<'a> {
    /// A micro-batch; `open_rows[q]` marks the rows windowed query `q` admits.
    Batch {
        batch: &'a SourceBatch,
        open_rows: &'a HashMap<usize, BooleanArray>,
        trigger: bool,
    },
    /// End of input: emit pending updates and close every window.
    Flush,
}

/// Puts `input` in `slot` and runs `plan` over it.
async fn run_plan(
    slot: &BatchSlot,
    input: Vec<RecordBatch>,
    plan: &Arc<dyn ExecutionPlan>,
    query: &QueryPlan,
) -> Result<Vec<RecordBatch>> {
    slot.fill(input);
    let out = collect(Arc::clone(plan), Arc::clone(&query.task_ctx)).await?;
    Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// Appends each row's pane bounds as `window_start`/`window_end` (for
/// sessions: the lone event's session `[t, t + gap)`).
fn with_window_columns(
    rows: &RecordBatch,
    event_time: &[i64],
    spec: WindowSpec,
) -> Result<RecordBatch> {
    let (starts, ends): (Vec<i64>, Vec<i64>) =
        event_time.iter().map(|t| spec.pane_bounds(*t)).unzip();
    let schema = crate::plan::with_window_columns(rows.schema_ref());
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
    columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
    Ok(RecordBatch::try_new(schema, columns)?)
}
