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

/// Makes the finished `file`, written at `tmp`, durable as `path`: its data
/// flushed, renamed into place, and the rename flushed with its folder, all
/// before the checkpoint that counts it.
pub fn install(file: File, tmp: &Path, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| StreamSqlError::io(format!("cannot flush {} to disk", tmp.display()), e))?;
    std::fs::rename(tmp, path)
        .map_err(|e| StreamSqlError::io(format!("cannot rename to {}", path.display()), e))?;
    match path.parent() {
        Some(dir) => sync(dir),
        None => Ok(()),
    }
}
