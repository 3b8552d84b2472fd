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

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use sluice_proto::v1;
use sluice_proto::{BatchBuilder, Compression, Header};
use tokio::sync::Notify;
use tracing::debug;

use crate::cluster::Cluster;
use crate::partitioner::partition_for_key;
use crate::{ClientConfig, Error};

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
    /// request in flight. Keep it at or below the topic's `max.message.bytes`.
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
}

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

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: u32,
    /// `None` with acks=0.
    pub offset: Option<u64>,
    pub timestamp: i64,
}

type BatchResult = Result<(Option<u64>, Option<i64>), Error>;

/// Completion shared by every record of one batch.
#[derive(Default)]
struct BatchShared {
    result: OnceLock<BatchResult>,
    /// When the result arrived (for latency measurement independent of the awaiter).
    completed_at: OnceLock<Instant>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchShared {
    fn complete(&self, r: BatchResult) {
        let _ = self.completed_at.set(Instant::now());
        if self.result.set(r).is_ok() {
            for w in std::mem::take(&mut *self.wakers.lock()) {
                w.wake();
            }
        }
    }
}

/// Resolves when the record is acknowledged (or has failed for good).
pub struct DeliveryFuture {
    shared: Arc<BatchShared>,
    index: u32,
    topic: Arc<str>,
    partition: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    /// When the acknowledgement (or failure) arrived, once it has.
    pub fn completed_at(&self) -> Option<Instant> {
        self.shared.completed_at.get().copied()
    }

    fn ready(&self) -> Option<Result<RecordMetadata, Error>> {
        let r = self.shared.result.get()?;
        Some(r.clone().map(|(base, append_time)| RecordMetadata {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: base.map(|b| b + u64::from(self.index)),
            timestamp: append_time.unwrap_or(self.timestamp),
        }))
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.ready() {
            return Poll::Ready(r);
        }
        {
            let mut wakers = self.shared.wakers.lock();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        // Completed between the first check and registering: do not sleep forever.
        match self.ready() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

type PartKey = (Arc<str>, u32);

struct Open {
    builder: BatchBuilder,
    shared: Arc<BatchShared>,
    created: Instant,
    records: u32,
    /// Estimated encoded size, header included (decides when the batch is full).
    bytes: usize,
    /// What this batch holds of `Inner::buffered`.
    buffered: usize,
}

struct Closed {
    data: Bytes,
    shared: Arc<BatchShared>,
    records: u32,
    buffered: usize,
    created: Instant,
    /// The retriable error that sent this batch back to wait, if any: what the caller
    /// is told when the delivery timeout expires, rather than a bare "timed out".
    last_error: Option<Error>,
}

#[derive(Default)]
struct PartQueue {
    open: Option<Open>,
    /// Encoded batches waiting (after a retriable failure), oldest first.
    ready: VecDeque<Closed>,
    in_flight: bool,
    /// Sequence number of the next batch's first record (idempotent producers).
    next_sequence: i32,
    /// Producer epoch on this partition, bumped when its sequence restarts.
    epoch: i16,
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct Accumulator {
    parts: HashMap<PartKey, PartQueue>,
    sticky: HashMap<Arc<str>, u32>,
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
}

/// A producer. Cheap to clone; all clones share batches and the sender task.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        let count = inner.cluster.partition_count(&record.topic).await?;
        let size = record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len())
            + 24;
        loop {
            let space = inner.space.notified();
            let used = inner.buffered.load(Ordering::Acquire);
            if used == 0 || used + size <= inner.config.buffer_memory {
                break;
            }
            space.await;
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let topic: Arc<str> = Arc::from(record.topic.as_str());
        let mut acc = inner.acc.lock();
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
                *acc.sticky
                    .entry(topic.clone())
                    .or_insert_with(|| rand::random::<u32>() % count)
                    % count
            }
        };
        let q = acc.parts.entry((topic.clone(), partition)).or_default();
        if q.open
            .as_ref()
            .is_some_and(|o| o.bytes + size > inner.config.batch_size_max)
        {
            let full = take_open(q, inner.producer_id).expect("checked");
            // Cannot be sent yet (in flight or behind retries): encode now, queue in order.
            match encode(full, inner.config.compression) {
                Ok(c) => q.ready.push_back(c),
                Err((c, e)) => {
                    drop(acc);
                    inner.finish(&c, Err(e));
                    return Err(Error::Invalid(
                        "the record's batch could not be encoded".into(),
                    ));
                }
            }
        }
        let first = q.open.is_none();
        let open = q.open.get_or_insert_with(|| Open {
            builder: BatchBuilder::with_capacity(inner.config.compression, inner.config.batch_size),
            shared: Arc::new(BatchShared::default()),
            created: Instant::now(),
            records: 0,
            bytes: 61,
            buffered: 0,
        });
        open.builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let index = open.records;
        open.records += 1;
        open.bytes += size;
        open.buffered += size;
        let full = open.bytes >= inner.config.batch_size;
        let shared = open.shared.clone();
        if full && record.key.is_none() && record.partition.is_none() {
            // Sticky partitioning: a new partition for the next batch of keyless records.
            acc.sticky
                .insert(topic.clone(), rand::random::<u32>() % count);
        }
        drop(acc);
        inner.buffered.fetch_add(size, Ordering::AcqRel);
        inner.outstanding.fetch_add(1, Ordering::AcqRel);
        if first || full {
            inner.wake_sender.notify_one();
        }
        Ok(DeliveryFuture {
            shared,
            index,
            topic,
            partition,
            timestamp,
        })
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
}

/// Takes the open batch out of `q` to be sent, giving it the partition's next
/// sequence numbers when the producer is idempotent. Called under the accumulator lock,
/// in send order, so sequences follow the order batches leave.
fn take_open(q: &mut PartQueue, producer_id: Option<i64>) -> Option<Open> {
    let mut open = q.open.take()?;
    if let Some(pid) = producer_id {
        open.builder.set_producer(pid, q.epoch, q.next_sequence);
        q.next_sequence = q.next_sequence.wrapping_add(open.records as i32);
    }
    Some(open)
}

/// Encodes a batch; on failure returns it (empty) with the error, for `finish`.
fn encode(open: Open, compression: Compression) -> Result<Closed, (Closed, Error)> {
    let Open {
        builder,
        shared,
        created,
        records,
        buffered,
        ..
    } = open;
    let mut closed = Closed {
        data: Bytes::new(),
        shared,
        records,
        buffered,
        created,
        last_error: None,
    };
    match builder.build() {
        Ok(batch) => {
            closed.data = batch.into_bytes();
            Ok(closed)
        }
        Err(e) => Err((
            closed,
            Error::Invalid(format!("cannot encode a {compression:?} batch: {e}")),
        )),
    }
}

impl Inner {
    fn finish(&self, c: &Closed, result: BatchResult) {
        c.shared.complete(result);
        self.buffered.fetch_sub(c.buffered, Ordering::AcqRel);
        self.space.notify_waiters();
        if self
            .outstanding
            .fetch_sub(c.records as usize, Ordering::AcqRel)
            == c.records as usize
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
    {
        let mut acc = inner.acc.lock();
        for (key, q) in acc.parts.iter_mut() {
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
            // Expire what waited past the delivery timeout.
            while q
                .ready
                .front()
                .is_some_and(|c| now.duration_since(c.created) > config.delivery_timeout)
            {
                let mut c = q.ready.pop_front().expect("checked");
                let error = expired(c.last_error.take(), key, config.delivery_timeout);
                inner.finish(&c, Err(error));
            }
            let has_work = !q.ready.is_empty()
                || q.open.as_ref().is_some_and(|o| {
                    let due = o.created + config.linger;
                    let go = o.bytes >= config.batch_size || due <= now || flushing;
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
            match q.ready.pop_front() {
                Some(c) => sends.entry(addr).or_default().push((key.clone(), c)),
                None => to_encode.push((
                    addr,
                    key.clone(),
                    take_open(q, inner.producer_id).expect("has work"),
                )),
            }
        }
    }
    for (addr, key, open) in to_encode {
        match encode(open, config.compression) {
            Ok(c) => sends.entry(addr).or_default().push((key, c)),
            Err((c, e)) => {
                inner.finish(&c, Err(e));
                inner
                    .acc
                    .lock()
                    .parts
                    .get_mut(&key)
                    .expect("present")
                    .in_flight = false;
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
        }
        for (addr, batches) in sends {
            tokio::spawn(send_request(inner.clone(), addr, batches));
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
    let mut retry = Vec::new();
    let mut resequence = Vec::new();
    let mut acc_updates = Vec::new();
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
            acc_updates.push((key, None));
            continue;
        }
        match outcome {
            Err(e)
                if e.is_retriable()
                    && Instant::now().duration_since(c.created) < config.delivery_timeout =>
            {
                debug!(topic = %key.0, partition = key.1, error = %e, "retrying batch");
                inner.cluster.invalidate(&key.0);
                c.last_error = Some(e);
                retry.push(key.clone());
                acc_updates.push((key, Some(c)));
            }
            result => {
                if result.is_err() && inner.producer_id.is_some() {
                    // The batch's sequence numbers were never appended: start the
                    // partition's sequence again so later batches are not out of order.
                    resequence.push(key.clone());
                }
                inner.finish(&c, result);
                acc_updates.push((key, None));
            }
        }
    }
    {
        let mut acc = inner.acc.lock();
        for (key, requeue) in acc_updates {
            let q = acc.parts.entry(key.clone()).or_default();
            q.in_flight = false;
            if resequence.contains(&key) {
                // A new epoch tells the leader the sequence restarts (and forgets the
                // batches it remembers for this producer on this partition).
                q.next_sequence = 0;
                q.epoch = q.epoch.wrapping_add(1).max(0);
            }
            if let Some(c) = requeue {
                q.ready.push_front(c);
                q.retry_at = Some(Instant::now() + config.retry_backoff);
            }
        }
    }
    inner.wake_sender.notify_one();
}
