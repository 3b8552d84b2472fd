//! Producer ids and consumer groups over the Kafka protocol: InitProducerId (the
//! controller's, through the admin proxy), FindCoordinator, OffsetCommit, OffsetFetch
//! and KIP-848's ConsumerGroupHeartbeat, each mapped onto the gRPC service's own code
//! (`server::admin::AdminProxy`, `server::groups_api::GroupsApi`): one coordinator and one
//! `__consumer_offsets` whichever protocol a client speaks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member,
    TopicPartitions as DescribedPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as AssignedPartitions,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, InitProducerIdRequest, InitProducerIdResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::v1;
use sluice_proto::v1::admin_server::Admin as _;
use sluice_proto::v1::groups_server::Groups as _;
use sluice_proto::ErrorCode;
use tonic::Request;

use super::apis::{code, name};
use crate::server::admin::AdminProxy;
use crate::server::groups_api::GroupsApi;
use crate::server::Shared;

/// Kafka's INVALID_REQUEST: what a transactional id or a transaction coordinator gets
/// (transactions are not served).
const INVALID_REQUEST: i16 = 42;

fn text(s: String) -> Option<StrBytes> {
    (!s.is_empty()).then(|| StrBytes::from_string(s))
}

/// InitProducerId: a fresh producer id from the controller for an idempotent producer.
/// A transactional id is refused (no transactions); a known producer id asking for an
/// epoch bump (KIP-360) gets a fresh id, which an idempotent producer accepts as a reset.
pub(crate) async fn init_producer_id(
    shared: &Arc<Shared>,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |c: i16| producer_id_response(c, -1, -1);
    if let Some(txn_id) = r.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        return super::txn::init_producer_id(shared, txn_id, &r).await;
    }
    match AdminProxy(shared.clone())
        .init_producer_id(Request::new(v1::InitProducerIdRequest {}))
        .await
    {
        Ok(resp) => {
            let resp = resp.into_inner();
            let result = resp.result.unwrap_or_default();
            if result.error_code != 0 {
                return fail(code(result.error_code));
            }
            producer_id_response(
                0,
                resp.producer_id,
                i16::try_from(resp.producer_epoch).unwrap_or(0),
            )
        }
        // No controller reachable: retriable for the client.
        Err(_) => fail(ErrorCode::CoordinatorNotAvailable.code() as i16),
    }
}

pub(crate) fn producer_id_response(error: i16, id: i64, epoch: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}

/// One group's coordinator as Kafka names it: (error, message, node, host, port).
async fn coordinator(shared: &Arc<Shared>, group: String) -> Found {
    let none = |c: i32, m: String| (code(c), text(m), -1, StrBytes::default(), -1);
    let found = match GroupsApi(shared.clone())
        .find_coordinator(Request::new(v1::FindCoordinatorRequest { group_id: group }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            return none(
                ErrorCode::CoordinatorNotAvailable.code(),
                s.message().to_string(),
            )
        }
    };
    if found.error_code != 0 {
        return none(found.error_code, found.error_message);
    }
    let kafka_addr = shared
        .metadata
        .read()
        .brokers
        .iter()
        .find(|b| b.id as i32 == found.node_id)
        .map(|b| b.kafka_addr.clone())
        .unwrap_or_default();
    let parsed = kafka_addr.rsplit_once(':').and_then(|(host, port)| {
        Some((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.parse::<i32>().ok()?,
        ))
    });
    match parsed {
        Some((host, port)) => (0, None, found.node_id, StrBytes::from_string(host), port),
        None => none(
            ErrorCode::CoordinatorNotAvailable.code(),
            format!(
                "the coordinator, broker {}, has no Kafka listener",
                found.node_id
            ),
        ),
    }
}

/// FindCoordinator: the broker leading the group's `__consumer_offsets` partition, as
/// the gRPC service finds it (creating the topic on first use), with its Kafka address.
pub(crate) async fn find_coordinator(
    shared: &Arc<Shared>,
    version: i16,
    r: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        r.coordinator_keys
    } else {
        vec![r.key]
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        // Groups (0) and transactional ids (1) hash to `__consumer_offsets` alike.
        let answer = if r.key_type > 1 {
            (
                INVALID_REQUEST,
                Some(StrBytes::from_static_str(
                    "unknown coordinator key type (0: group, 1: transaction)",
                )),
                -1,
                StrBytes::default(),
                -1,
            )
        } else {
            coordinator(shared, key.to_string()).await
        };
        found.push((key, answer));
    }
    find_coordinator_response(version, found)
}

/// One key's answer: (error, message, node, host, port).
pub(crate) type Found = (i16, Option<StrBytes>, i32, StrBytes, i32);

/// The FindCoordinator answer for `version` (v4+: one per key; before: the only key's).
pub(crate) fn find_coordinator_response(
    version: i16,
    mut found: Vec<(StrBytes, Found)>,
) -> FindCoordinatorResponse {
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(
            found
                .into_iter()
                .map(|(key, (error, message, node, host, port))| {
                    Coordinator::default()
                        .with_key(key)
                        .with_error_code(error)
                        .with_error_message(message)
                        .with_node_id(BrokerId(node))
                        .with_host(host)
                        .with_port(port)
                })
                .collect(),
        );
    }
    let Some((_, (error, message, node, host, port))) = found.pop() else {
        return FindCoordinatorResponse::default();
    };
    let mut out = FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_node_id(BrokerId(node))
        .with_host(host)
        .with_port(port);
    if version >= 1 {
        out.error_message = message;
    }
    out
}

/// OffsetCommit: the coordinator's commit, all partitions or none (one error for each).
/// Generation -1 with no member id is a simple consumer's (or an admin's) commit,
/// accepted while the group has no members; otherwise the member id and epoch must be
/// the member's current ones (STALE_MEMBER_EPOCH / UNKNOWN_MEMBER_ID), as for a native
/// commit. Leader epochs are not kept.
/// OffsetCommit, with Kafka's checks before the coordinator's: a partition this
/// broker's metadata does not know is answered UNKNOWN_TOPIC_OR_PARTITION and not
/// committed (the others are); a commit naming a generation, or into a group that has
/// members, without a member id is UNKNOWN_MEMBER_ID (only an empty group takes a
/// simple consumer's or an admin's commit, generation -1).
/// Every topic this broker's metadata knows, with its partition count.
pub(crate) fn known_partitions(shared: &Shared) -> BTreeMap<String, usize> {
    shared
        .metadata
        .read()
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| (t.name.clone(), t.partitions.len()))
        .collect()
}

pub(crate) fn is_known_partition(known: &BTreeMap<String, usize>, topic: &str, p: i32) -> bool {
    usize::try_from(p).is_ok_and(|p| known.get(topic).is_some_and(|n| p < *n))
}

pub(crate) async fn offset_commit(
    shared: &Arc<Shared>,
    r: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let known = known_partitions(shared);
    let is_known = |topic: &str, p: i32| is_known_partition(&known, topic, p);
    let partitions: Vec<v1::OffsetCommitPartition> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| is_known(t.name.0.as_str(), p.partition_index))
                .map(|p| v1::OffsetCommitPartition {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index.max(0) as u32,
                    offset: p.committed_offset,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    leader_epoch: Some(p.committed_leader_epoch).filter(|e| *e >= 0),
                })
        })
        .collect();
    let unknown_member = ErrorCode::UnknownMemberId.code() as i16;
    let error = if partitions.is_empty() {
        0
    } else if r.member_id.is_empty() && r.generation_id_or_member_epoch >= 0 {
        unknown_member
    } else {
        match GroupsApi(shared.clone())
            .commit_offsets(Request::new(v1::CommitOffsetsRequest {
                group_id: r.group_id.0.to_string(),
                member_id: r.member_id.to_string(),
                member_epoch: r.generation_id_or_member_epoch,
                partitions,
            }))
            .await
        {
            // Sluice's own clients are told the group has members; Kafka's expect this
            Ok(resp) if resp.get_ref().error_code == ErrorCode::NonEmptyGroup.code() => {
                unknown_member
            }
            Ok(resp) => code(resp.into_inner().error_code),
            Err(_) => ErrorCode::CoordinatorNotAvailable.code() as i16,
        }
    };
    let mut answer = offset_commit_response(&r, error);
    let unknown = ErrorCode::UnknownTopicOrPartition.code() as i16;
    for t in &mut answer.topics {
        for p in &mut t.partitions {
            if !is_known(t.name.0.as_str(), p.partition_index) {
                p.error_code = unknown;
            }
        }
    }
    answer
}

/// Every partition of the commit `r` answered with `error`.
pub(crate) fn offset_commit_response(r: &OffsetCommitRequest, error: i16) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// One group's committed offsets: (error, topic → [(partition, offset, metadata)]).
/// `only` empty: every partition with a committed offset.
async fn fetch_group(
    shared: &Arc<Shared>,
    group: String,
    only: Vec<v1::TopicPartitions>,
) -> (i16, Fetched) {
    let mut out = Fetched::new();
    let fetched = match GroupsApi(shared.clone())
        .fetch_offsets(Request::new(v1::FetchOffsetsRequest {
            group_id: group,
            partitions: only,
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(_) => return (ErrorCode::CoordinatorNotAvailable.code() as i16, out),
    };
    if fetched.error_code != 0 {
        return (code(fetched.error_code), out);
    }
    for c in fetched.offsets {
        out.entry(c.topic).or_default().push((
            c.partition as i32,
            c.offset,
            c.leader_epoch,
            c.metadata,
        ));
    }
    (0, out)
}

/// One group's committed offsets by topic: (partition, offset, leader epoch, metadata).
pub(crate) type Fetched = BTreeMap<String, Vec<(i32, i64, i32, String)>>;

/// OffsetFetch: the coordinator's committed offsets (-1: none). v8+ asks for several
/// groups at once. The member id and epoch of v9 are not checked (any reader may read).
pub(crate) async fn offset_fetch(
    shared: &Arc<Shared>,
    version: i16,
    r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    fn wanted(topics: impl Iterator<Item = (String, Vec<i32>)>) -> Vec<v1::TopicPartitions> {
        topics
            .map(|(topic, parts)| v1::TopicPartitions {
                topic,
                partitions: parts.into_iter().map(|p| p.max(0) as u32).collect(),
            })
            .collect()
    }
    let asked: Vec<(GroupId, Vec<v1::TopicPartitions>)> = if version >= 8 {
        r.groups
            .into_iter()
            .map(|g| {
                let only = wanted(
                    g.topics
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes)),
                );
                (g.group_id, only)
            })
            .collect()
    } else {
        let only = wanted(
            r.topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes)),
        );
        vec![(r.group_id, only)]
    };
    let mut answers = Vec::with_capacity(asked.len());
    let mut unstable = Vec::new();
    for (group, only) in asked {
        let (error, found) = fetch_group(shared, group.0.to_string(), only).await;
        if r.require_stable && error == 0 {
            let pending = crate::server::txn::pending_commits(shared, &group)
                .await
                .unwrap_or_default();
            unstable.push(pending);
        } else {
            unstable.push(Default::default());
        }
        answers.push((group, error, found));
    }
    let mut out = offset_fetch_response(version, answers);
    mark_unstable(&mut out, &unstable);
    out
}

/// `require_stable` (v7+): a partition whose transactional commit awaits its marker is
/// answered UNSTABLE_OFFSET_COMMIT (the client asks again) instead of an offset.
fn mark_unstable(out: &mut OffsetFetchResponse, unstable: &[BTreeSet<(String, u32)>]) {
    let code = ErrorCode::UnstableOffsetCommit.code() as i16;
    let is = |set: &BTreeSet<(String, u32)>, t: &str, p: i32| {
        p >= 0 && set.contains(&(t.to_string(), p as u32))
    };
    if !out.groups.is_empty() {
        for (g, set) in out.groups.iter_mut().zip(unstable) {
            for t in &mut g.topics {
                for p in &mut t.partitions {
                    if is(set, &t.name, p.partition_index) {
                        p.error_code = code;
                        p.committed_offset = -1;
                    }
                }
            }
        }
        return;
    }
    let Some(set) = unstable.first() else { return };
    for t in &mut out.topics {
        for p in &mut t.partitions {
            if is(set, &t.name, p.partition_index) {
                p.error_code = code;
                p.committed_offset = -1;
            }
        }
    }
}

/// The OffsetFetch answer for `version`: v8+ one entry per group; before, the only
/// group's partitions (v1: its error on each partition, v2–7: at the top).
pub(crate) fn offset_fetch_response(
    version: i16,
    mut answers: Vec<(GroupId, i16, Fetched)>,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = answers
            .into_iter()
            .map(|(group, error, found)| {
                OffsetFetchResponseGroup::default()
                    .with_group_id(group)
                    .with_error_code(error)
                    .with_topics(
                        found
                            .into_iter()
                            .map(|(topic, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(name(&topic))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, offset, epoch, metadata)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(StrBytes::from_string(
                                                        metadata,
                                                    )))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let Some((_, error, found)) = answers.pop() else {
        return OffsetFetchResponse::default();
    };
    let topics = found
        .into_iter()
        .map(|(topic, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(name(&topic))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, offset, epoch, metadata)| {
                            let mut answer = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(StrBytes::from_string(metadata)));
                            if version >= 5 {
                                answer.committed_leader_epoch = epoch;
                            }
                            // v1 has no top-level error: every partition carries it.
                            if version < 2 {
                                answer.error_code = error;
                            }
                            answer
                        })
                        .collect(),
                )
        })
        .collect();
    let mut out = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        out.error_code = error;
    }
    out
}

/// ConsumerGroupHeartbeat (KIP-848): the native coordinator's heartbeat, which is the
/// same protocol (server-side assignment, member epochs, 0 to join, -1/-2 to leave).
/// Partitions travel as topic ids here and as names there: they are mapped through
/// this broker's metadata. A v1 member's own id (KIP-1082) is kept when it joins.
pub(crate) async fn consumer_group_heartbeat(
    shared: &Arc<Shared>,
    r: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let (by_id, by_name) = topic_ids(shared);
    let subscription = match (&r.subscribed_topic_names, &r.subscribed_topic_regex) {
        (None, None) => None,
        (names, regex) => Some(v1::Subscription {
            topics: names.iter().flatten().map(|n| n.0.to_string()).collect(),
            regex: regex.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        }),
    };
    let owned = r.topic_partitions.as_ref().map(|tps| v1::OwnedPartitions {
        partitions: tps
            .iter()
            .filter_map(|tp| {
                Some(v1::TopicPartitions {
                    topic: by_id.get(&tp.topic_id)?.clone(),
                    partitions: tp.partitions.iter().map(|p| (*p).max(0) as u32).collect(),
                })
            })
            .collect(),
    });
    let reply = GroupsApi(shared.clone())
        .heartbeat(Request::new(v1::GroupHeartbeatRequest {
            group_id: r.group_id.0.to_string(),
            member_id: r.member_id.to_string(),
            member_epoch: r.member_epoch,
            instance_id: r.instance_id.map(|i| i.to_string()).unwrap_or_default(),
            subscription,
            owned,
            session_timeout_ms: 0,
            rebalance_timeout_ms: r.rebalance_timeout_ms.max(0) as u32,
            server_assignor: r.server_assignor.map(|a| a.to_string()).unwrap_or_default(),
        }))
        .await;
    let reply = match reply {
        Ok(r) => r.into_inner(),
        Err(s) => {
            return ConsumerGroupHeartbeatResponse::default()
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code() as i16)
                .with_error_message(text(s.message().to_string()))
                .with_member_epoch(-1)
        }
    };
    heartbeat_response(reply, r.member_epoch < 0, &by_name)
}

/// The ConsumerGroupHeartbeat answer from the native one (`leaving`: no assignment).
pub(crate) fn heartbeat_response(
    reply: v1::GroupHeartbeatResponse,
    leaving: bool,
    by_name: &BTreeMap<String, uuid::Uuid>,
) -> ConsumerGroupHeartbeatResponse {
    if reply.error_code != 0 {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code(reply.error_code))
            .with_error_message(text(reply.error_message))
            .with_member_epoch(-1);
    }
    let assignment = (!leaving).then(|| {
        Assignment::default().with_topic_partitions(
            reply
                .assignment
                .iter()
                .filter_map(|t| {
                    Some(
                        AssignedPartitions::default()
                            .with_topic_id(*by_name.get(&t.topic)?)
                            .with_partitions(t.partitions.iter().map(|p| *p as i32).collect()),
                    )
                })
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_member_id(text(reply.member_id))
        .with_member_epoch(reply.member_epoch)
        .with_heartbeat_interval_ms(reply.heartbeat_interval_ms as i32)
        .with_assignment(assignment)
}

/// This broker's topic ids, both ways.
pub(crate) fn topic_ids(
    shared: &Arc<Shared>,
) -> (BTreeMap<uuid::Uuid, String>, BTreeMap<String, uuid::Uuid>) {
    let md = shared.metadata.read();
    let pairs: Vec<(uuid::Uuid, String)> = md
        .topics
        .iter()
        .filter_map(|t| Some((uuid::Uuid::try_parse(&t.topic_id).ok()?, t.name.clone())))
        .collect();
    (
        pairs.iter().cloned().collect(),
        pairs.into_iter().map(|(id, n)| (n, id)).collect(),
    )
}

/// Creates `topic` for a Metadata request (`auto.create.topics.enable`) through the
/// controller, as `sluice topic create` would with the defaults: `partitions`
/// (`num.partitions`) and three replicas, or every live broker when fewer. The answer
/// for the topic in this Metadata response: LEADER_NOT_AVAILABLE while it is being
/// created (the client asks again), or why it cannot be.
pub(crate) async fn auto_create(
    shared: &Arc<Shared>,
    topic: &str,
    partitions: u32,
) -> (i32, String) {
    let replication_factor = super::admin::default_replication_factor(shared);
    let created = AdminProxy(shared.clone())
        .create_topic(Request::new(v1::CreateTopicRequest {
            name: topic.to_string(),
            partitions,
            replication_factor,
            configs: Default::default(),
            assignments: Vec::new(),
            validate_only: false,
        }))
        .await;
    match created {
        Ok(r) => {
            let result = r.into_inner().result.unwrap_or_default();
            match ErrorCode::from_code(result.error_code) {
                ErrorCode::None | ErrorCode::TopicAlreadyExists => (
                    ErrorCode::LeaderNotAvailable.code(),
                    format!("topic {topic} is being created"),
                ),
                _ => (result.error_code, result.error_message),
            }
        }
        Err(s) => (
            ErrorCode::LeaderNotAvailable.code(),
            format!("topic {topic} could not be created yet: {}", s.message()),
        ),
    }
}

/// ConsumerGroupDescribe (KIP-848): the native coordinator's description of each group,
/// as `sluice group describe` shows it. Client ids and hosts are not kept (empty).
pub(crate) async fn consumer_group_describe(
    shared: &Arc<Shared>,
    version: i16,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let (_, by_name) = topic_ids(shared);
    let mut described = Vec::with_capacity(r.group_ids.len());
    for group in r.group_ids {
        let d = match GroupsApi(shared.clone())
            .describe_group(Request::new(v1::DescribeGroupRequest {
                group_id: group.0.to_string(),
            }))
            .await
        {
            // As Kafka: a classic group is not described here (clients fall back to
            // DescribeGroups).
            Ok(d) if d.get_ref().group_type == "classic" => v1::DescribeGroupResponse {
                error_code: ErrorCode::GroupIdNotFound.code(),
                error_message: format!("Group {} is not a consumer group.", group.0),
                ..Default::default()
            },
            Ok(d) => d.into_inner(),
            Err(s) => v1::DescribeGroupResponse {
                error_code: ErrorCode::CoordinatorNotAvailable.code(),
                error_message: s.message().to_string(),
                ..Default::default()
            },
        };
        described.push((group, d));
    }
    consumer_group_describe_response(version, described, &by_name)
}

/// The ConsumerGroupDescribe answer from native descriptions.
pub(crate) fn consumer_group_describe_response(
    version: i16,
    described: Vec<(GroupId, v1::DescribeGroupResponse)>,
    by_name: &BTreeMap<String, uuid::Uuid>,
) -> ConsumerGroupDescribeResponse {
    let assignment = |tps: &[v1::TopicPartitions]| {
        DescribedAssignment::default().with_topic_partitions(
            tps.iter()
                .filter_map(|t| {
                    Some(
                        DescribedPartitions::default()
                            .with_topic_id(*by_name.get(&t.topic)?)
                            .with_topic_name(name(&t.topic))
                            .with_partitions(t.partitions.iter().map(|p| *p as i32).collect()),
                    )
                })
                .collect(),
        )
    };
    let groups = described
        .into_iter()
        .map(|(group, d)| {
            if d.error_code != 0 {
                return DescribedGroup::default()
                    .with_group_id(group)
                    .with_error_code(code(d.error_code))
                    .with_error_message(text(d.error_message));
            }
            // Kafka's state names: Empty, Assigning, Reconciling, Stable, Dead.
            let mut state = d.state.clone();
            if let Some(first) = state.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            DescribedGroup::default()
                .with_group_id(group)
                .with_group_state(StrBytes::from_string(state))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(StrBytes::from_string(d.assignor.clone()))
                .with_members(
                    d.members
                        .iter()
                        .map(|m| {
                            let mut member = Member::default()
                                .with_member_id(StrBytes::from_string(m.member_id.clone()))
                                .with_instance_id(text(m.instance_id.clone()))
                                .with_member_epoch(m.member_epoch)
                                .with_subscribed_topic_names(
                                    m.subscribed_topics.iter().map(|t| name(t)).collect(),
                                )
                                .with_subscribed_topic_regex(text(m.subscribed_regex.clone()))
                                .with_assignment(assignment(&m.assignment))
                                .with_target_assignment(assignment(&m.target_assignment));
                            if version >= 1 {
                                member.member_type = 1; // a consumer-protocol member
                            }
                            member
                        })
                        .collect(),
                )
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// Kafka's name for a native group state ("stable" → "Stable").
fn kafka_state(state: &str) -> String {
    let mut c = state.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// ListGroups: the groups this broker coordinates (as in Kafka, a client asks every
/// broker), of both types (consumer, classic); v4 filters by state, v5 by type.
pub(crate) async fn list_groups(
    shared: &Arc<Shared>,
    version: i16,
    r: kafka_protocol::messages::ListGroupsRequest,
) -> kafka_protocol::messages::ListGroupsResponse {
    use kafka_protocol::messages::list_groups_response::ListedGroup;
    use kafka_protocol::messages::{GroupId, ListGroupsResponse};
    let listed = match GroupsApi(shared.clone())
        .list_groups(Request::new(v1::ListGroupsRequest {}))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(_) => {
            return ListGroupsResponse::default()
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code() as i16)
        }
    };
    if listed.error_code != 0 {
        return ListGroupsResponse::default().with_error_code(code(listed.error_code));
    }
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = r.types_filter.iter().map(|t| t.to_lowercase()).collect();
    let groups = listed
        .groups
        .into_iter()
        .map(|g| (kafka_state(&g.state), g))
        .filter(|(state, g)| {
            (types.is_empty() || types.contains(&g.group_type))
                && (states.is_empty() || states.contains(&state.to_lowercase()))
        })
        .map(|(state, g)| {
            // Both kinds carry consumers' protocol type (the classic protocol's own
            // type is not listed here).
            let mut out = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_static_str("consumer"));
            if version >= 4 {
                out.group_state = StrBytes::from_string(state);
            }
            if version >= 5 {
                out.group_type = StrBytes::from_string(g.group_type);
            }
            out
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: each group through its coordinator's delete (NON_EMPTY_GROUP while it
/// has members, GROUP_ID_NOT_FOUND for an unknown one, NOT_COORDINATOR elsewhere).
pub(crate) async fn delete_groups(
    shared: &Arc<Shared>,
    r: kafka_protocol::messages::DeleteGroupsRequest,
) -> kafka_protocol::messages::DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    use kafka_protocol::messages::DeleteGroupsResponse;
    let mut results = Vec::new();
    for g in r.groups_names {
        let error = match GroupsApi(shared.clone())
            .delete_group(Request::new(v1::DeleteGroupRequest {
                group_id: g.0.to_string(),
            }))
            .await
        {
            Ok(r) => code(r.get_ref().error_code),
            Err(_) => ErrorCode::CoordinatorNotAvailable.code() as i16,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(error),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
