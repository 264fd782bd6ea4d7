//! A lookup table in a file: CSV or JSON lines (gzipped when the name ends
//! in `.gz`) decoded as a source's records are, or Parquet; read again when
//! its modification time or length changes.
//!
//! A version is all good or not used: one record that does not decode
//! refuses the file (naming the line), so a table never silently loses a
//! row. At start that stops the run; later the last good version stays.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{TableConfig, TableFormat, TableReader, schema_of};
use crate::error::{Result, StreamSqlError};
use crate::source::{Decoder, Records, open_file};

pub(super) struct FileTable {
    path: PathBuf,
    schema: SchemaRef,
    /// CSV and JSON records; `None` for Parquet.
    decoder: Option<Decoder>,
    header: bool,
    /// The stamp of the version read last.
    read: Option<Stamp>,
}

/// Inode, change time, modification time and length.
type Stamp = (u64, (i64, i64), SystemTime, u64);

impl FileTable {
    pub fn new(config: &TableConfig, path: PathBuf) -> Result<Self> {
        let decoder = match config.format {
            TableFormat::Parquet => None,
            TableFormat::Csv | TableFormat::Json => Some(Decoder::for_table(config)?),
        };
        Ok(Self {
            path,
            schema: schema_of(config),
            decoder,
            header: config.format == TableFormat::Csv && config.csv.header,
            read: None,
        })
    }

    /// What tells a version of the file: its inode (a file renamed over
    /// it), change time (a rewrite in place, even one keeping the
    /// modification time, as `cp -p` does), modification time and length.
    fn stamp(&self) -> Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(&self.path)
            .map_err(|e| StreamSqlError::io(format!("cannot read {}", self.path.display()), e))?;
        Ok((
            metadata.ino(),
            (metadata.ctime(), metadata.ctime_nsec()),
            metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            metadata.len(),
        ))
    }

    fn read_records(&self, decoder: &Decoder) -> Result<RecordBatch> {
        let mut text = Vec::new();
        open_file(&self.path)?
            .read_to_end(&mut text)
            .map_err(|e| StreamSqlError::io(format!("cannot read {}", self.path.display()), e))?;
        let origin: Arc<str> = Arc::from(self.path.display().to_string());
        let mut records = Records::default();
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            let skip = (n == 0 && self.header) || line.trim_ascii().is_empty();
            if !skip {
                records.push(line, &origin, n as u64 + 1, None);
            }
        }
        let (rows, _, dead_letters) = decoder.records(&records.bytes, &records.lines)?;
        match dead_letters.first() {
            None => Ok(rows),
            Some(first) => Err(StreamSqlError::Table(format!(
                "{}: {}{}; fix the file (the table is all good or not used)",
                first.position,
                first.reason,
                match dead_letters.len() {
                    1 => String::new(),
                    n => format!(" (and {} more bad rows)", n - 1),
                }
            ))),
        }
    }

    /// The declared columns of a Parquet file, found by name and cast to
    /// the declared types (a value that does not convert refuses the file).
    fn read_parquet(&self) -> Result<RecordBatch> {
        let file = File::open(&self.path)
            .map_err(|e| StreamSqlError::io(format!("cannot open {}", self.path.display()), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch?;
            let mut columns = Vec::with_capacity(self.schema.fields().len());
            for field in self.schema.fields() {
                let column = batch.column_by_name(field.name()).ok_or_else(|| {
                    StreamSqlError::Table(format!(
                        "{} has no column `{}`",
                        self.path.display(),
                        field.name()
                    ))
                })?;
                columns.push(
                    cast_with_options(column, field.data_type(), &strict).map_err(|e| {
                        StreamSqlError::Table(format!(
                            "{}: column `{}`: {e}",
                            self.path.display(),
                            field.name()
                        ))
                    })?,
                );
            }
            batches.push(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        Ok(concat_batches(&self.schema, &batches)?)
    }
}

impl TableReader for FileTable {
    fn load(&mut self, _stop: &AtomicBool) -> Result<RecordBatch> {
        let stamp = self.stamp()?;
        let rows = match &self.decoder {
            Some(decoder) => self.read_records(decoder)?,
            None => self.read_parquet()?,
        };
        // Written to while it was read: the rows may be half of each version.
        if self.stamp()? != stamp {
            return Err(StreamSqlError::Table(format!(
                "{} changed while it was read; it is read again at the next check",
                self.path.display()
            )));
        }
        self.read = Some(stamp);
        Ok(rows)
    }

    /// A failed read is tried again only when the file changes once more.
    fn refresh(&mut self, stop: &AtomicBool) -> Result<Option<RecordBatch>> {
        let stamp = self.stamp()?;
        if self.read == Some(stamp) {
            return Ok(None);
        }
        let read = self.load(stop).map(Some);
        if read.is_err() {
            self.read = Some(stamp);
        }
        read
    }
}
