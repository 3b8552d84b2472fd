//! The `Groups` gRPC service: find the coordinator (creating `__consumer_offsets` on
//! first use), heartbeat, commit and fetch offsets, list, describe and delete groups.
//! Thin: each call finds the loaded coordinator of the group's offsets partition
//! ([`super::groups`]) and runs one change or read through its ordered writer, so an
//! answer never reflects a change that is not yet acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::v1::{self, groups_server};
use sluice_proto::ErrorCode;
use tonic::{Request, Response, Status};
use tracing::info;

use super::groups::{
    coordinator_for, led_epoch, load_waiting, now_ms, offsets_partitions, partition_for, Failure,
    OFFSETS_MAX_MESSAGE_BYTES, OFFSETS_TOPIC,
};
use super::Shared;
use crate::group::coordinator::{Coordinator, NewOffset, Write};
use crate::group::state::{AssignorKind, GroupError, Heartbeat};

pub(super) fn group_failure(e: GroupError) -> Failure {
    match e {
        GroupError::FencedMemberEpoch => (
            ErrorCode::FencedMemberEpoch,
            "the member epoch is not current: give up every partition and rejoin".into(),
        ),
        GroupError::UnknownMemberId => (
            ErrorCode::UnknownMemberId,
            "the coordinator does not know this member (it was fenced or left): rejoin".into(),
        ),
        GroupError::UnreleasedInstanceId(m) => (ErrorCode::UnreleasedInstanceId, m),
        GroupError::StaleMemberEpoch => (
            ErrorCode::StaleMemberEpoch,
            "offset commit with an epoch that is not the member's current one".into(),
        ),
        GroupError::NonEmptyGroup => (
            ErrorCode::NonEmptyGroup,
            "the group has members; stop them first".into(),
        ),
        GroupError::GroupIdNotFound => (ErrorCode::GroupIdNotFound, "no such group".into()),
        GroupError::ProducerFenced => (
            ErrorCode::ProducerFenced,
            "a transactional offset commit from a producer epoch that a newer instance fenced"
                .into(),
        ),
        GroupError::InvalidRequest(m) => (ErrorCode::InvalidRequest, m),
        GroupError::GroupMaxSizeReached(max) => (
            ErrorCode::GroupMaxSizeReached,
            format!("the group has {max} members, the most it may have (group.consumer.max.size)"),
        ),
        GroupError::IllegalGeneration => (
            ErrorCode::IllegalGeneration,
            "the generation is not the group's current one: join again".into(),
        ),
        GroupError::RebalanceInProgress => (
            ErrorCode::RebalanceInProgress,
            "the group is rebalancing: join again".into(),
        ),
        GroupError::InconsistentGroupProtocol => (
            ErrorCode::InconsistentGroupProtocol,
            "the group uses another protocol type, protocol, or group protocol (classic or consumer)".into(),
        ),
        GroupError::InvalidSessionTimeout => (
            ErrorCode::InvalidSessionTimeout,
            "the session timeout is outside the broker's group.min/max.session.timeout.ms".into(),
        ),
        GroupError::MemberIdRequired(id) => (ErrorCode::MemberIdRequired, id),
        GroupError::FencedInstanceId => (
            ErrorCode::FencedInstanceId,
            "another process now holds this group.instance.id".into(),
        ),
        GroupError::GroupSubscribedToTopic => (
            ErrorCode::GroupSubscribedToTopic,
            "a member of the group subscribes to the topic: its offsets stay".into(),
        ),
        GroupError::TooManyGroups(max) => (
            ErrorCode::GroupMaxSizeReached,
            format!(
                "this broker coordinates {max} groups, the most it may (GROUPS_PER_BROKER_MAX); \
                 delete unused groups (sluice group delete) or let empty ones expire"
            ),
        ),
    }
}

fn to_tps(parts: &[v1::TopicPartitions]) -> BTreeSet<(String, u32)> {
    parts
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

fn from_tps(tps: &BTreeSet<(String, u32)>) -> Vec<v1::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| v1::TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}

pub(super) fn new_member_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) struct GroupsApi(pub(crate) Arc<Shared>);

/// Runs a change on `group`'s coordinator; the (error code, message) to answer with
/// once what it wrote is acknowledged.
async fn change(
    shared: &Arc<Shared>,
    group: &str,
    op: impl FnOnce(&mut Coordinator) -> Result<Vec<Write>, GroupError>,
) -> (i32, String) {
    let result = match coordinator_for(shared, group).await {
        Ok(loaded) => {
            loaded
                .run(|core| match op(core) {
                    Ok(w) => (Ok(()), w),
                    Err(e) => (Err(group_failure(e)), Vec::new()),
                })
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => (0, String::new()),
        Err((code, msg)) => (code.code(), msg),
    }
}

impl GroupsApi {
    /// Creates `__consumer_offsets` through the controller (compacted, up to three
    /// replicas). Losing a creation race is fine.
    async fn create_offsets_topic(&self) -> Result<(), Failure> {
        let alive = self
            .0
            .metadata
            .read()
            .brokers
            .iter()
            .filter(|b| b.alive)
            .count()
            .max(1) as u32;
        let req = v1::CreateTopicRequest {
            name: OFFSETS_TOPIC.into(),
            partitions: self.0.groups.partitions_on_create,
            replication_factor: alive.min(3),
            configs: [
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), (64u64 << 20).to_string()),
                (
                    "max.message.bytes".to_string(),
                    OFFSETS_MAX_MESSAGE_BYTES.to_string(),
                ),
            ]
            .into(),
            assignments: Vec::new(),
            validate_only: false,
        };
        let resp = <super::admin::AdminProxy as v1::admin_server::Admin>::create_topic(
            &super::admin::AdminProxy(self.0.clone()),
            Request::new(req),
        )
        .await
        .map_err(|s| (ErrorCode::CoordinatorNotAvailable, s.message().to_string()))?
        .into_inner();
        let r = resp.result.unwrap_or_default();
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::None | ErrorCode::TopicAlreadyExists => {
                info!(topic = OFFSETS_TOPIC, "created the offsets topic");
                Ok(())
            }
            code => Err((code, r.error_message)),
        }
    }
}

#[tonic::async_trait]
impl groups_server::Groups for GroupsApi {
    async fn find_coordinator(
        &self,
        req: Request<v1::FindCoordinatorRequest>,
    ) -> Result<Response<v1::FindCoordinatorResponse>, Status> {
        let group = req.into_inner().group_id;
        let mut out = v1::FindCoordinatorResponse {
            node_id: -1,
            ..Default::default()
        };
        if group.is_empty() {
            out.error_code = ErrorCode::InvalidGroupId.code();
            out.error_message = "the group id is empty".into();
            return Ok(Response::new(out));
        }
        let Some(n) = offsets_partitions(&self.0) else {
            let (code, msg) = match self.create_offsets_topic().await {
                Ok(()) => (
                    ErrorCode::CoordinatorNotAvailable,
                    format!("{OFFSETS_TOPIC} is being created"),
                ),
                Err(e) => e,
            };
            out.error_code = if code.is_retriable() {
                code.code()
            } else {
                ErrorCode::CoordinatorNotAvailable.code()
            };
            out.error_message = msg;
            return Ok(Response::new(out));
        };
        let p = partition_for(&group, n);
        let md = self.0.metadata.read();
        let leader = md
            .topics
            .iter()
            .find(|t| t.name == OFFSETS_TOPIC)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .map_or(-1, |x| x.leader);
        match md
            .brokers
            .iter()
            .find(|b| leader >= 0 && b.id == leader as u32)
        {
            Some(b) => {
                out.node_id = leader;
                out.addr = b.addr.clone();
            }
            None => {
                out.error_code = ErrorCode::CoordinatorNotAvailable.code();
                out.error_message = format!("{OFFSETS_TOPIC}-{p} has no leader");
            }
        }
        Ok(Response::new(out))
    }

    async fn heartbeat(
        &self,
        req: Request<v1::GroupHeartbeatRequest>,
    ) -> Result<Response<v1::GroupHeartbeatResponse>, Status> {
        let r = req.into_inner();
        let fail = |(code, msg): Failure| v1::GroupHeartbeatResponse {
            error_code: code.code(),
            error_message: msg,
            member_id: String::new(),
            member_epoch: -1,
            ..Default::default()
        };
        let assignor = match r.server_assignor.as_str() {
            "" => None,
            "uniform" => Some(AssignorKind::Uniform),
            "range" => Some(AssignorKind::Range),
            other => {
                return Ok(Response::new(fail((
                    ErrorCode::InvalidRequest,
                    format!("unknown assignor {other:?}: use uniform or range"),
                ))))
            }
        };
        let loaded = match coordinator_for(&self.0, &r.group_id).await {
            Ok(l) => l,
            Err(e) => return Ok(Response::new(fail(e))),
        };
        let hb = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            instance_id: (!r.instance_id.is_empty()).then_some(r.instance_id),
            topics: r
                .subscription
                .as_ref()
                .map(|s| s.topics.iter().cloned().collect()),
            regex: r
                .subscription
                .as_ref()
                .and_then(|s| (!s.regex.is_empty()).then(|| s.regex.clone())),
            owned: r.owned.as_ref().map(|o| to_tps(&o.partitions)),
            // The group's own `consumer.session.timeout.ms` where the request names none
            // (a Kafka consumer never does).
            session_timeout: (r.session_timeout_ms > 0)
                .then(|| Duration::from_millis(u64::from(r.session_timeout_ms)))
                .or_else(|| {
                    let ms = self
                        .0
                        .group_config_ms(&r.group_id, "consumer.session.timeout.ms")?;
                    Some(Duration::from_millis(ms))
                }),
            rebalance_timeout: (r.rebalance_timeout_ms > 0)
                .then(|| Duration::from_millis(u64::from(r.rebalance_timeout_ms))),
        };
        let group = r.group_id.clone();
        let answer = loaded
            .run(|core| {
                if let Err(e) = self.0.groups.admit(core, &group) {
                    return (Err(group_failure(e)), Vec::new());
                }
                if let Some(kind) = assignor {
                    core.set_assignor_if_empty(&group, kind);
                }
                let (reply, writes) =
                    core.heartbeat(&group, hb, Instant::now(), now_ms(), new_member_id);
                let epoch = core.describe(&group).map_or(-1, |d| d.group_epoch);
                (reply.map(|r| (r, epoch)).map_err(group_failure), writes)
            })
            .await;
        Ok(Response::new(match answer {
            Ok((reply, group_epoch)) => v1::GroupHeartbeatResponse {
                error_code: 0,
                error_message: String::new(),
                member_id: reply.member_id,
                member_epoch: reply.member_epoch,
                // The group's own `consumer.heartbeat.interval.ms` where it has one, as
                // Kafka answers it.
                heartbeat_interval_ms: self
                    .0
                    .group_config_ms(&group, "consumer.heartbeat.interval.ms")
                    .map_or(reply.heartbeat_interval.as_millis() as u32, |ms| ms as u32),
                assignment: from_tps(&reply.assignment),
                group_epoch,
            },
            Err(e) => fail(e),
        }))
    }

    async fn commit_offsets(
        &self,
        req: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let r = req.into_inner();
        let offsets = r
            .partitions
            .into_iter()
            .map(|p| NewOffset {
                tp: (p.topic, p.partition),
                offset: p.offset,
                leader_epoch: p.leader_epoch.unwrap_or(-1),
                metadata: p.metadata,
            })
            .collect::<Vec<_>>();
        let groups = &self.0.groups;
        let (error_code, error_message) = change(&self.0, &r.group_id, |core| {
            groups.admit(core, &r.group_id)?;
            core.commit(&r.group_id, &r.member_id, r.member_epoch, offsets, now_ms())
        })
        .await;
        Ok(Response::new(v1::CommitOffsetsResponse {
            error_code,
            error_message,
        }))
    }

    async fn fetch_offsets(
        &self,
        req: Request<v1::FetchOffsetsRequest>,
    ) -> Result<Response<v1::FetchOffsetsResponse>, Status> {
        let r = req.into_inner();
        let only: Vec<(String, u32)> = to_tps(&r.partitions).into_iter().collect();
        let result = match coordinator_for(&self.0, &r.group_id).await {
            // Through the writer: an answer never shows a commit not yet acknowledged.
            Ok(loaded) => {
                loaded
                    .run(|core| (Ok(core.fetch(&r.group_id, &only)), Vec::new()))
                    .await
            }
            Err(e) => Err(e),
        };
        Ok(Response::new(match result {
            Ok(offsets) => v1::FetchOffsetsResponse {
                error_code: 0,
                error_message: String::new(),
                offsets: offsets
                    .into_iter()
                    .map(|((topic, partition), c)| v1::CommittedOffset {
                        topic,
                        partition,
                        offset: c.as_ref().map_or(-1, |c| c.offset),
                        metadata: c.as_ref().map(|c| c.metadata.clone()).unwrap_or_default(),
                        commit_timestamp_ms: c.as_ref().map_or(-1, |c| c.commit_ms),
                        leader_epoch: c.as_ref().map_or(-1, |c| c.leader_epoch),
                    })
                    .collect(),
            },
            Err((code, msg)) => v1::FetchOffsetsResponse {
                error_code: code.code(),
                error_message: msg,
                offsets: Vec::new(),
            },
        }))
    }

    async fn list_groups(
        &self,
        _req: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        let mut groups = Vec::new();
        for p in 0..offsets_partitions(&self.0).unwrap_or(0) {
            if led_epoch(&self.0, p).is_none() {
                continue;
            }
            let loaded = match load_waiting(&self.0, p).await {
                Ok(l) => l,
                Err((code, msg)) => {
                    return Ok(Response::new(v1::ListGroupsResponse {
                        error_code: code.code(),
                        error_message: msg,
                        groups: Vec::new(),
                    }))
                }
            };
            let core = loaded.core.lock();
            groups.extend(core.list().into_iter().map(|g| v1::GroupListing {
                group_id: g.group_id,
                state: g.state.into(),
                members: g.members as u32,
                coordinator: self.0.config.id as i32,
                group_type: g.kind.name().into(),
            }));
        }
        Ok(Response::new(v1::ListGroupsResponse {
            error_code: 0,
            error_message: String::new(),
            groups,
        }))
    }

    async fn describe_group(
        &self,
        req: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::DescribeGroupResponse>, Status> {
        let group = req.into_inner().group_id;
        let result = match coordinator_for(&self.0, &group).await {
            Ok(loaded) => {
                loaded
                    .run(|core| (Ok(core.describe(&group)), Vec::new()))
                    .await
            }
            Err(e) => Err(e),
        };
        let mut out = v1::DescribeGroupResponse {
            group_id: group.clone(),
            coordinator: self.0.config.id as i32,
            ..Default::default()
        };
        match result {
            Ok(Some(d)) => {
                out.state = d.state.into();
                out.group_type = d.kind.name().into();
                out.group_epoch = d.group_epoch;
                out.assignment_epoch = d.assignment_epoch;
                out.assignor = d.assignor;
                out.members = d
                    .members
                    .into_iter()
                    .map(|m| v1::GroupMember {
                        member_id: m.member_id,
                        instance_id: m.instance_id.unwrap_or_default(),
                        member_epoch: m.epoch,
                        subscribed_topics: m.topics.into_iter().collect(),
                        subscribed_regex: m.regex.unwrap_or_default(),
                        assignment: from_tps(&m.owned),
                        target_assignment: from_tps(&m.target),
                    })
                    .collect();
                out.offsets = d
                    .offsets
                    .into_iter()
                    .map(|((topic, partition), c)| v1::CommittedOffset {
                        topic,
                        partition,
                        offset: c.offset,
                        metadata: c.metadata,
                        commit_timestamp_ms: c.commit_ms,
                        leader_epoch: c.leader_epoch,
                    })
                    .collect();
            }
            Ok(None) => {
                out.state = "dead".into();
                out.error_code = ErrorCode::GroupIdNotFound.code();
                out.error_message = format!("no group {group}");
            }
            Err((code, msg)) => {
                out.error_code = code.code();
                out.error_message = msg;
            }
        }
        Ok(Response::new(out))
    }

    async fn delete_group(
        &self,
        req: Request<v1::DeleteGroupRequest>,
    ) -> Result<Response<v1::DeleteGroupResponse>, Status> {
        let group = req.into_inner().group_id;
        let (error_code, error_message) = change(&self.0, &group, |core| core.delete(&group)).await;
        Ok(Response::new(v1::DeleteGroupResponse {
            error_code,
            error_message,
        }))
    }

    async fn delete_offsets(
        &self,
        req: Request<v1::DeleteOffsetsRequest>,
    ) -> Result<Response<v1::DeleteOffsetsResponse>, Status> {
        let r = req.into_inner();
        let tps: Vec<(String, u32)> = to_tps(&r.partitions).into_iter().collect();
        let result = match coordinator_for(&self.0, &r.group_id).await {
            Ok(loaded) => {
                loaded
                    .run(|core| match core.delete_offsets(&r.group_id, &tps) {
                        Ok((writes, results)) => (Ok(results), writes),
                        Err(e) => (Err(group_failure(e)), Vec::new()),
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        Ok(Response::new(match result {
            Ok(results) => v1::DeleteOffsetsResponse {
                error_code: 0,
                error_message: String::new(),
                partitions: results
                    .into_iter()
                    .map(|((topic, partition), e)| v1::PartitionError {
                        topic,
                        partition,
                        error_code: e.map_or(0, |e| group_failure(e).0.code()),
                    })
                    .collect(),
            },
            Err((code, msg)) => v1::DeleteOffsetsResponse {
                error_code: code.code(),
                error_message: msg,
                partitions: Vec::new(),
            },
        }))
    }
}
