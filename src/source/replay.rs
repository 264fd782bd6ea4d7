//! The embedded default source: replays the lines of local files (plain or
//! gzip) as micro-batches, decoding on a thread of its own so reading and
//! decoding overlap with the query work.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use tokio::sync::mpsc;

use super::{Decoder, SourceBatch, SourcePosition};
use crate::config::SourceConfig;
use crate::error::{Diagnostic, Result, StreamSqlError};

/// Where a line came from: file (relative to pipelines.yaml) and 1-based
/// line number.
#[derive(Debug, Clone)]
pub struct LinePosition {
    pub file: Arc<str>,
    pub line: u64,
}

impl fmt::Display for LinePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

pub struct FileReplay {
    batches: mpsc::Receiver<Result<SourceBatch>>,
}

impl FileReplay {
    /// The files `config.replay.path` matches (relative to `base_dir`), in name order.
    pub fn files(config: &SourceConfig, base_dir: &Path) -> Result<Vec<PathBuf>> {
        let pattern = base_dir.join(&config.replay.path);
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

    /// Starts replaying after `resume` (from the first line when `None`);
    /// batches arrive through [`FileReplay::next_batch`].
    pub fn start(
        config: &SourceConfig,
        base_dir: &Path,
        resume: Option<&SourcePosition>,
    ) -> Result<Self> {
        let files = Self::files(config, base_dir)?
            .into_iter()
            .map(|path| {
                let name = path.strip_prefix(base_dir).unwrap_or(&path).to_path_buf();
                (path, name)
            })
            .collect();
        let resume =
            resume.map(|SourcePosition::Replay { file, line }| (PathBuf::from(file), *line));
        let decoder = Decoder::new(config)?;
        let replay = Replay {
            decoder,
            batch_rows: config.replay.batch_rows,
            header: config.csv.header,
        };
        let (sender, batches) = mpsc::channel(4);
        std::thread::Builder::new()
            .name(format!("replay-{}", config.name))
            .spawn(move || {
                if let Err(e) = replay.run(files, resume, &sender) {
                    let _ = sender.blocking_send(Err(e));
                }
            })
            .map_err(|e| StreamSqlError::io("cannot start the replay thread", e))?;
        Ok(Self { batches })
    }

    /// The next micro-batch, or `None` when every file has been replayed.
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        self.batches.recv().await
    }
}

fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path)
        .map_err(|e| StreamSqlError::io(format!("cannot open {}", path.display()), e))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

struct Replay {
    decoder: Decoder,
    batch_rows: usize,
    header: bool,
}

impl Replay {
    /// Reads `files` (path, name relative to pipelines.yaml) in order, from
    /// after `resume` (a file name and the last line read in it), and sends
    /// a decoded batch every `batch_rows` lines. Batches may span files, so a
    /// resumed replay cuts exactly the batches an uninterrupted one would.
    fn run(
        &self,
        files: Vec<(PathBuf, PathBuf)>,
        resume: Option<(PathBuf, u64)>,
        sender: &mpsc::Sender<Result<SourceBatch>>,
    ) -> Result<()> {
        let mut bytes = Vec::new();
        let mut lines: Vec<(std::ops::Range<usize>, LinePosition)> =
            Vec::with_capacity(self.batch_rows);
        let flush = |bytes: &mut Vec<u8>,
                     lines: &mut Vec<(std::ops::Range<usize>, LinePosition)>|
         -> Result<bool> {
            let Some((_, last)) = lines.last() else {
                return Ok(true);
            };
            let position = SourcePosition::Replay {
                file: last.file.to_string(),
                line: last.line,
            };
            let batch = self.decoder.decode(bytes, lines, position)?;
            bytes.clear();
            lines.clear();
            // A closed receiver means the pipeline stopped: stop reading.
            Ok(sender.blocking_send(Ok(batch)).is_ok())
        };
        for (path, name) in files {
            let skip_through = match &resume {
                Some((file, _)) if name < *file => continue,
                Some((file, line)) if name == *file => *line,
                _ => 0,
            };
            let name: Arc<str> = Arc::from(name.display().to_string());
            let mut reader = BufReader::with_capacity(1 << 20, open(&path)?);
            let mut line_no = 0u64;
            loop {
                let start = bytes.len();
                let read = reader
                    .read_until(b'\n', &mut bytes)
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
                let end = bytes.len();
                bytes.push(b'\n');
                lines.push((
                    start..end,
                    LinePosition {
                        file: Arc::clone(&name),
                        line: line_no,
                    },
                ));
                if lines.len() >= self.batch_rows && !flush(&mut bytes, &mut lines)? {
                    return Ok(());
                }
            }
        }
        flush(&mut bytes, &mut lines)?;
        Ok(())
    }
}
