//! A query whose every plan node is row-local (filters, projections, scalar
//! functions, unnest; see [`crate::plan::incremental`]): each output row
//! depends on one input row only, so running it on each batch as it comes
//! gives the same rows however the input is cut.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;

use super::{Description, Operator, Rows, SubPlan};
use crate::error::Result;

pub struct RowLocal {
    plan: SubPlan,
}

impl RowLocal {
    pub fn new(plan: SubPlan) -> Self {
        Self { plan }
    }
}

#[async_trait]
impl Operator for RowLocal {
    async fn prepare(&mut self, _port: usize, input: &Rows) -> Result<Vec<RecordBatch>> {
        self.plan.run(vec![input.batch.clone()]).await
    }

    /// Everything was done in `prepare`.
    async fn process(
        &mut self,
        _port: usize,
        prepared: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        out.extend(prepared);
        Ok(())
    }

    fn describe(&self) -> Description {
        Description {
            summary: "row-local: each row on its own, as it arrives".into(),
            state: None,
            plans: vec![("on each batch".into(), self.plan.plan.clone())],
        }
    }
}
