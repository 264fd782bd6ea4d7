//! Checkpoints: the state of every windowed query as Parquet, plus one JSON
//! manifest naming those files with the source positions and watermarks.
//!
//! A checkpoint lives under `<location>/chk-<sequence>/`. The manifest is
//! written last: a folder without a readable manifest, or whose files do not
//! match it, is not a checkpoint, and the one before it is used instead.
//! Storage goes through `object_store`: a local directory or an `s3://` URL.

mod manifest;
mod store;

pub use manifest::{FORMAT_VERSION, Manifest, QueryCheckpoint, SourceCheckpoint};
pub use store::{Checkpoint, CheckpointStore};

use datafusion::arrow::array::RecordBatch;

/// What a stateful query keeps between micro-batches (window state, or a
/// key history), as checkpoints see it.
pub trait QueryState {
    /// What the state means; a checkpoint restores only into the same.
    fn signature(&self) -> &str;
    /// The whole state as rows. Leaves the state as it was.
    fn snapshot(&mut self) -> crate::Result<Vec<RecordBatch>>;
    /// Loads rows written by `snapshot` into this (empty) state.
    fn restore(&mut self, batches: &[RecordBatch]) -> crate::Result<()>;
}
