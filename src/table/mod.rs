//! Lookup tables: a file or a compacted Kafka topic, held in memory as its
//! newest version, that queries join with by key (`FROM events e JOIN
//! machines m ON m.machine_id = e.machine_id`; see docs/sql.md).
//!
//! A lookup join is row-local: DataFusion joins each micro-batch with the
//! table as it is when the batch is processed. It is a processing-time join,
//! like Flink's `FOR SYSTEM_TIME AS OF` a processing time: while the table
//! does not change, answers do not depend on batch sizes or parallelism; a
//! new version applies to the rows processed after it was read. The table
//! is not checkpointed: a restart reads it again.

mod config;
mod file;
mod join;
mod kafka;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

pub use config::{KafkaTableConfig, TableConfig, TableFormat, TableInput};

use crate::source::ColumnConfig;
pub use join::{LookupJoinExec, LookupJoins, LookupTableExec, scans_lookup_only};

use crate::error::{Result, StreamSqlError};

/// A table's schema: its declared columns.
pub fn schema_of(config: &TableConfig) -> SchemaRef {
    Arc::new(Schema::new(
        (config.columns.iter())
            .map(ColumnConfig::field)
            .collect::<Vec<_>>(),
    ))
}

/// The newest version of a table's rows, shared by every plan that joins
/// it (DataFusion reads it through [`PartitionStream`] each time a plan
/// runs).
#[derive(Debug, Clone)]
pub struct TableRows {
    schema: SchemaRef,
    current: Arc<RwLock<Arc<RecordBatch>>>,
    stats: Arc<TableStats>,
}

/// What the metrics tell of a table.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Rows of the current version.
    pub rows: AtomicU64,
    /// Versions read (the first one included).
    pub loads: AtomicU64,
    /// Versions, or Kafka records, that could not be read.
    pub failures: AtomicU64,
}

impl TableRows {
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(RecordBatch::new_empty(Arc::clone(
                &schema,
            ))))),
            schema,
            stats: Arc::default(),
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    /// Makes `rows` the version every later plan run reads.
    fn replace(&self, rows: RecordBatch) -> Result<()> {
        // The same columns, under the table's own schema.
        let rows = RecordBatch::try_new(Arc::clone(&self.schema), rows.columns().to_vec())?;
        self.stats
            .rows
            .store(rows.num_rows() as u64, Ordering::Relaxed);
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means a reader panicked; the value is
        // replaced wholesale.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rows);
        Ok(())
    }

    pub(crate) fn current(&self) -> Arc<RecordBatch> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl PartitionStream for TableRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rows = self.current().as_ref().clone();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(async move { Ok(rows) }),
        ))
    }
}

/// A table kept current by a thread of its own, stopped when this is dropped.
pub struct LiveTable {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveTable {
    /// An error once the thread keeping the table current has died (it
    /// only ends when stopped): the run must not go on with a table that
    /// no longer follows its file or topic.
    pub fn check(&self) -> Result<()> {
        match &self.thread {
            Some(thread) if thread.is_finished() => Err(StreamSqlError::Table(format!(
                "lookup table `{}`: the thread reading it died (see the log above)",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

impl Drop for LiveTable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads table `config` into `rows` (the run does not start when that
/// fails), then keeps it current: a file is read again when it changes, a
/// topic's new messages are applied every `refresh_interval`.
pub fn start(
    config: &TableConfig,
    rows: TableRows,
    base_dir: &Path,
    pipeline: &str,
) -> Result<LiveTable> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader: Box<dyn TableReader> = match &config.input {
        TableInput::File(path) => Box::new(file::FileTable::new(config, base_dir.join(path))?),
        TableInput::Kafka(kafka) => Box::new(kafka::KafkaTable::new(
            config,
            kafka,
            pipeline,
            Arc::clone(&rows.stats),
        )?),
    };
    let first = reader
        .load(&stop)
        .map_err(|e| StreamSqlError::Table(format!("table `{}`: {e}", config.name)))?;
    rows.replace(keep_last_per_key(first, &config.key)?)?;
    let (name, key, interval) = (
        config.name.clone(),
        config.key.clone(),
        config.refresh_interval,
    );
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name(format!("table-{name}"))
        .spawn(move || {
            while sleep_unless_stopped(interval, &thread_stop) {
                match reader.refresh(&thread_stop) {
                    Ok(None) => {}
                    Ok(Some(version)) => {
                        let kept = keep_last_per_key(version, &key).and_then(|v| {
                            let count = v.num_rows();
                            rows.replace(v).map(|()| count)
                        });
                        match kept {
                            Ok(count) => {
                                tracing::info!(table = %name, rows = count, "lookup table read again")
                            }
                            Err(e) => failed(&rows, &name, &e),
                        }
                    }
                    Err(e) => failed(&rows, &name, &e),
                }
            }
        })
        .map_err(|e| StreamSqlError::io("cannot start a lookup table's thread", e))?;
    Ok(LiveTable {
        name: config.name.clone(),
        stop,
        thread: Some(thread),
    })
}

/// A new version that cannot be read leaves the current one in place.
fn failed(rows: &TableRows, name: &str, error: &StreamSqlError) {
    rows.stats.failures.fetch_add(1, Ordering::Relaxed);
    tracing::error!(table = %name, "lookup table not read again, its last version stays: {error}");
}

/// Sleeps `interval` in short steps; `false` once `stop` is set.
fn sleep_unless_stopped(interval: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    false
}

/// Where a table's versions come from.
trait TableReader: Send {
    /// The whole table, read now.
    fn load(&mut self, stop: &AtomicBool) -> Result<RecordBatch>;
    /// A new version when the table changed since the last one.
    fn refresh(&mut self, stop: &AtomicBool) -> Result<Option<RecordBatch>>;
}

/// Of the rows with equal `key` values, the last (every row when `key` is
/// empty), in file order.
fn keep_last_per_key(rows: RecordBatch, key: &[String]) -> Result<RecordBatch> {
    if key.is_empty() || rows.num_rows() == 0 {
        return Ok(rows);
    }
    let columns = (key.iter())
        .map(|k| rows.column_by_name(k).cloned())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| crate::internal_error!("table key columns passed checks"))?;
    let converter = RowConverter::new(
        (columns.iter())
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let keys = converter.convert_columns(&columns)?;
    let mut last = std::collections::HashMap::with_capacity(rows.num_rows());
    for (i, row) in keys.iter().enumerate() {
        last.insert(row, i as u32);
    }
    if last.len() == rows.num_rows() {
        return Ok(rows);
    }
    let mut kept: Vec<u32> = last.into_values().collect();
    kept.sort_unstable();
    Ok(take_record_batch(
        &rows,
        &datafusion::arrow::array::UInt32Array::from(kept),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    #[test]
    fn of_rows_with_one_key_the_last_is_kept_in_file_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let rows = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    Some("a"),
                    None,
                    Some("c"),
                    None,
                    Some("b"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6, 7])),
            ],
        )
        .unwrap();
        let kept = keep_last_per_key(rows.clone(), &["id".into()]).unwrap();
        let values: Vec<i64> = kept
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec();
        // a: 3, NULL: 6 (a NULL key is a key too), c: 5, b: 7, in file order.
        assert_eq!(values, vec![3, 5, 6, 7]);
        assert_eq!(keep_last_per_key(rows, &[]).unwrap().num_rows(), 7);
    }
}
