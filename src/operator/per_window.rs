//! A query over window results that aggregates or ranks per window:
//! `SELECT window_start, max(events) FROM per_user GROUP BY window_start`, or
//! `ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY events DESC) <= 3`
//! (windows over results, top-N per window).
//!
//! Why it needs no state of its own: a windowed query emits each window
//! once, every row of it in the step whose watermark closes it (on every
//! worker in that same step). So when the input's watermark advances, every
//! window in the rows received since the last advance is complete, and the
//! whole DataFusion plan over those rows is exact for each of them. The rows
//! are routed by the window's time column, so a window is on one worker.
//! Rows wait only from `process` to the `advance` of the same step; a
//! snapshot between the two still keeps them.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use super::{Description, Operator, Rows, StateSize, SubPlan};
use crate::error::Result;
use crate::state::{KeyGroups, key_group, with_key_groups, without_key_groups};

pub struct PerWindow {
    /// The whole query, over the rows of complete windows.
    plan: SubPlan,
    /// The input's column naming each row's window (routes the rows).
    window_column: usize,
    /// Rows received since the input's watermark last advanced.
    pending: Vec<RecordBatch>,
    signature: String,
}

impl PerWindow {
    pub fn new(plan: SubPlan, window_column: usize) -> Self {
        let schema = plan.input.schema();
        let fields: Vec<String> = (schema.fields().iter())
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        let signature = format!("per window; rows [{}]", fields.join(","));
        Self {
            plan,
            window_column,
            pending: Vec::new(),
            signature,
        }
    }

    fn groups(&self, rows: &RecordBatch) -> Result<Vec<u16>> {
        let times = cast(rows.column(self.window_column), &DataType::Int64)?;
        let times = times
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>();
        let Some(times) = times else {
            return crate::internal_err!("a window column that is not a time");
        };
        Ok((times.iter())
            .map(|t| key_group(&t.unwrap_or_default().to_le_bytes()))
            .collect())
    }
}

#[async_trait]
impl Operator for PerWindow {
    async fn prepare(&mut self, _port: usize, input: &Rows) -> Result<Vec<RecordBatch>> {
        Ok(vec![input.batch.clone()])
    }

    fn key_groups(&self, _port: usize, prepared: &RecordBatch) -> Result<Option<Vec<u16>>> {
        self.groups(prepared).map(Some)
    }

    async fn process(
        &mut self,
        _port: usize,
        prepared: Vec<RecordBatch>,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.pending
            .extend(prepared.into_iter().filter(|b| b.num_rows() > 0));
        Ok(())
    }

    /// Every window received so far is complete: run the query over them.
    async fn advance(
        &mut self,
        _port: usize,
        _watermark: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let windows = std::mem::take(&mut self.pending);
        self.plan.run_into(windows, out).await
    }

    fn signature(&self) -> Option<&str> {
        Some(&self.signature)
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        (self.pending.iter())
            .map(|rows| with_key_groups(rows, self.groups(rows)?))
            .collect()
    }

    fn restore(
        &mut self,
        state: &[RecordBatch],
        owned: &KeyGroups,
        _watermarks: &[i64],
    ) -> Result<()> {
        for batch in state {
            let rows = without_key_groups(batch)?;
            let rows = owned.keep(&rows, self.groups(&rows)?)?;
            if rows.num_rows() > 0 {
                self.pending.push(rows);
            }
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.pending.iter().map(|b| b.num_rows()).sum(),
            bytes: self.pending.iter().map(|b| b.get_array_memory_size()).sum(),
        }
    }

    fn describe(&self) -> Description {
        let schema = self.plan.input.schema();
        Description {
            summary: format!(
                "per window: the whole query over each window's rows, which come complete in \
                 the step whose watermark closes the window (routed by `{}`)",
                schema.field(self.window_column).name()
            ),
            state: Some(
                "none between steps: a window's rows wait only until the watermark that \
                 brought them is applied"
                    .into(),
            ),
            plans: vec![(
                "on each step's complete windows".into(),
                self.plan.plan.clone(),
            )],
        }
    }
}
