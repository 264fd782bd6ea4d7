//! W1 throughput and memory, whole process, next to what bounds it, in one
//! run: the repository's W1 pipeline (`streamsql run task_failures`) over the
//! real Google trace (../shared/datasets, 2.6 M rows; the bundled sample
//! when the trace is absent), from gzip CSV files to Parquet.
//!
//! Run with `scripts/bench.sh --bench w1_replay`. Each round runs, one after
//! the other: `zcat` of the same files (the decompression floor), DuckDB's
//! batch SQL of W1 over the same files into Parquet (when bench.sh installed
//! it), and `streamsql run` on one worker pinned to one core (`taskset`) and
//! on as many workers as there are cores. Rounds alternate, so a slow spell
//! of a shared machine hits every contender. Then, in this process: replay
//! alone (read + gunzip + decode, no query) and the checkpoint cost at full
//! W1 state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streamsql::config::SourceInput;
use streamsql::runtime::{Pipeline, RunOptions};
use streamsql::source::FileReplay;

const ROUNDS: usize = 3;

/// The VmHWM (peak RSS) of a process, in MB.
fn peak_rss_mb(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs `command` to its end: wall time, and peak RSS read from /proc while
/// it runs (the high-water mark only grows, so the last reading is the peak
/// up to 20 ms before the end).
fn measure(what: &str, mut command: Command) -> (Duration, f64) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id().to_string();
    let mut peak = f64::NAN;
    let deadline = started + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break status;
        }
        assert!(Instant::now() < deadline, "{what} took over 10 minutes");
        let now = peak_rss_mb(&pid);
        if !now.is_nan() {
            peak = now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let stderr = child.wait_with_output().expect("wait").stderr;
    assert!(
        status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&stderr)
    );
    (elapsed, peak)
}

/// W1 of the repository's pipelines.yaml alone, reading `glob`, writing
/// Parquet only, its query file found from anywhere.
fn bench_config(repo: &Path, glob: &str, dir: &Path) -> PathBuf {
    use serde_yaml::Value;
    let text = std::fs::read_to_string(repo.join("pipelines.yaml")).expect("pipelines.yaml");
    let file: Value = serde_yaml::from_str(&text).expect("pipelines.yaml parses");
    let mut w1 = file["pipelines"]["task_failures"].clone();
    w1["sources"][0]["replay"]["path"] = Value::from(glob);
    let query = &mut w1["queries"][0];
    let sql = repo.join(query["sql"].as_str().expect("W1's sql file"));
    query["sql"] = Value::from(sql.display().to_string());
    query["sinks"] = serde_yaml::from_str("[ parquet: {} ]").expect("sinks");
    let mut pipelines = serde_yaml::Mapping::new();
    pipelines.insert("task_failures".into(), w1);
    let mut config = serde_yaml::Mapping::new();
    config.insert("pipelines".into(), Value::Mapping(pipelines));
    let path = dir.join("pipelines.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write");
    path
}

/// W1 as one DuckDB batch query: each event expanded to its four 2-minute
/// windows sliding by 30 s, grouped, written to Parquet.
fn duckdb_w1(files: &[PathBuf], out: &Path) -> String {
    let files: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    format!(
        "import duckdb
duckdb.connect().execute('''
COPY (
  WITH e AS (
    SELECT machine_id, job_id, event_type, time // 1000 AS t
    FROM read_csv([{}], header = false, columns = {{
      'time': 'BIGINT', 'missing_info': 'INTEGER', 'job_id': 'BIGINT', 'task_index': 'BIGINT',
      'machine_id': 'BIGINT', 'event_type': 'INTEGER', 'user': 'VARCHAR',
      'scheduling_class': 'INTEGER', 'priority': 'INTEGER', 'cpu_request': 'DOUBLE',
      'memory_request': 'DOUBLE', 'disk_request': 'DOUBLE', 'different_machines': 'INTEGER'}})
    WHERE machine_id IS NOT NULL AND job_id IS NOT NULL
  ), w AS (
    SELECT e.*, (t // 30000 - k.i) * 30000 AS ws FROM e, (VALUES (0), (1), (2), (3)) k(i)
  )
  SELECT ws AS window_start, ws + 120000 AS window_end, machine_id, job_id,
         count(*) AS total_events,
         count(*) FILTER (WHERE event_type = 3) AS fail_count,
         count(*) FILTER (WHERE event_type = 2) AS evict_count,
         count(*) FILTER (WHERE event_type = 5) AS kill_count,
         count(*) FILTER (WHERE event_type IN (2, 3, 5)) AS total_fail_count,
         CAST(count(*) FILTER (WHERE event_type IN (2, 3, 5)) AS DOUBLE) / count(*) AS fail_rate
  FROM w GROUP BY ws, machine_id, job_id
) TO '{}' (FORMAT parquet, COMPRESSION zstd)
''')
",
        files.join(", "),
        out.display()
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trace = repo.join("../shared/datasets/google-2011/task_events");
    let glob = match trace.is_dir() {
        true => format!("{}/part-*.csv.gz", trace.display()),
        false => format!(
            "{}/datasets/google-2011-sample/task_events/part-*.csv.gz",
            repo.display()
        ),
    };
    println!("input: {glob}");
    let mut files: Vec<PathBuf> = glob::glob(&glob).expect("glob").flatten().collect();
    files.sort();
    let dir = std::env::temp_dir().join(format!("streamsql-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let config = bench_config(&repo, &glob, &dir);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let duckdb = std::env::var("STREAMSQL_DUCKDB_PYTHON").ok();

    let streamsql = |workers: usize, pinned: bool| {
        let binary = env!("CARGO_BIN_EXE_streamsql");
        let mut command = match pinned {
            true => {
                let mut c = Command::new("taskset");
                c.args(["-c", "0", binary]);
                c
            }
            false => Command::new(binary),
        };
        command.args(["--config", &config.to_string_lossy()]);
        command.args(["run", "task_failures", "--quiet", "--from-scratch"]);
        command.args(["--parallelism", &workers.to_string()]);
        command.args(["--output", &dir.join("out").to_string_lossy()]);
        command
    };
    let mut times: Vec<(String, Vec<f64>, f64)> = Vec::new();
    let mut record = |name: String, (elapsed, rss): (Duration, f64)| match times
        .iter_mut()
        .find(|(n, _, _)| *n == name)
    {
        Some((_, secs, peak)) => {
            secs.push(elapsed.as_secs_f64());
            *peak = peak.max(rss);
        }
        None => times.push((name, vec![elapsed.as_secs_f64()], rss)),
    };
    for round in 0..ROUNDS {
        println!("round {}", round + 1);
        let mut zcat = Command::new("zcat");
        zcat.args(&files);
        record("zcat (one thread)".into(), measure("zcat", zcat));
        if let Some(python) = &duckdb {
            let script = duckdb_w1(&files, &dir.join("duckdb.parquet"));
            let mut command = Command::new(python);
            command.args(["-c", &script]);
            record(
                format!("DuckDB batch SQL, {cores} threads"),
                measure("duckdb", command),
            );
        }
        record(
            "streamsql W1, 1 worker, pinned to 1 core".into(),
            measure("streamsql", streamsql(1, true)),
        );
        record(
            format!("streamsql W1, {cores} workers"),
            measure("streamsql", streamsql(cores, false)),
        );
    }
    let rows_out = {
        let output = Command::new(env!("CARGO_BIN_EXE_streamsql"))
            .args([
                "--config",
                &config.to_string_lossy(),
                "query",
                "--format",
                "csv",
            ])
            .args(["--output", &dir.join("out").to_string_lossy()])
            .arg("SELECT count(*) FROM task_failure_metrics")
            .output()
            .expect("streamsql query");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };

    // In this process: replay alone, and a checkpoint at full state.
    let mut loaded = streamsql::config::load(&config).expect("bench config");
    let pipeline = loaded.file.pipelines.get_mut("task_failures").expect("W1");
    let source = pipeline.sources[0].clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let decoded = runtime.block_on(async {
        let SourceInput::Replay(replay_config) = &source.input else {
            panic!("W1 replays files")
        };
        let mut replay = FileReplay::start(&source, replay_config, &loaded.base_dir, None, cores)
            .expect("replay");
        let mut rows = 0;
        while let Some(batch) = replay.next_batch().await {
            rows += batch.expect("batch").rows.num_rows();
        }
        rows
    });
    let replay_secs = started.elapsed().as_secs_f64();
    let stop = RunOptions {
        output_dir: Some(dir.join("checkpointed")),
        from_scratch: true,
        stop_after_batches: Some(decoded as u64 / 8192 / 2),
        ..Default::default()
    };
    let (stopped, restored) = runtime.block_on(async {
        let runner = Pipeline::build(&loaded, "task_failures", &stop)
            .await
            .expect("build");
        let stopped = runner.run(&stop).await.expect("run");
        let resume = RunOptions {
            output_dir: Some(dir.join("checkpointed")),
            ..Default::default()
        };
        let runner = Pipeline::build(&loaded, "task_failures", &resume)
            .await
            .expect("restore");
        (stopped, runner.restored().cloned().expect("restored"))
    });
    let _ = std::fs::remove_dir_all(&dir);

    println!("machine: {cores} cores; {decoded} events in, {rows_out} W1 rows out");
    println!("| run | wall (median of {ROUNDS}) | events/s | peak RSS |");
    println!("|---|---|---|---|");
    for (name, secs, rss) in &times {
        let secs = median(secs.clone());
        println!(
            "| {name} | {secs:.2} s | {:.0} | {rss:.0} MB |",
            decoded as f64 / secs
        );
    }
    let wall = |prefix: &str| {
        times
            .iter()
            .find(|(n, _, _)| n.starts_with(prefix))
            .map(|(_, secs, _)| median(secs.clone()))
    };
    let w1 = wall(&format!("streamsql W1, {cores} workers")).expect("W1 ran");
    let one = wall("streamsql W1, 1 worker").expect("W1 ran");
    let zcat = wall("zcat").expect("zcat ran");
    println!("ratios in this run:");
    println!("  W1 wall / zcat wall: {:.2} (target <= 1.3)", w1 / zcat);
    if let Some(duckdb) = wall("DuckDB") {
        println!("  DuckDB wall / W1 wall: {:.2} (target >= 4)", duckdb / w1);
    }
    println!(
        "  speed-up of {cores} workers over 1 pinned worker: {:.2} (target >= 1.8 on 2 cores)",
        one / w1
    );
    println!(
        "replay alone (read + decode on {cores} threads, no query): {decoded} rows in \
         {replay_secs:.2} s = {:.0} rows/s; W1 / replay-alone throughput: {:.2}",
        decoded as f64 / replay_secs,
        replay_secs / w1
    );
    println!(
        "checkpoint of W1 state after {} events ({} state groups): {:.0} KB written in {} ms, \
         restored in {} ms",
        stopped.events_in,
        stopped.state_groups,
        restored.bytes as f64 / 1e3,
        stopped.checkpoints.last_duration.as_millis(),
        restored.duration.as_millis()
    );
}
