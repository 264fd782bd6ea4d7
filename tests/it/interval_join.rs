//! The interval join gives what DataFusion's batch join computes over the
//! same rows, less the late ones, for inner, LEFT, RIGHT and FULL joins: two
//! sources with out-of-order and late events, read at several batch sizes
//! (so interleaved differently) and parallelisms, and across a restart on
//! another number of workers. The late rows are computed independently, by
//! the watermark's definition, and must equal the `<source>_late` tables.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::SessionContext;
use streamsql::runtime::RunOptions;

const DELAY_MS: i64 = 3_000;
const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A source's events: (event time in ms, key, row number), in arrival order.
struct Events(Vec<(i64, u64, i64)>);

impl Events {
    /// `count` events 40 ms apart, most up to 3.2 s out of order (around the
    /// 3 s delay: many rows land just ahead of the watermark, where a state
    /// freed too early shows), one in 29 up to 12 s behind (mostly late).
    fn generate(random: &mut common::Random, count: usize, keys: u64) -> Self {
        let events = (0..count)
            .map(|i| {
                let behind = match random.below(29) {
                    0 => 3_000 + random.below(9_000) as i64,
                    _ => random.below(3_200) as i64,
                };
                (
                    BASE_MS + i as i64 * 40 - behind,
                    random.below(keys),
                    i as i64,
                )
            })
            .collect();
        Self(events)
    }

    /// Whether each event is late: behind the watermark it meets, the
    /// largest event time before it minus the delay.
    fn late(&self) -> Vec<bool> {
        let mut newest = i64::MIN;
        (self.0.iter())
            .map(|(t, _, _)| {
                let late = newest != i64::MIN && *t < newest - DELAY_MS;
                newest = newest.max(*t);
                late
            })
            .collect()
    }

    fn csv(&self) -> String {
        (self.0.iter())
            .map(|(t, k, n)| {
                let at = chrono::DateTime::from_timestamp_millis(*t).unwrap();
                format!("{},k{k},{n}\n", at.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
            })
            .collect()
    }

    /// The events of `keep` as a batch of the source's schema.
    fn batch(&self, keep: impl Fn(usize) -> bool) -> RecordBatch {
        let rows: Vec<_> = (self.0.iter().enumerate())
            .filter(|(i, _)| keep(*i))
            .map(|(_, e)| *e)
            .collect();
        let schema = Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| format!("k{}", r.1)),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }
}

/// The join, with a residual condition beyond the key and the bound.
fn join_sql(join: &str) -> String {
    format!(
        "SELECT c.k, c.t AS clicked, v.t AS viewed, c.n AS click, v.n AS view
         FROM clicks c {join} views v
           ON c.k = v.k AND c.t BETWEEN v.t - INTERVAL '2' SECOND AND v.t + INTERVAL '5' SECOND
          AND (c.n + v.n) % 4 <> 0"
    )
}

fn write_pipeline(dir: &Path, batch_rows: usize, joins: &[(&str, &str)]) -> std::path::PathBuf {
    let source = |name: &str| {
        format!(
            "      - name: {name}
        format: csv
        replay: {{ path: {name}.csv, batch_rows: {batch_rows} }}
        columns:
          - {{ name: t, type: timestamp }}
          - {{ name: k, type: string }}
          - {{ name: n, type: int64 }}
        event_time: {{ column: t }}
        watermark_delay: 3s
"
        )
    };
    let mut queries = String::new();
    for (name, join) in joins {
        std::fs::write(dir.join(format!("{name}.sql")), join_sql(join)).unwrap();
        queries.push_str(&format!(
            "      - {{ name: {name}, sql: {name}.sql, sinks: [ {{ parquet: {{}} }} ] }}\n"
        ));
    }
    let yaml = format!(
        "pipelines:\n  p:\n    sources:\n{}{}    queries:\n{queries}",
        source("clicks"),
        source("views")
    );
    let config = dir.join(format!("pipelines-{batch_rows}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    config
}

const JOINS: [(&str, &str); 4] = [
    ("inner_join", "JOIN"),
    ("left_join", "LEFT JOIN"),
    ("right_join", "RIGHT JOIN"),
    ("full_join", "FULL JOIN"),
];

/// The reference: DataFusion's batch join of the events that are not late.
async fn reference(clicks: &Events, views: &Events, join: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    for (name, events) in [("clicks", clicks), ("views", views)] {
        let late = events.late();
        ctx.register_batch(name, events.batch(|i| !late[i]))
            .unwrap();
    }
    common::sorted_sql_rows(&ctx, &join_sql(join)).await
}

fn sorted_rows(dir: &Path) -> Vec<String> {
    let mut rows = common::row_texts(&[dir]);
    rows.sort();
    rows
}

/// The late events of `events` as the `<source>_late` table shows them.
fn late_rows(events: &Events) -> Vec<String> {
    let late = events.late();
    let mut rows = common::batch_texts(&[events.batch(|i| late[i])], &[]);
    rows.sort();
    rows
}

/// Random clicks and views (seeded, printed), written as the sources'
/// files in a new scratch folder.
fn inputs(what: &str) -> (Events, Events, std::path::PathBuf) {
    let mut random = common::Random::new(what);
    let clicks = Events::generate(&mut random, 1_500, 25);
    let views = Events::generate(&mut random, 1_200, 25);
    let dir = common::scratch_dir(&what.replace(' ', "-"));
    std::fs::write(dir.join("clicks.csv"), clicks.csv()).unwrap();
    std::fs::write(dir.join("views.csv"), views.csv()).unwrap();
    (clicks, views, dir)
}

#[tokio::test]
async fn interval_joins_equal_datafusion_at_any_batch_size_and_parallelism() {
    let (clicks, views, dir) = inputs("interval join events");
    let mut expected = Vec::new();
    for (name, join) in JOINS {
        expected.push((name, reference(&clicks, &views, join).await));
    }
    let inner = &expected[0].1;
    assert!(inner.len() > 1_000, "{} joined rows", inner.len());
    let full = &expected[3].1;
    assert!(
        full.iter().filter(|r| r.contains("NULL")).count() > 50,
        "the outer joins have unmatched rows on both sides"
    );
    for (batch_rows, workers) in [(1, 1), (7, 3), (64, 2), (500, 4)] {
        let config = write_pipeline(&dir, batch_rows, &JOINS);
        let loaded = streamsql::config::load(&config).unwrap();
        let out = dir.join(format!("out-{batch_rows}-{workers}"));
        let options = RunOptions {
            output_dir: Some(out.clone()),
            parallelism: Some(workers),
            ..Default::default()
        };
        common::run_with(&loaded, "p", &options).await;
        let case = format!("{batch_rows} lines a batch, {workers} workers");
        for (name, want) in &expected {
            common::assert_same_rows(
                &format!("{name} ({case})"),
                want,
                &sorted_rows(&out.join(name)),
            );
        }
        for (source, events) in [("clicks", &clicks), ("views", &views)] {
            common::assert_same_rows(
                &format!("{source}_late ({case})"),
                &late_rows(events),
                &sorted_rows(&out.join(format!("{source}_late"))),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_join_stopped_on_four_workers_finishes_on_two_with_the_same_rows() {
    let (clicks, views, dir) = inputs("interval join restart");
    let config = write_pipeline(&dir, 50, &JOINS);
    let loaded = streamsql::config::load(&config).unwrap();
    let out = dir.join("out");
    let stopped = RunOptions {
        output_dir: Some(out.clone()),
        parallelism: Some(4),
        stop_after_batches: Some(25),
        ..Default::default()
    };
    let summary = common::run_with(&loaded, "p", &stopped).await;
    assert!(summary.stopped_early);
    assert!(summary.state_groups > 0, "the join holds rows at the stop");
    let resumed = RunOptions {
        output_dir: Some(out.clone()),
        parallelism: Some(2),
        ..Default::default()
    };
    let summary = common::run_with(&loaded, "p", &resumed).await;
    assert!(summary.restored.is_some(), "resumed from the checkpoint");
    for (name, join) in JOINS {
        common::assert_same_rows(
            name,
            &reference(&clicks, &views, join).await,
            &sorted_rows(&out.join(name)),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
