//! The Kafka path on a real Apache Kafka broker (KRaft, on loopback,
//! sharing the machine with the client): `streamsql replay`'s
//! produce rate, then W1 read from the topic against a bare rdkafka consumer
//! reading the same topic. The ratio is what the engine costs on top of
//! Kafka itself (target: at least 0.9).
//!
//! Run with `scripts/bench.sh --bench kafka` (it installs Kafka). Input: the
//! first three parts of the real trace's task_events (../shared/datasets;
//! the bundled sample's two when absent).

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use streamsql::cli::replay::{ReplayOptions, create_topics, produce};
use streamsql::runtime::RunOptions;

const TOPIC: &str = "task_events";
const PARTITIONS: i32 = 12;

/// Reads every partition from its start with a plain consumer (assigned, no
/// group protocol), touching every payload, until `events` messages came.
fn bare_consumer(brokers: &str, events: u64) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let (mut count, mut bytes) = (0u64, 0usize);
    while count < events {
        assert!(Instant::now() < deadline, "the bare consumer stalled");
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            bytes += message.expect("message").payload().map_or(0, <[u8]>::len);
            count += 1;
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    elapsed
}

/// The repository's W1 pipeline with its source switched to the topic, read
/// to the end offsets, in a group of its own.
fn w1_from_kafka(brokers: &str, round: usize, output: &std::path::Path) -> (u64, Duration) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut loaded = streamsql::config::load(&repo.join("pipelines.yaml")).expect("pipelines.yaml");
    let pipeline = loaded.file.pipelines.get_mut("task_failures").expect("W1");
    let source = &mut pipeline.sources[0];
    source.input = streamsql::config::SourceInput::Kafka(
        serde_yaml::from_str(&format!(
            "{{ brokers: '{brokers}', topic: {TOPIC}, group: bench-w1-{round}, stop_at_end: true }}"
        ))
        .expect("kafka config"),
    );
    pipeline.queries[0]
        .sinks
        .retain(|s| matches!(s, streamsql::config::SinkConfig::Parquet(_)));
    let options = RunOptions {
        output_dir: Some(output.to_path_buf()),
        from_scratch: true,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let summary = runtime.block_on(common::run_with(&loaded, "task_failures", &options));
    (summary.events_in, started.elapsed())
}

fn main() {
    let dir = std::env::temp_dir().join(format!("streamsql-bench-kafka-{}", std::process::id()));
    let broker = common::broker::Broker::start(&dir.join("broker"))
        .expect("a Kafka broker: run through scripts/bench.sh, which installs it");
    let files = common::trace_parts("task_events", 3);
    println!(
        "input: {} parts of task_events, from {}",
        files.len(),
        files[0].parent().unwrap().display()
    );
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(create_topics(&broker.address, &[TOPIC], PARTITIONS))
        .expect("create topic");
    let stats = produce(&ReplayOptions {
        brokers: broker.address.clone(),
        tables: vec![(TOPIC.to_string(), files)],
        partitions: PARTITIONS,
        speedup: None,
        limit: None,
        progress: false,
    })
    .expect("replay");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} cores, broker and client on the same machine");
    println!(
        "replay produce: {} events in {:.2} s = {:.0} events/s",
        stats.produced,
        stats.elapsed.as_secs_f64(),
        stats.rate()
    );

    // Alternate the two readers so that both see the broker warm.
    let (mut bare, mut w1) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let elapsed = bare_consumer(&broker.address, stats.produced);
        println!(
            "bare rdkafka consumer, round {round}: {:.0} events/s",
            stats.produced as f64 / elapsed.as_secs_f64()
        );
        bare.push(elapsed.as_secs_f64());
        let (events, elapsed) = w1_from_kafka(&broker.address, round, &dir.join("out"));
        assert_eq!(events, stats.produced, "W1 read every event");
        println!(
            "W1 from Kafka, round {round}: {:.0} events/s",
            events as f64 / elapsed.as_secs_f64()
        );
        w1.push(elapsed.as_secs_f64());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "W1 from Kafka / bare consumer throughput ratio: {:.2}",
        mean(&bare) / mean(&w1)
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
