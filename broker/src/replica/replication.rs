//! Leader/follower replication logic (DESIGN §5), without networking: the fetcher
//! (`server/fetcher.rs`) and the fetch service call these.
//!
//! Leader side: a follower's fetch offset is its log end offset; the leader records it,
//! moves the high watermark to `min(LEO)` over the ISR, and answers with records up to
//! its own log end, or with a divergence point when the follower's last epoch ended
//! earlier on the leader (KIP-279/320). ISR changes are only *proposed* here
//! ([`ReplicaManager::isr_proposals`]); they apply when the controller commits them.
//!
//! Follower side: [`ReplicaManager::apply_fetched`] truncates to a divergence point,
//! appends the leader's batches unchanged, and takes the leader's high watermark
//! (capped by its own end).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::batch::Batches;
use sluice_proto::{ErrorCode, RecordBatch, TopicPartition};
use tokio::sync::watch;
use tracing::info;

use super::{storage_failure, Failure, ReplicaManager};

/// One partition a follower fetches.
#[derive(Debug, Clone)]
pub struct ToFetch {
    pub tp: TopicPartition,
    pub fetch_offset: u64,
    pub current_leader_epoch: i32,
    /// Epoch of the follower's last batch; -1 when its log is empty.
    pub last_fetched_epoch: i32,
}

/// The leader's answer to a follower, per partition.
#[derive(Debug, Clone)]
pub struct FollowerFetched {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    /// (epoch, end offset) to truncate to before fetching again.
    pub diverging: Option<(i32, u64)>,
}

/// An ISR change a leader asks the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub tp: TopicPartition,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<u32>,
}

/// Shortest interval between two ISR proposals for one partition.
const PROPOSAL_INTERVAL: Duration = Duration::from_millis(1000);

impl ReplicaManager {
    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    /// Partitions this broker follows, grouped by their leader.
    pub fn followed(&self) -> HashMap<u32, Vec<ToFetch>> {
        let mut out: HashMap<u32, Vec<ToFetch>> = HashMap::new();
        for p in self.partitions() {
            let role = p.role();
            let Some(leader) = role.leader.filter(|&l| l != self.broker_id) else {
                continue;
            };
            if p.log.offline_reason().is_some() {
                continue;
            }
            out.entry(leader).or_default().push(ToFetch {
                tp: p.tp.clone(),
                fetch_offset: p.log.log_end_offset(),
                current_leader_epoch: role.leader_epoch,
                last_fetched_epoch: p.log.latest_epoch().map_or(-1, |e| e.epoch as i32),
            });
        }
        out
    }

    /// The log-end-offset watch of a partition this broker leads (follower long-polls).
    pub fn watch_leo(&self, tp: &TopicPartition) -> Option<watch::Receiver<u64>> {
        self.leader_partition(tp).ok().map(|p| p.leo_tx.subscribe())
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
        if !role.replicas.contains(&replica) {
            return Err((
                ErrorCode::NotLeaderOrFollower,
                format!("broker {replica} is not a replica of {}", f.tp),
            ));
        }
        if f.current_leader_epoch >= 0 && f.current_leader_epoch < role.leader_epoch {
            return Err((
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "{}: follower epoch {} < leader epoch {}",
                    f.tp, f.current_leader_epoch, role.leader_epoch
                ),
            ));
        }
        if f.current_leader_epoch > role.leader_epoch {
            return Err((
                ErrorCode::UnknownLeaderEpoch,
                format!(
                    "{}: follower epoch {} > leader epoch {}",
                    f.tp, f.current_leader_epoch, role.leader_epoch
                ),
            ));
        }
        let (start, end) = (p.log.log_start_offset(), p.log.log_end_offset());
        let answer = |records: Bytes, diverging| FollowerFetched {
            records,
            high_watermark: p.high_watermark(),
            log_start_offset: start,
            log_end_offset: end,
            diverging,
        };
        if f.last_fetched_epoch >= 0 {
            let diverged = match p.log.end_offset_for_epoch(f.last_fetched_epoch as u32) {
                Some((epoch, epoch_end))
                    if epoch as i32 != f.last_fetched_epoch || epoch_end < f.fetch_offset =>
                {
                    Some((epoch as i32, epoch_end))
                }
                Some(_) => None,
                None => Some((-1, start)),
            };
            if diverged.is_some() {
                return Ok(answer(Bytes::new(), diverged));
            }
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
        let now = Instant::now();
        {
            let mut followers = p.followers.lock();
            let st = followers.entry(replica).or_insert(super::FollowerState {
                log_end_offset: 0,
                caught_up_at: now,
                last_fetch_at: now,
                leader_end_at_last_fetch: u64::MAX,
            });
            st.log_end_offset = f.fetch_offset;
            if f.fetch_offset >= end {
                st.caught_up_at = now;
            } else if f.fetch_offset >= st.leader_end_at_last_fetch {
                st.caught_up_at = st.caught_up_at.max(st.last_fetch_at);
            }
            st.last_fetch_at = now;
            st.leader_end_at_last_fetch = end;
        }
        p.advance_hw(self.broker_id);
        let r = p
            .log
            .read(f.fetch_offset, max_bytes, None)
            .map_err(storage_failure)?;
        Ok(answer(r.data, None))
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
        let role = p.role();
        if role.leader_epoch != sent.current_leader_epoch
            || role.leader == Some(self.broker_id)
            || p.log.log_end_offset() != sent.fetch_offset
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
                p.rebuild_producer_state().map_err(storage_failure)?;
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        if let Some((epoch, end)) = fetched.diverging {
            // KIP-320: cut at the smaller of the leader's end for that epoch and ours
            // (epoch -1: the leader knows nothing that old; cut to its log start).
            let target = if epoch >= 0 {
                let mine = p
                    .log
                    .end_offset_for_epoch(epoch as u32)
                    .map_or(0, |(_, o)| o);
                end.min(mine)
            } else {
                end
            };
            let new_end = p.log.truncate_to(target).map_err(storage_failure)?;
            info!(partition = %sent.tp, diverging_epoch = epoch, leader_end = end, new_log_end_offset = new_end, "follower truncated a divergent suffix");
            // Forget batches that are gone, or a retry of one would be "found".
            p.rebuild_producer_state().map_err(storage_failure)?;
            return Ok(());
        }
        if !fetched.records.is_empty() {
            let mut batches = Vec::new();
            for b in Batches::new(fetched.records) {
                let b: RecordBatch = b.map_err(|e| {
                    (
                        ErrorCode::CorruptMessage,
                        format!("{}: from leader: {e}", sent.tp),
                    )
                })?;
                if (b.next_offset() as u64) > p.log.log_end_offset() {
                    batches.push(b);
                }
            }
            let mut producers = p.producers.lock();
            p.log
                .append_as_follower(&batches, super::now_ms())
                .map_err(storage_failure)?;
            for b in &batches {
                producers.record(b, b.base_offset() as u64);
            }
        }
        let hw = fetched.high_watermark.min(p.log.log_end_offset());
        p.set_follower_hw(hw);
        Ok(())
    }

    /// ISR changes this broker, as leader, should propose: followers silent or behind
    /// past `lag_max` leave; followers caught up to the high watermark (and into the
    /// current epoch) join.
    pub fn isr_proposals(&self, now: Instant, lag_max: Duration) -> Vec<IsrProposal> {
        let mut out = Vec::new();
        for p in self.partitions() {
            let role = p.role();
            if role.leader != Some(self.broker_id) {
                continue;
            }
            let hw = p.high_watermark();
            let epoch_start = p.log.latest_epoch().map_or(0, |e| e.start_offset);
            let followers = p.followers.lock().clone();
            let mut isr: Vec<u32> = role
                .isr
                .iter()
                .copied()
                .filter(|r| {
                    *r == self.broker_id
                        || followers
                            .get(r)
                            .is_some_and(|f| now.duration_since(f.caught_up_at) <= lag_max)
                })
                .collect();
            for &r in &role.replicas {
                let caught_up = followers.get(&r).is_some_and(|f| {
                    f.log_end_offset >= hw
                        && f.log_end_offset >= epoch_start
                        && now.duration_since(f.caught_up_at) <= lag_max
                });
                if !isr.contains(&r) && caught_up {
                    isr.push(r);
                }
            }
            isr.sort_by_key(|r| role.replicas.iter().position(|x| x == r));
            let mut current = role.isr.clone();
            current.sort_by_key(|r| role.replicas.iter().position(|x| x == r));
            if isr == current {
                continue;
            }
            let mut last = p.last_isr_proposal.lock();
            if last.is_some_and(|t| now.duration_since(t) < PROPOSAL_INTERVAL) {
                continue;
            }
            *last = Some(now);
            out.push(IsrProposal {
                tp: p.tp.clone(),
                leader_epoch: role.leader_epoch,
                partition_epoch: role.partition_epoch,
                new_isr: isr,
            });
        }
        out
    }
}
