//! Every kind of DataFusion aggregate, run incrementally by the window
//! operator (partial states merged across micro-batches and panes), gives what
//! DataFusion computes in one batch query over the same rows.

use crate::common;

use std::fmt::Write as _;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::prelude::{CsvReadOptions, SessionContext};

const AGGREGATES: &str =
    "count(*) AS n, sum(v) AS total, avg(v) AS mean, stddev(v) AS sd, var_pop(v) AS vp,
    min(v) AS lo, max(v) AS hi, median(v) AS med, count(DISTINCT u) AS users,
    count(*) FILTER (WHERE v > 50) AS high, bool_or(v > 95) AS spike,
    array_agg(u ORDER BY t) AS sequence, first_value(u ORDER BY t) AS first_user,
    last_value(u ORDER BY t) AS last_user, approx_distinct(u) AS approx_users";

/// Rows as scalars, sorted, for comparison.
fn rows(batches: &[RecordBatch]) -> Vec<Vec<ScalarValue>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, r).unwrap())
                    .collect::<Vec<_>>(),
            );
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn close(a: &ScalarValue, b: &ScalarValue) -> bool {
    match (a, b) {
        (ScalarValue::Float64(Some(x)), ScalarValue::Float64(Some(y))) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

async fn compare(window_sql: &str, reference_from: &str, reference_start: &str) {
    let dir = common::scratch_dir(&format!("aggs-{}", window_sql.len()));
    // 4,000 events over ~11 minutes, strictly increasing times: nothing late.
    let mut csv = String::new();
    let mut state: u64 = 42;
    for i in 0..4000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = (state >> 33) % 10_000;
        writeln!(
            csv,
            "{},k{},u{},{}",
            1_700_000_000_000 + i * 167,
            (state >> 20) % 3,
            (state >> 40) % 17,
            v as f64 / 100.0
        )
        .unwrap();
    }
    std::fs::write(dir.join("events.csv"), &csv).unwrap();
    std::fs::write(
        dir.join("q.sql"),
        format!("SELECT window_start, k, {AGGREGATES} FROM events GROUP BY {window_sql}, k"),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines.yaml"),
        "pipelines:
  p:
    sources:
      - name: events
        format: csv
        replay: { path: events.csv, batch_rows: 97 }
        columns:
          - { name: t, type: int64 }
          - { name: k, type: string }
          - { name: u, type: string }
          - { name: v, type: double }
        event_time: { column: t, unit: ms }
        watermark_delay: 1s
    queries:
      - { name: q, sql: q.sql, sinks: [ { parquet: {} } ] }
",
    )
    .unwrap();
    let out = dir.join("out");
    common::run(&dir.join("pipelines.yaml"), "p", &out).await;
    let actual = rows(&common::read_parts(&out.join("q")));

    let ctx = SessionContext::new();
    let schema = Schema::new(vec![
        Field::new("t", DataType::Int64, false),
        Field::new("k", DataType::Utf8, false),
        Field::new("u", DataType::Utf8, false),
        Field::new("v", DataType::Float64, false),
    ]);
    ctx.register_csv(
        "events",
        dir.join("events.csv").to_str().unwrap(),
        CsvReadOptions::new().has_header(false).schema(&schema),
    )
    .await
    .unwrap();
    let reference = format!(
        "SELECT to_timestamp_millis({reference_start}) AS window_start, k, {AGGREGATES}
         FROM {reference_from} GROUP BY {reference_start}, k"
    );
    let expected = rows(&ctx.sql(&reference).await.unwrap().collect().await.unwrap());
    assert!(expected.len() > 100, "{} reference rows", expected.len());
    assert_eq!(actual.len(), expected.len(), "row counts");
    for (a, e) in actual.iter().zip(&expected) {
        assert!(
            a.iter().zip(e).all(|(x, y)| close(x, y)),
            "\nengine:    {a:?}\nreference: {e:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tumbling_windows() {
    compare(
        "TUMBLE(t, INTERVAL '10' SECOND)",
        "events",
        "(t / 10000) * 10000",
    )
    .await;
}

#[tokio::test]
async fn sliding_windows_merge_panes() {
    compare(
        "HOP(t, INTERVAL '4' SECOND, INTERVAL '10' SECOND)",
        "(SELECT events.*, (t / 2000 - o.i) * 2000 AS p FROM events CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS o(i)) AS e
         WHERE p % 4000 = 0 AND p + 10000 > t",
        "p",
    )
    .await;
}
