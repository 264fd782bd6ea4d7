//! Lookup joins: a stream joined by key with a table held in memory, from a
//! file or a compacted Kafka topic (see docs/sql.md#lookup-joins).
//!
//! W4's failure-domain windows (pipeline `server_monitoring_alibaba`, the
//! machines' attributes as a lookup table, from CSV and from Parquet) equal
//! DataFusion batch SQL that keeps each machine's newest attributes itself,
//! at several batch sizes and worker counts; and a running pipeline follows its tables: a topic's
//! latest value per key (tombstones delete, a bad value is skipped and
//! counted), a file (with a header, and a condition across both sides in
//! `ON`) replaced mid-run, and a broken file that leaves the last good
//! version in place.

use crate::common;

use common::broker::Broker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{CsvReadOptions, SessionContext};

const LIMIT: Duration = Duration::from_secs(300);

/// The real Alibaba samples when ../shared/datasets holds them, else the
/// bundled ones: (machine_usage, machine_meta).
fn alibaba_files() -> (PathBuf, PathBuf) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = repo.join("../shared/datasets/alibaba-2018");
    if shared.join("machine_meta_sample.csv").is_file() {
        return (
            shared.join("machine_usage_sample.csv"),
            shared.join("machine_meta_sample.csv"),
        );
    }
    eprintln!("the Alibaba samples are absent: using the bundled ones");
    let bundled = repo.join("datasets/server-metrics-sample");
    (
        bundled.join("machine_usage.csv"),
        bundled.join("machine_meta.csv"),
    )
}

/// domain_windows in batch SQL: each machine's newest attributes (the
/// file's last row per machine is its newest), each reading in the three
/// 30 s windows sliding by 10 s that hold it, windows as millisecond
/// arithmetic.
const DOMAIN_WINDOWS: &str = "
WITH m AS (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY machine_id
                                    ORDER BY time_stamp DESC) AS newest
                          FROM machines) WHERE newest = 1),
     w AS (SELECT server_id, cpu_pct, mem_pct, (ts * 1000 / 10000) * 10000 - k * 10000 AS ws
           FROM usage CROSS JOIN (VALUES (0), (1), (2)) AS ks(k))
SELECT m.failure_domain_1, to_timestamp_millis(ws), to_timestamp_millis(ws + 30000),
       count(DISTINCT w.server_id), avg(w.cpu_pct), max(w.mem_pct), max(m.cpu_num)
FROM w JOIN m ON m.machine_id = w.server_id
WHERE m.status = 'USING'
GROUP BY m.failure_domain_1, ws";

/// domain_windows in batch SQL over the two files; `parquet` gets the
/// machines' table written as Parquet, for the run that reads it so.
async fn domain_windows_reference(usage: &Path, meta: &Path, parquet: &Path) -> Vec<String> {
    let ctx = SessionContext::new();
    let field = |name: &str, t: DataType| Field::new(name, t, true);
    let usage_schema = Schema::new(vec![
        field("server_id", DataType::Utf8),
        field("ts", DataType::Int64),
        field("cpu_pct", DataType::Float64),
        field("mem_pct", DataType::Float64),
        field("mem_gps", DataType::Float64),
        field("mkpi", DataType::Float64),
        field("net_in", DataType::Float64),
        field("net_out", DataType::Float64),
        field("disk_io", DataType::Float64),
    ]);
    let meta_schema = Schema::new(vec![
        field("machine_id", DataType::Utf8),
        field("time_stamp", DataType::Int64),
        field("failure_domain_1", DataType::Int64),
        field("failure_domain_2", DataType::Utf8),
        field("cpu_num", DataType::Int32),
        field("mem_size", DataType::Float64),
        field("status", DataType::Utf8),
    ]);
    for (name, path, schema) in [
        ("usage", usage, &usage_schema),
        ("machines", meta, &meta_schema),
    ] {
        let options = CsvReadOptions::new().has_header(false).schema(schema);
        ctx.register_csv(name, path.to_str().unwrap(), options)
            .await
            .unwrap();
    }
    ctx.sql(&format!(
        "COPY (SELECT * FROM machines ORDER BY machine_id, time_stamp) TO '{}' STORED AS PARQUET",
        parquet.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    common::sorted_sql_rows(&ctx, DOMAIN_WINDOWS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_domain_windows_equal_batch_sql_at_any_batch_size_and_parallelism() {
    let dir = common::scratch_dir("lookup-domains");
    let (usage, meta) = alibaba_files();
    let parquet = dir.join("machine_meta.parquet");
    let want = domain_windows_reference(&usage, &meta, &parquet).await;
    assert!(want.len() > 10, "too few reference rows: {want:?}");
    // The last run reads the machines from the Parquet file.
    for (batch_rows, workers, format) in [(1000, 1, "csv"), (7, 3, "csv"), (4096, 2, "parquet")] {
        let config = dir.join("pipelines.yaml");
        let yaml = common::repo_pipelines_variant(
            "server_monitoring_alibaba",
            "domain_windows.sql, sinks: [ parquet: {} ] }",
            "",
            &[batch_rows],
        );
        let meta = match format {
            "parquet" => &parquet,
            _ => &meta,
        };
        let table = "        format: csv\n        file: ${ALIBABA_MACHINE_META";
        assert!(yaml.contains(table));
        let yaml = yaml.replace(table, &table.replace("csv", format));
        std::fs::write(&config, yaml).unwrap();
        let out = dir.join(format!("out-{batch_rows}-{workers}"));
        let workers = workers.to_string();
        let extra = ["--from-scratch", "--parallelism", &workers];
        let mut command = common::run_pipeline(&config, "server_monitoring_alibaba", &out, &extra);
        command
            .env("ALIBABA_MACHINE_USAGE", &usage)
            .env("ALIBABA_MACHINE_META", meta);
        common::assert_ok(&common::output_within(command, LIMIT));
        let mut got = common::row_texts(&[&out.join("domain_windows")]);
        got.sort();
        common::assert_same_rows(
            &format!("domain_windows ({batch_rows} rows per batch, {workers} workers, {format})"),
            &want,
            &got,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Keyed messages to `topic`; a `None` value is a tombstone.
fn produce(broker: &Broker, topic: &str, messages: &[(&str, Option<&str>)]) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    for (key, value) in messages {
        let record = BaseRecord::<str, str>::to(topic).key(*key);
        let record = match value {
            Some(value) => record.payload(*value),
            None => record,
        };
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn create_topics(broker: &Broker, topics: &[(&str, bool)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = (topics.iter())
        .map(|(name, compacted)| {
            let topic = NewTopic::new(name, 3, TopicReplication::Fixed(1));
            match compacted {
                true => topic.set("cleanup.policy", "compact"),
                false => topic,
            }
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in runtime
        .block_on(admin.create_topics(&new, &options))
        .unwrap()
    {
        result.unwrap();
    }
}

/// The value of the metric line starting with `prefix`, from a scrape of
/// `address`; `None` while nothing answers or the line is not there.
fn metric(address: &str, prefix: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits (at most a minute) until `metric` of the run at `address` is at
/// least `at_least`.
fn wait_for_metric(address: &str, prefix: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(address, prefix).is_none_or(|v| v < at_least) {
        assert!(
            Instant::now() < deadline,
            "{prefix} did not reach {at_least} within 60 s (now {:?})",
            metric(address, prefix)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `text` to `path` as a whole: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[test]
fn a_running_pipeline_follows_a_compacted_topic_and_a_replaced_file() {
    let dir = common::scratch_dir("lookup-live");
    let Some(broker) = Broker::start(&dir.join("broker")) else {
        return;
    };
    create_topics(&broker, &[("machines", true), ("readings", false)]);
    let machine = |rack: &str, name: &str| format!(r#"{{"machine":"{name}","rack":"{rack}"}}"#);
    let (m1, m2_old, m2, m4) = (
        machine("r1", "m1"),
        machine("r0", "m2"),
        machine("r2", "m2"),
        machine("r4", "m4"),
    );
    produce(
        &broker,
        "machines",
        &[
            ("m1", Some(&m1)),
            ("m2", Some(&m2_old)),
            ("m2", Some(&m2)),
            // Not JSON: skipped and counted; m3 has no row.
            ("m3", Some("{not json")),
            ("m4", Some(&m4)),
            // Deleted again.
            ("m4", None),
        ],
    );
    let racks = dir.join("racks.csv");
    // From which reading on a rack's room holds (a condition of the ON
    // clause across both sides): r2's from the third.
    std::fs::write(
        &racks,
        "rack,room,from_id\nr1,room-a,0\nr2,room-b,2\nr9,room-z,0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("placed.sql"),
        "SELECT r.id, r.machine, m.rack, k.room
         FROM readings r
         LEFT JOIN machines m ON m.machine = r.machine
         LEFT JOIN racks k ON k.rack = m.rack AND r.id >= k.from_id",
    )
    .unwrap();
    let config = dir.join("pipelines.yaml");
    std::fs::write(
        &config,
        format!(
            "pipelines:
  p:
    sources:
      - name: readings
        format: json
        kafka: {{ brokers: '{brokers}', topic: readings, group: lookup-test, batch_rows: 100,
                 batch_timeout: 100ms, stop_when_idle: 8s }}
        columns: [ {{ name: id, type: bigint }}, {{ name: machine, type: string }},
                   {{ name: ts, type: bigint }} ]
        event_time: {{ column: ts }}
        watermark_delay: 1s
    tables:
      - name: machines
        format: json
        kafka: {{ brokers: '{brokers}', topic: machines }}
        refresh_interval: 100ms
        columns: [ {{ name: machine, type: string }}, {{ name: rack, type: string }} ]
      - name: racks
        format: csv
        file: racks.csv
        csv: {{ header: true }}
        refresh_interval: 100ms
        columns: [ {{ name: rack, type: string }}, {{ name: room, type: string }},
                   {{ name: from_id, type: bigint }} ]
    commit_interval: 0s
    queries:
      - {{ name: placed, sql: placed.sql, sinks: [ {{ parquet: {{}} }} ] }}
",
            brokers = broker.address
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", common::free_port());
    let out = dir.join("out");
    let mut command = common::run_p(&config, &out, &["--metrics-address", &address]);
    let child = command.spawn().expect("start streamsql");
    let readings = |ids: std::ops::Range<u64>, machines: &[&str]| -> Vec<(String, String)> {
        ids.zip(machines.iter().cycle())
            .map(|(id, m)| {
                let value = format!(r#"{{"id":{id},"machine":"{m}","ts":{}}}"#, 1000 * id);
                (m.to_string(), value)
            })
            .collect()
    };
    let send = |batch: &[(String, String)]| {
        let messages: Vec<(&str, Option<&str>)> = (batch.iter())
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        produce(&broker, "readings", &messages);
    };
    let placed = "streamsql_rows_out_total{pipeline=\"p\",query=\"placed\"";
    // 1: the tables as the run read them at its start.
    wait_for_metric(
        &address,
        "streamsql_table_loads_total{pipeline=\"p\",table=\"machines\"",
        1.0,
    );
    send(&readings(0..5, &["m1", "m2", "m3", "m4", "m5"]));
    wait_for_metric(&address, placed, 5.0);
    // 2: m1 moves to rack r9, and the racks file is replaced.
    produce(&broker, "machines", &[("m1", Some(&machine("r9", "m1")))]);
    replace_file(
        &racks,
        "rack,room,from_id\nr1,room-a,0\nr2,room-c,0\nr9,room-z,0\n",
    );
    wait_for_metric(
        &address,
        "streamsql_table_loads_total{pipeline=\"p\",table=\"machines\"",
        2.0,
    );
    wait_for_metric(
        &address,
        "streamsql_table_loads_total{pipeline=\"p\",table=\"racks\"",
        2.0,
    );
    send(&readings(5..7, &["m1", "m2"]));
    wait_for_metric(&address, placed, 7.0);
    // 3: a broken racks file is refused; the last good version stays.
    replace_file(&racks, "rack,room,from_id\nr1,room-a,0\nr2\n");
    wait_for_metric(
        &address,
        "streamsql_table_failures_total{pipeline=\"p\",table=\"racks\"",
        1.0,
    );
    let failures = metric(
        &address,
        "streamsql_table_failures_total{pipeline=\"p\",table=\"machines\"",
    );
    send(&readings(7..8, &["m2"]));
    let output = common::wait_within(child, LIMIT);
    common::assert_ok(&output);
    assert_eq!(failures, Some(1.0), "the bad m3 value is counted once");
    let mut got = common::row_texts(&[&out.join("placed")]);
    got.sort();
    let want = [
        "0|m1|r1|room-a",
        "1|m2|r2|NULL",
        "2|m3|NULL|NULL",
        "3|m4|NULL|NULL",
        "4|m5|NULL|NULL",
        "5|m1|r9|room-z",
        "6|m2|r2|room-c",
        "7|m2|r2|room-c",
    ];
    common::assert_same_rows("placed", &want.map(String::from), &got);
    let _ = std::fs::remove_dir_all(&dir);
}
