//! Prints the first rows a query emits, as a table.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::error::Result;

pub struct ConsoleSink {
    query: String,
    remaining: usize,
}

impl ConsoleSink {
    pub fn new(query: &str, rows: usize) -> Self {
        Self {
            query: query.to_string(),
            remaining: rows,
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.remaining == 0 || batch.num_rows() == 0 {
            return Ok(());
        }
        let shown = batch.slice(0, batch.num_rows().min(self.remaining));
        self.remaining -= shown.num_rows();
        println!("{}:\n{}", self.query, pretty_format_batches(&[shown])?);
        Ok(())
    }
}
