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
