//! One partition replica's replication decisions as a sans-IO state machine: role and
//! epochs, the ISR as committed by the controller, what the leader knows of each
//! follower, the high watermark, and the purgatory of acks=all produces waiting for it.
//!
//! [`PartitionState::handle`] takes an [`Event`] (an append done, a follower's fetch, a
//! role pushed by the controller, a tick, shutdown) with `now` inside it and returns the
//! [`Action`]s the driver must carry out (publish the high watermark, complete or fail a
//! waiting produce, record a new leader epoch in the log, propose an ISR change). It
//! never touches files, sockets or clocks, so `ReplicaManager` drives it against the
//! real `Log` and network, and the simulator (`sim/`) drives it against an in-memory log
//! and a lossy network from one seed.
//!
//! The acks=all promise lives here: a waiter completes with success only while this
//! broker still leads *the leader epoch it appended in*, the high watermark has passed
//! its last offset, and the committed ISR has at least `min.insync.replicas` members.
//! Any role or epoch change fails it with NOT_LEADER_OR_FOLLOWER (its offsets may be
//! truncated by the next leader); a too-small ISR at completion fails it with
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND; its deadline fails it with REQUEST_TIMED_OUT.
//!
//! Invariants: `high_watermark <= log_end_offset`; on a leader the high watermark never
//! decreases within a leader epoch; every waiter belongs to the current leader epoch.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sluice_proto::{BrokerId, ErrorCode, LeaderEpoch, Offset};

use crate::log::EpochEntries;

/// The controller's decision about one partition, with typed ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub replicas: Vec<BrokerId>,
    /// Invariant (controller side): contains the leader when there is one.
    pub isr: Vec<BrokerId>,
    pub partition_epoch: i32,
}

/// Settings the state machine needs from the topic and broker configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConfig {
    /// `min.insync.replicas`: fewest ISR members an acks=all produce may complete with.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_max: Duration,
    /// Shortest interval between two ISR proposals for this partition.
    pub isr_proposal_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            min_insync_replicas: 1,
            replica_lag_max: Duration::from_secs(10),
            isr_proposal_interval: Duration::from_millis(1000),
        }
    }
}

/// Identifies one waiting acks=all produce; chosen by the driver, unique per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(pub u64);

/// An acks=all produce registered with an append.
#[derive(Debug, Clone, Copy)]
pub struct NewWaiter {
    pub id: WaiterId,
    /// The offset after the produce's last record: it completes once HW reaches it.
    pub required_end: Offset,
    pub deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    leader_epoch: LeaderEpoch,
    deadline: Instant,
}

/// A follower as its leader sees it, in the current leader epoch.
#[derive(Debug, Clone, Copy)]
struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch in this epoch
    /// (`None` until it fetched).
    log_end_offset: Option<Offset>,
    /// Last time it was known to have everything the leader had (Kafka's rule: a fetch
    /// at or past the leader's end as of the previous fetch proves it was caught up then).
    caught_up_at: Instant,
    last_fetch_at: Instant,
    leader_end_at_last_fetch: Option<Offset>,
}

impl FollowerState {
    fn fresh(now: Instant) -> FollowerState {
        FollowerState {
            log_end_offset: None,
            caught_up_at: now,
            last_fetch_at: now,
            leader_end_at_last_fetch: None,
        }
    }
}

/// An ISR change a leader asks the controller to commit (KIP-497 AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// What happened, as the driver saw it.
#[derive(Debug, Clone)]
pub enum Event {
    /// The controller's LeaderAndIsr for this partition (a new term, or an ISR commit).
    Role {
        role: Role,
        log_end_offset: Offset,
        now: Instant,
    },
    /// The leader appended; `waiter` is the acks=all produce to complete, if any.
    /// (Deadlines are checked on [`Event::Tick`], not on the hot path.)
    Appended {
        log_end_offset: Offset,
        waiter: Option<NewWaiter>,
    },
    /// A follower fetched at `fetch_offset` in the current epoch (the driver has already
    /// checked its epochs and that it did not diverge).
    FollowerFetch {
        replica: BrokerId,
        fetch_offset: Offset,
        log_end_offset: Offset,
        now: Instant,
    },
    /// Follower side: batches from the leader were appended (or none), with the leader's HW.
    Replicated {
        leader_high_watermark: Offset,
        log_end_offset: Offset,
    },
    /// The log was truncated (divergence, or a restart at the leader's log start).
    Truncated { log_end_offset: Offset },
    /// Time passed: expire waiters, look at follower lag.
    Tick { now: Instant },
    /// The broker stops hosting or serving this partition.
    Shutdown,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Record in the log's epoch cache that `epoch` starts at `start_offset`.
    AssignLeaderEpoch {
        epoch: LeaderEpoch,
        start_offset: Offset,
    },
    /// The high watermark changed: publish it to readers and long-polls.
    PublishHighWatermark(Offset),
    /// Answer a waiting acks=all produce.
    Complete {
        waiter: WaiterId,
        result: Result<(), ErrorCode>,
    },
    /// Ask the controller to commit a new ISR.
    ProposeIsr(IsrProposal),
}

/// Why a produce is refused before it is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotLeader { leader: Option<BrokerId> },
    NotEnoughReplicas { isr: usize, min: usize },
}

/// What a replica that has not yet heard from the controller reports as its role.
static UNASSIGNED: Role = Role {
    leader: None,
    leader_epoch: LeaderEpoch(0),
    replicas: Vec::new(),
    isr: Vec::new(),
    partition_epoch: 0,
};

pub struct PartitionState {
    me: BrokerId,
    /// `None` until the first LeaderAndIsr.
    role: Option<Role>,
    config: StateConfig,
    /// Invariant: `<= log_end_offset`; on a leader, never decreases within an epoch.
    high_watermark: Offset,
    /// The log's end as last reported by the driver.
    log_end_offset: Offset,
    /// Leader: where the current leader epoch began; a follower below it cannot join.
    epoch_start_offset: Offset,
    /// Leader only: every other replica.
    followers: HashMap<BrokerId, FollowerState>,
    /// Waiting acks=all produces, ordered by the offset they need.
    /// Invariant: every waiter's `leader_epoch` is `role.leader_epoch` and `role.leader`
    /// is this broker.
    purgatory: BTreeMap<(Offset, WaiterId), Waiter>,
    last_isr_proposal: Option<Instant>,
    /// Replicas this leader proposed adding to the ISR at the current partition epoch.
    /// Until a new partition epoch arrives they count toward the high watermark as if
    /// already in the ISR (Kafka's "maximal ISR", KIP-497): a proposal in flight may be
    /// committed at any moment, and a committed ISR member must hold every record below
    /// the high watermark.
    pending_additions: Vec<BrokerId>,
}

impl PartitionState {
    /// A replica that has not yet received a role: a follower of nobody.
    pub fn new(me: BrokerId, config: StateConfig) -> PartitionState {
        PartitionState {
            me,
            role: None,
            config,
            high_watermark: Offset::ZERO,
            log_end_offset: Offset::ZERO,
            epoch_start_offset: Offset::ZERO,
            followers: HashMap::new(),
            purgatory: BTreeMap::new(),
            last_isr_proposal: None,
            pending_additions: Vec::new(),
        }
    }

    /// The role the controller gave, or an empty one before the first.
    pub fn role(&self) -> &Role {
        self.role.as_ref().unwrap_or(&UNASSIGNED)
    }
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }
    pub fn is_leader(&self) -> bool {
        self.role().leader == Some(self.me)
    }
    /// Whether this leader may answer offset lookups (ListOffsets) from its high
    /// watermark: only once it has reached the start of the current leader epoch. Before,
    /// the high watermark is the one inherited as a follower, below records the previous
    /// leader may already have exposed, so an answer could move backwards (KIP-207).
    pub fn offsets_available(&self) -> bool {
        !self.is_leader() || self.high_watermark >= self.epoch_start_offset
    }
    pub fn waiting(&self) -> usize {
        self.purgatory.len()
    }
    pub fn set_config(&mut self, config: StateConfig) {
        self.config = config;
    }

    /// Whether a produce with `acks` may be appended now.
    pub fn check_produce(&self, acks_all: bool) -> Result<LeaderEpoch, Refusal> {
        if !self.is_leader() {
            return Err(Refusal::NotLeader {
                leader: self.role().leader,
            });
        }
        if acks_all && self.role().isr.len() < self.config.min_insync_replicas {
            return Err(Refusal::NotEnoughReplicas {
                isr: self.role().isr.len(),
                min: self.config.min_insync_replicas,
            });
        }
        Ok(self.role().leader_epoch)
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Role {
                role,
                log_end_offset,
                now,
            } => self.on_role(role, log_end_offset, now, &mut out),
            Event::Appended {
                log_end_offset,
                waiter,
            } => {
                self.log_end_offset = log_end_offset;
                if let Some(w) = waiter {
                    if self.is_leader() {
                        self.purgatory.insert(
                            (w.required_end, w.id),
                            Waiter {
                                leader_epoch: self.role().leader_epoch,
                                deadline: w.deadline,
                            },
                        );
                    } else {
                        // Only a driver bug gets here: the append was refused first.
                        out.push(Action::Complete {
                            waiter: w.id,
                            result: Err(ErrorCode::NotLeaderOrFollower),
                        });
                    }
                }
                self.advance_leader_hw(&mut out);
            }
            Event::FollowerFetch {
                replica,
                fetch_offset,
                log_end_offset,
                now,
            } => {
                self.log_end_offset = log_end_offset;
                if self.is_leader() {
                    self.on_follower_fetch(replica, fetch_offset, now);
                    self.advance_leader_hw(&mut out);
                }
            }
            Event::Replicated {
                leader_high_watermark,
                log_end_offset,
            } => {
                self.log_end_offset = log_end_offset;
                if !self.is_leader() {
                    self.set_hw(leader_high_watermark.min(log_end_offset), &mut out);
                }
            }
            Event::Truncated { log_end_offset } => {
                self.log_end_offset = log_end_offset;
                if self.high_watermark > log_end_offset {
                    self.set_hw(log_end_offset, &mut out);
                }
            }
            Event::Tick { now } => {
                self.expire(now, &mut out);
                if let Some(p) = self.isr_proposal(now) {
                    out.push(Action::ProposeIsr(p));
                }
            }
            Event::Shutdown => self.fail_all(ErrorCode::NotLeaderOrFollower, &mut out),
        }
        out
    }

    fn on_role(&mut self, role: Role, log_end_offset: Offset, now: Instant, out: &mut Vec<Action>) {
        self.log_end_offset = log_end_offset;
        if let Some(current) = &self.role {
            if role.leader_epoch < current.leader_epoch
                || (role.leader_epoch == current.leader_epoch
                    && role.partition_epoch < current.partition_epoch)
            {
                // Overtaken by a newer decision that arrived first: ignore.
                return;
            }
        }
        let current = self.role();
        let new_term = self.role.is_none()
            || role.leader_epoch != current.leader_epoch
            || role.leader != current.leader;
        if new_term || role.partition_epoch != current.partition_epoch {
            // Proposals made at the old partition epoch are refused by the controller now.
            self.pending_additions.clear();
        }
        if new_term {
            // Whatever waited was appended in the old term; the next leader may truncate it.
            self.fail_all(ErrorCode::NotLeaderOrFollower, out);
            self.followers.clear();
            self.last_isr_proposal = None;
            if role.leader == Some(self.me) {
                self.epoch_start_offset = log_end_offset;
                out.push(Action::AssignLeaderEpoch {
                    epoch: role.leader_epoch,
                    start_offset: log_end_offset,
                });
                for &r in role.replicas.iter().filter(|&&r| r != self.me) {
                    self.followers.insert(r, FollowerState::fresh(now));
                }
            }
        } else if role.isr != self.role().isr || role.replicas != self.role().replicas {
            // An ISR commit (or a reassignment) within the term: the next proposal may go
            // at once, and new replicas get a lag clock.
            self.last_isr_proposal = None;
            if role.leader == Some(self.me) {
                for &r in role.replicas.iter().filter(|&&r| r != self.me) {
                    self.followers.entry(r).or_insert(FollowerState::fresh(now));
                }
                self.followers.retain(|r, _| role.replicas.contains(r));
            }
        }
        self.role = Some(role);
        if self.high_watermark > log_end_offset {
            self.set_hw(log_end_offset, out);
        }
        self.advance_leader_hw(out);
    }

    fn on_follower_fetch(&mut self, replica: BrokerId, fetch_offset: Offset, now: Instant) {
        if !self.role().replicas.contains(&replica) || replica == self.me {
            return;
        }
        let end = self.log_end_offset;
        let st = self
            .followers
            .entry(replica)
            .or_insert(FollowerState::fresh(now));
        st.log_end_offset = Some(fetch_offset);
        if fetch_offset >= end {
            st.caught_up_at = now;
        } else if st
            .leader_end_at_last_fetch
            .is_some_and(|e| fetch_offset >= e)
        {
            st.caught_up_at = st.caught_up_at.max(st.last_fetch_at);
        }
        st.last_fetch_at = now;
        st.leader_end_at_last_fetch = Some(end);
    }

    /// Leader: HW = min LEO over the committed ISR, never moving back within the epoch;
    /// then completes what it can.
    fn advance_leader_hw(&mut self, out: &mut Vec<Action>) {
        if !self.is_leader() {
            return;
        }
        let mut hw = self.log_end_offset;
        let maximal = self.role().isr.iter().chain(&self.pending_additions);
        for r in maximal.filter(|&&r| r != self.me) {
            let leo = self
                .followers
                .get(r)
                .and_then(|f| f.log_end_offset)
                .unwrap_or(Offset::ZERO);
            hw = hw.min(leo);
        }
        if hw > self.high_watermark {
            self.set_hw(hw, out);
        }
        self.complete_reached(out);
    }

    fn set_hw(&mut self, hw: Offset, out: &mut Vec<Action>) {
        if hw != self.high_watermark {
            self.high_watermark = hw;
            out.push(Action::PublishHighWatermark(hw));
        }
    }

    /// Completes every waiter the high watermark has passed: with success when the ISR
    /// is still large enough, else NOT_ENOUGH_REPLICAS_AFTER_APPEND (Kafka's rule: the
    /// records are in the log, but fewer replicas than promised hold them).
    fn complete_reached(&mut self, out: &mut Vec<Action>) {
        let enough = self.role().isr.len() >= self.config.min_insync_replicas;
        while let Some((&(required, id), w)) = self.purgatory.first_key_value() {
            if required > self.high_watermark {
                break;
            }
            debug_assert_eq!(w.leader_epoch, self.role().leader_epoch);
            self.purgatory.remove(&(required, id));
            let result = if enough {
                Ok(())
            } else {
                Err(ErrorCode::NotEnoughReplicasAfterAppend)
            };
            out.push(Action::Complete { waiter: id, result });
        }
    }

    fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        let expired: Vec<(Offset, WaiterId)> = self
            .purgatory
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.purgatory.remove(&k);
            out.push(Action::Complete {
                waiter: k.1,
                result: Err(ErrorCode::RequestTimedOut),
            });
        }
    }

    fn fail_all(&mut self, code: ErrorCode, out: &mut Vec<Action>) {
        for ((_, id), _) in std::mem::take(&mut self.purgatory) {
            out.push(Action::Complete {
                waiter: id,
                result: Err(code),
            });
        }
    }

    /// The ISR this leader would like: followers silent or behind past the lag limit
    /// leave; followers caught up to the HW and into the current epoch join.
    fn isr_proposal(&mut self, now: Instant) -> Option<IsrProposal> {
        if !self.is_leader() {
            return None;
        }
        let lag_max = self.config.replica_lag_max;
        let in_time = |f: &FollowerState| now.saturating_duration_since(f.caught_up_at) <= lag_max;
        let mut isr: Vec<BrokerId> = self
            .role()
            .isr
            .iter()
            .copied()
            .filter(|r| *r == self.me || self.followers.get(r).is_some_and(in_time))
            .collect();
        for r in &self.role().replicas {
            let caught_up = self.followers.get(r).is_some_and(|f| {
                f.log_end_offset
                    .is_some_and(|leo| leo >= self.high_watermark && leo >= self.epoch_start_offset)
                    && in_time(f)
            });
            if !isr.contains(r) && caught_up {
                isr.push(*r);
            }
        }
        let order = |r: &BrokerId| self.role().replicas.iter().position(|x| x == r);
        isr.sort_by_key(order);
        let mut current = self.role().isr.clone();
        current.sort_by_key(order);
        if isr == current && self.pending_additions.is_empty() {
            return None;
        }
        // With additions pending and nothing to change, the proposal repeats the current
        // ISR: committing it moves the partition epoch, which retires every proposal still
        // in flight and so lets the pending additions go.
        if self
            .last_isr_proposal
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.isr_proposal_interval)
        {
            return None;
        }
        self.last_isr_proposal = Some(now);
        for r in &isr {
            if !self.role().isr.contains(r) && !self.pending_additions.contains(r) {
                self.pending_additions.push(*r);
            }
        }
        Some(IsrProposal {
            leader_epoch: self.role().leader_epoch,
            partition_epoch: self.role().partition_epoch,
            new_isr: isr,
        })
    }
}

/// Leader side of KIP-320: where a follower that last fetched `last_fetched_epoch` and
/// asks from `fetch_offset` diverged from this log, as (epoch, end offset of that epoch
/// here); `None` when it did not. An epoch older than everything here answers
/// (`None`, log start): the follower starts over at the log start.
pub fn divergence(
    leader_epochs: &EpochEntries,
    leader_log_start: Offset,
    leader_log_end: Offset,
    last_fetched_epoch: Option<LeaderEpoch>,
    fetch_offset: Offset,
) -> Option<(Option<LeaderEpoch>, Offset)> {
    let asked = last_fetched_epoch?;
    match leader_epochs.end_offset_for(asked.0, leader_log_end.0) {
        Some((epoch, end)) if epoch != asked.0 || end < fetch_offset.0 => {
            Some((Some(LeaderEpoch(epoch)), Offset(end)))
        }
        Some(_) => None,
        None => Some((None, leader_log_start)),
    }
}

/// Follower side of KIP-320: the offset to truncate to after the leader said it diverged
/// at (`epoch`, `end`): the smaller of the leader's end for that epoch and this log's.
pub fn truncation_target(
    my_epochs: &EpochEntries,
    my_log_end: Offset,
    diverging: (Option<LeaderEpoch>, Offset),
) -> Offset {
    match diverging {
        (Some(epoch), end) => {
            let mine = my_epochs
                .end_offset_for(epoch.0, my_log_end.0)
                .map_or(0, |(_, o)| o);
            Offset(end.0.min(mine))
        }
        (None, end) => end,
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
