//! W3-W5 as a user runs them: the golden tests, the real Apache log, the
//! coursework and Alibaba server metrics against a brute-force evaluation,
//! and rule queries with window functions across a restart.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

const LIMIT: Duration = Duration::from_secs(300);

/// A real dataset of ../shared/datasets when present, else the bundled sample.
fn dataset(real: &str, sample: &str) -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(real);
    if shared.is_file() {
        shared
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(sample)
    }
}

fn run_pipeline(pipeline: &str, out: &Path, env: (&str, &Path)) -> String {
    let mut command = common::streamsql(&[
        "run",
        pipeline,
        "--quiet",
        "--from-scratch",
        "--output",
        out.to_str().unwrap(),
    ]);
    command.env(env.0, env.1);
    common::assert_ok(&common::output_within(command, LIMIT))
}

/// Column `name` of `batch` as f64 (NULL as NaN).
fn floats(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let column = cast(batch.column_by_name(name).expect(name), &DataType::Float64).unwrap();
    let values = column.as_primitive::<Float64Type>();
    (0..values.len())
        .map(|i| {
            if values.is_null(i) {
                f64::NAN
            } else {
                values.value(i)
            }
        })
        .collect()
}

fn texts(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = cast(batch.column_by_name(name).expect(name), &DataType::Utf8).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

#[test]
fn golden_tests_pass_fail_on_a_wrong_row_and_update_rewrites_rows() {
    let stdout = common::assert_ok(&common::output_within(common::streamsql(&["test"]), LIMIT));
    assert!(stdout.contains("golden tests passed"), "{stdout}");
    for workload in [
        "w1_task_failures",
        "w2_resource_usage",
        "w3_web_logs",
        "w3_access_log",
        "w4_server_monitoring",
        "w5_city_events",
    ] {
        assert!(
            stdout.contains(&format!("ok    tests/golden/{workload}.test")),
            "{workload}: {stdout}"
        );
    }

    let dir = common::scratch_dir("golden");
    let original = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/w4_server_monitoring.test"),
    )
    .unwrap();
    let wrong = dir.join("wrong.test");
    std::fs::write(
        &wrong,
        original.replacen("| Disk thrash suspected", "| Disk fine", 1),
    )
    .unwrap();
    let output =
        common::output_within(common::streamsql(&["test", wrong.to_str().unwrap()]), LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("missing:    1970-01-01T20:53:00 | server_1 |")
            && stdout.contains("Disk fine"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unexpected: 1970-01-01T20:53:00 | server_1 |"),
        "{stdout}"
    );

    // Strip every expected row: --update writes them back as they were.
    let mut stripped = Vec::new();
    let mut in_rows = false;
    for line in original.lines() {
        if line.starts_with("expect ") {
            stripped.push(line);
            in_rows = false;
        } else if !in_rows && stripped.last().is_some_and(|l| l.starts_with("expect ")) {
            stripped.push(line); // the column names
            in_rows = true;
        } else if !in_rows || line.trim().is_empty() {
            stripped.push(line);
            in_rows = false;
        }
    }
    let blank = dir.join("blank.test");
    std::fs::write(&blank, stripped.join("\n") + "\n").unwrap();
    common::assert_ok(&common::output_within(
        common::streamsql(&["test", "--update", blank.to_str().unwrap()]),
        LIMIT,
    ));
    assert_eq!(std::fs::read_to_string(&blank).unwrap(), original);
}

#[test]
fn w3_parses_the_apache_log_counts_every_good_line_and_dead_letters_the_cut_one() {
    let log = dataset(
        "web-logs/apache_access_combined.log",
        "datasets/web-logs-sample/access.log.gz",
    );
    let out = common::scratch_dir("w3-apache");
    let stdout = run_pipeline("access_log", &out, ("ACCESS_LOG", &log));

    // Independent reading: a good line has its three quoted fields (six
    // quotes); the time sits in [...]; the status follows the request.
    let text = {
        use std::io::Read;
        let mut text = String::new();
        streamsql::source::open_file(&log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let mut per_minute: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    let mut bad_lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.matches('"').count() != 6 {
            bad_lines.push(i + 1);
            continue;
        }
        let time = &line[line.find('[').unwrap() + 1..line.find(']').unwrap()];
        let time = chrono::DateTime::parse_from_str(time, "%d/%b/%Y:%H:%M:%S %z")
            .unwrap()
            .timestamp_millis();
        let status: u32 = line
            .split('"')
            .nth(2)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let entry = per_minute
            .entry(time.div_euclid(60_000) * 60_000)
            .or_default();
        entry.0 += 1;
        entry.1 += u64::from(status >= 400);
    }
    assert_eq!(bad_lines.len(), 1, "{bad_lines:?}");
    let good = text.lines().count() - 1;
    assert!(
        stdout.contains(&format!("pipeline access_log: {good} events")),
        "{stdout}"
    );
    // Seconds are shuffled within each minute; the 1-minute delay admits them all.
    assert!(stdout.contains(", 0 late"), "{stdout}");

    let mut engine: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for batch in common::read_parts(&out.join("access_metrics")) {
        let starts = common::millis(&batch, "window_start");
        let requests = floats(&batch, "requests");
        let errors = floats(&batch, "errors");
        for i in 0..batch.num_rows() {
            assert!(
                engine
                    .insert(starts[i], (requests[i] as u64, errors[i] as u64))
                    .is_none(),
                "one row per minute"
            );
        }
    }
    assert_eq!(engine, per_minute);

    let dead = common::dead_letters(&out);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let position = dead[0]["position"].as_str().unwrap();
    assert!(
        position.ends_with(&format!(":{}", bad_lines[0])),
        "{position}"
    );
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match the source's regex"),
        "{:?}",
        dead[0]
    );
}

/// W4 windows after warm-up by (server, window start ms): average CPU and
/// memory, the CPU/memory alert and the network/disk alert.
type Windows = BTreeMap<(String, i64), (f64, f64, Option<String>, Option<String>)>;

/// W4 by brute force: rows (server, time in s, cpu, mem, net_in, disk_io)
/// into 30 s windows sliding by 10 s, each server's first two dropped,
/// seed 003's alerts. Keyed by (server, window start ms).
fn w4_brute_force(
    rows: &[(String, i64, f64, f64, f64, f64)],
    thresholds: [f64; 4],
    disk_valid_max: f64,
) -> Windows {
    #[derive(Default)]
    struct Acc {
        cpu: f64,
        mem: f64,
        n: f64,
        net: f64,
        disk: Option<f64>,
    }
    let mut windows: BTreeMap<(String, i64), Acc> = BTreeMap::new();
    for (server, t, cpu, mem, net, disk) in rows {
        let last = t.div_euclid(10) * 10;
        for start in [last - 20, last - 10, last] {
            let acc = windows.entry((server.clone(), start * 1000)).or_default();
            acc.cpu += cpu;
            acc.mem += mem;
            acc.n += 1.0;
            acc.net = if acc.n == 1.0 {
                *net
            } else {
                acc.net.max(*net)
            };
            if (0.0..=disk_valid_max).contains(disk) {
                acc.disk = Some(acc.disk.map_or(*disk, |d| d.max(*disk)));
            }
        }
    }
    let [cpu_t, mem_t, net_t, disk_t] = thresholds;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for ((server, start), acc) in windows {
        let count = seen.entry(server.clone()).or_default();
        *count += 1;
        if *count <= 2 {
            continue; // warm-up
        }
        let (cpu, mem) = (acc.cpu / acc.n, acc.mem / acc.n);
        let cpu_mem = match (cpu >= cpu_t, mem >= mem_t) {
            (true, true) => Some("CPU and Memory spike"),
            (true, false) => Some("CPU spike suspected"),
            (false, true) => Some("Memory saturation suspected"),
            _ => None,
        };
        let disk_hot = acc.disk.is_some_and(|d| d >= disk_t);
        let net_disk = match (acc.net >= net_t, disk_hot) {
            (true, true) => Some("Network flood + Disk thrash suspected"),
            (true, false) => Some("Possible DDoS"),
            (false, true) => Some("Disk thrash suspected"),
            _ => None,
        };
        out.insert(
            (server, start),
            (
                cpu,
                mem,
                cpu_mem.map(str::to_string),
                net_disk.map(str::to_string),
            ),
        );
    }
    out
}

/// What single-source W4 wrote: its `server_alerts`.
fn w4_alerts(out: &Path) -> Windows {
    let mut got = BTreeMap::new();
    for batch in common::read_parts(&out.join("server_alerts")) {
        let (servers, starts) = (
            texts(&batch, "server_id"),
            common::millis(&batch, "window_start"),
        );
        let (cpu, mem) = (floats(&batch, "avg_cpu"), floats(&batch, "avg_mem"));
        let (cpu_mem, net_disk) = (
            texts(&batch, "cpu_mem_alert"),
            texts(&batch, "net_disk_alert"),
        );
        for i in 0..batch.num_rows() {
            got.insert(
                (servers[i].clone().unwrap(), starts[i]),
                (cpu[i], mem[i], cpu_mem[i].clone(), net_disk[i].clone()),
            );
        }
    }
    got
}

/// What W4 on four topics wrote: `cpu_mem_alerts` and `net_disk_alerts`
/// (each window once in each), put side by side as single-source W4's rows.
fn w4_topic_alerts(out: &Path) -> Windows {
    let mut got: Windows = BTreeMap::new();
    for batch in common::read_parts(&out.join("cpu_mem_alerts")) {
        let (servers, starts) = (
            texts(&batch, "server_id"),
            common::millis(&batch, "window_start"),
        );
        let (cpu, mem, alert) = (
            floats(&batch, "avg_cpu"),
            floats(&batch, "avg_mem"),
            texts(&batch, "alert"),
        );
        for i in 0..batch.num_rows() {
            let row = (cpu[i], mem[i], alert[i].clone(), None);
            let old = got.insert((servers[i].clone().unwrap(), starts[i]), row);
            assert!(old.is_none(), "a window twice in cpu_mem_alerts");
        }
    }
    let mut net_disk_rows = 0;
    for batch in common::read_parts(&out.join("net_disk_alerts")) {
        let (servers, starts) = (
            texts(&batch, "server_id"),
            common::millis(&batch, "window_start"),
        );
        let alert = texts(&batch, "alert");
        for i in 0..batch.num_rows() {
            let key = (servers[i].clone().unwrap(), starts[i]);
            let row = got
                .get_mut(&key)
                .unwrap_or_else(|| panic!("{key:?} in net_disk_alerts only"));
            assert!(row.3.is_none(), "a window twice in net_disk_alerts");
            row.3 = alert[i].clone();
            net_disk_rows += 1;
        }
    }
    assert_eq!(net_disk_rows, got.len(), "windows of cpu_mem_alerts only");
    got
}

fn assert_w4_alerts(got: &Windows, want: &Windows) {
    assert_eq!(got.len(), want.len(), "windows after warm-up");
    let alerts = want
        .values()
        .filter(|w| w.2.is_some() || w.3.is_some())
        .count();
    assert!(alerts > 0, "the data raises alerts");
    for (key, w) in want {
        let g = got
            .get(key)
            .unwrap_or_else(|| panic!("window {key:?} missing"));
        assert!(
            (g.0 - w.0).abs() < 1e-9 && (g.1 - w.1).abs() < 1e-9,
            "{key:?}: {g:?} vs {w:?}"
        );
        assert_eq!((&g.2, &g.3), (&w.2, &w.3), "{key:?}");
    }
}

/// The coursework layout's rows as the brute force reads them.
fn coursework_rows(csv: &Path) -> Vec<(String, i64, f64, f64, f64, f64)> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let hms: Vec<i64> = f[0].split(':').map(|p| p.parse().unwrap()).collect();
            let n = |i: usize| f[i].parse::<f64>().unwrap();
            (
                f[1].to_string(),
                hms[0] * 3600 + hms[1] * 60 + hms[2],
                n(2),
                n(3),
                n(4),
                n(6),
            )
        })
        .collect()
}

#[test]
fn w4_on_the_coursework_metrics_equals_a_brute_force_evaluation() {
    let csv = dataset(
        "server-metrics-coursework/dataset.csv",
        "datasets/server-metrics-sample/metrics.csv",
    );
    let out = common::scratch_dir("w4-coursework");
    let stdout = run_pipeline("server_monitoring", &out, ("SERVER_METRICS", &csv));
    assert!(
        stdout.contains("dead letters: none") && stdout.contains(", 0 late"),
        "{stdout}"
    );
    assert_w4_alerts(
        &w4_alerts(&out),
        &w4_brute_force(
            &coursework_rows(&csv),
            [80.07, 89.36, 6104.83, 1839.94],
            1e6,
        ),
    );
}

/// Seed 003's four topics: the coursework rows split by metric (each topic
/// in its own order: rows swapped with their neighbour, 5 s apart, inside
/// the 10 s watermark delay), windowed per topic and joined per server and
/// window, at several batch sizes per topic and parallelisms: the alerts
/// equal the brute force over the unsplit rows.
#[test]
fn w4_on_four_topics_equals_a_brute_force_evaluation_at_any_batch_size_and_parallelism() {
    let csv = dataset(
        "server-metrics-coursework/dataset.csv",
        "datasets/server-metrics-sample/metrics.csv",
    );
    let dir = common::scratch_dir("w4-topics");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let topics: [(&str, &str, &[usize]); 4] = [
        ("cpu", "cpu_pct", &[2]),
        ("mem", "mem_pct", &[3]),
        ("net", "net_in,net_out", &[4, 5]),
        ("disk", "disk_io", &[6]),
    ];
    let mut random = common::Random::new("topic disorder");
    for (topic, header, columns) in topics {
        let mut rows: Vec<String> = (lines.iter())
            .map(|f| {
                let mut kept = vec![f[0], f[1]];
                kept.extend(columns.iter().map(|c| f[*c]));
                kept.join(",")
            })
            .collect();
        let servers = lines.iter().filter(|f| f[0] == lines[0][0]).count();
        // Swap one server-step with the next one (5 s later) now and then.
        for step in (0..rows.len() / servers - 1).step_by(2) {
            if random.below(2) == 0 {
                for s in 0..servers {
                    rows.swap(step * servers + s, (step + 1) * servers + s);
                }
            }
        }
        std::fs::write(
            dir.join(format!("{topic}.csv")),
            format!("ts,server_id,{header}\n{}\n", rows.join("\n")),
        )
        .unwrap();
    }
    let want = w4_brute_force(
        &coursework_rows(&csv),
        [80.07, 89.36, 6104.83, 1839.94],
        1e6,
    );
    // Two queries per window over cpu_windows' results: the fleet's size
    // and busiest average, and each window's two busiest servers.
    std::fs::write(
        dir.join("fleet.sql"),
        "SELECT window_start, count(*) AS servers, max(avg_cpu) AS busiest
         FROM cpu_windows GROUP BY window_start",
    )
    .unwrap();
    std::fs::write(
        dir.join("top2.sql"),
        "SELECT window_start, server_id, avg_cpu, place FROM (
           SELECT window_start, server_id, avg_cpu,
                  ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY avg_cpu DESC, server_id) AS place
           FROM cpu_windows)
         WHERE place <= 2",
    )
    .unwrap();
    let extra = format!(
        "\n      - {{ name: fleet, sql: {0}/fleet.sql, sinks: [ parquet: {{}} ] }}\
         \n      - {{ name: top2, sql: {0}/top2.sql, sinks: [ parquet: {{}} ] }}",
        dir.display()
    );
    let (want_fleet, want_top2) = cpu_windows_per_window(&coursework_rows(&csv));
    for (batch_rows, parallelism) in [
        ([1000; 4], 1),
        ([7, 100, 33, 1000], 2),
        ([500, 64, 9, 2000], 4),
    ] {
        let config = common::repo_pipelines_variant(
            "server_monitoring_topics",
            "net_disk_alerts.sql, sinks: [ parquet: {}, console: {} ] }",
            &extra,
            &batch_rows,
        );
        let file = dir.join("pipelines.yaml");
        std::fs::write(&file, config).unwrap();
        let out = dir.join(format!("out-{parallelism}"));
        let workers = parallelism.to_string();
        let extra = ["--from-scratch", "--parallelism", &workers];
        let mut command = common::run_pipeline(&file, "server_monitoring_topics", &out, &extra);
        command.env("SERVER_METRICS_TOPICS", &dir);
        let stdout = common::assert_ok(&common::output_within(command, LIMIT));
        assert!(
            stdout.contains("dead letters: none") && stdout.contains(", 0 late"),
            "{stdout}"
        );
        assert_w4_alerts(&w4_topic_alerts(&out), &want);
        let mut fleet = BTreeMap::new();
        for batch in common::read_parts(&out.join("fleet")) {
            let starts = common::millis(&batch, "window_start");
            let (servers, busiest) = (floats(&batch, "servers"), floats(&batch, "busiest"));
            for i in 0..batch.num_rows() {
                let old = fleet.insert(starts[i], (servers[i] as usize, busiest[i]));
                assert!(old.is_none(), "window {} twice in fleet", starts[i]);
            }
        }
        assert_eq!(fleet.len(), want_fleet.len(), "fleet windows");
        for (start, (servers, busiest)) in &want_fleet {
            let got = fleet[start];
            assert!(
                got.0 == *servers && (got.1 - busiest).abs() < 1e-9,
                "fleet at {start}: {got:?} vs {:?}",
                (servers, busiest)
            );
        }
        let mut top2 = BTreeMap::new();
        for batch in common::read_parts(&out.join("top2")) {
            let (starts, servers) = (
                common::millis(&batch, "window_start"),
                texts(&batch, "server_id"),
            );
            let (averages, places) = (floats(&batch, "avg_cpu"), floats(&batch, "place"));
            for i in 0..batch.num_rows() {
                let key = (starts[i], places[i] as usize);
                let old = top2.insert(key, (averages[i], servers[i].clone().unwrap()));
                assert!(old.is_none(), "place {key:?} twice in top2");
            }
        }
        assert_eq!(top2.len(), want_top2.len(), "places");
        for (key, (average, server, tied)) in &want_top2 {
            let got = &top2[key];
            // Servers whose averages tie may come in either order.
            assert!(
                (got.0 - average).abs() < 1e-9 && (*tied || got.1 == *server),
                "place {key:?}: {got:?} vs {server} {average}"
            );
        }
    }
}

type Fleet = BTreeMap<i64, (usize, f64)>;
/// Per window and place: the average, the server, whether another server's
/// average is within 1e-9 of it.
type Places = BTreeMap<(i64, usize), (f64, String, bool)>;

/// Per 30 s window sliding by 10 s, brute force: how many servers it has and
/// the busiest one's average CPU, and its two busiest servers (ties by name).
fn cpu_windows_per_window(rows: &[(String, i64, f64, f64, f64, f64)]) -> (Fleet, Places) {
    let mut windows: BTreeMap<i64, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    for (server, t, cpu, ..) in rows {
        let last = t.div_euclid(10) * 10;
        for start in [last - 20, last - 10, last] {
            let acc = (windows.entry(start * 1000).or_default())
                .entry(server.clone())
                .or_default();
            *acc = (acc.0 + cpu, acc.1 + 1.0);
        }
    }
    let (mut fleet, mut places) = (BTreeMap::new(), BTreeMap::new());
    for (start, servers) in windows {
        let mut averages: Vec<(f64, String)> = (servers.iter())
            .map(|(s, (sum, n))| (sum / n, s.clone()))
            .collect();
        averages.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        fleet.insert(start, (averages.len(), averages[0].0));
        for (place, (average, server)) in averages.iter().take(2).enumerate() {
            let tied = (averages.iter().filter(|(a, _)| (a - average).abs() < 1e-9)).count() > 1;
            places.insert((start, place + 1), (*average, server.clone(), tied));
        }
    }
    (fleet, places)
}

#[test]
fn w4_on_the_alibaba_machine_usage_equals_a_brute_force_evaluation() {
    let csv = dataset(
        "alibaba-2018/machine_usage_sample.csv",
        "datasets/server-metrics-sample/machine_usage.csv",
    );
    let out = common::scratch_dir("w4-alibaba");
    let stdout = run_pipeline(
        "server_monitoring_alibaba",
        &out,
        ("ALIBABA_MACHINE_USAGE", &csv),
    );
    assert!(stdout.contains(", 0 late"), "{stdout}");
    let rows: Vec<_> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let n = |i: usize| f[i].parse::<f64>().unwrap();
            (
                f[0].to_string(),
                f[1].parse::<i64>().unwrap(),
                n(2),
                n(3),
                n(6),
                n(8),
            )
        })
        .collect();
    assert_w4_alerts(
        &w4_alerts(&out),
        &w4_brute_force(&rows, [80.0, 95.0, 80.0, 60.0], 100.0),
    );
}

#[test]
fn rule_queries_with_window_functions_resume_their_key_history_after_a_stop() {
    let whole = common::scratch_dir("w3-whole");
    let parts = common::scratch_dir("w3-parts");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            "web_logs",
            "--quiet",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        common::assert_ok(&common::output_within(common::streamsql(&args), LIMIT))
    };
    run(&whole, &["--from-scratch"]);
    run(&parts, &["--from-scratch", "--stop-after-batches", "17"]);
    run(&parts, &["--stop-after-batches", "9"]);
    run(&parts, &[]);
    for table in [
        "service_metrics",
        "error_rate_spikes",
        "response_time_anomalies",
        "ddos_suspects",
        "system_health",
    ] {
        let mut want = common::row_texts(&[&whole.join(table)]);
        let mut got = common::row_texts(&[&parts.join(table)]);
        want.sort();
        got.sort();
        assert!(!want.is_empty(), "{table} has rows");
        common::assert_same_rows(table, &want, &got);
    }
}
