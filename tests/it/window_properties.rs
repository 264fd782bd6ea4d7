//! Property tests of the window operator against a brute-force evaluation:
//! random disorder, random micro-batch sizes, random windows and watermark
//! delays, and runs stopped and restarted from their checkpoints at random
//! micro-batches. The reference knows nothing of micro-batches: it takes the
//! events one by one, each against the watermark of the events before it,
//! keeps raw rows per window and computes every aggregate from scratch. So
//! every case also checks that the answer does not depend on the batch size.

use crate::common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use proptest::prelude::*;
use streamsql::runtime::RunOptions;

#[derive(Debug, Clone, Copy)]
enum Window {
    Tumble(i64),
    Hop(i64, i64),
    Session(i64),
}

impl Window {
    fn sql(self) -> String {
        match self {
            Window::Tumble(size) => format!("TUMBLE(t, INTERVAL '{size} milliseconds')"),
            Window::Hop(slide, size) => {
                format!("HOP(t, INTERVAL '{slide} milliseconds', INTERVAL '{size} milliseconds')")
            }
            Window::Session(gap) => format!("SESSION(t, INTERVAL '{gap} milliseconds')"),
        }
    }

    /// Every window `[start, end)` holding `t`, by brute force.
    fn windows_of(self, t: i64) -> Vec<(i64, i64)> {
        let (slide, size) = match self {
            Window::Tumble(size) => (size, size),
            Window::Hop(slide, size) => (slide, size),
            Window::Session(gap) => return vec![(t, t + gap)],
        };
        let k = t.div_euclid(slide);
        (k - size / slide - 2..=k)
            .map(|i| (i * slide, i * slide + size))
            .filter(|(s, e)| *s <= t && t < *e)
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Event {
    t: i64,
    k: String,
    v: i64,
}

/// (window_start, window_end, k)
type WindowKey = (i64, i64, String);
/// (n, total, lo, hi, big, kinds)
type Values = (i64, i64, i64, i64, i64, i64);
/// Output rows by window and key.
type Rows = BTreeMap<WindowKey, Values>;
/// Open sessions per key: (start, end, values).
type Sessions = BTreeMap<String, Vec<(i64, i64, Vec<i64>)>>;

fn aggregate(values: &[i64]) -> Values {
    let mut kinds: Vec<i64> = values.iter().map(|v| v % 5).collect();
    kinds.sort();
    kinds.dedup();
    (
        values.len() as i64,
        values.iter().sum(),
        *values.iter().min().unwrap(),
        *values.iter().max().unwrap(),
        values.iter().filter(|v| **v >= 50).count() as i64,
        kinds.len() as i64,
    )
}

/// The brute-force reference: (final rows, late events).
fn reference(events: &[Event], window: Window, delay: i64) -> (Rows, Vec<(i64, String, i64)>) {
    let mut watermark = i64::MIN;
    let mut late = Vec::new();
    let mut out = Rows::new();
    // Fixed windows: raw values per window; sessions: open sessions per key.
    let mut fixed: BTreeMap<(i64, i64, String), Vec<i64>> = BTreeMap::new();
    let mut sessions = Sessions::new();
    for e in events {
        let windows = window.windows_of(e.t);
        let open: Vec<&(i64, i64)> = windows.iter().filter(|(_, end)| *end > watermark).collect();
        if open.is_empty() {
            late.push((e.t, e.k.clone(), e.v));
            continue;
        }
        match window {
            Window::Session(gap) => {
                let list = sessions.entry(e.k.clone()).or_default();
                let (mut start, mut end, mut values) = (e.t, e.t + gap, vec![e.v]);
                list.retain(|(s, en, vals)| {
                    let overlaps = *s < end && start < *en;
                    if overlaps {
                        start = start.min(*s);
                        end = end.max(*en);
                        values.extend(vals);
                    }
                    !overlaps
                });
                list.push((start, end, values));
            }
            _ => {
                for (s, en) in open {
                    fixed.entry((*s, *en, e.k.clone())).or_default().push(e.v);
                }
            }
        }
        watermark = watermark.max(e.t - delay);
        close(&mut fixed, &mut sessions, watermark, &mut out);
    }
    close(&mut fixed, &mut sessions, i64::MAX, &mut out);
    (out, late)
}

fn close(
    fixed: &mut BTreeMap<(i64, i64, String), Vec<i64>>,
    sessions: &mut Sessions,
    watermark: i64,
    out: &mut Rows,
) {
    fixed.retain(|key, values| {
        if key.1 <= watermark {
            out.insert(key.clone(), aggregate(values));
            false
        } else {
            true
        }
    });
    for (k, list) in sessions.iter_mut() {
        list.retain(|(s, e, values)| {
            if *e <= watermark {
                out.insert((*s, *e, k.clone()), aggregate(values));
                false
            } else {
                true
            }
        });
    }
}

/// The engine's output rows in emission order.
fn engine_rows(batches: &[RecordBatch]) -> Vec<(WindowKey, Values)> {
    let mut rows = Vec::new();
    for b in batches {
        let ts = |i: usize| {
            b.column(i)
                .as_primitive::<TimestampMillisecondType>()
                .clone()
        };
        let int = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (ws, we, k) = (ts(0), ts(1), b.column(2).as_string::<i32>().clone());
        let cols: Vec<_> = (3..9).map(int).collect();
        for r in 0..b.num_rows() {
            assert!(cols.iter().all(|c| c.is_valid(r)));
            rows.push((
                (ws.value(r), we.value(r), k.value(r).to_string()),
                (
                    cols[0].value(r),
                    cols[1].value(r),
                    cols[2].value(r),
                    cols[3].value(r),
                    cols[4].value(r),
                    cols[5].value(r),
                ),
            ));
        }
    }
    rows
}

/// How a case runs: `trigger` is `0s` (every micro-batch) or `1h` (never
/// during the run, so updates come only as windows close). The run stops
/// after `stops[0]` micro-batches with a checkpoint, restarts from it, stops
/// after `stops[1]` more, and so on, then runs to the end.
struct Run<'a> {
    emit: &'a str,
    trigger: &'a str,
    stops: &'a [u64],
}

/// Writes the case's input, query and pipelines file, runs it, and returns
/// the query's output in emission order.
fn run_case(
    dir: &Path,
    events: &[Event],
    window: Window,
    batch_rows: usize,
    delay: i64,
    run: &Run,
) -> Vec<RecordBatch> {
    let (emit, trigger) = (run.emit, run.trigger);
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let mut csv = String::new();
    for e in events {
        writeln!(csv, "{},{},{}", e.t, e.k, e.v).unwrap();
    }
    std::fs::write(dir.join("events.csv"), csv).unwrap();
    std::fs::write(
        dir.join("q.sql"),
        format!(
            "SELECT window_start, window_end, k, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi,
                    count(*) FILTER (WHERE v >= 50) AS big, count(DISTINCT v % 5) AS kinds
             FROM events GROUP BY {}, k",
            window.sql()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines.yaml"),
        format!(
            "pipelines:
  p:
    sources:
      - name: events
        format: csv
        replay: {{ path: events.csv, batch_rows: {batch_rows} }}
        columns:
          - {{ name: t, type: int64 }}
          - {{ name: k, type: string }}
          - {{ name: v, type: int64 }}
        event_time: {{ column: t, unit: ms }}
        watermark_delay: {delay}ms
    trigger: {trigger}
    queries:
      - name: q
        sql: q.sql
        emit: {emit}
        sinks: [ {{ parquet: {{}} }} ]
"
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let loaded = streamsql::config::load(&dir.join("pipelines.yaml")).unwrap();
    for stop in run.stops.iter().map(|s| Some(*s)).chain([None]) {
        let options = RunOptions {
            output_dir: Some(out.clone()),
            stop_after_batches: stop,
            ..Default::default()
        };
        runtime.block_on(common::run_with(&loaded, "p", &options));
    }
    common::read_parts(&out.join("q"))
}

fn window_strategy() -> impl Strategy<Value = Window> {
    prop_oneof![
        (1i64..=20).prop_map(|s| Window::Tumble(s * 500)),
        ((1i64..=8), (1i64..=4), (0i64..=3)).prop_map(|(slide, m, extra)| {
            let slide = slide * 500;
            Window::Hop(slide, slide * m + extra * 250)
        }),
        (1i64..=10).prop_map(|g| Window::Session(g * 400)),
    ]
}

fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
    // Times on a 250 ms grid, like window bounds, so rows often sit exactly
    // on a window edge or at the watermark.
    (10usize..400, 0i64..=12, 0i64..=80).prop_flat_map(|(n, step, disorder)| {
        prop::collection::vec((-disorder..=disorder, 0usize..4, 0i64..100), n).prop_map(
            move |raw| {
                raw.into_iter()
                    .enumerate()
                    .map(|(i, (jitter, k, v))| Event {
                        t: 1_700_000_000_000 + (i as i64 * step + jitter) * 250,
                        k: format!("k{k}"),
                        v,
                    })
                    .collect()
            },
        )
    })
}

fn late_rows(dir: &Path) -> Vec<(i64, String, i64)> {
    let mut late = Vec::new();
    for b in common::read_parts(&dir.join("out").join("events_late")) {
        let (t, k, v) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_string::<i32>(),
            b.column(2).as_primitive::<Int64Type>(),
        );
        for r in 0..b.num_rows() {
            late.push((t.value(r), k.value(r).to_string(), v.value(r)));
        }
    }
    late
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn final_equals_reference_and_update_converges(
        events in events_strategy(),
        window in window_strategy(),
        batch_rows in 1usize..80,
        delay in (0i64..32).prop_map(|d| d * 250),
        slow_trigger in any::<bool>(),
        stops in prop::collection::vec(1u64..12, 0..4),
    ) {
        let trigger = if slow_trigger { "1h" } else { "0s" };
        let dir = common::scratch_dir("props");
        let (expected, expected_late) = reference(&events, window, delay);

        let final_rows = engine_rows(&run_case(&dir, &events, window, batch_rows, delay, &Run { emit: "final", trigger, stops: &stops }));
        let mut late = late_rows(&dir);
        let mut expected_late_sorted = expected_late.clone();
        late.sort();
        expected_late_sorted.sort();
        prop_assert_eq!(&late, &expected_late_sorted, "late rows differ");
        let emitted = final_rows.len();
        let final_map: Rows = final_rows.into_iter().collect();
        prop_assert_eq!(final_map.len(), emitted, "final mode emitted a window twice");
        prop_assert_eq!(&final_map, &expected, "final output differs from the reference");

        // Update mode: the last version of every window equals its final value.
        let update_rows = engine_rows(&run_case(&dir, &events, window, batch_rows, delay, &Run { emit: "update", trigger, stops: &stops }));
        let last: Rows = update_rows.into_iter().collect();
        for (key, value) in &expected {
            prop_assert_eq!(last.get(key), Some(value), "last update of {:?}", key);
        }
        if !matches!(window, Window::Session(_)) {
            prop_assert_eq!(last.len(), expected.len(), "update mode emitted windows final mode did not");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
