//! Dead letters: every input line (or emitted row) that could not be
//! processed, with where it came from and why, as JSON lines
//! `<dir>/part-<epoch>.jsonl`, counted by kind.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::parquet::remove_parts;
use crate::error::{Result, StreamSqlError};

/// Why a record became a dead letter, as counted (the metric's `reason`
/// label); the letter's text says the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeadLetterKind {
    /// The line does not decode: wrong field count, a value of the wrong
    /// type, malformed JSON, no match for the source's regex.
    MalformedRecord,
    /// The event-time column is empty.
    MissingEventTime,
    /// A sink refused the row for good (`rejected by <sink>`).
    RejectedBy(&'static str),
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterKind::MalformedRecord => write!(f, "malformed record"),
            DeadLetterKind::MissingEventTime => write!(f, "missing event time"),
            DeadLetterKind::RejectedBy(sink) => write!(f, "rejected by {sink}"),
        }
    }
}

/// One record that could not be processed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The source it came from (or the sink that refused it).
    pub source: String,
    /// Where it came from, e.g. `path/part-00000.csv.gz:17`.
    pub position: String,
    pub kind: DeadLetterKind,
    /// The reason in full.
    pub reason: String,
    pub raw: String,
}

#[derive(Serialize)]
struct Record<'a> {
    source: &'a str,
    position: &'a str,
    reason: &'a str,
    raw: &'a str,
}

pub struct DeadLetterSink {
    dir: PathBuf,
    buffered: Vec<DeadLetter>,
    /// Count per (source, kind).
    pub counts: BTreeMap<(String, String), u64>,
}

impl DeadLetterSink {
    /// Like [`super::parquet_parts`]: removes parts after `keep_through`.
    pub fn create(dir: &Path, keep_through: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
        remove_parts(dir, "jsonl", keep_through)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            buffered: Vec::new(),
            counts: BTreeMap::new(),
        })
    }

    pub fn write(&mut self, letters: &[DeadLetter]) {
        for letter in letters {
            *self
                .counts
                .entry((letter.source.clone(), letter.kind.to_string()))
                .or_default() += 1;
        }
        self.buffered.extend_from_slice(letters);
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn commit(&mut self, epoch: u64) -> Result<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(format!("part-{epoch:06}.jsonl"));
        let mut out = Vec::new();
        for l in self.buffered.drain(..) {
            let record = Record {
                source: &l.source,
                position: &l.position,
                reason: &l.reason,
                raw: &l.raw,
            };
            serde_json::to_writer(&mut out, &record)
                .map_err(|e| crate::internal_error!("dead letter as JSON: {e}"))?;
            out.push(b'\n');
        }
        let mut file = std::fs::File::create(&path)
            .map_err(|e| StreamSqlError::io(format!("cannot create {}", path.display()), e))?;
        file.write_all(&out)
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", path.display()), e))?;
        Ok(())
    }
}
