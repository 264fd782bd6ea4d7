//! Prints the first rows a query emits, as a table.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde::Deserialize;

use super::{DeadLetterSink, Sink};
use crate::error::Result;

/// `console: { rows: 5 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// How many rows to print in all (the rest are only counted).
    #[serde(default = "default_console_rows")]
    pub rows: usize,
}

fn default_console_rows() -> usize {
    20
}

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
}

#[async_trait]
impl Sink for ConsoleSink {
    fn name(&self) -> &str {
        &self.query
    }

    async fn write(&mut self, batch: &RecordBatch, _: &mut DeadLetterSink) -> Result<()> {
        if self.remaining == 0 || batch.num_rows() == 0 {
            return Ok(());
        }
        let shown = batch.slice(0, batch.num_rows().min(self.remaining));
        self.remaining -= shown.num_rows();
        println!("{}:\n{}", self.query, pretty_format_batches(&[shown])?);
        Ok(())
    }

    async fn commit(&mut self, _: u64, _: &mut DeadLetterSink) -> Result<()> {
        Ok(())
    }
}
