//! The `streamsql` command line.

mod golden;
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
        /// Serve Prometheus metrics at http://ADDRESS/metrics while running
        /// (e.g. 127.0.0.1:9464; port 0 picks a free one).
        #[arg(long, value_name = "ADDRESS")]
        metrics_address: Option<std::net::SocketAddr>,
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
    /// Run golden tests: a pipeline over given input lines must produce the
    /// expected rows (README: "Golden tests").
    Test {
        /// Test files, or folders of `*.test` files.
        #[arg(default_value = "tests/golden")]
        paths: Vec<PathBuf>,
        /// Rewrite the expected rows with what the pipelines produce now.
        #[arg(long)]
        update: bool,
    },
    /// Write the bundled sample data (synthetic, in the real formats).
    GenerateSample {
        /// Which sample.
        #[arg(long, value_enum, default_value = "task-events")]
        kind: SampleKind,
        /// Where to write it (default: the kind's folder under datasets/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rows (servers x 5-second steps for server-metrics: minutes).
        #[arg(long)]
        rows: Option<usize>,
        /// Files, for task-events.
        #[arg(long, default_value_t = 2)]
        parts: usize,
        #[arg(long, default_value_t = 2011)]
        seed: u64,
    },
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
    match cli.command {
        Command::Run {
            pipeline,
            output,
            quiet,
            from_scratch,
            stop_after_batches,
            metrics_address,
        } => {
            let loaded = config::load(&cli.config)?;
            let options = RunOptions {
                output_dir: output,
                progress: !quiet,
                from_scratch,
                stop_after_batches,
                ..Default::default()
            };
            let runner = Pipeline::build(&loaded, &pipeline, &options).await?;
            if let Some(address) = metrics_address {
                let bound = crate::metrics::serve(runner.metrics(), address).await?;
                println!("metrics at http://{bound}/metrics");
            }
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
            // A path to a .sql file runs the file (queries/batch/*.sql).
            let sql = match sql.trim_end().ends_with(".sql") && std::path::Path::new(&sql).is_file()
            {
                true => std::fs::read_to_string(&sql)
                    .map_err(|e| crate::StreamSqlError::io(format!("cannot read {sql}"), e))?,
                false => sql,
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
        Command::Test { paths, update } => {
            let mut files = Vec::new();
            for path in &paths {
                if path.is_dir() {
                    let pattern = path.join("*.test");
                    let mut found: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
                        .map_err(|e| crate::StreamSqlError::Internal(e.to_string()))?
                        .filter_map(|p| p.ok())
                        .collect();
                    found.sort();
                    files.extend(found);
                } else {
                    files.push(path.clone());
                }
            }
            let mut failed = 0;
            for file in &files {
                let outcome = golden::run_file(&cli.config, file, update).await?;
                if outcome.failures.is_empty() {
                    println!(
                        "ok    {}{}",
                        outcome.file.display(),
                        if update { " (updated)" } else { "" }
                    );
                    continue;
                }
                failed += 1;
                println!("FAIL  {}", outcome.file.display());
                for (table, missing, unexpected) in &outcome.failures {
                    println!("  expect {table}:");
                    for row in missing {
                        println!("    missing:    {row}");
                    }
                    for row in unexpected {
                        println!("    unexpected: {row}");
                    }
                }
            }
            if failed > 0 {
                return Err(crate::error::Diagnostic::new(
                    "streamsql test",
                    None,
                    format!("{failed} of {} golden tests failed", files.len()),
                )
                .with_fix("read the rows above; if the new rows are right, run `streamsql test --update <file>`")
                .into());
            }
            println!("{} golden tests passed", files.len());
            Ok(())
        }
        Command::GenerateSample {
            kind,
            out,
            rows,
            parts,
            seed,
        } => {
            let (default_out, default_rows) = kind.defaults();
            let out = out.unwrap_or_else(|| PathBuf::from(default_out));
            let rows = rows.unwrap_or(default_rows);
            match kind {
                SampleKind::TaskEvents => crate::sample::task_events(&out, rows, parts, seed)?,
                SampleKind::WebLogs => crate::sample::web_logs(&out, rows, seed)?,
                SampleKind::AccessLog => crate::sample::access_log(&out, rows, seed)?,
                SampleKind::ServerMetrics => crate::sample::server_metrics(&out, 12, rows, seed)?,
                SampleKind::MachineUsage => crate::sample::machine_usage(&out, 8, rows, seed)?,
                SampleKind::CityEvents => crate::sample::city_events(&out, rows, seed)?,
            }
            println!(
                "wrote the {kind:?} sample ({rows} rows) to {}",
                out.display()
            );
            Ok(())
        }
    }
}

/// The bundled samples `generate-sample` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SampleKind {
    /// W1/W2: Google cluster trace 2011 task_events (CSV parts, gzip).
    TaskEvents,
    /// W3: JSON web-log events.
    WebLogs,
    /// W3: an Apache combined access log.
    AccessLog,
    /// W4: server metrics in the coursework CSV layout (rows = minutes).
    ServerMetrics,
    /// W4: Alibaba 2018 machine_usage layout (rows = minutes per machine).
    MachineUsage,
    /// W5: JSON city events.
    CityEvents,
}

impl SampleKind {
    /// Where the repository keeps it, and its size there.
    fn defaults(self) -> (&'static str, usize) {
        match self {
            SampleKind::TaskEvents => ("datasets/google-2011-sample/task_events", 120_000),
            SampleKind::WebLogs => ("datasets/web-logs-sample/events.jsonl.gz", 40_000),
            SampleKind::AccessLog => ("datasets/web-logs-sample/access.log.gz", 6_000),
            SampleKind::ServerMetrics => ("datasets/server-metrics-sample/metrics.csv", 60),
            SampleKind::MachineUsage => ("datasets/server-metrics-sample/machine_usage.csv", 180),
            SampleKind::CityEvents => ("datasets/city-events-sample/events.jsonl.gz", 20_000),
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
