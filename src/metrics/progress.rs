//! The live progress line and the end-of-run summary.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::Snapshot;

/// What a run did, printed at the end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub pipeline: String,
    pub events_in: u64,
    pub late: u64,
    pub rows_out: Vec<(String, u64)>,
    pub dead_letters: BTreeMap<(String, String), u64>,
    pub elapsed: Duration,
    /// The checkpoint this run resumed from.
    pub restored: Option<Restored>,
    pub checkpoints: CheckpointStats,
    /// Stopped before the end of its input (`--stop-after-batches`, Ctrl-C).
    pub stopped_early: bool,
    /// Window state groups held at the end (zero once the input is exhausted).
    pub state_groups: usize,
    /// What each sink has to say about its work, one line each.
    pub sinks: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub sequence: u64,
    pub bytes: u64,
    /// Reading the checkpoint and loading its state.
    pub duration: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    pub written: u64,
    pub total_duration: Duration,
    pub max_duration: Duration,
    pub last_duration: Duration,
    pub last_bytes: u64,
}

impl CheckpointStats {
    pub fn record(&mut self, duration: Duration, bytes: u64) {
        self.written += 1;
        self.total_duration += duration;
        self.max_duration = self.max_duration.max(duration);
        self.last_duration = duration;
        self.last_bytes = bytes;
    }
}

impl Summary {
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            ..Default::default()
        }
    }

    pub fn events_per_second(&self) -> f64 {
        self.events_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}: {} events in {:.2} s ({:.0} events/s), {} late",
            self.pipeline,
            self.events_in,
            self.elapsed.as_secs_f64(),
            self.events_per_second(),
            self.late
        )?;
        if let Some(r) = &self.restored {
            writeln!(
                f,
                "  resumed from checkpoint {} ({} bytes, loaded in {} ms)",
                r.sequence,
                r.bytes,
                r.duration.as_millis()
            )?;
            if self.events_in == 0 && self.dead_letters.is_empty() {
                writeln!(
                    f,
                    "  no new input since then; `run --from-scratch` recomputes from the start"
                )?;
            }
        }
        for (query, rows) in &self.rows_out {
            writeln!(f, "  query {query}: {rows} rows out")?;
        }
        for line in &self.sinks {
            writeln!(f, "  {line}")?;
        }
        if self.dead_letters.is_empty() {
            writeln!(f, "  dead letters: none")?;
        }
        for ((source, kind), count) in &self.dead_letters {
            writeln!(f, "  dead letters from {source}: {count} ({kind})")?;
        }
        let c = &self.checkpoints;
        if c.written > 0 {
            writeln!(
                f,
                "  checkpoints: {} written (mean {} ms, max {} ms), last {} bytes",
                c.written,
                (c.total_duration / c.written as u32).as_millis(),
                c.max_duration.as_millis(),
                c.last_bytes
            )?;
        }
        if self.stopped_early {
            writeln!(
                f,
                "  stopped early with a checkpoint; run again to continue"
            )?;
        }
        Ok(())
    }
}

/// Rewrites one terminal line about once a second; silent when stderr is not
/// a terminal or progress is off.
pub struct Progress {
    enabled: bool,
    last: Instant,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled: enabled && std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    pub fn update(&mut self, summary: &Summary, snapshot: &Snapshot, elapsed: Duration) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let rate = summary.events_in as f64 / elapsed.as_secs_f64().max(1e-9);
        let marks: Vec<String> = snapshot
            .sources
            .iter()
            .map(|(s, _, _, w)| format!("{s} wm {}", format_millis(*w)))
            .collect();
        let lag: i64 = snapshot.kafka_lag.iter().map(|(_, _, l)| l).sum();
        let lag = match snapshot.kafka_lag.is_empty() {
            true => String::new(),
            false => format!(" | kafka lag {lag}"),
        };
        eprint!(
            "\r{} events ({rate:.0}/s) | {}{lag} | late {} | state {} groups, {:.1} MB   ",
            summary.events_in,
            marks.join(", "),
            summary.late,
            snapshot.state.0,
            snapshot.state.1 as f64 / 1e6
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// A watermark for people: ISO time, or `-` before the first event.
pub fn format_millis(ms: i64) -> String {
    if ms == i64::MIN {
        return "-".into();
    }
    if ms == i64::MAX {
        return "end".into();
    }
    datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn watermarks_read_as_utc_times() {
        assert_eq!(super::format_millis(29_984_051), "1970-01-01T08:19:44.051");
        assert_eq!(super::format_millis(i64::MIN), "-");
    }
}
