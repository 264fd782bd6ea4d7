//! The Prometheus sink against a real Pushgateway and a real Prometheus
//! server (Debian's packages, installed by scripts/tools.sh) on loopback:
//! the gauges Prometheus ends up with equal the newest window of every key
//! in the same run's Parquet output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use crate::common::{self, prometheus};

const LIMIT: Duration = Duration::from_secs(120);

/// Series expire after this many windows behind the newest.
const EXPIRE_AFTER_WINDOWS: i64 = 3;

/// W2's value columns, as `pipelines.yaml` exposes them.
const VALUES: [&str; 5] = [
    "task_events",
    "total_cpu_request",
    "total_memory_request",
    "avg_cpu_request",
    "avg_memory_request",
];

fn column_f64(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let column = cast(batch.column_by_name(name).unwrap(), &DataType::Float64).unwrap();
    column
        .as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect()
}

/// Per machine, the values of its newest window, for the machines whose
/// newest window is within `EXPIRE_AFTER_WINDOWS` windows of the newest of all.
fn newest_windows(batches: &[RecordBatch]) -> BTreeMap<String, Vec<f64>> {
    let mut newest: BTreeMap<String, (i64, Vec<f64>)> = BTreeMap::new();
    for batch in batches {
        let ends = common::millis(batch, "window_end");
        let machines = cast(
            batch.column_by_name("machine_id").unwrap(),
            &DataType::Int64,
        )
        .unwrap();
        let machines = machines.as_primitive::<Int64Type>();
        let values: Vec<Vec<f64>> = VALUES.iter().map(|v| column_f64(batch, v)).collect();
        for row in 0..batch.num_rows() {
            let machine = machines.value(row).to_string();
            let row_values = values.iter().map(|v| v[row]).collect();
            match newest.get(&machine) {
                Some((end, _)) if *end >= ends[row] => {}
                _ => {
                    newest.insert(machine, (ends[row], row_values));
                }
            }
        }
    }
    let last = newest.values().map(|(end, _)| *end).max().unwrap_or(0);
    newest
        .into_iter()
        .filter(|(_, (end, _))| *end >= last - EXPIRE_AFTER_WINDOWS * 60_000)
        .map(|(machine, (_, values))| (machine, values))
        .collect()
}

#[test]
fn window_results_pushed_to_the_pushgateway_reach_prometheus_as_the_newest_windows() {
    let dir = common::scratch_dir("prometheus_push");
    let Some(pushgateway) = prometheus::pushgateway() else {
        return;
    };
    let Some(server) = prometheus::prometheus(&dir.join("prometheus"), &[&pushgateway.address])
    else {
        return;
    };
    let events = common::trace_slice("task_events", 20_000, &dir.join("task_events.csv"));
    let sql = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("queries/resource_usage.sql");
    let config = dir.join("pipelines.yaml");
    std::fs::write(
        &config,
        format!(
            "pipelines:
  p:
    sources:
{}    queries:
      - name: resource_usage
        sql: {}
        sinks:
          - parquet: {{}}
          - prometheus:
              values: [{}]
              labels: [machine_id]
              expire_after_windows: {EXPIRE_AFTER_WINDOWS}
              push: {{ url: 'http://{}', job: w2 }}
",
            common::task_events_source_yaml(&format!(
                "replay: {{ path: '{}', batch_rows: 1000 }}",
                events.display()
            )),
            sql.display(),
            VALUES.join(", "),
            pushgateway.address,
        ),
    )
    .unwrap();
    let out = dir.join("out");
    common::assert_ok(&common::output_within(
        common::run_p(&config, &out, &[]),
        LIMIT,
    ));

    let expected = newest_windows(&common::read_parts(&out.join("resource_usage")));
    assert!(expected.len() > 10, "{} machines", expected.len());
    for (v, value) in VALUES.iter().enumerate() {
        let expr = format!("resource_usage_{value}{{job=\"w2\",pipeline=\"p\"}}");
        let found = prometheus::wait_for(&server.address, &expr, expected.len(), LIMIT);
        let got: BTreeMap<String, f64> = found
            .iter()
            .map(|s| {
                let machine = s["metric"]["machine_id"].as_str().unwrap().to_string();
                let value: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
                (machine, value)
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{expr}: {found:?}");
        for (machine, values) in &expected {
            let want = values[v];
            let have = got[machine];
            assert!(
                have == want || (have - want).abs() <= 1e-9 * want.abs(),
                "{expr} of machine {machine}: Prometheus has {have}, the Parquet output {want}"
            );
        }
    }

    // The W2 dashboard's panels all show data.
    for expr in prometheus::dashboard_expressions("w2_resource_usage.json") {
        let found = prometheus::query(&server.address, &expr);
        assert!(
            !found.is_empty(),
            "W2 dashboard panel `{expr}` shows no data"
        );
    }

    // Bounded cardinality: with `max_series: 5` only five machines are kept,
    // and the rows of the others are counted, not exposed.
    let small = std::fs::read_to_string(&config)
        .unwrap()
        .replace("job: w2 }", "job: w2_small }\n              max_series: 5");
    std::fs::write(&config, small).unwrap();
    let summary = common::assert_ok(&common::output_within(
        common::run_p(&config, &out, &["--from-scratch"]),
        LIMIT,
    ));
    // Kept: the first five machines seen, less those expired since.
    let kept: usize = summary
        .split(" series, ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no series count in {summary}"));
    assert!(
        (1..=5).contains(&kept) && summary.contains("beyond max_series dropped"),
        "{summary}"
    );
    let expr = "resource_usage_total_cpu_request{job=\"w2_small\"}";
    prometheus::wait_for(&server.address, expr, kept, LIMIT);
    std::thread::sleep(Duration::from_secs(2));
    let found = prometheus::query(&server.address, expr);
    assert_eq!(found.len(), kept, "{found:?}");
}
