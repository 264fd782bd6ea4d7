//! The stateful window operator: window assignment, partial aggregate state
//! per window and key, and emission as the watermark advances.

mod aggregate;
mod keys;
mod panes;
mod session;
mod spec;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

pub use aggregate::{GroupColumn, WindowedAggregate};
use datafusion::arrow::row::RowConverter;
pub(crate) use keys::KeyTable;
pub use spec::WindowSpec;

use crate::config::EmitMode;
use crate::error::Result;
use panes::PaneWindows;
use session::SessionWindows;

enum State {
    Panes(PaneWindows),
    Sessions(SessionWindows),
}

/// Runs one windowed aggregate over micro-batches of its input rows.
pub struct WindowOperator {
    aggregate: WindowedAggregate,
    converter: RowConverter,
    emit: EmitMode,
    state: State,
    signature: String,
}

impl WindowOperator {
    pub fn new(
        aggregate: WindowedAggregate,
        input_schema: &SchemaRef,
        emit: EmitMode,
    ) -> Result<Self> {
        let converter = aggregate.key_converter(input_schema)?;
        let state = match aggregate.spec {
            WindowSpec::Session { gap } => {
                State::Sessions(SessionWindows::new(aggregate.clone(), &converter, gap)?)
            }
            _ => State::Panes(PaneWindows::new(aggregate.clone())),
        };
        Ok(Self {
            signature: aggregate.signature(input_schema)?,
            aggregate,
            converter,
            emit,
            state,
        })
    }

    pub fn spec(&self) -> WindowSpec {
        self.aggregate.spec
    }

    /// Adds rows (already filtered to those whose windows are open).
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let input = self.aggregate.evaluate_input(&self.converter, batch)?;
        match &mut self.state {
            State::Panes(p) => p.update(&self.converter, &input),
            State::Sessions(s) => s.update(&input),
        }
    }

    /// At a trigger: in `update` mode, the windows that changed since the last
    /// trigger and are still open at `watermark`.
    pub fn trigger(&mut self, watermark: i64) -> Result<Option<RecordBatch>> {
        if self.emit != EmitMode::Update {
            return Ok(None);
        }
        self.emit_changed(watermark, i64::MAX)
    }

    fn emit_changed(&mut self, watermark: i64, until: i64) -> Result<Option<RecordBatch>> {
        match &mut self.state {
            State::Panes(p) => p.emit_changed(&self.converter, watermark, until),
            State::Sessions(s) => s.emit_changed(&self.converter, until),
        }
    }

    /// The watermark advanced from `from` to `to`: closes the windows ending
    /// in between and frees their state. Returns them in `final` mode; in
    /// `update` mode returns the changes of closing windows no trigger has
    /// emitted yet, so no update is lost between triggers.
    pub fn advance(&mut self, from: i64, to: i64) -> Result<Option<RecordBatch>> {
        let last_updates = match self.emit {
            EmitMode::Update => self.emit_changed(from, to)?,
            EmitMode::Final => None,
        };
        let emit = self.emit == EmitMode::Final;
        let closed = match &mut self.state {
            State::Panes(p) => p.close(&self.converter, from, to, emit)?,
            State::Sessions(s) => s.close(&self.converter, to, emit)?,
        };
        Ok(last_updates.or(closed))
    }

    /// (groups, bytes) of window state held.
    pub fn state_size(&self) -> (usize, usize) {
        match &self.state {
            State::Panes(p) => p.state_size(),
            State::Sessions(s) => s.state_size(),
        }
    }
}

impl crate::state::QueryState for WindowOperator {
    /// The window, keys and aggregate states.
    fn signature(&self) -> &str {
        &self.signature
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        match &mut self.state {
            State::Panes(p) => p.snapshot(&self.converter),
            State::Sessions(s) => s.snapshot(&self.converter),
        }
    }

    fn restore(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        // A reader may split a pane's rows across batches: read them as one.
        let batch = datafusion::arrow::compute::concat_batches(first.schema_ref(), batches)?;
        let rows = self.aggregate.read_state_batch(&self.converter, &batch)?;
        match &mut self.state {
            State::Panes(p) => p.restore(&self.converter, rows),
            State::Sessions(s) => s.restore(rows),
        }
    }
}
