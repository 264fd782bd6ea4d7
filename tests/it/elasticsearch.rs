//! The Elasticsearch sink against real HTTP peers on loopback (installed by
//! scripts/tools.sh): a real OpenSearch node for W1 end to end and for kill -9
//! restarts; osmem-server (an Elasticsearch-API server that starts at once)
//! behind a fault-injecting proxy where a test needs 429s, 503s and refusals.
//!
//! The reference is the same query with `emit: final` written to Parquet by
//! the same run: every window's last update in Elasticsearch must equal it,
//! document for document, with nothing missing and nothing extra.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::elasticsearch::{EsServer, FaultProxy, Faults, get_json};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);

/// Events per test run: osmem-server indexes a few thousand documents a
/// second, and W1 makes about two rows per event.
const EVENTS: usize = 10_000;

/// W1 over the first `EVENTS` events of the trace after time 0, twice: `w1_final` (emit
/// final) to Parquet, `w1` (emit update, a trigger every micro-batch, so
/// windows are written and rewritten) to Elasticsearch at `url` with `extra`
/// sink settings.
fn write_pipeline(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let part = common::trace_slice("task_events", EVENTS, &dir.join("task_events.csv"));
    let sql = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("queries/task_failure_metrics.sql");
    let config = dir.join("pipelines.yaml");
    std::fs::write(
        &config,
        format!(
            "pipelines:
  p:
    sources:
{}    trigger: 0s
    commit_interval: 1s
    queries:
      - name: w1_final
        sql: {sql}
        sinks: [ parquet: {{}} ]
      - name: w1
        sql: {sql}
        emit: update
        sinks:
          - elasticsearch:
              url: {url}
              index: w1-{{window_start:%Y.%m.%d}}
              id_columns: [window_start, machine_id, job_id]
              bulk_rows: 2000
{extra}",
            common::task_events_source_yaml(&format!(
                "replay: {{ path: '{}', batch_rows: 1000 }}",
                part.display()
            )),
            sql = sql.display(),
        ),
    )
    .unwrap();
    config
}

/// A number as text the same way whichever side wrote it; `null` for none.
fn number(text: &str) -> String {
    text.parse::<f64>()
        .map_or("null".to_string(), |n| n.to_string())
}

/// A W1 row's values as text, keyed by its `_id`: from Parquet...
fn expected_documents(out: &Path) -> BTreeMap<String, String> {
    common::row_texts(&[&out.join("w1_final")])
        .into_iter()
        .map(|row| {
            // window_start|window_end|machine_id|job_id|counts...|fail_rate
            let fields: Vec<&str> = row.split('|').collect();
            let id = format!("{}|{}|{}", fields[0], fields[2], fields[3]);
            let values: Vec<String> = fields[4..].iter().map(|f| number(f)).collect();
            (id, values.join("|"))
        })
        .collect()
}

/// ...and from Elasticsearch's `_source`.
fn document_text(source: &Value) -> String {
    [
        "total_events",
        "fail_count",
        "evict_count",
        "kill_count",
        "total_fail_count",
        "fail_rate",
    ]
    .iter()
    .map(|f| number(&source[f].to_string()))
    .collect::<Vec<_>>()
    .join("|")
}

/// `_mget` of W1 documents by `_id`, each from its day's index
/// (`w1-YYYY.MM.DD` of its window_start, the `_id`'s first part).
fn mget(address: &str, ids: &[String]) -> Vec<Value> {
    let docs: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "_index": format!("w1-{}", id[..10].replace('-', ".")), "_id": id }))
        .collect();
    let answer = get_json(address, "POST", "/_mget", Some(json!({ "docs": docs })));
    answer["docs"].as_array().unwrap().clone()
}

/// Fetches every expected document by `_id` (mget) and compares it.
/// Returns the documents' versions.
fn assert_indexed(address: &str, expected: &BTreeMap<String, String>) -> Vec<u64> {
    let ids: Vec<String> = expected.keys().cloned().collect();
    let mut versions = Vec::new();
    for chunk in ids.chunks(1000) {
        for (id, doc) in chunk.iter().zip(mget(address, chunk)) {
            assert_eq!(doc["found"], json!(true), "document {id} is missing");
            let got = document_text(&doc["_source"]);
            assert_eq!(got, expected[id], "document {id}");
            versions.push(doc["_version"].as_u64().unwrap());
        }
    }
    versions
}

/// [`assert_indexed`], then checks the index holds no other documents.
fn assert_documents(address: &str, expected: &BTreeMap<String, String>) -> Vec<u64> {
    assert!(!expected.is_empty(), "the reference has no rows");
    let versions = assert_indexed(address, expected);
    get_json(address, "POST", "/w1-*/_refresh", None);
    let count = get_json(address, "GET", "/w1-*/_count", None);
    assert_eq!(count["count"], json!(expected.len()), "documents in w1-*");
    versions
}

fn run(config: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    common::output_within(common::run_p(config, out, extra), LIMIT)
}

#[test]
fn w1_updates_in_elasticsearch_equal_the_final_windows_and_a_replay_changes_nothing() {
    let dir = common::scratch_dir("es_w1");
    let Some(es) = EsServer::opensearch() else {
        return;
    };
    let config = write_pipeline(&dir, &es.url, "");
    let out = dir.join("out");
    let summary = common::assert_ok(&run(&config, &out, &[]));
    println!("{summary}");
    let expected = expected_documents(&out);
    let versions = assert_documents(es.address(), &expected);
    // Updates rewrote windows in place: some documents have several versions.
    assert!(versions.iter().any(|v| *v > 1), "no window was updated");

    // The index template's explicit mappings, as Kibana needs them.
    let mappings = get_json(es.address(), "GET", "/w1-*/_mapping", None);
    let (_, index) = mappings.as_object().unwrap().iter().next().unwrap();
    let properties = &index["mappings"]["properties"];
    for (field, kind) in [
        ("window_start", "date"),
        ("window_end", "date"),
        ("machine_id", "keyword"),
        ("job_id", "keyword"),
        ("total_events", "long"),
        ("fail_rate", "double"),
    ] {
        assert_eq!(
            properties[field]["type"],
            json!(kind),
            "mapping of {field}: {properties}"
        );
    }

    // A replay from scratch writes the same documents again: same ids, same
    // values, nothing added.
    common::assert_ok(&run(&config, &out, &["--from-scratch"]));
    let replayed = assert_documents(es.address(), &expected);
    assert!(
        replayed.iter().zip(&versions).all(|(r, v)| r > v),
        "the replay did not rewrite"
    );
}

#[test]
fn throttled_and_unavailable_answers_are_retried_and_nothing_is_lost() {
    let dir = common::scratch_dir("es_faults");
    let Some(es) = EsServer::osmem() else {
        return;
    };
    let proxy = FaultProxy::start(
        es.address(),
        Faults {
            bulk_429: 2,
            bulk_503: 2,
            item_429: 3,
            item_503: 2,
            item_400: 0,
        },
    );
    // Each of the nine faulty answers costs a retry.
    let config = write_pipeline(
        &dir,
        &proxy.url,
        "              retry_backoff: 10ms\n              max_retries: 12\n",
    );
    let out = dir.join("out");
    let summary = common::assert_ok(&run(&config, &out, &[]));
    let seen = proxy.seen();
    assert_eq!(seen.faults_injected, 9, "{seen:?}");
    assert!(
        common::dead_letters(&out).is_empty(),
        "nothing is refused for good"
    );
    assert!(summary.contains("retries"), "{summary}");
    assert_documents(es.address(), &expected_documents(&out));
}

#[test]
fn refused_documents_go_to_the_dead_letters_and_the_rest_arrive() {
    let dir = common::scratch_dir("es_refused");
    let Some(es) = EsServer::osmem() else {
        return;
    };
    let proxy = FaultProxy::start(
        es.address(),
        Faults {
            item_400: 2,
            ..Faults::default()
        },
    );
    let config = write_pipeline(&dir, &proxy.url, "");
    let out = dir.join("out");
    let summary = common::assert_ok(&run(&config, &out, &[]));
    let refused = proxy.seen().refused;
    assert!(!refused.is_empty());
    assert!(summary.contains("rejected by elasticsearch"), "{summary}");

    // Every refused document is a dead letter with its reason and source...
    let mut letters: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for letter in common::dead_letters(&out) {
        if letter["source"].as_str().unwrap().contains("elasticsearch") {
            let position = letter["position"].as_str().unwrap().to_string();
            letters.entry(position).or_default().push(letter);
        }
    }
    assert_eq!(letters.values().map(Vec::len).sum::<usize>(), refused.len());
    let mut expected = expected_documents(&out);
    for (index, id) in &refused {
        let versions = &letters[&format!("{index}/{id}")];
        for letter in versions {
            let reason = letter["reason"].as_str().unwrap();
            assert!(reason.contains("400 injected_exception"), "{letter}");
            let source: Value = serde_json::from_str(letter["raw"].as_str().unwrap()).unwrap();
            // A window whose final version was refused holds an earlier
            // version (or nothing): it is left out of the comparison below.
            if expected.get(id) == Some(&document_text(&source)) {
                expected.remove(id);
            }
        }
    }
    // ...and every other window is in the index with its final values.
    assert_indexed(es.address(), &expected);
}

#[test]
fn an_unreachable_cluster_stops_the_run_and_the_next_run_loses_nothing() {
    let dir = common::scratch_dir("es_down");
    let Some(es) = EsServer::osmem() else {
        return;
    };
    let proxy = FaultProxy::start(
        es.address(),
        Faults {
            bulk_503: 1_000,
            ..Faults::default()
        },
    );
    let config = write_pipeline(
        &dir,
        &proxy.url,
        "              retry_backoff: 10ms\n              max_retries: 3\n",
    );
    let out = dir.join("out");
    let failed = run(&config, &out, &[]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("503") && stderr.contains("after 3 retries"),
        "{stderr}"
    );

    // The cluster is back: the next run resumes from the last checkpoint and
    // every window arrives.
    proxy.faults.lock().unwrap().bulk_503 = 0;
    common::assert_ok(&run(&config, &out, &[]));
    assert_documents(es.address(), &expected_documents(&out));
}

#[test]
fn credentials_come_from_the_environment() {
    let dir = common::scratch_dir("es_auth");
    let Some(es) = EsServer::osmem() else {
        return;
    };
    let proxy = FaultProxy::start(es.address(), Faults::default());
    let config = write_pipeline(
        &dir,
        &proxy.url,
        "              auth: { basic: { username_env: TEST_ES_USER, password_env: TEST_ES_PASSWORD } }\n",
    );
    let out = dir.join("out");
    let mut missing = common::run_p(&config, &out, &[]);
    missing
        .env_remove("TEST_ES_PASSWORD")
        .env("TEST_ES_USER", "analyst");
    let failed = common::output_within(missing, LIMIT);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("TEST_ES_PASSWORD") && stderr.contains("pipelines.yaml:"),
        "{stderr}"
    );

    let mut with = common::run_p(&config, &out, &[]);
    with.env("TEST_ES_USER", "analyst")
        .env("TEST_ES_PASSWORD", "s3cret");
    common::assert_ok(&common::output_within(with, LIMIT));
    // base64("analyst:s3cret")
    let seen = proxy.seen().authorization;
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a == "Basic YW5hbHlzdDpzM2NyZXQ="),
        "{seen:?}"
    );
}

#[test]
fn credentials_in_the_url_are_sent_but_never_shown() {
    let dir = common::scratch_dir("es_url_auth");
    let Some(es) = EsServer::osmem() else {
        return;
    };
    // A refused document makes a dead letter, which names the sink.
    let proxy = FaultProxy::start(
        es.address(),
        Faults {
            item_400: 1,
            ..Faults::default()
        },
    );
    let url = proxy.url.replace("http://", "http://analyst:s3cr%40t@");
    let config = write_pipeline(&dir, &url, "");
    let out = dir.join("out");
    let run = run(&config, &out, &["--log-format", "json"]);
    let explain = common::output_within(
        common::streamsql(&["--config", config.to_str().unwrap(), "explain", "p"]),
        LIMIT,
    );
    let mut shown = String::new();
    for output in [&run, &explain] {
        shown.push_str(&String::from_utf8_lossy(&output.stdout));
        shown.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    let letters = common::dead_letters(&out);
    assert!(!letters.is_empty(), "{shown}");
    shown.push_str(&serde_json::to_string(&letters).unwrap());
    assert!(run.status.success(), "{shown}");
    assert!(shown.contains("***@127.0.0.1"), "{shown}");
    assert!(!shown.contains("s3cr"), "{shown}");
    // base64("analyst:s3cr@t"): the password percent-decoded, as the URL means it.
    let seen = proxy.seen().authorization;
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a == "Basic YW5hbHlzdDpzM2NyQHQ="),
        "{seen:?}"
    );
}

#[test]
fn check_names_bad_sink_settings_with_their_line() {
    let dir = common::scratch_dir("es_check");
    let config = write_pipeline(&dir, "http://127.0.0.1:9", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "id_columns: [window_start, machine_id, job_id]",
            "id_columns: [window_start, machine]",
        )
        .replace("index: w1-{window_start:%Y.%m.%d}", "index: W1-{fail_rate}");
    std::fs::write(&config, &text).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let output = common::output_within(
        common::streamsql(&["--config", config.to_str().unwrap(), "check"]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("pipelines.yaml:{}:", line_of("index: W1")))
            && stderr.contains("`fail_rate` is not a timestamp"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pipelines.yaml:{}:", line_of("id_columns:")))
            && stderr.contains("id column `machine`"),
        "{stderr}"
    );
}

/// The repository's file `name`.
fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[tokio::test]
async fn kibana_saved_objects_resolve_and_use_w1_columns() {
    let loaded = streamsql::config::load(&repo_file("pipelines.yaml")).unwrap();
    let plans = streamsql::plan::plan_pipeline(&loaded, "task_failures_live", 1)
        .await
        .unwrap();
    let schema = &plans.queries[0].output_schema;
    let has_column = |name: &str| schema.index_of(name).is_ok();

    let text = std::fs::read_to_string(repo_file("kibana/w1-task-failures.ndjson")).unwrap();
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let known: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().into(),
                o["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut kinds: Vec<&str> = known.iter().map(|(t, _)| t.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "dashboard",
            "index-pattern",
            "visualization",
            "visualization"
        ]
    );
    // A JSON string inside an attribute, parsed.
    let inner = |o: &Value, path: &[&str]| -> Value {
        let text = path.iter().fold(&o["attributes"], |v, k| &v[*k]);
        serde_json::from_str(text.as_str().unwrap()).unwrap()
    };
    for object in &objects {
        let names: Vec<&str> = object["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let target = (
                    r["type"].as_str().unwrap().into(),
                    r["id"].as_str().unwrap().into(),
                );
                assert!(
                    known.contains(&target),
                    "unresolved reference {r} in {}",
                    object["id"]
                );
                r["name"].as_str().unwrap()
            })
            .collect();
        match object["type"].as_str().unwrap() {
            "index-pattern" => {
                // The sink of task_failures_live writes task-failures-<date>.
                assert_eq!(object["attributes"]["title"], json!("task-failures-*"));
                assert!(has_column(
                    object["attributes"]["timeFieldName"].as_str().unwrap()
                ));
            }
            "visualization" => {
                let source = inner(object, &["kibanaSavedObjectMeta", "searchSourceJSON"]);
                assert!(names.contains(&source["indexRefName"].as_str().unwrap()));
                for agg in inner(object, &["visState"])["aggs"].as_array().unwrap() {
                    let field = agg["params"]["field"].as_str().unwrap();
                    assert!(
                        has_column(field),
                        "{} uses unknown column {field}",
                        object["id"]
                    );
                }
            }
            "dashboard" => {
                for panel in inner(object, &["panelsJSON"]).as_array().unwrap() {
                    assert!(
                        names.contains(&panel["panelRefName"].as_str().unwrap()),
                        "{panel}"
                    );
                }
            }
            other => panic!("unexpected saved object type {other}"),
        }
    }
    let config = std::fs::read_to_string(repo_file("pipelines.yaml")).unwrap();
    assert!(config.contains("index: task-failures-{window_start:"));
}

#[test]
fn docker_compose_file_is_valid_and_wires_the_services() {
    let text = std::fs::read_to_string(repo_file("docker-compose.yml")).unwrap();
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for wanted in [
        "kafka",
        "elasticsearch",
        "kibana",
        "kibana-setup",
        "replayer",
        "runner",
    ] {
        assert!(names.contains(&wanted), "no service {wanted}");
    }
    for (name, service) in services {
        let image = service["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t);
        assert!(
            tag.is_some_and(|t| t != "latest"),
            "{name:?}: image {image} is not pinned"
        );
        if let Some(depends) = service["depends_on"].as_mapping() {
            for dependency in depends.keys() {
                assert!(
                    services.contains_key(dependency),
                    "{name:?} depends on {dependency:?}"
                );
            }
        }
    }
    let runner = &compose["services"]["runner"];
    let command: Vec<&str> = runner["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let run = command.iter().position(|a| *a == "run").unwrap();
    let pipeline = command[run + 1];
    assert!(
        command
            .windows(2)
            .any(|w| w == ["--metrics-address", "0.0.0.0:9464"])
    );
    let loaded = streamsql::config::load(&repo_file("pipelines.yaml")).unwrap();
    assert!(
        loaded.pipeline(pipeline).is_ok(),
        "the runner runs unknown pipeline {pipeline}"
    );
    assert_eq!(runner["environment"]["ES_URL"], "http://elasticsearch:9200");
    assert!(repo_file("kibana/w1-task-failures.ndjson").is_file());

    match std::env::var("STREAMSQL_COMPOSE") {
        Ok(compose) => {
            let mut words = compose.split_whitespace();
            let output = std::process::Command::new(words.next().unwrap())
                .args(words)
                .args([
                    "-f",
                    repo_file("docker-compose.yml").to_str().unwrap(),
                    "config",
                    "-q",
                ])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(_) => {
            common::service("STREAMSQL_COMPOSE", "docker compose");
            eprintln!("checked the structure only")
        }
    }
}

#[test]
fn killed_mid_stream_and_restarted_the_index_ends_with_exactly_the_final_windows() {
    let dir = common::scratch_dir("es_kill");
    // The reference: an uninterrupted run (and its duration, for the kills).
    let Some(reference) = EsServer::osmem() else {
        return;
    };
    let config = write_pipeline(&dir, &reference.url, "");
    let started = std::time::Instant::now();
    common::assert_ok(&run(&config, &dir.join("reference"), &[]));
    let full = started.elapsed();
    let expected = expected_documents(&dir.join("reference"));
    drop(reference);

    // The same run SIGKILLed at random points and restarted from its
    // checkpoints, into a real OpenSearch node.
    let Some(es) = EsServer::opensearch() else {
        return;
    };
    let config = write_pipeline(&dir, &es.url, "");
    let out = dir.join("out");
    let kills = common::kill_at_random_points(
        || common::run_p(&config, &out, &[]),
        &out,
        full,
        3,
        Duration::ZERO,
    );
    assert!(kills.count > 0, "no kill landed");
    common::assert_ok(&run(&config, &out, &[]));
    assert_documents(es.address(), &expected);
}
