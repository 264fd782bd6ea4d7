//! The embedded default source: replays the lines of local files (plain or
//! gzip) as micro-batches. One thread reads and cuts the lines into batches,
//! several decode them ([`super::ordered`]), so reading, decoding and the
//! query work overlap.

mod config;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

pub use config::ReplayConfig;
pub(crate) use config::default_batch_rows;

use super::decode::KEPT_OF_TOO_LONG;
use super::ordered::{PoolInput, PoolOutput, ordered_pool};
use super::{
    Decoder, MAX_BATCH_BYTES, RawRecord, SourceBatch, SourceConfig, SourcePosition, wrong_position,
};
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::sink::DeadLetter;

pub struct FileReplay {
    batches: PoolOutput<Result<SourceBatch>>,
    /// The reading thread, joined at the end of its batches: a thread that
    /// died (a panic) fails the run instead of looking like the end of input.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FileReplay {
    /// The files `replay.path` matches (relative to `base_dir`), in name order.
    pub fn files(
        config: &SourceConfig,
        replay: &ReplayConfig,
        base_dir: &Path,
    ) -> Result<Vec<PathBuf>> {
        let pattern = base_dir.join(&replay.path);
        let pattern = pattern.to_string_lossy();
        let no_files = |why: String| -> StreamSqlError {
            Diagnostic::new(
                "pipelines.yaml",
                None,
                format!("source `{}`: {why}", config.name),
            )
            .with_fix(
                "`replay.path` is a glob relative to pipelines.yaml, e.g. datasets/x/part-*.csv.gz",
            )
            .into()
        };
        let mut files: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| no_files(format!("bad pattern `{pattern}`: {e}")))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        if files.is_empty() {
            return Err(no_files(format!("no file matches `{pattern}`")));
        }
        files.sort();
        Ok(files)
    }

    /// Starts replaying after `resume` (from the first line when `None`),
    /// decoding on `decode_threads` threads; batches arrive through
    /// [`FileReplay::next_batch`].
    pub fn start(
        config: &SourceConfig,
        replay: &ReplayConfig,
        base_dir: &Path,
        resume: Option<&SourcePosition>,
        decode_threads: usize,
    ) -> Result<Self> {
        let files = Self::files(config, replay, base_dir)?
            .into_iter()
            .map(|path| {
                let name = path.strip_prefix(base_dir).unwrap_or(&path).to_path_buf();
                (path, name)
            })
            .collect();
        let resume = match resume {
            Some(SourcePosition::Replay { file, line }) => Some((PathBuf::from(file), *line)),
            Some(other) => return Err(wrong_position(&config.name, other)),
            None => None,
        };
        let decoder = Arc::new(Decoder::new(config)?);
        let replay = Replay {
            decoder: Arc::clone(&decoder),
            batch_rows: replay.batch_rows,
            header: config.csv.header,
        };
        let (mut sender, batches) = ordered_pool(
            &config.name,
            decode_threads,
            Arc::new(move |raw: Result<RawBatch>| raw?.decode(&decoder)),
        )?;
        let reader = std::thread::Builder::new()
            .name(format!("replay-{}", config.name))
            .spawn(move || {
                if let Err(e) = replay.run(files, resume, &mut sender) {
                    sender.send(Err(e));
                }
            })
            .map_err(|e| StreamSqlError::io("cannot start the replay thread", e))?;
        Ok(Self {
            batches,
            reader: Some(reader),
        })
    }

    /// The next micro-batch, or `None` when every file has been replayed.
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        if let Some(batch) = self.batches.recv().await {
            return Some(batch);
        }
        let reader = self.reader.take()?;
        if let Err(e) = self.batches.join().await {
            return Some(Err(e));
        }
        let joined = tokio::task::spawn_blocking(move || reader.join()).await;
        match joined {
            Ok(Ok(())) => None,
            Ok(Err(panic)) => Some(crate::internal_err!(
                "the replay thread died: {}",
                panic_message(&panic)
            )),
            Err(e) => Some(crate::internal_err!("joining the replay thread: {e}")),
        }
    }
}

/// What a panicking thread said.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".to_string())
}

/// Opens a file for reading, decompressing `.gz`.
pub fn open_file(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path)
        .map_err(|e| StreamSqlError::io(format!("cannot open {}", path.display()), e))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

struct Replay {
    decoder: Arc<Decoder>,
    batch_rows: usize,
    header: bool,
}

/// A micro-batch as read, before decoding: its lines in one buffer, each
/// ending in `\n`, and the lines too long to keep.
struct RawBatch {
    bytes: Vec<u8>,
    lines: Vec<RawRecord>,
    too_long: Vec<DeadLetter>,
    position: SourcePosition,
}

impl RawBatch {
    fn decode(self, decoder: &Decoder) -> Result<SourceBatch> {
        let mut batch = decoder.decode(&self.bytes, &self.lines, self.position)?;
        batch.dead_letters.extend(self.too_long);
        Ok(batch)
    }
}

impl Replay {
    /// Reads `files` (path, name relative to pipelines.yaml) in order, from
    /// after `resume` (a file name and the last line read in it), and hands
    /// on a raw batch every `batch_rows` lines. Batches may span files, so a
    /// resumed replay cuts exactly the batches an uninterrupted one would.
    fn run(
        &self,
        files: Vec<(PathBuf, PathBuf)>,
        resume: Option<(PathBuf, u64)>,
        sender: &mut PoolInput<Result<RawBatch>>,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        let mut lines: Vec<RawRecord> = Vec::with_capacity(self.batch_rows);
        // Lines longer than `max_record_bytes`, as dead letters, and the
        // last line read (kept or not): where a batch leaves the source.
        let mut too_long = Vec::new();
        let mut last: Option<(Arc<str>, u64)> = None;
        let batch_rows = self.batch_rows;
        let mut flush = |bytes: &mut Vec<u8>,
                         lines: &mut Vec<RawRecord>,
                         too_long: &mut Vec<DeadLetter>,
                         last: &Option<(Arc<str>, u64)>|
         -> bool {
            let Some((file, line)) = last else {
                return true;
            };
            if lines.is_empty() && too_long.is_empty() {
                return true;
            }
            let raw = RawBatch {
                bytes: std::mem::replace(bytes, Vec::with_capacity(bytes.len())),
                lines: std::mem::replace(lines, Vec::with_capacity(batch_rows)),
                too_long: std::mem::take(too_long),
                position: SourcePosition::Replay {
                    file: file.to_string(),
                    line: *line,
                },
            };
            // A closed pool means the pipeline stopped: stop reading.
            sender.send(Ok(raw))
        };
        let limit = self.decoder.max_record_bytes();
        for (path, name) in files {
            let skip_through = match &resume {
                Some((file, _)) if name < *file => continue,
                Some((file, line)) if name == *file => *line,
                _ => 0,
            };
            let name: Arc<str> = Arc::from(name.display().to_string());
            let mut reader = BufReader::with_capacity(1 << 20, open_file(&path)?);
            let mut line_no = 0u64;
            loop {
                let start = bytes.len();
                let (read, whole) = read_line(&mut reader, &mut bytes, limit)
                    .map_err(|e| StreamSqlError::io(format!("cannot read {name}"), e))?;
                if read == 0 {
                    break;
                }
                line_no += 1;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                if line_no <= skip_through || (self.header && line_no == 1) || bytes.len() == start
                {
                    bytes.truncate(start);
                    continue;
                }
                last = Some((Arc::clone(&name), line_no));
                let record = RawRecord {
                    bytes: start..bytes.len(),
                    origin: Arc::clone(&name),
                    index: line_no,
                    timestamp: None,
                };
                if whole {
                    bytes.push(b'\n');
                    lines.push(record);
                } else {
                    too_long.push(self.decoder.too_long(&record, &bytes[start..], read));
                    bytes.truncate(start);
                }
                let full = lines.len() + too_long.len() >= self.batch_rows
                    || bytes.len() >= MAX_BATCH_BYTES;
                if full && !flush(&mut bytes, &mut lines, &mut too_long, &last) {
                    return Ok(());
                }
            }
        }
        flush(&mut bytes, &mut lines, &mut too_long, &last);
        Ok(())
    }
}

/// Appends the next line of `reader`, with its `\n` if it has one, to
/// `bytes`. A line longer than `limit` is read to its end but only its
/// first [`KEPT_OF_TOO_LONG`] bytes are kept, so memory stays bounded
/// whatever the input. Returns the line's length (0 at the end of the
/// input) and whether it was kept whole.
fn read_line(
    reader: &mut impl BufRead,
    bytes: &mut Vec<u8>,
    limit: usize,
) -> io::Result<(u64, bool)> {
    let start = bytes.len();
    let read = reader
        .by_ref()
        .take(limit as u64 + 1)
        .read_until(b'\n', bytes)?;
    if read <= limit || bytes.last() == Some(&b'\n') {
        return Ok((read as u64, true));
    }
    bytes.truncate(start + KEPT_OF_TOO_LONG.min(read));
    let mut length = read as u64;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        match buffer.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                length += i as u64 + 1;
                break;
            }
            None => {
                let n = buffer.len();
                reader.consume(n);
                length += n as u64;
            }
        }
    }
    Ok((length, false))
}
