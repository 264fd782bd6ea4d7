//! A table whose rows are whatever the runtime put in it for this micro-batch.
//!
//! Each query is planned once; every micro-batch the runtime fills the slot
//! and executes the same physical plan again.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

#[derive(Debug, Clone)]
pub struct BatchSlot {
    schema: SchemaRef,
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl BatchSlot {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Arc::default(),
        }
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn fill(&self, batches: Vec<RecordBatch>) {
        // A poisoned lock only means another thread panicked mid-fill; the
        // data is replaced wholesale, so reusing it is sound.
        *self.batches.lock().unwrap_or_else(|e| e.into_inner()) = batches;
    }
}

impl PartitionStream for BatchSlot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = std::mem::take(&mut *self.batches.lock().unwrap_or_else(|e| e.into_inner()));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}
