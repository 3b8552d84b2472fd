//! Consumer-group membership on the client side (KIP-848): finding the group's
//! coordinator, the heartbeat task, offset commits and fetches, and the group admin
//! calls (`list`, `describe`, `reset-offsets`, `delete`).
//!
//! The heartbeat task runs beside the application and keeps the coordinator's answer
//! (member id, epoch, the partitions to own) in [`Membership`]; the consumer's `poll`
//! applies it (revoke first, commit what it revokes, then take what is new) and reports
//! what it owns, which the next heartbeat carries. A member that stops polling stops
//! confirming revocations and is fenced by the rebalance timeout, as in Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_proto::v1::{self, groups_client::GroupsClient};
use sluice_proto::{ErrorCode, TopicPartition};
use tokio::sync::{watch, Notify};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::Error;

/// What a consumer subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Topics(Vec<String>),
    /// A regex over topic names, matched against the whole name (Rust `regex` syntax);
    /// topics created later that match are assigned too. Internal `__` topics never are.
    Pattern(String),
}

/// Group settings (Kafka's consumer properties in brackets).
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: a static member keeps its partitions across a restart
    /// within its session timeout.
    pub instance_id: Option<String>,
    /// `session.timeout.ms` for this member; `None`: the broker's default (45 s).
    pub session_timeout: Option<Duration>,
    /// `max.poll.interval.ms`: how long the member may take to give back partitions.
    pub rebalance_timeout: Duration,
    /// `group.remote.assignor`: "uniform" (default) or "range".
    pub assignor: Option<String>,
    /// `auto.commit.interval.ms` (`enable.auto.commit`); `None`: commit by hand.
    pub auto_commit_interval: Option<Duration>,
}

impl GroupOptions {
    pub fn new(group_id: impl Into<String>) -> GroupOptions {
        GroupOptions {
            group_id: group_id.into(),
            instance_id: None,
            session_timeout: None,
            rebalance_timeout: Duration::from_secs(300),
            assignor: None,
            auto_commit_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// A change of the partitions a member owns, reported to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Given back (after their positions were committed, with auto-commit).
    Revoked(Vec<TopicPartition>),
    Assigned(Vec<TopicPartition>),
    /// Taken away without a chance to commit: the member was fenced.
    Lost(Vec<TopicPartition>),
}

/// The coordinator's answer as the heartbeat task last heard it, and what the consumer
/// owns.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    pub member_id: String,
    pub epoch: i32,
    /// The partitions to own now; `None` until the first answer after (re)joining.
    pub target: Option<BTreeSet<TopicPartition>>,
    /// What the consumer owns (reported in heartbeats).
    pub owned: BTreeSet<TopicPartition>,
    /// Fenced: everything owned is lost; the task rejoins.
    pub lost: bool,
    /// A refusal that retrying cannot fix.
    pub fatal: Option<Error>,
}

/// Finds the group's coordinator and calls it, finding it again when it moves.
#[derive(Clone)]
pub(crate) struct CoordinatorLink {
    cluster: Cluster,
    pub group: String,
    addr: Arc<Mutex<Option<String>>>,
}

/// A response with an error code.
pub(crate) trait Coded {
    fn coded(&self) -> (i32, &str);
}
macro_rules! coded {
    ($($t:ty),*) => {$(
        impl Coded for $t {
            fn coded(&self) -> (i32, &str) {
                (self.error_code, &self.error_message)
            }
        }
    )*};
}
coded!(
    v1::GroupHeartbeatResponse,
    v1::CommitOffsetsResponse,
    v1::FetchOffsetsResponse,
    v1::DescribeGroupResponse,
    v1::DeleteGroupResponse,
    v1::DeleteOffsetsResponse
);

fn is_coordinator_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

impl CoordinatorLink {
    pub fn new(cluster: Cluster, group: &str) -> CoordinatorLink {
        CoordinatorLink {
            cluster,
            group: group.to_string(),
            addr: Default::default(),
        }
    }

    /// The coordinator's address, asking any broker (which creates
    /// `__consumer_offsets` on first use); retries until the api timeout.
    async fn find(&self) -> Result<String, Error> {
        if let Some(a) = self.addr.lock().clone() {
            return Ok(a);
        }
        let deadline = tokio::time::Instant::now() + self.cluster.config().api_timeout;
        let mut last = Error::Invalid("no broker address".into());
        loop {
            for addr in self.cluster.any_addresses() {
                let mut client = GroupsClient::new(self.cluster.channel(&addr)?);
                let req = v1::FindCoordinatorRequest {
                    group_id: self.group.clone(),
                };
                match client.find_coordinator(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        if r.error_code == 0 {
                            *self.addr.lock() = Some(r.addr.clone());
                            return Ok(r.addr);
                        }
                        last = Error::broker(r.error_code, r.error_message);
                        if !last.is_retriable() {
                            return Err(last);
                        }
                        break;
                    }
                    Err(s) => last = Error::from_status(&addr, s),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Calls the coordinator with `call`, finding it again (until the api timeout) when
    /// it moved, is loading, or cannot be reached.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        T: Coded,
        F: Fn(GroupsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.cluster.config().api_timeout;
        loop {
            let err = match self.find().await {
                Ok(addr) => {
                    let client = GroupsClient::new(self.cluster.channel(&addr)?);
                    match call(client).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            let (code, msg) = r.coded();
                            let code = ErrorCode::from_code(code);
                            if code == ErrorCode::None {
                                return Ok(r);
                            }
                            if !is_coordinator_error(code) {
                                // The caller reads the code (fencing, stale epochs).
                                return Ok(r);
                            }
                            Error::broker(code.code(), msg)
                        }
                        Err(s) => Error::from_status(&addr, s),
                    }
                }
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            debug!(group = self.group, error = %err, "coordinator call failed; finding it again");
            *self.addr.lock() = None;
            if tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Commits `offsets` as member `member_id` at `epoch` ("" and -1: an admin commit,
    /// only into a group without members).
    pub async fn commit(
        &self,
        member_id: &str,
        epoch: i32,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), Error> {
        let req = v1::CommitOffsetsRequest {
            group_id: self.group.clone(),
            member_id: member_id.to_string(),
            member_epoch: epoch,
            partitions: offsets
                .iter()
                .map(|(tp, o)| v1::OffsetCommitPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *o as i64,
                    metadata: String::new(),
                    leader_epoch: None,
                })
                .collect(),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.commit_offsets(req).await }
            })
            .await?;
        match r.error_code {
            0 => Ok(()),
            code => Err(Error::broker(code, r.error_message)),
        }
    }

    /// Committed offsets (`None`: nothing committed); every committed partition when
    /// `tps` is empty.
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<u64>>, Error> {
        let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in tps {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let req = v1::FetchOffsetsRequest {
            group_id: self.group.clone(),
            partitions: by_topic
                .into_iter()
                .map(|(t, partitions)| v1::TopicPartitions {
                    topic: t.to_string(),
                    partitions,
                })
                .collect(),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.fetch_offsets(req).await }
            })
            .await?;
        if r.error_code != 0 {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        Ok(r.offsets
            .into_iter()
            .map(|o| {
                (
                    TopicPartition::new(o.topic, o.partition),
                    (o.offset >= 0).then_some(o.offset as u64),
                )
            })
            .collect())
    }
}

pub(crate) fn tps_of(parts: &[v1::TopicPartitions]) -> BTreeSet<TopicPartition> {
    parts
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.topic.clone(), *p))
        })
        .collect()
}

fn owned_message(owned: &BTreeSet<TopicPartition>) -> v1::OwnedPartitions {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    v1::OwnedPartitions {
        partitions: by_topic
            .into_iter()
            .map(|(t, partitions)| v1::TopicPartitions {
                topic: t.to_string(),
                partitions,
            })
            .collect(),
    }
}

/// The heartbeat task of one member. Heartbeats every interval the coordinator gives
/// (no more than a third of the session timeout), at once when `wake` is notified
/// (the consumer's ownership changed), and leaves the group when `stop` turns true.
pub(crate) async fn heartbeat_loop(
    link: CoordinatorLink,
    opts: GroupOptions,
    subscription: Subscription,
    state: Arc<Mutex<Membership>>,
    wake: Arc<Notify>,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let (topics, regex) = match &subscription {
        Subscription::Topics(t) => (t.clone(), String::new()),
        Subscription::Pattern(p) => (Vec::new(), p.clone()),
    };
    let cap = opts
        .session_timeout
        .map_or(Duration::from_secs(5), |s| s / 3)
        .max(Duration::from_millis(50));
    let mut interval;
    let mut send_subscription = true;
    loop {
        if *stop.borrow() {
            break;
        }
        let req = {
            let s = state.lock();
            let joining = s.epoch == 0;
            v1::GroupHeartbeatRequest {
                group_id: link.group.clone(),
                member_id: s.member_id.clone(),
                member_epoch: s.epoch,
                instance_id: opts.instance_id.clone().unwrap_or_default(),
                subscription: (joining || send_subscription).then(|| v1::Subscription {
                    topics: topics.clone(),
                    regex: regex.clone(),
                }),
                owned: Some(owned_message(&s.owned)),
                session_timeout_ms: opts
                    .session_timeout
                    .map_or(0, |d| d.as_millis().min(u32::MAX as u128) as u32),
                rebalance_timeout_ms: opts.rebalance_timeout.as_millis().min(u32::MAX as u128)
                    as u32,
                server_assignor: if joining {
                    opts.assignor.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            }
        };
        let answer = tokio::select! {
            r = link.call(|mut c| { let req = req.clone(); async move { c.heartbeat(req).await } }) => r,
            _ = stop.changed() => break,
        };
        match answer {
            Ok(r) if r.error_code == 0 => {
                send_subscription = false;
                interval =
                    Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(1))).min(cap);
                let target = tps_of(&r.assignment);
                let mut s = state.lock();
                let moved = s.target.as_ref() != Some(&target) || s.epoch != r.member_epoch;
                s.member_id = r.member_id;
                s.epoch = r.member_epoch;
                s.target = Some(target);
                if moved {
                    changed.notify_one();
                }
            }
            Ok(r) => match ErrorCode::from_code(r.error_code) {
                ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId => {
                    warn!(
                        group = link.group,
                        error = r.error_message,
                        "fenced; rejoining"
                    );
                    let mut s = state.lock();
                    s.epoch = 0;
                    s.target = None;
                    s.lost = true;
                    send_subscription = true;
                    changed.notify_one();
                    continue;
                }
                _ => {
                    let e = Error::broker(r.error_code, r.error_message);
                    if e.is_retriable() {
                        debug!(group = link.group, error = %e, "heartbeat failed; retrying");
                        interval = Duration::from_millis(100);
                    } else {
                        state.lock().fatal = Some(e);
                        changed.notify_one();
                        return;
                    }
                }
            },
            Err(e) if e.is_retriable() => {
                debug!(group = link.group, error = %e, "heartbeat failed; retrying");
                interval = Duration::from_millis(100);
            }
            Err(e) => {
                state.lock().fatal = Some(e);
                changed.notify_one();
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
    // Leave: -1, or -2 for a static member (its place is kept for its session).
    let (member_id, epoch) = {
        let s = state.lock();
        (s.member_id.clone(), s.epoch)
    };
    if member_id.is_empty() || epoch <= 0 {
        return;
    }
    let leave = v1::GroupHeartbeatRequest {
        group_id: link.group.clone(),
        member_id,
        member_epoch: if opts.instance_id.is_some() { -2 } else { -1 },
        instance_id: opts.instance_id.clone().unwrap_or_default(),
        ..Default::default()
    };
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        link.call(|mut c| {
            let req = leave.clone();
            async move { c.heartbeat(req).await }
        }),
    )
    .await;
    match sent {
        Ok(Ok(r)) if r.error_code == 0 => info!(group = link.group, "left the group"),
        other => debug!(group = link.group, ?other, "leaving the group failed"),
    }
}

/// A group as `sluice group list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// "empty", "assigning", "reconciling" or "stable".
    pub state: String,
    pub members: u32,
    pub coordinator: i32,
}

/// One member as `sluice group describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub member_epoch: i32,
    pub subscribed_topics: Vec<String>,
    pub subscribed_regex: Option<String>,
    /// What it owns now.
    pub assignment: Vec<TopicPartition>,
    /// What it will own once reconciled.
    pub target_assignment: Vec<TopicPartition>,
}

/// One partition's progress in `sluice group describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub tp: TopicPartition,
    pub committed_offset: Option<u64>,
    /// The high watermark; `None` if the leader could not be asked.
    pub end_offset: Option<u64>,
    pub lag: Option<u64>,
    /// The member that owns it now.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub coordinator: i32,
    /// "consumer" (KIP-848), or "classic" (Kafka clients' JoinGroup/SyncGroup: the
    /// generation stands for both epochs, the assignor is the client-side one).
    pub group_type: String,
    pub members: Vec<MemberDescription>,
    /// Partitions with a committed offset or an owner, sorted.
    pub partitions: Vec<PartitionProgress>,
}

/// Where `reset_offsets` moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// Clamped into [log start, high watermark].
    Offset(u64),
    /// The first record at or after this time (ms); the end if none.
    Timestamp(i64),
}

/// One partition of a reset: the offset committed before and the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReset {
    pub tp: TopicPartition,
    pub before: Option<u64>,
    pub after: u64,
}

impl crate::Admin {
    fn link(&self, group: &str) -> CoordinatorLink {
        CoordinatorLink::new(self.cluster.clone(), group)
    }

    /// Every group of the cluster (each broker lists those it coordinates), sorted.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        let md = self.cluster.refresh(&[]).await?;
        let mut out = Vec::new();
        for b in md.brokers.iter().filter(|b| b.alive) {
            let mut c = GroupsClient::new(self.cluster.channel(&b.addr)?);
            match c.list_groups(v1::ListGroupsRequest {}).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.error_code != 0 {
                        // A partial list would hide that broker's groups: fail instead.
                        return Err(Error::broker(
                            r.error_code,
                            format!(
                                "broker {} cannot list its groups: {}",
                                b.id, r.error_message
                            ),
                        ));
                    }
                    out.extend(r.groups.into_iter().map(|g| GroupListing {
                        group_id: g.group_id,
                        state: g.state,
                        members: g.members,
                        coordinator: g.coordinator,
                    }));
                }
                Err(s) => return Err(Error::from_status(&b.addr, s)),
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// A group's state, members and per-partition progress (committed offset, end
    /// offset, lag). GROUP_ID_NOT_FOUND if there is no such group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, Error> {
        let r = self
            .link(group)
            .call(|mut c| {
                let req = v1::DescribeGroupRequest {
                    group_id: group.to_string(),
                };
                async move { c.describe_group(req).await }
            })
            .await?;
        if r.error_code != 0 {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        let members: Vec<MemberDescription> = r
            .members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.member_id,
                instance_id: (!m.instance_id.is_empty()).then_some(m.instance_id),
                member_epoch: m.member_epoch,
                subscribed_topics: m.subscribed_topics,
                subscribed_regex: (!m.subscribed_regex.is_empty()).then_some(m.subscribed_regex),
                assignment: tps_of(&m.assignment).into_iter().collect(),
                target_assignment: tps_of(&m.target_assignment).into_iter().collect(),
            })
            .collect();
        let mut parts: BTreeMap<TopicPartition, PartitionProgress> = BTreeMap::new();
        for o in r.offsets {
            let tp = TopicPartition::new(o.topic, o.partition);
            parts.insert(
                tp.clone(),
                PartitionProgress {
                    tp,
                    committed_offset: (o.offset >= 0).then_some(o.offset as u64),
                    end_offset: None,
                    lag: None,
                    owner: None,
                },
            );
        }
        for m in &members {
            for tp in &m.assignment {
                parts
                    .entry(tp.clone())
                    .or_insert_with(|| PartitionProgress {
                        tp: tp.clone(),
                        committed_offset: None,
                        end_offset: None,
                        lag: None,
                        owner: None,
                    })
                    .owner = Some(m.member_id.clone());
            }
        }
        let topics: BTreeSet<String> = parts.keys().map(|tp| tp.topic.clone()).collect();
        for t in topics {
            let Ok(d) = self.describe_topic(&t).await else {
                continue;
            };
            for p in d.partitions {
                if let Some(pp) = parts.get_mut(&TopicPartition::new(t.clone(), p.partition)) {
                    pp.end_offset = p.high_watermark;
                    pp.lag = match (pp.end_offset, pp.committed_offset) {
                        (Some(end), Some(c)) => Some(end.saturating_sub(c)),
                        // Nothing committed: everything from the log start is to read.
                        (Some(end), None) => p.log_start_offset.map(|s| end.saturating_sub(s)),
                        _ => None,
                    };
                }
            }
        }
        Ok(GroupDescription {
            group_id: r.group_id,
            state: r.state,
            group_epoch: r.group_epoch,
            assignment_epoch: r.assignment_epoch,
            assignor: r.assignor,
            coordinator: r.coordinator,
            group_type: if r.group_type.is_empty() {
                "consumer".into()
            } else {
                r.group_type
            },
            members,
            partitions: parts.into_values().collect(),
        })
    }

    /// Deletes a group without members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), Error> {
        let r = self
            .link(group)
            .call(|mut c| {
                let req = v1::DeleteGroupRequest {
                    group_id: group.to_string(),
                };
                async move { c.delete_group(req).await }
            })
            .await?;
        match r.error_code {
            0 => Ok(()),
            code => Err(Error::broker(code, r.error_message)),
        }
    }

    /// Deletes the group's committed offsets of `partitions` (Kafka's OffsetDelete).
    /// Each partition's answer: `None` when its offset is gone (or there was none), an
    /// error (GROUP_SUBSCRIBED_TO_TOPIC) where a member subscribes to its topic.
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<Error>)>, Error> {
        let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let asked: Vec<v1::TopicPartitions> = by_topic
            .into_iter()
            .map(|(topic, partitions)| v1::TopicPartitions {
                topic: topic.to_string(),
                partitions,
            })
            .collect();
        let r = self
            .link(group)
            .call(|mut c| {
                let req = v1::DeleteOffsetsRequest {
                    group_id: group.to_string(),
                    partitions: asked.clone(),
                };
                async move { c.delete_offsets(req).await }
            })
            .await?;
        if r.error_code != 0 {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        Ok(r.partitions
            .into_iter()
            .map(|p| {
                let error = (p.error_code != 0).then(|| {
                    Error::broker(
                        p.error_code,
                        format!("a member of {group} subscribes to {}", p.topic),
                    )
                });
                (TopicPartition::new(p.topic, p.partition), error)
            })
            .collect())
    }

    /// The group's committed offsets (every partition with one).
    pub async fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, u64>, Error> {
        Ok(self
            .link(group)
            .committed(&[])
            .await?
            .into_iter()
            .filter_map(|(tp, o)| Some((tp, o?)))
            .collect())
    }

    /// Moves the group's offsets of every partition of `topic` to `to`. The group must
    /// have no members (NON_EMPTY_GROUP otherwise); with `dry_run` nothing is changed
    /// and the plan is returned all the same.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        dry_run: bool,
    ) -> Result<Vec<PlannedReset>, Error> {
        let link = self.link(group);
        // The coordinator refuses an actual reset of a group with members; a dry run is
        // refused the same way, so its plan is never one that cannot be carried out.
        match self.describe_group(group).await {
            Ok(g) if !g.members.is_empty() => {
                return Err(Error::broker(
                    ErrorCode::NonEmptyGroup.code(),
                    format!("group {group} has {} active members", g.members.len()),
                ))
            }
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::GroupIdNotFound) => {}
            Err(e) => return Err(e),
        }
        let d = self.describe_topic(topic).await?;
        let current = link.committed(&[]).await?;
        let mut plan = Vec::new();
        for p in &d.partitions {
            let tp = TopicPartition::new(topic, p.partition);
            let (Some(start), Some(end)) = (p.log_start_offset, p.high_watermark) else {
                return Err(Error::broker(
                    ErrorCode::LeaderNotAvailable.code(),
                    format!("cannot read the offsets of {tp} (no leader now); try again shortly"),
                ));
            };
            let after = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(o) => o.clamp(start, end),
                ResetTo::Timestamp(ms) => self.offset_for_time(&tp, ms).await?.unwrap_or(end),
            };
            plan.push(PlannedReset {
                before: current.get(&tp).copied().flatten(),
                tp,
                after,
            });
        }
        if dry_run {
            return Ok(plan);
        }
        let offsets: BTreeMap<TopicPartition, u64> =
            plan.iter().map(|r| (r.tp.clone(), r.after)).collect();
        link.commit("", -1, &offsets).await?;
        Ok(plan)
    }

    /// The first offset with a timestamp at or after `ms`, from the leader.
    async fn offset_for_time(&self, tp: &TopicPartition, ms: i64) -> Result<Option<u64>, Error> {
        let p = self
            .cluster
            .list_offset(&tp.topic, tp.partition, ms)
            .await?;
        Ok((p.offset >= 0).then_some(p.offset as u64))
    }
}
