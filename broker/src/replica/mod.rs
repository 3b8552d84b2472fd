//! Partitions this broker hosts and what producing to and fetching from them means:
//! the driver of each partition's sans-IO [`PartitionState`].
//!
//! Knows nothing of gRPC: callers pass plain values and get [`Failure`]s (a wire error
//! code and a message). Every decision about roles, the high watermark, the ISR and
//! waiting acks=all produces is made by [`PartitionState`] (`state.rs`); this module
//! carries out its [`Action`]s against the partition's log, watch channels and
//! one-shot answers. The log is any [`ReplicaLog`] and time comes from a [`Clock`]
//! (`storage.rs`): the broker runs it over the real [`Log`] and the system clock, the
//! simulator (`sim/`) over an in-memory log and simulated time, with this same code. The state machine and the log change together under the
//! partition's lock, so an append, a role change and a follower's fetch are ordered.
//!
//! Invariant per partition: `high_watermark <= log_end_offset`, and it never moves
//! back while this broker leads the same leader epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use sluice_proto::batch::{Batches, ValidateOptions};
use sluice_proto::topic_config::LogConfig;
use sluice_proto::{BrokerId, ErrorCode, LeaderEpoch, Offset, RecordBatch, TopicPartition};
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::log::{Log, LogError, LogManager, TopicId};

mod produce;
pub use produce::{keyless_records, Appended, Produced, StartedProduce};
pub mod producers;
mod replication;
pub mod state;
pub mod storage;
pub mod txns;
pub use replication::{FollowerFetched, ToFetch};
pub use state::{Action, Event, IsrProposal, PartitionState, Refusal, Role, StateConfig, WaiterId};
pub use storage::{Clock, LogStore, ReplicaLog, SystemClock};

/// A refused request: the wire code and a message for the human.
pub type Failure = (ErrorCode, String);

/// Maps storage errors to wire codes.
pub fn storage_failure(e: LogError) -> Failure {
    let code = match &e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::RecordTooLarge { .. } => ErrorCode::MessageTooLarge,
        LogError::InvalidBatch(_) | LogError::BadHeader { .. } => ErrorCode::CorruptMessage,
        LogError::NonMonotonicOffset { .. } => ErrorCode::InvalidRequest,
        _ => ErrorCode::StorageError,
    };
    (code, e.to_string())
}

/// What the partition's lock guards: the state machine and the producer state, which
/// change together with the log.
pub(crate) struct Replica {
    pub(crate) state: PartitionState,
    /// Idempotent-producer state; under this lock, check-then-append is atomic.
    pub(crate) producers: producers::ProducerStates,
    /// Open and aborted transactions (the last stable offset), kept with the log.
    pub(crate) txns: txns::TxnIndex,
    /// When a divergence was last logged at info (the line is rate-limited).
    pub(crate) last_divergence_log: Option<Instant>,
}

/// One hosted partition.
pub struct Partition<L = Log> {
    pub tp: TopicPartition,
    pub log: Arc<L>,
    pub(crate) replica: Mutex<Replica>,
    /// A lock-free copy of the state's high watermark for readers.
    /// Invariant: `<= log.log_end_offset()`.
    high_watermark: AtomicU64,
    /// `replica.txns`' first unstable offset (`u64::MAX`: none), for lock-free
    /// readers: see [`Partition::publish_first_unstable`].
    first_unstable: AtomicU64,
    /// Publishes the high watermark; consumer long-polls watch it.
    hw_tx: watch::Sender<u64>,
    /// Publishes the log end offset; follower fetches wait on it.
    leo_tx: watch::Sender<u64>,
    /// The answers owed to waiting acks=all produces, by waiter.
    waiters: Mutex<HashMap<WaiterId, oneshot::Sender<Result<(), ErrorCode>>>>,
    next_waiter: AtomicU64,
    /// ISR proposals the state machine made, for the proposer task to send.
    proposals: Mutex<Vec<IsrProposal>>,
    /// Leader side, per follower: the leader epoch and the log's tombstone-removal mark
    /// taken at that follower's previous fetch, to tell whether compaction removed a
    /// tombstone the follower has not fetched since.
    tombstones_seen: Mutex<HashMap<u32, (LeaderEpoch, u64)>>,
}

impl<L: ReplicaLog> Partition<L> {
    pub fn role(&self) -> Role {
        self.replica.lock().state.role().clone()
    }
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn subscribe_hw(&self) -> watch::Receiver<u64> {
        self.hw_tx.subscribe()
    }

    fn is_leader(&self) -> bool {
        self.replica.lock().state.is_leader()
    }

    /// The last stable offset given the high watermark `hw`: the first offset of the
    /// oldest transaction open here, if below it.
    /// Lock-free: every fetch asks, and the partition's lock is held across appends.
    pub fn last_stable_offset(&self, hw: u64) -> u64 {
        self.first_unstable.load(Ordering::Acquire).min(hw)
    }

    /// Publishes the transaction index's first unstable offset for
    /// [`Partition::last_stable_offset`]. Called with the partition's lock held after
    /// every change to `replica.txns`, before the high watermark can move past it.
    pub(crate) fn publish_first_unstable(&self, replica: &Replica) {
        let first = replica.txns.first_unstable().unwrap_or(u64::MAX);
        self.first_unstable.store(first, Ordering::Release);
    }

    /// Carries out the state machine's actions. Called with the partition's lock held
    /// (`replica` is that guard), so actions apply in the order they were decided.
    fn perform(&self, actions: Vec<Action>) -> Result<(), Failure> {
        let mut result = Ok(());
        for action in actions {
            match action {
                Action::AssignLeaderEpoch { epoch, .. } => {
                    // The state machine takes the start offset from the log end it was
                    // given under this same lock, which is where the log assigns it.
                    if let Err(e) = self.log.assign_leader_epoch(epoch.0) {
                        result = Err(storage_failure(e));
                    }
                }
                Action::PublishHighWatermark(hw) => {
                    self.high_watermark.store(hw.0, Ordering::Release);
                    self.hw_tx.send_replace(hw.0);
                }
                Action::Complete { waiter, result } => {
                    if let Some(tx) = self.waiters.lock().remove(&waiter) {
                        let _ = tx.send(result);
                    }
                }
                Action::ProposeIsr(p) => self.proposals.lock().push(p),
            }
        }
        result
    }

    fn handle(&self, replica: &mut Replica, event: Event) -> Result<(), Failure> {
        let actions = replica.state.handle(event);
        self.perform(actions)
    }

    fn log_end(&self) -> Offset {
        Offset(self.log.log_end_offset())
    }
}

fn state_config(config: &LogConfig, lag_max: Duration) -> StateConfig {
    StateConfig {
        min_insync_replicas: config.min_insync_replicas as usize,
        replica_lag_max: lag_max,
        ..StateConfig::default()
    }
}

/// What a successful fetch of one partition returns.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: u64,
    /// The high watermark, or the first offset of the oldest open transaction if lower.
    pub last_stable_offset: u64,
    /// `read_committed` fetches: the aborted transactions the records overlap.
    pub aborted: Vec<txns::AbortedTxn>,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// A ListOffsets answer: (offset, its timestamp or -1, the partition).
pub type ListedOffset<L> = (Option<u64>, i64, Arc<Partition<L>>);

pub struct ReplicaManager<S: LogStore = LogManager> {
    broker_id: u32,
    logs: S,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition<S::Log>>>>,
    /// Time for deadlines, lag and record timestamps (the simulator's is simulated).
    clock: Arc<dyn Clock>,
    /// `replica.lag.time.max.ms`, given to every partition's state machine.
    replica_lag_max: RwLock<Duration>,
    /// `producer.id.expiration.ms`: producer ids idle this long are forgotten.
    producer_id_expiration_ms: AtomicI64,
    /// Held while a role is applied, a replica stopped or stray logs deleted, so that
    /// deciding a log is another topic's and deleting it cannot interleave with a role
    /// that (re)creates it.
    roles: Mutex<()>,
    /// Whether the logs found on disk at start were checked against the controller's
    /// metadata ([`ReplicaManager::delete_stray_logs`]).
    strays_checked: std::sync::atomic::AtomicBool,
    /// Set once that check deleted every stray log it found.
    strays_deleted: std::sync::atomic::AtomicBool,
}

impl<S: LogStore> ReplicaManager<S> {
    pub fn new(broker_id: u32, logs: S) -> ReplicaManager<S> {
        Self::with_clock(broker_id, logs, Arc::new(SystemClock))
    }

    /// A replica manager that reads time from `clock` (the simulator's).
    pub fn with_clock(broker_id: u32, logs: S, clock: Arc<dyn Clock>) -> ReplicaManager<S> {
        ReplicaManager {
            broker_id,
            logs,
            clock,
            partitions: RwLock::new(HashMap::new()),
            replica_lag_max: RwLock::new(StateConfig::default().replica_lag_max),
            producer_id_expiration_ms: AtomicI64::new(
                sluice_proto::limits::PRODUCER_ID_EXPIRATION_MS_DEFAULT as i64,
            ),
            roles: Mutex::new(()),
            strays_checked: Default::default(),
            strays_deleted: Default::default(),
        }
    }

    /// Sets `producer.id.expiration.ms` for every partition (applied on the next tick).
    pub fn set_producer_id_expiration(&self, expiration: Duration) {
        let ms = i64::try_from(expiration.as_millis()).unwrap_or(i64::MAX);
        self.producer_id_expiration_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets `replica.lag.time.max.ms` for every partition, hosted now or later. The
    /// other settings come with each LeaderAndIsr (`apply_role`), so a tick need not
    /// re-read them.
    pub fn set_replica_lag_max(&self, lag_max: Duration) {
        *self.replica_lag_max.write() = lag_max;
        for p in self.partitions() {
            let config = state_config(&p.log.config(), lag_max);
            p.replica.lock().state.set_config(config);
        }
    }

    pub fn logs(&self) -> &S {
        &self.logs
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition<S::Log>>> {
        self.partitions.read().get(tp).cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition<S::Log>>> {
        self.partitions.read().values().cloned().collect()
    }

    fn me(&self) -> BrokerId {
        BrokerId(self.broker_id)
    }

    /// Applies a LeaderAndIsr decision. The state machine ignores one older than what it
    /// holds (a lower leader epoch, or the same epoch with a lower partition epoch); the
    /// same epoch may carry new configs.
    ///
    /// `topic_id` is the topic's identity (KIP-516). A replica of another topic of the
    /// same name — deleted and re-created while this broker missed the deletion — is
    /// stopped and its log deleted first, so the role starts an empty log whatever its
    /// epochs: a lower epoch under a new id is a new partition, not a stale state.
    pub fn apply_role(
        &self,
        tp: &TopicPartition,
        role: Role,
        config: LogConfig,
        topic_id: Option<&TopicId>,
    ) -> Result<(), Failure> {
        if !role.replicas.contains(&self.me()) {
            return Ok(());
        }
        let _roles = self.roles.lock();
        if let (Some(id), Some(p)) = (topic_id, self.partition(tp)) {
            match p.log.topic_id() {
                Some(held) if held != *id => {
                    info!(partition = %tp, old_topic_id = %held, topic_id = %id, "a role for a new topic of the same name: deleting the old topic's replica");
                    self.stop_replica_held(tp, true)?;
                }
                // Hosted since before ids were sent: it is this topic's.
                None => p.log.set_topic_id(id).map_err(storage_failure)?,
                Some(_) => {}
            }
        }
        let partition = match self.partition(tp) {
            Some(p) => p,
            None => {
                let log = self
                    .logs
                    .get_or_create_for(tp, config.clone(), topic_id)
                    .map_err(storage_failure)?;
                let producers = producers::ProducerStates::rebuild(&*log, self.clock.wall_ms())
                    .map_err(storage_failure)?;
                let txns = txns::TxnIndex::rebuild(&*log).map_err(storage_failure)?;
                let first_unstable = txns.first_unstable().unwrap_or(u64::MAX);
                let lag_max = *self.replica_lag_max.read();
                let p = Arc::new(Partition {
                    tp: tp.clone(),
                    log,
                    replica: Mutex::new(Replica {
                        state: PartitionState::new(self.me(), state_config(&config, lag_max)),
                        producers,
                        txns,
                        last_divergence_log: None,
                    }),
                    high_watermark: AtomicU64::new(0),
                    first_unstable: AtomicU64::new(first_unstable),
                    hw_tx: watch::channel(0).0,
                    leo_tx: watch::channel(0).0,
                    waiters: Mutex::new(HashMap::new()),
                    next_waiter: AtomicU64::new(0),
                    proposals: Mutex::new(Vec::new()),
                    tombstones_seen: Mutex::new(HashMap::new()),
                });
                self.partitions
                    .write()
                    .entry(tp.clone())
                    .or_insert(p)
                    .clone()
            }
        };
        let lag_max = *self.replica_lag_max.read();
        partition.log.set_config(config.clone());
        let mut replica = partition.replica.lock();
        replica.state.set_config(state_config(&config, lag_max));
        let old = replica.state.role().clone();
        let event = Event::Role {
            role: role.clone(),
            log_end_offset: partition.log_end(),
            now: self.clock.now(),
        };
        let result = partition.handle(&mut replica, event);
        let new = replica.state.role();
        if new.leader_epoch != old.leader_epoch
            || new.leader != old.leader
            || old.replicas.is_empty()
        {
            info!(partition = %tp, leader = ?new.leader.map(|b| b.0), leader_epoch = new.leader_epoch.0, old_leader_epoch = old.leader_epoch.0, isr = ?new.isr.iter().map(|b| b.0).collect::<Vec<_>>(), "partition role changed");
        } else if *new != role {
            info!(partition = %tp, leader_epoch = role.leader_epoch.0, partition_epoch = role.partition_epoch, held_partition_epoch = new.partition_epoch, "ignored a stale partition state");
        }
        result
    }

    /// Stops hosting `tp`, deleting its log when asked (topic deletion). Waiting
    /// produces fail with NOT_LEADER_OR_FOLLOWER.
    pub fn stop_replica(&self, tp: &TopicPartition, delete: bool) -> Result<(), Failure> {
        let _roles = self.roles.lock();
        self.stop_replica_held(tp, delete)
    }

    /// [`ReplicaManager::stop_replica`] with `roles` held.
    fn stop_replica_held(&self, tp: &TopicPartition, delete: bool) -> Result<(), Failure> {
        let removed = self.partitions.write().remove(tp);
        if let Some(p) = removed {
            let mut replica = p.replica.lock();
            let _ = p.handle(&mut replica, Event::Shutdown);
        }
        if delete {
            self.logs.delete(tp).map_err(storage_failure)?;
            info!(partition = %tp, "deleted partition");
        }
        Ok(())
    }

    /// Deletes the logs found on disk at start that belong to no topic the controller
    /// knows now: `topics` is the current metadata, topic name → id (`None`: no id
    /// given). A log no role has claimed since start whose topic is gone, or whose
    /// recorded id differs from the current one, is a copy of a deleted topic this
    /// broker missed the deletion of (it was down, or the StopReplica was lost).
    /// Runs once per process; returns how many logs it deleted.
    ///
    /// Call only with metadata the controller sent after this broker registered: that
    /// metadata is newer than every log on disk, so a topic missing from it was deleted.
    pub fn delete_stray_logs(
        &self,
        topics: &HashMap<String, Option<TopicId>>,
    ) -> Result<usize, Failure> {
        let _roles = self.roles.lock();
        if self.strays_checked.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let (mut deleted, mut first_error) = (0, None);
        for log in self.logs.all() {
            let tp = log.topic_partition().clone();
            if self.partition(&tp).is_some() {
                continue;
            }
            let stray = match (topics.get(&tp.topic), log.topic_id()) {
                (None, _) => true,
                (Some(Some(current)), Some(held)) => *current != held,
                _ => false,
            };
            if stray {
                info!(partition = %tp, topic_id = ?log.topic_id().map(|i| i.to_string()), "deleting the log of a topic deleted while this broker missed it");
                match self.logs.delete(&tp) {
                    Ok(_) => deleted += 1,
                    // The others still go; a role for a re-created topic replaces
                    // this one when it comes.
                    Err(e) => {
                        first_error.get_or_insert(storage_failure(e));
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                self.strays_deleted.store(true, Ordering::Release);
                Ok(deleted)
            }
        }
    }

    /// Whether [`ReplicaManager::delete_stray_logs`] ran and deleted every stray log:
    /// the broker holds nothing of a topic deleted while it was away (reported in
    /// heartbeats, so the controller can close pending deletions).
    pub fn strays_deleted(&self) -> bool {
        self.strays_deleted.load(Ordering::Acquire)
    }

    /// Whether [`ReplicaManager::delete_stray_logs`] ran.
    pub fn strays_checked(&self) -> bool {
        self.strays_checked.load(Ordering::Acquire)
    }

    /// Fails every waiting produce: the broker stops serving.
    pub fn shutdown(&self) {
        for p in self.partitions() {
            let mut replica = p.replica.lock();
            let _ = p.handle(&mut replica, Event::Shutdown);
        }
    }

    /// Expires waiters past their deadline and collects ISR proposals, for every
    /// partition this broker leads.
    pub fn tick(&self, now: Instant) -> Vec<(TopicPartition, IsrProposal)> {
        let mut out = Vec::new();
        let (wall_ms, expiration_ms) = (
            self.clock.wall_ms(),
            self.producer_id_expiration_ms.load(Ordering::Relaxed),
        );
        for p in self.partitions() {
            {
                let mut replica = p.replica.lock();
                let _ = p.handle(&mut replica, Event::Tick { now });
                let expired = replica.producers.expire(wall_ms, expiration_ms);
                replica.txns.prune(p.log.log_start_offset());
                if expired > 0 {
                    info!(partition = %p.tp, expired, "producer ids expired (producer.id.expiration.ms)");
                }
            }
            out.extend(
                p.proposals
                    .lock()
                    .drain(..)
                    .map(|prop| (p.tp.clone(), prop)),
            );
        }
        out
    }

    fn hosted(&self, tp: &TopicPartition) -> Result<Arc<Partition<S::Log>>, Failure> {
        self.partition(tp).ok_or_else(|| {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("this broker does not host {tp}"),
            )
        })
    }

    fn not_leader(&self, tp: &TopicPartition, leader: Option<BrokerId>) -> Failure {
        (
            ErrorCode::NotLeaderOrFollower,
            format!(
                "broker {} is not the leader of {tp} (leader: {:?})",
                self.broker_id,
                leader.map(|b| b.0)
            ),
        )
    }

    fn leader_partition(&self, tp: &TopicPartition) -> Result<Arc<Partition<S::Log>>, Failure> {
        let p = self.hosted(tp)?;
        if !p.is_leader() {
            let leader = p.role().leader;
            return Err(self.not_leader(tp, leader));
        }
        Ok(p)
    }

    /// The idempotent producers the leader of `tp` remembers (Kafka's
    /// DescribeProducers); NOT_LEADER_OR_FOLLOWER elsewhere.
    pub fn describe_producers(
        &self,
        tp: &TopicPartition,
    ) -> Result<Vec<producers::ProducerView>, Failure> {
        let p = self.leader_partition(tp)?;
        let views = p.replica.lock().producers.describe();
        Ok(views)
    }

    /// Kafka's DeleteRecords on the leader: makes `offset` (-1: the high watermark) the
    /// partition's first offset and returns the new log start (its low watermark here;
    /// followers take the leader's log start with their next fetch). An offset above the
    /// high watermark is OFFSET_OUT_OF_RANGE; one below the log start changes nothing.
    pub fn delete_records(&self, tp: &TopicPartition, offset: i64) -> Result<u64, Failure> {
        let p = self.leader_partition(tp)?;
        let hw = p.high_watermark();
        let target = match offset {
            -1 => hw,
            o if o < 0 || o as u64 > hw => {
                return Err((
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "{tp}: cannot delete records before {offset}: the high watermark is {hw}"
                    ),
                ))
            }
            o => o as u64,
        };
        p.log.truncate_prefix_to(target).map_err(storage_failure)?;
        Ok(p.log.log_start_offset())
    }

    /// Kafka's OffsetForLeaderEpoch (KIP-101, KIP-320) as the leader answers a consumer:
    /// the largest epoch `<= epoch` this log knows and where it ended (`None` when
    /// `epoch` precedes every one kept). A client's `current_leader_epoch` other than
    /// the leader's is FENCED_LEADER_EPOCH (older) or UNKNOWN_LEADER_EPOCH (newer).
    pub fn offset_for_leader_epoch(
        &self,
        tp: &TopicPartition,
        current_leader_epoch: Option<LeaderEpoch>,
        epoch: u32,
    ) -> Result<Option<(u32, u64)>, Failure> {
        let p = self.leader_partition(tp)?;
        let mine = p.role().leader_epoch;
        if let Some(theirs) = current_leader_epoch.filter(|t| *t != mine) {
            let code = if theirs < mine {
                ErrorCode::FencedLeaderEpoch
            } else {
                ErrorCode::UnknownLeaderEpoch
            };
            return Err((
                code,
                format!("{tp}: the client's leader epoch {theirs} is not the leader's ({mine})"),
            ));
        }
        let end = p.log.log_end_offset();
        Ok(p.log.epoch_entries_snapshot().end_offset_for(epoch, end))
    }

    /// Reads from `offset` up to the high watermark (consumers never see more).
    pub fn fetch(
        &self,
        tp: &TopicPartition,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Fetched, Failure> {
        self.fetch_isolated(tp, offset, max_bytes, false)
    }

    /// [`ReplicaManager::fetch`]; `read_committed` reads only up to the last stable
    /// offset and lists the aborted transactions the records overlap (Kafka's
    /// `isolation_level` 1).
    pub fn fetch_isolated(
        &self,
        tp: &TopicPartition,
        offset: u64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<Fetched, Failure> {
        let p = self.leader_partition(tp)?;
        let hw = p.high_watermark();
        let lso = p.last_stable_offset(hw);
        let limit = if read_committed { lso } else { hw };
        let r = p
            .log
            .read(offset, max_bytes, Some(limit))
            .map_err(storage_failure)?;
        let aborted = if read_committed && !r.data.is_empty() {
            let end = Batches::new(r.data.clone())
                .flatten()
                .last()
                .map_or(offset, |b| b.next_offset().max(0) as u64);
            p.replica.lock().txns.aborted_in(offset, end)
        } else {
            Vec::new()
        };
        Ok(Fetched {
            records: r.data,
            high_watermark: hw,
            last_stable_offset: lso,
            aborted,
            log_start_offset: r.log_start_offset,
            log_end_offset: r.log_end_offset,
        })
    }

    /// Transactions open on the leader of `tp`: (producer id, first offset).
    pub fn open_transactions(&self, tp: &TopicPartition) -> Result<Vec<(i64, u64)>, Failure> {
        let p = self.leader_partition(tp)?;
        let open = p.replica.lock().txns.open();
        Ok(open)
    }

    /// The high-watermark watch of a partition this broker leads.
    pub fn watch_hw(&self, tp: &TopicPartition) -> Option<watch::Receiver<u64>> {
        self.leader_partition(tp).ok().map(|p| p.subscribe_hw())
    }

    /// ListOffsets: -1 latest (the high watermark), -2 earliest, -3 the record with the
    /// largest timestamp (none while it is above the high watermark), else the first offset
    /// with a timestamp at or after `timestamp` below the high watermark. A leader whose
    /// high watermark is still below its epoch's start offset answers latest (and a
    /// timestamp found nowhere below its HW) with OFFSET_NOT_AVAILABLE, retriable.
    pub fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<ListedOffset<S::Log>, Failure> {
        let p = self.leader_partition(tp)?;
        let (hw, available) = {
            let r = p.replica.lock();
            (r.state.high_watermark().0, r.state.offsets_available())
        };
        let not_available = || -> Failure {
            (
                ErrorCode::OffsetNotAvailable,
                format!(
                    "{tp}: the new leader's high watermark has not yet reached the start of \
                     its leader epoch; retry"
                ),
            )
        };
        let answer = match timestamp {
            -1 if !available => return Err(not_available()),
            -1 => (Some(hw), -1),
            -2 => (Some(p.log.log_start_offset()), -1),
            // KIP-734: the first record with the largest timestamp, if below the HW.
            -3 => match p.log.max_timestamp() {
                None => (None, -1),
                Some(max) => match p.log.offset_for_timestamp(max).map_err(storage_failure)? {
                    Some((offset, ts)) if offset < hw => (Some(offset), ts),
                    _ => (None, -1),
                },
            },
            t if t < 0 => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("unknown special timestamp {t}"),
                ))
            }
            t => match p.log.offset_for_timestamp(t).map_err(storage_failure)? {
                Some((offset, ts)) if offset < hw => (Some(offset), ts),
                // "None at or after t" is only final once the HW is this epoch's.
                _ if !available => return Err(not_available()),
                _ => (None, -1),
            },
        };
        Ok((answer.0, answer.1, p))
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod identity_tests;
