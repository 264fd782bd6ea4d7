//! `streamsql test`: golden tests for analysts, in the spirit of
//! sqllogictest. A test file names a pipeline, gives each source's input
//! lines (in the source's own format, cut into micro-batches, in arrival
//! order, so late and out-of-order data can be written down) and the rows
//! each output table must hold:
//!
//! ```text
//! # comment
//! pipeline server_monitoring
//!
//! input server_metrics
//! 20:53:00,server_1,50.5,50.1,3951.9,4001.4,943.9
//! batch
//! 20:53:05,server_1,91.0,50.1,3951.9,4001.4,943.9
//!
//! expect server_alerts
//! window_start | server_id | cpu_mem_alert
//! 1970-01-01T20:53:20 | server_1 | CPU spike suspected
//! ```
//!
//! The pipeline runs as declared (its SQL, params, watermarks), except that
//! the inputs are the lines given, every micro-batch triggers `update`
//! queries, sinks are Parquet in a temporary folder, and it starts from
//! scratch. `expect` lists the columns to compare, then the rows in any order
//! (compared sorted); `expect TABLE ordered` compares them in the order they
//! were written (with `--batch-rows`, which changes the micro-batches, or
//! `--parallelism` above 1, as a set). `--update` rewrites the rows with what the run produced.
//!
//! Diagnostics are golden too: `query NAME` followed by SQL lines replaces
//! (or adds) that query of the pipeline, and `expect error` followed by lines
//! that must each appear in the error the pipeline is refused with:
//!
//! ```text
//! pipeline task_failures
//!
//! query top_machines
//! SELECT machine_id FROM task_events ORDER BY time DESC LIMIT 3
//!
//! expect error
//! a stream has no first or last rows
//! ```
//!
//! Positions in the message point into the test file itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::config::{self, QueryConfig};
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::runtime::{Pipeline, RunOptions};
use crate::sink::{ParquetSinkConfig, SinkConfig};
use crate::source::InlineBatch;

#[derive(clap::Args)]
pub struct Args {
    /// Test files, or folders of `*.test` files.
    #[arg(default_value = "tests/golden")]
    paths: Vec<PathBuf>,
    /// Rewrite the expected rows with what the pipelines produce now.
    #[arg(long)]
    update: bool,
    /// Cut each source's lines into micro-batches of N lines instead of the
    /// `batch` lines of the file: every accepted query must give the same
    /// rows however its input is cut.
    #[arg(long, value_name = "N")]
    batch_rows: Option<usize>,
    /// Run each pipeline on N workers instead of one: every accepted query
    /// must give the same rows at any parallelism (`ordered` expectations
    /// are then compared as sets, as with `--batch-rows`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::state::KEY_GROUPS)))]
    parallelism: Option<u16>,
}

/// How a golden test's pipeline runs besides its test file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Variation {
    /// Lines per micro-batch instead of the file's `batch` lines.
    pub batch_rows: Option<usize>,
    /// Workers instead of one.
    pub parallelism: Option<usize>,
}

impl Variation {
    /// Whether the run may write rows in another order than the file's.
    fn reorders(&self) -> bool {
        self.batch_rows.is_some() || self.parallelism.is_some_and(|n| n > 1)
    }
}

pub async fn execute(args: Args, config: &Path) -> Result<()> {
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            let pattern = path.join("*.test");
            let mut found: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
                .map_err(|e| crate::internal_error!("{e}"))?
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
        let variation = Variation {
            batch_rows: args.batch_rows,
            parallelism: args.parallelism.map(usize::from),
        };
        let outcome = run_file(config, file, args.update, variation).await?;
        if outcome.failures.is_empty() {
            println!(
                "ok    {}{}",
                outcome.file.display(),
                if args.update { " (updated)" } else { "" }
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
        return Err(Diagnostic::new(
            "streamsql test",
            None,
            format!("{failed} of {} golden tests failed", files.len()),
        )
        .with_fix(
            "read the rows above; if the new rows are right, run `streamsql test --update <file>`",
        )
        .into());
    }
    println!("{} golden tests passed", files.len());
    Ok(())
}

/// One `expect` block: where it sits in the file, its columns and rows.
struct Expectation {
    /// The output table, or `None` for `expect error`.
    table: Option<String>,
    /// 0-based index of the `expect` line.
    line: usize,
    /// 0-based index of the first line after the block.
    end: usize,
    /// The columns to compare (none for `expect error`).
    columns: Vec<String>,
    /// The rows, sorted unless `ordered`; for `expect error`, the lines the
    /// error must contain.
    rows: Vec<String>,
    ordered: bool,
}

/// A `query NAME` block: SQL for one query of the pipeline.
struct QueryOverride {
    name: String,
    /// 0-based index of its first SQL line.
    line: usize,
    sql: String,
}

struct GoldenTest {
    pipeline: String,
    inputs: HashMap<String, Vec<InlineBatch>>,
    queries: Vec<QueryOverride>,
    expectations: Vec<Expectation>,
}

/// What running one test file found.
pub struct Outcome {
    pub file: PathBuf,
    /// Per failing table: rows expected but missing, rows not expected.
    pub failures: Vec<(String, Vec<String>, Vec<String>)>,
}

fn parse(file: &Path, text: &str) -> Result<GoldenTest> {
    let name = file.display().to_string();
    let bad = |line: usize, message: &str, fix: &str| -> StreamSqlError {
        Diagnostic::new(&name, Some(line + 1), message)
            .with_fix(fix)
            .into()
    };
    let origin: Arc<str> = Arc::from(name.as_str());
    let lines: Vec<&str> = text.lines().collect();
    let mut pipeline = None;
    let mut inputs: HashMap<String, Vec<InlineBatch>> = HashMap::new();
    let mut expectations = Vec::new();
    let mut queries = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            i += 1;
        } else if let Some(rest) = line.strip_prefix("pipeline ") {
            pipeline = Some(rest.trim().to_string());
            i += 1;
        } else if let Some(source) = line.strip_prefix("input ") {
            let batches = inputs.entry(source.trim().to_string()).or_default();
            batches.push(InlineBatch {
                origin: Arc::clone(&origin),
                lines: Vec::new(),
            });
            i += 1;
            while i < lines.len() && !is_directive(lines[i]) {
                let text = lines[i];
                if text.trim() == "batch" {
                    batches.push(InlineBatch {
                        origin: Arc::clone(&origin),
                        lines: Vec::new(),
                    });
                } else if !text.trim().is_empty()
                    && !text.starts_with('#')
                    && let Some(current) = batches.last_mut()
                {
                    current.lines.push((i as u64 + 1, text.to_string()));
                }
                i += 1;
            }
        } else if let Some(name) = line.strip_prefix("query ") {
            let start = i + 1;
            i += 1;
            let mut sql = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() && !is_directive(lines[i]) {
                sql.push(lines[i]);
                i += 1;
            }
            queries.push(QueryOverride {
                name: name.trim().to_string(),
                line: start,
                sql: sql.join("\n"),
            });
        } else if line.trim() == "expect error" {
            let start = i;
            i += 1;
            let mut rows = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() && !is_directive(lines[i]) {
                rows.push(lines[i].trim().to_string());
                i += 1;
            }
            expectations.push(Expectation {
                table: None,
                line: start,
                end: i,
                columns: Vec::new(),
                rows,
                ordered: true,
            });
        } else if let Some(table) = line.strip_prefix("expect ") {
            let (table, ordered) = match table.trim().strip_suffix(" ordered") {
                Some(table) => (table, true),
                None => (table.trim(), false),
            };
            let start = i;
            i += 1;
            let header = lines
                .get(i)
                .filter(|l| !l.trim().is_empty() && !is_directive(l))
                .ok_or_else(|| {
                    bad(
                        start,
                        "`expect` needs a line of column names",
                        "write the columns to compare, e.g. `window_start | server_id | avg_cpu`",
                    )
                })?;
            let columns = split_row(header);
            i += 1;
            let mut rows = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() && !is_directive(lines[i]) {
                rows.push(join_row(&split_row(lines[i])));
                i += 1;
            }
            if !ordered {
                rows.sort();
            }
            expectations.push(Expectation {
                table: Some(table.trim().to_string()),
                line: start,
                end: i,
                columns,
                rows,
                ordered,
            });
        } else {
            return Err(bad(
                i,
                &format!("unexpected line `{line}`"),
                "lines are `pipeline P`, `input SOURCE` (then lines, `batch` between micro-batches), \
                 `query NAME` (then SQL), `expect TABLE [ordered]` (then columns and rows) or \
                 `expect error` (then what the error says)",
            ));
        }
    }
    let pipeline = pipeline.ok_or_else(|| {
        bad(
            0,
            "no `pipeline` line",
            "name the pipeline under test: `pipeline <name>`",
        )
    })?;
    if expectations.is_empty() {
        return Err(bad(
            0,
            "no `expect` block",
            "add `expect <query>` with its columns and rows",
        ));
    }
    if let Some(error) = expectations.iter().find(|e| e.table.is_none())
        && expectations.len() > 1
    {
        return Err(bad(
            error.line,
            "`expect error` with other `expect` blocks",
            "a refused pipeline writes no rows: put `expect error` in a test file of its own",
        ));
    }
    Ok(GoldenTest {
        pipeline,
        inputs,
        queries,
        expectations,
    })
}

fn is_directive(line: &str) -> bool {
    ["pipeline ", "input ", "query ", "expect "]
        .iter()
        .any(|d| line.starts_with(d))
}

fn split_row(line: &str) -> Vec<String> {
    line.split(" | ").map(|v| v.trim().to_string()).collect()
}

fn join_row(values: &[String]) -> String {
    values.join(" | ")
}

/// Runs the test in `file` against the pipelines of `config_path`; with
/// `update`, rewrites its expected rows to what the run produced.
pub async fn run_file(
    config_path: &Path,
    file: &Path,
    update: bool,
    variation: Variation,
) -> Result<Outcome> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| StreamSqlError::io(format!("cannot read {}", file.display()), e))?;
    let mut test = parse(file, &text)?;
    if let Some(rows) = variation.batch_rows {
        for batches in test.inputs.values_mut() {
            *batches = rebatch(std::mem::take(batches), rows.max(1));
        }
    }
    let mut loaded = config::load(config_path)?;
    let pipeline = loaded
        .file
        .pipelines
        .get_mut(&test.pipeline)
        .ok_or_else(|| {
            StreamSqlError::from(
                Diagnostic::new(
                    file.display().to_string(),
                    None,
                    format!(
                        "no pipeline `{}` in {}",
                        test.pipeline,
                        config_path.display()
                    ),
                )
                .with_fix("name a pipeline of pipelines.yaml (`streamsql check` lists them)"),
            )
        })?;
    // Deterministic runs: every micro-batch triggers, one commit at the end,
    // Parquet sinks only (nothing leaves the machine).
    pipeline.trigger = Duration::ZERO;
    pipeline.commit_interval = Duration::from_secs(24 * 3600);
    pipeline.checkpoint.location = None;
    for query in &test.queries {
        if !pipeline.queries.iter().any(|q| q.name == query.name) {
            pipeline.queries.push(QueryConfig {
                name: query.name.clone(),
                sql: file.to_path_buf(),
                emit: Default::default(),
                sinks: Vec::new(),
            });
        }
        // Blank lines first, so that positions in diagnostics are lines of
        // the test file.
        let text = "\n".repeat(query.line) + &query.sql;
        let key = (test.pipeline.clone(), query.name.clone());
        loaded.sql.insert(key, (file.to_path_buf(), text));
    }
    for query in &mut pipeline.queries {
        query.sinks = vec![SinkConfig::Parquet(ParquetSinkConfig {})];
    }
    for name in test.inputs.keys() {
        if !pipeline.sources.iter().any(|s| &s.name == name) {
            let known: Vec<&str> = pipeline.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(Diagnostic::new(
                file.display().to_string(),
                None,
                format!("pipeline `{}` has no source `{name}`", test.pipeline),
            )
            .with_fix(format!("its sources: {}", known.join(", ")))
            .into());
        }
    }
    let tables: Vec<String> = pipeline
        .queries
        .iter()
        .map(|q| q.name.clone())
        .chain(pipeline.sources.iter().map(|s| format!("{}_late", s.name)))
        .collect();
    if let Some((unknown, table)) = test
        .expectations
        .iter()
        .filter_map(|e| Some((e, e.table.as_ref()?)))
        .find(|(_, table)| !tables.contains(table))
    {
        return Err(Diagnostic::new(
            file.display().to_string(),
            Some(unknown.line + 1),
            format!("pipeline `{}` has no output table `{table}`", test.pipeline),
        )
        .with_fix(format!("expect one of: {}", tables.join(", ")))
        .into());
    }
    let mut inline_sources = test.inputs.clone();
    for source in &pipeline.sources {
        inline_sources.entry(source.name.clone()).or_default();
    }
    let output = tempfile_dir(file)?;
    let options = RunOptions {
        output_dir: Some(output.clone()),
        from_scratch: true,
        inline_sources,
        // One worker unless asked: `ordered` expectations hold the order
        // one worker writes.
        parallelism: Some(variation.parallelism.unwrap_or(1)),
        ..Default::default()
    };
    let result = async {
        let ran = async {
            Pipeline::build(&loaded, &test.pipeline, &options)
                .await?
                .run(&options)
                .await
        }
        .await;
        if let [expectation] = &test.expectations[..]
            && expectation.table.is_none()
        {
            return Ok(vec![match ran {
                Ok(_) => vec!["(no error: the pipeline ran)".to_string()],
                Err(e) => error_lines(&e.to_string(), &expectation.rows),
            }]);
        }
        ran?;
        let mut actual = Vec::new();
        for expectation in &test.expectations {
            let table = expectation.table.as_deref().unwrap_or_default();
            let ordered = expectation.ordered && !variation.reorders();
            let rows = table_rows(&output, table, &expectation.columns, ordered)
                .await
                .map_err(|e| {
                    Diagnostic::new(
                        file.display().to_string(),
                        Some(expectation.line + 2),
                        e.to_string(),
                    )
                    .with_fix(
                        "the column line lists output columns of the table, separated by ` | `",
                    )
                })?;
            actual.push(rows);
        }
        Ok::<_, StreamSqlError>(actual)
    }
    .await;
    let _ = std::fs::remove_dir_all(&output);
    let actual = result?;
    let mut failures = Vec::new();
    for (expectation, rows) in test.expectations.iter().zip(&actual) {
        let mut want = expectation.rows.clone();
        let mut got = rows.clone();
        if expectation.ordered && variation.reorders() {
            want.sort();
            got.sort();
        }
        if got != want {
            let (missing, unexpected) = if expectation.ordered {
                ordered_difference(&want, &got)
            } else {
                difference(&want, &got)
            };
            let table = expectation.table.clone();
            failures.push((table.unwrap_or_else(|| "error".into()), missing, unexpected));
        }
    }
    if update && !failures.is_empty() {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        let mut from = 0;
        for (expectation, rows) in test.expectations.iter().zip(&actual) {
            // After the `expect` line, and its column line if it has one.
            let head = expectation.line + if expectation.table.is_some() { 2 } else { 1 };
            out.extend(lines[from..head].iter().map(|l| l.to_string()));
            out.extend(rows.iter().cloned());
            from = expectation.end;
        }
        out.extend(lines[from..].iter().map(|l| l.to_string()));
        std::fs::write(file, out.join("\n") + "\n")
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", file.display()), e))?;
        failures.clear();
    }
    Ok(Outcome {
        file: file.to_path_buf(),
        failures,
    })
}

/// The same lines, in the same order, cut into batches of `rows`.
fn rebatch(batches: Vec<InlineBatch>, rows: usize) -> Vec<InlineBatch> {
    let Some(origin) = batches.first().map(|b| Arc::clone(&b.origin)) else {
        return batches;
    };
    let lines: Vec<(u64, String)> = batches.into_iter().flat_map(|b| b.lines).collect();
    lines
        .chunks(rows)
        .map(|chunk| InlineBatch {
            origin: Arc::clone(&origin),
            lines: chunk.to_vec(),
        })
        .collect()
}

/// The expected error lines found in `error`, in their order; when one is
/// missing, every line of `error` (what `--update` writes, and what a
/// failure shows).
fn error_lines(error: &str, expected: &[String]) -> Vec<String> {
    if !expected.is_empty() && expected.iter().all(|line| error.contains(line.as_str())) {
        return expected.to_vec();
    }
    error
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// For rows compared in order: from the first row where `want` and `got`
/// part, the rest of each.
fn ordered_difference(want: &[String], got: &[String]) -> (Vec<String>, Vec<String>) {
    let same = want.iter().zip(got).take_while(|(w, g)| w == g).count();
    (want[same..].to_vec(), got[same..].to_vec())
}

/// Rows of sorted `want` missing from sorted `got`, and rows of `got` not
/// in `want`, counting repeats.
fn difference(want: &[String], got: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut w, mut g) = (want.iter().peekable(), got.iter().peekable());
    loop {
        match (w.peek(), g.peek()) {
            (Some(a), Some(b)) if a == b => {
                w.next();
                g.next();
            }
            (Some(a), Some(b)) if a < b => missing.extend(w.next().cloned()),
            (_, Some(_)) => unexpected.extend(g.next().cloned()),
            (Some(_), None) => missing.extend(w.next().cloned()),
            (None, None) => return (missing, unexpected),
        }
    }
}

/// A fresh folder for one run's outputs, next to nothing the user owns.
fn tempfile_dir(file: &Path) -> Result<PathBuf> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("streamsql-test-{}-{stem}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}

/// `columns` of every row of output table `table`, formatted; sorted, or
/// when `ordered` in the order written (part by part, row by row: a query
/// over the parts would scan them in parallel).
async fn table_rows(
    dir: &Path,
    table: &str,
    columns: &[String],
    ordered: bool,
) -> Result<Vec<String>> {
    if !super::query::has_parquet_parts(&dir.join(table)) {
        return Ok(Vec::new());
    }
    if ordered {
        return format_rows(&read_in_order(&dir.join(table), columns)?);
    }
    let select = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {select} FROM \"{table}\"");
    let batches = super::query::query_outputs(dir, &sql).await?;
    let mut rows = format_rows(&batches)?;
    rows.sort();
    Ok(rows)
}

/// `columns` of the `part-*.parquet` files of `dir`, in file order.
fn read_in_order(dir: &Path, columns: &[String]) -> Result<Vec<RecordBatch>> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let pattern = dir.join("part-*.parquet");
    let mut parts: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
        .map_err(|e| crate::internal_error!("{e}"))?
        .filter_map(|p| p.ok())
        .collect();
    parts.sort();
    let mut batches = Vec::new();
    for part in parts {
        let file = std::fs::File::open(&part)
            .map_err(|e| StreamSqlError::io(format!("cannot read {}", part.display()), e))?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            let batch = batch?;
            let indices = columns
                .iter()
                .map(|c| batch.schema().index_of(c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            batches.push(batch.project(&indices)?);
        }
    }
    Ok(batches)
}

fn format_rows(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let values: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            rows.push(join_row(&values));
        }
    }
    Ok(rows)
}
