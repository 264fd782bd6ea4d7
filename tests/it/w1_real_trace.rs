//! W1 over the real Google trace (2.6 M rows in ../shared/datasets) equals a
//! batch evaluation of the same metrics by DataFusion SQL, with each event
//! explicitly expanded into the four 2-minute windows that hold it.

use crate::common;

use std::path::PathBuf;

use datafusion::prelude::{ParquetReadOptions, SessionContext};

fn trace_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/google-2011/task_events");
    dir.is_dir().then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w1_equals_batch_sql_over_the_real_trace() {
    let Some(trace) = trace_dir() else {
        eprintln!("SKIPPED: ../shared/datasets/google-2011/task_events is not present");
        return;
    };
    let scratch = common::scratch_dir("w1-real");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));

    // The engine: the repository's own W1 pipeline, pointed at the real trace.
    let mut loaded =
        streamsql::config::load(&repo.join("pipelines.yaml")).expect("pipelines.yaml loads");
    let pipeline = loaded
        .file
        .pipelines
        .get_mut("task_failures")
        .expect("W1 pipeline");
    let streamsql::config::SourceInput::Replay(replay) = &mut pipeline.sources[0].input else {
        panic!("W1 replays files")
    };
    replay.path = format!("{}/part-*.csv.gz", trace.display());
    pipeline.queries[0]
        .sinks
        .retain(|s| matches!(s, streamsql::config::SinkConfig::Parquet(_)));
    let output = scratch.join("out");
    let summary = common::run_loaded(&loaded, "task_failures", &output).await;
    eprintln!("{summary}");
    assert!(
        summary.events_in > 2_500_000,
        "replayed {} events",
        summary.events_in
    );
    assert_eq!(
        summary.late, 0,
        "the trace is time-ordered: nothing is late"
    );
    assert!(
        summary.dead_letters.is_empty(),
        "dead letters: {:?}",
        summary.dead_letters
    );

    // The reference: DataFusion batch SQL over the decompressed CSV.
    let ctx = SessionContext::new();
    let parts = common::trace_parts("task_events", usize::MAX);
    common::register_csv_gz(&ctx, "task_events", common::TASK_EVENTS, &parts, &scratch).await;
    ctx.register_parquet(
        "actual",
        output.join("task_failure_metrics").to_str().unwrap(),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    ctx.sql(
        "CREATE VIEW expected AS
         WITH e AS (
           SELECT machine_id, job_id, event_type, time / 1000 AS t
           FROM task_events WHERE machine_id IS NOT NULL AND job_id IS NOT NULL
         ), w AS (
           SELECT e.*, (t / 30000 - k.i) * 30000 AS ws
           FROM e CROSS JOIN (VALUES (0), (1), (2), (3)) AS k(i)
         )
         SELECT ws AS window_start, ws + 120000 AS window_end, machine_id, job_id,
                count(*) AS total_events,
                sum(CASE WHEN event_type = 3 THEN 1 ELSE 0 END) AS fail_count,
                sum(CASE WHEN event_type = 2 THEN 1 ELSE 0 END) AS evict_count,
                sum(CASE WHEN event_type = 5 THEN 1 ELSE 0 END) AS kill_count,
                sum(CASE WHEN event_type IN (2, 3, 5) THEN 1 ELSE 0 END) AS total_fail_count,
                CAST(sum(CASE WHEN event_type IN (2, 3, 5) THEN 1 ELSE 0 END) AS DOUBLE) / count(*) AS fail_rate
         FROM w GROUP BY ws, machine_id, job_id",
    )
    .await
    .unwrap();
    ctx.sql(
        "CREATE VIEW actual_ms AS
         SELECT CAST(window_start AS BIGINT) AS window_start,
                CAST(window_end AS BIGINT) AS window_end, machine_id, job_id, total_events,
                fail_count, evict_count, kill_count, total_fail_count, fail_rate
         FROM actual",
    )
    .await
    .unwrap();
    let count = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let array = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .clone();
            array.value(0)
        }
    };
    let expected_rows = count("SELECT count(*) FROM expected").await;
    let actual_rows = count("SELECT count(*) FROM actual_ms").await;
    let distinct_actual = count(
        "SELECT count(*) FROM (SELECT DISTINCT window_start, machine_id, job_id FROM actual_ms)",
    )
    .await;
    let missing =
        count("SELECT count(*) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual_ms)").await;
    let extra =
        count("SELECT count(*) FROM (SELECT * FROM actual_ms EXCEPT SELECT * FROM expected)").await;
    eprintln!(
        "expected {expected_rows} rows, engine wrote {actual_rows}; missing {missing}, extra {extra}"
    );
    assert!(expected_rows > 1_000_000);
    assert_eq!(actual_rows, expected_rows, "row counts differ");
    assert_eq!(
        distinct_actual, actual_rows,
        "a window was emitted twice in final mode"
    );
    assert_eq!(
        missing, 0,
        "rows of the batch answer the engine did not emit"
    );
    assert_eq!(
        extra, 0,
        "rows the engine emitted that the batch answer lacks"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
