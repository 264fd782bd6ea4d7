//! Parquet result files: `<dir>/part-<epoch>.parquet`, one per commit epoch
//! with rows, written to a temporary name and renamed, so a reader never sees
//! a half-written file and a replayed epoch overwrites its own file.

use std::fs::File;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use serde::Deserialize;

use super::{DeadLetterSink, Sink};
use crate::error::{Result, StreamSqlError};

/// `parquet: {}`: the query's rows as Parquet under `<output_dir>/<query>/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {}

pub struct ParquetSink {
    /// `parquet <dir>`, for messages.
    name: String,
    dir: PathBuf,
    schema: SchemaRef,
    /// The file of the epoch in progress, opened at its first row. Rows are
    /// streamed into it (row groups of bounded size), never held in memory.
    open: Option<Box<ArrowWriter<File>>>,
}

/// Name of the file an epoch is written to before its commit renames it.
const IN_PROGRESS: &str = ".part-in-progress.parquet.tmp";

/// Rows per row group: bounds what the writer buffers.
const ROW_GROUP_ROWS: usize = 64 * 1024;

impl ParquetSink {
    /// A sink writing into `dir`. Part files of epochs after `keep_through`
    /// (all, when `None`: a fresh start) are removed: they belong to epochs
    /// no checkpoint covers, which this run writes again.
    pub fn create(dir: &Path, schema: SchemaRef, keep_through: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
        remove_parts(dir, "parquet", keep_through)?;
        Ok(Self {
            name: format!("parquet {}", dir.display()),
            dir: dir.to_path_buf(),
            schema,
            open: None,
        })
    }

    fn write_rows(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let writer = match &mut self.open {
            Some(writer) => writer,
            None => {
                let tmp = self.dir.join(IN_PROGRESS);
                let file = File::create(&tmp).map_err(|e| {
                    StreamSqlError::io(format!("cannot create {}", tmp.display()), e)
                })?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                self.open.insert(Box::new(ArrowWriter::try_new(
                    file,
                    self.schema.clone(),
                    Some(props),
                )?))
            }
        };
        writer.write(batch)?;
        Ok(())
    }

    /// Finishes the epoch's file as `part-<epoch>.parquet` (if it has rows).
    fn finish_epoch(&mut self, epoch: u64) -> Result<()> {
        let Some(writer) = self.open.take() else {
            return Ok(());
        };
        let file = writer.into_inner()?;
        let path = self.dir.join(format!("part-{epoch:06}.parquet"));
        crate::state::install(file, &self.dir.join(IN_PROGRESS), &path)
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &RecordBatch, _: &mut DeadLetterSink) -> Result<()> {
        self.write_rows(batch)
    }

    async fn commit(&mut self, epoch: u64, _: &mut DeadLetterSink) -> Result<()> {
        self.finish_epoch(epoch)
    }
}

/// Removes the `part-<epoch>.<extension>` files in `dir` with an epoch after
/// `keep_through` (every one when `None`).
pub fn remove_parts(dir: &Path, extension: &str, keep_through: Option<u64>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StreamSqlError::io(format!("cannot list {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let epoch = name
            .strip_prefix("part-")
            .and_then(|rest| rest.strip_suffix(&format!(".{extension}")))
            .and_then(|epoch| epoch.parse::<u64>().ok());
        if epoch.is_some_and(|epoch| keep_through.is_none_or(|keep| epoch > keep)) {
            std::fs::remove_file(entry.path()).map_err(|e| {
                StreamSqlError::io(format!("cannot remove {}", entry.path().display()), e)
            })?;
        }
    }
    Ok(())
}
