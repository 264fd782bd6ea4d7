//! `streamsql replay`: the trace simulator and Kafka producer of seeds 000
//! and 001. Google trace tables (`job_events`, `task_events`) are merged into
//! one global time order and produced to their topics, keyed by job id, as
//! fast as possible or paced in scaled real time with times rebased to now.

mod merge;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

pub use merge::{TimeMerge, TraceLine};

use crate::error::{Result, StreamSqlError};

#[derive(clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// TOPIC=PATH: a table's folder (its `part-?????-of-?????.csv[.gz]`
    /// files) or a glob, produced to TOPIC. Repeat for several tables.
    #[arg(
        long = "table",
        value_name = "TOPIC=PATH",
        default_value = "task_events=datasets/google-2011-sample/task_events"
    )]
    tables: Vec<String>,
    /// Partitions of the topics created (existing topics are kept).
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Pace events at this multiple of the trace's speed, times rebased
    /// to now (default: as fast as possible, times unchanged).
    #[arg(long)]
    speedup: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

pub async fn execute(args: Args) -> Result<()> {
    let tables = args
        .tables
        .iter()
        .map(|t| replay_table(t))
        .collect::<Result<Vec<_>>>()?;
    let topics: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    create_topics(&args.brokers, &topics, args.partitions).await?;
    let options = ReplayOptions {
        brokers: args.brokers,
        tables,
        partitions: args.partitions,
        speedup: args.speedup,
        limit: args.limit,
        progress: !args.quiet,
    };
    let stats = tokio::task::spawn_blocking(move || produce(&options))
        .await
        .map_err(|e| crate::internal_error!("the replay thread: {e}"))??;
    println!(
        "replayed {} events in {:.2} s ({:.0} events/s)",
        stats.produced,
        stats.elapsed.as_secs_f64(),
        stats.rate()
    );
    Ok(())
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub brokers: String,
    /// Per table: its topic and its files (`part-?????-of-?????.csv[.gz]`, in order).
    pub tables: Vec<(String, Vec<PathBuf>)>,
    /// Partitions of topics this command creates (existing topics are kept).
    pub partitions: i32,
    /// `Some(f)`: pace events at `f` times the trace's speed, with their
    /// times rebased so that the first event happens now. `None`: as fast
    /// as possible, times unchanged.
    pub speedup: Option<f64>,
    /// Stop after this many events.
    pub limit: Option<u64>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    pub produced: u64,
    pub elapsed: Duration,
}

impl ReplayStats {
    pub fn rate(&self) -> f64 {
        self.produced as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Counts deliveries the broker refused.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && self.failed.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::error!("replay: a message was not delivered: {e}");
        }
    }
}

/// Creates the topics that do not exist yet.
pub async fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(kafka_error)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(&new, &options)
        .await
        .map_err(kafka_error)?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(StreamSqlError::Internal(format!(
                    "cannot create topic {topic}: {code}"
                )));
            }
        }
    }
    Ok(())
}

fn kafka_error(e: KafkaError) -> StreamSqlError {
    StreamSqlError::Internal(format!("kafka: {e}"))
}

/// Produces every line of `options.tables` in time order (blocking).
pub fn produce(options: &ReplayOptions) -> Result<ReplayStats> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())
        .map_err(kafka_error)?;
    let files: Vec<Vec<PathBuf>> = options.tables.iter().map(|(_, f)| f.clone()).collect();
    let mut merge = TimeMerge::open(&files)?;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut first_time = None;
    let mut produced = 0u64;
    let wall_start_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    while let Some(TraceLine { table, time, line }) = merge.next_line()? {
        if options.limit.is_some_and(|limit| produced >= limit) {
            break;
        }
        let payload = match options.speedup {
            None => line,
            Some(speedup) => {
                let first = *first_time.get_or_insert(time);
                let offset_us = ((time - first) as f64 / speedup) as i64;
                let due = Duration::from_micros(offset_us.max(0) as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(wait);
                }
                rebase_time(&line, wall_start_us + offset_us)
            }
        };
        // Key by job id (third field of both tables): a job's events stay in
        // one partition, in order.
        let key = line_field(&payload, 2).to_vec();
        let topic = &options.tables[table].0;
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(kafka_error(e)),
            }
        }
        produced += 1;
        if options.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let rate = produced as f64 / started.elapsed().as_secs_f64();
            eprint!("\rreplayed {produced} events ({rate:.0} events/s)   ");
            let _ = std::io::stderr().flush();
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(kafka_error)?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(StreamSqlError::Internal(format!(
            "{failed} of {produced} messages were not delivered"
        )));
    }
    if options.progress {
        eprintln!();
    }
    Ok(ReplayStats {
        produced,
        elapsed: started.elapsed(),
    })
}

/// The `n`-th comma-separated field of `line` (empty when missing).
fn line_field(line: &[u8], n: usize) -> &[u8] {
    line.split(|b| *b == b',').nth(n).unwrap_or_default()
}

/// `line` with its first field (the time, µs) replaced by `time_us`.
fn rebase_time(line: &[u8], time_us: i64) -> Vec<u8> {
    let rest = line
        .iter()
        .position(|b| *b == b',')
        .map_or(&[][..], |comma| &line[comma..]);
    let mut out = time_us.to_string().into_bytes();
    out.extend_from_slice(rest);
    out
}

/// `TOPIC=PATH` of `replay --table`: the topic and the table's files in order.
fn replay_table(spec: &str) -> Result<(String, Vec<PathBuf>)> {
    let bad = |why: &str| -> StreamSqlError {
        crate::error::Diagnostic::new("--table", None, format!("`{spec}`: {why}"))
            .with_fix("write it as TOPIC=PATH, e.g. task_events=../shared/datasets/google-2011/task_events")
            .into()
    };
    let (topic, path) = spec.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let path = PathBuf::from(path);
    let pattern = if path.is_dir() {
        path.join("part-?????-of-?????.csv*")
    } else {
        path
    };
    let mut files: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
        .map_err(|e| bad(&e.to_string()))?
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .collect();
    if files.is_empty() {
        return Err(bad(&format!("no file matches {}", pattern.display())));
    }
    files.sort();
    Ok((topic.to_string(), files))
}
