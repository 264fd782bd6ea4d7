//! A real Prometheus server and Pushgateway (Debian's packages, installed by
//! scripts/tools.sh) on free loopback ports, and Prometheus' HTTP query API.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child server, killed when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` and waits (at most 30 s) for the `msg="Listening on"
/// address=127.0.0.1:PORT` line both servers log once they listen.
fn start(mut command: Command, what: &str) -> Server {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("msg=\"Listening on\"")
                && let Some(address) = line.split("address=").nth(1)
            {
                let _ = sender.send(address.split_whitespace().next().unwrap_or("").to_string());
            }
            // Read on to the end: a full pipe would stall the server.
        }
    });
    let address = receiver
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not start listening within 30 s"));
    Server { child, address }
}

/// A Pushgateway (nothing persisted), or `None` when it is not installed.
pub fn pushgateway() -> Option<Server> {
    let program = super::service("STREAMSQL_PUSHGATEWAY", "the Prometheus Pushgateway")?;
    let mut command = Command::new(&program);
    command.args(["--web.listen-address=127.0.0.1:0", "--persistence.file="]);
    Some(start(command, &program))
}

/// A Prometheus server scraping `targets` (`host:port`, `/metrics`) every
/// second, with its data in `dir`; the Pushgateway's labels are kept
/// (`honor_labels`). `None` when Prometheus is not installed.
pub fn prometheus(dir: &Path, targets: &[&str]) -> Option<Server> {
    let program = super::service("STREAMSQL_PROMETHEUS", "Prometheus")?;
    std::fs::create_dir_all(dir).unwrap();
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}
scrape_configs:
  - job_name: streamsql
    honor_labels: true
    static_configs: [ {{ targets: [{list}] }} ]
"
        ),
    )
    .unwrap();
    let mut command = Command::new(&program);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0");
    Some(start(command, &program))
}

/// `GET /api/v1/query?query=<expr>` of Prometheus at `address`: the result
/// vector (each element `{ metric: {labels}, value: [time, "value"] }`), or
/// `None` with the answer while Prometheus is not ready to answer.
fn try_query(address: &str, expr: &str) -> Result<Vec<Value>, String> {
    let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let (status, body) = super::elasticsearch::http(
        address,
        "GET",
        &format!("/api/v1/query?query={encoded}"),
        None,
    );
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match status {
        200 => Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()),
        _ => Err(format!(
            "query {expr}: {status} {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

/// [`try_query`] of a Prometheus that is ready.
pub fn query(address: &str, expr: &str) -> Vec<Value> {
    try_query(address, expr).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (at most `limit`) until `expr` returns at least `series` series;
/// returns the last answer.
pub fn wait_for(address: &str, expr: &str, series: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let found = try_query(address, expr);
        if Instant::now() > deadline {
            return found.unwrap_or_else(|e| panic!("{e}"));
        }
        if let Ok(found) = found
            && found.len() >= series
        {
            return found;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every panel expression of the Grafana dashboard `grafana/dashboards/<name>`,
/// its `$variables` set to `.*` (what "All" selects).
pub fn dashboard_expressions(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("grafana/dashboards")
        .join(name);
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let mut expr = target["expr"].as_str().unwrap().to_string();
            while let Some(start) = expr.find('$') {
                let len = expr[start + 1..]
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(expr.len() - start - 1);
                expr.replace_range(start..start + 1 + len, ".*");
            }
            found.push(expr);
        }
    }
    assert!(!found.is_empty(), "{name} has no panel expressions");
    found
}
