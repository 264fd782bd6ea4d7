//! A lookup table in a (compacted) Kafka topic: the latest value per
//! message key, as compaction keeps it; a message without a value (a
//! tombstone) deletes its key.
//!
//! At start the topic is read to the end each partition has then (the run
//! waits for that, up to `load_timeout`); afterwards new messages are applied
//! every `refresh_interval`. A value that does not decode is skipped,
//! logged with its partition and offset and counted: its key keeps the
//! value it had, as Kafka Streams' log-and-continue handler does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaTableConfig, TableConfig, TableReader, TableStats};
use crate::error::{Result, StreamSqlError};
use crate::source::{Decoder, Records};

/// Most messages one refresh takes, so a burst cannot hold a version back
/// for long; the rest come with the next refresh.
const MOST_PER_REFRESH: usize = 100_000;

pub(super) struct KafkaTable {
    name: String,
    topic: String,
    consumer: BaseConsumer,
    decoder: Decoder,
    load_timeout: Duration,
    /// The latest good value of every key, in key order (so a version's row
    /// order does not depend on arrival).
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    stats: Arc<TableStats>,
}

/// One message read: its key, value (`None`: a tombstone) and where it was.
struct Change {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    origin: Arc<str>,
    offset: i64,
}

/// What one poll brought.
enum Polled {
    Nothing,
    Change(Change),
    /// The end of a partition (as it stands now).
    End(i32),
}

fn kafka_error(topic: &str, e: KafkaError) -> StreamSqlError {
    StreamSqlError::Table(format!("kafka topic `{topic}`: {e}"))
}

impl KafkaTable {
    pub fn new(
        config: &TableConfig,
        kafka: &KafkaTableConfig,
        pipeline: &str,
        stats: Arc<TableStats>,
    ) -> Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &kafka.brokers)
            // Nothing is committed: every run reads the whole topic.
            .set(
                "group.id",
                format!("streamsql-{pipeline}-table-{}", config.name),
            )
            .set("enable.auto.commit", "false")
            // The end of a partition is told, not inferred from its last
            // offset (a transaction marker or a compacted-away tombstone
            // may hold that one).
            .set("enable.partition.eof", "true");
        for (key, value) in &kafka.properties {
            client.set(key, value);
        }
        let consumer: BaseConsumer = client.create().map_err(|e| kafka_error(&kafka.topic, e))?;
        Ok(Self {
            name: config.name.clone(),
            topic: kafka.topic.clone(),
            consumer,
            decoder: Decoder::for_table(config)?,
            load_timeout: kafka.load_timeout,
            values: BTreeMap::new(),
            stats,
        })
    }

    /// Assigns every partition from its start; the partitions to read to
    /// their end.
    fn assign_all(&self) -> Result<Vec<i32>> {
        let timeout = self.load_timeout;
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| kafka_error(&self.topic, e))?;
        let partitions: Vec<i32> = (metadata.topics().iter())
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(StreamSqlError::Table(format!(
                "kafka topic `{}` does not exist or has no partitions",
                self.topic
            )));
        }
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition_offset(&self.topic, *p, Offset::Beginning)
                .map_err(|e| kafka_error(&self.topic, e))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|e| kafka_error(&self.topic, e))?;
        Ok(partitions)
    }

    fn poll(&self, wait: Duration) -> Result<Polled> {
        let message = match self.consumer.poll(wait) {
            None => return Ok(Polled::Nothing),
            Some(Err(KafkaError::PartitionEOF(partition))) => return Ok(Polled::End(partition)),
            Some(message) => message.map_err(|e| kafka_error(&self.topic, e))?,
        };
        let origin: Arc<str> = Arc::from(format!("kafka:{}/{}", self.topic, message.partition()));
        Ok(Polled::Change(Change {
            key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
            value: message.payload().map(<[u8]>::to_vec),
            origin,
            offset: message.offset(),
        }))
    }

    /// Applies `changes` in order: tombstones delete, values that decode
    /// replace; the others are skipped and counted.
    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        let mut records = Records::default();
        let mut ordered = Vec::with_capacity(changes.len());
        for change in changes {
            if change.key.is_empty() {
                self.skip(&change.origin, change.offset, "the message has no key");
                continue;
            }
            match change.value {
                None => ordered.push((change.key, None)),
                Some(value) => {
                    records.push(&value, &change.origin, change.offset as u64, None);
                    ordered.push((change.key, Some((records.lines.len() - 1, value))));
                }
            }
        }
        let (_, decoded, dead_letters) = self.decoder.records(&records.bytes, &records.lines)?;
        let mut good = vec![false; records.lines.len()];
        for line in decoded {
            good[line] = true;
        }
        for letter in &dead_letters {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(table = %self.name, "skipped {}: {}", letter.position, letter.reason);
        }
        for (key, value) in ordered {
            match value {
                None => {
                    self.values.remove(&key);
                }
                Some((line, value)) if good[line] => {
                    self.values.insert(key, value);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn skip(&mut self, origin: &str, offset: i64, why: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(table = %self.name, "skipped {origin}:{offset}: {why}");
    }

    /// Every key's value, decoded (they all decoded when applied).
    fn version(&self) -> Result<RecordBatch> {
        let mut records = Records::default();
        let origin: Arc<str> = Arc::from(format!("kafka:{}", self.topic));
        for (i, value) in self.values.values().enumerate() {
            records.push(value, &origin, i as u64, None);
        }
        Ok(self.decoder.records(&records.bytes, &records.lines)?.0)
    }
}

impl TableReader for KafkaTable {
    fn load(&mut self, stop: &AtomicBool) -> Result<RecordBatch> {
        let mut unread = self.assign_all()?;
        let deadline = Instant::now() + self.load_timeout;
        let mut changes = Vec::new();
        while !unread.is_empty() {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return Err(StreamSqlError::Table(format!(
                    "kafka topic `{}` was not read to its end within load_timeout ({:?}); \
                     partitions left: {:?}",
                    self.topic, self.load_timeout, unread
                )));
            }
            match self.poll(Duration::from_millis(100))? {
                Polled::Nothing => {}
                Polled::End(partition) => unread.retain(|p| *p != partition),
                Polled::Change(change) => {
                    changes.push(change);
                    if changes.len() >= MOST_PER_REFRESH {
                        self.apply(std::mem::take(&mut changes))?;
                    }
                }
            }
        }
        self.apply(changes)?;
        self.version()
    }

    /// The messages that came since the last refresh, applied. A broker
    /// error ends the refresh early; what came before it is applied still
    /// (the consumer has moved past it).
    fn refresh(&mut self, _stop: &AtomicBool) -> Result<Option<RecordBatch>> {
        let mut changes = Vec::new();
        let mut error = None;
        while changes.len() < MOST_PER_REFRESH {
            match self.poll(Duration::ZERO) {
                Ok(Polled::Change(change)) => changes.push(change),
                Ok(Polled::End(_)) => {}
                Ok(Polled::Nothing) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(table = %self.name, "kafka: {e} (librdkafka retries)");
        }
        if changes.is_empty() {
            return Ok(None);
        }
        self.apply(changes)?;
        self.version().map(Some)
    }
}
