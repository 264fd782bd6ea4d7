//! What a user of a pipeline sees: bad input in dead letters, late rows
//! queryable by SQL, chained queries, JSON sources, and config or SQL errors
//! that name the file, line and fix.

use crate::common;

use std::path::{Path, PathBuf};

use streamsql::metrics::Summary;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;

pub(crate) fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Writes `yaml` as the pipelines file in `dir`, runs pipeline `p`, and
/// returns its summary and output folder.
pub(crate) async fn run_pipeline(dir: &Path, yaml: &str) -> (Summary, PathBuf) {
    write(dir, "pipelines.yaml", yaml);
    let out = dir.join("out");
    let summary = common::run(&dir.join("pipelines.yaml"), "p", &out).await;
    (summary, out)
}

/// One source block: columns `t` (event time, ms), `k` string, `v` int64.
pub(crate) fn source_yaml(
    name: &str,
    format: &str,
    data: &str,
    time_type: &str,
    delay: &str,
) -> String {
    format!(
        "      - name: {name}
        format: {format}
        replay: {{ path: {data}, batch_rows: 3 }}
        columns:
          - {{ name: t, type: {time_type} }}
          - {{ name: k, type: string }}
          - {{ name: v, type: int64 }}
        event_time: {{ column: t, unit: ms }}
        watermark_delay: {delay}
"
    )
}

/// Pipeline `p` over `sources` (blocks from [`source_yaml`]) with `queries`.
pub(crate) fn pipeline_with(sources: &str, queries: &str) -> String {
    format!("pipelines:\n  p:\n    sources:\n{sources}    trigger: 0s\n    queries:\n{queries}")
}

/// Pipeline `p` over one source `events` (delay 1 s) with `queries`.
pub(crate) fn pipeline_yaml(format: &str, data: &str, time_type: &str, queries: &str) -> String {
    pipeline_with(
        &source_yaml("events", format, data, time_type, "1s"),
        queries,
    )
}

pub(crate) fn int_column(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[tokio::test]
async fn bad_rows_become_dead_letters_and_every_good_row_is_processed() {
    let dir = common::scratch_dir("dead-letters");
    write(
        &dir,
        "events.csv",
        "1000,a,1\n2000,b,not-a-number\n3000,c,3\n4000,d,4,extra\n,e,5\n6000,f,6\n7000,g,7\n",
    );
    write(&dir, "all.sql", "SELECT t, k, v FROM events");
    let queries = "      - { name: all_rows, sql: all.sql, sinks: [ { parquet: {} } ] }\n";
    let (summary, out) =
        run_pipeline(&dir, &pipeline_yaml("csv", "events.csv", "int64", queries)).await;
    let rows = common::read_parts(&out.join("all_rows"));
    assert_eq!(
        int_column(&rows, "v"),
        vec![1, 3, 6, 7],
        "every good row, in order"
    );
    assert_eq!(summary.events_in, 4);
    assert_eq!(summary.dead_letters.values().sum::<u64>(), 3);
    let letters = common::dead_letters(&out);
    let positions: Vec<String> = letters
        .iter()
        .map(|l| l["position"].as_str().unwrap().to_string())
        .collect();
    assert!(
        positions.iter().any(|p| p.ends_with("events.csv:2")),
        "{positions:?}"
    );
    assert!(
        positions.iter().any(|p| p.ends_with("events.csv:4")),
        "{positions:?}"
    );
    assert!(
        positions.iter().any(|p| p.ends_with("events.csv:5")),
        "{positions:?}"
    );
    let by_line = |n: &str| {
        letters
            .iter()
            .find(|l| l["position"].as_str().unwrap().ends_with(n))
            .unwrap()
    };
    assert!(
        by_line(":2")["reason"]
            .as_str()
            .unwrap()
            .contains("not-a-number")
    );
    assert_eq!(by_line(":2")["raw"], "2000,b,not-a-number");
    assert!(
        by_line(":5")["reason"]
            .as_str()
            .unwrap()
            .contains("event time")
    );
}

#[tokio::test]
async fn late_rows_are_counted_and_selectable_from_sql() {
    let dir = common::scratch_dir("late");
    // Batches of 3: the watermark reaches 9 s after the first, so the row at
    // 1.5 s (its window [1 s, 2 s) closed) is late; 9.5 s is not.
    write(
        &dir,
        "events.csv",
        "1000,a,1\n5000,a,2\n10000,a,3\n1500,a,4\n9500,a,5\n11000,a,6\n",
    );
    write(
        &dir,
        "counts.sql",
        "SELECT window_start, k, count(*) AS n, sum(v) AS total FROM events GROUP BY TUMBLE(t, INTERVAL '1' SECOND), k",
    );
    write(
        &dir,
        "late.sql",
        "SELECT t, v, 'late' AS label FROM events_late",
    );
    let queries = "      - { name: counts, sql: counts.sql, sinks: [ { parquet: {} } ] }
      - { name: late_alerts, sql: late.sql, sinks: [ { parquet: {} } ] }\n";
    let (summary, out) =
        run_pipeline(&dir, &pipeline_yaml("csv", "events.csv", "int64", queries)).await;
    assert_eq!(summary.late, 1);
    assert_eq!(
        int_column(&common::read_parts(&out.join("late_alerts")), "v"),
        vec![4]
    );
    assert_eq!(
        int_column(&common::read_parts(&out.join("events_late")), "v"),
        vec![4]
    );
    let counts = common::read_parts(&out.join("counts"));
    assert_eq!(
        int_column(&counts, "total").iter().sum::<i64>(),
        1 + 2 + 3 + 5 + 6
    );
}

#[tokio::test]
async fn a_rule_query_reads_window_results() {
    let dir = common::scratch_dir("chained");
    write(
        &dir,
        "events.csv",
        "100,a,1\n200,a,2\n300,b,3\n1100,a,4\n5000,b,5\n",
    );
    write(
        &dir,
        "counts.sql",
        "SELECT window_start, k, count(*) AS n FROM events GROUP BY TUMBLE(t, INTERVAL '1' SECOND), k",
    );
    write(
        &dir,
        "alerts.sql",
        "SELECT window_start, k, n, CASE WHEN n >= 2 THEN 'busy' ELSE 'quiet' END AS label FROM counts WHERE n >= 1",
    );
    let queries = "      - { name: counts, sql: counts.sql, emit: final }
      - { name: alerts, sql: alerts.sql, sinks: [ { parquet: {} } ] }\n";
    let (_, out) = run_pipeline(&dir, &pipeline_yaml("csv", "events.csv", "int64", queries)).await;
    let alerts = common::read_parts(&out.join("alerts"));
    let labels: Vec<(String, i64, String)> = alerts
        .iter()
        .flat_map(|b| {
            let k = b.column_by_name("k").unwrap().as_string::<i32>().clone();
            let n = b
                .column_by_name("n")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let l = b
                .column_by_name("label")
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..b.num_rows())
                .map(move |r| (k.value(r).to_string(), n.value(r), l.value(r).to_string()))
        })
        .collect();
    let mut labels = labels;
    labels.sort();
    assert_eq!(
        labels,
        vec![
            ("a".into(), 1, "quiet".into()),
            ("a".into(), 2, "busy".into()),
            ("b".into(), 1, "quiet".into()),
            ("b".into(), 1, "quiet".into()),
        ]
    );
}

#[tokio::test]
async fn json_sources_decode_timestamps_and_dead_letter_bad_lines() {
    let dir = common::scratch_dir("json");
    write(
        &dir,
        "events.jsonl",
        concat!(
            "{\"t\": \"2024-05-01T10:00:01Z\", \"k\": \"a\", \"v\": 1}\n",
            "{\"t\": \"2024-05-01T10:00:02Z\", \"k\": \"a\", \"v\": 2, \"extra\": true}\n",
            "{\"t\": \"2024-05-01T10:00:03Z\", \"k\": \"a\", \"v\": \n",
            "{\"t\": \"2024-05-01T10:01:04Z\", \"k\": \"b\", \"v\": 4}\n",
        ),
    );
    write(
        &dir,
        "m.sql",
        "SELECT window_start, window_end, k, sum(v) AS total FROM events GROUP BY TUMBLE(t, INTERVAL '1' MINUTE), k",
    );
    let queries = "      - { name: per_minute, sql: m.sql, sinks: [ { parquet: {} } ] }\n";
    let (summary, out) = run_pipeline(
        &dir,
        &pipeline_yaml("json", "events.jsonl", "timestamp", queries),
    )
    .await;
    assert_eq!(summary.events_in, 3);
    assert_eq!(summary.dead_letters.values().sum::<u64>(), 1);
    let rows = common::read_parts(&out.join("per_minute"));
    assert_eq!(int_column(&rows, "total"), vec![3, 4]);
}

/// Runs `check` on a pipelines file and returns the error text.
pub(crate) async fn check_error(dir: &Path) -> String {
    let loaded = match streamsql::config::load(&dir.join("pipelines.yaml")) {
        Ok(loaded) => loaded,
        Err(e) => return e.to_string(),
    };
    match streamsql::plan::plan_pipeline(&loaded, "p", 1).await {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn config_and_sql_errors_name_file_line_and_fix() {
    let dir = common::scratch_dir("errors");
    write(&dir, "ok.sql", "SELECT t FROM events");
    let queries = "      - { name: q, sql: ok.sql }\n";

    // A typo in a key.
    let yaml = pipeline_yaml("csv", "x.csv", "int64", queries)
        .replace("watermark_delay", "watermark_dealy");
    write(&dir, "pipelines.yaml", &yaml);
    let error = check_error(&dir).await;
    assert!(error.contains("pipelines.yaml:12:"), "{error}");
    assert!(error.contains("unknown field `watermark_dealy`"), "{error}");

    // An event-time column that is not declared.
    let yaml = pipeline_yaml("csv", "x.csv", "int64", queries).replace("column: t,", "column: ts,");
    write(&dir, "pipelines.yaml", &yaml);
    let error = check_error(&dir).await;
    assert!(error.contains("pipelines.yaml:11"), "{error}");
    assert!(
        error.contains("event_time column `ts`") && error.contains("fix: use one of: t, k, v"),
        "{error}"
    );

    // SQL: an unknown column, a bad window, an unbounded aggregate; all reported at once.
    write(
        &dir,
        "a.sql",
        "SELECT window_start, count(*)\nFROM events\nGROUP BY TUMBLE(t, INTERVAL '1' SECOND), kk",
    );
    write(
        &dir,
        "b.sql",
        "SELECT count(*)\nFROM events\nGROUP BY HOP(t, INTERVAL '1' MINUTE, INTERVAL '1' SECOND)",
    );
    write(&dir, "c.sql", "SELECT k, count(*) FROM events GROUP BY k");
    write(
        &dir,
        "d.sql",
        "SELECT k, count(*) FROM events\nWHERE window_start > 0 GROUP BY TUMBLE(t, INTERVAL '1' SECOND), k",
    );
    let queries = "      - { name: a, sql: a.sql }\n      - { name: b, sql: b.sql }\n      - { name: c, sql: c.sql }\n      - { name: d, sql: d.sql }\n";
    write(
        &dir,
        "pipelines.yaml",
        &pipeline_yaml("csv", "x.csv", "int64", queries),
    );
    let error = check_error(&dir).await;
    assert!(
        error.contains("a.sql:3:42") && error.contains("Did you mean 'events.k'"),
        "{error}"
    );
    assert!(
        error.contains("b.sql:3:10") && error.contains("smaller than its slide"),
        "{error}"
    );
    assert!(
        error.contains("c.sql:1") && error.contains("GROUP BY without a window"),
        "{error}"
    );
    assert!(
        error.contains("d.sql:2:7") && error.contains("`window_start` in WHERE"),
        "{error}"
    );
}

#[tokio::test]
async fn sources_and_windowed_queries_keep_their_own_watermarks_and_lateness() {
    let dir = common::scratch_dir("multi");
    // Source `events` (batches of 3, no delay): after the first batch the
    // watermark is 3.5 s. Then 2.5 s is late for the 1 s tumbling windows
    // ([2 s, 3 s) closed) but not for the 4 s windows sliding every 2 s
    // ([0 s, 4 s) and [2 s, 6 s) are open).
    write(
        &dir,
        "events.csv",
        "1000,x,1\n3500,x,2\n3400,x,4\n2500,x,3\n",
    );
    write(&dir, "other.csv", "1000,y,10\n900000,y,20\n");
    write(
        &dir,
        "tumble.sql",
        "SELECT window_start, sum(v) AS total FROM events GROUP BY TUMBLE(t, INTERVAL '1' SECOND)",
    );
    write(
        &dir,
        "hop.sql",
        "SELECT window_start, sum(v) AS total FROM events GROUP BY HOP(t, INTERVAL '2' SECOND, INTERVAL '4' SECOND)",
    );
    write(
        &dir,
        "other.sql",
        "SELECT window_start, sum(v) AS total FROM other GROUP BY TUMBLE(t, INTERVAL '1' MINUTE)",
    );
    let sources = source_yaml("events", "csv", "events.csv", "int64", "0s")
        + &source_yaml("other", "csv", "other.csv", "int64", "0s");
    let yaml = pipeline_with(
        &sources,
        "      - { name: tumbling, sql: tumble.sql, sinks: [ { parquet: {} } ] }
      - { name: hopping, sql: hop.sql, sinks: [ { parquet: {} } ] }
      - { name: other_minutes, sql: other.sql, sinks: [ { parquet: {} } ] }\n",
    );
    let (summary, out) = run_pipeline(&dir, &yaml).await;
    assert_eq!(summary.events_in, 6);
    assert_eq!(summary.late, 1);
    assert_eq!(
        int_column(&common::read_parts(&out.join("events_late")), "v"),
        vec![3]
    );
    assert!(common::read_parts(&out.join("other_late")).is_empty());
    // Tumbling: 1 s -> 1, 3 s -> 2 + 4; the late 3 is in no window.
    let tumbling = common::read_parts(&out.join("tumbling"));
    assert_eq!(int_column(&tumbling, "total"), vec![1, 6]);
    // Hopping: [-2 s, 2 s) -> 1 (closed before 2.5 s arrived),
    // [0 s, 4 s) -> 1 + 2 + 4 + 3, [2 s, 6 s) -> 2 + 4 + 3.
    let hopping = common::read_parts(&out.join("hopping"));
    assert_eq!(int_column(&hopping, "total"), vec![1, 10, 9]);
    assert_eq!(
        int_column(&common::read_parts(&out.join("other_minutes")), "total"),
        vec![10, 20]
    );
}

#[tokio::test]
async fn window_function_param_and_regex_errors_name_file_line_and_fix() {
    let dir = common::scratch_dir("over-errors");
    write(
        &dir,
        "w.sql",
        "SELECT window_start, k, sum(v) AS s FROM events GROUP BY TUMBLE(t, INTERVAL '1' SECOND), k",
    );
    let cases = [
        (
            "lead.sql",
            "SELECT window_start, k,\n  lead(s) OVER (PARTITION BY k ORDER BY window_start) AS next FROM w",
            "lead.sql:2:",
            "lead() reads later windows",
        ),
        (
            "range.sql",
            "SELECT k, avg(s) OVER (PARTITION BY k ORDER BY window_start) AS a FROM w",
            "range.sql:1",
            "without a bound",
        ),
        (
            "rank.sql",
            "SELECT k, row_number() OVER (PARTITION BY k ORDER BY window_start) AS n FROM w",
            "rank.sql:1",
            "lag(window_start, N) OVER (...) IS NOT NULL",
        ),
        (
            "raw.sql",
            "SELECT t, lag(v) OVER (PARTITION BY k ORDER BY t) AS p FROM events",
            "raw.sql:1",
            "is a stream of events",
        ),
        (
            "param.sql",
            "SELECT k, s FROM w\nWHERE s > $limit",
            "param.sql:2:11",
            "parameter `$limit` has no value",
        ),
        (
            "agg.sql",
            "SELECT k, count(*) AS n, lag(k) OVER (PARTITION BY k ORDER BY k) AS p FROM w GROUP BY k",
            "agg.sql:1",
            "GROUP BY without a window",
        ),
        (
            "inwin.sql",
            "SELECT window_start, k, lag(k) OVER (PARTITION BY k ORDER BY window_start) AS p\nFROM events GROUP BY TUMBLE(t, INTERVAL '1' SECOND), k",
            "inwin.sql:2:",
            "would see one window's result at a time",
        ),
        // q7: events, filtered; q8 may not treat them as window results.
        (
            "filtered.sql",
            "SELECT t, k, v FROM events WHERE v > 0",
            "",
            "",
        ),
        (
            "chained.sql",
            "SELECT t, lag(v) OVER (PARTITION BY k ORDER BY t) AS p FROM q7",
            "chained.sql:1",
            "`q7` is a stream of events",
        ),
    ];
    let mut queries = "      - { name: w, sql: w.sql }\n".to_string();
    for (i, (file, sql, _, _)) in cases.iter().enumerate() {
        write(&dir, file, sql);
        queries.push_str(&format!("      - {{ name: q{i}, sql: {file} }}\n"));
    }
    write(
        &dir,
        "pipelines.yaml",
        &pipeline_yaml("csv", "x.csv", "int64", &queries),
    );
    let error = check_error(&dir).await;
    for (_, _, at, message) in cases {
        assert!(
            error.contains(at) && error.contains(message),
            "{at} {message}:\n{error}"
        );
    }

    // A regex source must name a group for every column.
    let yaml = pipeline_yaml(
        "regex",
        "x.log",
        "int64",
        "      - { name: w, sql: w.sql }\n",
    )
    .replace(
        "format: regex\n",
        "format: regex\n        regex: '^(?P<t>\\d+) (?P<k>\\w+)$'\n",
    );
    write(&dir, "pipelines.yaml", &yaml);
    let error = check_error(&dir).await;
    assert!(
        error.contains("pipelines.yaml:")
            && error.contains("column `v` has no named group")
            && error.contains("(?P<v>...)"),
        "{error}"
    );
}
