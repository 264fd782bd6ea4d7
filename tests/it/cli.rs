//! The commands a user types, run as the built binary.

use crate::common;

fn streamsql(args: &[&str]) -> std::process::Output {
    common::streamsql(args).output().expect("run streamsql")
}

#[test]
fn the_main_job_runs_on_the_bundled_sample() {
    let out = common::scratch_dir("cli-run");
    let output = streamsql(&[
        "run",
        "task_failures",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("pipeline task_failures: 120000 events"),
        "{stdout}"
    );
    assert!(stdout.contains("dead letters: none"), "{stdout}");
    assert!(!common::read_parts(&out.join("task_failure_metrics")).is_empty());
}

#[test]
fn check_and_explain_accept_the_repository_pipelines() {
    let check = streamsql(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let explain = streamsql(&["explain", "task_failures"]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains(
            "window aggregate HOP(slide 30s, size 2m) on `time`, keys [machine_id, job_id]"
        ) && text.contains("emit final")
            && text.contains("state: partial aggregates per pane and key")
            && text.contains("(bounded by the watermark)"),
        "{text}"
    );
    assert!(text.contains("sinks: parquet"), "{text}");
    let rules = streamsql(&["explain", "web_logs"]);
    let text = String::from_utf8_lossy(&rules.stdout);
    assert!(
        text.contains("query response_time_anomalies (reads service_metrics)")
            && text.contains(
                "window functions over each key's earlier rows, partitioned by [service], ordered by window_start"
            )
            && text.contains("state: the newest 10 rows per key"),
        "{text}"
    );
    // Every query says what its state holds and what bounds it, or that it keeps none.
    let queries = text.matches("\nquery ").count() + usize::from(text.starts_with("query "));
    assert_eq!(text.matches("  state: ").count(), queries, "{text}");
    assert!(
        text.contains("row-local: each row on its own") && text.contains("state: none"),
        "{text}"
    );
    let live = streamsql(&["explain", "task_failures_live"]);
    let text = String::from_utf8_lossy(&live.stdout);
    assert!(
        text.contains("sinks: elasticsearch http://127.0.0.1:9200 index task-failures-{window_start:%Y.%m.%d} _id [window_start, machine_id, job_id]"),
        "{text}"
    );
}

#[test]
fn a_bad_config_fails_before_starting_and_says_where() {
    let dir = common::scratch_dir("cli-bad");
    std::fs::write(
        dir.join("pipelines.yaml"),
        "pipelines:\n  p:\n    sources: []\n    queries: []\n    trigger: soon\n",
    )
    .unwrap();
    let output = streamsql(&[
        "-c",
        dir.join("pipelines.yaml").to_str().unwrap(),
        "run",
        "p",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("pipelines.yaml:5:") && stderr.contains("invalid duration `soon`"),
        "{stderr}"
    );
}

#[test]
fn query_reads_the_parquet_outputs_by_query_name() {
    let out = common::scratch_dir("cli-query");
    let run = streamsql(&[
        "run",
        "task_failures",
        "--quiet",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    let stdout = String::from_utf8_lossy(&run.stdout);
    let rows_out: &str = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("query task_failure_metrics: "))
        .and_then(|rest| rest.split(' ').next())
        .expect("rows out in the summary");
    let query = streamsql(&[
        "query",
        "--output",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n, sum(total_events) AS events FROM task_failure_metrics",
    ]);
    let text = String::from_utf8_lossy(&query.stdout);
    assert!(
        query.status.success(),
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("n,events"));
    let values: Vec<&str> = lines.next().expect("a row").split(',').collect();
    assert_eq!(values[0], rows_out);
}

#[test]
fn logs_can_be_json_lines_with_fields() {
    let out = common::scratch_dir("cli-json-logs");
    let mut command = common::streamsql(&[
        "--log-format",
        "json",
        "run",
        "task_failures",
        "--quiet",
        "--from-scratch",
        "--output",
        out.to_str().unwrap(),
    ]);
    command.env("RUST_LOG", "streamsql=info");
    let output = command.output().expect("run streamsql");
    common::assert_ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let checkpoint = events
        .iter()
        .find(|e| e["fields"]["message"] == "checkpoint written")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(checkpoint["level"], "INFO");
    assert_eq!(checkpoint["fields"]["pipeline"], "task_failures");
    assert!(
        checkpoint["fields"]["bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{checkpoint}"
    );
    let finished = events
        .iter()
        .find(|e| e["fields"]["message"] == "pipeline finished")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(finished["fields"]["events_in"], 120000);
}

/// The `sh` blocks of README.md that run `scripts/streamsql`, in order.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("scripts/streamsql") {
                    blocks.push(block.clone());
                }
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_command_of_the_readme_runs_as_written() {
    let dir = common::scratch_dir("readme");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    common::copy_pipelines(&dir);
    // `scripts/streamsql` builds and runs this clone's binary; here, the
    // binary under test.
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(
        dir.join("scripts/streamsql"),
        format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_streamsql")
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", "scripts/streamsql"])
        .current_dir(&dir)
        .status()
        .unwrap();
    let blocks = readme_commands();
    assert!(blocks.len() >= 2, "{blocks:?}");
    let mut printed = String::new();
    for block in &blocks {
        let mut command = std::process::Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let output = common::output_within(command, std::time::Duration::from_secs(300));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "README block failed:\n{block}\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        printed.push_str(&stdout);
    }
    // What README says the main job prints, and the query's five rows.
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    for line in [
        "query task_failure_metrics: 327836 rows out",
        "dead letters: none",
    ] {
        assert!(
            readme.contains(line) && printed.contains(line),
            "{line}\n{printed}"
        );
    }
    assert!(printed.contains("failures"), "{printed}");
    assert!(!common::read_parts(&dir.join("output/task_failures/task_failure_metrics")).is_empty());
}
