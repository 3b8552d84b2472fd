//! One consumer group under Kafka's classic protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), sans-IO. The coordinator only relays: members send the protocols they
//! support with opaque metadata, the group picks one every member supports, the leader
//! (a member) computes the assignment client-side and sends it in its SyncGroup, and
//! every member gets its own bytes back. Assignments are opaque here too.
//!
//! A rebalance has two phases. In `PreparingRebalance` every member must send JoinGroup
//! again; the phase ends when all have (and no member id handed out with
//! MEMBER_ID_REQUIRED is still expected), or at the rebalance timeout, when members that
//! did not rejoin are removed. Then the generation is bumped and every waiting JoinGroup
//! is answered (the leader's answer lists the members). In `CompletingRebalance` members
//! send SyncGroup; the followers' wait for the leader's, which makes the group `Stable`.
//! A group without members is `Empty`.
//!
//! JoinGroup and SyncGroup may be answered later than they are asked: an operation
//! returns [`JoinAnswer::Later`] / [`SyncAnswer::Later`] and the answer comes as a
//! [`Delivery`] from a later operation or [`ClassicGroup::tick`]. Time and member ids come
//! from the caller, so the seeded simulator and the broker drive the same code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::assignor::MemberId;
use super::state::GroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl ClassicState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

/// A JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Empty on a member's first join.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// JoinGroup v4+: a first join without a member id gets one with MEMBER_ID_REQUIRED
    /// and must join again with it.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: MemberId,
    pub member_id: MemberId,
    /// Every member (id, instance id, metadata for the chosen protocol): in the
    /// leader's reply only.
    pub members: Vec<(MemberId, Option<String>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReply {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAnswer {
    Now(Result<JoinReply, GroupError>),
    /// The answer comes as a [`Delivery::Join`] for this member id.
    Later(MemberId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAnswer {
    Now(Result<SyncReply, GroupError>),
    /// The answer comes as a [`Delivery::Sync`] for the member.
    Later,
}

/// The answer to a JoinGroup or SyncGroup that was waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Join(MemberId, Result<JoinReply, GroupError>),
    Sync(MemberId, Result<SyncReply, GroupError>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Live {
    m: Member,
    /// Its JoinGroup waits for the join phase to end.
    awaiting_join: bool,
    /// Its SyncGroup waits for the leader's.
    awaiting_sync: bool,
    last_heartbeat: Instant,
}

/// What the log keeps of a classic group: written when it becomes `Stable` (with the
/// assignments) or `Empty`; a coordinator that loads it resumes `Stable` at that
/// generation (members of a newer, unfinished one rejoin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicSnapshot {
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<MemberId>,
    members: BTreeMap<MemberId, Member>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMemberView {
    pub member_id: MemberId,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the group's protocol.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ClassicGroup {
    state: ClassicState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<MemberId>,
    members: BTreeMap<MemberId, Live>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until when they are expected.
    pending: BTreeMap<MemberId, Instant>,
    /// The end of the join phase at the latest (rebalance timeout), or of the sync
    /// phase.
    deadline: Option<Instant>,
    /// While a group that was empty waits `initial_delay` for more members: (not
    /// before, not after).
    initial: Option<(Instant, Instant)>,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_delay: Duration,
    pub max_members: usize,
}

impl ClassicGroup {
    pub fn new(initial_delay: Duration, max_members: usize) -> ClassicGroup {
        ClassicGroup {
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadline: None,
            initial: None,
            initial_delay,
            max_members,
        }
    }

    pub fn state(&self) -> ClassicState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// No members and no member id handed out that may still join.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn has_member(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    /// What the log should hold now: `None` mid-rebalance (the last one written stays).
    pub fn snapshot(&self) -> Option<ClassicSnapshot> {
        matches!(self.state, ClassicState::Empty | ClassicState::Stable).then(|| ClassicSnapshot {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, l)| (id.clone(), l.m.clone()))
                .collect(),
        })
    }

    /// The group as a new coordinator loads it: `Stable` (or `Empty`), every member's
    /// session starting now.
    pub fn restore(&mut self, s: ClassicSnapshot, now: Instant) {
        self.generation = s.generation;
        self.protocol_type = s.protocol_type;
        self.protocol = s.protocol;
        self.leader = s.leader;
        self.members = s
            .members
            .into_iter()
            .map(|(id, m)| {
                let live = Live {
                    m,
                    awaiting_join: false,
                    awaiting_sync: false,
                    last_heartbeat: now,
                };
                (id, live)
            })
            .collect();
        self.pending.clear();
        self.deadline = None;
        self.initial = None;
        self.state = if self.members.is_empty() {
            ClassicState::Empty
        } else {
            ClassicState::Stable
        };
    }

    pub fn describe(&self) -> Vec<ClassicMemberView> {
        self.members
            .iter()
            .map(|(id, l)| ClassicMemberView {
                member_id: id.clone(),
                instance_id: l.m.instance_id.clone(),
                client_id: l.m.client_id.clone(),
                client_host: l.m.client_host.clone(),
                metadata: self.metadata_of(&l.m),
                assignment: l.m.assignment.clone(),
            })
            .collect()
    }

    fn metadata_of(&self, m: &Member) -> Vec<u8> {
        let Some(p) = &self.protocol else {
            return Vec::new();
        };
        m.protocols
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, md)| md.clone())
            .unwrap_or_default()
    }

    /// Whether `protocols` of `protocol_type` fit the group: any type while it has no
    /// members, else the group's type and at least one protocol every member supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)], except: &str) -> bool {
        let others: Vec<&Live> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .map(|(_, l)| l)
            .collect();
        if others.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                others
                    .iter()
                    .all(|l| l.m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    fn reply(&self, member_id: &str, with_members: bool) -> JoinReply {
        let members = if with_members {
            self.members
                .iter()
                .map(|(id, l)| (id.clone(), l.m.instance_id.clone(), self.metadata_of(&l.m)))
                .collect()
        } else {
            Vec::new()
        };
        JoinReply {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        }
    }

    fn full(&self) -> bool {
        self.members.len() + self.pending.len() >= self.max_members
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        now: Instant,
        new_member_id: impl FnOnce() -> MemberId,
    ) -> (JoinAnswer, Vec<Delivery>) {
        let fail = |e: GroupError| (JoinAnswer::Now(Err(e)), Vec::new());
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        let mut out = Vec::new();
        let static_holder = req.instance_id.as_ref().and_then(|i| {
            self.members
                .iter()
                .find(|(_, l)| l.m.instance_id.as_ref() == Some(i))
                .map(|(id, _)| id.clone())
        });
        let id = if req.member_id.is_empty() {
            if !self.supports(&req.protocol_type, &req.protocols, "") {
                return fail(GroupError::InconsistentGroupProtocol);
            }
            match static_holder {
                // A static member restarted (a rolling update): its instance id takes a
                // new member id, and the old one is fenced.
                Some(old) => {
                    let id = new_member_id();
                    let mut live = self.members.remove(&old).expect("found");
                    if live.awaiting_join {
                        out.push(Delivery::Join(
                            old.clone(),
                            Err(GroupError::FencedInstanceId),
                        ));
                    }
                    if live.awaiting_sync {
                        out.push(Delivery::Sync(
                            old.clone(),
                            Err(GroupError::FencedInstanceId),
                        ));
                    }
                    live.awaiting_join = false;
                    live.awaiting_sync = false;
                    let same = live.m.protocols == req.protocols;
                    let was_leader = self.leader.as_deref() == Some(old.as_str());
                    if was_leader {
                        self.leader = Some(id.clone());
                    }
                    self.members.insert(id.clone(), live);
                    if self.state == ClassicState::Stable && same {
                        self.update(&id, &req, now);
                        let mut reply = self.reply(&id, false);
                        if was_leader {
                            // As Kafka: the old leader id, so the restarted leader takes
                            // the follower's path and syncs for the assignment it had.
                            reply.leader = old;
                        }
                        return (JoinAnswer::Now(Ok(reply)), out);
                    }
                    id
                }
                None if req.require_known_member_id && req.instance_id.is_none() => {
                    if self.full() {
                        return fail(GroupError::GroupMaxSizeReached(self.max_members));
                    }
                    let id = new_member_id();
                    self.pending.insert(id.clone(), now + req.session_timeout);
                    return fail(GroupError::MemberIdRequired(id));
                }
                None => {
                    if self.full() {
                        return fail(GroupError::GroupMaxSizeReached(self.max_members));
                    }
                    new_member_id()
                }
            }
        } else {
            if self.pending.remove(&req.member_id).is_some() {
                if self.members.len() >= self.max_members {
                    return fail(GroupError::GroupMaxSizeReached(self.max_members));
                }
            } else if let Some(l) = self.members.get(&req.member_id) {
                if req.instance_id.is_some() && l.m.instance_id != req.instance_id {
                    return fail(GroupError::FencedInstanceId);
                }
            } else if static_holder.is_some() {
                return fail(GroupError::FencedInstanceId);
            } else {
                return fail(GroupError::UnknownMemberId);
            }
            if !self.supports(&req.protocol_type, &req.protocols, &req.member_id) {
                return fail(GroupError::InconsistentGroupProtocol);
            }
            req.member_id.clone()
        };
        match self.members.get(&id) {
            Some(l)
                if self.state == ClassicState::CompletingRebalance
                    && l.m.protocols == req.protocols =>
            {
                // Its first answer was lost: the same answer again.
                let leader = self.leader.as_deref() == Some(id.as_str());
                self.update(&id, &req, now);
                return (JoinAnswer::Now(Ok(self.reply(&id, leader))), out);
            }
            Some(l)
                if self.state == ClassicState::Stable
                    && l.m.protocols == req.protocols
                    && self.leader.as_deref() != Some(id.as_str()) =>
            {
                self.update(&id, &req, now);
                return (JoinAnswer::Now(Ok(self.reply(&id, false))), out);
            }
            _ => {}
        }
        let new = !self.members.contains_key(&id);
        self.update(&id, &req, now);
        self.members.get_mut(&id).expect("updated").awaiting_join = true;
        match self.state {
            ClassicState::Empty => self.prepare(now, true, &mut out),
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare(now, false, &mut out)
            }
            ClassicState::PreparingRebalance => {
                if let (true, Some((_, cap))) = (new, self.initial) {
                    self.initial = Some(((now + self.initial_delay).min(cap), cap));
                }
            }
        }
        self.complete_join(now, &mut out);
        (JoinAnswer::Later(id), out)
    }

    /// Adds or updates `id` from its JoinGroup.
    fn update(&mut self, id: &str, req: &JoinRequest, now: Instant) {
        let m = Member {
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout.as_millis() as u64,
            rebalance_timeout_ms: req.rebalance_timeout.as_millis() as u64,
            protocols: req.protocols.clone(),
            assignment: Vec::new(),
        };
        match self.members.get_mut(id) {
            Some(l) => {
                l.m = Member {
                    assignment: std::mem::take(&mut l.m.assignment),
                    ..m
                };
                l.last_heartbeat = now;
            }
            None => {
                self.members.insert(
                    id.to_string(),
                    Live {
                        m,
                        awaiting_join: false,
                        awaiting_sync: false,
                        last_heartbeat: now,
                    },
                );
            }
        }
        if self.protocol_type.is_none() || self.members.len() == 1 {
            self.protocol_type = Some(req.protocol_type.clone());
        }
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|l| Duration::from_millis(l.m.rebalance_timeout_ms))
            .max()
            .unwrap_or_default()
    }

    /// Enters `PreparingRebalance`: every member must join again. Followers waiting in
    /// SyncGroup are told REBALANCE_IN_PROGRESS.
    fn prepare(&mut self, now: Instant, from_empty: bool, out: &mut Vec<Delivery>) {
        for (id, l) in self.members.iter_mut() {
            if l.awaiting_sync {
                l.awaiting_sync = false;
                out.push(Delivery::Sync(
                    id.clone(),
                    Err(GroupError::RebalanceInProgress),
                ));
            }
        }
        let timeout = self.rebalance_timeout();
        self.state = ClassicState::PreparingRebalance;
        self.deadline = Some(now + timeout);
        self.initial = (from_empty && !self.initial_delay.is_zero())
            .then(|| ((now + self.initial_delay).min(now + timeout), now + timeout));
    }

    /// Ends the join phase if every member has joined (and the initial delay is over),
    /// or at its deadline without those that did not.
    fn complete_join(&mut self, now: Instant, out: &mut Vec<Delivery>) {
        if self.state != ClassicState::PreparingRebalance {
            return;
        }
        let past = self.deadline.is_some_and(|d| now >= d);
        if !past {
            if self.initial.is_some_and(|(not_before, _)| now < not_before) {
                return;
            }
            let all = self.members.values().all(|l| l.awaiting_join) && self.pending.is_empty();
            if !all {
                return;
            }
        }
        self.members.retain(|_, l| l.awaiting_join);
        self.initial = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol = None;
            self.leader = None;
            self.deadline = None;
            return;
        }
        self.protocol = Some(self.vote());
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = ClassicState::CompletingRebalance;
        self.deadline = Some(now + self.rebalance_timeout());
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<MemberId> = self.members.keys().cloned().collect();
        for id in ids {
            let reply = self.reply(&id, id == leader);
            let l = self.members.get_mut(&id).expect("listed");
            l.awaiting_join = false;
            l.last_heartbeat = now;
            out.push(Delivery::Join(id, Ok(reply)));
        }
    }

    /// The protocol every member supports that most members prefer (each votes for its
    /// first supported one; ties go to the earlier name).
    fn vote(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for l in self.members.values() {
            let choice = l.m.protocols.iter().map(|(n, _)| n.as_str()).find(|n| {
                self.members
                    .values()
                    .all(|o| o.m.protocols.iter().any(|(m, _)| m == n))
            });
            if let Some(c) = choice {
                *votes.entry(c).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (n, v) in votes {
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((n, v));
            }
        }
        best.map(|(n, _)| n.to_string()).unwrap_or_default()
    }

    /// A static member is known by its instance id: another member id under it is
    /// FENCED_INSTANCE_ID (a restart replaced it), none UNKNOWN_MEMBER_ID.
    fn check(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            let holder = self
                .members
                .iter()
                .find(|(_, l)| l.m.instance_id.as_deref() == Some(instance))
                .map(|(id, _)| id.as_str());
            return match holder {
                None => Err(GroupError::UnknownMemberId),
                Some(id) if id != member_id => Err(GroupError::FencedInstanceId),
                Some(_) => Ok(()),
            };
        }
        self.members
            .get(member_id)
            .map(|_| ())
            .ok_or(GroupError::UnknownMemberId)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(MemberId, Vec<u8>)>,
        now: Instant,
    ) -> (SyncAnswer, Vec<Delivery>) {
        let fail = |e: GroupError| (SyncAnswer::Now(Err(e)), Vec::new());
        if let Err(e) = self.check(member_id, instance_id) {
            return fail(e);
        }
        if generation != self.generation {
            return fail(GroupError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        let reply = |g: &ClassicGroup, id: &str| SyncReply {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            assignment: g.members[id].m.assignment.clone(),
        };
        match self.state {
            ClassicState::Empty => fail(GroupError::UnknownMemberId),
            ClassicState::PreparingRebalance => fail(GroupError::RebalanceInProgress),
            ClassicState::Stable => {
                self.members
                    .get_mut(member_id)
                    .expect("checked")
                    .last_heartbeat = now;
                (SyncAnswer::Now(Ok(reply(self, member_id))), Vec::new())
            }
            ClassicState::CompletingRebalance => {
                self.members
                    .get_mut(member_id)
                    .expect("checked")
                    .last_heartbeat = now;
                if self.leader.as_deref() != Some(member_id) {
                    self.members
                        .get_mut(member_id)
                        .expect("checked")
                        .awaiting_sync = true;
                    return (SyncAnswer::Later, Vec::new());
                }
                let mut given: BTreeMap<MemberId, Vec<u8>> = assignments.into_iter().collect();
                for (id, l) in self.members.iter_mut() {
                    l.m.assignment = given.remove(id).unwrap_or_default();
                }
                self.state = ClassicState::Stable;
                self.deadline = None;
                let mut out = Vec::new();
                let ids: Vec<MemberId> = self.members.keys().cloned().collect();
                for id in ids {
                    if std::mem::take(&mut self.members.get_mut(&id).expect("listed").awaiting_sync)
                    {
                        out.push(Delivery::Sync(id.clone(), Ok(reply(self, &id))));
                    }
                }
                (SyncAnswer::Now(Ok(reply(self, member_id))), out)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.check(member_id, instance_id)?;
        let l = self.members.get_mut(member_id).expect("checked");
        match self.state {
            ClassicState::Empty => Err(GroupError::UnknownMemberId),
            ClassicState::PreparingRebalance => {
                l.last_heartbeat = now;
                Err(GroupError::RebalanceInProgress)
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                if generation != self.generation {
                    return Err(GroupError::IllegalGeneration);
                }
                l.last_heartbeat = now;
                Ok(())
            }
        }
    }

    /// Removes members (by member id, or by instance id when the member id is empty);
    /// one result per member asked for.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: Instant,
    ) -> (Vec<Result<MemberId, GroupError>>, Vec<Delivery>) {
        let mut results = Vec::new();
        let mut out = Vec::new();
        let mut removed = false;
        for (member_id, instance_id) in leaving {
            let id = if member_id.is_empty() {
                instance_id.as_ref().and_then(|i| {
                    self.members
                        .iter()
                        .find(|(_, l)| l.m.instance_id.as_ref() == Some(i))
                        .map(|(id, _)| id.clone())
                })
            } else {
                Some(member_id.clone())
            };
            let Some(id) = id else {
                results.push(Err(GroupError::UnknownMemberId));
                continue;
            };
            if self.pending.remove(&id).is_some() {
                results.push(Ok(id));
                continue;
            }
            if let Err(e) = self.check(&id, instance_id.as_deref()) {
                results.push(Err(e));
                continue;
            }
            self.remove(&id, &mut out);
            removed = true;
            results.push(Ok(id));
        }
        if removed {
            self.rebalance(now, &mut out);
        }
        (results, out)
    }

    fn remove(&mut self, id: &str, out: &mut Vec<Delivery>) {
        if let Some(l) = self.members.remove(id) {
            if l.awaiting_join {
                out.push(Delivery::Join(
                    id.to_string(),
                    Err(GroupError::UnknownMemberId),
                ));
            }
            if l.awaiting_sync {
                out.push(Delivery::Sync(
                    id.to_string(),
                    Err(GroupError::UnknownMemberId),
                ));
            }
        }
    }

    /// After members went away: a settled group rebalances, a joining one may be done.
    fn rebalance(&mut self, now: Instant, out: &mut Vec<Delivery>) {
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare(now, false, out)
            }
            ClassicState::Empty | ClassicState::PreparingRebalance => {}
        }
        if self.state == ClassicState::PreparingRebalance {
            self.complete_join(now, out);
        }
    }

    /// Timeouts: member ids handed out and never used, members silent past their
    /// session timeout, the end of the join phase, a leader that never synced. Returns
    /// the members removed.
    pub fn tick(&mut self, now: Instant) -> (Vec<MemberId>, Vec<Delivery>) {
        let mut out = Vec::new();
        self.pending.retain(|_, until| *until > now);
        let mut gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, l)| {
                !l.awaiting_join
                    && !l.awaiting_sync
                    && l.last_heartbeat + Duration::from_millis(l.m.session_timeout_ms) <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        if self.state == ClassicState::CompletingRebalance
            && self.deadline.is_some_and(|d| now >= d)
        {
            // The leader never sent its assignment: whoever did not sync is gone.
            for (id, l) in &self.members {
                if !l.awaiting_sync && !gone.contains(id) {
                    gone.push(id.clone());
                }
            }
        }
        for id in &gone {
            self.remove(id, &mut out);
        }
        if !gone.is_empty() {
            self.rebalance(now, &mut out);
        } else {
            self.complete_join(now, &mut out);
        }
        (gone, out)
    }
}

#[path = "classic_view.rs"]
mod view;
