//! Authorization of the APIs whose checks Kafka makes per resource inside a request (its
//! `KafkaApis` and `AuthHelper`): the config APIs, the offset APIs, FindCoordinator,
//! ListGroups, OffsetForLeaderEpoch, ConsumerGroupDescribe, the transaction APIs, the
//! reassignment APIs, ElectLeaders, DescribeLogDirs and DescribeProducers (docs/authorization.md has the table). [`before`] runs on the
//! decoded request: it refuses a request whole, or takes the denied resources out of it
//! (nothing is done for them) and remembers their answers; [`After::apply`] then puts
//! those answers into the response, and filters what a read-only answer may not show.
//! Without `--authorizer` both do nothing.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_proto::acl::{op, resource, CLUSTER_NAME};

use super::acls::{
    Caller, CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
};
use crate::server::Shared;

/// What [`After::apply`] adds to, or filters from, the response.
#[derive(Default)]
pub(super) struct After {
    /// Answers of the resources taken out of the request, appended to the response.
    denied: Denied,
    /// The groups whose OffsetFetch asked for every topic (unauthorized topics are then
    /// left out, not answered TOPIC_AUTHORIZATION_FAILED).
    fetch_all_topics: Vec<String>,
    /// FindCoordinator v4's key type (0 group, 1 transactional id).
    key_type: i8,
}

#[derive(Default)]
enum Denied {
    #[default]
    Nothing,
    DescribeConfigs(Vec<DescribeConfigsResult>),
    AlterConfigs(Vec<AlterConfigsResourceResponse>),
    IncrementalAlterConfigs(Vec<IncrementalResponse>),
    OffsetCommit(Vec<OffsetCommitResponseTopic>),
    OffsetDelete(Vec<OffsetDeleteResponseTopic>),
    TxnOffsetCommit(Vec<TxnOffsetCommitResponseTopic>),
    /// With the index each had in the request: Kafka answers the topics in request order.
    DescribeProducers(Vec<(usize, describe_producers_response::TopicResponse)>),
    /// A read-only answer filtered afterwards.
    Filter,
}

/// Kafka's OPERATION_NOT_ATTEMPTED: a partition of a request that failed elsewhere.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

fn text(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

/// The ACL resource a config resource is authorized on, and the error for a denial.
fn config_resource(resource_type: i8, name: &str) -> Option<(i8, String, i16)> {
    match resource_type {
        2 => Some((
            resource::TOPIC,
            name.to_string(),
            TOPIC_AUTHORIZATION_FAILED,
        )),
        4 | 8 => Some((
            resource::CLUSTER,
            CLUSTER_NAME.to_string(),
            CLUSTER_AUTHORIZATION_FAILED,
        )),
        32 => Some((
            resource::GROUP,
            name.to_string(),
            GROUP_AUTHORIZATION_FAILED,
        )),
        _ => None,
    }
}

/// Takes the config resources `allowed` refuses out of a request and answers each
/// with its resource's authorization error, made by `denied`.
fn refuse_config_resources<R, O>(
    resources: &mut Vec<R>,
    of: impl Fn(&R) -> (i8, &StrBytes),
    allowed: impl Fn(i8, &str) -> bool,
    denied: impl Fn(i8, StrBytes, i16) -> O,
) -> Vec<O> {
    let mut out = Vec::new();
    resources.retain(|res| {
        let (resource_type, resource_name) = of(res);
        let Some((rt, name, code)) = config_resource(resource_type, resource_name) else {
            return true;
        };
        let ok = allowed(rt, &name);
        if !ok {
            out.push(denied(resource_type, resource_name.clone(), code));
        }
        ok
    });
    out
}

fn error_message(code: i16) -> Option<StrBytes> {
    text(match code {
        TOPIC_AUTHORIZATION_FAILED => "Topic authorization failed.",
        GROUP_AUTHORIZATION_FAILED => "Group authorization failed.",
        CLUSTER_AUTHORIZATION_FAILED => "Cluster authorization failed.",
        _ => "Transactional Id authorization failed.",
    })
}

/// Checks `request`: `Err` with the whole answer when it is refused; else what to add
/// to or filter from the answer, the denied resources taken out of the request.
pub(super) fn before(
    shared: &Shared,
    caller: &Caller,
    request: &mut RequestKind,
    version: i16,
) -> Result<After, Box<ResponseKind>> {
    if !shared.authorizer.read().config.enabled {
        return Ok(After::default());
    }
    let may = |operation: i8, rt: i8, name: &str| caller.may(shared, operation, rt, name);
    let txn_write = |id: &str| may(op::WRITE, resource::TRANSACTIONAL_ID, id);
    let cluster = |operation: i8| caller.may_cluster(shared, operation);
    let mut after = After::default();
    let denied = match request {
        RequestKind::DescribeConfigs(r) => Denied::DescribeConfigs(refuse_config_resources(
            &mut r.resources,
            |res| (res.resource_type, &res.resource_name),
            |rt, name| may(op::DESCRIBE_CONFIGS, rt, name),
            |resource_type, resource_name, code| {
                DescribeConfigsResult::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(resource_name)
                    .with_error_code(code)
                    .with_error_message(error_message(code))
            },
        )),
        RequestKind::AlterConfigs(r) => Denied::AlterConfigs(refuse_config_resources(
            &mut r.resources,
            |res| (res.resource_type, &res.resource_name),
            |rt, name| may(op::ALTER_CONFIGS, rt, name),
            |resource_type, resource_name, code| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(resource_name)
                    .with_error_code(code)
                    .with_error_message(error_message(code))
            },
        )),
        RequestKind::IncrementalAlterConfigs(r) => {
            Denied::IncrementalAlterConfigs(refuse_config_resources(
                &mut r.resources,
                |res| (res.resource_type, &res.resource_name),
                |rt, name| may(op::ALTER_CONFIGS, rt, name),
                |resource_type, resource_name, code| {
                    IncrementalResponse::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(resource_name)
                        .with_error_code(code)
                        .with_error_message(error_message(code))
                },
            ))
        }
        RequestKind::OffsetCommit(r) => {
            // The group itself is checked whole in `acls::refused`.
            let mut out = Vec::new();
            r.topics.retain(|t| {
                let ok = caller.may_topic(shared, op::READ, &t.name.0);
                if !ok {
                    out.push(
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                    })
                                    .collect(),
                            ),
                    );
                }
                ok
            });
            Denied::OffsetCommit(out)
        }
        RequestKind::OffsetDelete(r) => {
            if !may(op::DELETE, resource::GROUP, &r.group_id.0) {
                return Err(Box::new(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
                )));
            }
            let mut out = Vec::new();
            r.topics.retain(|t| {
                let ok = caller.may_topic(shared, op::READ, &t.name.0);
                if !ok {
                    out.push(
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                    })
                                    .collect(),
                            ),
                    );
                }
                ok
            });
            Denied::OffsetDelete(out)
        }
        RequestKind::OffsetFetch(r) => {
            if version < 8 {
                if !may(op::DESCRIBE, resource::GROUP, &r.group_id.0) {
                    return Err(Box::new(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
                    )));
                }
                if r.topics.is_none() {
                    after.fetch_all_topics.push(r.group_id.0.to_string());
                }
            } else {
                for g in &r.groups {
                    if g.topics.is_none() {
                        after.fetch_all_topics.push(g.group_id.0.to_string());
                    }
                }
            }
            Denied::Filter
        }
        RequestKind::FindCoordinator(r) if version < 4 => {
            let (ok, code) = if r.key_type == 1 {
                (
                    may(op::DESCRIBE, resource::TRANSACTIONAL_ID, &r.key),
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                )
            } else {
                (
                    may(op::DESCRIBE, resource::GROUP, &r.key),
                    GROUP_AUTHORIZATION_FAILED,
                )
            };
            if !ok {
                return Err(Box::new(ResponseKind::FindCoordinator(
                    FindCoordinatorResponse::default()
                        .with_error_code(code)
                        .with_error_message(error_message(code))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                )));
            }
            Denied::Nothing
        }
        RequestKind::AddPartitionsToTxn(r) if version <= 3 => {
            let id_ok = txn_write(&r.v3_and_below_transactional_id.0);
            let topics_ok = r
                .v3_and_below_topics
                .iter()
                .all(|t| caller.may_topic(shared, op::WRITE, &t.name.0));
            if id_ok && topics_ok {
                return Ok(after);
            }
            use kafka_protocol::messages::add_partitions_to_txn_response::{
                AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
            };
            // As Kafka: the denied topics fail, the others are not attempted.
            let results = r
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    let code = if !id_ok {
                        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                    } else if caller.may_topic(shared, op::WRITE, &t.name.0) {
                        OPERATION_NOT_ATTEMPTED
                    } else {
                        TOPIC_AUTHORIZATION_FAILED
                    };
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*p)
                                        .with_partition_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            return Err(Box::new(ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
            )));
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let code = if !txn_write(&r.transactional_id.0) {
                TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            } else if !may(op::READ, resource::GROUP, &r.group_id.0) {
                GROUP_AUTHORIZATION_FAILED
            } else {
                return Ok(after);
            };
            return Err(Box::new(ResponseKind::AddOffsetsToTxn(
                AddOffsetsToTxnResponse::default().with_error_code(code),
            )));
        }
        RequestKind::EndTxn(r) => {
            if txn_write(&r.transactional_id.0) {
                return Ok(after);
            }
            return Err(Box::new(ResponseKind::EndTxn(
                EndTxnResponse::default()
                    .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )));
        }
        RequestKind::TxnOffsetCommit(r) => {
            let whole = if !txn_write(&r.transactional_id.0) {
                Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            } else if !may(op::READ, resource::GROUP, &r.group_id.0) {
                Some(GROUP_AUTHORIZATION_FAILED)
            } else {
                None
            };
            let mut out = Vec::new();
            r.topics.retain(|t| {
                let code = whole.or_else(|| {
                    (!caller.may_topic(shared, op::READ, &t.name.0))
                        .then_some(TOPIC_AUTHORIZATION_FAILED)
                });
                if let Some(code) = code {
                    out.push(
                        TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            ),
                    );
                }
                code.is_none()
            });
            if r.topics.is_empty() && !out.is_empty() {
                return Err(Box::new(ResponseKind::TxnOffsetCommit(
                    TxnOffsetCommitResponse::default().with_topics(out),
                )));
            }
            Denied::TxnOffsetCommit(out)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            if cluster(op::ALTER) {
                return Ok(after);
            }
            use kafka_protocol::messages::alter_partition_reassignments_response::{
                ReassignablePartitionResponse, ReassignableTopicResponse,
            };
            let code = CLUSTER_AUTHORIZATION_FAILED;
            let responses = r
                .topics
                .iter()
                .map(|t| {
                    ReassignableTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ReassignablePartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                        .with_error_message(error_message(code))
                                })
                                .collect(),
                        )
                })
                .collect();
            return Err(Box::new(ResponseKind::AlterPartitionReassignments(
                AlterPartitionReassignmentsResponse::default()
                    .with_error_code(code)
                    .with_error_message(error_message(code))
                    .with_responses(responses),
            )));
        }
        RequestKind::ListPartitionReassignments(_) => {
            if cluster(op::DESCRIBE) {
                return Ok(after);
            }
            let code = CLUSTER_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::ListPartitionReassignments(
                ListPartitionReassignmentsResponse::default()
                    .with_error_code(code)
                    .with_error_message(error_message(code)),
            )));
        }
        RequestKind::DescribeUserScramCredentials(_) => {
            if cluster(op::DESCRIBE) {
                return Ok(after);
            }
            let code = CLUSTER_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsResponse::default()
                    .with_error_code(code)
                    .with_error_message(error_message(code)),
            )));
        }
        RequestKind::ElectLeaders(r) => {
            if cluster(op::ALTER) {
                return Ok(after);
            }
            use kafka_protocol::messages::elect_leaders_response::{
                PartitionResult, ReplicaElectionResult,
            };
            let code = CLUSTER_AUTHORIZATION_FAILED;
            let results = r
                .topic_partitions
                .iter()
                .flatten()
                .map(|t| {
                    ReplicaElectionResult::default()
                        .with_topic(t.topic.clone())
                        .with_partition_result(
                            t.partitions
                                .iter()
                                .map(|&p| {
                                    PartitionResult::default()
                                        .with_partition_id(p)
                                        .with_error_code(code)
                                        .with_error_message(error_message(code))
                                })
                                .collect(),
                        )
                })
                .collect();
            // v0 has no top-level error code (kafka-protocol refuses to encode one).
            return Err(Box::new(ResponseKind::ElectLeaders(
                ElectLeadersResponse::default()
                    .with_error_code(if version >= 1 { code } else { 0 })
                    .with_replica_election_results(results),
            )));
        }
        RequestKind::DescribeLogDirs(_) => {
            if cluster(op::DESCRIBE) {
                return Ok(after);
            }
            return Err(Box::new(ResponseKind::DescribeLogDirs(
                DescribeLogDirsResponse::default().with_error_code(CLUSTER_AUTHORIZATION_FAILED),
            )));
        }
        RequestKind::DescribeProducers(r) => {
            use describe_producers_response::{PartitionResponse, TopicResponse};
            let code = TOPIC_AUTHORIZATION_FAILED;
            let mut out = Vec::new();
            let mut index = 0;
            r.topics.retain(|t| {
                let ok = caller.may_topic(shared, op::READ, &t.name.0);
                if !ok {
                    let partitions = t.partition_indexes.iter().map(|&p| {
                        PartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                            .with_error_message(error_message(code))
                    });
                    out.push((
                        index,
                        TopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(partitions.collect()),
                    ));
                }
                index += 1;
                ok
            });
            Denied::DescribeProducers(out)
        }
        RequestKind::FindCoordinator(r) => {
            after.key_type = r.key_type;
            Denied::Filter
        }
        RequestKind::ListGroups(_)
        | RequestKind::OffsetForLeaderEpoch(_)
        | RequestKind::ConsumerGroupDescribe(_)
        | RequestKind::DescribeTransactions(_)
        | RequestKind::ListTransactions(_) => Denied::Filter,
        _ => Denied::Nothing,
    };
    after.denied = denied;
    Ok(after)
}

impl After {
    /// Adds the denied resources' answers to `body`, and filters a read-only answer.
    pub(super) fn apply(&self, shared: &Shared, caller: &Caller, body: &mut ResponseKind) {
        match (&self.denied, body) {
            (Denied::Nothing, _) => {}
            (Denied::DescribeConfigs(d), ResponseKind::DescribeConfigs(r)) => {
                r.results.extend(d.iter().cloned())
            }
            (Denied::AlterConfigs(d), ResponseKind::AlterConfigs(r)) => {
                r.responses.extend(d.iter().cloned())
            }
            (Denied::IncrementalAlterConfigs(d), ResponseKind::IncrementalAlterConfigs(r)) => {
                r.responses.extend(d.iter().cloned())
            }
            (Denied::OffsetCommit(d), ResponseKind::OffsetCommit(r)) => {
                r.topics.extend(d.iter().cloned())
            }
            (Denied::OffsetDelete(d), ResponseKind::OffsetDelete(r)) => {
                r.topics.extend(d.iter().cloned())
            }
            (Denied::TxnOffsetCommit(d), ResponseKind::TxnOffsetCommit(r)) => {
                r.topics.extend(d.iter().cloned())
            }
            (Denied::DescribeProducers(d), ResponseKind::DescribeProducers(r)) => {
                // In ascending request order, so each lands where it was asked.
                for (index, topic) in d {
                    let at = (*index).min(r.topics.len());
                    r.topics.insert(at, topic.clone());
                }
            }
            (Denied::Filter, body) => self.filter(shared, caller, body),
            _ => {}
        }
    }

    fn filter(&self, shared: &Shared, caller: &Caller, body: &mut ResponseKind) {
        let may = |operation: i8, rt: i8, name: &str| caller.may(shared, operation, rt, name);
        let topic_ok = |t: &str| caller.may_topic(shared, op::DESCRIBE, t);
        match body {
            ResponseKind::OffsetFetch(r) => {
                // v1-7: the one group (checked in `before`).
                let all = !self.fetch_all_topics.is_empty();
                if all {
                    r.topics.retain(|t| topic_ok(&t.name.0));
                }
                for t in r.topics.iter_mut().filter(|t| !topic_ok(&t.name.0)) {
                    for p in &mut t.partitions {
                        p.committed_offset = -1;
                        p.committed_leader_epoch = -1;
                        p.metadata = text("");
                        p.error_code = TOPIC_AUTHORIZATION_FAILED;
                    }
                }
                for g in &mut r.groups {
                    if !may(op::DESCRIBE, resource::GROUP, &g.group_id.0) {
                        g.topics.clear();
                        g.error_code = GROUP_AUTHORIZATION_FAILED;
                        continue;
                    }
                    if self
                        .fetch_all_topics
                        .iter()
                        .any(|x| x == g.group_id.0.as_str())
                    {
                        g.topics.retain(|t| topic_ok(&t.name.0));
                    }
                    for t in g.topics.iter_mut().filter(|t| !topic_ok(&t.name.0)) {
                        for p in &mut t.partitions {
                            p.committed_offset = -1;
                            p.committed_leader_epoch = -1;
                            p.metadata = text("");
                            p.error_code = TOPIC_AUTHORIZATION_FAILED;
                        }
                    }
                }
            }
            ResponseKind::FindCoordinator(r) => {
                for c in &mut r.coordinators {
                    let (rt, code) = if self.key_type == 1 {
                        (
                            resource::TRANSACTIONAL_ID,
                            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                        )
                    } else {
                        (resource::GROUP, GROUP_AUTHORIZATION_FAILED)
                    };
                    if may(op::DESCRIBE, rt, &c.key) {
                        continue;
                    }
                    *c = Coordinator::default()
                        .with_key(c.key.clone())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(error_message(code));
                }
            }
            ResponseKind::ListGroups(r) if !caller.may_cluster(shared, op::DESCRIBE) => {
                r.groups
                    .retain(|g| may(op::DESCRIBE, resource::GROUP, &g.group_id.0));
            }
            // As Kafka: CLUSTER_ACTION on the cluster (a follower's right) allows every topic.
            ResponseKind::OffsetForLeaderEpoch(_)
                if caller.may_cluster(shared, op::CLUSTER_ACTION) => {}
            ResponseKind::OffsetForLeaderEpoch(r) => {
                for t in r.topics.iter_mut().filter(|t| !topic_ok(&t.topic.0)) {
                    for p in &mut t.partitions {
                        p.error_code = TOPIC_AUTHORIZATION_FAILED;
                        p.leader_epoch = -1;
                        p.end_offset = -1;
                    }
                }
            }
            ResponseKind::ConsumerGroupDescribe(r) => {
                use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
                for g in &mut r.groups {
                    if !may(op::DESCRIBE, resource::GROUP, &g.group_id.0) {
                        let code = GROUP_AUTHORIZATION_FAILED;
                        *g = DescribedGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(code)
                            .with_error_message(error_message(code))
                            .with_authorized_operations(i32::MIN);
                    }
                }
            }
            ResponseKind::DescribeTransactions(r) => {
                use kafka_protocol::messages::describe_transactions_response::TransactionState;
                for t in &mut r.transaction_states {
                    if !may(
                        op::DESCRIBE,
                        resource::TRANSACTIONAL_ID,
                        &t.transactional_id.0,
                    ) {
                        *t = TransactionState::default()
                            .with_transactional_id(t.transactional_id.clone())
                            .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1)
                            .with_transaction_start_time_ms(-1);
                    }
                }
            }
            ResponseKind::ListTransactions(r) => {
                r.transaction_states.retain(|t| {
                    may(
                        op::DESCRIBE,
                        resource::TRANSACTIONAL_ID,
                        &t.transactional_id.0,
                    )
                });
            }
            _ => {}
        }
    }
}
