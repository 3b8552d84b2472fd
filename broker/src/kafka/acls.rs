//! CreateAcls, DescribeAcls and DeleteAcls, and who the caller is for the authorizer
//! (docs/authorization.md). The ACLs live in the controller's state; DescribeAcls reads
//! this broker's pushed copy, as a Kafka broker reads its authorizer's.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatResponse, CreateAclsRequest, CreateAclsResponse, CreateTopicsRequest,
    DeleteAclsRequest, DeleteAclsResponse, DeleteTopicsRequest, DescribeAclsRequest,
    DescribeAclsResponse, DescribeGroupsResponse, HeartbeatResponse, InitProducerIdResponse,
    JoinGroupResponse, LeaveGroupResponse, OffsetCommitResponse, ProducerId, RequestKind,
    ResponseKind, SyncGroupResponse, TopicName,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::acl::{self, op, pattern, permission, resource, AclBinding, AclFilter};
use sluice_proto::v1;
use sluice_proto::v1::admin_server::Admin as _;
use sluice_proto::ErrorCode;
use tonic::Request;

use crate::server::admin::AdminProxy;
use crate::server::Shared;

/// Kafka's SECURITY_DISABLED: ACL requests to a broker without an authorizer.
pub(crate) const SECURITY_DISABLED: i16 = 54;
pub(crate) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub(crate) const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub(crate) const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub(crate) const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// Who sent a request: without SASL every Kafka client is `User:ANONYMOUS`, from its
/// peer address.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: String,
    pub(crate) host: String,
}

impl Caller {
    pub(crate) fn anonymous(peer: SocketAddr) -> Caller {
        Caller {
            principal: acl::ANONYMOUS.to_string(),
            host: peer.ip().to_string(),
        }
    }

    /// Whether this caller may do `operation` on the resource.
    pub(crate) fn may(
        &self,
        shared: &Shared,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        shared.authorizer.read().authorize(
            &self.principal,
            &self.host,
            operation,
            resource_type,
            name,
        )
    }

    pub(crate) fn may_topic(&self, shared: &Shared, operation: i8, topic: &str) -> bool {
        self.may(shared, operation, resource::TOPIC, topic)
    }

    pub(crate) fn may_cluster(&self, shared: &Shared, operation: i8) -> bool {
        self.may(shared, operation, resource::CLUSTER, acl::CLUSTER_NAME)
    }

    /// Kafka's authorized-operations bit set for the resource.
    pub(crate) fn operations(
        &self,
        shared: &Shared,
        resource_type: i8,
        name: &str,
        ops: &[i8],
    ) -> i32 {
        shared
            .authorizer
            .read()
            .operations(&self.principal, &self.host, resource_type, name, ops)
    }
}

fn enabled(shared: &Shared) -> bool {
    shared.authorizer.read().config.enabled
}

const NO_AUTHORIZER: &str =
    "No Authorizer is configured on the broker (start it with --authorizer)";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(super) async fn create_acls(
    proxy: &AdminProxy,
    caller: &Caller,
    r: CreateAclsRequest,
) -> CreateAclsResponse {
    let refuse = |code: i16, message: &str| {
        r.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(s(message)))
            })
            .collect()
    };
    let results = if !enabled(&proxy.0) {
        refuse(SECURITY_DISABLED, NO_AUTHORIZER)
    } else if !caller.may_cluster(&proxy.0, op::ALTER) {
        refuse(
            CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        )
    } else if r.creations.iter().any(|c| {
        c.resource_type == resource::ANY
            || matches!(c.resource_pattern_type, pattern::ANY | pattern::MATCH)
            || c.operation == op::ANY
            || c.permission_type == permission::ANY
    }) {
        // As Kafka: a binding with a filter's ANY or MATCH cannot be built, and the whole
        // request fails (UNKNOWN_SERVER_ERROR for every binding, no message).
        r.creations
            .iter()
            .map(|_| AclCreationResult::default().with_error_code(-1))
            .collect()
    } else {
        let acls = r
            .creations
            .iter()
            .map(|c| {
                AclBinding {
                    resource_type: c.resource_type,
                    resource_name: c.resource_name.to_string(),
                    pattern_type: c.resource_pattern_type,
                    principal: c.principal.to_string(),
                    host: c.host.to_string(),
                    operation: c.operation,
                    permission: c.permission_type,
                }
                .to_proto()
            })
            .collect();
        match proxy
            .create_acls(Request::new(v1::CreateAclsRequest { acls }))
            .await
        {
            Ok(answer) => answer
                .into_inner()
                .results
                .into_iter()
                .map(|res| {
                    AclCreationResult::default()
                        .with_error_code(super::apis::code(res.error_code))
                        .with_error_message((res.error_code != 0).then(|| s(&res.error_message)))
                })
                .collect(),
            Err(status) => refuse(
                ErrorCode::UnknownServerError.code() as i16,
                status.message(),
            ),
        }
    };
    CreateAclsResponse::default().with_results(results)
}

fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern_type: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        resource_name: name.as_ref().map(|v| v.to_string()),
        pattern_type,
        principal: principal.as_ref().map(|v| v.to_string()),
        host: host.as_ref().map(|v| v.to_string()),
        operation,
        permission,
    }
}

pub(super) fn describe_acls(
    shared: &Shared,
    caller: &Caller,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let refused = |code: i16, message: &str| {
        DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)))
    };
    if !enabled(shared) {
        return refused(SECURITY_DISABLED, NO_AUTHORIZER);
    }
    if !caller.may_cluster(shared, op::DESCRIBE) {
        return refused(
            CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        );
    }
    let f = filter(
        r.resource_type_filter,
        &r.resource_name_filter,
        r.pattern_type_filter,
        &r.principal_filter,
        &r.host_filter,
        r.operation,
        r.permission_type,
    );
    if let Err(e) = f.validate() {
        return refused(ErrorCode::InvalidRequest.code() as i16, &e.to_string());
    }
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in shared
        .authorizer
        .read()
        .acls
        .iter()
        .filter(|b| f.matches(b))
    {
        by_resource
            .entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(&b.principal))
                    .with_host(s(&b.host))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission),
            );
    }
    DescribeAclsResponse::default().with_resources(
        by_resource
            .into_iter()
            .map(|((rt, name, pt), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(s(&name))
                    .with_pattern_type(pt)
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub(super) async fn delete_acls(
    proxy: &AdminProxy,
    caller: &Caller,
    r: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let refuse = |code: i16, message: &str| {
        r.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(s(message)))
            })
            .collect()
    };
    let results = if !enabled(&proxy.0) {
        refuse(SECURITY_DISABLED, NO_AUTHORIZER)
    } else if !caller.may_cluster(&proxy.0, op::ALTER) {
        refuse(
            CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        )
    } else {
        let filters = r
            .filters
            .iter()
            .map(|f| {
                filter(
                    f.resource_type_filter,
                    &f.resource_name_filter,
                    f.pattern_type_filter,
                    &f.principal_filter,
                    &f.host_filter,
                    f.operation,
                    f.permission_type,
                )
                .to_proto()
            })
            .collect();
        match proxy
            .delete_acls(Request::new(v1::DeleteAclsRequest { filters }))
            .await
        {
            Ok(answer) => answer
                .into_inner()
                .results
                .into_iter()
                .map(|res| {
                    let (code, message) = res
                        .result
                        .map(|r| (r.error_code, r.error_message))
                        .unwrap_or_default();
                    DeleteAclsFilterResult::default()
                        .with_error_code(super::apis::code(code))
                        .with_error_message((code != 0).then(|| s(&message)))
                        .with_matching_acls(
                            res.deleted
                                .iter()
                                .map(|b| {
                                    let b = AclBinding::from_proto(b);
                                    DeleteAclsMatchingAcl::default()
                                        .with_resource_type(b.resource_type)
                                        .with_resource_name(s(&b.resource_name))
                                        .with_pattern_type(b.pattern_type)
                                        .with_principal(s(&b.principal))
                                        .with_host(s(&b.host))
                                        .with_operation(b.operation)
                                        .with_permission_type(b.permission)
                                })
                                .collect(),
                        )
                })
                .collect(),
            Err(status) => refuse(
                ErrorCode::UnknownServerError.code() as i16,
                status.message(),
            ),
        }
    };
    DeleteAclsResponse::default().with_filter_results(results)
}

/// Requests refused whole, before they run: the answer, when the caller may not.
/// Groups: READ on the group (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
/// ConsumerGroupHeartbeat, OffsetCommit) → GROUP_AUTHORIZATION_FAILED; a KIP-848
/// subscription naming a topic the caller may not DESCRIBE → TOPIC_AUTHORIZATION_FAILED
/// (as Kafka 4 answers the whole heartbeat); InitProducerId: WRITE on its transactional
/// id → TRANSACTIONAL_ID_AUTHORIZATION_FAILED, without one IDEMPOTENT_WRITE on the
/// cluster or WRITE on some topic → CLUSTER_AUTHORIZATION_FAILED.
pub(super) fn refused(
    shared: &Shared,
    caller: &Caller,
    request: &RequestKind,
) -> Option<ResponseKind> {
    if !enabled(shared) {
        return None;
    }
    let group_read = |g: &str| caller.may(shared, op::READ, resource::GROUP, g);
    let gaf = GROUP_AUTHORIZATION_FAILED;
    match request {
        RequestKind::JoinGroup(r) if !group_read(&r.group_id.0) => Some(ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(gaf)
                .with_generation_id(-1),
        )),
        RequestKind::SyncGroup(r) if !group_read(&r.group_id.0) => Some(ResponseKind::SyncGroup(
            SyncGroupResponse::default().with_error_code(gaf),
        )),
        RequestKind::Heartbeat(r) if !group_read(&r.group_id.0) => Some(ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(gaf),
        )),
        RequestKind::LeaveGroup(r) if !group_read(&r.group_id.0) => Some(ResponseKind::LeaveGroup(
            LeaveGroupResponse::default().with_error_code(gaf),
        )),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let code = if !group_read(&r.group_id.0) {
                gaf
            } else if r
                .subscribed_topic_names
                .iter()
                .flatten()
                .any(|t| !caller.may_topic(shared, op::DESCRIBE, &t.0))
            {
                TOPIC_AUTHORIZATION_FAILED
            } else {
                return None;
            };
            Some(ResponseKind::ConsumerGroupHeartbeat(
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code)
                    .with_member_epoch(-1)
                    .with_heartbeat_interval_ms(0),
            ))
        }
        // A denied topic is answered per partition (`authz`), the others committed.
        RequestKind::OffsetCommit(r) if !group_read(&r.group_id.0) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(gaf)
                                })
                                .collect(),
                        )
                })
                .collect();
            Some(ResponseKind::OffsetCommit(
                OffsetCommitResponse::default().with_topics(topics),
            ))
        }
        RequestKind::InitProducerId(r) => {
            let code = match &r.transactional_id {
                Some(id) if !caller.may(shared, op::WRITE, resource::TRANSACTIONAL_ID, &id.0) => {
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                }
                Some(_) => return None,
                None => {
                    let a = shared.authorizer.read();
                    let ok = a.authorize(
                        &caller.principal,
                        &caller.host,
                        op::IDEMPOTENT_WRITE,
                        resource::CLUSTER,
                        acl::CLUSTER_NAME,
                    ) || a.authorize_any(
                        &caller.principal,
                        &caller.host,
                        op::WRITE,
                        resource::TOPIC,
                    );
                    if ok {
                        return None;
                    }
                    CLUSTER_AUTHORIZATION_FAILED
                }
            };
            Some(ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ))
        }
        _ => None,
    }
}

/// DescribeGroups: a group the caller may not DESCRIBE is answered
/// GROUP_AUTHORIZATION_FAILED; authorized operations (v3+, when asked) from the ACLs.
pub(super) fn describe_groups(
    shared: &Shared,
    caller: &Caller,
    with_operations: bool,
    r: &mut DescribeGroupsResponse,
) {
    for g in &mut r.groups {
        let name = g.group_id.0.to_string();
        if !caller.may(shared, op::DESCRIBE, resource::GROUP, &name) {
            *g = DescribedGroup::default()
                .with_group_id(g.group_id.clone())
                .with_error_code(GROUP_AUTHORIZATION_FAILED)
                .with_authorized_operations(g.authorized_operations);
            continue;
        }
        if with_operations {
            g.authorized_operations =
                caller.operations(shared, resource::GROUP, &name, &acl::GROUP_OPERATIONS);
        }
    }
}

/// CreateTopics: takes out the topics the caller may not CREATE (on the cluster or the
/// topic), answered TOPIC_AUTHORIZATION_FAILED.
pub(super) fn unauthorized_creations(
    shared: &Shared,
    caller: &Caller,
    r: &mut CreateTopicsRequest,
) -> Vec<CreatableTopicResult> {
    if caller.may_cluster(shared, op::CREATE) {
        return Vec::new();
    }
    let mut denied = Vec::new();
    r.topics.retain(|t| {
        if caller.may_topic(shared, op::CREATE, &t.name.0) {
            return true;
        }
        denied.push(
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                .with_error_message(Some(s("Authorization failed.")))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None),
        );
        false
    });
    denied
}

/// DeleteTopics: takes out the topics (by name) the caller may not DELETE, answered
/// TOPIC_AUTHORIZATION_FAILED.
pub(super) fn unauthorized_deletions(
    shared: &Shared,
    caller: &Caller,
    r: &mut DeleteTopicsRequest,
) -> Vec<DeletableTopicResult> {
    let mut denied = Vec::new();
    let mut refuse = |name: &TopicName| {
        if caller.may_topic(shared, op::DELETE, &name.0) {
            return true;
        }
        denied.push(
            DeletableTopicResult::default()
                .with_name(Some(name.clone()))
                .with_error_code(TOPIC_AUTHORIZATION_FAILED),
        );
        false
    };
    r.topic_names.retain(|n| refuse(n));
    r.topics.retain(|t| t.name.as_ref().is_none_or(&mut refuse));
    denied
}

/// CreatePartitions: takes out the topics the caller may not ALTER (29 each).
pub(super) fn unauthorized_partition_growth(
    shared: &Shared,
    caller: &Caller,
    r: &mut CreatePartitionsRequest,
) -> Vec<CreatePartitionsTopicResult> {
    let mut denied = Vec::new();
    r.topics.retain(|t| {
        if caller.may_topic(shared, op::ALTER, &t.name.0) {
            return true;
        }
        denied.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(TOPIC_AUTHORIZATION_FAILED),
        );
        false
    });
    denied
}

/// DeleteRecords: takes out the topics the caller may not DELETE (29 per partition).
pub(super) fn unauthorized_record_deletions(
    shared: &Shared,
    caller: &Caller,
    r: &mut DeleteRecordsRequest,
) -> Vec<DeleteRecordsTopicResult> {
    let mut denied = Vec::new();
    r.topics.retain(|t| {
        if caller.may_topic(shared, op::DELETE, &t.name.0) {
            return true;
        }
        denied.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            DeleteRecordsPartitionResult::default()
                                .with_partition_index(p.partition_index)
                                .with_low_watermark(-1)
                                .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                        })
                        .collect(),
                ),
        );
        false
    });
    denied
}

/// DeleteGroups: takes out the groups the caller may not DELETE (30 each).
pub(super) fn unauthorized_group_deletions(
    shared: &Shared,
    caller: &Caller,
    r: &mut DeleteGroupsRequest,
) -> Vec<DeletableGroupResult> {
    let mut denied = Vec::new();
    r.groups_names.retain(|g| {
        if caller.may(shared, op::DELETE, resource::GROUP, &g.0) {
            return true;
        }
        denied.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(GROUP_AUTHORIZATION_FAILED),
        );
        false
    });
    denied
}
