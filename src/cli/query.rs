//! `streamsql query`: SQL over a pipeline's Parquet outputs, so analysts need
//! no other tool. Every output folder (`<query>`, `<source>_late`) is a table.
//! Read-only: DDL, DML and `COPY ... TO` are refused.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::arrow::{csv, json};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::config;
use crate::error::{Diagnostic, Result, StreamSqlError};

#[derive(clap::Args)]
pub struct Args {
    /// The SQL, or the path of a `.sql` file holding it.
    sql: String,
    /// The pipeline whose outputs to read (default: the only one, or the
    /// only one that has written outputs).
    #[arg(short, long)]
    pipeline: Option<String>,
    /// Read outputs from here instead of the pipeline's output_dir.
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
}

pub async fn execute(args: Args, config: &Path) -> Result<()> {
    let dir = match args.output {
        Some(dir) => dir,
        None => outputs_of(config, args.pipeline)?,
    };
    // A path to a .sql file runs the file (queries/batch/*.sql).
    let sql = match args.sql.trim_end().ends_with(".sql") && Path::new(&args.sql).is_file() {
        true => std::fs::read_to_string(&args.sql)
            .map_err(|e| StreamSqlError::io(format!("cannot read {}", args.sql), e))?,
        false => args.sql,
    };
    let batches = query_outputs(&dir, &sql).await?;
    print(&batches, args.format)
}

/// The output folder of `pipeline`, or of the only pipeline there is, or of
/// the only one that has written outputs.
fn outputs_of(config: &Path, pipeline: Option<String>) -> Result<PathBuf> {
    let loaded = config::load(config)?;
    let dirs: Vec<(&String, PathBuf)> = loaded
        .file
        .pipelines
        .iter()
        .filter(|(name, _)| pipeline.as_ref().is_none_or(|p| p == *name))
        .map(|(name, p)| (name, loaded.output_dir(name, p)))
        .collect();
    if let [(_, dir)] = dirs.as_slice() {
        return Ok(dir.clone());
    }
    if let Some(name) = &pipeline {
        return Err(loaded
            .pipeline(name)
            .err()
            .unwrap_or_else(|| crate::internal_error!("pipeline {name} found twice")));
    }
    let written: Vec<&(&String, PathBuf)> = dirs.iter().filter(|(_, d)| d.is_dir()).collect();
    match written.as_slice() {
        [(_, dir)] => Ok(dir.clone()),
        _ => {
            let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
            Err(Diagnostic::new(
                config.display().to_string(),
                None,
                "several pipelines: which outputs?",
            )
            .with_fix(match names.is_empty() {
                true => "run a pipeline first, then pass --pipeline NAME".to_string(),
                false => format!("pass --pipeline NAME (with outputs: {})", names.join(", ")),
            })
            .into())
        }
    }
}

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
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, read_only).await.map_err(|e| {
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
