//! The driver: moves each source's micro-batches and watermarks through the
//! operator graph to the sinks, and runs the commit protocol ([`commit`]).
//! It knows no operator kind and no sink kind.
//!
//! One step per micro-batch: the source's rows get their watermarks (each
//! row the one it meets in source order), the rows every windowed reader
//! finds late go to `<source>_late`, and then every query, in an order of
//! the graph, processes what its input table brought, is triggered, and
//! advances to its input's watermark; what it emits goes to its sinks and to
//! the queries reading it.

mod commit;
mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

use crate::config::PipelineConfig;
use crate::error::Result;
use crate::metrics::{Metrics, Progress, Restored, Snapshot, Summary};
use crate::operator::{EventTimes, Rows};
use crate::sink::{DeadLetterSink, Sink};
use crate::source::{InlineBatch, KafkaLag, Source, SourceBatch, SourcePosition};
use crate::state::{CheckpointStore, RunLock};
use crate::table::LiveTable;
use workers::Workers;

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
    /// Overrides the pipeline's `parallelism`.
    pub parallelism: Option<usize>,
}

/// How often the driver wakes when no batch comes, for time-based work
/// (update triggers, sink flushes, commits).
const TICK: Duration = Duration::from_millis(100);

/// How often the metrics and the progress line are brought up to date. A
/// snapshot sums the state's size over every pane and group: taken after
/// every micro-batch, it cost more than small batches themselves when many
/// windows were open.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// A source and what the driver keeps about it.
struct SourceNode {
    name: String,
    delay: i64,
    input: Source,
    /// How far the source has been read (for checkpoints).
    position: Option<SourcePosition>,
    /// Watermark in UTC ms; `i64::MIN` until the first row, `i64::MAX` once
    /// a finite input has ended.
    watermark: i64,
    late_sink: Box<dyn Sink>,
    done: bool,
    rows_in: u64,
    late_rows: u64,
}

impl SourceNode {
    /// The watermark each row of `batch` meets, and the one after it.
    fn event_times(&self, batch: &SourceBatch) -> (EventTimes, i64) {
        let from = self.watermark;
        let at = |progress: i64| from.max(progress.saturating_sub(self.delay));
        let times = EventTimes {
            event_time: batch.event_time.clone(),
            watermark: batch.progress.iter().map(|p| at(*p)).collect(),
        };
        (times, at(batch.event_time_progress))
    }
}

/// A query: its operator's workers, the tables it reads and where its rows go.
struct QueryNode {
    name: String,
    /// Index of the table each input port reads (see [`Tables`]): one, or
    /// two for a join.
    inputs: Vec<usize>,
    workers: Workers,
    sinks: Vec<Box<dyn Sink>>,
    /// The watermark each input port has advanced to.
    watermarks: Vec<i64>,
    rows_out: u64,
}

impl QueryNode {
    /// The watermark of its results: the least of its inputs'.
    fn watermark(&self) -> i64 {
        self.watermarks.iter().copied().min().unwrap_or(i64::MIN)
    }
}

/// The pipeline's tables by index: source `s` is `2s`, its late rows
/// `2s + 1`, query `q` is `2 * sources + q`.
struct Tables {
    sources: usize,
}

impl Tables {
    fn source(&self, s: usize) -> usize {
        2 * s
    }
    fn late(&self, s: usize) -> usize {
        2 * s + 1
    }
    fn query(&self, q: usize) -> usize {
        2 * self.sources + q
    }
}

pub struct Pipeline {
    name: String,
    config: PipelineConfig,
    sources: Vec<SourceNode>,
    queries: Vec<QueryNode>,
    tables: Tables,
    dead_letters: DeadLetterSink,
    output_dir: PathBuf,
    /// Held for the run: no second run writes `output_dir` meanwhile.
    _lock: RunLock,
    checkpoints: CheckpointStore,
    /// The commit epoch in progress; checkpoint `epoch` closes it.
    epoch: u64,
    restored: Option<Restored>,
    metrics: Arc<Metrics>,
    /// The lookup tables, kept current while the pipeline lives.
    lookups: Vec<LiveTable>,
}

impl Pipeline {
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

    /// Runs until every source is exhausted, then closes all windows.
    /// Ctrl-C and SIGTERM stop it between micro-batches, with a checkpoint.
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
        let mut committed_rows = self.rows_moved();
        let mut last_trigger = Instant::now();
        let mut progress = Progress::new(options.progress);
        let mut last_publish = Instant::now() - PUBLISH_INTERVAL;
        let stop = stop_signal()?;
        tokio::pin!(stop);
        let mut next = 0;
        while let Some(index) = self.next_source(next) {
            let batch = tokio::select! {
                biased;
                _ = &mut stop => {
                    summary.stopped_early = true;
                    break;
                }
                batch = self.sources[index].input.next_batch() => Some(batch),
                _ = tokio::time::sleep(TICK) => None,
            };
            let trigger = last_trigger.elapsed() >= self.config.trigger;
            if trigger {
                last_trigger = Instant::now();
            }
            let batch_started = Instant::now();
            match batch {
                // Nothing came for a while: only the time-based work.
                None => self.step(None, trigger, &mut summary).await?,
                Some(None) => {
                    self.sources[index].done = true;
                    next = index + 1;
                    continue;
                }
                Some(Some(batch)) => {
                    next = index + 1;
                    self.step(Some((index, batch?)), trigger, &mut summary)
                        .await?;
                    batches += 1;
                    self.metrics.batch_processed(batch_started.elapsed());
                }
            }
            self.flush_sinks_if_due().await?;
            for table in &self.lookups {
                table.check()?;
            }
            if options.stop_after_batches == Some(batches) {
                summary.stopped_early = true;
                break;
            }
            // An idle source commits nothing: no empty epochs, checkpoints
            // or files every tick, even with `commit_interval: 0s`.
            if last_commit.elapsed() >= self.config.commit_interval
                && self.rows_moved() != committed_rows
            {
                self.commit(&mut summary).await?;
                last_commit = Instant::now();
                committed_rows = self.rows_moved();
            }
            if last_publish.elapsed() >= PUBLISH_INTERVAL {
                last_publish = Instant::now();
                let snapshot = self.snapshot();
                self.metrics.publish(&snapshot);
                progress.update(&summary, &snapshot, started.elapsed());
            }
        }
        if !summary.stopped_early {
            // End of a finite input: every window is complete.
            for source in &mut self.sources {
                source.watermark = i64::MAX;
            }
            self.step(None, false, &mut summary).await?;
        }
        summary.state_groups = self.state_size().rows;
        self.commit(&mut summary).await?;
        summary.elapsed = started.elapsed();
        summary.rows_out = self
            .queries
            .iter()
            .map(|q| (q.name.clone(), q.rows_out))
            .collect();
        summary.dead_letters = self.dead_letters.counts.clone();
        summary.sinks = self.sinks().filter_map(|s| s.summary()).collect();
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

    /// The next source that has not ended, round-robin from `from`.
    fn next_source(&self, from: usize) -> Option<usize> {
        let n = self.sources.len();
        (0..n)
            .map(|i| (from + i) % n)
            .find(|&i| !self.sources[i].done)
    }

    /// One pass over the graph for `batch` from source `index` (or for no
    /// new rows: triggers and watermarks only).
    async fn step(
        &mut self,
        batch: Option<(usize, SourceBatch)>,
        trigger: bool,
        summary: &mut Summary,
    ) -> Result<()> {
        // What each table brought in this step.
        let mut brought: Vec<Vec<Rows>> = (0..self.tables.query(self.queries.len()))
            .map(|_| Vec::new())
            .collect();
        if let Some((index, batch)) = batch {
            let (rows, late) = self.accept(index, batch, summary).await?;
            brought[self.tables.source(index)].push(rows);
            brought[self.tables.late(index)].push(late);
        }
        for q in 0..self.queries.len() {
            let watermarks: Vec<i64> = (self.queries[q].inputs.iter())
                .map(|t| self.watermark_of(*t))
                .collect();
            let query = &mut self.queries[q];
            let mut out = Vec::new();
            for (port, table) in query.inputs.iter().enumerate() {
                for rows in &brought[*table] {
                    query.workers.process(port, rows, &mut out).await?;
                }
            }
            if trigger {
                query.workers.trigger(&mut out).await?;
            }
            for (port, watermark) in watermarks.into_iter().enumerate() {
                if watermark > query.watermarks[port] {
                    query.workers.advance(port, watermark, &mut out).await?;
                    query.watermarks[port] = watermark;
                }
            }
            for batch in &out {
                for sink in &mut query.sinks {
                    sink.write(batch, &mut self.dead_letters).await?;
                }
            }
            query.rows_out += out.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            brought[self.tables.query(q)] = out.into_iter().map(Rows::emitted).collect();
        }
        Ok(())
    }

    /// Takes a source's batch: dead letters out, watermarks on, late rows
    /// split off (to `<source>_late`). Returns the rows and the late rows.
    async fn accept(
        &mut self,
        index: usize,
        batch: SourceBatch,
        summary: &mut Summary,
    ) -> Result<(Rows, Rows)> {
        self.dead_letters.write(&batch.dead_letters)?;
        let source = &self.sources[index];
        let (times, watermark) = source.event_times(&batch);
        let rows = Rows {
            batch: batch.rows,
            times: Some(Arc::new(times)),
        };
        // A row goes to `<source>_late` when a windowed query reading the
        // source finds it late.
        let table = self.tables.source(index);
        let mut late = vec![false; rows.batch.num_rows()];
        for query in &self.queries {
            for (port, _) in query
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, t)| **t == table)
            {
                if let Some(mask) = query.workers.late_rows(port, &rows)? {
                    for (l, m) in late.iter_mut().zip(mask.values().iter()) {
                        *l |= m;
                    }
                }
            }
        }
        let late = filter_record_batch(&rows.batch, &BooleanArray::from(late))?;
        let source = &mut self.sources[index];
        source
            .late_sink
            .write(&late, &mut self.dead_letters)
            .await?;
        let count = |b: &RecordBatch| b.num_rows() as u64;
        summary.events_in += count(&rows.batch);
        summary.late += count(&late);
        source.rows_in += count(&rows.batch);
        source.late_rows += count(&late);
        source.watermark = watermark;
        if let (Some(lag), SourcePosition::Kafka { offsets, .. }) =
            (source.input.kafka_lag(), &batch.position)
        {
            lag.processed(offsets);
        }
        source.position = Some(batch.position);
        Ok((rows, Rows::emitted(late)))
    }

    /// The watermark of table `table`: its source's, or the query's.
    fn watermark_of(&self, table: usize) -> i64 {
        match table.checked_sub(self.tables.query(0)) {
            Some(q) => self.queries[q].watermark(),
            None => self.sources[table / 2].watermark,
        }
    }

    fn sinks(&self) -> impl Iterator<Item = &Box<dyn Sink>> {
        self.queries.iter().flat_map(|q| &q.sinks)
    }

    /// Rows read, emitted or dead-lettered so far: when it stands still,
    /// there is nothing to commit.
    fn rows_moved(&self) -> u64 {
        let read: u64 = self.sources.iter().map(|s| s.rows_in + s.late_rows).sum();
        let out: u64 = self.queries.iter().map(|q| q.rows_out).sum();
        read + out + self.dead_letters.total()
    }

    async fn flush_sinks_if_due(&mut self) -> Result<()> {
        for query in &mut self.queries {
            for sink in &mut query.sinks {
                sink.flush_if_due(&mut self.dead_letters).await?;
            }
        }
        Ok(())
    }

    /// Where the run stands, for metrics and the progress line.
    fn snapshot(&self) -> Snapshot {
        let state = self.state_size();
        Snapshot {
            sources: self
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.rows_in, s.late_rows, s.watermark))
                .collect(),
            rows_out: self
                .queries
                .iter()
                .map(|q| (q.name.clone(), q.rows_out))
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
            state: (state.rows, state.bytes),
            // Every sink, from 0: a dashboard's rate has a series to show.
            sink_retries: self
                .sinks()
                .map(|s| (s.name().to_string(), s.retries()))
                .collect(),
        }
    }

    fn state_size(&self) -> crate::operator::StateSize {
        self.queries
            .iter()
            .map(|q| q.workers.state_size())
            .fold(Default::default(), |a, b| a + b)
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM
/// (`docker stop`, Kubernetes).
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| crate::error::StreamSqlError::io("cannot listen for SIGTERM", e))?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
}
