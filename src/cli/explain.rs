//! `streamsql explain PIPELINE`: how each query runs — its operator, what
//! its state holds and what bounds it, its DataFusion sub-plans, its sinks.

use std::path::Path;

use crate::config;
use crate::error::Result;
use crate::plan::plan_pipeline;

#[derive(clap::Args)]
pub struct Args {
    pipeline: String,
}

pub async fn execute(args: Args, config: &Path) -> Result<()> {
    let loaded = config::load(config)?;
    let pipeline = loaded.pipeline(&args.pipeline)?;
    let queries = &pipeline.queries;
    let plan = plan_pipeline(&loaded, &args.pipeline, 1).await?;
    for table in &pipeline.tables {
        println!("{}\n", table.describe());
    }
    for (planned, query) in plan.queries.iter().zip(queries) {
        println!("{}", planned.describe());
        let sinks: Vec<String> = query
            .sinks
            .iter()
            .map(|s| s.describe(&query.name))
            .collect();
        println!("  sinks: {}", sinks.join("; "));
    }
    Ok(())
}
