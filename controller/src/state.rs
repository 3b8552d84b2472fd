//! The controller's cluster state machine, sans-IO: calls in, [`Action`]s out. The
//! driver (`lib.rs`) persists the [`Snapshot`] after every mutating call, then sends
//! the actions to brokers. Nothing here touches sockets, files or clocks (`now` is an
//! argument), so every rule is unit-tested directly.
//!
//! Invariants: a partition's leader, when set, is one of its replicas and in its ISR;
//! `leader_epoch` and `partition_epoch` only grow; broker epochs are unique across the
//! store's life (`next_broker_epoch` only grows).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_proto::acl::{AclBinding, AclFilter};
use sluice_proto::topic_config::LogConfig;
use sluice_proto::v1;
use sluice_proto::ErrorCode;

/// What the store keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub topics: BTreeMap<String, TopicRecord>,
    pub brokers: BTreeMap<u32, BrokerRecord>,
    pub next_broker_epoch: i64,
    /// Last producer id handed out (idempotent producers).
    #[serde(default)]
    pub next_producer_id: i64,
    /// Deleted topics (by topic id) not yet confirmed gone by every replica
    /// (`deletions.rs`).
    #[serde(default)]
    pub deleting: BTreeMap<String, deletions::PendingDeletion>,
    /// Kafka's ACLs (docs/authorization.md), pushed to every broker with the metadata.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub acls: std::collections::BTreeSet<AclBinding>,
    /// Dynamic broker and group configs (Kafka's AlterConfigs on BROKER and GROUP
    /// resources), by `dynamic_config::key`; pushed to every broker with the metadata.
    /// Invariant: no resource has an empty map (its last config deleted removes it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_configs: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: String,
    /// Only the configs set on the topic; the rest are broker defaults.
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<u32>,
    /// Invariant: when `Some`, a member of `isr`.
    pub leader: Option<u32>,
    pub leader_epoch: i32,
    pub isr: Vec<u32>,
    pub partition_epoch: i32,
    /// During a reassignment: the replica set to end with. `replicas` then holds the
    /// union of old and new until every target replica is in the ISR.
    #[serde(default)]
    pub target: Option<Vec<u32>>,
    /// During a reassignment: the replicas it started from (what a cancel goes back
    /// to; a change of target mid-way keeps them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin: Vec<u32>,
}

impl PartitionRecord {
    /// During a reassignment: the replicas that go once the target is in sync.
    pub fn removing(&self) -> Vec<u32> {
        match &self.target {
            Some(target) => self
                .replicas
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect(),
            None => Vec::new(),
        }
    }

    /// During a reassignment: the replicas it started from (a record written before
    /// they were kept: the current replicas).
    pub fn original(&self) -> Option<Vec<u32>> {
        self.target.as_ref()?;
        Some(if self.origin.is_empty() {
            self.replicas.clone()
        } else {
            self.origin.clone()
        })
    }

    /// During a reassignment: the target replicas it started without.
    pub fn adding(&self) -> Vec<u32> {
        match (&self.target, self.original()) {
            (Some(target), Some(original)) => target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A new partition on `replicas` (not empty): all in sync, led by the first.
    pub fn new(replicas: Vec<u32>) -> PartitionRecord {
        PartitionRecord {
            leader: replicas.first().copied(),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            target: None,
            origin: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub addr: String,
    pub rack: Option<String>,
    pub epoch: i64,
    pub incarnation: u64,
    /// Its Kafka listener's advertised HOST:PORT, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_addr: Option<String>,
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Tell `broker` its role for these partitions.
    LeaderAndIsr {
        broker: u32,
        partitions: Vec<v1::PartitionState>,
    },
    /// Tell `broker` to drop (and delete) these partitions.
    StopReplica {
        broker: u32,
        partitions: Vec<(String, u32)>,
    },
    /// Send the full metadata to every live broker.
    UpdateMetadataAll,
    /// Send the full metadata to one broker (reconciliation).
    UpdateMetadata { broker: u32 },
    /// Tell `broker` its role for every partition it replicates; it drops (and deletes)
    /// any replica it holds that is not listed (reconciliation: see `reconcile.rs`).
    FullState {
        broker: u32,
        partitions: Vec<v1::PartitionState>,
    },
}

pub type Rejection = (ErrorCode, String);

/// Largest partition count accepted for one topic.
pub const PARTITIONS_MAX: u32 = 10_000;

/// Cloned only for a dry run (`validate_only`), which is thrown away.
#[derive(Clone)]
pub struct ClusterState {
    pub snap: Snapshot,
    /// Brokers in controlled shutdown: alive, but not eligible to lead.
    shutting_down: std::collections::HashSet<u32>,
    /// Last heartbeat of each unfenced broker; a broker absent here is fenced.
    live: HashMap<u32, Instant>,
    /// Registrations refused because the id's session is live and held by another
    /// process: broker id → (the refused process's incarnation, when it was first
    /// refused). A heartbeat of the live session after that instant proves its holder
    /// alive, so the newcomer is a duplicate, not a restart (see
    /// [`ClusterState::admit_registration`]).
    claims: HashMap<u32, (u64, Instant)>,
    session_timeout: Duration,
    controller_id: u32,
    controller_epoch: i64,
    /// Brokers whose heartbeats report state other than this controller's, since when
    /// (or since the last re-send): see `reconcile.rs`.
    differs_since: HashMap<u32, Instant>,
    /// Brokers whose last report was not the controller's current state (a change still
    /// on its way counts): what deletions wait out and the out-of-sync gauge counts.
    out_of_step: std::collections::HashSet<u32>,
    /// Brokers re-sent their state (they differed for `RECONCILE_AFTER`) whose reports
    /// have not matched since: told so in heartbeat answers, they stop serving clients.
    resent: std::collections::HashSet<u32>,
    /// When each broker was last re-sent its state (one re-send per interval).
    resent_at: HashMap<u32, Instant>,
    /// The metadata digests this controller's state had lately, and each broker's
    /// expected roles digests: a report of one superseded less than `RECONCILE_AFTER`
    /// ago is a broker whose pushes are on their way (see `reconcile.rs`).
    recent_metadata: reconcile::DigestHistory,
    recent_roles: HashMap<u32, reconcile::DigestHistory>,
}

fn reject(code: ErrorCode, msg: impl Into<String>) -> Rejection {
    (code, msg.into())
}

/// Kafka's topic-name rule.
pub fn validate_topic_name(name: &str) -> Result<(), Rejection> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 249 || name == "." || name == ".." || !ok_chars {
        return Err(reject(
            ErrorCode::InvalidTopic,
            format!("invalid topic name {name:?}: use 1-249 of [a-zA-Z0-9._-], not '.' or '..'"),
        ));
    }
    Ok(())
}

impl ClusterState {
    /// A new active controller's state. Brokers known to the store get one session
    /// timeout from `now` to heartbeat before they are fenced.
    pub fn new(
        snap: Snapshot,
        now: Instant,
        session_timeout: Duration,
        controller_id: u32,
        controller_epoch: i64,
    ) -> Self {
        let live = snap.brokers.keys().map(|&b| (b, now)).collect();
        ClusterState {
            snap,
            live,
            session_timeout,
            controller_id,
            controller_epoch,
            shutting_down: Default::default(),
            claims: HashMap::new(),
            differs_since: HashMap::new(),
            out_of_step: Default::default(),
            resent: Default::default(),
            resent_at: HashMap::new(),
            recent_metadata: Default::default(),
            recent_roles: HashMap::new(),
        }
    }

    pub fn controller_epoch(&self) -> i64 {
        self.controller_epoch
    }

    pub fn is_live(&self, broker: u32) -> bool {
        self.live.contains_key(&broker)
    }

    /// Brokers ordered so that consecutive ones sit in different racks where possible
    /// (one from each rack in turn), so consecutive replicas land on distinct racks.
    /// Without racks this is the input order.
    fn rack_alternated(&self, brokers: Vec<u32>) -> Vec<u32> {
        let mut by_rack: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for b in brokers {
            let rack = self
                .snap
                .brokers
                .get(&b)
                .and_then(|r| r.rack.clone())
                .unwrap_or_default();
            by_rack.entry(rack).or_default().push(b);
        }
        let mut out = Vec::new();
        let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
        for i in 0..deepest {
            out.extend(by_rack.values().filter_map(|rack| rack.get(i).copied()));
        }
        out
    }

    pub fn live_brokers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.live.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn partition_state(&self, topic: &str, t: &TopicRecord, index: usize) -> v1::PartitionState {
        let p = &t.partitions[index];
        v1::PartitionState {
            topic: topic.to_string(),
            partition: index as u32,
            leader: p.leader.map_or(-1, |l| l as i32),
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
            configs: t.configs.clone().into_iter().collect(),
            topic_id: t.id.clone(),
        }
    }

    /// One LeaderAndIsr action per live replica of the given partitions.
    fn leader_and_isr_for(&self, changed: &[(String, usize)]) -> Vec<Action> {
        let mut per_broker: BTreeMap<u32, Vec<v1::PartitionState>> = BTreeMap::new();
        for (topic, index) in changed {
            let Some(t) = self.snap.topics.get(topic) else {
                continue;
            };
            for &r in &t.partitions[*index].replicas {
                if self.is_live(r) {
                    per_broker
                        .entry(r)
                        .or_default()
                        .push(self.partition_state(topic, t, *index));
                }
            }
        }
        per_broker
            .into_iter()
            .map(|(broker, partitions)| Action::LeaderAndIsr { broker, partitions })
            .collect()
    }

    /// Whether broker `id` may register from process `incarnation` at `addr`; call
    /// before [`ClusterState::register`]. Kafka's rule: while the id's session is live
    /// and held by another process, a registration is refused, so two processes with
    /// one id cannot steal the registration from each other. Two exceptions keep a
    /// restart after kill -9 working: the same address (the new process has bound the
    /// port, so the old one no longer listens there) is admitted at once, and a fenced
    /// id at once. Otherwise the newcomer hears BROKER_NOT_AVAILABLE (retriable: the
    /// holder may be a dead process whose session has not expired yet) until either the
    /// session expires (a restart: admitted) or its holder heartbeats after the
    /// newcomer's first attempt (alive: DUPLICATE_BROKER_REGISTRATION, final).
    pub fn admit_registration(
        &mut self,
        id: u32,
        addr: &str,
        incarnation: u64,
        now: Instant,
    ) -> Result<(), Rejection> {
        let (Some(b), Some(&last_heartbeat)) = (self.snap.brokers.get(&id), self.live.get(&id))
        else {
            self.claims.remove(&id);
            return Ok(());
        };
        if b.incarnation == incarnation || b.addr == addr {
            self.claims.remove(&id);
            return Ok(());
        }
        let first_refused = match self.claims.get(&id) {
            Some(&(claimant, at)) if claimant == incarnation => at,
            _ => {
                self.claims.insert(id, (incarnation, now));
                now
            }
        };
        if last_heartbeat > first_refused {
            return Err(reject(
                ErrorCode::DuplicateBrokerRegistration,
                format!(
                    "broker id {id} is already registered by a live broker at {} (broker epoch {}, still heartbeating); give this broker another --id, or stop that one first",
                    b.addr, b.epoch
                ),
            ));
        }
        Err(reject(
            ErrorCode::BrokerNotAvailable,
            format!(
                "broker id {id} has a live session from another process at {} (broker epoch {}); waiting for it to expire (a restart) or to heartbeat (a duplicate)",
                b.addr, b.epoch
            ),
        ))
    }

    /// A broker (re)registers; returns its new broker epoch. A retry from the same
    /// process (same incarnation) gets the same epoch.
    pub fn register(
        &mut self,
        id: u32,
        addr: String,
        rack: Option<String>,
        incarnation: u64,
        now: Instant,
    ) -> (i64, Vec<Action>) {
        if let Some(b) = self.snap.brokers.get(&id) {
            if b.incarnation == incarnation && b.addr == addr && self.is_live(id) {
                self.live.insert(id, now);
                let epoch = b.epoch;
                let mine = self.partitions_of(id);
                let mut actions = self.leader_and_isr_for(&mine);
                actions
                    .retain(|a| matches!(a, Action::LeaderAndIsr { broker, .. } if *broker == id));
                actions.push(Action::UpdateMetadataAll);
                return (epoch, actions);
            }
        }
        self.snap.next_broker_epoch += 1;
        self.shutting_down.remove(&id);
        // It gets its full state now; differences are counted afresh.
        self.differs_since.remove(&id);
        self.out_of_step.remove(&id);
        self.resent.remove(&id);
        self.resent_at.remove(&id);
        self.recent_roles.remove(&id);
        self.claims.remove(&id);
        let epoch = self.snap.next_broker_epoch;
        self.snap.brokers.insert(
            id,
            BrokerRecord {
                addr,
                rack,
                epoch,
                incarnation,
                kafka_addr: None,
            },
        );
        self.live.insert(id, now);
        let changed = self.elect_offline_leaders();
        // The registering broker learns all its partitions (it may have restarted);
        // other replicas learn only what changed.
        let mine = self.partitions_of(id);
        let mut actions: Vec<Action> = self
            .leader_and_isr_for(&changed)
            .into_iter()
            .filter(|a| !matches!(a, Action::LeaderAndIsr { broker, .. } if *broker == id))
            .collect();
        actions.extend(
            self.leader_and_isr_for(&mine)
                .into_iter()
                .filter(|a| matches!(a, Action::LeaderAndIsr { broker, .. } if *broker == id)),
        );
        actions.extend(self.grow_offsets_topic());
        actions.push(Action::UpdateMetadataAll);
        (epoch, actions)
    }

    /// Records where `id`'s Kafka listener is (after [`ClusterState::register`], before
    /// its actions are dispatched, so the metadata they carry lists it).
    pub fn set_kafka_addr(&mut self, id: u32, kafka_addr: Option<String>) {
        if let Some(b) = self.snap.brokers.get_mut(&id) {
            b.kafka_addr = kafka_addr;
        }
    }

    /// Every partition's state to its live replicas, and metadata to all: what a newly
    /// elected controller sends so brokers learn its epoch.
    pub fn all_leader_and_isr(&self) -> Vec<Action> {
        let all: Vec<(String, usize)> = self
            .snap
            .topics
            .iter()
            .flat_map(|(name, t)| (0..t.partitions.len()).map(move |i| (name.clone(), i)))
            .collect();
        let mut actions = self.leader_and_isr_for(&all);
        actions.push(Action::UpdateMetadataAll);
        actions
    }

    /// The broker epoch of `id`, if registered.
    pub fn broker_epoch(&self, id: u32) -> Option<i64> {
        self.snap.brokers.get(&id).map(|b| b.epoch)
    }

    pub fn broker_addr(&self, id: u32) -> Option<&str> {
        self.snap.brokers.get(&id).map(|b| b.addr.as_str())
    }

    pub fn controller_id(&self) -> u32 {
        self.controller_id
    }

    fn partitions_of(&self, broker: u32) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (name, t) in &self.snap.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&broker) {
                    out.push((name.clone(), i));
                }
            }
        }
        out
    }

    /// Counts `id` as heard from at `now` if it is live: after a registration whose
    /// processing outlasted part of the session (ten thousand elections), so the clock
    /// starts when the broker gets its answer, not when its request was taken.
    pub fn touch(&mut self, id: u32, now: Instant) {
        if let Some(t) = self.live.get_mut(&id) {
            *t = (*t).max(now);
        }
    }

    /// A heartbeat; a fenced broker or a stale epoch must register again.
    pub fn heartbeat(&mut self, id: u32, epoch: i64, now: Instant) -> Result<(), Rejection> {
        match self.snap.brokers.get(&id) {
            Some(b) if b.epoch == epoch && self.is_live(id) => {
                self.live.insert(id, now);
                Ok(())
            }
            _ => Err(reject(
                ErrorCode::StaleBrokerEpoch,
                format!("broker {id} epoch {epoch} is not current: register again"),
            )),
        }
    }

    /// Fences brokers silent for a session timeout and moves their leaderships.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let expired: Vec<u32> = self
            .live
            .iter()
            .filter(|(_, &t)| now.duration_since(t) > self.session_timeout)
            .map(|(&b, _)| b)
            .collect();
        // A partition without a leader gets one as soon as an ISR member is live again.
        // Not only on registration: a newly elected controller takes every known broker
        // as live, so a broker that was the last ISR member and kept heartbeating through
        // a controller failover never registers again (found by the simulator, seed 97).
        let leaderless = self
            .snap
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .any(|p| p.leader.is_none() && p.isr.iter().any(|r| self.live.contains_key(r)));
        if expired.is_empty() && !leaderless {
            return Vec::new();
        }
        for b in &expired {
            self.live.remove(b);
            tracing::warn!(
                broker = b,
                "broker missed heartbeats for the session timeout: fenced"
            );
        }
        let changed = self.elect_offline_leaders();
        if changed.is_empty() && expired.is_empty() {
            return Vec::new();
        }
        let mut actions = self.leader_and_isr_for(&changed);
        actions.push(Action::UpdateMetadataAll);
        actions
    }

    /// Creates a topic with replicas spread round-robin over live brokers, or placed as
    /// `assignments` says (one replica list per partition; then `partitions` and
    /// `replication_factor` are 0).
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
        topic_id: String,
        assignments: Vec<Vec<u32>>,
    ) -> Result<Vec<Action>, Rejection> {
        validate_topic_name(name)?;
        if self.snap.topics.contains_key(name) {
            return Err(reject(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        if !assignments.is_empty() {
            if partitions != 0 || replication_factor != 0 {
                return Err(reject(
                    ErrorCode::InvalidRequest,
                    "give either replica assignments or a partition count and replication factor, not both",
                ));
            }
            self.check_assignments(&assignments, None)?;
            LogConfig::default()
                .with_overrides(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| reject(ErrorCode::InvalidConfig, e.to_string()))?;
            let parts: Vec<PartitionRecord> =
                assignments.into_iter().map(PartitionRecord::new).collect();
            let n = parts.len();
            self.snap.topics.insert(
                name.to_string(),
                TopicRecord {
                    id: topic_id,
                    configs,
                    partitions: parts,
                },
            );
            let changed: Vec<(String, usize)> = (0..n).map(|i| (name.to_string(), i)).collect();
            let mut actions = self.leader_and_isr_for(&changed);
            actions.push(Action::UpdateMetadataAll);
            return Ok(actions);
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(reject(
                ErrorCode::InvalidPartitions,
                format!("partitions must be 1..={PARTITIONS_MAX}, got {partitions}"),
            ));
        }
        let live = self.live_brokers();
        if replication_factor == 0 || replication_factor as usize > live.len() {
            return Err(reject(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {replication_factor} needs that many live brokers; {} are live", live.len()),
            ));
        }
        LogConfig::default()
            .with_overrides(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| reject(ErrorCode::InvalidConfig, e.to_string()))?;
        let live = self.rack_alternated(live);
        let start = self.snap.topics.len();
        let n = live.len();
        let parts = (0..partitions as usize)
            .map(|p| {
                PartitionRecord::new(
                    (0..replication_factor as usize)
                        .map(|i| live[(start + p + i) % n])
                        .collect(),
                )
            })
            .collect();
        self.snap.topics.insert(
            name.to_string(),
            TopicRecord {
                id: topic_id,
                configs,
                partitions: parts,
            },
        );
        let changed: Vec<(String, usize)> = (0..partitions as usize)
            .map(|i| (name.to_string(), i))
            .collect();
        let mut actions = self.leader_and_isr_for(&changed);
        actions.push(Action::UpdateMetadataAll);
        Ok(actions)
    }

    /// Checks manual replica assignments as Kafka does (INVALID_REPLICA_ASSIGNMENT):
    /// every list non-empty, without duplicates, of one length (`rf` when the topic has
    /// one), naming registered brokers; at most [`PARTITIONS_MAX`] partitions.
    fn check_assignments(&self, lists: &[Vec<u32>], rf: Option<usize>) -> Result<(), Rejection> {
        let bad = |m: String| reject(ErrorCode::InvalidReplicaAssignment, m);
        if lists.len() > PARTITIONS_MAX as usize {
            return Err(reject(
                ErrorCode::InvalidPartitions,
                format!("at most {PARTITIONS_MAX} partitions, got {}", lists.len()),
            ));
        }
        let want = rf.unwrap_or_else(|| lists[0].len());
        for (i, l) in lists.iter().enumerate() {
            if l.is_empty() || l.len() != want {
                return Err(bad(format!(
                    "partition {i}: {} replicas; every partition needs {want}",
                    l.len()
                )));
            }
            let distinct: std::collections::BTreeSet<&u32> = l.iter().collect();
            if distinct.len() != l.len() {
                return Err(bad(format!(
                    "partition {i}: a broker is named twice in {l:?}"
                )));
            }
            if let Some(b) = l.iter().find(|b| !self.snap.brokers.contains_key(b)) {
                return Err(bad(format!("partition {i}: broker {b} is not registered")));
            }
        }
        Ok(())
    }

    /// Grows `topic` to `total` partitions, placed like `create_topic` places them, or
    /// as `assignments` says (one replica list per new partition).
    /// Existing partitions (and so existing keys' placement) are untouched.
    pub fn create_partitions(
        &mut self,
        topic: &str,
        total: u32,
        assignments: Vec<Vec<u32>>,
    ) -> Result<Vec<Action>, Rejection> {
        let live = self.rack_alternated(self.live_brokers());
        let t = self.snap.topics.get(topic).ok_or_else(|| {
            reject(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {topic} does not exist"),
            )
        })?;
        let current = t.partitions.len() as u32;
        if total <= current || total > PARTITIONS_MAX {
            return Err(reject(ErrorCode::InvalidPartitions, format!("{topic} has {current} partitions; the new count must be in {}..={PARTITIONS_MAX}", current + 1)));
        }
        let rf = t.partitions[0].replicas.len();
        if assignments.is_empty() && rf > live.len() {
            return Err(reject(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "{topic} needs {rf} live brokers for new partitions; {} are live",
                    live.len()
                ),
            ));
        }
        if !assignments.is_empty() {
            if assignments.len() != (total - current) as usize {
                return Err(reject(
                    ErrorCode::InvalidReplicaAssignment,
                    format!(
                        "{} replica lists for {} new partitions",
                        assignments.len(),
                        total - current
                    ),
                ));
            }
            self.check_assignments(&assignments, Some(rf))?;
        }
        let n = live.len();
        let t = self.snap.topics.get_mut(topic).expect("checked");
        let mut manual = assignments.into_iter();
        for p in current as usize..total as usize {
            let replicas = manual
                .next()
                .unwrap_or_else(|| (0..rf).map(|i| live[(p + i) % n]).collect());
            t.partitions.push(PartitionRecord::new(replicas));
        }
        let changed: Vec<(String, usize)> = (current as usize..total as usize)
            .map(|i| (topic.to_string(), i))
            .collect();
        let mut actions = self.leader_and_isr_for(&changed);
        actions.push(Action::UpdateMetadataAll);
        Ok(actions)
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<Vec<Action>, Rejection> {
        let t = self.snap.topics.remove(name).ok_or_else(|| {
            reject(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            )
        })?;
        self.record_deletion(name, &t);
        let mut per_broker: BTreeMap<u32, Vec<(String, u32)>> = BTreeMap::new();
        for (i, p) in t.partitions.iter().enumerate() {
            for &r in &p.replicas {
                per_broker
                    .entry(r)
                    .or_default()
                    .push((name.to_string(), i as u32));
            }
        }
        let mut actions: Vec<Action> = per_broker
            .into_iter()
            .map(|(broker, partitions)| Action::StopReplica { broker, partitions })
            .collect();
        actions.push(Action::UpdateMetadataAll);
        Ok(actions)
    }

    pub fn alter_configs(
        &mut self,
        topic: &str,
        set: BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<Vec<Action>, Rejection> {
        let t = self.snap.topics.get(topic).ok_or_else(|| {
            reject(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {topic} does not exist"),
            )
        })?;
        let mut configs = t.configs.clone();
        for k in delete {
            configs.remove(k);
        }
        configs.extend(set);
        LogConfig::default()
            .with_overrides(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| reject(ErrorCode::InvalidConfig, e.to_string()))?;
        let t = self.snap.topics.get_mut(topic).expect("checked");
        t.configs = configs;
        let n = t.partitions.len();
        let changed: Vec<(String, usize)> = (0..n).map(|i| (topic.to_string(), i)).collect();
        let mut actions = self.leader_and_isr_for(&changed);
        actions.push(Action::UpdateMetadataAll);
        Ok(actions)
    }

    /// Adds ACLs (one already there is no change, as in Kafka): each binding's verdict,
    /// in order, and the push of the new set when any was added.
    pub fn create_acls(
        &mut self,
        acls: &[AclBinding],
        verdicts: &mut Vec<Result<(), Rejection>>,
    ) -> Result<Vec<Action>, Rejection> {
        let mut added = false;
        for b in acls {
            match b.validate() {
                Ok(()) => {
                    added |= self.snap.acls.insert(b.clone());
                    verdicts.push(Ok(()));
                }
                Err(e) => verdicts.push(Err(reject(ErrorCode::InvalidRequest, e.to_string()))),
            }
        }
        Ok(if added {
            vec![Action::UpdateMetadataAll]
        } else {
            Vec::new()
        })
    }

    /// Removes the ACLs each filter matches: per filter, its verdict and what it removed.
    pub fn delete_acls(
        &mut self,
        filters: &[AclFilter],
        removed: &mut Vec<Result<Vec<AclBinding>, Rejection>>,
    ) -> Result<Vec<Action>, Rejection> {
        let mut any = false;
        for f in filters {
            if let Err(e) = f.validate() {
                removed.push(Err(reject(ErrorCode::InvalidRequest, e.to_string())));
                continue;
            }
            let gone: Vec<AclBinding> = self
                .snap
                .acls
                .iter()
                .filter(|b| f.matches(b))
                .cloned()
                .collect();
            for b in &gone {
                self.snap.acls.remove(b);
            }
            any |= !gone.is_empty();
            removed.push(Ok(gone));
        }
        Ok(if any {
            vec![Action::UpdateMetadataAll]
        } else {
            Vec::new()
        })
    }

    /// Sets and deletes dynamic configs of a broker (its id, or "" for the cluster-wide
    /// default) or a group: every change is checked first, and none is kept unless all
    /// are valid, as Kafka does per resource.
    pub fn alter_resource_configs(
        &mut self,
        resource_type: i32,
        name: &str,
        set: BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<Vec<Action>, Rejection> {
        use sluice_proto::dynamic_config as dc;
        let bad = |r: dc::Refusal| reject(r.code, r.message);
        dc::check_name(resource_type, name).map_err(bad)?;
        for (k, v) in &set {
            dc::check(resource_type, name, k, v).map_err(bad)?;
        }
        let key = dc::key(resource_type, name);
        let mut configs = self
            .snap
            .resource_configs
            .get(&key)
            .cloned()
            .unwrap_or_default();
        for k in delete {
            configs.remove(k);
        }
        configs.extend(set);
        let before = self.snap.resource_configs.get(&key);
        if before.map_or(configs.is_empty(), |b| *b == configs) {
            return Ok(Vec::new());
        }
        if configs.is_empty() {
            self.snap.resource_configs.remove(&key);
        } else {
            self.snap.resource_configs.insert(key, configs);
        }
        Ok(vec![Action::UpdateMetadataAll])
    }

    /// Every dynamic broker and group config, as pushed to brokers.
    pub fn resource_configs_proto(&self) -> Vec<v1::ResourceConfigs> {
        self.snap
            .resource_configs
            .iter()
            .filter_map(|(k, configs)| {
                let (resource_type, name) = sluice_proto::dynamic_config::parse_key(k)?;
                Some(v1::ResourceConfigs {
                    resource_type,
                    resource_name: name.to_string(),
                    configs: configs.clone().into_iter().collect(),
                })
            })
            .collect()
    }

    /// Every ACL, as pushed to brokers.
    pub fn acls_proto(&self) -> Vec<v1::AclBinding> {
        self.snap.acls.iter().map(AclBinding::to_proto).collect()
    }

    fn broker_infos(&self) -> Vec<v1::BrokerInfo> {
        self.snap
            .brokers
            .iter()
            .map(|(&id, b)| v1::BrokerInfo {
                id,
                addr: b.addr.clone(),
                rack: b.rack.clone().unwrap_or_default(),
                alive: self.is_live(id),
                kafka_addr: b.kafka_addr.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Cluster metadata; `topics` empty means every topic. Unknown topics are listed
    /// with UNKNOWN_TOPIC_OR_PARTITION.
    pub fn metadata(&self, topics: &[String]) -> v1::MetadataResponse {
        let names: Vec<String> = if topics.is_empty() {
            self.snap.topics.keys().cloned().collect()
        } else {
            topics.to_vec()
        };
        let topics = names
            .into_iter()
            .map(|name| match self.snap.topics.get(&name) {
                Some(t) => v1::TopicMetadata {
                    name: name.clone(),
                    error_code: 0,
                    error_message: String::new(),
                    partitions: (0..t.partitions.len())
                        .map(|i| {
                            let s = self.partition_state(&name, t, i);
                            v1::PartitionMetadata {
                                partition: i as u32,
                                error_code: if s.leader < 0 {
                                    ErrorCode::LeaderNotAvailable.code()
                                } else {
                                    0
                                },
                                leader: s.leader,
                                leader_epoch: s.leader_epoch,
                                replicas: s.replicas,
                                isr: s.isr,
                                partition_epoch: s.partition_epoch,
                                adding_replicas: t.partitions[i].adding(),
                                removing_replicas: t.partitions[i].removing(),
                            }
                        })
                        .collect(),
                    configs: t.configs.clone().into_iter().collect(),
                    topic_id: t.id.clone(),
                },
                None => v1::TopicMetadata {
                    error_code: ErrorCode::UnknownTopicOrPartition.code(),
                    error_message: format!("topic {name} does not exist"),
                    name,
                    ..Default::default()
                },
            })
            .collect();
        v1::MetadataResponse {
            brokers: self.broker_infos(),
            topics,
            controller_id: self.controller_id as i32,
            controller_epoch: self.controller_epoch,
        }
    }

    pub fn cluster(&self) -> v1::DescribeClusterResponse {
        v1::DescribeClusterResponse {
            controller_id: self.controller_id as i32,
            controller_epoch: self.controller_epoch,
            brokers: self.broker_infos(),
        }
    }
}

#[path = "elections.rs"]
mod elections;

#[path = "reconcile.rs"]
mod reconcile;

#[path = "deletions.rs"]
pub mod deletions;

#[path = "internal_topic.rs"]
mod internal_topic;
pub use internal_topic::{OFFSETS_REPLICATION_TARGET, OFFSETS_TOPIC};
pub use reconcile::{Reported, RECONCILE_AFTER};

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
