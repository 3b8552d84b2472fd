//! Operator APIs: OffsetDelete (a group's committed offsets of some partitions),
//! DescribeLogDirs (what this broker stores, and its disk), DescribeProducers (the
//! idempotent producers a partition's leader remembers), and partition reassignments
//! (AlterPartitionReassignments, ListPartitionReassignments: the controller's). Each
//! maps onto the broker's own calls; nothing here keeps state.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeProducersRequest,
    DescribeProducersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, OffsetDeleteRequest, OffsetDeleteResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::v1;
use sluice_proto::v1::admin_server::Admin as _;
use sluice_proto::v1::groups_server::Groups as _;
use sluice_proto::{ErrorCode, TopicPartition};
use tonic::Request;

use super::admin::{result_code, text, unavailable, INVALID_REPLICA_ASSIGNMENT};
use super::apis::{code, name};
use super::groups::{is_known_partition, known_partitions};
use crate::server::admin::AdminProxy;
use crate::server::groups_api::GroupsApi;
use crate::server::Shared;

/// OffsetDelete: partitions the metadata does not know are UNKNOWN_TOPIC_OR_PARTITION
/// and left alone (as Kafka answers); the others go to the group's coordinator, which
/// keeps those of topics a member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC).
pub(super) async fn offset_delete(
    shared: &Arc<Shared>,
    r: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let known = known_partitions(shared);
    let unknown = ErrorCode::UnknownTopicOrPartition.code() as i16;
    let mut asked: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            if is_known_partition(&known, &t.name, p.partition_index) {
                asked
                    .entry(t.name.to_string())
                    .or_default()
                    .push(p.partition_index as u32);
            }
        }
    }
    let partitions = asked
        .into_iter()
        .map(|(topic, partitions)| v1::TopicPartitions { topic, partitions })
        .collect();
    let answer = GroupsApi(shared.clone())
        .delete_offsets(Request::new(v1::DeleteOffsetsRequest {
            group_id: r.group_id.to_string(),
            partitions,
        }))
        .await;
    let (top, by_partition): (i16, BTreeMap<(String, u32), i16>) = match answer {
        Ok(a) => {
            let a = a.into_inner();
            let each = a
                .partitions
                .into_iter()
                .map(|p| ((p.topic, p.partition), code(p.error_code)))
                .collect();
            (code(a.error_code), each)
        }
        Err(_) => (
            ErrorCode::CoordinatorNotAvailable.code() as i16,
            BTreeMap::new(),
        ),
    };
    if top != 0 {
        // A group-level error: Kafka answers it alone.
        return OffsetDeleteResponse::default().with_error_code(top);
    }
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let key = (t.name.to_string(), p.partition_index.max(0) as u32);
                    let error = match by_partition.get(&key) {
                        Some(e) => *e,
                        None if !is_known_partition(&known, &t.name, p.partition_index) => unknown,
                        None => 0,
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

/// DescribeLogDirs: this broker's one data directory with every partition it stores
/// (or those asked for), each with its size and how far its log end is behind its high
/// watermark; from v4 the file system's total and usable bytes.
pub(super) fn describe_log_dirs(
    shared: &Shared,
    r: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect()
    });
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for p in shared.replicas.partitions() {
        let tp = &p.tp;
        if let Some(w) = &wanted {
            if !w
                .get(&tp.topic)
                .is_some_and(|ps| ps.contains(&(tp.partition as i32)))
            {
                continue;
            }
        }
        let lag = p.high_watermark().saturating_sub(p.log.log_end_offset());
        by_topic.entry(tp.topic.to_string()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(tp.partition as i32)
                .with_partition_size(p.log.size_bytes() as i64)
                .with_offset_lag(lag as i64),
        );
    }
    let dir = &shared.config.data_dir;
    let (total, usable) = disk_space(dir).unwrap_or((-1, -1));
    let topics = by_topic
        .into_iter()
        .map(|(t, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(name(&t))
                .with_partitions(partitions)
        })
        .collect();
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// The file system's size and the bytes an unprivileged writer may still use.
fn disk_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `s` is a valid out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let block = s.f_frsize as i64;
    Some((s.f_blocks as i64 * block, s.f_bavail as i64 * block))
}

/// DescribeProducers: per partition, the producer ids its leader remembers with their
/// epoch, last sequence and last append time (this broker's clock). Transactions are
/// not served, so no producer has a coordinator epoch or an open transaction (-1).
pub(super) fn describe_producers(
    shared: &Shared,
    r: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let known = known_partitions(shared);
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let answer = PartitionResponse::default().with_partition_index(p);
                    if !is_known_partition(&known, &t.name, p) {
                        return answer
                            .with_error_code(ErrorCode::UnknownTopicOrPartition.code() as i16);
                    }
                    let tp = TopicPartition::new(t.name.as_str(), p as u32);
                    let open: std::collections::HashMap<i64, u64> = shared
                        .replicas
                        .open_transactions(&tp)
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    match shared.replicas.describe_producers(&tp) {
                        Ok(views) => answer.with_active_producers(
                            views
                                .into_iter()
                                .map(|v| {
                                    let start = open.get(&v.producer_id).map_or(-1, |o| *o as i64);
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(v.producer_id))
                                        .with_producer_epoch(v.epoch as i32)
                                        .with_last_sequence(v.last_sequence)
                                        .with_last_timestamp(v.last_append_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(start)
                                })
                                .collect(),
                        ),
                        // Known to the cluster but not led here (or not hosted).
                        Err((e, msg)) => {
                            let e = if e == ErrorCode::UnknownTopicOrPartition {
                                ErrorCode::NotLeaderOrFollower
                            } else {
                                e
                            };
                            answer
                                .with_error_code(e.code() as i16)
                                .with_error_message(Some(StrBytes::from_string(msg)))
                        }
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// AlterPartitionReassignments: each partition through the controller's reassignment
/// (the new replicas join and catch up, then the old ones go); null replicas cancel
/// the one in progress (NO_REASSIGNMENT_IN_PROGRESS when there is none). A change of
/// the replica count is allowed, as v0 and Kafka's default for v1 allow it.
pub(super) async fn alter_partition_reassignments(
    proxy: &AdminProxy,
    r: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::new();
    for t in r.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let replicas: Vec<u32> = p
                .replicas
                .iter()
                .flatten()
                .map(|b| b.0.max(0) as u32)
                .collect();
            // Kafka answers every bad replica list (empty, repeated, unknown or dead
            // brokers) INVALID_REPLICA_ASSIGNMENT.
            let (code, message) = if p.replicas.as_ref().is_some_and(|r| r.is_empty()) {
                (
                    INVALID_REPLICA_ASSIGNMENT,
                    "a partition needs at least one replica".to_string(),
                )
            } else {
                match proxy
                    .reassign_partition(Request::new(v1::ReassignPartitionRequest {
                        topic: t.name.to_string(),
                        partition: p.partition_index.max(0) as u32,
                        replicas,
                    }))
                    .await
                {
                    Ok(r) => match result_code(r.get_ref()) {
                        (c, m) if c == ErrorCode::InvalidReplicationFactor.code() as i16 => {
                            (INVALID_REPLICA_ASSIGNMENT, m)
                        }
                        other => other,
                    },
                    Err(status) => unavailable(&status),
                }
            };
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(text(message)),
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(r.allow_replication_factor_change)
        .with_responses(responses)
}

/// ListPartitionReassignments: the controller's partitions with a reassignment in
/// progress (all, or those named), with the replicas being added and removed.
pub(super) async fn list_partition_reassignments(
    proxy: &AdminProxy,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let asked: Option<BTreeMap<String, Vec<i32>>> = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let names: Vec<String> = asked
        .as_ref()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    let md = match proxy
        .describe_topics(Request::new(v1::MetadataRequest { topics: names }))
        .await
    {
        Ok(md) => md.into_inner(),
        Err(status) => {
            let (code, message) = unavailable(&status);
            return ListPartitionReassignmentsResponse::default()
                .with_error_code(code)
                .with_error_message(text(message));
        }
    };
    let brokers = |ids: &[u32]| ids.iter().map(|b| BrokerId(*b as i32)).collect();
    let topics = md
        .topics
        .into_iter()
        .filter_map(|t| {
            let partitions: Vec<OngoingPartitionReassignment> = t
                .partitions
                .iter()
                .filter(|p| !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty())
                .filter(|p| {
                    asked.as_ref().is_none_or(|a| {
                        a.get(&t.name)
                            .is_some_and(|ps| ps.contains(&(p.partition as i32)))
                    })
                })
                .map(|p| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p.partition as i32)
                        .with_replicas(brokers(&p.replicas))
                        .with_adding_replicas(brokers(&p.adding_replicas))
                        .with_removing_replicas(brokers(&p.removing_replicas))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(name(&t.name))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
