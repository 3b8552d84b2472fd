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

use serde::{Deserialize, Serialize};

use super::assignor::{self, Assignment, MemberId, Subscriber, Tp};

/// Epoch a member joins with.
pub const JOIN_EPOCH: i32 = 0;
/// Epoch a member leaves with.
pub const LEAVE_EPOCH: i32 = -1;
/// Epoch a static member leaves with, keeping its assignment for its session timeout.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Most members (`group.consumer.max.size`); a join past it is refused.
    pub max_members: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            assignor: AssignorKind::Uniform,
            max_members: sluice_proto::limits::GROUP_MEMBERS_MAX,
        }
    }
}

/// A heartbeat (ConsumerGroupHeartbeat).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Empty when joining.
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    /// Topics subscribed by name; `None`: the subscription is unchanged since the last
    /// heartbeat (then `regex` is ignored too).
    pub topics: Option<BTreeSet<String>>,
    /// Topics subscribed by pattern (whole-name match), beside `topics`.
    pub regex: Option<String>,
    /// What the member owns now; `None`: unchanged.
    pub owned: Option<BTreeSet<Tp>>,
    /// This member's session and rebalance timeouts (`None`: the group's defaults).
    pub session_timeout: Option<Duration>,
    pub rebalance_timeout: Option<Duration>,
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
    /// Another live member holds this instance id.
    UnreleasedInstanceId(String),
    /// An offset commit with another epoch than the member's.
    StaleMemberEpoch,
    /// The operation needs a group without members.
    NonEmptyGroup,
    GroupIdNotFound,
    /// Epoch 0 without topics, a bad pattern.
    InvalidRequest(String),
    /// A join into a group holding `max_members` members.
    GroupMaxSizeReached(usize),
    /// A new group on a broker that coordinates this many already.
    TooManyGroups(usize),
    /// Classic protocol: a generation other than the group's.
    IllegalGeneration,
    /// Classic protocol: the group is rebalancing; join again.
    RebalanceInProgress,
    /// A protocol type or protocol the group does not use, or a member of the other
    /// group protocol (classic or consumer) while the group has members.
    InconsistentGroupProtocol,
    /// A session timeout outside the coordinator's bounds.
    InvalidSessionTimeout,
    /// Classic JoinGroup v4+: join again with this member id.
    MemberIdRequired(String),
    /// Another process now holds this member's `group.instance.id`.
    FencedInstanceId,
    /// OffsetDelete of a partition of a topic a member subscribes to.
    GroupSubscribedToTopic,
    /// TxnOffsetCommit from a producer epoch older than one already seen.
    ProducerFenced,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    epoch: i32,
    /// The subscription as given: names and a pattern.
    named: BTreeSet<String>,
    regex: Option<String>,
    /// Existing topics it resolves to: what the assignor sees.
    topics: BTreeSet<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    /// What the coordinator has given it (and it has not given back).
    owned: BTreeSet<Tp>,
    /// What the last reply told it to own; `owned` minus this is being revoked.
    assigned: BTreeSet<Tp>,
    /// Its epoch before the last change (-1: none).
    previous_epoch: i32,
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
    /// Partition counts of every existing topic (from metadata).
    partitions: BTreeMap<String, u32>,
    /// Compiled subscription patterns.
    patterns: BTreeMap<String, Option<regex::Regex>>,
    /// Patterns new to the group, not matched against topics until the group's next
    /// heartbeat: Kafka resolves a new pattern asynchronously, so the heartbeat that
    /// brings it is answered with the named topics only and the matches come with a later
    /// group epoch (clients' tests expect these two steps).
    /// Invariant: `pending.len() <= 1` — every heartbeat resolves what was pending, then
    /// brings at most one pattern.
    pending: BTreeSet<String>,
}

/// What a coordinator persists of a group: enough for another coordinator to carry on
/// with the same epochs and assignments (members re-heartbeat; their clocks restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub epoch: i32,
    pub target_epoch: i32,
    pub assignor: AssignorKind,
    pub target: Assignment,
    pub members: BTreeMap<MemberId, MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub instance_id: Option<String>,
    pub epoch: i32,
    pub topics: BTreeSet<String>,
    pub regex: Option<String>,
    pub owned: BTreeSet<Tp>,
    /// What its last reply gave it (`None`: `owned`).
    #[serde(default)]
    pub assigned: Option<BTreeSet<Tp>>,
    #[serde(default = "no_epoch")]
    pub previous_epoch: i32,
    pub departed: bool,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
}

/// One member as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: MemberId,
    pub instance_id: Option<String>,
    pub epoch: i32,
    pub topics: BTreeSet<String>,
    pub regex: Option<String>,
    pub owned: BTreeSet<Tp>,
    pub target: BTreeSet<Tp>,
}

fn no_epoch() -> i32 {
    -1
}

/// How often a member should heartbeat: the group's interval, or a third of the
/// member's session timeout if that is shorter.
fn interval(config: &GroupConfig, m: &Member) -> Duration {
    config.heartbeat_interval.min(m.session_timeout / 3)
}

/// A whole-name match of `pattern`; `None` when it does not compile.
fn compile(pattern: &str) -> Option<regex::Regex> {
    if pattern.len() > sluice_proto::limits::GROUP_REGEX_BYTES_MAX {
        return None;
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(sluice_proto::limits::GROUP_REGEX_COMPILED_BYTES_MAX)
        .build()
        .ok()
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
            patterns: BTreeMap::new(),
            pending: BTreeSet::new(),
        }
    }

    /// Whether a pattern is usable as a subscription.
    pub fn valid_regex(pattern: &str) -> bool {
        compile(pattern).is_some()
    }

    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            epoch: self.epoch,
            target_epoch: self.target_epoch,
            assignor: self.config.assignor,
            target: self.target.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        MemberSnapshot {
                            instance_id: m.instance_id.clone(),
                            epoch: m.epoch,
                            topics: m.named.clone(),
                            regex: m.regex.clone(),
                            owned: m.owned.clone(),
                            assigned: Some(m.assigned.clone()),
                            previous_epoch: m.previous_epoch,
                            departed: m.departed,
                            session_timeout_ms: m.session_timeout.as_millis() as u64,
                            rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                        },
                    )
                })
                .collect(),
        }
    }

    /// A group carried on from `snap` (by a new coordinator): every member's session
    /// starts again at `now`, a revocation in progress restarts its timer.
    pub fn restore(
        mut config: GroupConfig,
        snap: GroupSnapshot,
        partitions: BTreeMap<String, u32>,
        now: Instant,
    ) -> Group {
        config.assignor = snap.assignor;
        let mut g = Group::new(config);
        g.epoch = snap.epoch;
        g.target_epoch = snap.target_epoch;
        g.target = snap.target;
        g.partitions = partitions;
        for (id, m) in snap.members {
            let topics = g.resolve(&m.topics, m.regex.as_deref());
            g.members.insert(
                id,
                Member {
                    instance_id: m.instance_id,
                    epoch: m.epoch,
                    named: m.topics,
                    regex: m.regex,
                    topics,
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    assigned: m.assigned.unwrap_or_else(|| m.owned.clone()),
                    previous_epoch: m.previous_epoch,
                    owned: m.owned,
                    last_heartbeat: now,
                    revoking_since: None,
                    departed: m.departed,
                },
            );
        }
        // Topics may have changed while no one coordinated.
        g.refresh_subscriptions();
        g
    }

    /// Every member as `describe` shows it.
    pub fn describe(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                epoch: m.epoch,
                topics: m.named.clone(),
                regex: m.regex.clone(),
                owned: m.owned.clone(),
                target: self.target.get(id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The epoch of the current target assignment.
    pub fn target_epoch(&self) -> i32 {
        self.target_epoch
    }

    /// "empty", "assigning" (target behind the group epoch), "reconciling" (some member
    /// not yet at the target's epoch, or not yet owning exactly its target) or "stable".
    pub fn state(&self) -> &'static str {
        let reconciled = |(id, m): (&MemberId, &Member)| {
            m.departed
                || (m.epoch == self.target_epoch.max(1)
                    && self
                        .target
                        .get(id)
                        .map_or(m.owned.is_empty(), |t| *t == m.owned))
        };
        if self.members.is_empty() {
            "empty"
        } else if self.target_epoch != self.epoch {
            "assigning"
        } else if !self.members.iter().all(reconciled) {
            "reconciling"
        } else {
            "stable"
        }
    }

    /// Topics a subscription names and matches among existing ones.
    fn resolve(&mut self, named: &BTreeSet<String>, regex: Option<&str>) -> BTreeSet<String> {
        let mut topics = named.clone();
        if let Some(p) = regex {
            if !self.patterns.contains_key(p)
                && self.patterns.len() >= sluice_proto::limits::GROUP_REGEX_CACHE_MAX
            {
                // Keep only what members use: the cache never outgrows the members.
                let used: BTreeSet<&str> = self
                    .members
                    .values()
                    .filter_map(|m| m.regex.as_deref())
                    .collect();
                self.patterns.retain(|k, _| used.contains(k.as_str()));
            }
            let re = self
                .patterns
                .entry(p.to_string())
                .or_insert_with(|| compile(p));
            if let (Some(re), false) = (re, self.pending.contains(p)) {
                topics.extend(self.partitions.keys().filter(|t| re.is_match(t)).cloned());
            }
        }
        topics
    }

    /// Marks `pattern`, which member `id` now subscribes with, as new to the group unless
    /// another member already uses it (then it is resolved already).
    fn note_pattern(&mut self, id: &str, pattern: Option<&str>) {
        let Some(p) = pattern else { return };
        let known = self
            .members
            .iter()
            .any(|(other, m)| other != id && m.regex.as_deref() == Some(p));
        if !known {
            self.pending.insert(p.to_string());
        }
        debug_assert!(self.pending.len() <= 1, "{:?}", self.pending);
    }

    /// Resolves the patterns new since the last heartbeat (see `pending`).
    fn resolve_pending(&mut self) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.refresh_subscriptions();
        }
    }

    /// Re-resolves every member's subscription against the current topics; bumps the
    /// epoch if what any member subscribes to changed.
    fn refresh_subscriptions(&mut self) -> bool {
        let ids: Vec<MemberId> = self.members.keys().cloned().collect();
        let mut changed = false;
        for id in ids {
            let (named, regex) = {
                let m = &self.members[&id];
                (m.named.clone(), m.regex.clone())
            };
            let topics = self.resolve(&named, regex.as_deref());
            let m = self.members.get_mut(&id).expect("listed");
            if m.topics != topics {
                m.topics = topics;
                changed = true;
            }
        }
        if changed {
            self.epoch += 1;
        }
        changed
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member id → (epoch, owned partitions).
    /// Whether `member` may commit `tps` at `epoch`: its current epoch, or (KIP-1251) the
    /// epoch before it for partitions it still owns — a commit sent while the heartbeat
    /// that moved it on was being answered. An older epoch is STALE_MEMBER_EPOCH, a
    /// newer one FENCED_MEMBER_EPOCH, as Kafka 4.3+ answers.
    pub fn commit_allowed(&self, member: &str, epoch: i32, tps: &[Tp]) -> Result<(), GroupError> {
        let m = self
            .members
            .get(member)
            .ok_or(GroupError::UnknownMemberId)?;
        if epoch == m.epoch {
            return Ok(());
        }
        if epoch > m.epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        if epoch > 0 && epoch == m.previous_epoch && tps.iter().all(|tp| m.owned.contains(tp)) {
            return Ok(());
        }
        Err(GroupError::StaleMemberEpoch)
    }

    pub fn members(&self) -> BTreeMap<MemberId, (i32, BTreeSet<Tp>)> {
        self.members
            .iter()
            .map(|(m, s)| (m.clone(), (s.epoch, s.owned.clone())))
            .collect()
    }

    /// The cluster's topics and their partition counts (from metadata). Bumps the group
    /// epoch when a subscribed topic appears, goes, or gains partitions, or when a
    /// pattern now matches other topics.
    pub fn set_partitions(&mut self, partitions: BTreeMap<String, u32>) {
        if partitions == self.partitions {
            return;
        }
        let subscribed = self.subscribed_topics();
        let before: BTreeMap<&String, Option<&u32>> = subscribed
            .iter()
            .map(|t| (t, self.partitions.get(t)))
            .collect();
        let after: BTreeMap<&String, Option<&u32>> =
            subscribed.iter().map(|t| (t, partitions.get(t))).collect();
        let counts_changed = before != after;
        self.partitions = partitions;
        if !self.refresh_subscriptions() && counts_changed {
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
        self.resolve_pending();
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
                // One epoch behind, owning nothing it was not given: the reply that moved
                // it on was lost (a dropped connection, a coordinator failover), so it is
                // answered as at its current epoch (KIP-848's rule). Otherwise behind (a
                // zombie) or ahead (impossible): it must rejoin.
                let lost_reply = epoch == m.previous_epoch
                    && hb.owned.as_ref().is_some_and(|o| o.is_subset(&m.owned));
                if epoch != m.epoch && !lost_reply {
                    return Err(GroupError::FencedMemberEpoch);
                }
                m.last_heartbeat = now;
                if let Some(reported) = &hb.owned {
                    // Only what is being revoked is freed by leaving it out: a partition
                    // just assigned may not be in the report yet (the member has not
                    // taken it), and it stays the member's. It cannot claim more.
                    let released: Vec<Tp> = m
                        .owned
                        .iter()
                        .filter(|tp| !m.assigned.contains(*tp) && !reported.contains(*tp))
                        .cloned()
                        .collect();
                    for tp in released {
                        m.owned.remove(&tp);
                    }
                }
                if let Some(t) = hb.session_timeout {
                    m.session_timeout = t;
                }
                if let Some(t) = hb.rebalance_timeout {
                    m.rebalance_timeout = t;
                }
                if let Some(named) = &hb.topics {
                    if *named != m.named || hb.regex != m.regex {
                        let new_pattern = hb.regex != m.regex;
                        m.named = named.clone();
                        m.regex = hb.regex.clone();
                        if new_pattern {
                            self.note_pattern(&hb.member_id, hb.regex.as_deref());
                        }
                        let resolved = self.resolve(named, hb.regex.as_deref());
                        let m = self.members.get_mut(&hb.member_id).expect("checked");
                        if resolved != m.topics {
                            m.topics = resolved;
                            self.epoch += 1;
                        }
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
        let named = hb.topics.clone().ok_or_else(|| {
            GroupError::InvalidRequest("a joining member must give its subscription".into())
        })?;
        if let Some(p) = &hb.regex {
            if p.len() > sluice_proto::limits::GROUP_REGEX_BYTES_MAX {
                return Err(GroupError::InvalidRequest(format!(
                    "subscription pattern of {} bytes; at most {}",
                    p.len(),
                    sluice_proto::limits::GROUP_REGEX_BYTES_MAX
                )));
            }
            if compile(p).is_none() {
                return Err(GroupError::InvalidRequest(format!(
                    "subscription pattern {p:?} is not a valid regex (or compiles past {} bytes)",
                    sluice_proto::limits::GROUP_REGEX_COMPILED_BYTES_MAX
                )));
            }
        }
        self.note_pattern(&hb.member_id, hb.regex.as_deref());
        let topics = self.resolve(&named, hb.regex.as_deref());
        let session_timeout = hb.session_timeout.unwrap_or(self.config.session_timeout);
        let rebalance_timeout = hb
            .rebalance_timeout
            .unwrap_or(self.config.rebalance_timeout);
        // A static member coming back takes its old member's place and assignment.
        if let Some(instance) = &hb.instance_id {
            let previous = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                .map(|(id, m)| (id.clone(), m.departed));
            if let Some((old_id, departed)) = previous {
                if !departed {
                    return Err(GroupError::UnreleasedInstanceId(format!(
                        "instance {instance} is already a live member"
                    )));
                }
                let mut m = self.members.remove(&old_id).expect("found");
                m.departed = false;
                m.last_heartbeat = now;
                m.epoch = JOIN_EPOCH;
                // It restarted: it owns nothing yet; its target share is kept for it.
                m.owned.clear();
                m.assigned.clear();
                m.previous_epoch = -1;
                m.session_timeout = session_timeout;
                m.rebalance_timeout = rebalance_timeout;
                m.named = named;
                m.regex = hb.regex.clone();
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
        let rejoin = !hb.member_id.is_empty() && self.members.contains_key(&hb.member_id);
        if !rejoin && self.members.len() >= self.config.max_members {
            return Err(GroupError::GroupMaxSizeReached(self.config.max_members));
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
                named,
                regex: hb.regex.clone(),
                topics,
                session_timeout,
                rebalance_timeout,
                owned: BTreeSet::new(),
                assigned: BTreeSet::new(),
                previous_epoch: -1,
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
            m.assigned.clear();
            return Ok(());
        }
        self.members.remove(id);
        self.epoch += 1;
        Ok(())
    }

    /// Fences members silent past the session timeout, or holding partitions they must
    /// give back past the rebalance timeout. Returns the fenced members.
    pub fn tick(&mut self, now: Instant) -> Vec<MemberId> {
        let fenced: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now.saturating_duration_since(m.last_heartbeat) > m.session_timeout
                    || m.revoking_since
                        .is_some_and(|t| now.saturating_duration_since(t) > m.rebalance_timeout)
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
            m.assigned = keep.clone();
            return HeartbeatReply {
                member_id: id.to_string(),
                member_epoch: m.epoch,
                assignment: keep,
                heartbeat_interval: interval(&self.config, m),
            };
        }
        m.revoking_since = None;
        if m.epoch != target_epoch.max(1) {
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch.max(1);
        }
        let free: BTreeSet<Tp> = target.difference(&owned_by_others).cloned().collect();
        m.owned.extend(free);
        m.assigned = m.owned.clone();
        HeartbeatReply {
            member_id: id.to_string(),
            member_epoch: m.epoch,
            assignment: m.owned.clone(),
            heartbeat_interval: interval(&self.config, m),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
