//! Parquet result files: `<dir>/part-<epoch>.parquet`, one per commit epoch
//! with rows, written to a temporary name and renamed, so a reader never sees
//! a half-written file and a replayed epoch overwrites its own file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{DeadLetterSink, Sink};
use crate::error::{Result, StreamSqlError};

/// `parquet: {}`: the query's rows as Parquet under `<output_dir>/<query>/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {}

/// Writes an epoch's rows into its part file. Lives on the sink's thread.
struct PartWriter {
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

/// Batches handed to the thread and not yet encoded: bounds the memory
/// when encoding falls behind (the driver then waits).
const QUEUED_BATCHES: usize = 16;

impl PartWriter {
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

    /// Runs the jobs until the sink is dropped or a write fails; a failure
    /// is left in `failed` for the sink to report.
    fn run(mut self, mut jobs: mpsc::Receiver<Job>, failed: Arc<Mutex<Option<String>>>) {
        while let Some(job) = jobs.blocking_recv() {
            let failure = match job {
                Job::Rows(batch) => self.write_rows(&batch).err().map(|e| e.to_string()),
                Job::Commit(epoch, done) => {
                    let result = self.finish_epoch(epoch);
                    let failure = result.as_ref().err().map(ToString::to_string);
                    let _ = done.send(result);
                    failure
                }
            };
            if failure.is_some() {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = failure;
                return;
            }
        }
    }
}

enum Job {
    Rows(RecordBatch),
    Commit(u64, oneshot::Sender<Result<()>>),
}

/// The sink: encoding Parquet is the costliest step after decoding, so it
/// runs on a thread of the sink's own while the driver goes on with the next
/// batch. `write` queues a batch; `commit` waits until the epoch's file is
/// in place. A write that fails on the thread fails the next `write` or
/// `commit`, as does a thread that died.
pub struct ParquetSink {
    /// `parquet <dir>`, for messages.
    name: String,
    jobs: mpsc::Sender<Job>,
    failed: Arc<Mutex<Option<String>>>,
}

impl ParquetSink {
    /// A sink writing into `dir`. Part files of epochs after `keep_through`
    /// (all, when `None`: a fresh start) are removed: they belong to epochs
    /// no checkpoint covers, which this run writes again.
    pub fn create(dir: &Path, schema: SchemaRef, keep_through: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
        remove_parts(dir, "parquet", keep_through)?;
        let name = format!("parquet {}", dir.display());
        let writer = PartWriter {
            dir: dir.to_path_buf(),
            schema,
            open: None,
        };
        let (jobs, queue) = mpsc::channel(QUEUED_BATCHES);
        let failed = Arc::new(Mutex::new(None));
        let thread_failed = Arc::clone(&failed);
        std::thread::Builder::new()
            .name("parquet-sink".into())
            .spawn(move || writer.run(queue, thread_failed))
            .map_err(|e| StreamSqlError::io("cannot start the Parquet sink's thread", e))?;
        Ok(Self { name, jobs, failed })
    }

    /// Why the thread stopped taking jobs.
    fn stopped(&self) -> StreamSqlError {
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        StreamSqlError::Sink(format!(
            "{}: {}",
            self.name,
            failed.unwrap_or_else(|| "its writing thread died".into())
        ))
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &RecordBatch, _: &mut DeadLetterSink) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.jobs.send(Job::Rows(batch.clone())).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped()),
        }
    }

    async fn commit(&mut self, epoch: u64, _: &mut DeadLetterSink) -> Result<()> {
        let (done, finished) = oneshot::channel();
        if self.jobs.send(Job::Commit(epoch, done)).await.is_err() {
            return Err(self.stopped());
        }
        match finished.await {
            Ok(result) => result,
            Err(_) => Err(self.stopped()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("streamsql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn rows_written_on_the_thread_are_in_the_part_once_committed() {
        let dir = scratch("parquet-sink");
        let mut dead = DeadLetterSink::create(&dir.join("dead"), None).unwrap();
        let mut sink = ParquetSink::create(&dir, batch(vec![]).schema(), None).unwrap();
        for i in 0..100 {
            sink.write(&batch(vec![i; 1000]), &mut dead).await.unwrap();
        }
        sink.commit(3, &mut dead).await.unwrap();
        let file = File::open(dir.join("part-000003.parquet")).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192)
                .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 100_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_write_failing_on_the_thread_fails_the_commit() {
        let dir = scratch("parquet-sink-fails");
        let mut dead = DeadLetterSink::create(&dir.join("dead"), None).unwrap();
        let out = dir.join("out");
        let mut sink = ParquetSink::create(&out, batch(vec![]).schema(), None).unwrap();
        // The part file cannot be created once its folder is gone.
        std::fs::remove_dir_all(&out).unwrap();
        let written = sink.write(&batch(vec![1, 2, 3]), &mut dead).await;
        let committed = sink.commit(0, &mut dead).await;
        let error = written.and(committed).unwrap_err().to_string();
        assert!(error.contains("cannot create"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
