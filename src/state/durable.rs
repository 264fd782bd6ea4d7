//! Making a written file survive a power loss, not only a crash: its data
//! and the directory entry naming it are flushed to disk (fsync) before
//! anything that refers to it (a checkpoint manifest) is written.

use std::fs::File;
use std::path::Path;

use crate::error::{Result, StreamSqlError};

/// Flushes the file (or directory) at `path` to disk.
pub fn sync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StreamSqlError::io(format!("cannot flush {} to disk", path.display()), e))
}
