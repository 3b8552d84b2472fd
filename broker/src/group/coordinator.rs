//! The groups of one `__consumer_offsets` partition, sans-IO: heartbeats, offset commits
//! and fetches, expiry, describe/list/delete. Every change comes back as records to
//! append to the partition ([`Write`]); a coordinator that takes the partition over
//! replays them ([`Coordinator::replay`]) and carries on with the same groups, epochs,
//! assignments and committed offsets.
//!
//! Records are keyed so compaction keeps only the latest per key: one per group (its
//! [`GroupSnapshot`]) and one per committed partition. A deleted group or expired offset
//! is a tombstone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::assignor::{MemberId, Tp};
use super::classic::{
    ClassicGroup, ClassicMemberView, ClassicSnapshot, Delivery, JoinAnswer, JoinRequest, SyncAnswer,
};
use super::state::{
    Group, GroupConfig, GroupError, GroupSnapshot, Heartbeat, HeartbeatReply, MemberView,
};

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Defaults for new groups (`group.consumer.*`).
    pub group: GroupConfig,
    /// Bounds on the session timeout a member asks for.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// `offsets.retention.minutes`: committed offsets of a group without members are
    /// removed this long after it became empty (or after its last commit, if later).
    pub offsets_retention: Duration,
    /// Most groups one broker coordinates (over every partition it leads).
    pub max_groups: usize,
    /// `group.initial.rebalance.delay.ms`: how long a classic group that had no members
    /// waits for more to join before its first generation.
    pub initial_rebalance_delay: Duration,
    /// The transaction coordinator's settings.
    pub txn: super::txn::TxnConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> CoordinatorConfig {
        CoordinatorConfig {
            group: GroupConfig::default(),
            min_session_timeout: Duration::from_millis(500),
            max_session_timeout: Duration::from_secs(300),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            max_groups: sluice_proto::limits::GROUPS_PER_BROKER_MAX,
            initial_rebalance_delay: Duration::from_secs(3),
            txn: Default::default(),
        }
    }
}

/// Longest metadata a commit may carry (Kafka's `offset.metadata.max.bytes`).
pub const MAX_METADATA: usize = 4096;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
    pub commit_ms: i64,
    /// The committed leader epoch (-1: unknown; commits before Sluice kept it).
    #[serde(default = "unknown_epoch")]
    pub leader_epoch: i32,
}

fn unknown_epoch() -> i32 {
    -1
}

/// One partition's offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffset {
    pub tp: Tp,
    pub offset: i64,
    /// -1: unknown.
    pub leader_epoch: i32,
    pub metadata: String,
}

impl From<(Tp, i64, String)> for NewOffset {
    fn from((tp, offset, metadata): (Tp, i64, String)) -> NewOffset {
        NewOffset {
            tp,
            offset,
            leader_epoch: -1,
            metadata,
        }
    }
}

impl NewOffset {
    fn committed(self, now_ms: i64) -> (Tp, Committed) {
        (
            self.tp,
            Committed {
                offset: self.offset,
                metadata: self.metadata,
                commit_ms: now_ms,
                leader_epoch: self.leader_epoch,
            },
        )
    }
}

/// A record to append: key, and value (`None`: a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Key {
    Group {
        group: String,
    },
    Offset {
        group: String,
        topic: String,
        partition: u32,
    },
    /// A transactional id's state ([`super::txn`]).
    Txn {
        txn: String,
    },
    /// An offset committed inside a transaction, pending until its marker.
    TxnOffset {
        group: String,
        topic: String,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
    },
}

/// The key of a transactional id's record.
pub(super) fn txn_key(txn: &str) -> Vec<u8> {
    key_bytes(&Key::Txn {
        txn: txn.to_string(),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupValue {
    snapshot: GroupSnapshot,
    /// The classic protocol's part, once the group has had a classic member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classic: Option<ClassicSnapshot>,
    /// Wall-clock ms since which the group has had no members.
    empty_since_ms: Option<i64>,
}

fn key_bytes(k: &Key) -> Vec<u8> {
    serde_json::to_vec(k).expect("keys serialize")
}

struct Entry {
    group: Group,
    classic: ClassicGroup,
    offsets: BTreeMap<Tp, Committed>,
    empty_since_ms: Option<i64>,
    /// What the log holds for this group now.
    persisted: Option<GroupValue>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.group.is_empty() && self.classic.is_empty()
    }

    fn is_classic(&self) -> bool {
        !self.classic.is_empty()
    }
}

/// Which protocol a group's members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// KIP-848 (ConsumerGroupHeartbeat), or no members.
    Consumer,
    /// JoinGroup/SyncGroup.
    Classic,
}

impl GroupKind {
    /// Kafka's group type name.
    pub fn name(self) -> &'static str {
        match self {
            GroupKind::Consumer => "consumer",
            GroupKind::Classic => "classic",
        }
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub group_id: String,
    pub kind: GroupKind,
    /// The native state name ("stable"), or Kafka's for a classic group ("Stable").
    pub state: &'static str,
    pub members: usize,
}

/// A classic group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct ClassicDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<ClassicMemberView>,
}

/// A group as `describe` shows it.
#[derive(Debug, Clone)]
pub struct Description {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<MemberView>,
    pub offsets: BTreeMap<Tp, Committed>,
    pub kind: GroupKind,
}

/// What [`Coordinator::tick`] did.
#[derive(Debug, Default)]
pub struct Tick {
    pub writes: Vec<Write>,
    /// Members removed (session or rebalance timeout), by group.
    pub fenced: Vec<(String, MemberId)>,
    /// Answers to classic JoinGroup/SyncGroup requests that were waiting.
    pub deliveries: Vec<(String, Delivery)>,
}

/// A partition of an OffsetDelete: `None` when its offset is gone (or there was none).
pub type PartitionOutcome = (Tp, Option<GroupError>);

/// The groups of one offsets partition.
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: BTreeMap<String, Entry>,
    /// Every topic's partition count (from metadata).
    partitions: BTreeMap<String, u32>,
    /// The transactional ids of this partition.
    pub txns: super::txn::TxnCoordinator,
    /// Transactional offset commits waiting for their transaction's marker here.
    txn_offsets: txn_offsets::TxnOffsets,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            txns: super::txn::TxnCoordinator::new(config.txn.clone()),
            config,
            groups: BTreeMap::new(),
            partitions: BTreeMap::new(),
            txn_offsets: Default::default(),
        }
    }

    /// Applies one record of the partition (loading). A record that does not decode is
    /// reported and skipped: it cannot have been written by a coordinator.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>, now: Instant) -> Result<(), String> {
        let k: Key = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
        match k {
            Key::Offset {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => {
                    let c: Committed =
                        serde_json::from_slice(v).map_err(|e| format!("bad offset: {e}"))?;
                    self.entry(&group).offsets.insert((topic, partition), c);
                }
                None => {
                    if let Some(e) = self.groups.get_mut(&group) {
                        e.offsets.remove(&(topic, partition));
                    }
                }
            },
            Key::Txn { txn } => self.txns.replay(&txn, value)?,
            Key::TxnOffset {
                group,
                topic,
                partition,
                producer_id,
                producer_epoch,
            } => {
                let c = match value {
                    Some(v) => {
                        Some(serde_json::from_slice(v).map_err(|e| format!("bad offset: {e}"))?)
                    }
                    None => None,
                };
                self.txn_offsets.replay(
                    group,
                    (topic, partition),
                    (producer_id, producer_epoch),
                    c,
                );
            }
            Key::Group { group } => match value {
                Some(v) => {
                    let gv: GroupValue =
                        serde_json::from_slice(v).map_err(|e| format!("bad group: {e}"))?;
                    let restored = Group::restore(
                        self.config.group.clone(),
                        gv.snapshot.clone(),
                        self.partitions.clone(),
                        now,
                    );
                    let e = self.entry(&group);
                    e.group = restored;
                    if let Some(c) = gv.classic.clone() {
                        e.classic.restore(c, now);
                    }
                    e.empty_since_ms = gv.empty_since_ms;
                    e.persisted = Some(gv);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
        }
        Ok(())
    }

    fn entry(&mut self, group: &str) -> &mut Entry {
        let (config, partitions) = (&self.config, &self.partitions);
        self.groups.entry(group.to_string()).or_insert_with(|| {
            let mut g = Group::new(config.group.clone());
            g.set_partitions(partitions.clone());
            Entry {
                group: g,
                classic: ClassicGroup::new(
                    config.initial_rebalance_delay,
                    config.group.max_members,
                ),
                offsets: BTreeMap::new(),
                empty_since_ms: None,
                persisted: None,
            }
        })
    }

    /// The cluster's topics changed: groups subscribed to them move to a new epoch.
    pub fn set_partitions(&mut self, partitions: BTreeMap<String, u32>, now_ms: i64) -> Vec<Write> {
        if partitions == self.partitions {
            return Vec::new();
        }
        self.partitions = partitions;
        let mut out = Vec::new();
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let e = self.groups.get_mut(&id).expect("listed");
            e.group.set_partitions(self.partitions.clone());
            out.extend(persist(&id, e, now_ms));
        }
        out
    }

    /// The assignor a joining member asks for, taken while the group has no members.
    pub fn set_assignor_if_empty(&mut self, group_id: &str, kind: super::state::AssignorKind) {
        if group_id.is_empty() {
            return;
        }
        let e = self.entry(group_id);
        if e.group.is_empty() {
            e.group.config.assignor = kind;
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        mut hb: Heartbeat,
        now: Instant,
        now_ms: i64,
        new_member_id: impl FnOnce() -> MemberId,
    ) -> (Result<HeartbeatReply, GroupError>, Vec<Write>) {
        if group_id.is_empty() {
            return (
                Err(GroupError::InvalidRequest("the group id is empty".into())),
                Vec::new(),
            );
        }
        if hb.member_epoch != 0 && !self.groups.contains_key(group_id) {
            return (Err(GroupError::UnknownMemberId), Vec::new());
        }
        let (lo, hi) = (
            self.config.min_session_timeout,
            self.config.max_session_timeout,
        );
        hb.session_timeout = hb.session_timeout.map(|t| t.clamp(lo, hi));
        if self.groups.get(group_id).is_some_and(Entry::is_classic) {
            return (Err(GroupError::InconsistentGroupProtocol), Vec::new());
        }
        let e = self.entry(group_id);
        let reply = e.group.heartbeat(hb, now, new_member_id);
        let writes = persist(group_id, e, now_ms).into_iter().collect();
        (reply, writes)
    }

    /// Commits offsets for `member_id` at `member_epoch`. Epoch (generation) -1 is an
    /// admin's or a consumer's that does not use the group (`assign()`): accepted while the
    /// group has no members, whatever member id it names, as in Kafka (librdkafka's KIP-848
    /// consumer sends its own id); refused otherwise.
    pub fn commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<impl Into<NewOffset>>,
        now_ms: i64,
    ) -> Result<Vec<Write>, GroupError> {
        let offsets: Vec<NewOffset> = offsets.into_iter().map(Into::into).collect();
        self.check_commit(group_id, member_id, member_epoch, &offsets)?;
        self.store_offsets(group_id, offsets, now_ms)
    }

    /// Whether `member_id` at `member_epoch` (a generation, for a classic group) may
    /// commit `offsets` now: see [`Coordinator::commit`].
    fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[NewOffset],
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidRequest("the group id is empty".into()));
        }
        let memberless = match self.groups.get(group_id) {
            None => true,
            Some(e) if e.is_classic() => e.classic.state() == super::classic::ClassicState::Empty,
            Some(e) => e.group.members().is_empty(),
        };
        if member_epoch < 0 && memberless {
            return Ok(());
        }
        if let Some(e) = self.groups.get(group_id).filter(|e| e.is_classic()) {
            // Classic: the member's generation; during the sync phase nobody commits
            // (its partitions are about to change hands).
            if member_id.is_empty() || !e.classic.has_member(member_id) {
                return Err(GroupError::UnknownMemberId);
            }
            if member_epoch != e.classic.generation() {
                return Err(GroupError::IllegalGeneration);
            }
            if e.classic.state() == super::classic::ClassicState::CompletingRebalance {
                return Err(GroupError::RebalanceInProgress);
            }
        } else {
            let tps: Vec<Tp> = offsets.iter().map(|o| o.tp.clone()).collect();
            self.check_consumer_commit(group_id, member_id, member_epoch, &tps)?;
        }
        Ok(())
    }
}

#[path = "coordinator_txn.rs"]
mod txn_offsets;

/// The checks of an offset commit's values: metadata size, no negative offset.
fn check_offsets(offsets: &[NewOffset]) -> Result<(), GroupError> {
    if let Some(o) = offsets.iter().find(|o| o.metadata.len() > MAX_METADATA) {
        return Err(GroupError::InvalidRequest(format!(
            "metadata of {}-{} is {} bytes; at most {MAX_METADATA}",
            o.tp.0,
            o.tp.1,
            o.metadata.len()
        )));
    }
    if let Some(o) = offsets.iter().find(|o| o.offset < 0) {
        return Err(GroupError::InvalidRequest(format!(
            "offset {} is negative",
            o.offset
        )));
    }
    Ok(())
}

impl Coordinator {
    fn check_consumer_commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        tps: &[Tp],
    ) -> Result<(), GroupError> {
        let Some(e) = self.groups.get(group_id) else {
            return if member_id.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        };
        if member_id.is_empty() {
            if !e.group.is_empty() {
                return Err(GroupError::NonEmptyGroup);
            }
            return Ok(());
        }
        e.group.commit_allowed(member_id, member_epoch, tps)
    }

    fn store_offsets(
        &mut self,
        group_id: &str,
        offsets: Vec<NewOffset>,
        now_ms: i64,
    ) -> Result<Vec<Write>, GroupError> {
        check_offsets(&offsets)?;
        let e = self.entry(group_id);
        let mut out = Vec::with_capacity(offsets.len() + 1);
        for o in offsets {
            let ((topic, partition), c) = o.committed(now_ms);
            out.push(Write {
                key: key_bytes(&Key::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition,
                }),
                value: Some(serde_json::to_vec(&c).expect("serializes")),
            });
            e.offsets.insert((topic, partition), c);
        }
        // No group record: a commit changes no membership (an admin's commit into a
        // group that never had members starts its empty time).
        if e.is_empty() {
            e.empty_since_ms.get_or_insert(now_ms);
        }
        Ok(out)
    }

    /// Committed offsets of `group_id`: those asked for (`None` where nothing is
    /// committed), or every one when `only` is empty.
    pub fn fetch(&self, group_id: &str, only: &[Tp]) -> Vec<(Tp, Option<Committed>)> {
        let offsets = self.groups.get(group_id).map(|e| &e.offsets);
        if only.is_empty() {
            return offsets
                .into_iter()
                .flatten()
                .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                .collect();
        }
        only.iter()
            .map(|tp| (tp.clone(), offsets.and_then(|o| o.get(tp)).cloned()))
            .collect()
    }

    /// Fences silent members, and removes groups that have been empty past the offsets
    /// retention (with their offsets).
    pub fn tick(&mut self, now: Instant, now_ms: i64) -> Tick {
        let retention = self.config.offsets_retention.as_millis() as i64;
        let mut out = Vec::new();
        let mut fenced = Vec::new();
        let mut deliveries = Vec::new();
        let mut expired = Vec::new();
        for (id, e) in self.groups.iter_mut() {
            for m in e.group.tick(now) {
                fenced.push((id.clone(), m));
            }
            let (gone, delivered) = e.classic.tick(now);
            fenced.extend(gone.into_iter().map(|m| (id.clone(), m)));
            deliveries.extend(delivered.into_iter().map(|d| (id.clone(), d)));
            out.extend(persist(id, e, now_ms));
            if e.is_empty() {
                let last_commit = e.offsets.values().map(|c| c.commit_ms).max();
                let since = e.empty_since_ms.into_iter().chain(last_commit).max();
                if since.is_some_and(|s| now_ms - s >= retention) {
                    expired.push(id.clone());
                }
            }
        }
        for id in expired {
            out.extend(self.remove(&id));
        }
        out.extend(self.txn_offsets.tick(now_ms));
        out.extend(self.txns.tick(now_ms));
        Tick {
            writes: out,
            fenced,
            deliveries,
        }
    }

    /// Removes a group without members and its offsets.
    pub fn delete(&mut self, group_id: &str) -> Result<Vec<Write>, GroupError> {
        let e = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if !e.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        Ok(self.remove(group_id))
    }

    /// OffsetDelete: removes the group's committed offsets of `tps`, except those of
    /// topics a member subscribes to (GroupSubscribedToTopic for each of those). A
    /// classic group with members of a protocol type other than `consumer` refuses
    /// (NonEmptyGroup: the coordinator cannot tell what they read), as Kafka does.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        tps: &[Tp],
    ) -> Result<(Vec<Write>, Vec<PartitionOutcome>), GroupError> {
        let e = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        let subscribed: BTreeSet<String> = if e.is_classic() {
            if e.classic.protocol_type() != Some("consumer") {
                return Err(GroupError::NonEmptyGroup);
            }
            e.classic
                .consumer_members()
                .into_iter()
                .flat_map(|m| m.topics)
                .collect()
        } else {
            e.group.subscribed_topics()
        };
        let mut writes = Vec::new();
        let mut results = Vec::with_capacity(tps.len());
        for tp in tps {
            if subscribed.contains(&tp.0) {
                results.push((tp.clone(), Some(GroupError::GroupSubscribedToTopic)));
                continue;
            }
            if e.offsets.remove(tp).is_some() {
                writes.push(Write {
                    key: key_bytes(&Key::Offset {
                        group: group_id.to_string(),
                        topic: tp.0.clone(),
                        partition: tp.1,
                    }),
                    value: None,
                });
            }
            results.push((tp.clone(), None));
        }
        Ok((writes, results))
    }

    fn remove(&mut self, group_id: &str) -> Vec<Write> {
        let Some(e) = self.groups.remove(group_id) else {
            return Vec::new();
        };
        let mut out: Vec<Write> = e
            .offsets
            .into_keys()
            .map(|(topic, partition)| Write {
                key: key_bytes(&Key::Offset {
                    group: group_id.to_string(),
                    topic,
                    partition,
                }),
                value: None,
            })
            .collect();
        out.push(Write {
            key: key_bytes(&Key::Group {
                group: group_id.to_string(),
            }),
            value: None,
        });
        out
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn has_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// Every group.
    pub fn list(&self) -> Vec<Listed> {
        self.groups
            .iter()
            .map(|(id, e)| self.list_one(id, e))
            .collect()
    }

    fn list_one(&self, id: &str, e: &Entry) -> Listed {
        let classic = e.is_classic()
            || (e.group.is_empty() && e.classic.generation() > 0 && e.group.epoch == 0);
        if classic {
            Listed {
                group_id: id.to_string(),
                kind: GroupKind::Classic,
                state: e.classic.state().name(),
                members: e.classic.member_count(),
            }
        } else {
            Listed {
                group_id: id.to_string(),
                kind: GroupKind::Consumer,
                state: e.group.state(),
                members: e.group.members().len(),
            }
        }
    }

    /// A classic group for DescribeGroups: `Err(GroupIdNotFound)` for a group that is
    /// not classic (as Kafka), `Ok(None)` for an unknown one.
    pub fn describe_classic(
        &self,
        group_id: &str,
    ) -> Result<Option<ClassicDescription>, GroupError> {
        let Some(e) = self.groups.get(group_id) else {
            return Ok(None);
        };
        if !e.is_classic() && !e.group.is_empty() {
            return Err(GroupError::GroupIdNotFound);
        }
        Ok(Some(ClassicDescription {
            state: e.classic.state().name(),
            protocol_type: e.classic.protocol_type().unwrap_or_default().to_string(),
            protocol: e.classic.protocol().unwrap_or_default().to_string(),
            members: e.classic.describe(),
        }))
    }

    /// A classic JoinGroup (see [`ClassicGroup::join`]).
    pub fn join(
        &mut self,
        group_id: &str,
        req: JoinRequest,
        now: Instant,
        now_ms: i64,
        new_member_id: impl FnOnce() -> MemberId,
    ) -> (JoinAnswer, Vec<Delivery>, Vec<Write>) {
        let refuse = |e| (JoinAnswer::Now(Err(e)), Vec::new(), Vec::new());
        if group_id.is_empty() {
            return refuse(GroupError::InvalidRequest("the group id is empty".into()));
        }
        if req.session_timeout < self.config.min_session_timeout
            || req.session_timeout > self.config.max_session_timeout
        {
            return refuse(GroupError::InvalidSessionTimeout);
        }
        if self
            .groups
            .get(group_id)
            .is_some_and(|e| !e.group.is_empty())
        {
            return refuse(GroupError::InconsistentGroupProtocol);
        }
        let e = self.entry(group_id);
        let (answer, deliveries) = e.classic.join(req, now, new_member_id);
        let writes = persist(group_id, e, now_ms).into_iter().collect();
        (answer, deliveries, writes)
    }

    /// A classic SyncGroup (see [`ClassicGroup::sync`]).
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(MemberId, Vec<u8>)>,
        now: Instant,
        now_ms: i64,
    ) -> (SyncAnswer, Vec<Delivery>, Vec<Write>) {
        let Some(e) = self.groups.get_mut(group_id) else {
            return (
                SyncAnswer::Now(Err(GroupError::UnknownMemberId)),
                Vec::new(),
                Vec::new(),
            );
        };
        let (answer, deliveries) = e.classic.sync(
            member_id,
            instance_id,
            generation,
            protocol.0,
            protocol.1,
            assignments,
            now,
        );
        let writes = persist(group_id, e, now_ms).into_iter().collect();
        (answer, deliveries, writes)
    }

    /// A classic Heartbeat.
    pub fn classic_heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?
            .classic
            .heartbeat(member_id, instance_id, generation, now)
    }

    /// A classic LeaveGroup: one result per member.
    pub fn leave(
        &mut self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        now: Instant,
        now_ms: i64,
    ) -> (Vec<Result<MemberId, GroupError>>, Vec<Delivery>, Vec<Write>) {
        let Some(e) = self.groups.get_mut(group_id) else {
            let none = leaving
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect();
            return (none, Vec::new(), Vec::new());
        };
        let (results, deliveries) = e.classic.leave(leaving, now);
        let writes = persist(group_id, e, now_ms).into_iter().collect();
        (results, deliveries, writes)
    }

    pub fn describe(&self, group_id: &str) -> Option<Description> {
        let e = self.groups.get(group_id)?;
        let kind = self.list_one(group_id, e).kind;
        if kind == GroupKind::Classic {
            // The classic generation stands for both epochs; members and what they own
            // as their consumer-protocol metadata and assignments say.
            let g = e.classic.generation();
            return Some(Description {
                kind,
                group_id: group_id.to_string(),
                state: e.classic.state().name(),
                group_epoch: g,
                assignment_epoch: g,
                assignor: e.classic.protocol().unwrap_or_default().to_string(),
                members: e.classic.consumer_members(),
                offsets: e.offsets.clone(),
            });
        }
        Some(Description {
            kind,
            group_id: group_id.to_string(),
            state: if kind == GroupKind::Classic {
                e.classic.state().name()
            } else {
                e.group.state()
            },
            group_epoch: e.group.epoch,
            assignment_epoch: e.group.target_epoch(),
            assignor: match e.group.config.assignor {
                super::state::AssignorKind::Uniform => "uniform",
                super::state::AssignorKind::Range => "range",
            }
            .to_string(),
            members: e.group.describe(),
            offsets: e.offsets.clone(),
        })
    }

    /// Every group's epoch (for metrics).
    pub fn epochs(&self) -> impl Iterator<Item = (String, i32)> + '_ {
        self.groups
            .iter()
            .map(|(id, e)| (id.clone(), e.group.epoch))
    }

    /// Members across every group (for metrics).
    pub fn member_count(&self) -> usize {
        self.groups
            .values()
            .map(|e| e.group.members().len() + e.classic.member_count())
            .sum()
    }

    /// Topics any member of any group subscribes to or any group committed for.
    pub fn topics_of_interest(&self) -> BTreeSet<String> {
        self.groups
            .values()
            .flat_map(|e| {
                e.group
                    .subscribed_topics()
                    .into_iter()
                    .chain(e.offsets.keys().map(|(t, _)| t.clone()))
            })
            .collect()
    }
}

/// The group record, if what the log holds for `id` is out of date.
fn persist(id: &str, e: &mut Entry, now_ms: i64) -> Option<Write> {
    if e.is_empty() {
        e.empty_since_ms.get_or_insert(now_ms);
    } else {
        e.empty_since_ms = None;
    }
    if e.persisted.is_none() && e.is_empty() && e.group.epoch == 0 && e.classic.generation() == 0 {
        // Never had a member (offsets committed by an admin): nothing to record.
        return None;
    }
    // Mid-rebalance, the classic part last written stays.
    let classic = if e.classic.generation() == 0 && e.classic.is_empty() {
        None
    } else {
        e.classic
            .snapshot()
            .or_else(|| e.persisted.as_ref().and_then(|p| p.classic.clone()))
    };
    let value = GroupValue {
        snapshot: e.group.snapshot(),
        classic,
        empty_since_ms: e.empty_since_ms,
    };
    if e.persisted.as_ref() == Some(&value) {
        return None;
    }
    let bytes = serde_json::to_vec(&value).expect("serializes");
    e.persisted = Some(value);
    Some(Write {
        key: key_bytes(&Key::Group {
            group: id.to_string(),
        }),
        value: Some(bytes),
    })
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
