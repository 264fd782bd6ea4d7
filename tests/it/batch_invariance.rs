//! Batch-invariance, the engine's first rule: every pipeline of
//! pipelines.yaml and every golden test gives the same answer whatever the
//! micro-batch size and the number of workers. Final outputs, the last
//! version of each key of `update` outputs, late tables and dead letters must
//! be identical for the (batch lines, workers) pairs of [`CASES`]: batches of
//! 1, 7 and 8192 lines, and 1, 2, 3, 4 and 8 workers. (Columns holding processing time, the wall clock when a
//! row was read, differ in every run and are left out.)

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use streamsql::config::{EmitMode, LoadedConfig, SinkConfig, SourceInput};
use streamsql::runtime::RunOptions;
use streamsql::source::InlineBatch;

/// (lines per batch, workers): every size at one worker and at several,
/// every worker count at the largest size.
const CASES: [(usize, usize); 6] = [(1, 1), (7, 3), (8192, 1), (8192, 2), (8192, 4), (8192, 8)];

/// Lines read per source: enough for every query to open and close many
/// windows, few enough that batches of one line stay quick.
const MAX_LINES: usize = 12_000;

/// Output columns computed from the processing time of W5's source
/// (`processing_time_column`), besides that column itself.
const FROM_PROCESSING_TIME: &[&str] = &["processing_lag_s"];

/// One line of a source's input: (file, line number, text).
type Line = (Arc<str>, u64, String);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines a replay source reads, as the replay reads them (header lines
/// and empty lines skipped), up to [`MAX_LINES`].
fn replay_lines(loaded: &LoadedConfig, path: &str, header: bool) -> Vec<Line> {
    let pattern = loaded.base_dir.join(path);
    let mut files: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
        .unwrap()
        .flatten()
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let origin: Arc<str> = Arc::from(file.display().to_string());
        let reader = BufReader::new(streamsql::source::open_file(&file).unwrap());
        for (i, line) in reader.split(b'\n').enumerate() {
            let text = String::from_utf8_lossy(&line.unwrap())
                .trim_end_matches('\r')
                .to_string();
            if (header && i == 0) || text.is_empty() {
                continue;
            }
            lines.push((Arc::clone(&origin), i as u64 + 1, text));
            if lines.len() == MAX_LINES {
                return lines;
            }
        }
    }
    lines
}

/// Each source's input: its files, or for a Kafka source the files a
/// replay source of the same name reads in another pipeline (none: empty).
fn inputs(loaded: &LoadedConfig, pipeline: &str) -> HashMap<String, Vec<Line>> {
    let replayed = |name: &str| {
        loaded
            .file
            .pipelines
            .values()
            .flat_map(|p| &p.sources)
            .find_map(|s| match &s.input {
                SourceInput::Replay(r) if s.name == name => Some((r.path.clone(), s.csv.header)),
                _ => None,
            })
    };
    loaded.file.pipelines[pipeline]
        .sources
        .iter()
        .map(|s| {
            let lines = replayed(&s.name)
                .map(|(path, header)| replay_lines(loaded, &path, header))
                .unwrap_or_default();
            (s.name.clone(), lines)
        })
        .collect()
}

/// Every output table of a run, as sorted row texts; for an `update`
/// query, the last version of each key (its Elasticsearch `id_columns`).
fn answer(out: &Path, loaded: &LoadedConfig, pipeline: &str) -> BTreeMap<String, Vec<String>> {
    let config = &loaded.file.pipelines[pipeline];
    let mut skip: Vec<&str> = FROM_PROCESSING_TIME.to_vec();
    skip.extend(
        config
            .sources
            .iter()
            .filter_map(|s| s.processing_time_column.as_deref()),
    );
    let mut tables = BTreeMap::new();
    for query in &config.queries {
        let dir = out.join(&query.name);
        let rows = match query.emit {
            EmitMode::Final => common::row_texts_except(&[&dir], &skip),
            EmitMode::Update => {
                let ids = query
                    .sinks
                    .iter()
                    .find_map(|s| match s {
                        SinkConfig::Elasticsearch(e) => Some(e.id_columns.clone()),
                        _ => None,
                    })
                    .expect("an update query here names its key in id_columns");
                last_versions(&dir, &ids)
            }
        };
        tables.insert(query.name.clone(), sorted(rows));
    }
    for source in &config.sources {
        let late = format!("{}_late", source.name);
        let rows = common::row_texts_except(&[&out.join(&late)], &skip);
        tables.insert(late.clone(), sorted(rows));
    }
    let letters = common::dead_letters(out)
        .iter()
        .map(|l| l.to_string())
        .collect();
    tables.insert("dead_letters".into(), sorted(letters));
    tables
}

/// The last row emitted for each value of `keys`.
fn last_versions(dir: &Path, keys: &[String]) -> Vec<String> {
    let batches = common::read_parts(dir);
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        return Vec::new();
    };
    let key_columns: Vec<usize> = keys.iter().map(|k| schema.index_of(k).unwrap()).collect();
    let mut last = BTreeMap::new();
    for row in common::row_texts(&[dir]) {
        let values: Vec<&str> = row.split('|').collect();
        let key: Vec<String> = key_columns.iter().map(|i| values[*i].to_string()).collect();
        last.insert(key, row.clone());
    }
    last.into_values().collect()
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

/// Runs `pipeline` over `inputs` cut into batches of `size` lines, with
/// Parquet sinks only and a trigger at every batch.
async fn run_at(
    loaded: &LoadedConfig,
    pipeline: &str,
    inputs: &HashMap<String, Vec<Line>>,
    (size, parallelism): (usize, usize),
    out: &Path,
) {
    let mut loaded = loaded.clone();
    let config = loaded.file.pipelines.get_mut(pipeline).unwrap();
    config.trigger = Duration::ZERO;
    config.commit_interval = Duration::from_secs(24 * 3600);
    config.checkpoint.location = None;
    for query in &mut config.queries {
        query.sinks = vec![SinkConfig::Parquet(Default::default())];
    }
    let inline_sources = inputs
        .iter()
        .map(|(source, lines)| {
            let batches = lines
                .chunks(size)
                .map(|chunk| InlineBatch {
                    origin: Arc::clone(&chunk[0].0),
                    lines: chunk
                        .iter()
                        .map(|(_, n, text)| (*n, text.clone()))
                        .collect(),
                })
                .collect();
            (source.clone(), batches)
        })
        .collect();
    let options = RunOptions {
        output_dir: Some(out.to_path_buf()),
        from_scratch: true,
        inline_sources,
        parallelism: Some(parallelism),
        ..Default::default()
    };
    common::run_with(&loaded, pipeline, &options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipeline_gives_the_same_answer_for_any_batch_size_and_parallelism() {
    let loaded = streamsql::config::load(&repo().join("pipelines.yaml")).unwrap();
    for pipeline in loaded.file.pipelines.keys() {
        let inputs = inputs(&loaded, pipeline);
        let lines: usize = inputs.values().map(Vec::len).sum();
        let mut answers = Vec::new();
        for case in CASES {
            let out = common::scratch_dir(&format!("invariance-{pipeline}-{}-{}", case.0, case.1));
            run_at(&loaded, pipeline, &inputs, case, &out).await;
            answers.push((case, answer(&out, &loaded, pipeline)));
            let _ = std::fs::remove_dir_all(&out);
        }
        let (_, first) = &answers[0];
        let rows: usize = first.values().map(Vec::len).sum();
        assert!(
            lines == 0 || rows > 0,
            "{pipeline}: {lines} lines gave no output"
        );
        for ((size, workers), other) in &answers[1..] {
            for (table, want) in first {
                common::assert_same_rows(
                    &format!(
                        "{pipeline}.{table}: batches of {} on {} workers vs {size} on {workers}",
                        CASES[0].0, CASES[0].1
                    ),
                    want,
                    &other[table],
                );
            }
        }
        println!(
            "{pipeline}: {lines} lines, {rows} output rows, the same for (batch lines, workers) {CASES:?}"
        );
    }
}

#[test]
fn every_golden_test_passes_for_any_batch_size_and_parallelism() {
    for (size, workers) in CASES {
        let output = common::output_within(
            common::streamsql(&[
                "test",
                "--batch-rows",
                &size.to_string(),
                "--parallelism",
                &workers.to_string(),
            ]),
            Duration::from_secs(300),
        );
        let stdout = common::assert_ok(&output);
        assert!(stdout.contains("golden tests passed"), "{stdout}");
    }
}
