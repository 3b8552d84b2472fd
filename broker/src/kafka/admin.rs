//! Kafka's admin APIs over the broker's admin proxy (`server::admin::AdminProxy`, the
//! gRPC `Admin` service, which forwards to the active controller): CreateTopics,
//! DeleteTopics, CreatePartitions, DescribeCluster, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, ElectLeaders.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::v1;
use sluice_proto::v1::admin_server::Admin as _;
use sluice_proto::v1::broker_server::Broker as _;
use sluice_proto::ErrorCode;
use tonic::Request;

use crate::server::admin::AdminProxy;
use crate::server::api::BrokerApi;

/// `num.partitions` when the broker was given none (Kafka's default).
const DEFAULT_PARTITIONS: u32 = 1;

/// The replication factor of a topic created with the broker's defaults (a CreateTopics
/// with -1, or auto-creation): three, or every live broker when fewer — what `sluice
/// topic create` does. (Kafka's `default.replication.factor` is 1; a Sluice cluster
/// gets replicated topics unless asked otherwise.)
pub(crate) fn default_replication_factor(shared: &crate::server::Shared) -> u32 {
    shared
        .metadata
        .read()
        .brokers
        .iter()
        .filter(|b| b.alive)
        .count()
        .clamp(1, 3) as u32
}
/// Kafka's INVALID_REPLICA_ASSIGNMENT.
pub(super) const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

pub(super) fn text(s: String) -> Option<StrBytes> {
    (!s.is_empty()).then(|| StrBytes::from_string(s))
}

/// An error code and message from a gRPC status (the proxy could not reach a
/// controller): retriable for the client.
pub(super) fn unavailable(status: &tonic::Status) -> (i16, String) {
    (
        ErrorCode::NotController.code() as i16,
        status.message().to_string(),
    )
}

pub(super) fn result_code(r: &v1::AdminResult) -> (i16, String) {
    (r.error_code as i16, r.error_message.clone())
}

pub(super) async fn create_topics(
    proxy: &AdminProxy,
    r: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut out = CreatableTopicResult::default().with_name(t.name.clone());
        let manual = !t.assignments.is_empty();
        let (code, message) = if manual && (t.num_partitions != -1 || t.replication_factor != -1) {
            (
                ErrorCode::InvalidRequest.code() as i16,
                "with replica assignments, the partition count and replication factor must be -1"
                    .to_string(),
            )
        } else {
            let partitions = if manual {
                0
            } else if t.num_partitions == -1 {
                proxy
                    .0
                    .config
                    .kafka_auto_create_partitions
                    .unwrap_or(DEFAULT_PARTITIONS)
            } else {
                t.num_partitions.max(0) as u32
            };
            let replication_factor = if manual {
                0
            } else if t.replication_factor == -1 {
                default_replication_factor(&proxy.0)
            } else {
                t.replication_factor.max(0) as u32
            };
            let configs = t
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let created = proxy
                .create_topic(Request::new(v1::CreateTopicRequest {
                    name: name.clone(),
                    partitions,
                    replication_factor,
                    configs,
                    assignments: t
                        .assignments
                        .iter()
                        .map(|a| v1::ReplicaList {
                            replicas: a.broker_ids.iter().map(|b| b.0.max(0) as u32).collect(),
                        })
                        .collect(),
                    validate_only: r.validate_only,
                }))
                .await;
            match created {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let result = resp.result.unwrap_or_default();
                    if let Some(topic) = resp.topic.filter(|_| result.error_code == 0) {
                        out.topic_id = uuid::Uuid::try_parse(&topic.topic_id).unwrap_or_default();
                        out.num_partitions = topic.partitions.len() as i32;
                        out.replication_factor = topic
                            .partitions
                            .first()
                            .map_or(replication_factor as i16, |p| p.replicas.len() as i16);
                        out.configs = Some(
                            topic
                                .configs
                                .into_iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_string(k))
                                        .with_value(Some(StrBytes::from_string(v)))
                                        // DYNAMIC_TOPIC_CONFIG
                                        .with_config_source(1)
                                })
                                .collect(),
                        );
                    }
                    result_code(&result)
                }
                Err(status) => unavailable(&status),
            }
        };
        out.error_code = code;
        out.error_message = text(message);
        results.push(out);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) async fn delete_topics(
    proxy: &AdminProxy,
    api: &BrokerApi,
    r: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 names topics by name or by id; earlier versions by name.
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = r
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        r.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let by_id = if wanted.iter().any(|(n, _)| n.is_none()) {
        api.metadata(Request::new(v1::MetadataRequest::default()))
            .await
            .map(|md| md.into_inner().topics)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut responses = Vec::new();
    for (name, id) in wanted {
        let name = name.or_else(|| {
            by_id
                .iter()
                .find(|t| uuid::Uuid::try_parse(&t.topic_id).ok() == Some(id))
                .map(|t| t.name.clone())
        });
        let mut out = DeletableTopicResult::default().with_topic_id(id);
        let (code, message) = match &name {
            None => (
                ErrorCode::UnknownTopicId.code() as i16,
                format!("no topic has id {id}"),
            ),
            Some(name) => match proxy
                .delete_topic(Request::new(v1::DeleteTopicRequest { name: name.clone() }))
                .await
            {
                Ok(r) => result_code(r.get_ref()),
                Err(status) => unavailable(&status),
            },
        };
        out.name = name.map(|n| TopicName(StrBytes::from_string(n)));
        out.error_code = code;
        out.error_message = text(message);
        responses.push(out);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    proxy: &AdminProxy,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in r.topics {
        let (code, message) = {
            match proxy
                .create_partitions(Request::new(v1::CreatePartitionsRequest {
                    topic: t.name.0.to_string(),
                    total: t.count.max(0) as u32,
                    assignments: t
                        .assignments
                        .iter()
                        .flatten()
                        .map(|a| v1::ReplicaList {
                            replicas: a.broker_ids.iter().map(|b| b.0.max(0) as u32).collect(),
                        })
                        .collect(),
                    validate_only: r.validate_only,
                }))
                .await
            {
                Ok(r) => result_code(r.get_ref()),
                Err(status) => unavailable(&status),
            }
        };
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(code)
                .with_error_message(text(message)),
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// The cluster as Kafka clients see it: brokers at their Kafka addresses, this broker
/// named as the controller (it forwards admin requests to the real one).
pub(super) async fn describe_cluster(
    api: &BrokerApi,
    me: u32,
    authorized_operations: i32,
) -> DescribeClusterResponse {
    let md = match api
        .metadata(Request::new(v1::MetadataRequest::default()))
        .await
    {
        Ok(md) => md.into_inner(),
        Err(status) => {
            return DescribeClusterResponse::default()
                .with_error_code(ErrorCode::BrokerNotAvailable.code() as i16)
                .with_error_message(Some(StrBytes::from_string(status.message().to_string())))
        }
    };
    let brokers = super::apis::kafka_endpoints(&md.brokers)
        .map(|(b, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id as i32))
                .with_host(host)
                .with_port(port)
                .with_rack(text(b.rack.clone()))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(super::apis::CLUSTER_ID))
        .with_controller_id(BrokerId(me as i32))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(authorized_operations)
}

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
/// Kafka's config sources.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// A topic's overrides (its configs as stored), or the error for a missing topic.
async fn topic_overrides(
    api: &BrokerApi,
    topic: &str,
) -> Result<std::collections::HashMap<String, String>, (i16, String)> {
    let md = api
        .metadata(Request::new(v1::MetadataRequest {
            topics: vec![topic.to_string()],
        }))
        .await
        .map_err(|s| unavailable(&s))?
        .into_inner();
    match md.topics.into_iter().next() {
        Some(t) if t.error_code == 0 => Ok(t.configs),
        Some(t) => Err((t.error_code as i16, t.error_message)),
        None => Err((
            ErrorCode::UnknownTopicOrPartition.code() as i16,
            format!("topic {topic} does not exist"),
        )),
    }
}

/// DescribeConfigs: every config of a topic with its effective value and source (the
/// topic's own setting, or the broker default), as `sluice topic describe` shows them.
/// Brokers and groups: `configs::describe_broker`, `configs::describe_group`.
pub(super) async fn describe_configs(
    api: &BrokerApi,
    r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for res in r.resources {
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        match res.resource_type {
            RESOURCE_TOPIC => match topic_overrides(api, res.resource_name.as_str()).await {
                Ok(overrides) => {
                    let defaults = &api.0.config.log_defaults;
                    let effective = defaults
                        .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        .unwrap_or_else(|_| defaults.clone())
                        .to_map();
                    let wanted: Option<Vec<String>> = res
                        .configuration_keys
                        .map(|keys| keys.iter().map(|k| k.to_string()).collect());
                    out.configs = effective
                        .into_iter()
                        .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
                        .map(|(k, v)| {
                            let source = if overrides.contains_key(&k) {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_string(k))
                                .with_value(Some(StrBytes::from_string(v)))
                                .with_config_source(source)
                        })
                        .collect();
                }
                Err((code, message)) => {
                    out.error_code = code;
                    out.error_message = text(message);
                }
            },
            RESOURCE_BROKER | RESOURCE_GROUP => {
                let keys: Option<Vec<String>> = res
                    .configuration_keys
                    .as_ref()
                    .map(|keys| keys.iter().map(|k| k.to_string()).collect());
                let name = res.resource_name.as_str();
                let described = if res.resource_type == RESOURCE_BROKER {
                    super::configs::describe_broker(&api.0, name, keys.as_deref())
                } else {
                    super::configs::describe_group(&api.0, name, keys.as_deref())
                };
                match described {
                    Ok(configs) => out.configs = configs,
                    Err((code, message)) => {
                        out.error_code = code;
                        out.error_message = text(message);
                    }
                }
            }
            other => {
                out.error_code = ErrorCode::InvalidRequest.code() as i16;
                out.error_message = text(format!("config resource type {other} is not served"));
            }
        }
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// Sets and deletes configs of a topic through the controller.
async fn alter_topic(
    proxy: &AdminProxy,
    topic: &str,
    set: std::collections::HashMap<String, String>,
    delete: Vec<String>,
) -> (i16, String) {
    match proxy
        .alter_configs(Request::new(v1::AlterConfigsRequest {
            topic: topic.to_string(),
            set,
            delete,
            resource_type: RESOURCE_TOPIC.into(),
        }))
        .await
    {
        Ok(r) => result_code(r.get_ref()),
        Err(status) => unavailable(&status),
    }
}

fn refuse_resource(resource_type: i8, validate_only: bool) -> Option<(i16, String)> {
    if ![RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_GROUP].contains(&resource_type) {
        Some((
            ErrorCode::InvalidRequest.code() as i16,
            format!("configs of resource type {resource_type} cannot be altered"),
        ))
    } else if validate_only {
        Some((
            ErrorCode::InvalidRequest.code() as i16,
            "validate_only is not supported".to_string(),
        ))
    } else {
        None
    }
}

/// IncrementalAlterConfigs: SET and DELETE on topic configs, and APPEND and SUBTRACT on
/// the one list-valued topic config Sluice serves, `cleanup.policy` (librdkafka's suite
/// turns compaction on with `APPEND compact`); on any other config they are refused.
pub(super) async fn incremental_alter_configs(
    proxy: &AdminProxy,
    api: &BrokerApi,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for res in r.resources {
        let (code, message) = match refuse_resource(res.resource_type, r.validate_only) {
            Some(refusal) => refusal,
            None if res.resource_type != RESOURCE_TOPIC => {
                match super::configs::incremental_changes(&res.configs) {
                    Err(e) => e,
                    Ok((set, delete)) => {
                        let (t, name) = (res.resource_type.into(), res.resource_name.as_str());
                        super::configs::alter(proxy, t, name, set, delete).await
                    }
                }
            }
            None => {
                match incremental_changes(api, res.resource_name.as_str(), &res.configs).await {
                    Err(e) => e,
                    Ok((set, delete)) => {
                        alter_topic(proxy, res.resource_name.as_str(), set, delete).await
                    }
                }
            }
        };
        responses.push(
            IncrementalAlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name)
                .with_error_code(code)
                .with_error_message(text(message)),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The configs to set and to delete for one resource's operations (0 SET, 1 DELETE,
/// 2 APPEND, 3 SUBTRACT). A list operation starts from the topic's current value (its own
/// setting, else the default `delete`); a list emptied by SUBTRACT is refused by the
/// controller's validation, as Sluice has no "no cleanup" policy.
async fn incremental_changes(
    api: &BrokerApi,
    topic: &str,
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(std::collections::HashMap<String, String>, Vec<String>), (i16, String)> {
    let mut set = std::collections::HashMap::new();
    let mut delete = Vec::new();
    let mut current = None;
    for c in configs {
        let name = c.name.as_str();
        match (c.config_operation, &c.value) {
            (0, Some(v)) => {
                set.insert(name.to_string(), v.to_string());
            }
            (1, _) => delete.push(name.to_string()),
            (op @ (2 | 3), Some(v)) if name == LIST_CONFIG => {
                if current.is_none() {
                    current = Some(topic_overrides(api, topic).await?);
                }
                let base = set
                    .get(name)
                    .or_else(|| current.as_ref().and_then(|c| c.get(name)))
                    .cloned()
                    .unwrap_or_else(|| "delete".to_string());
                set.insert(name.to_string(), list_op(&base, op == 2, v.as_str()));
            }
            (op @ (2 | 3), _) => {
                return Err((
                    ErrorCode::InvalidConfig.code() as i16,
                    format!("{name}: operation {op} (APPEND/SUBTRACT) needs a list-valued config with a value; the only one served is {LIST_CONFIG}"),
                ))
            }
            (op, _) => {
                return Err((
                    ErrorCode::InvalidRequest.code() as i16,
                    format!("{name}: operation {op} is not served (SET with a value, DELETE, APPEND, SUBTRACT)"),
                ))
            }
        }
    }
    Ok((set, delete))
}

/// The list-valued topic config APPEND and SUBTRACT apply to.
const LIST_CONFIG: &str = "cleanup.policy";

/// `base` (comma-separated) with the items of `items` appended (those not yet there) or
/// subtracted, as Kafka's IncrementalAlterConfigs does.
fn list_op(base: &str, append: bool, items: &str) -> String {
    let mut list: Vec<&str> = base
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !list.contains(&item) {
                list.push(item);
            }
        } else {
            list.retain(|x| *x != item);
        }
    }
    list.join(",")
}

/// AlterConfigs (the legacy call): the given configs replace the topic's whole set —
/// what it does not name goes back to the default, as in Kafka.
pub(super) async fn alter_configs(
    proxy: &AdminProxy,
    api: &BrokerApi,
    r: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for res in r.resources {
        let (code, message) = match refuse_resource(res.resource_type, r.validate_only) {
            Some(refusal) => refusal,
            // The given configs replace the resource's whole set, as for a topic.
            None if res.resource_type != RESOURCE_TOPIC => {
                let (t, name) = (res.resource_type.into(), res.resource_name.as_str());
                let set: std::collections::HashMap<String, String> = res
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let delete = super::configs::current(&api.0, t, name)
                    .into_keys()
                    .filter(|k| !set.contains_key(k))
                    .collect();
                super::configs::alter(proxy, t, name, set, delete).await
            }
            None => match topic_overrides(api, res.resource_name.as_str()).await {
                Err(e) => e,
                Ok(current) => {
                    let set: std::collections::HashMap<String, String> = res
                        .configs
                        .iter()
                        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                        .collect();
                    let delete = current
                        .keys()
                        .filter(|k| !set.contains_key(*k))
                        .cloned()
                        .collect();
                    alter_topic(proxy, res.resource_name.as_str(), set, delete).await
                }
            },
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name)
                .with_error_code(code)
                .with_error_message(text(message)),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// ElectLeaders (kafka-leader-election, AdminClient.electLeaders): a preferred election
/// (type 0) of the partitions named, or of every partition (null), through the
/// controller, each with its outcome (elected, ELECTION_NOT_NEEDED,
/// PREFERRED_LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION; for every partition,
/// those with ELECTION_NOT_NEEDED left out, as Kafka does). An unclean election
/// (type 1) elects nothing: Sluice never takes a leader from outside the ISR, so a
/// partition with a leader answers ELECTION_NOT_NEEDED and one without
/// ELIGIBLE_LEADERS_NOT_AVAILABLE.
pub(super) async fn elect_leaders(
    proxy: &AdminProxy,
    version: i16,
    r: kafka_protocol::messages::ElectLeadersRequest,
) -> kafka_protocol::messages::ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    use kafka_protocol::messages::ElectLeadersResponse;
    let metadata = || async {
        proxy
            .describe_topics(Request::new(v1::MetadataRequest::default()))
            .await
            .map(|r| r.into_inner())
    };
    let md = match metadata().await {
        Ok(md) => md,
        Err(status) => {
            let (code, _) = unavailable(&status);
            let mut out = ElectLeadersResponse::default();
            if version >= 1 {
                out.error_code = code;
            }
            return out;
        }
    };
    let wanted: Vec<v1::PartitionRef> = match &r.topic_partitions {
        Some(tps) => tps
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| v1::PartitionRef {
                    topic: t.topic.0.to_string(),
                    partition: (*p).max(0) as u32,
                })
            })
            .collect(),
        None => md
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .flat_map(|t| {
                t.partitions.iter().map(|p| v1::PartitionRef {
                    topic: t.name.clone(),
                    partition: p.partition,
                })
            })
            .collect(),
    };
    let outcomes: Vec<(String, u32, i16)> = if r.election_type == 1 {
        wanted
            .iter()
            .map(|w| {
                let leader = md
                    .topics
                    .iter()
                    .find(|t| t.name == w.topic)
                    .and_then(|t| t.partitions.iter().find(|p| p.partition == w.partition))
                    .map(|p| p.leader);
                let code = match leader {
                    None => ErrorCode::UnknownTopicOrPartition,
                    Some(l) if l >= 0 => ErrorCode::ElectionNotNeeded,
                    Some(_) => ErrorCode::EligibleLeadersNotAvailable,
                };
                (w.topic.clone(), w.partition, code.code() as i16)
            })
            .collect()
    } else {
        match proxy
            .elect_leaders(Request::new(v1::ElectLeadersRequest {
                topic: String::new(),
                partitions: wanted.clone(),
            }))
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                let failed = resp.result.as_ref().filter(|r| r.error_code != 0);
                match failed {
                    Some(f) => wanted
                        .iter()
                        .map(|w| (w.topic.clone(), w.partition, f.error_code as i16))
                        .collect(),
                    None => resp
                        .outcomes
                        .into_iter()
                        .map(|o| (o.topic, o.partition, o.error_code as i16))
                        .collect(),
                }
            }
            Err(status) => {
                let (code, _) = unavailable(&status);
                wanted
                    .iter()
                    .map(|w| (w.topic.clone(), w.partition, code))
                    .collect()
            }
        }
    };
    // Asked about every partition (null), Kafka answers only the partitions it acted on:
    // one that already has its preferred leader is left out, not ELECTION_NOT_NEEDED
    // (else a client's all() fails on a balanced cluster).
    let every = r.topic_partitions.is_none();
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code) in outcomes {
        if every && code == ErrorCode::ElectionNotNeeded.code() as i16 {
            continue;
        }
        let result = PartitionResult::default()
            .with_partition_id(partition as i32)
            .with_error_code(code);
        match results.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

#[cfg(test)]
mod tests {
    use super::list_op;

    #[test]
    fn list_configs_append_and_subtract_as_kafka_does() {
        assert_eq!(list_op("delete", true, "compact"), "delete,compact");
        assert_eq!(list_op("delete,compact", true, "compact"), "delete,compact");
        assert_eq!(list_op("delete, compact", false, "delete"), "compact");
        assert_eq!(list_op("compact", false, "delete"), "compact");
        assert_eq!(list_op("compact", false, "compact"), "");
    }
}
