//! A tansu broker (a Kafka-protocol broker in Rust, installed by
//! scripts/tools.sh) on a free loopback port, for the Kafka tests and the
//! Kafka benchmark.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One broker at a time per test binary: tests run in parallel, and several
/// brokers with their clients on two cores starve each other into
/// multi-second fetch stalls that end `stop_when_idle` runs early.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A tansu broker with its data in a scratch folder, killed when dropped.
pub struct Broker {
    child: Child,
    _turn: MutexGuard<'static, ()>,
    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub address: String,
}

impl Broker {
    /// Starts a broker storing its data (sqlite) in `dir`.
    pub fn start(dir: &Path) -> Self {
        // A test that failed holding the turn has still released it.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let program = std::env::var("STREAMSQL_TANSU").unwrap_or_else(|_| "tansu".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(&program)
            .current_dir(dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{program}` ({e}): run through scripts/test.sh or scripts/bench.sh, which install tansu")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            _turn: turn,
            address: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
