//! Where events come from and how their bytes become Arrow rows.
//!
//! A source yields [`SourceBatch`]es: typed rows with each row's event time,
//! plus the dead letters of the lines that could not be decoded.

mod decode;
mod replay;

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

pub use decode::Decoder;
pub use replay::FileReplay;

/// One input line that could not become a row, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub source: String,
    /// Where it came from, e.g. `path/part-00000.csv.gz:17`.
    pub position: String,
    pub reason: String,
    pub raw: String,
}

impl DeadLetter {
    /// The reason without its details, for counting.
    pub fn kind(&self) -> &str {
        if self.reason.starts_with("event time") {
            "missing event time"
        } else {
            "malformed record"
        }
    }
}

/// One micro-batch from a source.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub rows: RecordBatch,
    /// Per row, its event time in UTC milliseconds.
    pub event_time: Vec<i64>,
    pub dead_letters: Vec<DeadLetter>,
    /// How many input lines this batch covers (rows + dead letters).
    pub lines: usize,
    /// Where the source stands after this batch: a restart resumes here.
    pub position: SourcePosition,
}

/// How far a source has been read, as recorded in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcePosition {
    /// File replay: the last line read (1-based) and its file, relative to
    /// pipelines.yaml. Files replay in name order, so every file naming
    /// before `file` has been read completely.
    Replay { file: String, line: u64 },
}
