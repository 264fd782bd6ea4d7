//! Helpers shared by the integration tests: run a pipeline from YAML text,
//! read its Parquet outputs back in order.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use streamsql::runtime::{Pipeline, RunOptions, Summary};

/// A fresh directory under the target dir, removed at the start of each use.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamsql-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs `pipeline` of the pipelines file at `config`, writing into `output`.
pub async fn run(config: &Path, pipeline: &str, output: &Path) -> Summary {
    let loaded = streamsql::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    run_loaded(&loaded, pipeline, output).await
}

pub async fn run_loaded(
    loaded: &streamsql::config::LoadedConfig,
    pipeline: &str,
    output: &Path,
) -> Summary {
    let options = RunOptions {
        output_dir: Some(output.to_path_buf()),
        ..Default::default()
    };
    run_with(loaded, pipeline, &options).await
}

pub async fn run_with(
    loaded: &streamsql::config::LoadedConfig,
    pipeline: &str,
    options: &RunOptions,
) -> Summary {
    let runner = Pipeline::build(loaded, pipeline, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    runner.run(options).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Every batch of the `part-*.parquet` files in `dir`, in file order.
pub fn read_parts(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    let mut batches = Vec::new();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).expect("open part"),
        )
        .expect("parquet reader")
        .build()
        .expect("parquet reader");
        batches.extend(reader.map(|b| b.expect("read batch")));
    }
    batches
}

/// The stdout of a finished command, which must have succeeded.
pub fn assert_ok(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every row of the `part-*.parquet` files in `dirs`, as `|`-joined text.
pub fn row_texts(dirs: &[&Path]) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for dir in dirs {
        for batch in read_parts(dir) {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for r in 0..batch.num_rows() {
                let row: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
                rows.push(row.join("|"));
            }
        }
    }
    rows
}

/// Asserts two sorted row lists are equal, showing the first difference.
pub fn assert_same_rows(table: &str, want: &[String], got: &[String]) {
    assert_eq!(want.len(), got.len(), "rows of {table}");
    if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
        panic!(
            "{table} differs at sorted row {i}:\n want {}\n got  {}",
            want[i], got[i]
        );
    }
}

/// The `columns:` entries of the Google trace's task_events, as YAML lines
/// indented for a source block.
pub fn task_events_columns_yaml() -> String {
    "time:int64 missing_info:int32 job_id:int64 task_index:int64 machine_id:int64 \
     event_type:int32 user:string scheduling_class:int32 priority:int32 \
     cpu_request:double memory_request:double disk_request:double different_machines:int32"
        .split_whitespace()
        .map(|c| {
            let (name, ty) = c.split_once(':').unwrap();
            format!("          - {{ name: {name}, type: {ty} }}\n")
        })
        .collect()
}
