//! Helpers shared by the integration tests: run a pipeline from YAML text,
//! read its Parquet outputs back in order.

#![allow(dead_code)]

pub mod broker;
pub mod elasticsearch;
pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use streamsql::metrics::Summary;
use streamsql::runtime::{Pipeline, RunOptions};

/// Where test service `var` is (a program or a folder, exported by
/// scripts/test.sh), or `None` with the reason printed: `cargo test` alone
/// passes on a clean clone. Under `CI` a missing service fails the test.
pub fn service(var: &str, what: &str) -> Option<String> {
    if let Ok(value) = std::env::var(var) {
        return Some(value);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{var} is not set: CI runs every test through scripts/test.sh, which installs {what}"
    );
    eprintln!("skipped: no {what} ({var} unset; scripts/test.sh installs it)");
    None
}

/// A timestamp column's values in UTC milliseconds.
pub fn millis(batch: &RecordBatch, name: &str) -> Vec<i64> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let column = batch.column_by_name(name).expect(name);
    column
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies the repository's pipelines.yaml with the queries and bundled
/// datasets it reads into `dir`: runs there write `dir/output/`.
pub fn copy_pipelines(dir: &Path) {
    let copied = Command::new("cp")
        .args(["-r", "pipelines.yaml", "queries", "datasets"])
        .arg(dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(copied.success());
}

/// A fresh directory under the target dir, removed at the start of each use.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamsql-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The built `streamsql` binary with `args`, run from the repository, its
/// stdout and stderr captured.
pub fn streamsql(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamsql"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` to its end like `Command::output`, but kills it and fails
/// the test when it takes longer than `limit`.
pub fn output_within(mut command: Command, limit: Duration) -> std::process::Output {
    wait_within(command.spawn().expect("start streamsql"), limit)
}

/// Waits for `child` like `Child::wait_with_output`, but kills it and fails
/// the test when it takes longer than `limit`.
pub fn wait_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    use std::io::Read;
    // Drain both pipes while waiting, so a chatty child never blocks.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "streamsql did not finish within {limit:?}:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `pipeline` of the pipelines file at `config`, writing into `output`.
pub async fn run(config: &Path, pipeline: &str, output: &Path) -> Summary {
    let loaded = streamsql::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    run_loaded(&loaded, pipeline, output).await
}

pub async fn run_loaded(
    loaded: &streamsql::config::LoadedConfig,
    pipeline: &str,
    output: &Path,
) -> Summary {
    let options = RunOptions {
        output_dir: Some(output.to_path_buf()),
        ..Default::default()
    };
    run_with(loaded, pipeline, &options).await
}

pub async fn run_with(
    loaded: &streamsql::config::LoadedConfig,
    pipeline: &str,
    options: &RunOptions,
) -> Summary {
    let runner = Pipeline::build(loaded, pipeline, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    runner.run(options).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Every batch of the `part-*.parquet` files in `dir`, in file order.
pub fn read_parts(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    let mut batches = Vec::new();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).expect("open part"),
        )
        .expect("parquet reader")
        .build()
        .expect("parquet reader");
        batches.extend(reader.map(|b| b.expect("read batch")));
    }
    batches
}

/// Every dead letter a run wrote under `out/dead_letters`, as JSON.
pub fn dead_letters(out: &Path) -> Vec<serde_json::Value> {
    let mut letters = Vec::new();
    for entry in std::fs::read_dir(out.join("dead_letters"))
        .unwrap()
        .flatten()
    {
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            letters.push(serde_json::from_str(line).unwrap());
        }
    }
    letters
}

/// The stdout of a finished command, which must have succeeded.
pub fn assert_ok(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every row of the `part-*.parquet` files in `dirs`, as `|`-joined text.
pub fn row_texts(dirs: &[&Path]) -> Vec<String> {
    row_texts_except(dirs, &[])
}

/// Like [`row_texts`], leaving out the columns named in `skip`.
pub fn row_texts_except(dirs: &[&Path], skip: &[&str]) -> Vec<String> {
    dirs.iter()
        .flat_map(|dir| batch_texts(&read_parts(dir), skip))
        .collect()
}

/// Every row of `batches` as `|`-joined text (NULL for a null), leaving out
/// the columns named in `skip`.
pub fn batch_texts(batches: &[RecordBatch], skip: &[&str]) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .zip(batch.schema().fields())
            .filter(|(_, f)| !skip.contains(&f.name().as_str()))
            .map(|(c, _)| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..batch.num_rows() {
            let row: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            rows.push(row.join("|"));
        }
    }
    rows
}

/// The rows DataFusion's batch SQL `sql` gives in `ctx`, as sorted text:
/// the independent reference most tests compare with.
pub async fn sorted_sql_rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut rows = batch_texts(&batches, &[]);
    rows.sort();
    rows
}

/// Asserts two sorted row lists are equal, showing the first difference.
pub fn assert_same_rows(table: &str, want: &[String], got: &[String]) {
    assert_eq!(want.len(), got.len(), "rows of {table}");
    if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
        panic!(
            "{table} differs at sorted row {i}:\n want {}\n got  {}",
            want[i], got[i]
        );
    }
}

/// The Google trace's tables, as `name:type` column lists.
pub const TASK_EVENTS: &str = "time:int64 missing_info:int32 job_id:int64 task_index:int64 \
     machine_id:int64 event_type:int32 user:string scheduling_class:int32 priority:int32 \
     cpu_request:double memory_request:double disk_request:double different_machines:int32";
pub const JOB_EVENTS: &str = "time:int64 missing_info:int32 job_id:int64 event_type:int32 \
     user:string scheduling_class:int32 job_name:string logical_job_name:string";

fn columns(table: &str) -> impl Iterator<Item = (&str, &str)> {
    table
        .split_whitespace()
        .map(|c| c.split_once(':').expect("name:type"))
}

/// A table's `columns:` entries, as YAML lines indented for a source block.
pub fn columns_yaml(table: &str) -> String {
    columns(table)
        .map(|(name, ty)| format!("          - {{ name: {name}, type: {ty} }}\n"))
        .collect()
}

/// A `task_events` source block of a test pipeline: the trace's CSV
/// columns, event time in µs, a 30 s watermark delay, reading from `input`
/// (a `replay:` or `kafka:` line); indented for `sources:`.
pub fn task_events_source_yaml(input: &str) -> String {
    format!(
        "      - name: task_events
        format: csv
        {input}
        columns:
{}        event_time: {{ column: time, unit: us }}
        watermark_delay: 30s
",
        columns_yaml(TASK_EVENTS)
    )
}

/// `streamsql --config <config> run p --quiet --output <out> <extra>`: the
/// test pipeline `p`.
pub fn run_p(config: &Path, out: &Path, extra: &[&str]) -> Command {
    run_pipeline(config, "p", out, extra)
}

/// `streamsql --config <config> run <pipeline> --quiet --output <out> <extra>`.
pub fn run_pipeline(config: &Path, pipeline: &str, out: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "run",
        pipeline,
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    streamsql(&args)
}

/// A table's Arrow schema, for batch reference queries.
pub fn schema(table: &str) -> Schema {
    Schema::new(
        columns(table)
            .map(|(name, ty)| {
                let ty = match ty {
                    "int64" => DataType::Int64,
                    "int32" => DataType::Int32,
                    "double" => DataType::Float64,
                    _ => DataType::Utf8,
                };
                Field::new(name, ty, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// The first `count` parts of a table of the real trace in
/// ../shared/datasets; of the bundled sample when that is absent (which has
/// task_events only: other tables are then empty).
pub fn trace_parts(table: &str, count: usize) -> Vec<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let real = repo.join("../shared/datasets/google-2011");
    let dir = if real.is_dir() {
        real.join(table)
    } else {
        eprintln!("the real trace is absent: using the bundled sample");
        repo.join("datasets/google-2011-sample").join(table)
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.retain(|p| p.to_string_lossy().ends_with(".csv.gz"));
    files.sort();
    files.truncate(count);
    files
}

/// The first `events` rows of a table of the trace (see `trace_parts`) after
/// its opening state at time 0, so that they move through windows, written
/// as plain CSV to `path`.
pub fn trace_slice(table: &str, events: usize, path: &Path) -> PathBuf {
    use std::io::{BufRead, Write};
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let lines = trace_parts(table, usize::MAX).into_iter().flat_map(|part| {
        std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::fs::File::open(part).unwrap(),
        ))
        .lines()
        .map(Result::unwrap)
    });
    for line in lines.filter(|l| !l.starts_with("0,")).take(events) {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    path.to_path_buf()
}

/// Registers the gzipped CSV `files` as table `name` of `ctx` (decompressed
/// into `scratch`), with `table`'s columns: the batch reference's input.
pub async fn register_csv_gz(
    ctx: &SessionContext,
    name: &str,
    table: &str,
    files: &[PathBuf],
    scratch: &Path,
) {
    use std::io::Write;
    let plain = scratch.join(format!("{name}-csv"));
    std::fs::create_dir_all(&plain).expect("create csv folder");
    for file in files {
        let mut input = flate2::read::MultiGzDecoder::new(std::fs::File::open(file).unwrap());
        let plain_name = file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".gz", "");
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(plain.join(plain_name)).unwrap());
        std::io::copy(&mut input, &mut out).unwrap();
        out.flush().unwrap();
    }
    // An empty table still needs a file to be registered.
    if files.is_empty() {
        std::fs::write(plain.join("empty.csv"), "").unwrap();
    }
    ctx.register_csv(
        name,
        plain.to_str().unwrap(),
        CsvReadOptions::new()
            .has_header(false)
            .schema(&schema(table))
            .file_extension(".csv"),
    )
    .await
    .expect("register csv");
}

/// The newest complete checkpoint sequence under `out/_checkpoints`.
pub fn newest_checkpoint(out: &Path) -> Option<u64> {
    std::fs::read_dir(out.join("_checkpoints"))
        .ok()?
        .flatten()
        .filter(|e| e.path().join("manifest.json").is_file())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .max()
}

/// A small deterministic generator (xorshift) with a printed seed, so a
/// failing random schedule can be replayed.
pub struct Random(u64);

impl Random {
    /// Seeded from the clock, or from `STREAMSQL_TEST_SEED` to replay one.
    pub fn new(what: &str) -> Self {
        let seed = std::env::var("STREAMSQL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("{what} seed: {seed} (STREAMSQL_TEST_SEED={seed} replays it)");
        Self(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What [`kill_at_random_points`] did: the kills that landed mid-run and
/// the newest checkpoint after each.
#[derive(Debug)]
pub struct Kills {
    pub count: usize,
    pub checkpoints: Vec<Option<u64>>,
}

/// Starts `run()` (a `streamsql run` writing its outputs and checkpoints
/// to `out`) again and again, SIGKILLing each attempt a random while after
/// its first new checkpoint (up to 2 / `wanted` of `full`, an uninterrupted
/// run's duration, so the kills spread over the input), until `wanted` kills
/// have landed. An attempt that finishes before its kill ends a round: `out`
/// is removed, the longest pause shrinks to 9/10 of the time that attempt
/// ran after its checkpoint (runs against a slower or faster peer than the
/// one `full` was measured with still get killed), and the next starts
/// over. Each restart waits `restart_delay` after the attempt before it
/// ended. Bounded in attempts and in time.
pub fn kill_at_random_points(
    run: impl Fn() -> Command,
    out: &Path,
    full: Duration,
    wanted: usize,
    restart_delay: Duration,
) -> Kills {
    let mut random = Random::new("kill schedule");
    let mut kills = Kills {
        count: 0,
        checkpoints: Vec::new(),
    };
    let mut longest_pause = full.mul_f64(2.0 / wanted as f64);
    let deadline = Instant::now() + (full * 4 + restart_delay) * 10 + Duration::from_secs(60);
    for _ in 0..wanted * 3 + 4 {
        if kills.count >= wanted || Instant::now() > deadline {
            break;
        }
        let before = newest_checkpoint(out);
        let mut child = run()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start streamsql");
        let wait_until = Instant::now() + full * 4 + Duration::from_secs(30);
        while newest_checkpoint(out) == before
            && child.try_wait().expect("poll").is_none()
            && Instant::now() < wait_until
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let checkpointed = Instant::now();
        let kill_at = checkpointed + longest_pause.mul_f64(random.below(100) as f64 / 100.0);
        let mut ended = child.try_wait().expect("poll");
        while ended.is_none() && Instant::now() < kill_at {
            std::thread::sleep(Duration::from_millis(2));
            ended = child.try_wait().expect("poll");
        }
        match ended {
            Some(status) => {
                assert!(status.success(), "a run failed: {status}");
                longest_pause = longest_pause.min(checkpointed.elapsed().mul_f64(0.9));
                let _ = std::fs::remove_dir_all(out);
            }
            None => {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
                kills.count += 1;
                kills.checkpoints.push(newest_checkpoint(out));
            }
        }
        std::thread::sleep(restart_delay);
    }
    eprintln!(
        "{} kills; newest checkpoint after each: {:?}",
        kills.count, kills.checkpoints
    );
    kills
}

/// The repository's `pipelines.yaml` with its SQL and bundled data paths
/// made absolute (so that it can be written anywhere), `extra` appended to the query list of
/// pipeline `name` after the query whose line ends `after`, and that
/// pipeline's sources replaying `batch_rows[i]` lines per batch (in order).
pub fn repo_pipelines_variant(
    name: &str,
    after: &str,
    extra: &str,
    batch_rows: &[usize],
) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let yaml = std::fs::read_to_string(Path::new(repo).join("pipelines.yaml"))
        .unwrap()
        .replace("sql: queries/", &format!("sql: {repo}/queries/"))
        .replace(":-datasets/", &format!(":-{repo}/datasets/"));
    let section = yaml
        .find(&format!("\n  {name}:\n"))
        .unwrap_or_else(|| panic!("no pipeline {name}"));
    let (mut config, mut rest) = (yaml[..section].to_string(), &yaml[section..]);
    for n in batch_rows {
        let at = rest
            .find("batch_rows: 1000")
            .expect("a source of 1000-line batches");
        config.push_str(&rest[..at]);
        config.push_str(&format!("batch_rows: {n}"));
        rest = &rest[at + "batch_rows: 1000".len()..];
    }
    let at = rest.find(after).expect("the query to append after") + after.len();
    config.push_str(&rest[..at]);
    config.push_str(extra);
    config.push_str(&rest[at..]);
    config
}
