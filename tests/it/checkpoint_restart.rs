//! Checkpoints under fire. A pipeline killed with SIGKILL at random points
//! and restarted each time, on another number of workers each time, must end
//! with exactly the output of a run on one worker that was never
//! interrupted: no row lost, none written twice. A corrupt or
//! half-written newest checkpoint is skipped for the one before it, a
//! checkpoint of a query that has changed since is refused, and checkpoints
//! in an S3 bucket (moto's S3 server on loopback) work like local ones.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(config: &Path, out: &Path, extra: &[&str]) -> Output {
    common::run_p(config, out, extra)
        .output()
        .expect("run streamsql")
}

/// Every output table of a run (`<query>`, `<source>_late`) as sorted row
/// texts, plus the dead letters: what "identical output" compares.
fn outputs(out: &Path) -> Vec<(String, Vec<String>)> {
    let mut tables: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("_checkpoints"))
        .collect();
    tables.sort();
    tables
        .into_iter()
        .map(|dir| {
            let mut rows = common::row_texts(&[&dir]);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            files.sort();
            for file in files {
                rows.extend(
                    std::fs::read_to_string(file)
                        .unwrap()
                        .lines()
                        .map(String::from),
                );
            }
            rows.sort();
            (
                dir.file_name().unwrap().to_string_lossy().into_owned(),
                rows,
            )
        })
        .collect()
}

fn assert_same_outputs(expected: &[(String, Vec<String>)], actual: &[(String, Vec<String>)]) {
    assert_eq!(
        expected.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        actual.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    for ((table, want), (_, got)) in expected.iter().zip(actual) {
        common::assert_same_rows(table, want, got);
    }
}

/// W1 plus queries with other kinds of state (session windows, distinct
/// counts, averages, min/max, joins, a lookup join), over `data` (a glob),
/// checkpointing after every micro-batch.
fn write_pipeline(dir: &Path, data: &str, batch_rows: usize) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let w1 = repo.join("queries/task_failure_metrics.sql");
    std::fs::write(
        dir.join("sessions.sql"),
        "SELECT window_start, window_end, machine_id, count(*) AS events,
                count(DISTINCT job_id) AS jobs, avg(cpu_request) AS avg_cpu, max(priority) AS top_priority
         FROM task_events WHERE machine_id IS NOT NULL
         GROUP BY SESSION(time, INTERVAL '20' SECOND), machine_id",
    )
    .unwrap();
    std::fs::write(
        dir.join("per_user.sql"),
        "SELECT window_start, user, count(*) AS events, min(memory_request) AS min_memory,
                sum(disk_request) AS disk
         FROM task_events GROUP BY TUMBLE(time, INTERVAL '5' MINUTE), user",
    )
    .unwrap();
    // An interval join (LEFT: unmatched submissions come out when freed)
    // and a window join of two windowed queries, their state in every
    // checkpoint too.
    std::fs::write(
        dir.join("scheduling_delay.sql"),
        "SELECT s.job_id, s.task_index, s.time AS submitted, d.time AS scheduled
         FROM task_events s
         LEFT JOIN task_events d
           ON s.job_id = d.job_id AND s.task_index = d.task_index AND d.event_type = 1
          AND d.time BETWEEN s.time AND s.time + 600000000
         WHERE s.event_type = 0",
    )
    .unwrap();
    std::fs::write(
        dir.join("user_failures.sql"),
        "SELECT window_start, user, count(*) AS failures
         FROM task_events WHERE event_type = 3
         GROUP BY TUMBLE(time, INTERVAL '5' MINUTE), user",
    )
    .unwrap();
    std::fs::write(
        dir.join("user_failure_share.sql"),
        "SELECT u.window_start, u.user, u.events, f.failures
         FROM per_user u JOIN user_failures f
           ON f.user = u.user AND f.window_start = u.window_start",
    )
    .unwrap();
    // A lookup join inside a windowed query: each task's priority tier
    // from a table (priorities 0-11; 12 and up are missing from it).
    let tiers: String = (0..12)
        .map(|p| format!("{p},{}\n", ["free", "batch", "production"][p * 3 / 12]))
        .collect();
    std::fs::write(dir.join("priorities.csv"), tiers).unwrap();
    std::fs::write(
        dir.join("per_tier.sql"),
        "SELECT window_start, p.tier, count(*) AS events, max(t.cpu_request) AS top_cpu
         FROM task_events t JOIN priorities p ON p.priority = t.priority
         GROUP BY TUMBLE(t.time, INTERVAL '5' MINUTE), p.tier",
    )
    .unwrap();
    let source = common::task_events_source_yaml(&format!(
        "replay: {{ path: '{data}', batch_rows: {batch_rows} }}"
    ));
    let yaml = format!(
        "pipelines:
  p:
    sources:
{source}    commit_interval: 0s
    checkpoint: {{ retain: 3 }}
    tables:
      - name: priorities
        format: csv
        file: priorities.csv
        columns: [ {{ name: priority, type: int }}, {{ name: tier, type: string }} ]
    queries:
      - {{ name: task_failure_metrics, sql: '{}', sinks: [ {{ parquet: {{}} }} ] }}
      - {{ name: sessions, sql: sessions.sql, sinks: [ {{ parquet: {{}} }} ] }}
      - {{ name: per_user, sql: per_user.sql, sinks: [ {{ parquet: {{}} }} ] }}
      - {{ name: scheduling_delay, sql: scheduling_delay.sql, sinks: [ {{ parquet: {{}} }} ] }}
      - {{ name: user_failures, sql: user_failures.sql }}
      - {{ name: user_failure_share, sql: user_failure_share.sql, sinks: [ {{ parquet: {{}} }} ] }}
      - {{ name: per_tier, sql: per_tier.sql, sinks: [ {{ parquet: {{}} }} ] }}
",
        w1.display()
    );
    let config = dir.join("pipelines.yaml");
    std::fs::write(&config, yaml).unwrap();
    config
}

fn sample_glob() -> String {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    format!(
        "{}/datasets/google-2011-sample/task_events/part-*.csv.gz",
        repo.display()
    )
}

/// The real trace's first parts when ../shared/datasets is present, else the
/// bundled sample; with a batch size giving dozens of checkpoints.
fn trace_glob() -> (String, usize) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trace = repo.join("../shared/datasets/google-2011/task_events");
    if trace.is_dir() {
        (
            format!("{}/part-0000[0-5]-of-*.csv.gz", trace.display()),
            20_000,
        )
    } else {
        eprintln!("the real trace is absent: using the bundled sample");
        (sample_glob(), 2_000)
    }
}

#[test]
fn killed_at_random_points_and_restarted_the_output_is_identical() {
    let dir = common::scratch_dir("kill9");
    let (glob, batch_rows) = trace_glob();
    let config = write_pipeline(&dir, &glob, batch_rows);

    let reference = dir.join("reference");
    let started = Instant::now();
    let stdout = common::assert_ok(&run(&config, &reference, &["--parallelism", "1"]));
    let full = started.elapsed();
    eprintln!("uninterrupted run: {full:?}\n{stdout}");
    let expected = outputs(&reference);
    for table in [
        "task_failure_metrics",
        "sessions",
        "per_user",
        "scheduling_delay",
        "user_failure_share",
    ] {
        let rows = &expected.iter().find(|(t, _)| t == table).unwrap().1;
        assert!(!rows.is_empty(), "{table} is empty");
    }

    let out = dir.join("killed");
    // Each restart restores the state written by another number of workers.
    let restarts = std::cell::Cell::new(0usize);
    let kills = common::kill_at_random_points(
        || {
            let workers = [2, 4, 8, 3][restarts.get() % 4].to_string();
            restarts.set(restarts.get() + 1);
            common::run_p(&config, &out, &["--parallelism", &workers])
        },
        &out,
        full,
        12,
        Duration::ZERO,
    );
    assert!(
        kills.count >= 10,
        "only {} kills landed mid-run",
        kills.count
    );
    let distinct: std::collections::BTreeSet<_> = kills.checkpoints.iter().flatten().collect();
    assert!(
        distinct.len() >= 3,
        "kills did not land across the run: {:?}",
        kills.checkpoints
    );
    let resumable = common::newest_checkpoint(&out).is_some();
    let stdout = common::assert_ok(&run(&config, &out, &["--parallelism", "2"]));
    assert_eq!(
        stdout.contains("resumed from checkpoint"),
        resumable,
        "{stdout}"
    );
    assert_same_outputs(&expected, &outputs(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_written_by_four_workers_restores_on_two() {
    let dir = common::scratch_dir("rescale");
    let config = write_pipeline(&dir, &sample_glob(), 500);
    let reference = dir.join("reference");
    common::assert_ok(&run(&config, &reference, &["--parallelism", "1"]));

    // Stopped half-way on four workers, windows and sessions open...
    let out = dir.join("rescaled");
    let stdout = common::assert_ok(&run(
        &config,
        &out,
        &["--parallelism", "4", "--stop-after-batches", "100"],
    ));
    assert!(
        stdout.contains("stopped early with a checkpoint"),
        "{stdout}"
    );
    // ... and finished on two, each loading the key groups it owns.
    let stdout = common::assert_ok(&run(&config, &out, &["--parallelism", "2"]));
    assert!(stdout.contains("resumed from checkpoint"), "{stdout}");
    assert_same_outputs(&outputs(&reference), &outputs(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Breaks the newest checkpoint in one of the ways a crash or a bad disk
/// can, and returns what it did.
fn break_newest(out: &Path, how: usize) -> (u64, &'static str) {
    let newest = common::newest_checkpoint(out).expect("a checkpoint");
    let folder = out.join("_checkpoints").join(format!("chk-{newest:012}"));
    let state = folder.join("task_failure_metrics.parquet");
    match how {
        0 => {
            std::fs::remove_file(folder.join("manifest.json")).unwrap();
            // A folder without manifest is not listed by `newest_checkpoint`.
            (newest, "the manifest is missing")
        }
        1 => {
            std::fs::write(folder.join("manifest.json"), "{\"format\": 1, \"seq").unwrap();
            (newest, "manifest does not parse")
        }
        _ => {
            let bytes = std::fs::read(&state).unwrap();
            std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
            (newest, "bytes, the manifest says")
        }
    }
}

#[test]
fn a_broken_newest_checkpoint_is_skipped_for_the_one_before() {
    let dir = common::scratch_dir("broken-checkpoint");
    let config = write_pipeline(&dir, &sample_glob(), 5_000);
    let reference = dir.join("reference");
    common::assert_ok(&run(&config, &reference, &[]));
    let expected = outputs(&reference);

    for how in 0..3 {
        let out = dir.join(format!("broken-{how}"));
        common::assert_ok(&run(&config, &out, &["--stop-after-batches", "7"]));
        common::assert_ok(&run(&config, &out, &["--stop-after-batches", "4"]));
        let (broken, why) = break_newest(&out, how);
        let output = run(&config, &out, &[]);
        let stdout = common::assert_ok(&output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("skipping checkpoint {broken}")) && stderr.contains(why),
            "no warning for checkpoint {broken} ({why}): {stderr}"
        );
        assert!(
            stdout.contains(&format!("resumed from checkpoint {}", broken - 1)),
            "{stdout}"
        );
        assert_same_outputs(&expected, &outputs(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// (case name, what it does to the newest checkpoint's folder, the error expected).
type Damage = (&'static str, fn(&Path), &'static str);

#[test]
fn an_unreadable_or_foreign_checkpoint_stops_the_run_and_keeps_every_output() {
    let dir = common::scratch_dir("unusable-checkpoint");
    let config = write_pipeline(&dir, &sample_glob(), 5_000);
    let cases: [Damage; 3] = [
        (
            "unreadable",
            // A read that fails (here: a symbolic link to itself, which no
            // permission bit could do for root) proves nothing about the
            // checkpoint: it must not be skipped.
            |folder| {
                let state = folder.join("task_failure_metrics.parquet");
                std::fs::remove_file(&state).unwrap();
                std::os::unix::fs::symlink(&state, &state).unwrap();
            },
            "cannot read the state of `task_failure_metrics`",
        ),
        (
            "other-format",
            |folder| {
                let manifest = folder.join("manifest.json");
                let text = std::fs::read_to_string(&manifest).unwrap();
                let text = text.replacen("\"format\": 2", "\"format\": 1", 1);
                std::fs::write(&manifest, text).unwrap();
            },
            "written in checkpoint format 1",
        ),
        (
            "other-pipeline",
            |folder| {
                let manifest = folder.join("manifest.json");
                let text = std::fs::read_to_string(&manifest).unwrap();
                std::fs::write(
                    &manifest,
                    text.replacen("\"pipeline\": \"p\"", "\"pipeline\": \"other\"", 1),
                )
                .unwrap();
            },
            "belongs to pipeline `other`",
        ),
    ];
    for (name, damage, why) in cases {
        let out = dir.join(name);
        common::assert_ok(&run(&config, &out, &["--stop-after-batches", "7"]));
        let parts_before = parts(&out);
        let newest = common::newest_checkpoint(&out).expect("a checkpoint");
        damage(&out.join("_checkpoints").join(format!("chk-{newest:012}")));
        let output = run(&config, &out, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{name}: the run went on: {stderr}"
        );
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert_eq!(parts(&out), parts_before, "{name}: outputs were touched");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every output part file under `out` (not checkpoints), sorted.
fn parts(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(out).unwrap().flatten() {
        if entry.file_name() == "_checkpoints" || !entry.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
            found.push(file.path());
        }
    }
    found.sort();
    found
}

#[test]
fn a_changed_query_refuses_its_old_checkpoint_until_from_scratch() {
    let dir = common::scratch_dir("changed-query");
    let config = write_pipeline(&dir, &sample_glob(), 5_000);
    let reference = dir.join("reference");
    common::assert_ok(&run(&config, &reference, &[]));

    let out = dir.join("out");
    common::assert_ok(&run(&config, &out, &["--stop-after-batches", "5"]));
    // A different aggregate: the checkpointed state cannot be its state.
    let sql = std::fs::read_to_string(dir.join("per_user.sql")).unwrap();
    std::fs::write(
        dir.join("per_user.sql"),
        sql.replace("sum(disk_request)", "max(disk_request)"),
    )
    .unwrap();
    let output = run(&config, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("per_user.sql")
            && stderr.contains("query `per_user` changed since checkpoint 4")
            && stderr.contains("--from-scratch"),
        "{stderr}"
    );
    // Undone, it resumes; or, changed, --from-scratch recomputes everything.
    std::fs::write(dir.join("per_user.sql"), &sql).unwrap();
    let stdout = common::assert_ok(&run(&config, &out, &[]));
    assert!(stdout.contains("resumed from checkpoint 4"), "{stdout}");
    assert_same_outputs(&outputs(&reference), &outputs(&out));
    let stdout = common::assert_ok(&run(&config, &out, &["--from-scratch"]));
    assert!(!stdout.contains("resumed"), "{stdout}");
    assert_same_outputs(&outputs(&reference), &outputs(&out));
    // A run over input already read to its end finds nothing new.
    let stdout = common::assert_ok(&run(&config, &out, &[]));
    assert!(stdout.contains("pipeline p: 0 events"), "{stdout}");
    assert_same_outputs(&outputs(&reference), &outputs(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// moto's S3 server on a free loopback port, stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    /// `None` when moto is not installed (see [`common::service`]).
    fn start() -> Option<Self> {
        let program = common::service("STREAMSQL_MOTO_SERVER", "moto's S3 server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{program}` ({e}): run the tests with scripts/test.sh, \
                     which installs moto's S3 server"
                )
            });
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the S3 server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// A plain HTTP request; returns the status code and body.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        (status, response)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn checkpoints_in_an_s3_bucket_restore_like_local_ones() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    assert_eq!(
        s3.request("PUT", "/checkpoints").0,
        200,
        "create the bucket"
    );
    let dir = common::scratch_dir("s3-checkpoints");
    let config = write_pipeline(&dir, &sample_glob(), 5_000);
    let reference = dir.join("reference");
    common::assert_ok(&run(&config, &reference, &[]));
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        yaml.replace(
            "checkpoint: { retain: 3 }",
            "checkpoint: { location: 's3://checkpoints/runs/w1', retain: 3 }",
        ),
    )
    .unwrap();

    let out = dir.join("out");
    let run_s3 = |extra: &[&str]| {
        let output = common::run_p(&config, &out, extra)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT", &s3.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .output()
            .expect("run streamsql");
        common::assert_ok(&output)
    };
    run_s3(&["--stop-after-batches", "6"]);
    let (_, listing) = s3.request("GET", "/checkpoints?list-type=2&prefix=runs/w1/");
    let manifests = listing.matches("/manifest.json</Key>").count();
    assert_eq!(manifests, 3, "retain keeps three checkpoints: {listing}");
    assert!(listing.contains("runs/w1/chk-000000000005/task_failure_metrics.parquet"));
    assert!(
        !out.join("_checkpoints").exists(),
        "nothing checkpointed locally"
    );

    let stdout = run_s3(&[]);
    assert!(stdout.contains("resumed from checkpoint 5"), "{stdout}");
    assert_same_outputs(&outputs(&reference), &outputs(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_stops_with_a_checkpoint_and_the_next_run_continues() {
    let dir = common::scratch_dir("ctrl-c");
    let (glob, batch_rows) = trace_glob();
    let config = write_pipeline(&dir, &glob, batch_rows);
    let reference = dir.join("reference");
    let started = Instant::now();
    common::assert_ok(&run(&config, &reference, &[]));
    let full = started.elapsed();

    let out = dir.join("out");
    let child = common::run_p(&config, &out, &[])
        .spawn()
        .expect("start streamsql");
    std::thread::sleep(full / 3);
    let signal = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(signal.success());
    let stdout = common::assert_ok(&child.wait_with_output().expect("wait"));
    assert!(
        stdout.contains("stopped early with a checkpoint"),
        "{stdout}"
    );
    let stdout = common::assert_ok(&run(&config, &out, &[]));
    assert!(stdout.contains("resumed from checkpoint"), "{stdout}");
    assert_same_outputs(&outputs(&reference), &outputs(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
