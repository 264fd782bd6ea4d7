//! The Elasticsearch sink's write rate to osmem-server (an Elasticsearch-API
//! server on loopback, sharing the machine): W1 with its results upserted into
//! Elasticsearch, against W1 writing Parquet only, and against plain bulk
//! requests of the same documents sent without the engine (what the server
//! alone accepts). All in one run, so the ratios compare like with like.
//!
//! Each Elasticsearch measurement gets a fresh server: osmem-server slows
//! down as its index grows.
//!
//! Run with `scripts/bench.sh --bench elasticsearch` (it installs
//! osmem-server). Input: the first `EVENTS` task events after time 0 of the
//! real trace (../shared/datasets; of the bundled sample when absent).

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::elasticsearch::{EsServer, http};
use streamsql::config::SinkConfig;
use streamsql::metrics::Summary;
use streamsql::runtime::RunOptions;

const BULK_ROWS: usize = 5_000;
const EVENTS: usize = 60_000;

/// The repository's W1 pipeline on `part`, with `sink` as its only sink.
fn run_w1(part: &Path, sink: SinkConfig, output: &Path) -> (Summary, Duration) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut loaded = streamsql::config::load(&repo.join("pipelines.yaml")).expect("pipelines.yaml");
    let pipeline = loaded.file.pipelines.get_mut("task_failures").expect("W1");
    let streamsql::config::SourceInput::Replay(replay) = &mut pipeline.sources[0].input else {
        panic!("W1 replays files")
    };
    replay.path = part.display().to_string();
    pipeline.queries[0].sinks = vec![sink];
    let options = RunOptions {
        output_dir: Some(output.to_path_buf()),
        from_scratch: true,
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let summary = runtime.block_on(common::run_with(&loaded, "task_failures", &options));
    (summary, started.elapsed())
}

/// Sends W1's Parquet rows as bulk requests of `BULK_ROWS` documents over
/// one connection per request, without the engine; returns the documents sent.
fn plain_bulk(address: &str, parquet: &Path) -> (u64, Duration) {
    let rows = common::row_texts(&[parquet]);
    let started = Instant::now();
    for chunk in rows.chunks(BULK_ROWS) {
        let mut body = String::new();
        for row in chunk {
            let f: Vec<&str> = row.split('|').collect();
            let id = format!("{}|{}|{}", f[0], f[2], f[3]);
            body.push_str(
                &serde_json::json!({ "index": { "_index": "plain-w1", "_id": id } }).to_string(),
            );
            body.push('\n');
            let doc = serde_json::json!({
                "window_start": f[0], "window_end": f[1], "machine_id": f[2].parse::<i64>().ok(),
                "job_id": f[3].parse::<i64>().ok(), "total_events": f[4].parse::<i64>().ok(),
                "fail_count": f[5].parse::<i64>().ok(), "evict_count": f[6].parse::<i64>().ok(),
                "kill_count": f[7].parse::<i64>().ok(), "total_fail_count": f[8].parse::<i64>().ok(),
                "fail_rate": f[9].parse::<f64>().ok(),
            });
            body.push_str(&doc.to_string());
            body.push('\n');
        }
        let (status, answer) = http(address, "POST", "/_bulk", Some(body.as_bytes()));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    (rows.len() as u64, started.elapsed())
}

fn main() {
    let dir = std::env::temp_dir().join(format!("streamsql-bench-es-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let part = common::trace_slice("task_events", EVENTS, &dir.join("task_events.csv"));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "input: {EVENTS} task events; machine: {cpus} cores, osmem-server and the engine on it"
    );

    let (parquet, parquet_time) = run_w1(
        &part,
        SinkConfig::Parquet(Default::default()),
        &dir.join("parquet"),
    );
    let rows: u64 = parquet.rows_out.iter().map(|(_, n)| n).sum();
    println!(
        "W1 -> Parquet: {} events, {rows} rows in {:.2} s = {:.0} events/s",
        parquet.events_in,
        parquet_time.as_secs_f64(),
        parquet.events_in as f64 / parquet_time.as_secs_f64()
    );

    let es = EsServer::osmem().expect("osmem-server: run through scripts/bench.sh");
    let (sent, plain_time) = plain_bulk(es.address(), &dir.join("parquet/task_failure_metrics"));
    drop(es);
    println!(
        "plain bulk requests, no engine: {sent} documents in {:.2} s = {:.0} documents/s",
        plain_time.as_secs_f64(),
        sent as f64 / plain_time.as_secs_f64()
    );

    let es = EsServer::osmem().expect("osmem-server: run through scripts/bench.sh");
    let elasticsearch: SinkConfig =
        serde_yaml::with::singleton_map::deserialize(serde_yaml::Deserializer::from_str(&format!(
            "elasticsearch: {{ url: '{}', index: 'bench-w1-{{window_start:%Y.%m.%d}}', \
             id_columns: [window_start, machine_id, job_id], bulk_rows: {BULK_ROWS} }}",
            es.url
        )))
        .expect("sink config");
    let (sinked, es_time) = run_w1(&part, elasticsearch, &dir.join("es"));
    drop(es);
    // The sink's summary line: `<name>: N documents in M bulk requests, ...`.
    let line = &sinked.sinks[0];
    let count_before = |word: &str| -> u64 {
        let head = &line[..line.find(word).expect(word)];
        head.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (documents, requests) = (count_before(" documents"), count_before(" bulk requests"));
    assert_eq!(documents, rows, "every row became a document: {line}");
    println!(
        "W1 -> Elasticsearch: {documents} documents in {:.2} s = {:.0} documents/s ({:.0} events/s), {requests} bulk requests",
        es_time.as_secs_f64(),
        documents as f64 / es_time.as_secs_f64(),
        sinked.events_in as f64 / es_time.as_secs_f64(),
    );
    println!(
        "W1 -> Elasticsearch / plain bulk documents/s ratio: {:.2}",
        plain_time.as_secs_f64() / es_time.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
