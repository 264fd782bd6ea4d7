//! Nexmark throughput per query, on one core: each query of the `nexmark`
//! pipeline (with the queries it reads) alone, `streamsql run` on one
//! worker pinned to one core (`taskset`), over `NEXMARK_EVENTS` events
//! (default 2,000,000) from `generate-sample --kind nexmark`, from gzip JSON
//! to Parquet. Events/s counts every event read (person, auction and bid),
//! as Flink's published figures do (per core: their throughput divided by
//! the cores used).
//!
//! Run with `scripts/bench.sh --bench nexmark`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Each measured query with the queries it reads, and Flink's published
/// events/s per core where there is one (8-core workers).
const QUERIES: [(&str, &[&str], Option<u32>); 15] = [
    ("q0", &["q0"], None),
    ("q1", &["q1"], None),
    ("q2", &["q2"], None),
    ("q5", &["q5_bids", "q5_max_bids", "q5"], Some(22_000)),
    ("q7", &["q7_max_price", "q7"], Some(12_000)),
    ("q8", &["q8_persons", "q8_sellers", "q8"], None),
    ("q11", &["q11"], Some(40_000)),
    ("q13", &["q13"], None),
    ("q14", &["q14"], None),
    ("q15", &["q15"], None),
    ("q16", &["q16"], None),
    ("q17", &["q17"], None),
    ("q21", &["q21"], None),
    ("q22", &["q22"], None),
    ("all", &[], None),
];

fn main() {
    let events: usize = std::env::var("NEXMARK_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let binary = env!("CARGO_BIN_EXE_streamsql");
    let repo = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join("streamsql-bench-nexmark");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("events");
    let started = Instant::now();
    let status = Command::new(binary)
        .args(["generate-sample", "--kind", "nexmark", "--disorder", "1000"])
        .args([
            "--rows",
            &events.to_string(),
            "--out",
            data.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "generate-sample failed");
    println!(
        "generated {events} Nexmark events in {:.1?}",
        started.elapsed()
    );
    let yaml = std::fs::read_to_string(Path::new(repo).join("pipelines.yaml"))
        .unwrap()
        .replace("sql: queries/", &format!("sql: {repo}/queries/"))
        .replace(":-datasets/", &format!(":-{repo}/datasets/"));
    let pinned = Command::new("taskset").arg("--version").output().is_ok();
    println!(
        "one worker{}; events/s = all events read / wall time",
        if pinned {
            " pinned to one core"
        } else {
            " (taskset absent: not pinned)"
        }
    );
    println!("| query | wall s | events/s per core | Flink events/s per core |");
    println!("|---|---|---|---|");
    for (name, queries, flink) in QUERIES {
        let config = dir.join("pipelines.yaml");
        std::fs::write(&config, only(&yaml, queries)).unwrap();
        let mut command = match pinned {
            true => {
                let mut c = Command::new("taskset");
                c.args(["-c", "0", binary]);
                c
            }
            false => Command::new(binary),
        };
        command
            .args([
                "run",
                "nexmark",
                "--quiet",
                "--from-scratch",
                "--parallelism",
                "1",
            ])
            .args(["--config", config.to_str().unwrap()])
            .args(["--output", dir.join("out").to_str().unwrap()])
            .env("NEXMARK_DIR", &data)
            .stdout(Stdio::null());
        let started = Instant::now();
        let status = command.status().unwrap();
        let wall = started.elapsed();
        assert!(status.success(), "{name} failed");
        assert!(wall < Duration::from_secs(600));
        let rate = events as f64 / wall.as_secs_f64();
        let flink = flink.map_or("-".to_string(), |f| format!("{f}"));
        println!(
            "| {name} | {:.2} | {:.0} | {flink} |",
            wall.as_secs_f64(),
            rate
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `yaml` with the `nexmark` pipeline's queries cut down to `keep` (all of
/// them when empty).
fn only(yaml: &str, keep: &[&str]) -> String {
    let mut in_nexmark = false;
    let mut out = String::new();
    for line in yaml.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':') {
            in_nexmark = line == "  nexmark:";
        }
        let query = (line.trim_start())
            .strip_prefix("- { name: ")
            .filter(|rest| rest.contains(" sql: "))
            .and_then(|rest| rest.split(',').next());
        if let (true, Some(query), false) = (in_nexmark, query, keep.is_empty())
            && !keep.contains(&query)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
