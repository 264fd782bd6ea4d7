//! The steps of a pipeline's dataflow, behind one trait.
//!
//! A query is planned into one [`Operator`] (see [`crate::plan`]): a
//! row-local step ([`row_local`]), a windowed aggregate ([`window`]), the
//! bounded history of a rule query with window functions ([`history`]), an
//! aggregate or ranking per window over window results ([`per_window`]) or
//! an interval join of two streams ([`join`]). Each
//! owns its DataFusion sub-plans and its state; the runtime only moves rows
//! and watermarks between them and checkpoints what [`Operator::snapshot`]
//! returns. The trait follows Arroyo's `ArrowOperator`: process a batch,
//! advance to a watermark, snapshot and restore, describe for `explain`.
//! Processing has two stages, so that a query runs on several workers: a
//! row-local `prepare` on any slice of a batch, then `process` of the rows
//! whose key groups the worker owns.

pub(crate) mod history;
pub(crate) mod join;
pub(crate) mod per_window;
pub(crate) mod row_local;
pub(crate) mod window;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::error::Result;
use crate::plan::BatchSlot;
use crate::state::KeyGroups;

/// Rows moving along an edge of the graph: a source's micro-batch, its late
/// rows, or what an operator emitted.
#[derive(Debug, Clone)]
pub struct Rows {
    pub batch: RecordBatch,
    /// For a source's rows: each row's event time and the watermark it
    /// meets. Emitted rows carry none.
    pub times: Option<Arc<EventTimes>>,
}

impl Rows {
    /// Emitted rows (no event times).
    pub fn emitted(batch: RecordBatch) -> Self {
        Self { batch, times: None }
    }
}

/// Per row of a source's micro-batch, in UTC milliseconds.
#[derive(Debug, Clone, Default)]
pub struct EventTimes {
    pub event_time: Vec<i64>,
    /// The source's watermark just before the row: computed from the rows
    /// before it in source order, never from how the input was cut into
    /// micro-batches. A row is late when every window it belongs to ended at
    /// or before this watermark.
    pub watermark: Vec<i64>,
}

/// What an operator keeps between micro-batches, in rows and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    pub rows: usize,
    pub bytes: usize,
}

impl std::ops::Add for StateSize {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            rows: self.rows + other.rows,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// How an operator runs, for `explain`.
pub struct Description {
    /// What it computes, in one line.
    pub summary: String,
    /// What its state holds and what bounds it; `None` when it keeps none.
    pub state: Option<String>,
    /// Its DataFusion sub-plans, each with a title saying when it runs.
    pub plans: Vec<(String, Arc<dyn ExecutionPlan>)>,
}

/// One step of the dataflow. Emitted rows go to `out`; the runtime hands
/// them to the query's sinks and to the queries reading its results.
#[async_trait]
pub trait Operator: Send {
    /// The rows of `input` this operator will not count because every window
    /// they belong to has closed: they go to the source's `<source>_late`
    /// table. `None`: it counts every row. `port`: which input they came on.
    fn late_rows(&self, _port: usize, _input: &Rows) -> Option<BooleanArray> {
        None
    }

    /// Stage 1, row-local: what the state takes from `input`, new rows on
    /// input `port` (0, or 0 and 1 for a join's two inputs). Runs on any worker over any
    /// slice of a micro-batch (see [`crate::runtime`]'s workers), so it must
    /// not change the state (`&mut self` only for the sub-plans' input slots).
    async fn prepare(&mut self, port: usize, input: &Rows) -> Result<Vec<RecordBatch>>;

    /// The key group of each prepared row: the worker owning it takes the
    /// row. `None`: no keyed state, the row stays where it was prepared.
    fn key_groups(&self, _port: usize, _prepared: &RecordBatch) -> Result<Option<Vec<u16>>> {
        Ok(None)
    }

    /// Stage 2: prepared rows of this worker's key groups, in source order,
    /// into the state; emits what they complete.
    async fn process(
        &mut self,
        port: usize,
        prepared: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()>;

    /// A processing-time trigger: an `update` query emits what changed.
    async fn trigger(&mut self, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// Event time on input `port` advanced to `watermark` (`i64::MAX` at the
    /// end of a finite input): emit what it completes, free what it expires.
    async fn advance(
        &mut self,
        _port: usize,
        _watermark: i64,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        Ok(())
    }

    /// What the state means, `None` for an operator without state. A
    /// checkpoint is restored only into an operator with the same signature.
    fn signature(&self) -> Option<&str> {
        None
    }

    /// The whole state as rows, each with its key group in the first column
    /// (see [`crate::state::with_key_groups`]). Leaves the state as it was.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// Loads the rows of `state` (written by `snapshot`, at any parallelism)
    /// whose key group is in `owned`, and resumes at its inputs'
    /// `watermarks` (one per port).
    fn restore(
        &mut self,
        _state: &[RecordBatch],
        _owned: &KeyGroups,
        _watermarks: &[i64],
    ) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize::default()
    }

    fn describe(&self) -> Description;
}

/// A planned DataFusion sub-plan and the slot its input goes in. Each is
/// planned once and executed again for every batch.
#[derive(Debug, Clone)]
pub struct SubPlan {
    pub input: BatchSlot,
    pub plan: Arc<dyn ExecutionPlan>,
    pub task_ctx: Arc<TaskContext>,
}

impl SubPlan {
    /// Runs the plan over `input`; empty batches are dropped.
    pub async fn run(&self, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        self.input.fill(input);
        let out = collect(Arc::clone(&self.plan), Arc::clone(&self.task_ctx)).await?;
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Runs the plan over `input` (when there is any) into `out`.
    pub async fn run_into(
        &self,
        input: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if !input.is_empty() {
            out.extend(self.run(input).await?);
        }
        Ok(())
    }
}
