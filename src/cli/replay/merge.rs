//! The k-way merge of trace files by event time: every file of every table
//! is open at once, and the line with the smallest time goes next. Ties keep
//! file order (table order, then file name order, then line order).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use crate::error::{Result, StreamSqlError};

/// One line of a trace table, its time, and the table it belongs to.
pub struct TraceLine {
    pub table: usize,
    pub time: i64,
    /// The line without its newline.
    pub line: Vec<u8>,
}

struct OpenFile {
    reader: BufReader<Box<dyn std::io::Read + Send>>,
    table: usize,
    name: String,
    /// Time of the last line with a readable time: a line without one goes
    /// out right after its predecessor, and the engine dead-letters it.
    last_time: i64,
}

impl OpenFile {
    fn next_line(&mut self) -> Result<Option<TraceLine>> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| StreamSqlError::io(format!("cannot read {}", self.name), e))?;
            if read == 0 {
                return Ok(None);
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.is_empty() {
                break;
            }
        }
        let time = line
            .split(|b| *b == b',')
            .next()
            .and_then(|f| std::str::from_utf8(f).ok()?.trim().parse::<i64>().ok())
            .unwrap_or(self.last_time);
        self.last_time = time;
        Ok(Some(TraceLine {
            table: self.table,
            time,
            line,
        }))
    }
}

/// Merges the lines of `tables` (each a list of files, in order) by time.
pub struct TimeMerge {
    files: Vec<OpenFile>,
    /// (time, file index) of each file's next line.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    pending: Vec<Option<TraceLine>>,
}

impl TimeMerge {
    pub fn open(tables: &[Vec<PathBuf>]) -> Result<Self> {
        let mut files = Vec::new();
        for (table, paths) in tables.iter().enumerate() {
            for path in paths {
                files.push(OpenFile {
                    reader: BufReader::with_capacity(256 * 1024, crate::source::open_file(path)?),
                    table,
                    name: path.display().to_string(),
                    last_time: i64::MIN,
                });
            }
        }
        let mut merge = Self {
            pending: (0..files.len()).map(|_| None).collect(),
            files,
            heap: BinaryHeap::new(),
        };
        for index in 0..merge.files.len() {
            merge.refill(index)?;
        }
        Ok(merge)
    }

    fn refill(&mut self, index: usize) -> Result<()> {
        if let Some(line) = self.files[index].next_line()? {
            self.heap.push(Reverse((line.time, index)));
            self.pending[index] = Some(line);
        }
        Ok(())
    }

    /// The next line in time order, or `None` when every file is done.
    pub fn next_line(&mut self) -> Result<Option<TraceLine>> {
        let Some(Reverse((_, index))) = self.heap.pop() else {
            return Ok(None);
        };
        let line = self.pending[index].take();
        self.refill(index)?;
        Ok(line)
    }
}
