//! The `streamsql` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
use crate::error::Result;
use crate::runtime::{Pipeline, RunOptions, plan_pipeline};

#[derive(Parser)]
#[command(
    name = "streamsql",
    version,
    about = "SQL-first streaming analytics on Arrow and DataFusion"
)]
struct Cli {
    /// The pipelines file.
    #[arg(short, long, global = true, default_value = "pipelines.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its input is exhausted.
    Run {
        pipeline: String,
        /// Write outputs here instead of the pipeline's output_dir.
        #[arg(long)]
        output: Option<PathBuf>,
        /// No live progress line.
        #[arg(long)]
        quiet: bool,
    },
    /// Check pipelines.yaml and plan every query, without running anything.
    Check {
        /// Only this pipeline (default: all).
        pipeline: Option<String>,
    },
    /// Show how each query of a pipeline runs.
    Explain { pipeline: String },
    /// Write the bundled sample data (synthetic, in the real trace format).
    GenerateSample {
        #[arg(long, default_value = "datasets/google-2011-sample/task_events")]
        out: PathBuf,
        #[arg(long, default_value_t = 120_000)]
        rows: usize,
        #[arg(long, default_value_t = 2)]
        parts: usize,
        #[arg(long, default_value_t = 2011)]
        seed: u64,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            output,
            quiet,
        } => {
            let loaded = config::load(&cli.config)?;
            let options = RunOptions {
                output_dir: output,
                progress: !quiet,
            };
            let runner = Pipeline::build(&loaded, &pipeline, &options).await?;
            let output_dir = runner.output_dir().clone();
            let summary = runner.run(&options).await?;
            print!("{summary}");
            println!("  outputs in {}", output_dir.display());
            Ok(())
        }
        Command::Check { pipeline } => {
            let loaded = config::load(&cli.config)?;
            let names: Vec<String> = match pipeline {
                Some(name) => vec![name],
                None => loaded.file.pipelines.keys().cloned().collect(),
            };
            let mut problems = Vec::new();
            for name in &names {
                match plan_pipeline(&loaded, name).await {
                    Ok(plans) => println!("pipeline {name}: ok ({} queries)", plans.len()),
                    Err(crate::StreamSqlError::Invalid(d)) => problems.extend(d.0),
                    Err(e) => return Err(e),
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(crate::StreamSqlError::Invalid(crate::error::Diagnostics(
                    problems,
                )))
            }
        }
        Command::Explain { pipeline } => {
            let loaded = config::load(&cli.config)?;
            for plan in plan_pipeline(&loaded, &pipeline).await? {
                println!("{}", plan.describe());
            }
            Ok(())
        }
        Command::GenerateSample {
            out,
            rows,
            parts,
            seed,
        } => {
            crate::sample::task_events(&out, rows, parts, seed)?;
            println!(
                "wrote {rows} task_events rows in {parts} files under {}",
                out.display()
            );
            Ok(())
        }
    }
}
