//! Where results go: Parquet files for offline analysis, the terminal, and
//! dead letters for input that could not be processed.
//!
//! Sinks buffer what they are given and make it durable on `commit`, once
//! per commit epoch, so every output file belongs to exactly one epoch.

mod console;
mod dead_letter;
mod parquet;

use datafusion::arrow::array::RecordBatch;

pub use console::ConsoleSink;
pub use dead_letter::DeadLetterSink;
pub use parquet::ParquetSink;

use crate::error::Result;

pub enum Sink {
    Parquet(ParquetSink),
    Console(ConsoleSink),
}

impl Sink {
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Sink::Parquet(s) => s.write(batch),
            Sink::Console(s) => s.write(batch),
        }
    }

    pub fn commit(&mut self, epoch: u64) -> Result<()> {
        match self {
            Sink::Parquet(s) => s.commit(epoch),
            Sink::Console(_) => Ok(()),
        }
    }
}
