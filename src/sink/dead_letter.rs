//! Dead letters: every input line (or emitted row) that could not be
//! processed, with where it came from and why, as JSON lines
//! `<dir>/part-<epoch>.jsonl`, counted by kind.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
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
    /// The record is longer than the source's `max_record_bytes`.
    RecordTooLong,
    /// The event time is outside the years 0000-9999 (or overflows in its unit).
    EventTimeOutOfRange,
    /// The event time is further ahead of the clock than `event_time.max_ahead`.
    EventTimeTooFarAhead,
    /// A sink refused the row for good (`rejected by <sink>`).
    RejectedBy(&'static str),
}

impl DeadLetterKind {
    /// The reasons a source's records can be refused for.
    pub const OF_SOURCES: [DeadLetterKind; 5] = [
        DeadLetterKind::MalformedRecord,
        DeadLetterKind::MissingEventTime,
        DeadLetterKind::RecordTooLong,
        DeadLetterKind::EventTimeOutOfRange,
        DeadLetterKind::EventTimeTooFarAhead,
    ];
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterKind::MalformedRecord => write!(f, "malformed record"),
            DeadLetterKind::MissingEventTime => write!(f, "missing event time"),
            DeadLetterKind::RecordTooLong => write!(f, "record too long"),
            DeadLetterKind::EventTimeOutOfRange => write!(f, "event time out of range"),
            DeadLetterKind::EventTimeTooFarAhead => write!(f, "event time too far ahead"),
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

/// Dead letters of the epoch in progress go to this file, renamed to
/// `part-<epoch>.jsonl` at the commit.
const IN_PROGRESS: &str = ".part-in-progress.jsonl.tmp";

/// Letters are kept in memory up to this many bytes of JSON, then appended
/// to the in-progress file: a flood of bad input costs disk, not memory.
const BUFFER_BYTES: usize = 1 << 20;

pub struct DeadLetterSink {
    dir: PathBuf,
    /// JSON lines not yet in the in-progress file.
    buffered: Vec<u8>,
    /// The in-progress file, once the epoch has letters beyond the buffer.
    open: Option<File>,
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
            open: None,
            counts: BTreeMap::new(),
        })
    }

    pub fn write(&mut self, letters: &[DeadLetter]) -> Result<()> {
        for letter in letters {
            *self
                .counts
                .entry((letter.source.clone(), letter.kind.to_string()))
                .or_default() += 1;
            let record = Record {
                source: &letter.source,
                position: &letter.position,
                reason: &letter.reason,
                raw: &letter.raw,
            };
            serde_json::to_writer(&mut self.buffered, &record)
                .map_err(|e| crate::internal_error!("dead letter as JSON: {e}"))?;
            self.buffered.push(b'\n');
        }
        if self.buffered.len() >= BUFFER_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Appends the buffered letters to the in-progress file (created, empty,
    /// at the epoch's first spill).
    fn spill(&mut self) -> Result<()> {
        let path = self.dir.join(IN_PROGRESS);
        let file =
            match &mut self.open {
                Some(file) => file,
                None => self.open.insert(File::create(&path).map_err(|e| {
                    StreamSqlError::io(format!("cannot create {}", path.display()), e)
                })?),
            };
        file.write_all(&self.buffered)
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", path.display()), e))?;
        self.buffered.clear();
        Ok(())
    }

    /// Makes the epoch's letters `part-<epoch>.jsonl`, on disk for good.
    pub fn commit(&mut self, epoch: u64) -> Result<()> {
        if self.buffered.is_empty() && self.open.is_none() {
            return Ok(());
        }
        self.spill()?;
        let file = self
            .open
            .take()
            .ok_or_else(|| crate::internal_error!("dead letters spilled without a file"))?;
        let path = self.dir.join(format!("part-{epoch:06}.jsonl"));
        crate::state::install(file, &self.dir.join(IN_PROGRESS), &path)
    }
}
