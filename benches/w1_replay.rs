//! W1 throughput and memory: the repository's W1 pipeline over the real
//! Google trace (../shared/datasets, 2.6 M rows; the bundled sample when the
//! trace is absent), from file replay to Parquet.
//!
//! Run with `cargo bench --bench w1_replay`. Reports events/s, peak RSS, and
//! the ratio to replaying (reading + decoding) the same files with no query.

use std::path::PathBuf;
use std::time::Instant;

use streamsql::config::SourceInput;
use streamsql::runtime::{Pipeline, RunOptions};
use streamsql::source::FileReplay;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trace = repo.join("../shared/datasets/google-2011/task_events");
    let mut loaded = streamsql::config::load(&repo.join("pipelines.yaml")).expect("pipelines.yaml");
    let pipeline = loaded.file.pipelines.get_mut("task_failures").expect("W1");
    if trace.is_dir() {
        let SourceInput::Replay(replay) = &mut pipeline.sources[0].input else {
            panic!("W1 replays files")
        };
        replay.path = format!("{}/part-*.csv.gz", trace.display());
        println!("input: the real trace, {}", trace.display());
    } else {
        println!("input: the bundled sample (../shared/datasets absent)");
    }
    pipeline.queries[0]
        .sinks
        .retain(|s| matches!(s, streamsql::config::SinkConfig::Parquet(_)));
    let source = pipeline.sources[0].clone();
    let output = std::env::temp_dir().join(format!("streamsql-bench-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Decoding on one thread, then on as many as the machine has cores:
    // the same rows out, in one run of the benchmark.
    let cores = pipeline.parallelism_or_cores();
    let mut runs = Vec::new();
    for parallelism in [1, cores] {
        let options = RunOptions {
            output_dir: Some(output.clone()),
            progress: false,
            from_scratch: true,
            parallelism: Some(parallelism),
            ..Default::default()
        };
        let started = Instant::now();
        let summary = runtime.block_on(async {
            let runner = Pipeline::build(&loaded, "task_failures", &options)
                .await
                .expect("build");
            runner.run(&options).await.expect("run")
        });
        runs.push((parallelism, started.elapsed().as_secs_f64(), summary));
    }
    let rss = peak_rss_mb();
    let (_, pipeline_secs, summary) = runs.last().expect("a run");
    let pipeline_secs = *pipeline_secs;

    let started = Instant::now();
    let decoded = runtime.block_on(async {
        let SourceInput::Replay(replay_config) = &source.input else {
            panic!("W1 replays files")
        };
        let mut replay = FileReplay::start(&source, replay_config, &loaded.base_dir, None, cores)
            .expect("replay");
        let mut rows = 0;
        while let Some(batch) = replay.next_batch().await {
            rows += batch.expect("batch").rows.num_rows();
        }
        rows
    });
    let replay_secs = started.elapsed().as_secs_f64();

    // Checkpoint cost at full W1 state: stop half-way (windows open), which
    // writes a checkpoint, then restore it as a restart would.
    let half = summary.events_in / 8192 / 2;
    let stop = RunOptions {
        output_dir: Some(output.clone()),
        from_scratch: true,
        stop_after_batches: Some(half),
        ..Default::default()
    };
    let (stopped, restored) = runtime.block_on(async {
        let runner = Pipeline::build(&loaded, "task_failures", &stop)
            .await
            .expect("build");
        let stopped = runner.run(&stop).await.expect("run");
        let resume = RunOptions {
            output_dir: Some(output.clone()),
            ..Default::default()
        };
        let runner = Pipeline::build(&loaded, "task_failures", &resume)
            .await
            .expect("restore");
        (stopped, runner.restored().cloned().expect("restored"))
    });
    let _ = std::fs::remove_dir_all(&output);

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} cores");
    for (parallelism, secs, summary) in &runs {
        println!(
            "W1 pipeline, parallelism {parallelism}: {} events in {secs:.2} s = {:.0} events/s, \
             {} rows out",
            summary.events_in,
            summary.events_in as f64 / secs,
            summary.rows_out.iter().map(|(_, n)| n).sum::<u64>(),
        );
    }
    println!(
        "speed-up of parallelism {cores} over 1: {:.2}; peak RSS {rss:.0} MB",
        runs[0].1 / pipeline_secs
    );
    println!(
        "replay alone (read + decode on {cores} threads, no query): {decoded} rows in \
         {replay_secs:.2} s = {:.0} rows/s",
        decoded as f64 / replay_secs
    );
    println!(
        "pipeline / replay-alone throughput ratio: {:.2}",
        replay_secs / pipeline_secs
    );
    println!(
        "checkpoint of W1 state after {} events ({} state groups): {:.0} KB written in {} ms, \
         restored in {} ms",
        stopped.events_in,
        stopped.state_groups,
        restored.bytes as f64 / 1e3,
        stopped.checkpoints.last_duration.as_millis(),
        restored.duration.as_millis()
    );
}
