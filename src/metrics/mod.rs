//! What a running pipeline tells people: Prometheus metrics (`run
//! --metrics-address`), the live progress line and the end-of-run summary
//! ([`progress`]).
//!
//! The runtime keeps its own totals (rows in and out, late rows, dead
//! letters, sink retries); after every micro-batch [`Metrics::publish`]
//! copies them into the registry, so there is one count and one place that
//! exports it. `prometheus-client` encodes the OpenMetrics text that
//! Prometheus scrapes from `/metrics` (see [`serve`]).

mod progress;
mod serve;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use progress::{CheckpointStats, Progress, Restored, Summary};
pub use serve::serve;

use crate::sink::DeadLetterKind;
use crate::sink::prometheus::QueryGauges;
use crate::source::KafkaLag;
use crate::table::TableRows;

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// What the runtime knows after a micro-batch.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per source: rows decoded, rows late, watermark (UTC ms, `i64::MIN`
    /// before the first event, `i64::MAX` at the end of a finite input).
    pub sources: Vec<(String, u64, u64, i64)>,
    /// Per query: rows emitted.
    pub rows_out: Vec<(String, u64)>,
    /// Per (source, reason): dead letters.
    pub dead_letters: Vec<((String, String), u64)>,
    /// Per (topic, partition): messages not read yet (for the progress
    /// line; scrapes read the sources' lag themselves).
    pub kafka_lag: Vec<(String, i32, i64)>,
    /// Window and history state: groups (rows) and bytes.
    pub state: (usize, usize),
    /// Per sink: retried requests or items.
    pub sink_retries: Vec<(String, u64)>,
}

pub struct Metrics {
    registry: Registry,
    /// Read at every scrape.
    kafka_sources: Vec<KafkaLag>,
    /// The lookup tables, by name; read at every scrape (they change while
    /// no batch comes).
    lookup_tables: Vec<(String, TableRows)>,
    /// Per source, the watermark (UTC ms) of the last micro-batch.
    watermarks: Mutex<BTreeMap<String, i64>>,
    events_in: Counters,
    late_rows: Counters,
    rows_out: Counters,
    dead_letters: Counters,
    watermark: Gauges,
    watermark_lag: Gauges,
    kafka_lag: Gauges,
    state_groups: Gauge,
    state_bytes: Gauge,
    sink_retries: Counters,
    table_rows: Gauges,
    table_loads: Counters,
    table_failures: Counters,
    batch_seconds: Histogram,
    checkpoint_seconds: Histogram,
    /// The gauges of the queries with a Prometheus sink.
    results: Mutex<Vec<Arc<Mutex<QueryGauges>>>>,
    pipeline: String,
}

impl Metrics {
    pub fn new(
        pipeline: &str,
        kafka_sources: Vec<KafkaLag>,
        lookup_tables: Vec<(String, TableRows)>,
    ) -> Self {
        let labels = [(Cow::Borrowed("pipeline"), Cow::Owned(pipeline.to_string()))];
        let mut registry = Registry::with_prefix_and_labels("streamsql", labels.into_iter());
        let metrics = Self {
            events_in: Counters::default(),
            late_rows: Counters::default(),
            rows_out: Counters::default(),
            dead_letters: Counters::default(),
            watermark: Gauges::default(),
            watermark_lag: Gauges::default(),
            kafka_lag: Gauges::default(),
            state_groups: Gauge::default(),
            state_bytes: Gauge::default(),
            sink_retries: Counters::default(),
            table_rows: Gauges::default(),
            table_loads: Counters::default(),
            table_failures: Counters::default(),
            // 100 µs .. about 100 s.
            batch_seconds: Histogram::new(exponential_buckets(1e-4, 4.0, 11)),
            checkpoint_seconds: Histogram::new(exponential_buckets(1e-4, 4.0, 11)),
            registry: Registry::default(),
            kafka_sources,
            lookup_tables,
            watermarks: Mutex::default(),
            results: Mutex::default(),
            pipeline: pipeline.to_string(),
        };
        let m = &metrics;
        registry.register(
            "events_in",
            "Rows decoded from a source",
            m.events_in.clone(),
        );
        registry.register(
            "late_rows",
            "Rows later than every window they belong to",
            m.late_rows.clone(),
        );
        registry.register("rows_out", "Rows a query emitted", m.rows_out.clone());
        registry.register(
            "dead_letters",
            "Records that could not be processed, by reason",
            m.dead_letters.clone(),
        );
        registry.register(
            "watermark_timestamp_seconds",
            "A source's watermark (Unix time)",
            m.watermark.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "Wall clock minus a source's watermark",
            m.watermark_lag.clone(),
        );
        registry.register(
            "kafka_consumer_lag",
            "Messages of a partition the pipeline has not processed yet",
            m.kafka_lag.clone(),
        );
        registry.register(
            "state_groups",
            "Window groups and history rows held",
            m.state_groups.clone(),
        );
        registry.register(
            "state_bytes",
            "Bytes of window and history state",
            m.state_bytes.clone(),
        );
        registry.register(
            "sink_retries",
            "Times a sink sent a bulk request again (after 429/5xx answers, no answer, or items answered 429)",
            m.sink_retries.clone(),
        );
        registry.register(
            "table_rows",
            "Rows of a lookup table's current version",
            m.table_rows.clone(),
        );
        registry.register(
            "table_loads",
            "Versions of a lookup table read (the first included)",
            m.table_loads.clone(),
        );
        registry.register(
            "table_failures",
            "Versions of a lookup table file, or records of a lookup table topic, that could not be read",
            m.table_failures.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time to process one micro-batch",
            m.batch_seconds.clone(),
        );
        registry.register(
            "checkpoint_duration_seconds",
            "Time to write one checkpoint",
            m.checkpoint_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// One micro-batch took `duration` (before its commit, if any).
    pub fn batch_processed(&self, duration: Duration) {
        self.batch_seconds.observe(duration.as_secs_f64());
    }

    /// Copies the runtime's totals in.
    pub fn publish(&self, snapshot: &Snapshot) {
        let mut watermarks = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        for (source, rows, late, watermark) in &snapshot.sources {
            let labels = vec![("source", source.clone())];
            raise(&self.events_in.get_or_create(&labels), *rows);
            raise(&self.late_rows.get_or_create(&labels), *late);
            watermarks.insert(source.clone(), *watermark);
            // Every reason from 0, so that a dashboard's rate has a series.
            for kind in DeadLetterKind::OF_SOURCES {
                let labels = vec![("source", source.clone()), ("reason", kind.to_string())];
                let _ = self.dead_letters.get_or_create(&labels);
            }
        }
        for (query, rows) in &snapshot.rows_out {
            raise(
                &self.rows_out.get_or_create(&vec![("query", query.clone())]),
                *rows,
            );
        }
        for ((source, reason), count) in &snapshot.dead_letters {
            let labels = vec![("source", source.clone()), ("reason", reason.clone())];
            raise(&self.dead_letters.get_or_create(&labels), *count);
        }
        self.state_groups.set(snapshot.state.0 as i64);
        self.state_bytes.set(snapshot.state.1 as i64);
        for (sink, retries) in &snapshot.sink_retries {
            raise(
                &self
                    .sink_retries
                    .get_or_create(&vec![("sink", sink.clone())]),
                *retries,
            );
        }
    }

    pub fn checkpoint_written(&self, duration: Duration) {
        self.checkpoint_seconds.observe(duration.as_secs_f64());
    }

    /// The OpenMetrics text of every metric, with the lags as of now.
    pub fn encode(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // Held to the end: one scrape at a time rebuilds the gauges below.
        let watermarks = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        for (source, watermark) in watermarks.iter() {
            let labels = vec![("source", source.clone())];
            // Before the first event and after the end there is no watermark.
            if *watermark == i64::MIN || *watermark == i64::MAX {
                self.watermark.remove(&labels);
                self.watermark_lag.remove(&labels);
                continue;
            }
            let seconds = *watermark as f64 / 1000.0;
            self.watermark.get_or_create(&labels).set(seconds);
            self.watermark_lag.get_or_create(&labels).set(now - seconds);
        }
        // Partitions revoked since the last scrape disappear.
        self.kafka_lag.clear();
        for (topic, partition, lag) in self.kafka_sources.iter().flat_map(KafkaLag::read) {
            let labels = vec![("topic", topic), ("partition", partition.to_string())];
            self.kafka_lag.get_or_create(&labels).set(lag as f64);
        }
        for (table, rows) in &self.lookup_tables {
            let (stats, labels) = (rows.stats(), vec![("table", table.clone())]);
            let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            self.table_rows
                .get_or_create(&labels)
                .set(read(&stats.rows) as f64);
            raise(&self.table_loads.get_or_create(&labels), read(&stats.loads));
            raise(
                &self.table_failures.get_or_create(&labels),
                read(&stats.failures),
            );
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        drop(watermarks);
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        if results.is_empty() {
            return text;
        }
        // The query results' families go before the end marker.
        let end = text.rfind("# EOF").unwrap_or(text.len());
        text.truncate(end);
        let gauges: Vec<_> = results
            .iter()
            .map(|g| g.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        text.push_str("# TYPE streamsql_prometheus_series_dropped counter\n");
        for query in &gauges {
            text.push_str(&format!(
                "streamsql_prometheus_series_dropped_total{{pipeline=\"{}\",query=\"{}\"}} {}\n",
                self.pipeline,
                query.query(),
                query.dropped
            ));
        }
        for query in &gauges {
            text.push_str(&query.encode(true));
        }
        text.push_str("# EOF\n");
        text
    }

    /// Serves a query's result gauges (see the Prometheus sink) from now on.
    pub fn add_results(&self, gauges: Arc<Mutex<QueryGauges>>) {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        results.push(gauges);
    }
}

/// Brings a counter up to the runtime's total (counters only go up).
fn raise(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}
