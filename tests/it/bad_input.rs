//! Bad input and bad settings: each gets a dead letter with its reason or a
//! refusal before start that names the file and line, never a run that
//! "succeeds" with wrong answers.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use crate::common;
use crate::pipeline_behaviour::{
    check_error, int_column, pipeline_with, pipeline_yaml, run_pipeline, source_yaml, write,
};

const LIMIT: Duration = Duration::from_secs(120);

/// A one-minute count and sum per key over source `events`.
const PER_MINUTE: &str = "SELECT window_start, k, count(*) AS n, sum(v) AS total FROM events \
                          GROUP BY TUMBLE(t, INTERVAL '1' MINUTE), k";

/// The reasons of the dead letters in `out`, sorted.
fn reasons(out: &Path) -> Vec<String> {
    let mut found: Vec<String> = common::dead_letters(out)
        .iter()
        .map(|l| l["reason"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn event_times_out_of_range_are_dead_letters_and_later_rows_are_unaffected() {
    let dir = common::scratch_dir("time-range");
    // Seconds: i64::MAX overflows when made milliseconds; 9223372036854775
    // does not, but is far past the year 9999; i64::MIN is before year 0.
    write(
        &dir,
        "events.csv",
        "1,a,1\n9223372036854775807,b,2\n-9223372036854775808,c,3\n2,a,4\n9223372036854775,d,5\n61,a,6\n",
    );
    write(&dir, "m.sql", PER_MINUTE);
    let queries = "      - { name: per_minute, sql: m.sql, sinks: [ { parquet: {} } ] }\n";
    let yaml = pipeline_yaml("csv", "events.csv", "int64", queries).replace("unit: ms", "unit: s");
    let (summary, out) = run_pipeline(&dir, &yaml).await;
    assert_eq!(summary.events_in, 3, "{summary:?}");
    assert_eq!(summary.late, 0, "{summary:?}");
    let rows = common::read_parts(&out.join("per_minute"));
    assert_eq!(int_column(&rows, "n"), vec![2, 1]);
    assert_eq!(int_column(&rows, "total"), vec![5, 6]);
    let reasons = reasons(&out);
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("is outside the years 0000-9999")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn an_event_time_too_far_ahead_of_the_clock_is_a_dead_letter_when_bounded() {
    let dir = common::scratch_dir("time-ahead");
    // 1000 s, then the year 9000, then 2000 s and 70 s past the minute.
    write(
        &dir,
        "events.csv",
        "1000,a,1\n221845392000000,b,2\n2000,a,3\n130000,a,4\n",
    );
    write(&dir, "m.sql", PER_MINUTE);
    let queries = "      - { name: per_minute, sql: m.sql, sinks: [ { parquet: {} } ] }\n";
    let yaml = pipeline_yaml("csv", "events.csv", "int64", queries)
        .replace("unit: ms }", "unit: ms, max_ahead: 1d }");
    let (summary, out) = run_pipeline(&dir, &yaml).await;
    assert_eq!(summary.events_in, 3, "{summary:?}");
    assert_eq!(
        int_column(&common::read_parts(&out.join("per_minute")), "total"),
        vec![4, 4]
    );
    let reasons = reasons(&out);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("ahead of the clock"), "{reasons:?}");
}

#[tokio::test]
async fn a_record_longer_than_max_record_bytes_is_a_dead_letter_unread() {
    let dir = common::scratch_dir("long-line");
    // A 5 MB line between good ones, and one more as the very last line.
    let long = format!("3000,{},9\n", "x".repeat(5 << 20));
    let text = format!("1000,a,1\n{long}2000,a,2\n70000,a,3\n{}", long.trim_end());
    write(&dir, "events.csv", &text);
    write(&dir, "m.sql", PER_MINUTE);
    let queries = "      - { name: per_minute, sql: m.sql, sinks: [ { parquet: {} } ] }\n";
    let yaml = pipeline_yaml("csv", "events.csv", "int64", queries).replace(
        "    watermark_delay: 1s\n",
        "    watermark_delay: 1s\n        max_record_bytes: 4096\n",
    );
    let (summary, out) = run_pipeline(&dir, &yaml).await;
    assert_eq!(summary.events_in, 3, "{summary:?}");
    assert_eq!(
        int_column(&common::read_parts(&out.join("per_minute")), "total"),
        vec![3, 3]
    );
    let letters = common::dead_letters(&out);
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        let reason = letter["reason"].as_str().unwrap();
        assert!(
            reason.contains("longer than max_record_bytes (4096)"),
            "{reason}"
        );
        assert_eq!(letter["raw"].as_str().unwrap().len(), 1024);
    }
    let positions: Vec<&str> = letters
        .iter()
        .map(|l| l["position"].as_str().unwrap())
        .collect();
    assert!(
        positions.iter().any(|p| p.ends_with(":2")) && positions.iter().any(|p| p.ends_with(":5")),
        "{positions:?}"
    );
}

/// `check_error` for pipeline `p` of `yaml`.
async fn refusal(dir: &Path, yaml: &str) -> String {
    write(dir, "pipelines.yaml", yaml);
    check_error(dir).await
}

#[tokio::test]
async fn absurd_settings_are_refused_before_start_with_file_and_line() {
    let dir = common::scratch_dir("absurd");
    write(&dir, "ok.sql", "SELECT t, k FROM events");
    let queries = "      - { name: q, sql: ok.sql }\n";
    let base = pipeline_yaml("csv", "x.csv", "int64", queries);

    let error = refusal(
        &dir,
        &base.replace("batch_rows: 3", "batch_rows: 1152921504606846976"),
    )
    .await;
    assert!(
        error.contains("pipelines.yaml:6")
            && error.contains("batch_rows must be between 1 and 1048576"),
        "{error}"
    );

    let error = refusal(&dir, &base.replace("name: q,", "name: ../../escaped,")).await;
    assert!(
        error.contains("pipelines.yaml:15")
            && error.contains("`../../escaped` is not a valid query name"),
        "{error}"
    );

    let error = refusal(
        &dir,
        &base.replace("watermark_delay: 1s", "watermark_delay: 1000years"),
    )
    .await;
    assert!(
        error.contains("pipelines.yaml:12") && error.contains("at most 100 years"),
        "{error}"
    );

    let error = refusal(
        &dir,
        &base.replace(
            "    watermark_delay: 1s\n",
            "    watermark_delay: 1s\n        max_record_bytes: 0\n",
        ),
    )
    .await;
    assert!(
        error.contains("pipelines.yaml:13") && error.contains("max_record_bytes must be between"),
        "{error}"
    );

    let kafka = base.replace(
        "replay: { path: x.csv, batch_rows: 3 }",
        "kafka: { brokers: '127.0.0.1:1', topic: t, batch_timeout: 0s }",
    );
    let error = refusal(&dir, &kafka).await;
    assert!(
        error.contains("pipelines.yaml:6")
            && error.contains("invalid duration `0s` (it must be longer than zero)"),
        "{error}"
    );

    write(
        &dir,
        "hop.sql",
        "SELECT window_start, count(*) AS n FROM events\nGROUP BY HOP(t, INTERVAL '1' MILLISECOND, INTERVAL '1' DAY)",
    );
    let error = refusal(
        &dir,
        &pipeline_yaml(
            "csv",
            "x.csv",
            "int64",
            "      - { name: q, sql: hop.sql }\n",
        ),
    )
    .await;
    assert!(
        error.contains("hop.sql:2")
            && error.contains("into 86400000 windows")
            && error.contains("at most 1000"),
        "{error}"
    );

    // Two pipelines writing one output directory.
    let two = format!(
        "{}    output_dir: shared\n  other:\n    sources:\n{}    output_dir: shared\n    queries:\n{queries}",
        base.trim_end_matches(queries).replace(
            "    trigger: 0s\n    queries:\n",
            "    queries:\n      - { name: q, sql: ok.sql }\n"
        ),
        source_yaml("events", "csv", "x.csv", "int64", "1s"),
    );
    let error = refusal(&dir, &two).await;
    assert!(
        error.contains("pipelines `other` and `p` share the location")
            || error.contains("pipelines `p` and `other` share the location"),
        "{error}\n{two}"
    );
}

#[test]
fn a_second_run_on_the_same_output_directory_is_refused() {
    let dir = common::scratch_dir("locked");
    write(&dir, "events.csv", "1000,a,1\n2000,b,2\n");
    write(&dir, "all.sql", "SELECT t, k, v FROM events");
    let queries = "      - { name: all_rows, sql: all.sql, sinks: [ { parquet: {} } ] }\n";
    write(
        &dir,
        "pipelines.yaml",
        &pipeline_yaml("csv", "events.csv", "int64", queries),
    );
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Another process holding the lock, as a running `streamsql run` does.
    let held: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".lock"))
        .unwrap();
    held.try_lock().unwrap();
    let refused =
        common::output_within(common::run_p(&dir.join("pipelines.yaml"), &out, &[]), LIMIT);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("is in use by another run"), "{stderr}");
    assert!(
        !out.join("all_rows").exists(),
        "the refused run wrote nothing"
    );
    drop(held);
    common::assert_ok(&common::output_within(
        common::run_p(&dir.join("pipelines.yaml"), &out, &[]),
        LIMIT,
    ));
    assert_eq!(
        common::read_parts(&out.join("all_rows"))
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        2
    );
}

#[test]
fn variables_fill_in_values_and_never_add_keys() {
    let dir = common::scratch_dir("variables");
    write(&dir, "events.csv", "1000,a,1\n2000,b,2\n3000,c,3\n");
    write(&dir, "all.sql", "SELECT t, k, v FROM events");
    let queries = "      - { name: all_rows, sql: all.sql, sinks: [ { parquet: {} } ] }\n";
    let yaml = pipeline_with(
        &source_yaml("events", "csv", "events.csv", "int64", "1s"),
        queries,
    )
    .replace("batch_rows: 3", "batch_rows: ${TEST_ROWS}")
    .replace("  p:\n", "  p:\n    description: ${TEST_DESCRIPTION}\n");
    write(&dir, "pipelines.yaml", &yaml);
    let mut run = common::streamsql(&[
        "--config",
        dir.join("pipelines.yaml").to_str().unwrap(),
        "run",
        "p",
        "--quiet",
    ]);
    // Pasted into the text, this value would move the outputs elsewhere.
    run.env("TEST_ROWS", "2")
        .env("TEST_DESCRIPTION", "x\n    output_dir: elsewhere");
    common::assert_ok(&common::output_within(run, LIMIT));
    assert!(!dir.join("elsewhere").exists());
    let rows = common::read_parts(&dir.join("output/p/all_rows"));
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
}

#[tokio::test]
async fn a_flood_of_bad_lines_spills_to_disk_and_each_is_one_dead_letter() {
    let dir = common::scratch_dir("dead-letter-flood");
    // 30,000 malformed lines of ~100 bytes: about 5 MB of dead letters as
    // JSON, past the 1 MiB kept in memory, then a good row.
    let mut text = String::new();
    for i in 0..30_000 {
        text.push_str(&format!(
            "{},k{i},not-a-number-{}\n",
            1000 + i,
            "x".repeat(60)
        ));
    }
    text.push_str("70000,a,7\n");
    write(&dir, "events.csv", &text);
    write(&dir, "all.sql", "SELECT t, k, v FROM events");
    let queries = "      - { name: all_rows, sql: all.sql, sinks: [ { parquet: {} } ] }\n";
    let yaml = pipeline_yaml("csv", "events.csv", "int64", queries)
        .replace("batch_rows: 3", "batch_rows: 8192");
    let (summary, out) = run_pipeline(&dir, &yaml).await;
    assert_eq!(summary.events_in, 1, "{summary:?}");
    let letters = common::dead_letters(&out);
    assert_eq!(letters.len(), 30_000);
    let positions: std::collections::BTreeSet<&str> = letters
        .iter()
        .map(|l| l["position"].as_str().unwrap())
        .collect();
    assert_eq!(positions.len(), 30_000, "every bad line exactly once");
    // Nothing is left in progress once the epoch is committed.
    let leftovers: Vec<_> = std::fs::read_dir(out.join("dead_letters"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("part-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
