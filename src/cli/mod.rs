//! The `streamsql` command line: one file per command. The tools that are
//! not the engine — the trace replayer ([`replay`]) and the sample
//! generators ([`generate_sample`]) — live beside their commands.

mod check;
mod explain;
mod generate_sample;
mod query;
pub mod replay;
mod run;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Result;

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
    /// Log lines as text, or as JSON objects (one per line) for log shippers.
    /// `RUST_LOG` sets the level (default `warn`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its input is exhausted, resuming from its newest
    /// checkpoint. Ctrl-C or SIGTERM stops it with a checkpoint.
    Run(run::Args),
    /// Check pipelines.yaml and plan every query, without running anything.
    Check(check::Args),
    /// Show how each query of a pipeline runs: its operator, state and plans.
    Explain(explain::Args),
    /// Run SQL over a pipeline's Parquet outputs (tables: its queries and `<source>_late`).
    Query(query::Args),
    /// Produce Google trace tables to Kafka in one global time order, keyed
    /// by job id (the simulator of seeds 000 and 001).
    Replay(replay::Args),
    /// Run golden tests: a pipeline over given input lines must produce the
    /// expected rows (docs/testing.md, "Golden tests").
    Test(test::Args),
    /// Write the bundled sample data (synthetic, in the real formats).
    GenerateSample(generate_sample::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
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
            match json_logs {
                true => tracing::error!(error = %e, "streamsql stopped with an error"),
                false => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Run(args) => run::execute(args, &config).await,
        Command::Check(args) => check::execute(args, &config).await,
        Command::Explain(args) => explain::execute(args, &config).await,
        Command::Query(args) => query::execute(args, &config).await,
        Command::Replay(args) => replay::execute(args).await,
        Command::Test(args) => test::execute(args, &config).await,
        Command::GenerateSample(args) => generate_sample::execute(args),
    }
}
