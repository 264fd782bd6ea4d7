//! `streamsql query`: SQL over a pipeline's Parquet outputs, so analysts need
//! no other tool. Every output folder (`<query>`, `<source>_late`) is a table.

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::arrow::{csv, json};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Diagnostic, Result, StreamSqlError};

/// How `query` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Runs `sql` with every folder of Parquet parts under `dir` as a table.
pub async fn query_outputs(dir: &Path, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        StreamSqlError::from(
            Diagnostic::new(
                dir.display().to_string(),
                None,
                format!("no outputs here: {e}"),
            )
            .with_fix("run the pipeline first, or pass --output with the folder it wrote"),
        )
    })?;
    let mut tables = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if has_parquet_parts(&path) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let options = ParquetReadOptions::default().file_extension(".parquet");
            ctx.register_parquet(&name, path.to_string_lossy().as_ref(), options)
                .await?;
            tables.push(name);
        }
    }
    let frame = ctx.sql(sql).await.map_err(|e| {
        StreamSqlError::from(
            Diagnostic::new("query", None, e.strip_backtrace())
                .with_fix(format!("tables here: {}", tables.join(", "))),
        )
    })?;
    Ok(frame.collect().await?)
}

/// Whether `dir` holds Parquet parts (an output table with rows).
pub fn has_parquet_parts(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|files| {
            files
                .flatten()
                .any(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
        })
        .unwrap_or(false)
}

pub fn print(batches: &[RecordBatch], format: OutputFormat) -> Result<()> {
    let stdout = std::io::stdout();
    match format {
        OutputFormat::Table => println!("{}", pretty_format_batches(batches)?),
        OutputFormat::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .with_header(true)
                .build(stdout.lock());
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = json::LineDelimitedWriter::new(stdout.lock());
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
        }
    }
    Ok(())
}
