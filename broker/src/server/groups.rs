//! The group coordinator's IO; the `Groups` service over it is in `groups_api`. A group
//! lives on the leader of partition `hash(group) % N` of `__consumer_offsets` (created
//! on first use, compacted, replicated up to three ways). When this broker leads such a
//! partition it replays the partition into a sans-IO [`Coordinator`]; every change the
//! coordinator makes is appended back with acks=all before the request that made it is
//! answered, through one writer per partition that keeps the log in the order of the
//! changes and puts whatever queued meanwhile into one batch. If an append fails
//! (leadership moved), the loaded state is dropped and the next leader replays what the
//! log holds.
//!
//! A load replays the partition only up to its high watermark, and keeps replaying as
//! the high watermark moves; the coordinator serves once the high watermark has reached
//! the log end the leader had when the load began. A new leader can hold records above
//! its high watermark that a later failover truncates; showing them (an OffsetFetch
//! answering a commit that is then lost) would let a committed offset move backwards.
//! Until then requests get COORDINATOR_LOAD_IN_PROGRESS (retriable), after waiting up
//! to [`LOAD_WAIT`] for the high watermark.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::batch::Batches;
use sluice_proto::v1;
use sluice_proto::{BatchBuilder, BrokerId, Compression, ErrorCode, LeaderEpoch, TopicPartition};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::Shared;
use crate::group::classic::{Delivery, JoinReply, SyncReply};
use crate::group::coordinator::{Coordinator, CoordinatorConfig, Write};
use crate::group::state::GroupError;

/// The internal topic holding committed offsets and group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub(super) type Failure = (ErrorCode, String);

/// Changes queued for one offsets partition's writer before requests are turned away
/// (retriably) until it catches up.
const WRITER_QUEUE: usize = 4096;

/// How long a request waits for a load held back by the high watermark before it is
/// answered COORDINATOR_LOAD_IN_PROGRESS (the client retries).
pub(super) const LOAD_WAIT: Duration = Duration::from_secs(1);

/// Kafka's choice of partition: `Utils.abs(groupId.hashCode()) % N`, with Java's String
/// hash (and `abs(MIN_VALUE) = 0`).
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    let abs = if h == i32::MIN { 0 } else { h.unsigned_abs() };
    abs % partitions.max(1)
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) struct Pending {
    pub(super) writes: Vec<Write>,
    pub(super) done: oneshot::Sender<Result<(), Failure>>,
}

/// One `__consumer_offsets` partition this broker leads, loaded.
pub(super) struct Loaded {
    pub(super) leader_epoch: LeaderEpoch,
    pub(super) core: parking_lot::Mutex<Coordinator>,
    /// Bounded; only ever sent to with `core` locked, so room seen under the lock is
    /// there when the change is queued.
    pub(super) tx: mpsc::Sender<Pending>,
    pub(super) failed: Arc<AtomicBool>,
    /// Held by the writer while it appends.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Classic JoinGroup/SyncGroup requests waiting for their answer, by (group,
    /// member). Dropped with this coordinator: the waiting clients hear NOT_COORDINATOR.
    pub(super) waiters: parking_lot::Mutex<Waiters>,
}

pub(super) type Answer<T> = oneshot::Sender<Result<T, GroupError>>;

#[derive(Default)]
pub(super) struct Waiters {
    pub(super) joins: HashMap<(String, String), Answer<JoinReply>>,
    pub(super) syncs: HashMap<(String, String), Answer<SyncReply>>,
}

impl Waiters {
    /// Hands each answer to the request waiting for it.
    pub(super) fn deliver(&mut self, group: &str, deliveries: Vec<Delivery>) {
        for d in deliveries {
            match d {
                Delivery::Join(m, r) => {
                    if let Some(tx) = self.joins.remove(&(group.to_string(), m)) {
                        let _ = tx.send(r);
                    }
                }
                Delivery::Sync(m, r) => {
                    if let Some(tx) = self.syncs.remove(&(group.to_string(), m)) {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    }
}

impl Loaded {
    /// Runs `op` on the coordinator and queues what it wrote, in order; the answer is
    /// given once those records (and all queued before them) are acknowledged.
    pub(super) async fn run<T>(
        &self,
        op: impl FnOnce(&mut Coordinator) -> (Result<T, Failure>, Vec<Write>),
    ) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        let result = {
            let mut core = self.core.lock();
            if self.tx.capacity() == 0 {
                return Err((
                    ErrorCode::CoordinatorLoadInProgress,
                    "the group coordinator is busy; retry".into(),
                ));
            }
            let (result, writes) = op(&mut core);
            if self.tx.try_send(Pending { writes, done: tx }).is_err() {
                // The change is in memory but will never be written: reload.
                self.failed.store(true, Ordering::Release);
                return Err(not_coordinator());
            }
            result
        };
        match rx.await {
            Ok(Ok(())) => result,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(not_coordinator()),
        }
    }
}

pub(super) fn not_coordinator() -> Failure {
    (
        ErrorCode::NotCoordinator,
        "this broker is no longer the group's coordinator".into(),
    )
}

/// A load under way: the partition replayed up to its high watermark so far.
struct Partial {
    leader_epoch: LeaderEpoch,
    core: Coordinator,
    /// The next offset to replay. Invariant: at or below the high watermark seen last.
    next: u64,
    /// The log end when the load began. Everything below it is this leader's log and
    /// becomes committed once the high watermark passes it; the coordinator serves
    /// from then on (its own appends go after it).
    target: u64,
    records: u64,
    started: Instant,
}

/// The coordinator side of every `__consumer_offsets` partition this broker leads.
pub(crate) struct GroupCoordinator {
    config: CoordinatorConfig,
    /// Partitions of `__consumer_offsets` when it is created.
    pub(super) partitions_on_create: u32,
    pub(super) loaded: parking_lot::Mutex<HashMap<u32, Arc<Loaded>>>,
    /// Loads waiting for the high watermark, by partition.
    partial: parking_lot::Mutex<HashMap<u32, Partial>>,
    /// One load at a time.
    loading: tokio::sync::Mutex<()>,
    /// Group epochs last seen, to count rebalances.
    epochs: parking_lot::Mutex<HashMap<String, i32>>,
    /// Groups held over every loaded partition: recounted every maintenance round,
    /// counted up as [`GroupCoordinator::admit`] lets one in.
    group_count: AtomicUsize,
    /// Groups with their own `{group}` metric label (the largest by members, at most
    /// `GROUP_METRIC_LABELS_MAX`); chosen again with every lag publication.
    labeled: parking_lot::Mutex<BTreeSet<String>>,
}

impl GroupCoordinator {
    pub(crate) fn new(config: CoordinatorConfig, partitions_on_create: u32) -> GroupCoordinator {
        GroupCoordinator {
            config,
            partitions_on_create,
            loaded: Default::default(),
            partial: Default::default(),
            loading: Default::default(),
            epochs: Default::default(),
            group_count: AtomicUsize::new(0),
            labeled: Default::default(),
        }
    }

    /// Whether `core` may take `group`: one it holds always, a new one only while this
    /// broker coordinates fewer than `max_groups` (counted now, so concurrent creations
    /// cannot all pass).
    pub(super) fn admit(&self, core: &Coordinator, group: &str) -> Result<(), GroupError> {
        if group.is_empty() || core.has_group(group) {
            return Ok(());
        }
        let max = self.config.max_groups;
        if self.group_count.fetch_add(1, Ordering::AcqRel) >= max {
            self.group_count.fetch_sub(1, Ordering::AcqRel);
            return Err(GroupError::TooManyGroups(max));
        }
        Ok(())
    }
}

/// Partition count of every topic in the pushed metadata.
pub(super) fn topic_partitions(shared: &Shared) -> BTreeMap<String, u32> {
    let md = shared.metadata.read();
    md.topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| (t.name.clone(), t.partitions.len() as u32))
        .collect()
}

pub(super) fn offsets_partitions(shared: &Shared) -> Option<u32> {
    let md = shared.metadata.read();
    md.topics
        .iter()
        .find(|t| t.name == OFFSETS_TOPIC && t.error_code == 0 && !t.partitions.is_empty())
        .map(|t| t.partitions.len() as u32)
}

/// The leader epoch of `__consumer_offsets-p` if this broker leads it.
pub(super) fn led_epoch(shared: &Shared, p: u32) -> Option<LeaderEpoch> {
    let part = shared
        .replicas
        .partition(&TopicPartition::new(OFFSETS_TOPIC, p))?;
    let role = part.role();
    (role.leader == Some(BrokerId(shared.config.id))).then_some(role.leader_epoch)
}

/// The loaded coordinator for `group`, loading its partition if this broker just became
/// its leader.
pub(super) async fn coordinator_for(
    shared: &Arc<Shared>,
    group: &str,
) -> Result<Arc<Loaded>, Failure> {
    if group.is_empty() {
        return Err((ErrorCode::InvalidGroupId, "the group id is empty".into()));
    }
    let Some(n) = offsets_partitions(shared) else {
        return Err((
            ErrorCode::CoordinatorNotAvailable,
            format!("{OFFSETS_TOPIC} does not exist yet"),
        ));
    };
    let p = partition_for(group, n);
    load_waiting(shared, p).await
}

/// [`load`], waiting up to [`LOAD_WAIT`] while the high watermark holds it back.
pub(super) async fn load_waiting(shared: &Arc<Shared>, p: u32) -> Result<Arc<Loaded>, Failure> {
    let deadline = Instant::now() + LOAD_WAIT;
    let tp = TopicPartition::new(OFFSETS_TOPIC, p);
    loop {
        let mut hw = shared
            .replicas
            .partition(&tp)
            .ok_or_else(not_coordinator)?
            .subscribe_hw();
        match load(shared, p).await {
            Err((ErrorCode::CoordinatorLoadInProgress, _)) if Instant::now() < deadline => {
                // Subscribed before the load looked, so a move meanwhile is not missed.
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, hw.changed()).await;
            }
            other => return other,
        }
    }
}

pub(super) async fn load(shared: &Arc<Shared>, p: u32) -> Result<Arc<Loaded>, Failure> {
    let gc = &shared.groups;
    let current = |epoch: LeaderEpoch| {
        gc.loaded
            .lock()
            .get(&p)
            .filter(|l| l.leader_epoch == epoch && !l.failed.load(Ordering::Acquire))
            .cloned()
    };
    let epoch = led_epoch(shared, p).ok_or_else(not_coordinator)?;
    if let Some(l) = current(epoch) {
        return Ok(l);
    }
    let _one = gc.loading.lock().await;
    let epoch = led_epoch(shared, p).ok_or_else(not_coordinator)?;
    if let Some(l) = current(epoch) {
        return Ok(l);
    }
    // A coordinator this one replaces (an earlier leader epoch of this broker) stops
    // and finishes any append before the log is read: one writer at a time.
    let previous = gc.loaded.lock().remove(&p);
    if let Some(old) = previous {
        old.failed.store(true, Ordering::Release);
        let _ = old.writing.lock().await;
    }
    let tp = TopicPartition::new(OFFSETS_TOPIC, p);
    let part = shared.replicas.partition(&tp).ok_or_else(not_coordinator)?;
    let resumed = gc.partial.lock().remove(&p);
    let mut partial = match resumed.filter(|l| l.leader_epoch == epoch) {
        Some(partial) => partial,
        None => {
            let mut core = Coordinator::new(gc.config.clone());
            core.set_partitions(topic_partitions(shared), now_ms());
            Partial {
                leader_epoch: epoch,
                core,
                next: part.log.log_start_offset(),
                target: part.log.log_end_offset(),
                records: 0,
                started: Instant::now(),
            }
        }
    };
    let hw = part.high_watermark();
    let log = part.log.clone();
    let mut partial = tokio::task::spawn_blocking(move || {
        let (next, records) = replay(&mut partial.core, &log, partial.next, hw)?;
        partial.next = next;
        partial.records += records;
        Ok::<_, Failure>(partial)
    })
    .await
    .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))??;
    if partial.next < partial.target {
        let msg = format!(
            "loading {tp}: replayed to {} of {}; waiting for the high watermark",
            partial.next, partial.target
        );
        gc.partial.lock().insert(p, partial);
        return Err((ErrorCode::CoordinatorLoadInProgress, msg));
    }
    let core = std::mem::replace(&mut partial.core, Coordinator::new(gc.config.clone()));
    let groups = core.list().len();
    info!(
        partition = p,
        leader_epoch = %epoch,
        records = partial.records,
        groups,
        high_watermark = partial.next,
        ms = partial.started.elapsed().as_millis() as u64,
        "group coordinator loaded"
    );
    let (tx, rx) = mpsc::channel(WRITER_QUEUE);
    let failed = Arc::new(AtomicBool::new(false));
    let writing = Arc::new(tokio::sync::Mutex::new(()));
    let loaded = Arc::new(Loaded {
        leader_epoch: epoch,
        core: parking_lot::Mutex::new(core),
        tx,
        failed: failed.clone(),
        writing: writing.clone(),
        waiters: Default::default(),
    });
    tokio::spawn(writer(shared.clone(), tp, rx, failed, writing));
    gc.loaded.lock().insert(p, loaded.clone());
    Ok(loaded)
}

/// Replays the partition from `from` into `core`, whole batches below `high_watermark`
/// only; returns the offset to go on from and the records read.
fn replay(
    core: &mut Coordinator,
    log: &crate::log::Log,
    from: u64,
    high_watermark: u64,
) -> Result<(u64, u64), Failure> {
    let now = Instant::now();
    let storage = |e: crate::log::LogError| (ErrorCode::CoordinatorLoadInProgress, e.to_string());
    let mut from = from.max(log.log_start_offset());
    let mut records = 0;
    loop {
        let end = log.log_end_offset().min(high_watermark);
        if from >= end {
            break;
        }
        let read = log
            .read(from, 1 << 20, Some(high_watermark))
            .map_err(storage)?;
        if read.data.is_empty() {
            break;
        }
        for batch in Batches::new(read.data) {
            let batch = batch.map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))?;
            from = from.max(batch.next_offset() as u64);
            if batch.is_control() {
                // A transaction's marker settles its pending offset commits here.
                if let Some(m) = crate::replica::txns::Marker::of(&batch) {
                    core.complete_txn(
                        batch.producer_id(),
                        batch.producer_epoch(),
                        m == crate::replica::txns::Marker::Commit,
                        batch.max_timestamp(),
                    );
                }
                continue;
            }
            let base = batch.base_offset() as u64;
            for r in batch
                .records()
                .map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))?
            {
                let offset = base + r.offset_delta as u64;
                let Some(key) = r.key else { continue };
                records += 1;
                if let Err(e) = core.replay(&key, r.value.as_deref(), now) {
                    warn!(offset, error = %e, "{OFFSETS_TOPIC}: skipped a record");
                }
            }
        }
    }
    Ok((from, records))
}

/// Largest batch the writer builds (the topic accepts up to `OFFSETS_MAX_MESSAGE_BYTES`,
/// so one large group snapshot fits in a batch of its own).
const BATCH_BYTES: usize = 512 << 10;
pub(super) const OFFSETS_MAX_MESSAGE_BYTES: u64 = 16 << 20;

/// Records as batches of about `BATCH_BYTES`, back to back.
fn encode<'a>(
    writes: impl Iterator<Item = &'a Write>,
) -> Result<bytes::Bytes, sluice_proto::BatchError> {
    let mut out = Vec::new();
    let mut b = BatchBuilder::new(Compression::None);
    let ts = now_ms();
    for w in writes {
        if !b.is_empty()
            && b.uncompressed_size() + w.key.len() + w.value.as_ref().map_or(0, Vec::len)
                > BATCH_BYTES
        {
            let full = std::mem::replace(&mut b, BatchBuilder::new(Compression::None));
            out.extend_from_slice(full.build()?.as_bytes());
        }
        b.append(ts, Some(&w.key), w.value.as_deref(), &[]);
    }
    if !b.is_empty() {
        out.extend_from_slice(b.build()?.as_bytes());
    }
    Ok(out.into())
}

/// Appends queued changes in order, everything queued meanwhile in one batch, acks=all.
async fn writer(
    shared: Arc<Shared>,
    tp: TopicPartition,
    mut rx: mpsc::Receiver<Pending>,
    failed: Arc<AtomicBool>,
    writing: Arc<tokio::sync::Mutex<()>>,
) {
    const MAX_RECORDS: usize = 4096;
    let size = |p: &Pending| -> usize {
        p.writes
            .iter()
            .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len) + 16)
            .sum()
    };
    while let Some(first) = rx.recv().await {
        let mut count = first.writes.len();
        let mut bytes = size(&first);
        let mut group = vec![first];
        while count < MAX_RECORDS && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.writes.len();
                    bytes += size(&p);
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        // Held while appending: a coordinator that replaces this one waits for it.
        let _appending = writing.lock().await;
        let result = if failed.load(Ordering::Acquire) {
            Err(not_coordinator())
        } else if count == 0 {
            Ok(())
        } else {
            match encode(group.iter().flat_map(|p| &p.writes)) {
                // The append on a blocking thread, as the Produce service does it.
                Ok(records) => {
                    let (appender, at) = (shared.clone(), tp.clone());
                    let started = tokio::task::spawn_blocking(move || {
                        let timeout = Duration::from_secs(10);
                        appender.replicas.start_produce(&at, records, -1, timeout)
                    })
                    .await
                    .unwrap_or_else(|e| Err((ErrorCode::UnknownServerError, e.to_string())));
                    match started {
                        Ok(started) => shared.replicas.finish_produce(started).await.map(|_| ()),
                        Err(f) => Err(f),
                    }
                }
                Err(e) => Err((ErrorCode::UnknownServerError, e.to_string())),
            }
        };
        if let Err((code, msg)) = &result {
            if !failed.swap(true, Ordering::AcqRel) {
                warn!(partition = %tp, %code, msg, "group state append failed; unloading");
            }
        }
        let answer = result.map_err(|_| not_coordinator());
        for p in group {
            let _ = p.done.send(answer.clone());
        }
    }
}

/// Loads every offsets partition this broker leads, drops those it no longer leads,
/// and ticks the loaded ones: session and rebalance timeouts, metadata changes,
/// offsets expiry. Also publishes the group metrics.
pub(crate) async fn maintain(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_lag = Instant::now() - Duration::from_secs(60);
    loop {
        every.tick().await;
        let n = offsets_partitions(&shared).unwrap_or(0);
        for p in 0..n {
            if led_epoch(&shared, p).is_some() {
                match load(&shared, p).await {
                    // Waiting for the high watermark: the next round goes on.
                    Ok(_) | Err((ErrorCode::CoordinatorLoadInProgress, _)) => {}
                    Err((code, msg)) => {
                        warn!(partition = p, %code, msg, "cannot load group coordinator")
                    }
                }
            }
        }
        shared
            .groups
            .partial
            .lock()
            .retain(|p, l| led_epoch(&shared, *p) == Some(l.leader_epoch));
        let loaded: Vec<(u32, Arc<Loaded>)> = {
            let mut map = shared.groups.loaded.lock();
            map.retain(|p, l| {
                let keep = led_epoch(&shared, *p) == Some(l.leader_epoch)
                    && !l.failed.load(Ordering::Acquire);
                if !keep {
                    // Its writer appends nothing more.
                    l.failed.store(true, Ordering::Release);
                }
                keep
            });
            map.iter().map(|(p, l)| (*p, l.clone())).collect()
        };
        let topics = topic_partitions(&shared);
        let (now, ms) = (Instant::now(), now_ms());
        let mut groups = 0usize;
        let mut members = 0usize;
        let mut held = 0usize;
        let mut epochs = HashMap::new();
        for (p, l) in &loaded {
            super::txn::send_due_markers(&shared, l);
            let mut core = l.core.lock();
            held += core.group_count();
            if l.tx.capacity() == 0 {
                // The writer is behind: tick next round rather than queue unboundedly.
                continue;
            }
            let mut writes = core.set_partitions(topics.clone(), ms);
            let tick = core.tick(now, ms);
            writes.extend(tick.writes);
            for (g, m) in tick.fenced {
                info!(
                    group = g,
                    member = m,
                    partition = p,
                    "member fenced (session or rebalance timeout)"
                );
            }
            let before = epochs.len();
            epochs.extend(core.epochs());
            groups += epochs.len() - before;
            members += core.member_count();
            let deliveries = tick.deliveries;
            if writes.is_empty() {
                let mut waiters = l.waiters.lock();
                for (g, d) in deliveries {
                    waiters.deliver(&g, vec![d]);
                }
            } else {
                // Answers go out once what the tick changed is written.
                let (tx, rx) = oneshot::channel();
                let _ = l.tx.try_send(Pending { writes, done: tx });
                if !deliveries.is_empty() {
                    let l = l.clone();
                    tokio::spawn(async move {
                        if let Ok(Ok(())) = rx.await {
                            let mut waiters = l.waiters.lock();
                            for (g, d) in deliveries {
                                waiters.deliver(&g, vec![d]);
                            }
                        }
                    });
                }
            }
        }
        shared.groups.group_count.store(held, Ordering::Release);
        metrics::gauge!("sluice_groups").set(groups as f64);
        metrics::gauge!("sluice_group_members").set(members as f64);
        {
            let mut last = shared.groups.epochs.lock();
            let labeled = shared.groups.labeled.lock();
            let mut other = 0u64;
            for (g, e) in &epochs {
                let before = last.get(g).copied().unwrap_or(0);
                if *e > before {
                    let n = (*e - before) as u64;
                    if labeled.contains(g) {
                        metrics::counter!("sluice_group_rebalances_total", "group" => g.clone())
                            .increment(n);
                    } else {
                        other += n;
                    }
                }
            }
            if other > 0 {
                metrics::counter!("sluice_group_rebalances_total", "group" => OTHER_GROUPS)
                    .increment(other);
            }
            drop(labeled);
            *last = epochs;
        }
        if last_lag.elapsed() >= Duration::from_secs(5) && !loaded.is_empty() {
            last_lag = Instant::now();
            publish_lag(&shared, &loaded).await;
        }
    }
}

/// The label per-group metrics use for every group past `GROUP_METRIC_LABELS_MAX`.
const OTHER_GROUPS: &str = "_other";

/// The `max` names with the largest values (ties by name), for metric labels.
fn largest<'a>(sizes: impl Iterator<Item = (&'a String, i64)>, max: usize) -> BTreeSet<String> {
    let mut v: Vec<(i64, &String)> = sizes.map(|(g, n)| (n, g)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    v.into_iter().take(max).map(|(_, g)| g.clone()).collect()
}

/// `sluice_group_lag{group}`: committed offset to high watermark, summed over the
/// group's committed partitions (high watermarks asked of each leader). Only the
/// `GROUP_METRIC_LABELS_MAX` groups with the most lag get a label; the rest are summed
/// under `group="_other"`. Also chooses the groups labeled in the rebalance counter.
async fn publish_lag(shared: &Arc<Shared>, loaded: &[(u32, Arc<Loaded>)]) {
    use sluice_proto::limits::GROUP_METRIC_LABELS_MAX;
    let mut committed: Vec<(String, TopicPartition, i64)> = Vec::new();
    let mut sizes: BTreeMap<String, i64> = BTreeMap::new();
    for (_, l) in loaded {
        let core = l.core.lock();
        for listed in core.list() {
            let g = listed.group_id;
            sizes.insert(g.clone(), listed.members as i64);
            for ((t, p), c) in core.fetch(&g, &[]) {
                if let Some(c) = c {
                    committed.push((g.clone(), TopicPartition::new(t, p), c.offset));
                }
            }
        }
    }
    let tps: BTreeSet<TopicPartition> = committed.iter().map(|(_, tp, _)| tp.clone()).collect();
    let hws = high_watermarks(shared, tps).await;
    let mut lag: BTreeMap<String, i64> = BTreeMap::new();
    for (g, tp, offset) in committed {
        if let Some(hw) = hws.get(&tp) {
            *lag.entry(g).or_default() += (hw - offset).max(0);
        }
    }
    *shared.groups.labeled.lock() =
        largest(sizes.iter().map(|(g, n)| (g, *n)), GROUP_METRIC_LABELS_MAX);
    let keep = largest(lag.iter().map(|(g, l)| (g, *l)), GROUP_METRIC_LABELS_MAX);
    let mut other = 0i64;
    for (g, l) in lag {
        if keep.contains(&g) {
            metrics::gauge!("sluice_group_lag", "group" => g).set(l as f64);
        } else {
            other += l;
        }
    }
    metrics::gauge!("sluice_group_lag", "group" => OTHER_GROUPS).set(other as f64);
}

/// High watermarks of `tps`, asked of their leaders (locally where this broker leads).
async fn high_watermarks(
    shared: &Arc<Shared>,
    tps: BTreeSet<TopicPartition>,
) -> HashMap<TopicPartition, i64> {
    let mut out = HashMap::new();
    let mut by_leader: HashMap<String, Vec<TopicPartition>> = HashMap::new();
    {
        let md = shared.metadata.read();
        for tp in tps {
            let leader = md
                .topics
                .iter()
                .find(|t| t.name == tp.topic)
                .and_then(|t| t.partitions.iter().find(|p| p.partition == tp.partition))
                .map(|p| p.leader);
            let Some(leader) = leader.filter(|l| *l >= 0) else {
                continue;
            };
            if leader as u32 == shared.config.id {
                if let Some(part) = shared.replicas.partition(&tp) {
                    out.insert(tp, part.high_watermark() as i64);
                }
                continue;
            }
            if let Some(b) = md.brokers.iter().find(|b| b.id == leader as u32) {
                by_leader.entry(b.addr.clone()).or_default().push(tp);
            }
        }
    }
    for (addr, tps) in by_leader {
        let Ok(channel) = super::admin::channel(&addr) else {
            continue;
        };
        let mut client = v1::broker_client::BrokerClient::new(channel);
        let req = v1::ListOffsetsRequest {
            partitions: tps
                .iter()
                .map(|tp| v1::ListOffsetsPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    timestamp: -1,
                })
                .collect(),
        };
        let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), client.list_offsets(req)).await
        else {
            continue;
        };
        for p in resp.into_inner().partitions {
            if p.error_code == 0 {
                out.insert(TopicPartition::new(p.topic, p.partition), p.high_watermark);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{largest, partition_for};

    #[test]
    fn only_the_largest_groups_get_a_metric_label() {
        let sizes: Vec<(String, i64)> = (0..1000).map(|i| (format!("g{i:04}"), i % 7)).collect();
        let keep = largest(sizes.iter().map(|(g, n)| (g, *n)), 100);
        assert_eq!(keep.len(), 100);
        // The 142 groups of size 6 are the largest; ties go by name.
        assert!(keep.iter().all(|g| g[1..].parse::<i64>().unwrap() % 7 == 6));
        assert!(keep.contains("g0006") && !keep.contains("g0993"));
    }

    #[test]
    fn partition_for_matches_kafkas_choice() {
        // Java: "my-group".hashCode() == -1906497762; abs % 50 == 12.
        assert_eq!(partition_for("my-group", 50), 12);
        // abs(MIN_VALUE) is 0, as in Kafka's Utils.abs.
        let h = "polygenelubricants"
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        assert_eq!(
            h,
            i32::MIN,
            "the classic String whose hashCode is MIN_VALUE"
        );
        assert_eq!(partition_for("polygenelubricants", 7), 0);
        assert!((0..1000).all(|i| partition_for(&format!("g{i}"), 12) < 12));
    }
}

#[cfg(test)]
#[path = "groups_tests.rs"]
mod load_tests;
