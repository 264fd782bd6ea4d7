//! Where events come from and how their bytes become Arrow rows.
//!
//! A source yields [`SourceBatch`]es: typed rows with each row's event time
//! and how far the source's event time had come before it, plus the dead
//! letters of the lines that could not be decoded. One folder per
//! connector ([`replay`], [`kafka`]), each with its settings.

mod config;
mod decode;
mod inline;
pub mod kafka;
mod ordered;
pub mod replay;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

pub use config::{
    ColumnConfig, ColumnType, CsvOptions, EventTimeConfig, EventTimeUnit, Format, MAX_RECORD_BYTES,
    RegexGroups, SourceConfig, SourceInput,
};
pub(crate) use decode::Decoder;

/// A micro-batch is cut at `batch_rows` or at this many bytes of input,
/// whichever comes first: with the readers' queue of a few batches, it
/// bounds what a source holds in memory however long its records are.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;
pub use inline::InlineBatch;
pub(crate) use inline::InlineRows;
pub use kafka::KafkaLag;
pub(crate) use kafka::KafkaSource;
pub use replay::{FileReplay, open_file};

use crate::sink::DeadLetter;

/// One raw record (a line of a file, a Kafka message's value) in a batch's
/// byte buffer, with where it came from.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Its bytes in the buffer, without the newline that follows them.
    pub bytes: Range<usize>,
    /// A file (relative to pipelines.yaml) or `kafka:<topic>/<partition>`.
    pub origin: Arc<str>,
    /// The 1-based line number in the file, or the Kafka offset.
    pub index: u64,
    /// The Kafka message timestamp (UTC ms), when the source has one.
    pub timestamp: Option<i64>,
}

impl fmt::Display for RawRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.origin, self.index)
    }
}

/// Records laid end to end as [`Decoder`] reads them: each record's bytes,
/// then a newline, and each one's place and origin in `lines`.
#[derive(Debug, Default)]
pub struct Records {
    pub bytes: Vec<u8>,
    pub lines: Vec<RawRecord>,
}

impl Records {
    pub fn push(&mut self, text: &[u8], origin: &Arc<str>, index: u64, timestamp: Option<i64>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(text);
        self.lines.push(RawRecord {
            bytes: start..self.bytes.len(),
            origin: Arc::clone(origin),
            index,
            timestamp,
        });
        self.bytes.push(b'\n');
    }
}

/// One micro-batch from a source.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub rows: RecordBatch,
    /// Per row, its event time in UTC milliseconds.
    pub event_time: Vec<i64>,
    /// Per row, how far the source's event time had come before it (in
    /// source order; `i64::MIN` for nothing yet): the watermark the row meets
    /// is this minus the delay. For a file, the newest event time of the
    /// rows before it in the batch; for Kafka, the minimum over the active
    /// partitions (see [`kafka`]).
    pub progress: Vec<i64>,
    pub dead_letters: Vec<DeadLetter>,
    /// How many input lines this batch covers (rows + dead letters).
    pub lines: usize,
    /// Where the source stands after this batch: a restart resumes here.
    pub position: SourcePosition,
    /// How far event time has progressed in the source: the watermark may
    /// advance to this minus the delay. For a file, the newest event time
    /// seen; for Kafka, the minimum over its active partitions.
    pub event_time_progress: i64,
}

/// A running source of either kind.
pub enum Source {
    Replay(FileReplay),
    Kafka(KafkaSource),
    Inline(InlineRows),
}

impl Source {
    /// Starts `config`'s source, resuming after `resume` when given, decoding
    /// on `decode_threads` threads; with `inline` rows, reads those instead
    /// of the declared input.
    pub fn start(
        config: &SourceConfig,
        base_dir: &std::path::Path,
        pipeline: &str,
        resume: Option<&SourcePosition>,
        inline: Option<&Vec<InlineBatch>>,
        decode_threads: usize,
    ) -> crate::error::Result<Self> {
        if let Some(batches) = inline {
            return Ok(Source::Inline(InlineRows::start(config, batches.clone())?));
        }
        Ok(match &config.input {
            SourceInput::Kafka(kafka) => Source::Kafka(KafkaSource::start(
                config,
                kafka,
                pipeline,
                resume,
                decode_threads,
            )?),
            SourceInput::Replay(replay) => Source::Replay(FileReplay::start(
                config,
                replay,
                base_dir,
                resume,
                decode_threads,
            )?),
        })
    }

    /// The next micro-batch, or `None` at the end of a finite input.
    pub async fn next_batch(&mut self) -> Option<crate::error::Result<SourceBatch>> {
        match self {
            Source::Replay(r) => r.next_batch().await,
            Source::Kafka(k) => k.next_batch().await,
            Source::Inline(i) => i.next_batch(),
        }
    }

    /// Kafka: the consumer lag of the assigned partitions.
    pub fn kafka_lag(&self) -> Option<&KafkaLag> {
        match self {
            Source::Kafka(k) => Some(k.lag()),
            _ => None,
        }
    }

    /// A checkpoint holding `position` is complete: Kafka commits it to the
    /// consumer group (for monitoring; restarts use the checkpoint).
    pub fn checkpointed(&self, position: &SourcePosition) {
        if let Source::Kafka(k) = self {
            k.commit(position);
        }
    }
}

/// A checkpointed position of another kind of source than the one declared.
fn wrong_position(source: &str, position: &SourcePosition) -> crate::error::StreamSqlError {
    crate::error::Diagnostic::new(
        "pipelines.yaml",
        None,
        format!("source `{source}` changed kind since its checkpoint (it was at {position:?})"),
    )
    .with_fix("run with --from-scratch to read the new source from its start")
    .into()
}

/// How far a source has been read, as recorded in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcePosition {
    /// File replay: the last line read (1-based) and its file, relative to
    /// pipelines.yaml. Files replay in name order, so every file naming
    /// before `file` has been read completely.
    Replay { file: String, line: u64 },
    /// Kafka: per partition, the offset of the next message to read.
    Kafka {
        topic: String,
        offsets: std::collections::BTreeMap<i32, i64>,
    },
}
