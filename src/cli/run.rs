//! `streamsql run PIPELINE`: runs a pipeline until its input ends.

use std::path::{Path, PathBuf};

use crate::config;
use crate::error::Result;
use crate::runtime::{Pipeline, RunOptions};

#[derive(clap::Args)]
pub struct Args {
    pipeline: String,
    /// Write outputs here instead of the pipeline's output_dir.
    #[arg(long)]
    output: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Delete the pipeline's checkpoints and outputs and start from the
    /// beginning of the input.
    #[arg(long)]
    from_scratch: bool,
    /// Stop after N micro-batches with a checkpoint, leaving windows open;
    /// the next run continues where this one stopped.
    #[arg(long, value_name = "N")]
    stop_after_batches: Option<u64>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics while running
    /// (e.g. 127.0.0.1:9464; port 0 picks a free one).
    #[arg(long, value_name = "ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Workers per query and decoding threads per source (overrides
    /// `parallelism` in pipelines.yaml); results do not depend on it, and a
    /// checkpoint restores at any parallelism.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::state::KEY_GROUPS)))]
    parallelism: Option<u16>,
}

pub async fn execute(args: Args, config: &Path) -> Result<()> {
    let loaded = config::load(config)?;
    let options = RunOptions {
        output_dir: args.output,
        progress: !args.quiet,
        from_scratch: args.from_scratch,
        stop_after_batches: args.stop_after_batches,
        parallelism: args.parallelism.map(usize::from),
        ..Default::default()
    };
    let runner = Pipeline::build(&loaded, &args.pipeline, &options).await?;
    if let Some(address) = args.metrics_address {
        let bound = crate::metrics::serve(runner.metrics(), address).await?;
        println!("metrics at http://{bound}/metrics");
    }
    let output_dir = runner.output_dir().clone();
    let summary = runner.run(&options).await?;
    print!("{summary}");
    println!("  outputs in {}", output_dir.display());
    Ok(())
}
