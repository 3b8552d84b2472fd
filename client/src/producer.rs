//! The producer: per-partition batching, key hashing, sticky partitioning, compression,
//! acks, retries with ordering kept, delivery futures, flush.
//!
//! Data flow: [`Producer::send`] picks a partition and appends the record to that
//! partition's open batch (under one mutex, no I/O) and returns a [`DeliveryFuture`].
//! A sender task closes a batch when it reaches `batch_size`, when `linger` has passed,
//! or on flush, encodes it outside the lock, groups ready batches by leader and sends
//! one `Produce` request per leader. Each partition has at most one request in flight,
//! so a retried batch can never be overtaken by a later one: ordering holds across
//! retries. While a request is in flight the partition's open batch keeps growing (up
//! to `batch_size_max`), which is what lets one partition reach high throughput.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
// hashbrown's default hasher is foldhash: the producer's maps are keyed by its own
// topics and leader addresses, not by untrusted input, so SipHash buys nothing.
use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;
use sluice_proto::v1;
use sluice_proto::{BatchBuilder, Compression, ErrorCode, Header};
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::cluster::Cluster;
use crate::partitioner::partition_for_key;
use crate::{ClientConfig, Error};

mod delivery;
mod split;

use delivery::{BatchResult, BatchShared};
pub use delivery::{DeliveryFuture, RecordMetadata};

/// How many replicas must have a record before it counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget: delivered once handed to the network; no offset is known.
    None,
    /// The leader appended it.
    Leader,
    /// Every in-sync replica has it (and at least `min.insync.replicas` are in sync).
    All,
}

impl Acks {
    pub fn wire(self) -> i32 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// `all`, `-1`, `1` or `0`.
    pub fn parse(s: &str) -> Option<Acks> {
        match s {
            "all" | "-1" => Some(Acks::All),
            "1" => Some(Acks::Leader),
            "0" => Some(Acks::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// Producer settings, with Kafka's defaults where Kafka has one.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// `linger.ms`: how long a non-full batch waits for more records.
    pub linger: Duration,
    /// `batch.size`: a batch this large is sent without waiting for `linger`.
    pub batch_size: usize,
    /// Largest batch; a batch grows past `batch_size` only while its partition has a
    /// request in flight. A batch over the topic's `max.message.bytes` is split when
    /// the leader refuses it, and its partition's batches are built smaller from then on.
    pub batch_size_max: usize,
    pub compression: Compression,
    pub request_timeout: Duration,
    /// `delivery.timeout.ms`: give up on a record this long after `send`. A record that
    /// kept failing with a retriable error fails with that last error (its code kept).
    pub delivery_timeout: Duration,
    pub retry_backoff: Duration,
    /// `buffer.memory`: `send` waits while this many bytes are unacknowledged.
    pub buffer_memory: usize,
    /// Idempotence (with acks=all): the cluster gives this producer an id, batches carry
    /// per-partition sequence numbers, and a leader answers a retry of a batch it
    /// already holds with the original offset, so retries never duplicate records.
    pub idempotence: bool,
    /// `max.request.size`: the largest record `send` accepts (key, value and headers,
    /// estimated as encoded) and the most batch bytes one produce request carries. A
    /// larger record fails at once with MESSAGE_TOO_LARGE, never retried. At most
    /// [`REQUEST_BYTES_MAX`] (what the transport carries).
    pub max_request_bytes: usize,
    /// Gapless delivery (librdkafka's `enable.gapless.guarantee`), per partition: once
    /// a batch of a partition fails for good, everything queued behind it fails unsent
    /// and later `send`s to that partition fail at once, until
    /// [`Producer::reset_partition`]. A partition's records then always land as a
    /// prefix of what was sent: a failure never leaves a hole that later records hide.
    pub gapless: bool,
}

/// The most bytes a produce request may carry: the transport's message limit less room
/// for the request's own framing.
pub const REQUEST_BYTES_MAX: usize = crate::cluster::MESSAGE_BYTES_MAX - 64 * 1024;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            batch_size_max: 1024 * 1024 - 1024,
            compression: Compression::None,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            buffer_memory: 64 * 1024 * 1024,
            idempotence: true,
            max_request_bytes: 16 * 1024 * 1024,
            gapless: false,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: chosen from the key (murmur2) or, without a key, sticky.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(
        topic: impl Into<String>,
        key: Option<impl Into<Bytes>>,
        value: impl Into<Bytes>,
    ) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: key.map(Into::into),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }
}

type PartKey = (Arc<str>, u32);

/// Estimated bytes of a batch's header (the v2 header is 61 bytes).
const BATCH_HEADER_ESTIMATE_BYTES: usize = 61;

/// Estimated encoded size of one record: payload plus a generous allowance for its
/// varints. Also what the record holds of `Inner::buffered`, so the pieces of a split
/// batch, estimated again record by record, account for exactly what the batch held.
fn record_bytes(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    let headers: usize = headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 4)
        .sum();
    key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()) + headers + 24
}

/// A batch still taking records, or built and waiting its turn; not yet encoded, so it
/// has no sequence numbers yet.
struct Open {
    builder: BatchBuilder,
    shared: Arc<BatchShared>,
    /// Index in `shared` of this batch's first record: 0, except for the pieces of a
    /// split batch.
    first_index: u32,
    created: Instant,
    records: u32,
    /// Estimated encoded size, header included (decides when the batch is full).
    bytes: usize,
    /// What this batch holds of `Inner::buffered`.
    buffered: usize,
}

impl Open {
    /// A new batch writing into `buffer` (a recycled one, see `Inner::pool`) if given.
    fn with_buffer(
        compression: Compression,
        capacity: usize,
        shared: Arc<BatchShared>,
        buffer: Option<Vec<u8>>,
        created: Instant,
    ) -> Open {
        let mut open = Open::new(compression, 0, shared, 0, created);
        open.builder = match buffer {
            Some(buffer) => BatchBuilder::with_buffer(compression, buffer, capacity),
            None => BatchBuilder::with_capacity(compression, capacity),
        };
        open
    }

    fn new(
        compression: Compression,
        capacity: usize,
        shared: Arc<BatchShared>,
        first_index: u32,
        created: Instant,
    ) -> Open {
        Open {
            builder: BatchBuilder::with_capacity(compression, capacity),
            shared,
            first_index,
            created,
            records: 0,
            bytes: BATCH_HEADER_ESTIMATE_BYTES,
            buffered: 0,
        }
    }

    fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let size = record_bytes(key, value, headers);
        self.builder.append(timestamp, key, value, headers);
        self.records += 1;
        self.bytes += size;
        self.buffered += size;
    }
}

/// An encoded batch: in flight, or waiting to be sent again after a retriable failure.
struct Closed {
    data: Bytes,
    shared: Arc<BatchShared>,
    first_index: u32,
    records: u32,
    /// The estimate it was built to (see [`Open::bytes`]).
    bytes: usize,
    buffered: usize,
    created: Instant,
    /// Its first sequence number (idempotent producers).
    base_sequence: Option<i32>,
    /// The retriable error that sent this batch back to wait, if any: what the caller
    /// is told when the delivery timeout expires, rather than a bare "timed out".
    last_error: Option<Error>,
}

/// A partition's batch waiting for its turn.
enum Queued {
    /// Not sent yet: encoded (and given sequence numbers) when it is.
    Unsent(Open),
    /// Sent and failed with a retriable error: sent again as it is, sequence included.
    Retry(Closed),
}

impl Queued {
    fn created(&self) -> Instant {
        match self {
            Queued::Unsent(o) => o.created,
            Queued::Retry(c) => c.created,
        }
    }
}

#[derive(Default)]
struct PartQueue {
    open: Option<Open>,
    /// Batches waiting (full ones behind an in-flight request, a retry, the pieces of a
    /// split batch), oldest first.
    /// Invariant: only the front may be `Queued::Retry`.
    ready: VecDeque<Queued>,
    in_flight: bool,
    /// Sequence number of the next batch's first record (idempotent producers).
    /// Invariant: batches get sequence numbers only when they are sent, so everything
    /// below `next_sequence` is either appended or in the one batch in flight (or
    /// retried); a batch refused unappended can hand its range back.
    next_sequence: i32,
    /// Producer epoch on this partition, bumped when its sequence restarts.
    epoch: i16,
    retry_at: Option<Instant>,
    /// Estimated batch size this partition's leader is known to take: set when it
    /// refuses a batch as larger than the topic's `max.message.bytes`, so later batches
    /// are built small enough at once rather than split every time.
    /// Invariant: only ever lowered (for the producer's lifetime).
    batch_bytes_max: Option<usize>,
    /// Gapless producers: the failure that stopped this partition. While set, nothing
    /// of the partition is queued and `send` to it fails.
    gap: Option<Error>,
}

impl PartQueue {
    /// `(batch.size, batch_size_max)` for this partition: the configured values,
    /// lowered to `batch_bytes_max` once it is known.
    fn batch_limits(&self, config: &ProducerConfig) -> (usize, usize) {
        match self.batch_bytes_max {
            Some(cap) => (config.batch_size.min(cap), config.batch_size_max.min(cap)),
            None => (config.batch_size, config.batch_size_max),
        }
    }
}

/// One topic's partition queues and what `send` needs to know of the topic, found by
/// `send` without hashing in the steady state (see [`Accumulator::topic_index`]).
struct TopicQueues {
    name: Arc<str>,
    /// The partition count as of metadata epoch `count_epoch` (see
    /// `Inner::meta_epoch`); `None` until first read.
    count: Option<(u32, u64)>,
    /// The partition keyless records go to until their batch fills (sticky
    /// partitioning); `None` until the first keyless record.
    sticky: Option<u32>,
    /// Indexed by partition; grown as partitions are first used.
    parts: Vec<PartQueue>,
}

#[derive(Default)]
struct Accumulator {
    /// Every topic this producer has sent to, in first-use order; never removed, so an
    /// index stays valid for the producer's lifetime.
    topics: Vec<TopicQueues>,
    /// Topic name to index in `topics`.
    index: HashMap<Arc<str>, usize>,
    /// The topic `send` used last, compared by name before `index` is consulted: a
    /// producer sending to one topic (or runs of one) never hashes its name.
    last: usize,
}

impl Accumulator {
    /// The index of `topic`, added if new.
    fn topic_index(&mut self, topic: &str) -> usize {
        if let Some(i) = self.find_topic(topic) {
            return i;
        }
        let name: Arc<str> = Arc::from(topic);
        self.topics.push(TopicQueues {
            name: name.clone(),
            count: None,
            sticky: None,
            parts: Vec::new(),
        });
        self.last = self.topics.len() - 1;
        self.index.insert(name, self.last);
        self.last
    }

    /// The index of `topic` if it has an entry (the last one used first, without
    /// hashing); it becomes the last one used.
    fn find_topic(&mut self, topic: &str) -> Option<usize> {
        if self
            .topics
            .get(self.last)
            .is_some_and(|t| *t.name == *topic)
        {
            return Some(self.last);
        }
        let i = *self.index.get(topic)?;
        self.last = i;
        Some(i)
    }

    /// The queue of `topic`/`partition`, if it was ever used.
    fn part(&mut self, topic: &str, partition: u32) -> Option<&mut PartQueue> {
        let i = *self.index.get(topic)?;
        self.topics[i].parts.get_mut(partition as usize)
    }

    /// The queue of `key`, added if new.
    fn part_or_default(&mut self, key: &PartKey) -> &mut PartQueue {
        let i = self.topic_index(&key.0);
        self.topics[i].part_or_default(key.1)
    }

    fn parts_mut(&mut self) -> impl Iterator<Item = &mut PartQueue> {
        self.topics.iter_mut().flat_map(|t| t.parts.iter_mut())
    }
}

impl TopicQueues {
    fn part_or_default(&mut self, partition: u32) -> &mut PartQueue {
        let p = partition as usize;
        if p >= self.parts.len() {
            self.parts.resize_with(p + 1, PartQueue::default);
        }
        &mut self.parts[p]
    }
}

struct Inner {
    cluster: Cluster,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    wake_sender: Notify,
    buffered: AtomicUsize,
    space: Notify,
    /// Records sent but not yet completed.
    outstanding: AtomicUsize,
    idle: Notify,
    flushing: AtomicUsize,
    closed: AtomicBool,
    /// Set when idempotence is on (acks=all).
    producer_id: Option<i64>,
    /// Buffers of batches sent and answered, for new batches to write into: a fresh
    /// 1 MiB buffer costs a page fault per 4 KiB on first touch, which at 1 KiB records
    /// was most of `send`'s cost. At most [`POOL_BUFFERS`].
    pool: Mutex<Vec<Vec<u8>>>,
    /// Bumped whenever this producer's cached metadata may have changed (a refresh, an
    /// invalidation): a topic's partition count cached in the accumulator is used only
    /// while its epoch is current, so `send` does not look the count up per record.
    meta_epoch: AtomicU64,
}

/// A producer. Cheap to clone; all clones share batches and the sender task.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    // Seconds and milliseconds apart: `as_millis` divides a u128, which shows in `send`.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis())
        })
}

impl Producer {
    /// Creates a producer and its sender task (needs a tokio runtime).
    pub async fn new(client: &ClientConfig, config: ProducerConfig) -> Result<Producer, Error> {
        if config.batch_size == 0 || config.batch_size > config.batch_size_max {
            return Err(Error::Invalid(format!(
                "batch size {} must be in 1..={}",
                config.batch_size, config.batch_size_max
            )));
        }
        if config.max_request_bytes == 0 || config.max_request_bytes > REQUEST_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "max request bytes {} must be in 1..={REQUEST_BYTES_MAX} (the transport's limit)",
                config.max_request_bytes
            )));
        }
        let producer_id = if config.idempotence && config.acks == Acks::All {
            Some(crate::Admin::new(client).init_producer_id().await?)
        } else {
            None
        };
        let mut cluster_config = client.clone();
        cluster_config.request_timeout = config.request_timeout + Duration::from_secs(5);
        let inner = Arc::new(Inner {
            cluster: Cluster::new(&cluster_config),
            config,
            acc: Mutex::new(Accumulator::default()),
            wake_sender: Notify::new(),
            buffered: AtomicUsize::new(0),
            space: Notify::new(),
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
            flushing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            producer_id,
            meta_epoch: AtomicU64::new(0),
            pool: Mutex::new(Vec::new()),
        });
        tokio::spawn(sender_loop(inner.clone()));
        Ok(Producer { inner })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Queues a record; waits only when `buffer_memory` is exhausted. The returned
    /// future resolves when the record is acknowledged per `acks`.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, Error> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let size = record_bytes(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        if size + BATCH_HEADER_ESTIMATE_BYTES > inner.config.max_request_bytes {
            // A topic that does not exist is reported first, as it always was.
            inner.cluster.partition_count(&record.topic).await?;
            return Err(Error::broker(
                ErrorCode::MessageTooLarge.code(),
                format!(
                    "a record of about {size} bytes for {} is larger than the producer's max request bytes ({})",
                    record.topic, inner.config.max_request_bytes
                ),
            ));
        }
        let used = inner.buffered.load(Ordering::Acquire);
        if used != 0 && used + size > inner.config.buffer_memory {
            inner.cluster.partition_count(&record.topic).await?;
            loop {
                let space = inner.space.notified();
                let used = inner.buffered.load(Ordering::Acquire);
                if used == 0 || used + size <= inner.config.buffer_memory {
                    break;
                }
                space.await;
            }
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let mut epoch = inner.meta_epoch.load(Ordering::Acquire);
        loop {
            if let Some(delivery) = self.append(&record, size, timestamp, epoch)? {
                return Ok(delivery);
            }
            // The partition count is not known as of `epoch`: look it up (from cached
            // metadata, or the cluster) and keep it for the records that follow.
            epoch = inner.meta_epoch.load(Ordering::Acquire);
            let count = inner.cluster.partition_count(&record.topic).await?;
            let mut acc = inner.acc.lock();
            let t = acc.topic_index(&record.topic);
            acc.topics[t].count = Some((count, epoch));
        }
    }

    /// Appends `record` to its partition's open batch, under the accumulator lock and
    /// without any other lookup: `None` when the topic's partition count is not known
    /// as of metadata epoch `epoch`.
    fn append(
        &self,
        record: &ProducerRecord,
        size: usize,
        timestamp: i64,
        epoch: u64,
    ) -> Result<Option<DeliveryFuture>, Error> {
        let inner = &*self.inner;
        let mut acc = inner.acc.lock();
        // An entry is made only once the topic's partition count is known: a record
        // for a topic that does not exist leaves nothing behind.
        let Some(t) = acc.find_topic(&record.topic) else {
            return Ok(None);
        };
        let tq = &mut acc.topics[t];
        let count = match tq.count {
            Some((count, at)) if at == epoch => count,
            _ => return Ok(None),
        };
        let keyless = record.key.is_none() && record.partition.is_none();
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                return Err(Error::Invalid(format!(
                    "topic {} has {count} partitions; {p} does not exist",
                    record.topic
                )))
            }
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => {
                *tq.sticky
                    .get_or_insert_with(|| rand::random::<u32>() % count)
                    % count
            }
        };
        let topic = tq.name.clone();
        let q = tq.part_or_default(partition);
        if let Some(gap) = &q.gap {
            return Err(gap_error(&topic, partition, gap));
        }
        let (batch_size, batch_size_max) = q.batch_limits(&inner.config);
        if q.open
            .as_ref()
            .is_some_and(|o| o.bytes + size > batch_size_max)
        {
            // Cannot be sent yet (in flight or behind others): queue it in order. It is
            // encoded, and given sequence numbers, when its turn comes.
            let full = q.open.take().expect("checked");
            q.ready.push_back(Queued::Unsent(full));
        }
        let first = q.open.is_none();
        let open = q.open.get_or_insert_with(|| {
            let shared = Arc::new(BatchShared::default());
            let compression = inner.config.compression;
            let buffer = inner.pool.lock().pop();
            Open::with_buffer(compression, batch_size, shared, buffer, Instant::now())
        });
        let index = open.records;
        open.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let full = open.bytes >= batch_size;
        let shared = open.shared.clone();
        if full && keyless {
            // Sticky partitioning: a new partition for the next batch of keyless records.
            tq.sticky = Some(rand::random::<u32>() % count);
        }
        drop(acc);
        inner.buffered.fetch_add(size, Ordering::AcqRel);
        inner.outstanding.fetch_add(1, Ordering::AcqRel);
        if first || full {
            inner.wake_sender.notify_one();
        }
        Ok(Some(DeliveryFuture::new(
            shared, index, topic, partition, timestamp,
        )))
    }

    /// Sends everything queued now and waits until every record sent so far completed.
    pub async fn flush(&self) {
        let inner = &self.inner;
        inner.flushing.fetch_add(1, Ordering::AcqRel);
        inner.wake_sender.notify_one();
        loop {
            let idle = inner.idle.notified();
            if inner.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        inner.flushing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Flushes, then stops the sender task; later sends fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake_sender.notify_one();
    }

    /// Fails every record not yet handed to the network (`Error::Closed`), waits for
    /// the requests in flight to be answered, then stops the sender task. For a caller
    /// that must not write anything more after a failure (flushing would).
    pub async fn abort(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        {
            let mut acc = inner.acc.lock();
            for q in acc.parts_mut() {
                drop_queued(inner, q, || Error::Closed);
            }
        }
        inner.wake_sender.notify_one();
        self.flush().await;
    }

    /// The failure that stopped a partition of a gapless producer, if any.
    pub fn partition_gap(&self, topic: &str, partition: u32) -> Option<Error> {
        self.inner.acc.lock().part(topic, partition)?.gap.clone()
    }

    /// Lets a gapless producer send to a partition again after a failure stopped it.
    /// The caller decides what to do about the records that failed (resend them, or
    /// accept the gap).
    pub fn reset_partition(&self, topic: &str, partition: u32) {
        if let Some(q) = self.inner.acc.lock().part(topic, partition) {
            q.gap = None;
        }
    }
}

/// What records of a stopped gapless partition fail with: the original failure's code
/// (so a caller can tell MESSAGE_TOO_LARGE from a timeout), saying they were not sent.
fn gap_error(topic: &str, partition: u32, gap: &Error) -> Error {
    let message = format!(
        "not sent: an earlier batch of {topic}-{partition} failed and the producer is gapless ({gap})"
    );
    match gap.code() {
        Some(code) => Error::Broker { code, message },
        None => Error::Invalid(message),
    }
}

/// Fails every batch of `q` not yet sent (queued, or still open); batches in flight
/// complete as answered.
fn drop_queued(inner: &Inner, q: &mut PartQueue, error: impl Fn() -> Error) {
    for b in q.ready.drain(..) {
        match b {
            Queued::Unsent(o) => inner.finish_unsent(&o, Err(error())),
            Queued::Retry(c) => inner.finish(&c, Err(error())),
        }
    }
    if let Some(o) = q.open.take() {
        inner.finish_unsent(&o, Err(error()));
    }
    q.retry_at = None;
}

/// A batch of a partition failed for good: a gapless producer stops the partition.
fn failed_for_good(inner: &Inner, key: &PartKey, q: &mut PartQueue, error: &Error) {
    if !inner.config.gapless || q.gap.is_some() {
        return;
    }
    info!(topic = %key.0, partition = key.1, %error, "gapless: partition stopped after a failed batch");
    let gap = error.clone();
    drop_queued(inner, q, || gap_error(&key.0, key.1, &gap));
    q.gap = Some(error.clone());
}

/// Gives a batch about to be sent the partition's next sequence numbers when the
/// producer is idempotent, and returns the first. Called under the accumulator lock
/// when the batch is dispatched — not earlier — so the batch in flight is the only one
/// holding sequence numbers not yet appended (see `PartQueue::next_sequence`).
fn assign_sequence(q: &mut PartQueue, open: &mut Open, producer_id: Option<i64>) -> Option<i32> {
    let pid = producer_id?;
    let first = q.next_sequence;
    open.builder.set_producer(pid, q.epoch, first);
    q.next_sequence = first.wrapping_add(open.records as i32);
    Some(first)
}

/// Encodes a batch; on failure returns it (empty) with the error, for `finish` (boxed:
/// failures are rare and the pair is large).
fn encode(
    open: Open,
    base_sequence: Option<i32>,
    compression: Compression,
) -> Result<Closed, Box<(Closed, Error)>> {
    let Open {
        builder,
        shared,
        first_index,
        created,
        records,
        bytes,
        buffered,
    } = open;
    let mut closed = Closed {
        data: Bytes::new(),
        shared,
        first_index,
        records,
        bytes,
        buffered,
        created,
        base_sequence,
        last_error: None,
    };
    match builder.build() {
        Ok(batch) => {
            closed.data = batch.into_bytes();
            Ok(closed)
        }
        Err(e) => Err(Box::new((
            closed,
            Error::Invalid(format!("cannot encode a {compression:?} batch: {e}")),
        ))),
    }
}

/// How many batch buffers a producer keeps for reuse (see `Inner::pool`).
const POOL_BUFFERS: usize = 8;

impl Inner {
    /// Keeps the buffer of a batch that has been answered for a new batch, if nothing
    /// else holds it and it is of a size this producer builds.
    fn recycle(&self, data: Bytes) {
        let Ok(data) = data.try_into_mut() else {
            return;
        };
        let buffer = Vec::from(data);
        if buffer.capacity() < self.config.batch_size
            || buffer.capacity() > self.config.batch_size_max + BATCH_HEADER_ESTIMATE_BYTES * 2
        {
            return;
        }
        let mut pool = self.pool.lock();
        if pool.len() < POOL_BUFFERS {
            pool.push(buffer);
        }
    }

    fn finish(&self, c: &Closed, result: BatchResult) {
        self.finish_records(&c.shared, c.first_index, c.records, c.buffered, result);
    }

    fn finish_unsent(&self, o: &Open, result: BatchResult) {
        self.finish_records(&o.shared, o.first_index, o.records, o.buffered, result);
    }

    fn finish_records(
        &self,
        shared: &BatchShared,
        first_index: u32,
        records: u32,
        buffered: usize,
        result: BatchResult,
    ) {
        shared.complete(first_index, records, result);
        self.buffered.fetch_sub(buffered, Ordering::AcqRel);
        self.space.notify_waiters();
        if self
            .outstanding
            .fetch_sub(records as usize, Ordering::AcqRel)
            == records as usize
        {
            self.idle.notify_waiters();
        }
    }
}

/// The error for a batch whose delivery timeout expired while it waited to be retried:
/// the last error it got (say NOT_ENOUGH_REPLICAS, with its code kept so callers can
/// match on it), saying it persisted; a plain timeout if it never got an answer.
fn expired(last: Option<Error>, key: &PartKey, timeout: Duration) -> Error {
    let gave_up = format!(
        "{}-{} not delivered within the delivery timeout ({timeout:?})",
        key.0, key.1
    );
    match last {
        Some(Error::Broker { code, message }) => Error::Broker {
            code,
            message: format!("{gave_up}; last error: {message}"),
        },
        Some(Error::Unreachable { addr, message }) => Error::Unreachable {
            addr,
            message: format!("{message} ({gave_up})"),
        },
        Some(other) => Error::Timeout(format!("{gave_up}; last error: {other}")),
        None => Error::Timeout(gave_up),
    }
}

/// Closed batches to send, by leader address.
type SendsByLeader = HashMap<String, Vec<(PartKey, Closed)>>;

/// Picks what can be sent now; returns batches by leader, topics needing metadata, and
/// when to look again.
fn collect_ready(inner: &Inner, now: Instant) -> (SendsByLeader, HashSet<Arc<str>>, Instant) {
    let config = &inner.config;
    let flushing =
        inner.flushing.load(Ordering::Acquire) > 0 || inner.closed.load(Ordering::Acquire);
    let mut next = now + Duration::from_millis(200);
    let mut sends: SendsByLeader = HashMap::new();
    let mut unknown = HashSet::new();
    let mut to_encode = Vec::new();
    let mut to_split = Vec::new();
    {
        let mut acc = inner.acc.lock();
        for topic in acc.topics.iter_mut() {
            for (partition, q) in topic.parts.iter_mut().enumerate() {
                if q.in_flight {
                    continue;
                }
                if let Some(t) = q.retry_at {
                    if t > now {
                        next = next.min(t);
                        continue;
                    }
                    q.retry_at = None;
                }
                if q.ready.is_empty() && q.open.is_none() {
                    continue;
                }
                let key: &PartKey = &(topic.name.clone(), partition as u32);
                // Expire what waited past the delivery timeout.
                while q
                    .ready
                    .front()
                    .is_some_and(|b| now.duration_since(b.created()) > config.delivery_timeout)
                {
                    let error = match q.ready.pop_front().expect("checked") {
                        Queued::Unsent(o) => {
                            let error = expired(None, key, config.delivery_timeout);
                            inner.finish_unsent(&o, Err(error.clone()));
                            error
                        }
                        Queued::Retry(mut c) => {
                            let error = expired(c.last_error.take(), key, config.delivery_timeout);
                            inner.finish(&c, Err(error.clone()));
                            if c.base_sequence.is_some() {
                                // Whether it was appended is unknown: restart the sequence.
                                restart_sequence(q);
                            }
                            error
                        }
                    };
                    failed_for_good(inner, key, q, &error);
                }
                let (batch_size, _) = q.batch_limits(config);
                let has_work = !q.ready.is_empty()
                    || q.open.as_ref().is_some_and(|o| {
                        let due = o.created + config.linger;
                        let go = o.bytes >= batch_size || due <= now || flushing;
                        if !go {
                            next = next.min(due);
                        }
                        go
                    });
                if !has_work {
                    continue;
                }
                let Some(addr) = inner.cluster.leader_addr(&key.0, key.1) else {
                    unknown.insert(key.0.clone());
                    next = next.min(now + Duration::from_millis(50));
                    continue;
                };
                q.in_flight = true;
                let mut open = match q.ready.pop_front() {
                    Some(Queued::Retry(c)) => {
                        sends.entry(addr).or_default().push((key.clone(), c));
                        continue;
                    }
                    Some(Queued::Unsent(o)) => o,
                    None => q.open.take().expect("has work"),
                };
                if let Some(cap) = q.batch_bytes_max.filter(|cap| open.bytes > *cap) {
                    if open.records > 1 {
                        // Built before the partition learned its size: split it here rather
                        // than after a refusal. It stays "in flight" until the pieces queue.
                        to_split.push((key.clone(), open, cap));
                        continue;
                    }
                }
                let base_sequence = assign_sequence(q, &mut open, inner.producer_id);
                to_encode.push((addr, key.clone(), open, base_sequence));
            }
        }
    }
    for (key, open, cap) in to_split {
        let pieces = split::split_unsent(inner, open, cap);
        let mut acc = inner.acc.lock();
        let q = acc.part_or_default(&key);
        q.in_flight = false;
        let pieces = match pieces {
            Ok(pieces) => pieces,
            Err(e) => {
                failed_for_good(inner, &key, q, &e);
                Vec::new()
            }
        };
        for p in pieces.into_iter().rev() {
            q.ready.push_front(Queued::Unsent(p));
        }
        next = now;
    }
    for (addr, key, open, base_sequence) in to_encode {
        match encode(open, base_sequence, config.compression) {
            Ok(c) => sends.entry(addr).or_default().push((key, c)),
            Err(failed) => {
                let (c, e) = *failed;
                inner.finish(&c, Err(e.clone()));
                let mut acc = inner.acc.lock();
                let q = acc.part_or_default(&key);
                q.in_flight = false;
                if let Some(first) = base_sequence {
                    // Never sent, and nothing took sequences since: hand its range back.
                    q.next_sequence = first;
                }
                failed_for_good(inner, &key, q, &e);
            }
        }
    }
    (sends, unknown, next)
}

async fn sender_loop(inner: Arc<Inner>) {
    loop {
        let wake = inner.wake_sender.notified();
        let (sends, unknown, next) = collect_ready(&inner, Instant::now());
        if !unknown.is_empty() {
            let topics: Vec<String> = unknown.iter().map(|t| t.to_string()).collect();
            if let Err(e) = inner.cluster.refresh(&topics).await {
                debug!(error = %e, "metadata refresh failed");
            }
            inner.meta_epoch.fetch_add(1, Ordering::AcqRel);
        }
        for (addr, batches) in sends {
            for request in requests_of(batches, inner.config.max_request_bytes) {
                tokio::spawn(send_request(inner.clone(), addr.clone(), request));
            }
        }
        if inner.closed.load(Ordering::Acquire) && inner.outstanding.load(Ordering::Acquire) == 0 {
            return;
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

/// Groups one leader's batches into requests of at most `max_bytes` of batch data
/// (a batch larger than that, which `send` lets through only up to the same bound,
/// goes alone), so no request outgrows what the transport carries.
fn requests_of(batches: Vec<(PartKey, Closed)>, max_bytes: usize) -> Vec<Vec<(PartKey, Closed)>> {
    let mut requests: Vec<Vec<(PartKey, Closed)>> = Vec::new();
    let mut bytes = 0usize;
    for b in batches {
        let len = b.1.data.len();
        match requests.last_mut() {
            Some(r) if bytes + len <= max_bytes => {
                bytes += len;
                r.push(b);
            }
            _ => {
                bytes = len;
                requests.push(vec![b]);
            }
        }
    }
    requests
}

async fn send_request(inner: Arc<Inner>, addr: String, batches: Vec<(PartKey, Closed)>) {
    let config = &inner.config;
    let req = v1::ProduceRequest {
        acks: config.acks.wire(),
        timeout_ms: config.request_timeout.as_millis() as u32,
        partitions: batches
            .iter()
            .map(|((topic, partition), c)| v1::ProducePartition {
                topic: topic.to_string(),
                partition: *partition,
                records: c.data.clone(),
                topic_id: inner.cluster.topic_id(topic),
            })
            .collect(),
    };
    if config.acks == Acks::None {
        for (_, c) in &batches {
            inner.finish(c, Ok((None, None)));
        }
    }
    let response = match inner.cluster.broker_client(&addr) {
        Ok(mut client) => client
            .produce(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Error::from_status(&addr, s)),
        Err(e) => Err(e),
    };
    let mut updates = Vec::new();
    for (key, mut c) in batches {
        let outcome = match &response {
            Ok(resp) => match resp
                .partitions
                .iter()
                .find(|p| *p.topic == *key.0 && p.partition == key.1)
            {
                Some(p) if p.error_code == 0 => Ok((
                    Some(p.base_offset as u64),
                    (p.log_append_time >= 0).then_some(p.log_append_time),
                )),
                Some(p) => Err(Error::broker(p.error_code, p.error_message.clone())),
                None => Err(Error::broker(
                    -1,
                    format!("no answer for {}-{}", key.0, key.1),
                )),
            },
            Err(e) => Err(e.clone()),
        };
        if config.acks == Acks::None {
            inner.recycle(c.data);
            updates.push((key, Update::Done));
            continue;
        }
        let update = match outcome {
            Err(e)
                if e.is_retriable()
                    && Instant::now().duration_since(c.created) < config.delivery_timeout =>
            {
                debug!(topic = %key.0, partition = key.1, error = %e, "retrying batch");
                inner.cluster.invalidate(&key.0);
                inner.meta_epoch.fetch_add(1, Ordering::AcqRel);
                c.last_error = Some(e);
                Update::Retry(c)
            }
            Err(e) if e.code() == Some(ErrorCode::MessageTooLarge) => {
                split::too_large(&inner, &key, c, e)
            }
            result => {
                let error = result.as_ref().err().cloned();
                inner.finish(&c, result);
                inner.recycle(std::mem::take(&mut c.data));
                match error {
                    Some(error) => Update::Failed {
                        error,
                        restart_sequence: c.base_sequence.is_some(),
                    },
                    None => Update::Done,
                }
            }
        };
        updates.push((key, update));
    }
    {
        let mut acc = inner.acc.lock();
        for (key, update) in updates {
            let q = acc.part_or_default(&key);
            q.in_flight = false;
            match update {
                Update::Done => {}
                Update::Failed {
                    error,
                    restart_sequence: restart,
                } => {
                    if restart {
                        restart_sequence(q);
                    }
                    failed_for_good(&inner, &key, q, &error);
                }
                Update::Retry(c) => {
                    q.ready.push_front(Queued::Retry(c));
                    q.retry_at = Some(Instant::now() + config.retry_backoff);
                }
                Update::Refused {
                    sequences,
                    pieces,
                    batch_bytes_max,
                    failed,
                } => {
                    if let Some((first, records)) = sequences {
                        if q.next_sequence == first.wrapping_add(records as i32) {
                            q.next_sequence = first;
                        } else {
                            // Not expected (only the batch in flight holds unappended
                            // sequences); a new epoch is right whatever happened.
                            restart_sequence(q);
                        }
                    }
                    if let Some(cap) = batch_bytes_max {
                        if q.batch_bytes_max.is_none_or(|old| cap < old) {
                            info!(topic = %key.0, partition = key.1, old = ?q.batch_bytes_max,
                                new = cap, "batch refused as too large: building smaller batches");
                            q.batch_bytes_max = Some(cap);
                        }
                    }
                    for p in pieces.into_iter().rev() {
                        q.ready.push_front(Queued::Unsent(p));
                    }
                    if let Some(error) = failed {
                        failed_for_good(&inner, &key, q, &error);
                    }
                }
            }
        }
    }
    inner.wake_sender.notify_one();
}

/// What an answer (or its absence) does to a partition's queue.
enum Update {
    /// Acknowledged, or failed with nothing for the queue to do.
    Done,
    /// Failed for good (possibly after some attempt was appended, so an idempotent
    /// producer restarts the partition's sequence); a gapless producer stops the
    /// partition.
    Failed {
        error: Error,
        restart_sequence: bool,
    },
    /// A retriable failure: send the same batch again after the backoff.
    Retry(Closed),
    /// Refused as too large, so nothing of it was appended: its sequence range
    /// `(first, records)` goes back to the partition, its pieces (if it had more than
    /// one record) go first in the queue, and batches are built no larger than
    /// `batch_bytes_max` from now on.
    Refused {
        sequences: Option<(i32, u32)>,
        pieces: Vec<Open>,
        batch_bytes_max: Option<usize>,
        /// The record (or unsplittable batch) failed for good with this error.
        failed: Option<Error>,
    },
}

/// Restarts a partition's sequence under a new epoch, which tells the leader to forget
/// the batches it remembers for this producer there. Right only while no batch holding
/// sequence numbers is queued (see `PartQueue::next_sequence`).
fn restart_sequence(q: &mut PartQueue) {
    q.next_sequence = 0;
    q.epoch = q.epoch.wrapping_add(1).max(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_keep_their_queues_whichever_was_used_last() {
        let mut acc = Accumulator::default();
        let a = acc.topic_index("a");
        let b = acc.topic_index("b");
        assert_ne!(a, b);
        // Alternating: the last-used shortcut and the map agree.
        for _ in 0..3 {
            assert_eq!(acc.topic_index("a"), a);
            assert_eq!(acc.topic_index("b"), b);
            assert_eq!(acc.topic_index("b"), b);
        }
        assert!(acc.part("a", 0).is_none(), "never used");
        acc.part_or_default(&(Arc::from("a"), 3)).next_sequence = 7;
        assert_eq!(acc.topics[a].parts.len(), 4);
        assert_eq!(acc.part("a", 3).map(|q| q.next_sequence), Some(7));
        assert_eq!(acc.part("a", 1).map(|q| q.next_sequence), Some(0));
        assert!(acc.part("b", 3).is_none());
        assert!(acc.part("c", 0).is_none());
        assert_eq!(acc.parts_mut().count(), 4);
        // A name that is a prefix of another is a different topic.
        let ab = acc.topic_index("ab");
        assert!(ab != a && ab != b);
        assert_eq!(acc.topic_index("a"), a);
    }
}
