//! One run per output directory: an exclusive lock on `<output_dir>/.lock`,
//! held for the whole run.
//!
//! Two runs writing one location would interleave parts, retire each
//! other's checkpoints and restore from a mixture. The operating system
//! releases the lock when the process ends, however it ends (kill -9
//! included), so no stale lock is ever left to clean up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Diagnostic, Result, StreamSqlError};

pub struct RunLock {
    // Holding the open file holds the lock.
    _file: File,
}

impl RunLock {
    /// Locks `output_dir` (created when missing) for this process, or says
    /// which process holds it.
    pub fn acquire(output_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(output_dir).map_err(|e| {
            StreamSqlError::io(format!("cannot create {}", output_dir.display()), e)
        })?;
        let path = output_dir.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StreamSqlError::io(format!("cannot open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Diagnostic::new(
                    path.display().to_string(),
                    None,
                    format!(
                        "{} is in use by another run (process {})",
                        output_dir.display(),
                        if holder.is_empty() { "unknown" } else { holder }
                    ),
                )
                .with_fix("wait for that run to end or stop it; two pipelines need two output_dir")
                .into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(StreamSqlError::io(
                    format!("cannot lock {}", path.display()),
                    e,
                ));
            }
        }
        // Who holds it, for the message above.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", path.display()), e))?;
        Ok(Self { _file: file })
    }
}
