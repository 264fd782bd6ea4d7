//! The `streamsql` command line.

mod query;

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
    /// Run a pipeline until its input is exhausted, resuming from its newest
    /// checkpoint. Ctrl-C stops it with a checkpoint.
    Run {
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
    },
    /// Check pipelines.yaml and plan every query, without running anything.
    Check {
        /// Only this pipeline (default: all).
        pipeline: Option<String>,
    },
    /// Show how each query of a pipeline runs.
    Explain { pipeline: String },
    /// Run SQL over a pipeline's Parquet outputs (tables: its queries and `<source>_late`).
    Query {
        sql: String,
        /// The pipeline whose outputs to read (default: the only one).
        #[arg(short, long)]
        pipeline: Option<String>,
        /// Read outputs from here instead of the pipeline's output_dir.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: query::OutputFormat,
    },
    /// Produce Google trace tables to Kafka in one global time order, keyed
    /// by job id (the simulator of seeds 000 and 001).
    Replay {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// TOPIC=PATH: a table's folder (its `part-?????-of-?????.csv[.gz]`
        /// files) or a glob, produced to TOPIC. Repeat for several tables.
        #[arg(
            long = "table",
            value_name = "TOPIC=PATH",
            default_value = "task_events=datasets/google-2011-sample/task_events"
        )]
        tables: Vec<String>,
        /// Partitions of the topics created (existing topics are kept).
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Pace events at this multiple of the trace's speed, times rebased
        /// to now (default: as fast as possible, times unchanged).
        #[arg(long)]
        speedup: Option<f64>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
    },
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
            from_scratch,
            stop_after_batches,
        } => {
            let loaded = config::load(&cli.config)?;
            let options = RunOptions {
                output_dir: output,
                progress: !quiet,
                from_scratch,
                stop_after_batches,
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
            let queries = &loaded.pipeline(&pipeline)?.queries;
            for (plan, query) in plan_pipeline(&loaded, &pipeline).await?.iter().zip(queries) {
                println!("{}", plan.describe());
                let sinks: Vec<String> = query.sinks.iter().map(|s| s.describe()).collect();
                println!("  sinks: {}", sinks.join("; "));
            }
            Ok(())
        }
        Command::Query {
            sql,
            pipeline,
            output,
            format,
        } => {
            let dir = match output {
                Some(dir) => dir,
                None => {
                    let loaded = config::load(&cli.config)?;
                    let name = match pipeline {
                        Some(name) => name,
                        None if loaded.file.pipelines.len() == 1 => loaded
                            .file
                            .pipelines
                            .keys()
                            .next()
                            .cloned()
                            .unwrap_or_default(),
                        None => {
                            return Err(crate::error::Diagnostic::new(
                                cli.config.display().to_string(),
                                None,
                                "several pipelines: which outputs?",
                            )
                            .with_fix("pass --pipeline NAME")
                            .into());
                        }
                    };
                    loaded.output_dir(&name, loaded.pipeline(&name)?)
                }
            };
            let batches = query::query_outputs(&dir, &sql).await?;
            query::print(&batches, format)
        }
        Command::Replay {
            brokers,
            tables,
            partitions,
            speedup,
            limit,
            quiet,
        } => {
            let tables = tables
                .iter()
                .map(|t| replay_table(t))
                .collect::<Result<Vec<_>>>()?;
            let topics: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
            crate::replay::create_topics(&brokers, &topics, partitions).await?;
            let options = crate::replay::ReplayOptions {
                brokers,
                tables,
                partitions,
                speedup,
                limit,
                progress: !quiet,
            };
            let stats = tokio::task::spawn_blocking(move || crate::replay::produce(&options))
                .await
                .map_err(|e| crate::StreamSqlError::Internal(e.to_string()))??;
            println!(
                "replayed {} events in {:.2} s ({:.0} events/s)",
                stats.produced,
                stats.elapsed.as_secs_f64(),
                stats.rate()
            );
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

/// `TOPIC=PATH` of `replay --table`: the topic and the table's files in order.
fn replay_table(spec: &str) -> Result<(String, Vec<PathBuf>)> {
    let bad = |why: &str| -> crate::StreamSqlError {
        crate::error::Diagnostic::new("--table", None, format!("`{spec}`: {why}"))
            .with_fix("write it as TOPIC=PATH, e.g. task_events=../shared/datasets/google-2011/task_events")
            .into()
    };
    let (topic, path) = spec.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let path = PathBuf::from(path);
    let pattern = if path.is_dir() {
        path.join("part-?????-of-?????.csv*")
    } else {
        path
    };
    let mut files: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
        .map_err(|e| bad(&e.to_string()))?
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .collect();
    if files.is_empty() {
        return Err(bad(&format!("no file matches {}", pattern.display())));
    }
    files.sort();
    Ok((topic.to_string(), files))
}
