//! The Kafka path against a real Apache Kafka broker, started here on free
//! loopback ports (scripts/test.sh installs it; without it these tests are
//! skipped, with the reason printed, except under CI). The real trace is
//! produced by `streamsql replay` into a 12-partition topic; W1 read from
//! Kafka must equal W1 read from the files, also when the runner is killed
//! with SIGKILL mid-stream and restarted, and two runners in one consumer
//! group split the partitions.

use crate::common;

use common::broker::Broker;

/// The longest any one command of these tests may take.
const LIMIT: Duration = Duration::from_secs(300);

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Produces each table's files to its topic (created with 12 partitions)
/// with `streamsql replay`; `--limit 0` only creates the topics.
fn replay(broker: &Broker, tables: &[(&str, &[PathBuf])], scratch: &Path, limit: Option<u64>) {
    let mut args: Vec<String> = ["replay", "--brokers", &broker.address, "--partitions", "12"]
        .map(String::from)
        .into();
    for (topic, files) in tables {
        // `replay --table` takes a folder or a glob: link the chosen parts.
        let folder = scratch.join(format!("{topic}-input"));
        std::fs::create_dir_all(&folder).unwrap();
        for file in *files {
            let link = folder.join(file.file_name().unwrap());
            if !link.exists() {
                std::os::unix::fs::symlink(file, link).unwrap();
            }
        }
        args.extend(["--table".into(), format!("{topic}={}", folder.display())]);
    }
    if let Some(limit) = limit {
        args.extend(["--limit".into(), limit.to_string()]);
    }
    args.push("--quiet".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = common::assert_ok(&common::output_within(common::streamsql(&args), LIMIT));
    eprintln!("{stdout}");
}

/// Pipeline `p`: W1 over `input` (a `replay:` or `kafka:` block).
fn write_pipeline(dir: &Path, input: &str) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = common::task_events_source_yaml(input);
    let yaml = format!(
        "pipelines:
  p:
    sources:
{source}    commit_interval: 1s
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
    let mut command = common::run_p(config, out, extra);
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
    common::assert_ok(&common::output_within(run(&config, &out, &[]), LIMIT));
    rows(&[&out])
}

#[test]
fn w1_from_kafka_equals_w1_from_files() {
    let dir = common::scratch_dir("kafka-w1");
    let Some(broker) = Broker::start(&dir.join("broker")) else {
        return;
    };
    let files = common::trace_parts("task_events", 1);
    let expected = reference(&dir, &files);
    assert!(!expected.is_empty());
    replay(&broker, &[("w1", &files)], &dir, None);

    // Straight through.
    let config = write_pipeline(
        &dir.join("straight"),
        &kafka_input(&broker, "w1", "straight", "stop_at_end: true"),
    );
    let out = dir.join("straight/out");
    let stdout = common::assert_ok(&common::output_within(run(&config, &out, &[]), LIMIT));
    eprintln!("{stdout}");
    assert_same_rows(&expected, &rows(&[&out]));
}

#[test]
fn killed_mid_stream_and_restarted_no_row_is_lost_or_counted_twice() {
    let dir = common::scratch_dir("kafka-kill");
    let Some(broker) = Broker::start(&dir.join("broker")) else {
        return;
    };
    let files = common::trace_parts("task_events", 1);
    let expected = reference(&dir, &files);
    replay(&broker, &[("restarts", &files)], &dir, None);

    // How long one uninterrupted run takes (in a group of its own).
    let timing = write_pipeline(
        &dir.join("timing"),
        &kafka_input(&broker, "restarts", "timing", "stop_at_end: true"),
    );
    let started = Instant::now();
    common::assert_ok(&common::output_within(
        run(&timing, &dir.join("timing/out"), &[]),
        LIMIT,
    ));
    let full = started.elapsed();
    eprintln!("uninterrupted run: {full:?}");

    // The same group every time, as a restarted service would use, restarted
    // at once: Kafka expires the killed member after its session timeout and
    // rebalances.
    let config = write_pipeline(
        &dir.join("killed"),
        &kafka_input(&broker, "restarts", "restarted", "stop_at_end: true"),
    );
    let out = dir.join("killed/out");
    let kills =
        common::kill_at_random_points(|| run(&config, &out, &[]), &out, full, 4, Duration::ZERO);
    assert!(
        kills.count >= 3,
        "only {} kills landed mid-run",
        kills.count
    );
    let stdout = common::assert_ok(&common::output_within(run(&config, &out, &[]), LIMIT));
    eprintln!("{stdout}");
    assert!(stdout.contains("resumed from checkpoint"), "{stdout}");
    assert_same_rows(&expected, &rows(&[&out]));

    // The group has now committed the topic's end. `--from-scratch` reads
    // from the start regardless, and a run stopped early resumes exactly:
    // every assigned partition is in its checkpoint, read yet or not.
    let early = ["--from-scratch", "--stop-after-batches", "2"];
    common::assert_ok(&common::output_within(run(&config, &out, &early), LIMIT));
    common::assert_ok(&common::output_within(run(&config, &out, &[]), LIMIT));
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
    let Some(broker) = Broker::start(&dir.join("broker")) else {
        return;
    };
    let files = common::trace_parts("task_events", 1);
    let expected = reference(&dir, &files);
    // The topic exists, empty, before the runners join.
    replay(&broker, &[("split", &files)], &dir, Some(0));

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
    replay(&broker, &[("split", &files)], &dir, None);
    for child in children {
        eprintln!("{}", common::assert_ok(&common::wait_within(child, LIMIT)));
    }
    let a = rows(&[&outs[0]]);
    let b = rows(&[&outs[1]]);
    assert!(!a.is_empty() && !b.is_empty(), "one runner got no rows");
    assert_same_rows(&expected, &rows(&[&outs[0], &outs[1]]));
}

/// Rows of `expected` and `actual` (same columns, keyed by `keys`) that do
/// not match: missing on either side, a different integer, or a float more
/// than a relative 1e-9 apart (sums add up in another order).
async fn mismatches(
    ctx: &datafusion::prelude::SessionContext,
    keys: &[&str],
    integers: &[&str],
    floats: &[&str],
) -> i64 {
    let on: Vec<String> = keys.iter().map(|k| format!("e.{k} = a.{k}")).collect();
    let mut differ = vec![format!("a.{0} IS NULL OR e.{0} IS NULL", keys[0])];
    differ.extend(integers.iter().map(|c| format!("e.{c} <> a.{c}")));
    differ.extend(floats.iter().map(|c| {
        format!(
            "abs(coalesce(e.{c}, -1) - coalesce(a.{c}, -1)) > 1e-9 * (1 + abs(coalesce(e.{c}, 0)))"
        )
    }));
    let sql = format!(
        "SELECT count(*) FROM expected e FULL OUTER JOIN actual a ON {} WHERE {}",
        on.join(" AND "),
        differ.join(" OR ")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Registers `expected` (a batch SQL answer) and `actual` (a query's Parquet
/// output with its windows as UTC ms), replacing earlier ones.
async fn expected_and_actual(
    ctx: &datafusion::prelude::SessionContext,
    expected_sql: &str,
    output: &Path,
    columns: &str,
) {
    for view in ["expected", "actual", "actual_parquet"] {
        ctx.sql(&format!("DROP VIEW IF EXISTS {view}"))
            .await
            .unwrap();
        let _ = ctx.deregister_table(view);
    }
    ctx.register_parquet(
        "actual_parquet",
        output.to_str().unwrap(),
        datafusion::prelude::ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE VIEW actual AS SELECT CAST(window_start AS BIGINT) AS window_start, \
         CAST(window_end AS BIGINT) AS window_end, {columns} FROM actual_parquet"
    ))
    .await
    .unwrap();
    ctx.sql(&format!("CREATE VIEW expected AS {expected_sql}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_from_kafka_equals_batch_sql() {
    let dir = common::scratch_dir("kafka-w2");
    let Some(broker) = Broker::start(&dir.join("broker")) else {
        return;
    };
    let tasks = common::trace_parts("task_events", 1);
    let mut jobs = common::trace_parts("job_events", 1);
    let no_jobs = jobs.is_empty();
    if no_jobs {
        // The bundled sample has no job events: replay an empty table.
        let empty = dir.join("no-job-events/part-00000-of-00001.csv.gz");
        std::fs::create_dir_all(empty.parent().unwrap()).unwrap();
        let encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(&empty).unwrap(),
            flate2::Compression::fast(),
        );
        encoder.finish().unwrap();
        jobs.push(empty);
    }
    replay(
        &broker,
        &[("task_events", &tasks), ("job_events", &jobs)],
        &dir,
        None,
    );

    // The engine: the repository's W2 pipeline on this broker, read to the
    // end of its topics.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut loaded = streamsql::config::load(&repo.join("pipelines.yaml")).unwrap();
    let pipeline = loaded.file.pipelines.get_mut("resource_usage").unwrap();
    for source in &mut pipeline.sources {
        let streamsql::config::SourceInput::Kafka(kafka) = &mut source.input else {
            panic!("a Kafka source")
        };
        kafka.brokers = broker.address.clone();
        kafka.stop_when_idle = None;
        kafka.stop_at_end = true;
    }
    for query in &mut pipeline.queries {
        query
            .sinks
            .retain(|s| matches!(s, streamsql::config::SinkConfig::Parquet(_)));
    }
    let output = dir.join("out");
    let summary = common::run_loaded(&loaded, "resource_usage", &output).await;
    eprintln!("{summary}");
    assert_eq!(summary.late, 0, "replay keeps time order: nothing is late");
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );

    // The reference: DataFusion batch SQL over the same files.
    let ctx = datafusion::prelude::SessionContext::new();
    common::register_csv_gz(&ctx, "task_events", common::TASK_EVENTS, &tasks, &dir).await;
    common::register_csv_gz(&ctx, "job_events", common::JOB_EVENTS, &jobs, &dir).await;
    expected_and_actual(
        &ctx,
        "SELECT time / 60000000 * 60000 AS window_start, time / 60000000 * 60000 + 60000 AS window_end,
                machine_id, count(*) AS task_events,
                sum(cpu_request) AS total_cpu_request, sum(memory_request) AS total_memory_request,
                avg(cpu_request) AS avg_cpu_request, avg(memory_request) AS avg_memory_request
         FROM task_events WHERE machine_id IS NOT NULL
         GROUP BY time / 60000000, machine_id",
        &output.join("resource_usage"),
        "machine_id, task_events, total_cpu_request, total_memory_request, avg_cpu_request, \
         avg_memory_request",
    )
    .await;
    let usage_rows = common::row_texts(&[&output.join("resource_usage")]).len();
    assert!(usage_rows > 100, "{usage_rows} resource_usage rows");
    let bad = mismatches(
        &ctx,
        &["window_start", "machine_id"],
        &["window_end", "task_events"],
        &[
            "total_cpu_request",
            "total_memory_request",
            "avg_cpu_request",
            "avg_memory_request",
        ],
    )
    .await;
    assert_eq!(bad, 0, "resource_usage rows differing from batch SQL");

    if no_jobs {
        let rows = common::row_texts(&[&output.join("job_event_counts")]);
        assert!(rows.is_empty(), "job counts without job events: {rows:?}");
        return;
    }
    expected_and_actual(
        &ctx,
        "SELECT time / 60000000 * 60000 AS window_start, time / 60000000 * 60000 + 60000 AS window_end,
                event_type, count(*) AS job_events, count(DISTINCT job_id) AS jobs
         FROM job_events GROUP BY time / 60000000, event_type",
        &output.join("job_event_counts"),
        "event_type, job_events, jobs",
    )
    .await;
    let bad = mismatches(
        &ctx,
        &["window_start", "event_type"],
        &["window_end", "job_events", "jobs"],
        &[],
    )
    .await;
    assert_eq!(bad, 0, "job_event_counts rows differing from batch SQL");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One GET of `http://<address>/metrics`; `None` when nothing listens.
fn scrape(address: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    Some(answer)
}

/// The values of metric lines starting with `prefix` (name and labels).
fn values(text: &str, prefix: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn prometheus_metrics_are_scraped_while_a_kafka_pipeline_runs() {
    let dir = common::scratch_dir("kafka-metrics");
    let Some(broker) = Broker::start(&dir.join("broker")) else {
        return;
    };
    let files = common::trace_parts("task_events", 1);
    replay(&broker, &[("metrics", &files)], &dir, Some(30_000));
    let config = write_pipeline(
        &dir.join("run"),
        &kafka_input(&broker, "metrics", "metrics", "stop_when_idle: 15s"),
    );
    // Result gauges on the same /metrics, next to the runner's own (their
    // families only: the first events all have time 0, so no window closes
    // before the end; what Prometheus then reads must still parse).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "sinks: [ { parquet: {} } ]",
        "sinks: [ { parquet: {} }, { prometheus: { values: [total_events], labels: [machine_id, job_id] } } ]",
    );
    std::fs::write(&config, text).unwrap();
    // A real Prometheus scrapes the runner every second, from before it
    // starts (when installed; the scrapes below run either way).
    let metrics_address = format!("127.0.0.1:{}", common::free_port());
    let prometheus = common::prometheus::prometheus(&dir.join("prometheus"), &[&metrics_address]);
    if let Some(server) = &prometheus {
        // Its first scrape (of nothing yet) comes about 6 s after it starts.
        common::prometheus::wait_for(&server.address, "up", 1, Duration::from_secs(30));
    }
    let mut command = run(
        &config,
        &dir.join("run/out"),
        &["--metrics-address", &metrics_address],
    );
    command.stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let address = first
        .trim()
        .strip_prefix("metrics at http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {first:?}"))
        .to_string();

    // Scrape while it runs, until every message is counted and no partition
    // lags (bounded: the runner stops 8 s after the last message).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let text = loop {
        let Some(text) = scrape(&address) else {
            let output = common::wait_within(child, LIMIT);
            panic!(
                "the runner ended before the metrics settled:\n{}\nlast scrape:\n{last}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let events = values(&text, "streamsql_events_in_total{");
        let lags = values(&text, "streamsql_kafka_consumer_lag{");
        if events.first() == Some(&30_000.0) && lags.len() == 12 && lags.iter().all(|l| *l == 0.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{text}");
        last = text;
        std::thread::sleep(Duration::from_millis(200));
    };
    // While the runner idles before it stops: every panel of the pipeline
    // health dashboard shows it.
    if let Some(server) = &prometheus {
        let scraped = "count_over_time(streamsql_events_in_total[1m]) >= 4";
        common::prometheus::wait_for(&server.address, scraped, 1, Duration::from_secs(30));
        for expr in common::prometheus::dashboard_expressions("pipeline_health.json") {
            // A scrape that missed its 1 s deadline makes the series stale
            // for a moment: ask again for a few seconds.
            let found =
                common::prometheus::wait_for(&server.address, &expr, 1, Duration::from_secs(10));
            let shown = found
                .iter()
                .filter(|s| s["value"][1].as_str().is_some_and(|v| v != "NaN"))
                .count();
            assert!(
                shown > 0,
                "pipeline health panel `{expr}` shows no data: {found:?}"
            );
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let output = common::wait_within(child, LIMIT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The scraped counts are the run's own (printed in its summary).
    let events = values(
        &text,
        "streamsql_events_in_total{pipeline=\"p\",source=\"task_events\"}",
    );
    assert!(
        rest.contains(&format!("pipeline p: {} events", events[0])),
        "{rest}\n{text}"
    );
    let rows = values(
        &text,
        "streamsql_rows_out_total{pipeline=\"p\",query=\"task_failure_metrics\"}",
    );
    assert!(
        rows.len() == 1 && text.contains("streamsql_late_rows_total{"),
        "{text}"
    );
    // The watermark is the slowest partition's newest event time less the
    // 30 s delay: between the first and the last replayed event's, less 30 s.
    let times: Vec<f64> = {
        use std::io::Read;
        let mut text = String::new();
        streamsql::source::open_file(&files[0])
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text.lines()
            .take(30_000)
            .map(|l| l.split(',').next().unwrap().parse::<f64>().unwrap() / 1e6 - 30.0)
            .collect()
    };
    let (first, last) = (times[0], times.iter().copied().fold(f64::MIN, f64::max));
    let watermark = values(&text, "streamsql_watermark_timestamp_seconds{");
    assert!(
        watermark.len() == 1 && watermark[0] >= first && watermark[0] <= last,
        "{first}..{last}: {text}"
    );
    assert!(
        values(&text, "streamsql_batch_duration_seconds_count{")[0] >= 1.0,
        "{text}"
    );
    assert!(
        values(&text, "streamsql_state_groups{").len() == 1,
        "{text}"
    );
}
