//! Checkpoints: every operator's state as Parquet, plus one JSON manifest
//! naming those files with the source positions and watermarks.
//!
//! A checkpoint lives under `<location>/chk-<sequence>/`. The manifest is
//! written last: a folder without a readable manifest, or whose files do not
//! match it, is not a checkpoint, and the one before it is used instead.
//! Storage goes through `object_store`: a local directory or an `s3://` URL.
//! State rows carry their key group ([`key_group`]), so a checkpoint
//! restores at any parallelism.

mod durable;
mod key_group;
mod lock;
mod manifest;
mod store;

pub use durable::{install, sync};
pub use key_group::{KEY_GROUPS, KeyGroups, key_group, with_key_groups, without_key_groups};
pub use lock::RunLock;
pub use manifest::{FORMAT_VERSION, Manifest, QueryCheckpoint, SourceCheckpoint};
pub use store::{Checkpoint, CheckpointStore};
