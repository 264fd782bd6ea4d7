//! An Apache Kafka broker (KRaft mode, one node acting as broker and
//! controller) on free loopback ports, for the Kafka tests and the Kafka
//! benchmark. Its jars come from Maven Central through scripts/tools.sh
//! (`STREAMSQL_KAFKA_LIB`); it runs on the machine's Java.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One broker at a time per test binary: a JVM broker and its clients on two
/// cores are enough load, and a second broker would stall both.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A broker with its log directory in a scratch folder, killed when dropped.
pub struct Broker {
    child: Child,
    _turn: MutexGuard<'static, ()>,
    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub address: String,
}

impl Broker {
    /// Starts a broker keeping its data in `dir`; `None` when no broker is
    /// installed (the test is then skipped, see [`super::service`]).
    pub fn start(dir: &Path) -> Option<Self> {
        let lib = super::service("STREAMSQL_KAFKA_LIB", "Apache Kafka")?;
        // A test that failed holding the turn has still released it.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let (port, controller) = (super::free_port(), super::free_port());
        std::fs::create_dir_all(dir).unwrap();
        let properties = dir.join("server.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
",
                dir.join("data").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("log4j2.properties"),
            "rootLogger.level = warn\nrootLogger.appenderRef.file.ref = file\n\
             appender.file.type = File\nappender.file.name = file\n\
             appender.file.fileName = broker.log\nappender.file.layout.type = PatternLayout\n\
             appender.file.layout.pattern = %d %p %c %m%n\n",
        )
        .unwrap();
        let java = |class: &str| {
            let mut command = Command::new("java");
            command
                .current_dir(dir)
                .args(["-Xms256m", "-Xmx768m", "-XX:+UseSerialGC"])
                .arg("-Dlog4j2.configurationFile=log4j2.properties")
                .args(["-cp", &format!("{lib}/*"), class])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            command
        };
        let formatted = java("kafka.tools.StorageTool")
            .args([
                "format",
                "--standalone",
                "--cluster-id",
                "c3RyZWFtc3FsLXRlc3RzAA",
            ])
            .args(["--config", &properties.display().to_string()])
            .status()
            .expect("java (Kafka needs Java 17 or newer)");
        assert!(
            formatted.success(),
            "formatting the Kafka log directory failed"
        );
        let child = java("kafka.Kafka")
            .arg(properties.display().to_string())
            .spawn()
            .expect("start the Kafka broker");
        let mut broker = Self {
            child,
            _turn: turn,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "the Kafka broker exited ({status}): see {}",
                    dir.join("broker.log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(broker)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
