//! `streamsql check [PIPELINE]`: loads pipelines.yaml and plans every query
//! without running anything; every problem is reported with its file, line
//! and fix.

use std::path::Path;

use crate::config;
use crate::error::{Diagnostics, Result, StreamSqlError};
use crate::plan::plan_pipeline;

#[derive(clap::Args)]
pub struct Args {
    /// Only this pipeline (default: all).
    pipeline: Option<String>,
}

pub async fn execute(args: Args, config: &Path) -> Result<()> {
    let loaded = config::load(config)?;
    let names: Vec<String> = match args.pipeline {
        Some(name) => vec![name],
        None => loaded.file.pipelines.keys().cloned().collect(),
    };
    let mut problems = Vec::new();
    for name in &names {
        match plan_pipeline(&loaded, name, 1).await {
            Ok(plan) => println!("pipeline {name}: ok ({} queries)", plan.queries.len()),
            Err(StreamSqlError::Invalid(d)) => problems.extend(d.0),
            Err(e) => return Err(e),
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(StreamSqlError::Invalid(Diagnostics(problems))),
    }
}
