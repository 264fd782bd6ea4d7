//! The manifest: what a checkpoint holds, as JSON a person can read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::source::SourcePosition;

/// Bumped when the layout of checkpoints changes incompatibly (2: state rows
/// carry their key group).
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub pipeline: String,
    /// The commit epoch this checkpoint closes: Parquet parts up to and
    /// including `part-<sequence>` hold the results of the input it covers.
    pub sequence: u64,
    /// Wall-clock time of writing, UTC milliseconds.
    pub written_at_ms: i64,
    pub sources: BTreeMap<String, SourceCheckpoint>,
    /// Every windowed query's state.
    pub queries: BTreeMap<String, QueryCheckpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    /// `None` until the source delivered its first batch.
    pub position: Option<SourcePosition>,
    /// UTC milliseconds; `i64::MIN` before the first row, `i64::MAX` once a
    /// finite input has been read to its end.
    pub watermark: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCheckpoint {
    /// The operator's signature: a checkpoint restores only into an operator
    /// with the same one.
    pub signature: String,
    /// The state file in the checkpoint's folder; `None` when the state was empty.
    pub file: Option<String>,
    pub rows: u64,
    pub bytes: u64,
}
