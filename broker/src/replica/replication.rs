//! Leader/follower replication (DESIGN §5), without networking: the fetcher
//! (`server/fetcher.rs`) and the fetch service call these, and they feed what happened to
//! the partition's [`PartitionState`](super::PartitionState).
//!
//! Leader side: a follower's fetch offset is its log end offset; the leader checks the
//! follower's epochs, answers with a divergence point when the follower's last epoch
//! ended earlier here (KIP-279/320, [`state::divergence`]), and otherwise tells the
//! state machine, which moves the high watermark and completes waiting produces. ISR
//! changes are only *proposed* ([`super::ReplicaManager::tick`]); they apply when the
//! controller commits them.
//!
//! Follower side: [`ReplicaManager::apply_fetched`] truncates to a divergence point
//! ([`state::truncation_target`]), appends the leader's batches unchanged, and takes the
//! leader's high watermark (capped by its own end). Nothing a peer sends is trusted:
//! malformed batches are an error, never a panic.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use sluice_proto::batch::Batches;
use sluice_proto::{BrokerId, ErrorCode, LeaderEpoch, Offset, RecordBatch, TopicPartition};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::state::{self, Event};
use super::{storage_failure, Failure, LogStore, Partition, ReplicaLog, ReplicaManager};

/// Shortest interval between two info-level divergence lines for one partition.
const DIVERGENCE_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One partition a follower fetches.
#[derive(Debug, Clone)]
pub struct ToFetch {
    pub tp: TopicPartition,
    pub fetch_offset: Offset,
    /// `None` when the requester does not say (skips the epoch check).
    pub current_leader_epoch: Option<LeaderEpoch>,
    /// Epoch of the follower's last batch; `None` when its log is empty.
    pub last_fetched_epoch: Option<LeaderEpoch>,
}

/// The leader's answer to a follower, per partition.
#[derive(Debug, Clone)]
pub struct FollowerFetched {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    /// (epoch, end offset) to truncate to before fetching again.
    pub diverging: Option<(Option<LeaderEpoch>, Offset)>,
}

impl<S: LogStore> ReplicaManager<S> {
    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    /// Partitions this broker follows, grouped by their leader.
    pub fn followed(&self) -> HashMap<u32, Vec<ToFetch>> {
        let mut out: HashMap<u32, Vec<ToFetch>> = HashMap::new();
        for p in self.partitions() {
            let role = p.role();
            let Some(leader) = role.leader.filter(|&l| l != self.me()) else {
                continue;
            };
            if p.log.offline_reason().is_some() {
                continue;
            }
            out.entry(leader.0).or_default().push(ToFetch {
                tp: p.tp.clone(),
                fetch_offset: p.log_end(),
                current_leader_epoch: Some(role.leader_epoch),
                last_fetched_epoch: p.log.latest_epoch().map(|e| LeaderEpoch(e.epoch)),
            });
        }
        out
    }

    /// The digest of every hosted partition's role, as a heartbeat reports it for the
    /// controller's reconciliation (`sluice_proto::digest`).
    pub fn roles_digest(&self) -> u64 {
        sluice_proto::digest::roles_digest(self.partitions().iter().map(|p| {
            let role = p.role();
            let topic_id = p.log.topic_id();
            sluice_proto::digest::role_hash(
                &p.tp.topic,
                topic_id.as_ref().map_or("", |id| id.as_str()),
                p.tp.partition,
                role.leader.map_or(-1, |l| l.0 as i32),
                role.leader_epoch.to_wire(),
                role.partition_epoch,
            )
        }))
    }

    /// The log-end-offset watch of a partition this broker leads (follower long-polls).
    pub fn watch_leo(&self, tp: &TopicPartition) -> Option<watch::Receiver<u64>> {
        self.leader_partition(tp).ok().map(|p| p.leo_tx.subscribe())
    }

    /// Whether compaction removed a tombstone at or above `fetch_offset` after this
    /// follower's previous fetch began (on its first fetch in this leader epoch: ever).
    /// The follower has not read that tombstone and never will, but may hold a value it
    /// deleted, which nothing newer will supersede: it must start over from the log
    /// start. A fetch at the log start is always safe (it reads the compacted log from
    /// there, where the deleted values went before their tombstones did). `mark` is
    /// [`Log::tombstone_removal_mark`] taken before this fetch's read, so a removal that
    /// read may already reflect is checked again at the next fetch.
    ///
    /// Never for an ISR member, which must not drop acknowledged records: the cleaner
    /// works below the high watermark, which no ISR member's fetch offset is below, so
    /// one cannot have skipped a removed tombstone.
    fn skipped_tombstones(
        p: &Partition<S::Log>,
        replica: u32,
        role: &state::Role,
        fetch_offset: Offset,
        log_start: Offset,
        mark: u64,
    ) -> bool {
        let previous = p
            .tombstones_seen
            .lock()
            .insert(replica, (role.leader_epoch, mark))
            .filter(|(epoch, _)| *epoch == role.leader_epoch)
            .map(|(_, mark)| mark);
        if fetch_offset <= log_start || fetch_offset.0 >= p.log.tombstones_removed_since(previous) {
            return false;
        }
        if role.isr.contains(&BrokerId(replica)) {
            warn!(partition = %p.tp, replica, fetch_offset = fetch_offset.0, "an ISR member skipped a removed tombstone; it keeps its log (a cleaner bug?)");
            return false;
        }
        true
    }

    /// Leader side of a follower fetch.
    pub fn fetch_for_follower(
        &self,
        replica: u32,
        f: &ToFetch,
        max_bytes: usize,
    ) -> Result<FollowerFetched, Failure> {
        let p = self.leader_partition(&f.tp)?;
        let role = p.role();
        if !role.replicas.contains(&BrokerId(replica)) {
            return Err((
                ErrorCode::NotLeaderOrFollower,
                format!("broker {replica} is not a replica of {}", f.tp),
            ));
        }
        if let Some(theirs) = f.current_leader_epoch {
            if theirs != role.leader_epoch {
                let code = if theirs < role.leader_epoch {
                    ErrorCode::FencedLeaderEpoch
                } else {
                    ErrorCode::UnknownLeaderEpoch
                };
                return Err((
                    code,
                    format!(
                        "{}: follower epoch {theirs} but leader epoch {}",
                        f.tp, role.leader_epoch
                    ),
                ));
            }
        }
        let mark = p.log.tombstone_removal_mark();
        let (start, end) = (Offset(p.log.log_start_offset()), p.log_end());
        let epochs = p.log.epoch_entries_snapshot();
        if let Some(d) =
            state::divergence(&epochs, start, end, f.last_fetched_epoch, f.fetch_offset)
        {
            return Ok(FollowerFetched {
                records: Bytes::new(),
                high_watermark: p.high_watermark(),
                log_start_offset: start.0,
                log_end_offset: end.0,
                diverging: Some(d),
            });
        }
        if f.fetch_offset < start || f.fetch_offset > end {
            return Err((
                ErrorCode::OffsetOutOfRange,
                format!(
                    "{}: follower offset {} outside [{start}, {end}]",
                    f.tp, f.fetch_offset
                ),
            ));
        }
        {
            let mut replica_state = p.replica.lock();
            let event = Event::FollowerFetch {
                replica: BrokerId(replica),
                fetch_offset: f.fetch_offset,
                log_end_offset: p.log_end(),
                now: self.clock.now(),
            };
            p.handle(&mut replica_state, event)?;
        }
        let r = p
            .log
            .read(f.fetch_offset.0, max_bytes, None)
            .map_err(storage_failure)?;
        if Self::skipped_tombstones(&p, replica, &role, f.fetch_offset, start, mark) {
            info!(partition = %f.tp, replica, fetch_offset = f.fetch_offset.0, "follower skipped tombstones that compaction removed; it restarts from the log start");
            return Ok(FollowerFetched {
                records: Bytes::new(),
                high_watermark: p.high_watermark(),
                log_start_offset: start.0,
                log_end_offset: end.0,
                diverging: Some((None, start)),
            });
        }
        Ok(FollowerFetched {
            records: r.data,
            high_watermark: p.high_watermark(),
            log_start_offset: r.log_start_offset,
            log_end_offset: r.log_end_offset,
            diverging: None,
        })
    }

    /// Follower side: applies the leader's answer, unless the partition's role changed
    /// since the fetch was sent (then the answer is stale and dropped).
    pub fn apply_fetched(
        &self,
        sent: &ToFetch,
        result: Result<FollowerFetched, (ErrorCode, u64, u64)>,
    ) -> Result<(), Failure> {
        let Some(p) = self.partition(&sent.tp) else {
            return Ok(());
        };
        let mut guard = p.replica.lock();
        let replica = &mut *guard;
        let role = replica.state.role();
        if Some(role.leader_epoch) != sent.current_leader_epoch
            || role.leader == Some(self.me())
            || p.log_end() != sent.fetch_offset
        {
            return Ok(());
        }
        let fetched = match result {
            Ok(f) => f,
            Err((ErrorCode::OffsetOutOfRange, leader_start, leader_end)) => {
                let mine = p.log.log_end_offset();
                if mine < leader_start {
                    info!(partition = %sent.tp, log_end_offset = mine, leader_log_start_offset = leader_start, "follower fell behind the leader's log start; restarting there");
                    p.log
                        .truncate_prefix_to(leader_start)
                        .map_err(storage_failure)?;
                } else if mine > leader_end {
                    p.log.truncate_to(leader_end).map_err(storage_failure)?;
                }
                return after_truncation(&p, replica, self.clock.wall_ms());
            }
            Err(_) => return Ok(()),
        };
        if let Some(diverging) = fetched.diverging {
            let epochs = p.log.epoch_entries_snapshot();
            let target = state::truncation_target(&epochs, p.log_end(), diverging);
            let old_end = p.log.log_end_offset();
            let new_end = p.log.truncate_to(target.0).map_err(storage_failure)?;
            let now = self.clock.now();
            let quiet = replica
                .last_divergence_log
                .is_some_and(|t| now.duration_since(t) < DIVERGENCE_LOG_INTERVAL);
            if !quiet {
                replica.last_divergence_log = Some(now);
                info!(partition = %sent.tp, diverging_epoch = ?diverging.0.map(|e| e.0), leader_end = diverging.1.0, old_log_end_offset = old_end, new_log_end_offset = new_end, "follower truncated a divergent suffix");
            } else {
                debug!(partition = %sent.tp, new_log_end_offset = new_end, "follower truncated a divergent suffix");
            }
            return after_truncation(&p, replica, self.clock.wall_ms());
        }
        let mut flush_to = None;
        if !fetched.records.is_empty() {
            let mut batches = Vec::new();
            for b in Batches::new(fetched.records) {
                let b: RecordBatch = b.map_err(|e| {
                    (
                        ErrorCode::CorruptMessage,
                        format!("{}: from leader: {e}", sent.tp),
                    )
                })?;
                if (b.next_offset().max(0) as u64) > p.log.log_end_offset() {
                    batches.push(b);
                }
            }
            replica
                .txns
                .before_append(&*p.log, batches.iter())
                .map_err(storage_failure)?;
            let appended = p
                .log
                .append_as_follower(&batches, self.clock.wall_ms())
                .map_err(storage_failure)?;
            flush_to = appended
                .filter(|a| a.needs_flush)
                .map(|a| a.last_offset + 1);
            for b in &batches {
                let base = b.base_offset().max(0) as u64;
                replica.producers.record(b, base, self.clock.wall_ms());
                replica.txns.observe(b, base);
            }
            p.publish_first_unstable(replica);
        }
        // The leader's records below its log start are gone (retention, DeleteRecords):
        // here too, so a later leader does not bring them back. Only below what this
        // replica holds and the leader has committed.
        let follow_start = fetched
            .log_start_offset
            .min(fetched.high_watermark)
            .min(p.log_end().0);
        if follow_start > p.log.log_start_offset() {
            p.log
                .truncate_prefix_to(follow_start)
                .map_err(storage_failure)?;
        }
        let event = Event::Replicated {
            leader_high_watermark: Offset(fetched.high_watermark),
            log_end_offset: p.log_end(),
        };
        p.handle(replica, event)?;
        drop(guard);
        // `flush.messages` holds on followers too, and before this returns: the next
        // fetch reports this log end to the leader, whose high watermark (and so every
        // acks=all answer) counts it as held by this replica. Unflushed, a power loss
        // of every replica could take an acknowledged record from all of them (the
        // simulator's seed 5 with flush.messages=1 and power loss did).
        if let Some(end) = flush_to {
            p.log.flush_to(end).map_err(storage_failure)?;
        }
        Ok(())
    }
}

/// After a follower truncation: the state machine caps its high watermark, and the
/// producer state forgets batches that are gone (or a retry of one would be "found").
fn after_truncation<L: ReplicaLog>(
    p: &Partition<L>,
    replica: &mut super::Replica,
    wall_ms: i64,
) -> Result<(), Failure> {
    replica.producers =
        super::producers::ProducerStates::rebuild(&*p.log, wall_ms).map_err(storage_failure)?;
    replica.txns = super::txns::TxnIndex::rebuild(&*p.log).map_err(storage_failure)?;
    p.publish_first_unstable(replica);
    let event = Event::Truncated {
        log_end_offset: p.log_end(),
    };
    p.handle(replica, event)
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod flush_tests;
