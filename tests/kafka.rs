//! The Kafka path against a real Kafka-protocol broker: tansu, started here
//! on a free loopback port (scripts/test.sh installs it). The real trace is
//! produced by `streamsql replay` into a 12-partition topic; W1 read from
//! Kafka must equal W1 read from the files, and two runners in one consumer
//! group split the partitions.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A tansu broker with its data in a scratch folder, killed when dropped.
struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    fn start(dir: &Path) -> Self {
        let program = std::env::var("STREAMSQL_TANSU").unwrap_or_else(|_| "tansu".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(&program)
            .current_dir(dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{program}` ({e}): run the tests with scripts/test.sh, which installs tansu")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            address: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn streamsql(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamsql"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn trace_parts(count: usize) -> Vec<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trace = repo.join("../shared/datasets/google-2011/task_events");
    let dir = if trace.is_dir() {
        trace
    } else {
        eprintln!("the real trace is absent: using the bundled sample");
        repo.join("datasets/google-2011-sample/task_events")
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".csv.gz"))
        .collect();
    files.sort();
    files.truncate(count);
    files
}

/// Produces `files` to `topic` (created with 12 partitions) with
/// `streamsql replay`; `--limit 0` only creates the topic.
fn replay(broker: &Broker, topic: &str, files: &[PathBuf], scratch: &Path, limit: Option<u64>) {
    // `replay --table` takes a folder or a glob: link the chosen parts.
    let folder = scratch.join(format!("{topic}-input"));
    std::fs::create_dir_all(&folder).unwrap();
    for file in files {
        let link = folder.join(file.file_name().unwrap());
        if !link.exists() {
            std::os::unix::fs::symlink(file, link).unwrap();
        }
    }
    let table = format!("{topic}={}", folder.display());
    let mut args = vec![
        "replay",
        "--brokers",
        &broker.address,
        "--table",
        &table,
        "--partitions",
        "12",
        "--quiet",
    ];
    let limit = limit.map(|l| l.to_string());
    if let Some(limit) = &limit {
        args.extend(["--limit", limit.as_str()]);
    }
    let stdout = common::assert_ok(&streamsql(&args).output().unwrap());
    eprintln!("{stdout}");
}

/// Pipeline `p`: W1 over `input` (a `replay:` or `kafka:` block).
fn write_pipeline(dir: &Path, input: &str) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let columns = common::task_events_columns_yaml();
    let yaml = format!(
        "pipelines:
  p:
    sources:
      - name: task_events
        format: csv
        {input}
        columns:
{columns}        event_time: {{ column: time, unit: us }}
        watermark_delay: 30s
    commit_interval: 1s
    queries:
      - {{ name: task_failure_metrics, sql: '{}', sinks: [ {{ parquet: {{}} }} ] }}
",
        repo.join("queries/task_failure_metrics.sql").display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("pipelines.yaml");
    std::fs::write(&config, yaml).unwrap();
    config
}

/// A Kafka source block; `stop` ends the input (`stop_at_end: true` or
/// `stop_when_idle: 15s`).
fn kafka_input(broker: &Broker, topic: &str, group: &str, stop: &str) -> String {
    format!(
        "kafka: {{ brokers: '{}', topic: {topic}, group: {group}, batch_rows: 20000, \
         batch_timeout: 200ms, {stop} }}",
        broker.address
    )
}

fn run(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "run",
        "p",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut command = streamsql(&args);
    command.env("RUST_LOG", "streamsql=info");
    command
}

/// The rows of W1's output in `outs` together, as sorted text.
fn rows(outs: &[&Path]) -> Vec<String> {
    let dirs: Vec<PathBuf> = outs
        .iter()
        .map(|o| o.join("task_failure_metrics"))
        .collect();
    let mut rows = common::row_texts(&dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    rows.sort();
    rows
}

fn assert_same_rows(want: &[String], got: &[String]) {
    common::assert_same_rows("task_failure_metrics", want, got);
}

/// W1 over `files` read by the file replay: the reference.
fn reference(dir: &Path, files: &[PathBuf]) -> Vec<String> {
    let glob: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    // One folder of links, so one glob names exactly these parts.
    let folder = dir.join("reference-input");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, name) in files.iter().zip(&glob) {
        let link = folder.join(Path::new(name).file_name().unwrap());
        if !link.exists() {
            std::os::unix::fs::symlink(file, link).unwrap();
        }
    }
    let config = write_pipeline(
        &dir.join("reference"),
        &format!(
            "replay: {{ path: '{}/*.csv.gz', batch_rows: 20000 }}",
            folder.display()
        ),
    );
    let out = dir.join("reference/out");
    common::assert_ok(&run(&config, &out, &[]).output().unwrap());
    rows(&[&out])
}

#[test]
fn w1_from_kafka_equals_w1_from_files() {
    let dir = common::scratch_dir("kafka-w1");
    let broker = Broker::start(&dir.join("broker"));
    let files = trace_parts(1);
    let expected = reference(&dir, &files);
    assert!(!expected.is_empty());
    replay(&broker, "w1", &files, &dir, None);

    // Straight through.
    let config = write_pipeline(
        &dir.join("straight"),
        &kafka_input(&broker, "w1", "straight", "stop_at_end: true"),
    );
    let out = dir.join("straight/out");
    let stdout = common::assert_ok(&run(&config, &out, &[]).output().unwrap());
    eprintln!("{stdout}");
    assert_same_rows(&expected, &rows(&[&out]));
}

/// Reads a child's stderr lines into a channel.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// The partitions of the last assignment a runner logged.
fn assigned(line: &str) -> Option<Vec<i32>> {
    let list = line.split("partitions [").nth(1)?.split(']').next()?;
    Some(
        list.split(", ")
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
    )
}

#[test]
fn two_runners_in_one_group_split_the_partitions() {
    let dir = common::scratch_dir("kafka-group");
    let broker = Broker::start(&dir.join("broker"));
    let files = trace_parts(1);
    let expected = reference(&dir, &files);
    // The topic exists, empty, before the runners join.
    replay(&broker, "split", &files, &dir, Some(0));

    let config = write_pipeline(
        &dir.join("group"),
        &kafka_input(&broker, "split", "shared", "stop_when_idle: 15s"),
    );
    let outs = [dir.join("group/a"), dir.join("group/b")];
    let mut children: Vec<Child> = outs
        .iter()
        .map(|o| run(&config, o, &[]).spawn().unwrap())
        .collect();
    let logs: Vec<_> = children.iter_mut().map(stderr_lines).collect();
    // Wait until the group has settled: both hold partitions, 12 in all.
    let mut latest: Vec<Vec<i32>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (log, partitions) in logs.iter().zip(&mut latest) {
            while let Ok(line) = log.try_recv() {
                if let Some(p) = assigned(&line) {
                    *partitions = p;
                }
            }
        }
        let total: usize = latest.iter().map(Vec::len).sum();
        if latest.iter().all(|p| !p.is_empty()) && total == 12 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not split: {latest:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("assignment: {latest:?}");
    replay(&broker, "split", &files, &dir, None);
    for child in children {
        common::assert_ok(&child.wait_with_output().unwrap());
    }
    let a = rows(&[&outs[0]]);
    let b = rows(&[&outs[1]]);
    assert!(!a.is_empty() && !b.is_empty(), "one runner got no rows");
    assert_same_rows(&expected, &rows(&[&outs[0], &outs[1]]));
}
