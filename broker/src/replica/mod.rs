//! Partitions this broker hosts and what producing to and fetching from them means:
//! leadership checks, batch validation, appends, the high watermark, acks.
//!
//! Knows nothing of gRPC: callers pass plain values and get [`Failure`]s (a wire error
//! code and a message). The high watermark is `min(LEO)` over the ISR — today the ISR
//! of a leader with no followers is the leader alone, so it follows the leader's log
//! end offset; follower LEOs plug in with replication.
//!
//! Invariant per partition: `high_watermark <= log_end_offset`, and it never moves
//! back while this broker leads the same leader epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use sluice_proto::batch::{Batches, ValidateOptions};
use sluice_proto::topic_config::LogConfig;
use sluice_proto::{ErrorCode, RecordBatch, TopicPartition};
use tokio::sync::watch;
use tracing::info;

use crate::log::{Log, LogError, LogManager};

mod producers;
mod replication;
pub use replication::{FollowerFetched, IsrProposal, ToFetch};

/// A refused request: the wire code and a message for the human.
pub type Failure = (ErrorCode, String);

/// Maps storage errors to wire codes.
pub fn storage_failure(e: LogError) -> Failure {
    let code = match &e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::RecordTooLarge { .. } => ErrorCode::MessageTooLarge,
        LogError::InvalidBatch(_) => ErrorCode::CorruptMessage,
        LogError::NonMonotonicOffset { .. } => ErrorCode::InvalidRequest,
        _ => ErrorCode::StorageError,
    };
    (code, e.to_string())
}

/// The controller's decision about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub leader: Option<u32>,
    pub leader_epoch: i32,
    pub replicas: Vec<u32>,
    pub isr: Vec<u32>,
    pub partition_epoch: i32,
}

/// One hosted partition.
pub struct Partition {
    pub tp: TopicPartition,
    pub log: Arc<Log>,
    role: RwLock<Role>,
    /// Invariant: `<= log.log_end_offset()`.
    high_watermark: AtomicU64,
    /// Publishes the high watermark; fetch and acks=all waiters watch it.
    hw_tx: watch::Sender<u64>,
    /// Publishes the log end offset; follower fetches wait on it.
    leo_tx: watch::Sender<u64>,
    /// What this broker, as leader, knows of each follower.
    followers: parking_lot::Mutex<HashMap<u32, FollowerState>>,
    /// Idempotent-producer state; its lock also makes check-then-append atomic.
    producers: parking_lot::Mutex<producers::ProducerStates>,
    /// When this leader last proposed an ISR change (proposals are rate-limited).
    last_isr_proposal: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch.
    pub(crate) log_end_offset: u64,
    /// Last time it was known to have everything the leader had (Kafka's rule: a fetch
    /// at or past the leader's end as of the previous fetch proves it was caught up then).
    pub(crate) caught_up_at: std::time::Instant,
    pub(crate) last_fetch_at: std::time::Instant,
    pub(crate) leader_end_at_last_fetch: u64,
}

impl Partition {
    pub fn role(&self) -> Role {
        self.role.read().clone()
    }
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn subscribe_hw(&self) -> watch::Receiver<u64> {
        self.hw_tx.subscribe()
    }

    fn is_leader(&self, me: u32) -> bool {
        self.role.read().leader == Some(me)
    }

    /// Re-reads the idempotent-producer state from the log (after a truncation).
    fn rebuild_producer_state(&self) -> Result<(), LogError> {
        let mut producers = self.producers.lock();
        *producers = producers::ProducerStates::rebuild(&self.log)?;
        Ok(())
    }

    /// A follower takes the leader's high watermark, capped by its own log end. It may
    /// move back after a truncation, which is why this is a store, not a max.
    fn set_follower_hw(&self, hw: u64) {
        self.high_watermark.store(hw, Ordering::Release);
        self.hw_tx.send_replace(hw);
    }

    /// Recomputes HW = min LEO over the ISR and publishes it if it moved forward.
    fn advance_hw(&self, me: u32) {
        let leo = self.log.log_end_offset();
        let role = self.role.read();
        let followers = self.followers.lock();
        let hw = role
            .isr
            .iter()
            .filter(|&&r| r != me)
            .map(|r| followers.get(r).map_or(0, |f| f.log_end_offset))
            .fold(leo, u64::min);
        let old = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        if hw > old {
            self.hw_tx.send_replace(hw);
        }
    }
}

/// What a successful produce returns.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_append_time: Option<i64>,
    pub log_start_offset: u64,
}

/// What a successful fetch of one partition returns.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

pub struct ReplicaManager {
    broker_id: u32,
    logs: LogManager,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ReplicaManager {
    pub fn new(broker_id: u32, logs: LogManager) -> ReplicaManager {
        ReplicaManager {
            broker_id,
            logs,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    pub fn logs(&self) -> &LogManager {
        &self.logs
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions.read().get(tp).cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Applies a LeaderAndIsr decision. A state with an older leader epoch than the one
    /// held is ignored (it was overtaken); the same epoch may carry new configs.
    pub fn apply_role(
        &self,
        tp: &TopicPartition,
        role: Role,
        config: LogConfig,
    ) -> Result<(), Failure> {
        if !role.replicas.contains(&self.broker_id) {
            return Ok(());
        }
        let existing = self.partition(tp);
        let partition = match existing {
            Some(p) => p,
            None => {
                let log = self
                    .logs
                    .get_or_create(tp, config.clone())
                    .map_err(storage_failure)?;
                let log_for_state = log.clone();
                let (hw_tx, _) = watch::channel(0);
                let p = Arc::new(Partition {
                    tp: tp.clone(),
                    log,
                    role: RwLock::new(Role {
                        leader: None,
                        leader_epoch: -1,
                        replicas: vec![],
                        isr: vec![],
                        partition_epoch: -1,
                    }),
                    high_watermark: AtomicU64::new(0),
                    hw_tx,
                    leo_tx: watch::channel(0).0,
                    followers: parking_lot::Mutex::new(HashMap::new()),
                    producers: parking_lot::Mutex::new(
                        producers::ProducerStates::rebuild(&log_for_state)
                            .map_err(storage_failure)?,
                    ),
                    last_isr_proposal: parking_lot::Mutex::new(None),
                });
                self.partitions
                    .write()
                    .entry(tp.clone())
                    .or_insert(p)
                    .clone()
            }
        };
        partition.log.set_config(config);
        {
            let mut current = partition.role.write();
            if role.leader_epoch < current.leader_epoch {
                return Ok(());
            }
            let new_term =
                role.leader_epoch != current.leader_epoch || role.leader != current.leader;
            if new_term {
                info!(partition = %tp, leader = ?role.leader, leader_epoch = role.leader_epoch, old_leader_epoch = current.leader_epoch, isr = ?role.isr, "partition role changed");
                if role.leader == Some(self.broker_id) {
                    // A new term: record where this epoch starts, and give every
                    // follower a fresh lag clock.
                    partition
                        .log
                        .assign_leader_epoch(role.leader_epoch.max(0) as u32)
                        .map_err(storage_failure)?;
                    let now = std::time::Instant::now();
                    let mut followers = partition.followers.lock();
                    followers.clear();
                    for &r in role.replicas.iter().filter(|&&r| r != self.broker_id) {
                        followers.insert(
                            r,
                            FollowerState {
                                log_end_offset: 0,
                                caught_up_at: now,
                                last_fetch_at: now,
                                leader_end_at_last_fetch: u64::MAX,
                            },
                        );
                    }
                }
            }
            *current = role;
            *partition.last_isr_proposal.lock() = None;
        }
        if partition.is_leader(self.broker_id) {
            partition.advance_hw(self.broker_id);
        }
        Ok(())
    }

    /// Stops hosting `tp`, deleting its log when asked (topic deletion).
    pub fn stop_replica(&self, tp: &TopicPartition, delete: bool) -> Result<(), Failure> {
        self.partitions.write().remove(tp);
        if delete {
            self.logs.delete(tp).map_err(storage_failure)?;
            info!(partition = %tp, "deleted partition");
        }
        Ok(())
    }

    fn leader_partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>, Failure> {
        let p = self.partition(tp).ok_or_else(|| {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("this broker does not host {tp}"),
            )
        })?;
        if !p.is_leader(self.broker_id) {
            let leader = p.role().leader;
            return Err((
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {} is not the leader of {tp} (leader: {leader:?})",
                    self.broker_id
                ),
            ));
        }
        Ok(p)
    }

    /// Validates and appends the batches in `records`, then waits as `acks` demands.
    pub async fn produce(
        &self,
        tp: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<Produced, Failure> {
        if !(-1..=1).contains(&acks) {
            return Err((
                ErrorCode::InvalidRequiredAcks,
                format!("acks must be -1 (all), 0 or 1, got {acks}"),
            ));
        }
        let p = self.leader_partition(tp)?;
        let config = p.log.config();
        let mut batches = Vec::new();
        for b in Batches::new(records) {
            let b: RecordBatch =
                b.map_err(|e| (ErrorCode::CorruptMessage, format!("{tp}: {e}")))?;
            if b.size() as u64 > config.max_message_bytes {
                return Err((
                    ErrorCode::MessageTooLarge,
                    format!(
                        "{tp}: batch of {} bytes exceeds max.message.bytes={}",
                        b.size(),
                        config.max_message_bytes
                    ),
                ));
            }
            b.validate(&ValidateOptions::default())
                .map_err(|e| (ErrorCode::CorruptMessage, format!("{tp}: {e}")))?;
            batches.push(b);
        }
        if batches.is_empty() {
            return Err((
                ErrorCode::CorruptMessage,
                format!("{tp}: the request carries no record batch"),
            ));
        }
        let role = p.role();
        if acks == -1 && (role.isr.len() as u32) < config.min_insync_replicas {
            return Err((
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{tp}: {} in-sync replicas, min.insync.replicas={}",
                    role.isr.len(),
                    config.min_insync_replicas
                ),
            ));
        }
        let now = now_ms();
        let mut first: Option<Produced> = None;
        let mut needs_flush = false;
        for b in &batches {
            let info = {
                // Check and append under the producer-state lock: a retry racing its
                // original cannot slip in between.
                let mut producers = p.producers.lock();
                let check = if b.producer_id() >= 0 {
                    producers.check(b)
                } else {
                    producers::Check::Append
                };
                match check {
                    producers::Check::Duplicate(base) => crate::log::AppendInfo {
                        base_offset: base,
                        last_offset: base + b.last_offset_delta() as u64,
                        log_append_time: None,
                        needs_flush: false,
                    },
                    producers::Check::OutOfOrder { expected, got } => {
                        return Err((
                            ErrorCode::OutOfOrderSequence,
                            format!(
                                "{tp}: producer {} sent sequence {got}, expected {expected}",
                                b.producer_id()
                            ),
                        ));
                    }
                    producers::Check::Append => {
                        let info = p
                            .log
                            .append_as_leader(b, role.leader_epoch.max(0) as u32, now)
                            .map_err(storage_failure)?;
                        producers.record(b, info.base_offset);
                        info
                    }
                }
            };
            needs_flush |= info.needs_flush;
            let produced = Produced {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                log_append_time: info.log_append_time,
                log_start_offset: 0,
            };
            first = Some(match first {
                Some(f) => Produced {
                    last_offset: info.last_offset,
                    ..f
                },
                None => produced,
            });
        }
        let mut produced = first.expect("non-empty");
        let end = produced.last_offset + 1;
        if needs_flush {
            let log = p.log.clone();
            tokio::task::spawn_blocking(move || log.flush_to(end))
                .await
                .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?
                .map_err(storage_failure)?;
        }
        p.leo_tx.send_replace(p.log.log_end_offset());
        p.advance_hw(self.broker_id);
        produced.log_start_offset = p.log.log_start_offset();
        if acks == -1 {
            let mut rx = p.subscribe_hw();
            let waited = tokio::time::timeout(timeout, rx.wait_for(|&hw| hw >= end)).await;
            match waited {
                Ok(Ok(_)) => {}
                _ => {
                    return Err((
                        ErrorCode::RequestTimedOut,
                        format!("{tp}: in-sync replicas did not confirm within {timeout:?}"),
                    ));
                }
            }
        }
        Ok(produced)
    }

    /// Reads from `offset` up to the high watermark (consumers never see more).
    pub fn fetch(
        &self,
        tp: &TopicPartition,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Fetched, Failure> {
        let p = self.leader_partition(tp)?;
        let hw = p.high_watermark();
        let r = p
            .log
            .read(offset, max_bytes, Some(hw))
            .map_err(storage_failure)?;
        Ok(Fetched {
            records: r.data,
            high_watermark: hw,
            log_start_offset: r.log_start_offset,
            log_end_offset: r.log_end_offset,
        })
    }

    /// The high-watermark watch of a partition this broker leads.
    pub fn watch_hw(&self, tp: &TopicPartition) -> Option<watch::Receiver<u64>> {
        self.leader_partition(tp).ok().map(|p| p.subscribe_hw())
    }

    /// ListOffsets: -1 latest (the high watermark), -2 earliest, else the first offset
    /// with a timestamp at or after `timestamp` below the high watermark.
    pub fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<(Option<u64>, i64, Arc<Partition>), Failure> {
        let p = self.leader_partition(tp)?;
        let hw = p.high_watermark();
        let answer = match timestamp {
            -1 => (Some(hw), -1),
            -2 => (Some(p.log.log_start_offset()), -1),
            t if t < 0 => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("unknown special timestamp {t}"),
                ))
            }
            t => match p.log.offset_for_timestamp(t).map_err(storage_failure)? {
                Some((offset, ts)) if offset < hw => (Some(offset), ts),
                _ => (None, -1),
            },
        };
        Ok((answer.0, answer.1, p))
    }
}
