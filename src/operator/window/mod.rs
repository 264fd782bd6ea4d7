//! The windowed aggregate: window assignment, partial aggregate state per
//! window and key, and emission as the watermark advances.
//!
//! Rows are judged against the watermark they meet in source order (see
//! [`super::EventTimes`]), not the one the micro-batch started with: a batch
//! is cut into segments wherever the watermark passes a window's end, and the
//! windows ending there close before the rows after it count. So what a
//! window holds does not depend on how the input was cut into batches.

mod aggregate;
mod keys;
mod panes;
mod session;
mod spec;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::RowConverter;

pub use aggregate::{GroupColumn, WindowedAggregate};
pub(crate) use keys::KeyTable;
pub use spec::WindowSpec;

use super::{Description, EventTimes, Operator, Rows, StateSize, SubPlan};
use crate::config::EmitMode;
use crate::error::Result;
use crate::state::{KeyGroups, with_key_groups, without_key_groups};
use aggregate::EvaluatedInput;
use panes::PaneWindows;
use session::SessionWindows;

enum State {
    Panes(PaneWindows),
    Sessions(SessionWindows),
}

/// A windowed query: `pre` (row-local, on the source's rows with their
/// window columns) feeds the aggregate state; `post` runs on what it emits.
pub struct WindowOperator {
    /// The event-time column, for `explain`.
    time_column: String,
    aggregate: WindowedAggregate,
    converter: RowConverter,
    emit: EmitMode,
    state: State,
    signature: String,
    pre: SubPlan,
    post: SubPlan,
    /// Windows ending at or before this have closed.
    watermark: i64,
}

impl WindowOperator {
    pub fn new(
        time_column: String,
        aggregate: WindowedAggregate,
        emit: EmitMode,
        pre: SubPlan,
        post: SubPlan,
    ) -> Result<Self> {
        let input_schema = pre.plan.schema();
        let converter = aggregate.key_converter(&input_schema)?;
        let state = match aggregate.spec {
            WindowSpec::Session { gap } => {
                State::Sessions(SessionWindows::new(aggregate.clone(), &converter, gap)?)
            }
            _ => State::Panes(PaneWindows::new(aggregate.clone())),
        };
        Ok(Self {
            signature: aggregate.signature(&input_schema)?,
            time_column,
            aggregate,
            converter,
            emit,
            state,
            pre,
            post,
            watermark: i64::MIN,
        })
    }

    fn spec(&self) -> WindowSpec {
        self.aggregate.spec
    }

    /// The source's rows with what the query's SQL sees as window columns:
    /// each row's pane (the columns `plan` gives a windowed query's source) and the
    /// watermark it meets.
    fn with_window_columns(&self, rows: &RecordBatch, times: &EventTimes) -> Result<RecordBatch> {
        let spec = self.spec();
        let (starts, ends): (Vec<i64>, Vec<i64>) = times
            .event_time
            .iter()
            .map(|t| spec.pane_bounds(*t))
            .unzip();
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        columns.push(Arc::new(TimestampMillisecondArray::from(
            times.watermark.clone(),
        )));
        let schema: SchemaRef = self.pre.input.schema().clone();
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Where the segment starting at row `start` ends: at the first row
    /// whose watermark closes a window the segment's first row does not.
    /// Sessions need no segments: a closed session takes no more rows (see
    /// [`SessionWindows::update`]).
    fn segment_end(&self, watermarks: &[i64], start: usize) -> usize {
        let Some(epoch) = self.spec().closing_epoch(watermarks[start]) else {
            return watermarks.len();
        };
        watermarks[start..]
            .iter()
            .position(|w| self.spec().closing_epoch(*w) != Some(epoch))
            .map_or(watermarks.len(), |p| start + p)
    }

    fn update(&mut self, input: &EvaluatedInput, rows: Range<usize>) -> Result<()> {
        match &mut self.state {
            State::Panes(p) => p.update(&self.converter, input, rows),
            State::Sessions(s) => s.update(input, rows),
        }
    }

    /// `update` mode: the windows that changed since the last trigger,
    /// still open at the watermark, ending by `until`.
    fn emit_changed(&mut self, until: i64) -> Result<Option<RecordBatch>> {
        match &mut self.state {
            State::Panes(p) => p.emit_changed(&self.converter, self.watermark, until),
            State::Sessions(s) => s.emit_changed(&self.converter, until),
        }
    }

    /// Advances to `to`: closes the windows ending up to it and frees their
    /// state. In `final` mode emits them; in `update` mode emits the changes
    /// of closing windows no trigger has emitted yet, so none is lost.
    fn close_until(&mut self, to: i64, emitted: &mut Vec<RecordBatch>) -> Result<()> {
        if to <= self.watermark {
            return Ok(());
        }
        let from = self.watermark;
        if self.emit == EmitMode::Update {
            emitted.extend(self.emit_changed(to)?);
        }
        let emit = self.emit == EmitMode::Final;
        let closed = match &mut self.state {
            State::Panes(p) => p.close(&self.converter, from, to, emit)?,
            State::Sessions(s) => s.close(&self.converter, to, emit)?,
        };
        emitted.extend(closed);
        self.watermark = to;
        Ok(())
    }
}

#[async_trait]
impl Operator for WindowOperator {
    fn late_rows(&self, _port: usize, input: &Rows) -> Option<BooleanArray> {
        let times = input.times.as_ref()?;
        let spec = self.spec();
        Some(
            times
                .event_time
                .iter()
                .zip(&times.watermark)
                .map(|(t, w)| Some(spec.last_end(*t) <= *w))
                .collect(),
        )
    }

    async fn prepare(&mut self, _port: usize, input: &Rows) -> Result<Vec<RecordBatch>> {
        let Some(times) = input.times.as_deref() else {
            return crate::internal_err!("a windowed query got rows without event times");
        };
        let mut rows = self.with_window_columns(&input.batch, times)?;
        if let Some(late) = self.late_rows(0, input)
            && late.true_count() > 0
        {
            rows = filter_record_batch(&rows, &datafusion::arrow::compute::not(&late)?)?;
        }
        self.pre.run(vec![rows]).await
    }

    fn key_groups(&self, _port: usize, prepared: &RecordBatch) -> Result<Option<Vec<u16>>> {
        self.aggregate
            .key_groups(&self.converter, prepared)
            .map(Some)
    }

    async fn process(
        &mut self,
        _port: usize,
        prepared: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let mut emitted = Vec::new();
        for batch in prepared {
            let input = self.aggregate.evaluate_input(&self.converter, &batch)?;
            let mut start = 0;
            while start < input.watermarks.len() {
                // The windows this segment's watermark has closed take none of its rows.
                self.close_until(input.watermarks[start], &mut emitted)?;
                let end = self.segment_end(&input.watermarks, start);
                self.update(&input, start..end)?;
                start = end;
            }
        }
        self.post.run_into(emitted, out).await
    }

    async fn trigger(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.emit != EmitMode::Update {
            return Ok(());
        }
        let changed = self.emit_changed(i64::MAX)?;
        self.post.run_into(changed.into_iter().collect(), out).await
    }

    async fn advance(
        &mut self,
        _port: usize,
        watermark: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let mut emitted = Vec::new();
        self.close_until(watermark, &mut emitted)?;
        self.post.run_into(emitted, out).await
    }

    /// The window, keys and aggregate states.
    fn signature(&self) -> Option<&str> {
        Some(&self.signature)
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let batches = match &mut self.state {
            State::Panes(p) => p.snapshot(&self.converter)?,
            State::Sessions(s) => s.snapshot(&self.converter)?,
        };
        batches
            .into_iter()
            .map(|(batch, groups)| with_key_groups(&batch, groups))
            .collect()
    }

    fn restore(
        &mut self,
        state: &[RecordBatch],
        owned: &KeyGroups,
        watermarks: &[i64],
    ) -> Result<()> {
        self.watermark = watermarks[0];
        let batches = state
            .iter()
            .map(without_key_groups)
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = batches.first() else {
            return Ok(());
        };
        // A reader may split a pane's rows across batches: read them as one.
        let batch = datafusion::arrow::compute::concat_batches(first.schema_ref(), &batches)?;
        let rows = self
            .aggregate
            .read_state_batch(&self.converter, &batch, owned)?;
        match &mut self.state {
            State::Panes(p) => p.restore(&self.converter, rows),
            State::Sessions(s) => s.restore(rows),
        }
    }

    fn state_size(&self) -> StateSize {
        let (rows, bytes) = match &self.state {
            State::Panes(p) => p.state_size(),
            State::Sessions(s) => s.state_size(),
        };
        StateSize { rows, bytes }
    }

    fn describe(&self) -> Description {
        let keys: Vec<&str> = self
            .aggregate
            .keys
            .iter()
            .map(|(_, n)| n.as_str())
            .collect();
        let aggregates: Vec<&str> = self.aggregate.aggregates.iter().map(|a| a.name()).collect();
        let state = match self.spec() {
            WindowSpec::Session { .. } => {
                "partial aggregates per open session and key; a session is freed when the \
                 watermark passes its end (bounded by the watermark)"
            }
            _ => {
                "partial aggregates per pane and key; a pane is freed when the watermark passes \
                 the end of the last window holding it (bounded by the watermark)"
            }
        };
        Description {
            summary: format!(
                "window aggregate {} on `{}`, keys [{}], aggregates [{}], emit {}",
                self.spec(),
                self.time_column,
                keys.join(", "),
                aggregates.join(", "),
                format!("{:?}", self.emit).to_lowercase()
            ),
            state: Some(state.into()),
            plans: vec![
                (
                    "on each batch, feeding the aggregate".into(),
                    Arc::clone(&self.pre.plan),
                ),
                ("on emitted windows".into(), Arc::clone(&self.post.plan)),
            ],
        }
    }
}
