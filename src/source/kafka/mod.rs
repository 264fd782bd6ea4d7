//! The Kafka source: a consumer group member (librdkafka, through the
//! `rdkafka` crate) on a thread of its own, cutting micro-batches by size or
//! time; they are decoded on several threads ([`super::ordered`]) and taken
//! back in poll order, where the per-partition clocks run. Offsets are ours: they travel in checkpoints, a restart seeks to
//! them, and they are committed to the group after each checkpoint so that
//! monitoring tools see the lag.
//!
//! The watermark is per partition: the source's event-time progress is the
//! minimum, over the partitions that are active (a message within
//! `idle_timeout`), of the newest event time each has delivered. A batch's
//! rows are judged in partition order, each against the progress made by the
//! rows before it.

mod config;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

pub use config::{KafkaConfig, StartOffset};

use super::ordered::{PoolInput, PoolOutput, ordered_pool};
use super::replay::panic_message;
use super::{
    Decoder, MAX_BATCH_BYTES, RawRecord, SourceBatch, SourceConfig, SourcePosition, wrong_position,
};
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::sink::DeadLetter;

pub struct KafkaSource {
    /// `None` once dropped: closing them stops the reader thread.
    channels: Option<Channels>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Set by the reader when its input ended as it should (not by a panic).
    ended: Arc<std::sync::atomic::AtomicBool>,
    clocks: PartitionClocks,
    lag: KafkaLag,
}

/// Per assigned partition of a topic, the messages the pipeline has not
/// processed yet: the partition's high watermark (as the reader last saw
/// it, about every second, also while idle) minus the offset after the last
/// message the runtime processed (before its first batch: the reader's).
#[derive(Debug, Clone)]
pub struct KafkaLag {
    topic: String,
    offsets: Arc<Mutex<LagOffsets>>,
}

#[derive(Debug, Default)]
struct LagOffsets {
    /// Per assigned partition, its high watermark.
    high: BTreeMap<i32, i64>,
    /// The reader's positions (read ahead of the runtime).
    read: BTreeMap<i32, i64>,
    /// The runtime's positions.
    processed: BTreeMap<i32, i64>,
}

impl KafkaLag {
    /// (topic, partition, messages not processed yet) per assigned partition.
    pub fn read(&self) -> Vec<(String, i32, i64)> {
        let offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        offsets
            .high
            .iter()
            .filter_map(|(p, high)| {
                let from = offsets.processed.get(p).or(offsets.read.get(p))?;
                Some((self.topic.clone(), *p, (high - from).max(0)))
            })
            .collect()
    }

    /// The runtime has processed every message before `offsets`.
    pub fn processed(&self, offsets: &BTreeMap<i32, i64>) {
        self.offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .processed = offsets.clone();
    }
}

struct Channels {
    /// The polled batches, decoded on several threads, in the order polled.
    batches: PoolOutput<Result<DecodedBatch>>,
    /// Offsets to commit to the group once their checkpoint is written.
    commits: std::sync::mpsc::Sender<BTreeMap<i32, i64>>,
}

impl Drop for KafkaSource {
    /// Closes the channels and waits for the reader thread to close the
    /// consumer, which leaves the group at once: the other members need not
    /// wait out a session timeout, and a restart finds the group settled.
    fn drop(&mut self) {
        self.channels = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl KafkaSource {
    /// Joins the consumer group and starts consuming: each partition resumes
    /// at its offset in `resume`; a partition the checkpoint lacks (it had
    /// another owner in the group) at the group's committed offset; with no
    /// checkpoint at all, every partition starts at `kafka.start`.
    pub fn start(
        config: &SourceConfig,
        kafka: &KafkaConfig,
        pipeline: &str,
        resume: Option<&SourcePosition>,
        decode_threads: usize,
    ) -> Result<Self> {
        let offsets = match resume {
            Some(SourcePosition::Kafka { topic, offsets }) if *topic == kafka.topic => {
                offsets.clone()
            }
            // The topic changed: its offsets mean nothing for the new one.
            Some(SourcePosition::Kafka { .. }) | None => BTreeMap::new(),
            Some(other) => return Err(wrong_position(&config.name, other)),
        };
        let group = kafka
            .group
            .clone()
            .unwrap_or_else(|| format!("streamsql-{pipeline}-{}", config.name));
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("session.timeout.ms", "6000")
            // Read-ahead: librdkafka prefetches up to 64 MiB by default;
            // 16 MiB keeps the reader busy without holding a backlog.
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.max.bytes", "16777216")
            .set(
                "auto.offset.reset",
                match kafka.start {
                    StartOffset::Earliest => "earliest",
                    StartOffset::Latest => "latest",
                },
            );
        for (key, value) in &kafka.properties {
            client.set(key, value);
        }
        // librdkafka's own `debug` contexts log at debug level.
        if kafka.properties.contains_key("debug") {
            client.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        let shared = Arc::new(Mutex::new(Assignment {
            positions: offsets,
            partitions: BTreeSet::new(),
            assigned_before: false,
        }));
        let lags = Arc::new(Mutex::new(LagOffsets::default()));
        let context = GroupContext {
            topic: kafka.topic.clone(),
            assignment: Arc::clone(&shared),
            // A run without a checkpoint (new, or --from-scratch) computes
            // its outputs from the start: the offsets the group committed
            // belong to state that is gone.
            use_committed: resume.is_some(),
            start: kafka.start,
        };
        let consumer: BaseConsumer<GroupContext> =
            client.create_with_context(context).map_err(|e| {
                StreamSqlError::from(
                    Diagnostic::new(
                        "pipelines.yaml",
                        None,
                        format!(
                            "source `{}`: cannot create a Kafka consumer: {e}",
                            config.name
                        ),
                    )
                    .with_fix("check `kafka.brokers` and `kafka.properties`"),
                )
            })?;
        consumer
            .subscribe(&[&kafka.topic])
            .map_err(|e| StreamSqlError::Internal(format!("subscribe to {}: {e}", kafka.topic)))?;
        let decoder = Arc::new(Decoder::new(config)?);
        let schema = Arc::clone(decoder.schema());
        let (mut sender, batches) = ordered_pool(
            &config.name,
            decode_threads,
            Arc::new({
                let decoder = Arc::clone(&decoder);
                move |polled: Result<PolledBatch>| polled?.decode(&decoder)
            }),
        )?;
        let (commits, commit_requests) = std::sync::mpsc::channel();
        let reader = Reader {
            consumer,
            decoder,
            topic: kafka.topic.clone(),
            origins: HashMap::new(),
            batch_rows: kafka.batch_rows,
            batch_timeout: kafka.batch_timeout,
            stop_when_idle: kafka.stop_when_idle,
            stop_at_end: kafka.stop_at_end,
            end_offsets: HashMap::new(),
            assignment: shared,
            lags: Arc::clone(&lags),
        };
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader_ended = Arc::clone(&ended);
        let reader = std::thread::Builder::new()
            .name(format!("kafka-{}", config.name))
            .spawn(move || {
                reader.run(&mut sender, &commit_requests, &reader_ended);
            })
            .map_err(|e| StreamSqlError::io("cannot start the Kafka thread", e))?;
        Ok(Self {
            channels: Some(Channels { batches, commits }),
            reader: Some(reader),
            ended,
            clocks: PartitionClocks {
                partitions: BTreeMap::new(),
                idle_timeout: kafka.idle_timeout,
                last_progress: i64::MIN,
                schema,
            },
            lag: KafkaLag {
                topic: kafka.topic.clone(),
                offsets: lags,
            },
        })
    }

    pub fn lag(&self) -> &KafkaLag {
        &self.lag
    }

    /// The next micro-batch; `None` once `stop_at_end` or `stop_when_idle`
    /// ended the input. A reader thread that died fails the run.
    pub async fn next_batch(&mut self) -> Option<Result<SourceBatch>> {
        let channels = self.channels.as_mut()?;
        while let Some(decoded) = channels.batches.recv().await {
            match decoded.and_then(|d| self.clocks.sequence(d)) {
                Ok(Some(batch)) => return Some(Ok(batch)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
        if let Err(e) = channels.batches.join().await {
            return Some(Err(e));
        }
        if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let reader = self.reader.take()?;
        let why = match tokio::task::spawn_blocking(move || reader.join()).await {
            Ok(Err(panic)) => panic_message(&panic),
            _ => "it stopped without a reason".into(),
        };
        Some(crate::internal_err!("the Kafka reader thread died: {why}"))
    }

    /// Commits `position` to the consumer group (after its checkpoint).
    pub fn commit(&self, position: &SourcePosition) {
        if let (SourcePosition::Kafka { offsets, .. }, Some(channels)) = (position, &self.channels)
        {
            // A closed channel means the reader stopped; nothing to commit to.
            let _ = channels.commits.send(offsets.clone());
        }
    }
}

/// What the group assigned to us, shared with the rebalance callback.
struct Assignment {
    /// Per partition, the next offset to read (from the checkpoint, then as
    /// consumed): a partition assigned again resumes there, or at the group's
    /// committed offset if another member has read and committed further.
    positions: BTreeMap<i32, i64>,
    partitions: BTreeSet<i32>,
    /// Whether the group has assigned partitions to this run before: every
    /// later assignment follows a rebalance, and a partition may come back
    /// after another member read further and committed.
    assigned_before: bool,
}

struct GroupContext {
    topic: String,
    assignment: Arc<Mutex<Assignment>>,
    /// At the first assignment, a partition with no position starts at the
    /// group's committed offset (when this is set and it has one), else at
    /// `start`.
    use_committed: bool,
    start: StartOffset,
}

impl GroupContext {
    /// The offsets `partitions` start at, made concrete so that every
    /// assigned partition has a position: the next checkpoint records it, and
    /// `stop_at_end` can tell when it is done. A partition starts at its own
    /// position (`known`) or, with `use_committed`, at the group's committed
    /// offset when that is further (another member read on and committed);
    /// with neither, at `start`.
    fn starting_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &[i32],
        use_committed: bool,
        known: &BTreeMap<i32, i64>,
    ) -> rdkafka::error::KafkaResult<BTreeMap<i32, i64>> {
        let timeout = Duration::from_secs(10);
        let mut offsets: BTreeMap<i32, i64> = partitions
            .iter()
            .filter_map(|p| known.get(p).map(|offset| (*p, *offset)))
            .collect();
        if use_committed && !partitions.is_empty() {
            let mut list = TopicPartitionList::new();
            for p in partitions {
                list.add_partition(&self.topic, *p);
            }
            for element in consumer.committed_offsets(list, timeout)?.elements() {
                if let Offset::Offset(committed) = element.offset() {
                    let offset = offsets.entry(element.partition()).or_insert(committed);
                    *offset = (*offset).max(committed);
                }
            }
        }
        for p in partitions {
            if !offsets.contains_key(p) {
                let (low, high) = consumer.fetch_watermarks(&self.topic, *p, timeout)?;
                let offset = match self.start {
                    StartOffset::Earliest => low,
                    StartOffset::Latest => high,
                };
                offsets.insert(*p, offset);
            }
        }
        Ok(offsets)
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut assignment = match self.assignment.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                // First assignment: positions from the checkpoint; the rest
                // per `use_committed`. After a rebalance: every partition at
                // its own position or the group's committed offset, whichever
                // is further, so a partition handed over mid-run (another
                // member stopped) is not read twice.
                let (lookup, use_committed) = if assignment.assigned_before {
                    (partitions.clone(), true)
                } else {
                    let new = partitions
                        .iter()
                        .copied()
                        .filter(|p| !assignment.positions.contains_key(p))
                        .collect();
                    (new, self.use_committed)
                };
                match self.starting_offsets(consumer, &lookup, use_committed, &assignment.positions)
                {
                    Ok(offsets) => assignment.positions.extend(offsets),
                    // librdkafka then starts them at the committed offset or
                    // `auto.offset.reset`, as a plain consumer would.
                    Err(e) => tracing::error!(
                        "kafka: cannot look up where {} partitions {lookup:?} start: {e}",
                        self.topic
                    ),
                }
                for p in &partitions {
                    if let Some(offset) = assignment.positions.get(p)
                        && let Err(e) =
                            tpl.set_partition_offset(&self.topic, *p, Offset::Offset(*offset))
                    {
                        tracing::error!("cannot seek {}/{p} to {offset}: {e}", self.topic);
                    }
                }
                tracing::info!("kafka: assigned {} partitions {partitions:?}", self.topic);
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!("kafka: assign failed: {e}");
                }
                assignment.partitions = partitions.into_iter().collect();
                assignment.assigned_before = true;
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!("kafka: partitions of {} revoked", self.topic);
                if let Err(e) = consumer.unassign() {
                    tracing::error!("kafka: unassign failed: {e}");
                }
                assignment.partitions.clear();
            }
            other => tracing::error!("kafka: rebalance error {other:?}"),
        }
    }
}

/// Per partition: how far its event time has come, and when it last spoke.
struct PartitionClock {
    max_event_time: Option<i64>,
    last_message: Instant,
}

struct Reader {
    consumer: BaseConsumer<GroupContext>,
    decoder: Arc<Decoder>,
    topic: String,
    /// `kafka:<topic>/<partition>` per partition, for dead-letter positions.
    origins: HashMap<i32, Arc<str>>,
    batch_rows: usize,
    batch_timeout: Duration,
    stop_when_idle: Option<Duration>,
    stop_at_end: bool,
    /// Per partition, its (first, end) offsets when first seen assigned
    /// (`stop_at_end`).
    end_offsets: HashMap<i32, (i64, i64)>,
    assignment: Arc<Mutex<Assignment>>,
    lags: Arc<Mutex<LagOffsets>>,
}

/// One partition's records of the batch being cut.
#[derive(Default)]
struct PartitionBuffer {
    bytes: Vec<u8>,
    records: Vec<RawRecord>,
    /// Messages longer than `max_record_bytes`, as dead letters.
    too_long: Vec<DeadLetter>,
}

impl Reader {
    /// Consumes until stopped; then, the input ended, keeps committing the
    /// offsets of the last checkpoints until the pipeline lets go.
    fn run(
        mut self,
        sender: &mut PoolInput<Result<PolledBatch>>,
        commit_requests: &std::sync::mpsc::Receiver<BTreeMap<i32, i64>>,
        ended: &std::sync::atomic::AtomicBool,
    ) {
        if let Err(e) = self.consume(sender, commit_requests) {
            sender.send(Err(e));
        }
        ended.store(true, std::sync::atomic::Ordering::SeqCst);
        sender.close();
        for offsets in commit_requests {
            self.commit(&offsets, CommitMode::Sync);
        }
    }

    fn consume(
        &mut self,
        sender: &mut PoolInput<Result<PolledBatch>>,
        commit_requests: &std::sync::mpsc::Receiver<BTreeMap<i32, i64>>,
    ) -> Result<()> {
        // The idle clock of `stop_when_idle` runs from the last message or
        // the last change of assignment, whichever is later.
        let mut last_message = Instant::now();
        let mut last_assigned = BTreeSet::new();
        let mut last_lags = Instant::now();
        loop {
            while let Ok(offsets) = commit_requests.try_recv() {
                self.commit(&offsets, CommitMode::Async);
            }
            let (buffers, count) = self.poll_batch()?;
            let now = Instant::now();
            if now.duration_since(last_lags) >= Duration::from_secs(1) {
                self.update_lags();
                last_lags = now;
            }
            let assigned = self.lock().partitions.clone();
            if count > 0 || assigned != last_assigned {
                last_message = now;
                last_assigned = assigned;
            } else if self
                .stop_when_idle
                .is_some_and(|idle| now.duration_since(last_message) >= idle)
            {
                tracing::info!("kafka: {} idle, stopping", self.topic);
                return Ok(());
            }
            // An empty poll goes on too: a partition may have gone idle,
            // which moves the watermark (see [`PartitionClocks::sequence`]).
            let polled = self.polled(buffers, count, now);
            if !sender.send(Ok(polled)) {
                return Ok(());
            }
            if self.stop_at_end && self.at_end()? {
                tracing::info!("kafka: {} read to its end, stopping", self.topic);
                return Ok(());
            }
        }
    }

    /// Records each assigned partition's high watermark as librdkafka keeps
    /// it from its fetch responses (no request to the broker), and the
    /// reader's positions, for [`KafkaLag`]. (librdkafka's own statistics
    /// count the lag from the group's committed offset, which trails until
    /// the next checkpoint.)
    fn update_lags(&self) {
        let (assigned, positions) = {
            let assignment = self.lock();
            (assignment.partitions.clone(), assignment.positions.clone())
        };
        let Ok(topic) = std::ffi::CString::new(self.topic.as_str()) else {
            return;
        };
        let mut high_watermarks = BTreeMap::new();
        for partition in assigned {
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: the client handle lives as long as `self.consumer`,
            // `topic` is a NUL-terminated string, and `low`/`high` are valid
            // places for the two offsets; the call only reads cached state.
            let answer = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    self.consumer.client().native_ptr(),
                    topic.as_ptr(),
                    partition,
                    &mut low,
                    &mut high,
                )
            };
            if answer == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
                high_watermarks.insert(partition, high);
            }
        }
        let mut offsets = self.lags.lock().unwrap_or_else(|e| e.into_inner());
        offsets.high = high_watermarks;
        offsets.read = positions;
    }

    /// Whether every assigned partition has been read up to the end offset
    /// it had when it was assigned.
    fn at_end(&mut self) -> Result<bool> {
        let (assigned, positions) = {
            let assignment = self.lock();
            (assignment.partitions.clone(), assignment.positions.clone())
        };
        if assigned.is_empty() {
            return Ok(false);
        }
        for partition in assigned {
            let (low, high) = match self.end_offsets.get(&partition) {
                Some(offsets) => *offsets,
                None => {
                    let offsets = self
                        .consumer
                        .fetch_watermarks(&self.topic, partition, Duration::from_secs(30))
                        .map_err(|e| {
                            StreamSqlError::Internal(format!(
                                "kafka: end offset of {}/{partition}: {e}",
                                self.topic
                            ))
                        })?;
                    self.end_offsets.insert(partition, offsets);
                    offsets
                }
            };
            let read_to = match positions.get(&partition) {
                Some(next) => *next,
                // Nothing read yet: done only if there is nothing to read.
                None if low == high => high,
                None => return Ok(false),
            };
            if read_to < high {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Polls until `batch_rows` messages or `batch_timeout`.
    fn poll_batch(&mut self) -> Result<(BTreeMap<i32, PartitionBuffer>, usize)> {
        let deadline = Instant::now() + self.batch_timeout;
        let mut buffers: BTreeMap<i32, PartitionBuffer> = BTreeMap::new();
        let (mut count, mut bytes) = (0, 0);
        while count < self.batch_rows && bytes < MAX_BATCH_BYTES {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let message = match self.consumer.poll(remaining) {
                None => break,
                Some(Err(e)) => {
                    // librdkafka retries broker errors itself; say so and go on.
                    tracing::warn!("kafka: {e}");
                    continue;
                }
                Some(Ok(message)) => message,
            };
            let partition = message.partition();
            let topic = &self.topic;
            let origin = self
                .origins
                .entry(partition)
                .or_insert_with(|| Arc::from(format!("kafka:{topic}/{partition}")));
            let buffer = buffers.entry(partition).or_default();
            let payload = message.payload().unwrap_or_default();
            bytes += payload.len();
            let start = buffer.bytes.len();
            let record = RawRecord {
                bytes: start..start + payload.len(),
                origin: Arc::clone(origin),
                index: message.offset() as u64,
                timestamp: message.timestamp().to_millis(),
            };
            if payload.len() > self.decoder.max_record_bytes() {
                let letter = self
                    .decoder
                    .too_long(&record, payload, payload.len() as u64);
                buffer.too_long.push(letter);
            } else {
                buffer.bytes.extend_from_slice(payload);
                buffer.bytes.push(b'\n');
                buffer.records.push(record);
            }
            self.lock()
                .positions
                .insert(partition, message.offset() + 1);
            count += 1;
        }
        Ok((buffers, count))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Assignment> {
        match self.assignment.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The batch just polled, with where the source stands after it.
    fn polled(
        &self,
        buffers: BTreeMap<i32, PartitionBuffer>,
        count: usize,
        polled_at: Instant,
    ) -> PolledBatch {
        let assignment = self.lock();
        PolledBatch {
            buffers,
            count,
            position: SourcePosition::Kafka {
                topic: self.topic.clone(),
                offsets: assignment.positions.clone(),
            },
            assigned: assignment.partitions.clone(),
            polled_at,
        }
    }

    fn commit(&self, offsets: &BTreeMap<i32, i64>, mode: CommitMode) {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            if list
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&list, mode) {
            tracing::warn!("kafka: committing offsets to the group failed: {e}");
        }
    }
}

/// A batch as polled, before decoding: each partition's records.
struct PolledBatch {
    buffers: BTreeMap<i32, PartitionBuffer>,
    /// How many messages it holds.
    count: usize,
    position: SourcePosition,
    /// The partitions assigned when it was polled.
    assigned: BTreeSet<i32>,
    polled_at: Instant,
}

impl PolledBatch {
    fn decode(self, decoder: &Decoder) -> Result<DecodedBatch> {
        let mut parts = Vec::new();
        for (partition, buffer) in self.buffers {
            let mut batch =
                decoder.decode(&buffer.bytes, &buffer.records, self.position.clone())?;
            batch.dead_letters.extend(buffer.too_long);
            parts.push((partition, batch));
        }
        Ok(DecodedBatch {
            parts,
            count: self.count,
            position: self.position,
            assigned: self.assigned,
            polled_at: self.polled_at,
        })
    }
}

/// A polled batch decoded, partition by partition.
struct DecodedBatch {
    parts: Vec<(i32, SourceBatch)>,
    count: usize,
    position: SourcePosition,
    assigned: BTreeSet<i32>,
    polled_at: Instant,
}

/// Per partition, how far its event time has come and when it last spoke:
/// kept where the decoded batches arrive in poll order, so the watermark
/// is the one a single thread would compute.
struct PartitionClocks {
    partitions: BTreeMap<i32, PartitionClock>,
    idle_timeout: Duration,
    /// The event-time progress of the last batch handed on.
    last_progress: i64,
    schema: SchemaRef,
}

impl PartitionClocks {
    /// Tracks per-partition event time over a decoded batch and joins its
    /// partitions' rows into one batch. `None` when it brings neither rows
    /// nor progress (an empty poll while no partition went idle).
    fn sequence(&mut self, decoded: DecodedBatch) -> Result<Option<SourceBatch>> {
        let DecodedBatch {
            parts: decoded_parts,
            count,
            position,
            assigned,
            polled_at: now,
        } = decoded;
        // Partitions that delivered, and newly assigned ones, are active now.
        let delivered: BTreeSet<i32> = decoded_parts.iter().map(|(p, _)| *p).collect();
        for partition in delivered.iter().chain(&assigned) {
            let clock = self.partitions.entry(*partition).or_insert(PartitionClock {
                max_event_time: None,
                last_message: now,
            });
            if delivered.contains(partition) {
                clock.last_message = now;
            }
        }
        let mut parts = Vec::new();
        let mut row_progress = Vec::new();
        for (partition, mut batch) in decoded_parts {
            // Within this partition's rows the other partitions stand still.
            let others = self.event_time_progress_without(&assigned, partition, now);
            let clock = self
                .partitions
                .get_mut(&partition)
                .ok_or_else(|| crate::internal_error!("no clock for partition {partition}"))?;
            let mut newest = clock.max_event_time.unwrap_or(i64::MIN);
            let mut seen = clock.max_event_time.is_some();
            for t in &batch.event_time {
                row_progress.push(match seen {
                    true => others.min(newest),
                    false => i64::MIN,
                });
                newest = newest.max(*t);
                seen = true;
            }
            if seen {
                clock.max_event_time = Some(newest);
            }
            batch.progress.clear();
            parts.push(batch);
        }
        let progress = self.event_time_progress_without(&assigned, -1, now);
        // Handed on when there are rows, or when the watermark may move.
        if count == 0 && progress <= self.last_progress {
            return Ok(None);
        }
        self.last_progress = self.last_progress.max(progress);
        let rows: Vec<&RecordBatch> = parts.iter().map(|p| &p.rows).collect();
        Ok(Some(SourceBatch {
            rows: concat_batches(&self.schema, rows)?,
            event_time: parts
                .iter()
                .flat_map(|p| p.event_time.iter().copied())
                .collect(),
            progress: row_progress,
            dead_letters: parts
                .iter_mut()
                .flat_map(|p| p.dead_letters.drain(..))
                .collect(),
            lines: parts.iter().map(|p| p.lines).sum(),
            position,
            event_time_progress: progress,
        }))
    }

    /// The minimum event time over the assigned partitions that are active
    /// (a message within `idle_timeout`), leaving out partition `except`;
    /// `i64::MIN` while an active one has none yet; `i64::MAX` when none
    /// is active but `except` (`i64::MIN` when none is active at all).
    fn event_time_progress_without(
        &self,
        assigned: &BTreeSet<i32>,
        except: i32,
        now: Instant,
    ) -> i64 {
        let active = |p: &&i32| {
            self.partitions
                .get(p)
                .is_some_and(|c| now.duration_since(c.last_message) < self.idle_timeout)
        };
        if !assigned.iter().any(|p| active(&p)) {
            return i64::MIN;
        }
        assigned
            .iter()
            .filter(active)
            .filter(|p| **p != except)
            .map(|p| self.partitions[p].max_event_time.unwrap_or(i64::MIN))
            .min()
            .unwrap_or(i64::MAX)
    }
}
