//! One consumer group's state under KIP-848's protocol, sans-IO: members heartbeat with
//! their member epoch and what they own; the coordinator bumps the group epoch on
//! membership or subscription changes, computes a target assignment with the
//! [`super::assignor`], and reconciles each member incrementally — a member first gives up
//! what moves away (its epoch stays until it has), then receives what is free. A
//! partition is never given to a member while another member still owns it.
//!
//! Time and member ids come from the caller (`now`, `new_member_id`), so the same inputs
//! always give the same state: the seeded simulator and the broker drive the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{self, Assignment, MemberId, Subscriber, Tp};

/// Epoch a member joins with.
pub const JOIN_EPOCH: i32 = 0;
/// Epoch a member leaves with.
pub const LEAVE_EPOCH: i32 = -1;
/// Epoch a static member leaves with, keeping its assignment for its session timeout.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignorKind {
    Uniform,
    Range,
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub assignor: AssignorKind,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            assignor: AssignorKind::Uniform,
        }
    }
}

/// A heartbeat (ConsumerGroupHeartbeat).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Empty when joining.
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub topics: Option<BTreeSet<String>>,
    /// What the member owns now; `None`: unchanged.
    pub owned: Option<BTreeSet<Tp>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    /// The partitions the member should own now.
    pub assignment: BTreeSet<Tp>,
    pub heartbeat_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// The member's epoch is behind: it must rejoin (give up everything, epoch 0).
    FencedMemberEpoch,
    UnknownMemberId,
    /// Epoch 0 without topics, or another live member with this instance id.
    InvalidRequest(String),
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    epoch: i32,
    topics: BTreeSet<String>,
    /// What the coordinator has given it (and it has not given back).
    owned: BTreeSet<Tp>,
    last_heartbeat: Instant,
    /// Since when it has had something to revoke.
    revoking_since: Option<Instant>,
    /// A static member that left with -2: kept until its session times out.
    departed: bool,
}

/// One group.
#[derive(Debug, Clone)]
pub struct Group {
    pub config: GroupConfig,
    /// Bumped on every membership, subscription or metadata change.
    pub epoch: i32,
    target_epoch: i32,
    target: Assignment,
    members: BTreeMap<MemberId, Member>,
    /// Partition counts of the topics members subscribe to.
    partitions: BTreeMap<String, u32>,
}

impl Group {
    pub fn new(config: GroupConfig) -> Group {
        Group {
            config,
            epoch: 0,
            target_epoch: 0,
            target: Assignment::new(),
            members: BTreeMap::new(),
            partitions: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member id → (epoch, owned partitions).
    pub fn members(&self) -> BTreeMap<MemberId, (i32, BTreeSet<Tp>)> {
        self.members
            .iter()
            .map(|(m, s)| (m.clone(), (s.epoch, s.owned.clone())))
            .collect()
    }

    /// Topic metadata changed (a topic created, partitions added).
    pub fn set_partitions(&mut self, partitions: BTreeMap<String, u32>) {
        if partitions != self.partitions {
            self.partitions = partitions;
            self.epoch += 1;
        }
    }

    /// Topics any member subscribes to (the caller resolves their partition counts).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect()
    }

    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        new_member_id: impl FnOnce() -> MemberId,
    ) -> Result<HeartbeatReply, GroupError> {
        let id = match hb.member_epoch {
            JOIN_EPOCH => self.join(&hb, now, new_member_id)?,
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => {
                self.leave(&hb.member_id, hb.member_epoch == STATIC_LEAVE_EPOCH)?;
                return Ok(HeartbeatReply {
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    assignment: BTreeSet::new(),
                    heartbeat_interval: self.config.heartbeat_interval,
                });
            }
            epoch => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or(GroupError::UnknownMemberId)?;
                if epoch != m.epoch {
                    // Behind (a zombie) or ahead (impossible): it must rejoin.
                    return Err(GroupError::FencedMemberEpoch);
                }
                m.last_heartbeat = now;
                if let Some(owned) = &hb.owned {
                    // What it reports given back is free; it cannot claim more than given.
                    m.owned = m.owned.intersection(owned).cloned().collect();
                }
                if let Some(topics) = &hb.topics {
                    if *topics != m.topics {
                        m.topics = topics.clone();
                        self.epoch += 1;
                    }
                }
                hb.member_id.clone()
            }
        };
        self.retarget();
        Ok(self.reconcile(&id, now))
    }

    fn join(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        new_member_id: impl FnOnce() -> MemberId,
    ) -> Result<MemberId, GroupError> {
        let topics = hb.topics.clone().ok_or_else(|| {
            GroupError::InvalidRequest("a joining member must give its subscription".into())
        })?;
        // A static member coming back takes its old member's place and assignment.
        if let Some(instance) = &hb.instance_id {
            let previous = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                .map(|(id, m)| (id.clone(), m.departed));
            if let Some((old_id, departed)) = previous {
                if !departed {
                    return Err(GroupError::InvalidRequest(format!(
                        "instance {instance} is already a live member"
                    )));
                }
                let mut m = self.members.remove(&old_id).expect("found");
                m.departed = false;
                m.last_heartbeat = now;
                m.epoch = JOIN_EPOCH;
                // It restarted: it owns nothing yet; its target share is kept for it.
                m.owned.clear();
                let id = if hb.member_id.is_empty() {
                    new_member_id()
                } else {
                    hb.member_id.clone()
                };
                if let Some(t) = self.target.remove(&old_id) {
                    self.target.insert(id.clone(), t);
                }
                if m.topics != topics {
                    m.topics = topics;
                    self.epoch += 1;
                }
                self.members.insert(id.clone(), m);
                return Ok(id);
            }
        }
        let id = if hb.member_id.is_empty() {
            new_member_id()
        } else {
            hb.member_id.clone()
        };
        if let Some(old) = self.members.remove(&id) {
            // A member rejoining under its id gave everything up.
            drop(old);
        }
        self.members.insert(
            id.clone(),
            Member {
                instance_id: hb.instance_id.clone(),
                epoch: JOIN_EPOCH,
                topics,
                owned: BTreeSet::new(),
                last_heartbeat: now,
                revoking_since: None,
                departed: false,
            },
        );
        self.epoch += 1;
        Ok(id)
    }

    fn leave(&mut self, id: &str, keep: bool) -> Result<(), GroupError> {
        let m = self
            .members
            .get_mut(id)
            .ok_or(GroupError::UnknownMemberId)?;
        if keep && m.instance_id.is_some() {
            // Static: its partitions are released, its place is kept for the session.
            m.departed = true;
            m.owned.clear();
            return Ok(());
        }
        self.members.remove(id);
        self.epoch += 1;
        Ok(())
    }

    /// Fences members silent past the session timeout, or holding partitions they must
    /// give back past the rebalance timeout. Returns the fenced members.
    pub fn tick(&mut self, now: Instant) -> Vec<MemberId> {
        let (session, rebalance) = (self.config.session_timeout, self.config.rebalance_timeout);
        let fenced: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now.saturating_duration_since(m.last_heartbeat) > session
                    || m.revoking_since
                        .is_some_and(|t| now.saturating_duration_since(t) > rebalance)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &fenced {
            self.members.remove(id);
            self.epoch += 1;
        }
        if !fenced.is_empty() {
            self.retarget();
        }
        fenced
    }

    fn retarget(&mut self) {
        if self.target_epoch == self.epoch {
            return;
        }
        let subs: BTreeMap<MemberId, Subscriber> = self
            .members
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    Subscriber {
                        topics: m.topics.clone(),
                    },
                )
            })
            .collect();
        let parts: BTreeMap<String, u32> = self
            .partitions
            .iter()
            .filter(|(t, _)| subs.values().any(|s| s.topics.contains(*t)))
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        self.target = match self.config.assignor {
            AssignorKind::Uniform => assignor::uniform(&subs, &parts, &self.target),
            AssignorKind::Range => assignor::range(&subs, &parts),
        };
        self.target_epoch = self.epoch;
    }

    /// One member's next step towards its target.
    fn reconcile(&mut self, id: &str, now: Instant) -> HeartbeatReply {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let owned_by_others: BTreeSet<Tp> = self
            .members
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .flat_map(|(_, m)| m.owned.iter().cloned())
            .collect();
        let target_epoch = self.target_epoch;
        let m = self.members.get_mut(id).expect("a member");
        let revoke: BTreeSet<Tp> = m.owned.difference(&target).cloned().collect();
        if !revoke.is_empty() {
            // First give back what moves away; the epoch stays until it has.
            m.revoking_since.get_or_insert(now);
            m.owned = m.owned.intersection(&target).cloned().collect();
            // `owned` still counts the revoked ones until the member reports them gone.
            let keep = m.owned.clone();
            m.owned.extend(revoke);
            return HeartbeatReply {
                member_id: id.to_string(),
                member_epoch: m.epoch,
                assignment: keep,
                heartbeat_interval: self.config.heartbeat_interval,
            };
        }
        m.revoking_since = None;
        m.epoch = target_epoch.max(1);
        let free: BTreeSet<Tp> = target.difference(&owned_by_others).cloned().collect();
        m.owned.extend(free);
        HeartbeatReply {
            member_id: id.to_string(),
            member_epoch: m.epoch,
            assignment: m.owned.clone(),
            heartbeat_interval: self.config.heartbeat_interval,
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
