//! ACLs against Apache Kafka 4.4 as the reference (the harness of tests/kafka_diff.rs,
//! `tests/common/diff.rs`): Kafka runs with its KRaft `StandardAuthorizer` and
//! `allow.everyone.if.no.acl.found=true`, Sluice's dev with `--authorizer
//! --allow-everyone-if-no-acl-found` (what librdkafka's test clusters configure). The
//! same CreateAcls, DescribeAcls and DeleteAcls requests, valid and not, then what an
//! anonymous client may still do: Metadata (every topic, a named one, authorized
//! operations), Produce, Fetch and ListOffsets on denied, prefixed-allowed and untouched
//! topics, a KIP-848 heartbeat and InitProducerId, the per-resource checks of the config,
//! offset, coordinator, transaction and admin APIs (ElectLeaders, DescribeLogDirs,
//! DescribeProducers among them), compared step by step.

#[macro_use]
mod common;

use common::apache_kafka::ApacheKafka;
use common::diff::*;
use common::Dev;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::messages::{create_partitions_request, delete_records_request};
use serde_json::{json, Value};

/// Steps whose answers differ from Apache Kafka's, with the reason.
const ALLOWED: &[(&str, &str)] = &[(
    "create_acls.invalid_unknown_operation",
    "Kafka cannot parse a binding with the UNKNOWN (0) operation and closes the \
     connection; Sluice answers INVALID_REQUEST (42) for it",
)];

const DENIED: &str = "acl-denied";
const PREFIXED: &str = "acl-pre-a";
const OPEN: &str = "acl-open";
const G: &str = "acl-group";

// Kafka's codes (sluice_proto::acl has them too; the test speaks the wire's).
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const TXN: i8 = 5;
const CLUSTER: i8 = 4;
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const PREFIX: i8 = 4;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DESCRIBE: i8 = 8;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

fn acl(rt: i8, name: &str, pt: i8, principal: &str, op: i8, perm: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(s(name))
        .with_resource_pattern_type(pt)
        .with_principal(s(principal))
        .with_host(s("*"))
        .with_operation(op)
        .with_permission_type(perm)
}

fn create_acls(x: &mut Side, acls: Vec<AclCreation>) -> Value {
    let r = ask!(
        x,
        CreateAcls,
        3,
        CreateAclsRequest::default().with_creations(acls)
    );
    for res in r.results.iter().filter(|r| r.error_code != 0) {
        eprintln!("    {}: {} {:?}", x.name, res.error_code, res.error_message);
    }
    json!(r.results.iter().map(|r| r.error_code).collect::<Vec<_>>())
}

struct Filter {
    rt: i8,
    name: Option<&'static str>,
    pt: i8,
    principal: Option<&'static str>,
    op: i8,
    perm: i8,
}

const EVERY: Filter = Filter {
    rt: ANY,
    name: None,
    pt: ANY,
    principal: None,
    op: ANY,
    perm: ANY,
};

fn describe_acls(x: &mut Side, f: Filter) -> Value {
    let r = ask!(
        x,
        DescribeAcls,
        3,
        DescribeAclsRequest::default()
            .with_resource_type_filter(f.rt)
            .with_resource_name_filter(f.name.map(s))
            .with_pattern_type_filter(f.pt)
            .with_principal_filter(f.principal.map(s))
            .with_host_filter(None)
            .with_operation(f.op)
            .with_permission_type(f.perm)
    );
    let mut acls: Vec<Value> = r
        .resources
        .iter()
        .flat_map(|res| {
            res.acls.iter().map(move |a| {
                json!([
                    res.resource_type,
                    res.resource_name.as_str(),
                    res.pattern_type,
                    a.principal.as_str(),
                    a.host.as_str(),
                    a.operation,
                    a.permission_type
                ])
            })
        })
        .collect();
    acls.sort_by_key(|v| v.to_string());
    json!({ "error": r.error_code, "acls": acls })
}

fn delete_acls(x: &mut Side, filters: Vec<Filter>) -> Value {
    let r = ask!(
        x,
        DeleteAcls,
        3,
        DeleteAclsRequest::default().with_filters(
            filters
                .iter()
                .map(|f| DeleteAclsFilter::default()
                    .with_resource_type_filter(f.rt)
                    .with_resource_name_filter(f.name.map(s))
                    .with_pattern_type_filter(f.pt)
                    .with_principal_filter(f.principal.map(s))
                    .with_host_filter(None)
                    .with_operation(f.op)
                    .with_permission_type(f.perm))
                .collect()
        )
    );
    json!(r
        .filter_results
        .iter()
        .map(|f| {
            let mut m: Vec<Value> = f
                .matching_acls
                .iter()
                .map(|a| {
                    json!([
                        a.error_code,
                        a.resource_type,
                        a.resource_name.as_str(),
                        a.pattern_type,
                        a.principal.as_str(),
                        a.operation,
                        a.permission_type
                    ])
                })
                .collect();
            m.sort_by_key(|v| v.to_string());
            json!({ "error": f.error_code, "matching": m })
        })
        .collect::<Vec<_>>())
}

/// Metadata v12 for `topics` (None: every topic), with authorized operations: the
/// test's topics as answered (internal ones left out).
fn metadata_ops(x: &mut Side, topics: Option<&[&str]>) -> Value {
    let r = ask!(
        x,
        Metadata,
        12,
        MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false)
            .with_include_topic_authorized_operations(true)
    );
    let mut out: Vec<Value> = r
        .topics
        .iter()
        .filter(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str().starts_with("acl-"))
        })
        .map(|t| {
            json!([
                t.name.as_ref().map(|n| n.0.to_string()),
                t.error_code,
                t.partitions.len(),
                t.topic_id.is_nil(),
                t.topic_authorized_operations
            ])
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    json!(out)
}

fn describe_cluster_ops(x: &mut Side) -> Value {
    let r = ask!(
        x,
        DescribeCluster,
        1,
        DescribeClusterRequest::default().with_include_cluster_authorized_operations(true)
    );
    json!({ "error": r.error_code, "ops": r.cluster_authorized_operations })
}

fn heartbeat(x: &mut Side, topics: &[&str]) -> Value {
    let r = ask!(
        x,
        ConsumerGroupHeartbeat,
        1,
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(G)))
            .with_member_id(s("m-acl-0000000000000000"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(topics.iter().map(|t| topic(t)).collect()))
            .with_topic_partitions(Some(Vec::new()))
    );
    json!({ "error": r.error_code })
}

fn init_producer_id(x: &mut Side, txn: Option<&str>) -> Value {
    let r = ask!(
        x,
        InitProducerId,
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(txn.map(|t| TransactionalId(s(t))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    );
    json!({ "error": r.error_code })
}

#[test]
fn acls_answer_as_apache_kafka_does() {
    let mut kafka = ApacheKafka::launch_with(
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
         allow.everyone.if.no.acl.found=true",
    );
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(
        dir.path(),
        &["--authorizer", "--allow-everyone-if-no-acl-found"],
    );
    kafka.wait_ready();
    let mut d = Diff {
        sides: [
            Side::new("sluice", dev.kafka()),
            Side::new("kafka", kafka.addr.clone()),
        ],
        steps: Vec::new(),
        allowed: ALLOWED,
    };
    for t in [DENIED, PREFIXED, OPEN] {
        d.step(&format!("create_topics.{t}"), |x| {
            create_topic(x, t, 1, 1, &[])
        });
        d.each(|x| wait_topic(x, t, 1));
    }
    d.step("produce.before_acls", |x| {
        produce(x, DENIED, 0, batch("a", 0, 2))
    });
    d.step_eventually("describe_acls.none", |x| describe_acls(x, EVERY));
    d.step("create_acls.ok", |x| {
        create_acls(
            x,
            vec![
                acl(TOPIC, DENIED, LITERAL, "User:*", ALL, DENY),
                acl(TOPIC, "acl-pre", PREFIX, "User:*", READ, ALLOW),
                acl(GROUP, G, LITERAL, "User:*", READ, DENY),
                acl(TOPIC, OPEN, LITERAL, "User:bob", WRITE, ALLOW),
                acl(TOPIC, "acl-nocreate", LITERAL, "User:*", DESCRIBE, ALLOW),
                acl(TOPIC, "acl-nocreate", LITERAL, "User:*", CREATE, DENY),
                acl(TXN, "acl-txn", LITERAL, "User:*", WRITE, DENY),
            ],
        )
    });
    d.step("create_acls.again_is_no_change", |x| {
        create_acls(x, vec![acl(TOPIC, DENIED, LITERAL, "User:*", ALL, DENY)])
    });
    // Each alone: Kafka answers a request with one binding it cannot even build
    // (ANY or MATCH codes) UNKNOWN_SERVER_ERROR for every binding in it.
    for (label, bad) in [
        (
            "resource_any",
            acl(ANY, "x", LITERAL, "User:*", READ, ALLOW),
        ),
        (
            "pattern_match",
            acl(TOPIC, "x", MATCH, "User:*", READ, ALLOW),
        ),
        (
            "operation_any",
            acl(TOPIC, "x", LITERAL, "User:*", ANY, ALLOW),
        ),
        (
            "permission_any",
            acl(TOPIC, "x", LITERAL, "User:*", READ, ANY),
        ),
        (
            "cluster_name",
            acl(CLUSTER, "other", LITERAL, "User:*", ALL, ALLOW),
        ),
        ("principal", acl(TOPIC, "x", LITERAL, "bob", READ, ALLOW)),
        (
            "unknown_operation",
            acl(TOPIC, "x", LITERAL, "User:*", 0, ALLOW),
        ),
    ] {
        d.step(&format!("create_acls.invalid_{label}"), |x| {
            create_acls(x, vec![bad.clone()])
        });
    }
    d.step("create_acls.invalid_beside_valid", |x| {
        create_acls(
            x,
            vec![
                acl(TOPIC, "acl-x", LITERAL, "User:*", READ, ALLOW),
                acl(TOPIC, "acl-x", LITERAL, "bob", READ, ALLOW),
            ],
        )
    });
    d.step_eventually("describe_acls.every", |x| describe_acls(x, EVERY));
    d.step_eventually("describe_acls.match_prefixed", |x| {
        describe_acls(
            x,
            Filter {
                rt: TOPIC,
                name: Some(PREFIXED),
                pt: MATCH,
                ..EVERY
            },
        )
    });
    d.step_eventually("describe_acls.literal_name", |x| {
        describe_acls(
            x,
            Filter {
                name: Some(DENIED),
                pt: LITERAL,
                ..EVERY
            },
        )
    });
    d.step_eventually("describe_acls.deny_only", |x| {
        describe_acls(
            x,
            Filter {
                perm: DENY,
                ..EVERY
            },
        )
    });
    d.step_eventually("describe_acls.by_principal", |x| {
        describe_acls(
            x,
            Filter {
                principal: Some("User:bob"),
                ..EVERY
            },
        )
    });
    // Kafka applies ACLs when its metadata catches up: wait until both refuse.
    d.each(|x| {
        wait_until(
            x,
            "the DENY ACL applied",
            |x| metadata(x, DENIED, false),
            |v| v["error"] == 29,
        );
    });
    d.step("metadata.named_denied", |x| metadata(x, DENIED, false));
    d.step("metadata.named_with_ops", |x| {
        metadata_ops(x, Some(&[DENIED, PREFIXED, OPEN, "acl-missing"]))
    });
    d.step("metadata.every_topic", |x| metadata_ops(x, None));
    d.step("describe_cluster.ops", describe_cluster_ops);
    d.step("produce.denied", |x| {
        produce(x, DENIED, 0, batch("b", 0, 1))
    });
    d.step("fetch.denied", |x| fetch(x, DENIED, 0, 0));
    d.step("list_offsets.denied", |x| list_offsets(x, 7, DENIED, 0, -1));
    // An ALLOW READ on the prefix: reading goes, writing does not (an ACL applies).
    d.step("produce.prefixed_read_only", |x| {
        produce(x, PREFIXED, 0, batch("c", 0, 1))
    });
    d.step("fetch.prefixed_read", |x| fetch(x, PREFIXED, 0, 0));
    d.step("list_offsets.prefixed_describe", |x| {
        list_offsets(x, 7, PREFIXED, 0, -1)
    });
    // Only bob may write the open topic now; anonymous may not even describe it.
    d.step("produce.other_principal_only", |x| {
        produce(x, OPEN, 0, batch("d", 0, 1))
    });
    // Auto-creation: CREATE on the cluster (no ACL: allowed) lets it through whatever the
    // topic's ACLs say, as in Kafka.
    d.step("metadata.auto_create_cluster_allowed", |x| {
        let v = wait_until(
            x,
            "the auto-created topic",
            |x| metadata(x, "acl-nocreate", true),
            |v| v["error"] != 5 && v["error"] != 3,
        );
        json!({ "error": v["error"] })
    });
    d.step("heartbeat.group_denied", |x| heartbeat(x, &[OPEN]));
    d.step("init_producer_id.idempotent", |x| {
        wait_until(
            x,
            "a producer id",
            |x| init_producer_id(x, None),
            |v| v["error"] != 14,
        )
    });
    d.step("init_producer_id.transactional_denied", |x| {
        init_producer_id(x, Some("acl-txn"))
    });
    d.step("create_partitions.denied", |x| {
        let r = ask!(
            x,
            CreatePartitions,
            3,
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic(DENIED))
                        .with_count(2)
                ])
        );
        json!(r.results.iter().map(|t| t.error_code).collect::<Vec<_>>())
    });
    d.step("delete_records.denied", |x| {
        let r = ask!(
            x,
            DeleteRecords,
            2,
            DeleteRecordsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic(DENIED))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(1)
                    ])])
        );
        json!(r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.error_code, p.low_watermark)))
            .collect::<Vec<_>>())
    });
    d.step("delete_groups.denied", |x| {
        let r = ask!(
            x,
            DeleteGroups,
            2,
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(G))])
        );
        json!(r.results.iter().map(|g| g.error_code).collect::<Vec<_>>())
    });
    per_resource_checks(&mut d);
    d.step("delete_acls.denied_topic", |x| {
        delete_acls(
            x,
            vec![Filter {
                rt: TOPIC,
                name: Some(DENIED),
                pt: LITERAL,
                ..EVERY
            }],
        )
    });
    d.each(|x| {
        wait_until(
            x,
            "the DENY ACL removed",
            |x| metadata(x, DENIED, false),
            |v| v["error"] == 0,
        );
    });
    d.step("produce.after_delete", |x| {
        produce(x, DENIED, 0, batch("e", 2, 1))
    });
    d.step("delete_acls.match_and_nothing", |x| {
        delete_acls(
            x,
            vec![
                Filter {
                    rt: TOPIC,
                    name: Some(PREFIXED),
                    pt: MATCH,
                    ..EVERY
                },
                Filter {
                    rt: TOPIC,
                    name: Some("nothing"),
                    pt: LITERAL,
                    ..EVERY
                },
            ],
        )
    });
    cluster_checks(&mut d);
    d.step("delete_acls.rest", |x| delete_acls(x, vec![EVERY]));
    d.step_eventually("describe_acls.empty_again", |x| describe_acls(x, EVERY));
    d.step("elect_leaders.allowed", |x| elect_leaders(x, OPEN));
    // Last: with ALTER on the cluster denied no ACL can be deleted any more.
    // CLUSTER_ACTION allowed: Kafka's broker forwards ElectLeaders to its controller.
    d.step("create_acls.deny_cluster_alter", |x| {
        create_acls(
            x,
            vec![
                acl(CLUSTER, "kafka-cluster", LITERAL, "User:*", 7, DENY),
                acl(CLUSTER, "kafka-cluster", LITERAL, "User:*", 9, ALLOW),
            ],
        )
    });
    d.each(|x| {
        wait_until(
            x,
            "the cluster ALTER denial applied",
            |x| elect_leaders(x, OPEN),
            |v| v["error"] == 31,
        );
    });
    d.step("elect_leaders.denied", |x| elect_leaders(x, OPEN));
    d.verdict();
    drop(kafka);
}

/// A group no ACL names (allowed by `allow.everyone.if.no.acl.found`).
const OG: &str = "acl-open-group";

/// Error codes of a config request's resources, in order.
fn config_codes(x: &mut Side, api: &str, kind: i8, name: &str) -> Value {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request as incr;
    let codes: Vec<i16> = match api {
        "describe" => {
            let r = ask!(
                x,
                DescribeConfigs,
                4,
                DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(s(name))
                        .with_configuration_keys(Some(vec![s("retention.ms")]))
                ])
            );
            r.results.iter().map(|r| r.error_code).collect()
        }
        "incremental" => {
            let key = match kind {
                TOPIC => "retention.ms",
                32 => "consumer.session.timeout.ms",
                _ => "sasl.kerberos.min.time.before.relogin",
            };
            let r = ask!(
                x,
                IncrementalAlterConfigs,
                1,
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    incr::AlterConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(s(name))
                        .with_configs(vec![incr::AlterableConfig::default()
                            .with_name(s(key))
                            .with_config_operation(0)
                            .with_value(Some(s("50000")))])
                ])
            );
            r.responses.iter().map(|r| r.error_code).collect()
        }
        _ => {
            use kafka_protocol::messages::alter_configs_request as legacy;
            let r = ask!(
                x,
                AlterConfigs,
                2,
                AlterConfigsRequest::default().with_resources(vec![
                    legacy::AlterConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(s(name))
                        .with_configs(vec![legacy::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("50000")))])
                ])
            );
            r.responses.iter().map(|r| r.error_code).collect()
        }
    };
    json!(codes)
}

/// OffsetCommit v9 of a simple consumer (generation -1) in `OG`: (topic, code) sorted.
fn offset_commit(x: &mut Side, topics: &[&str]) -> Value {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let r = ask!(
        x,
        OffsetCommit,
        8,
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(OG)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(s(""))
            .with_topics(
                topics
                    .iter()
                    .map(|t| OffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)
                            .with_committed_leader_epoch(-1)]))
                    .collect()
            )
    );
    let mut out: Vec<Value> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| json!([t.name.as_str(), p.error_code]))
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    json!(out)
}

/// OffsetFetch v8 of one group (`None`: every topic): the group's error and
/// (topic, code, offset) sorted.
fn offset_fetch(x: &mut Side, group: &str, topics: Option<&[&str]>) -> Value {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    let r = ask!(
        x,
        OffsetFetch,
        8,
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        OffsetFetchRequestTopics::default()
                            .with_name(topic(t))
                            .with_partition_indexes(vec![0])
                    })
                    .collect()
            }))])
    );
    let g = &r.groups[0];
    let mut out: Vec<Value> = g
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| json!([t.name.as_str(), p.error_code, p.committed_offset]))
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    json!({ "error": g.error_code, "topics": out })
}

fn offset_fetch_v7(x: &mut Side, group: &str) -> Value {
    let r = ask!(
        x,
        OffsetFetch,
        7,
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None)
    );
    json!({ "error": r.error_code, "topics": r.topics.len() })
}

fn offset_delete(x: &mut Side, group: &str, topics: &[&str]) -> Value {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let r = ask!(
        x,
        OffsetDelete,
        0,
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(
                topics
                    .iter()
                    .map(|t| OffsetDeleteRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0)
                        ]))
                    .collect()
            )
    );
    let mut out: Vec<Value> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| json!([t.name.as_str(), p.error_code]))
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    json!({ "error": r.error_code, "topics": out })
}

fn find_coordinators(x: &mut Side, version: i16, key: &str, key_type: i8) -> Value {
    let req = FindCoordinatorRequest::default().with_key_type(key_type);
    let req = if version >= 4 {
        req.with_coordinator_keys(vec![s(key)])
    } else {
        req.with_key(s(key))
    };
    let r = ask!(x, FindCoordinator, version, req);
    json!({
        "error": r.error_code,
        "coordinators": r.coordinators.iter().map(|c| c.error_code).collect::<Vec<_>>(),
    })
}

fn offset_for_leader_epoch(x: &mut Side, t: &str) -> Value {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let r = ask!(
        x,
        OffsetForLeaderEpoch,
        4,
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic(t))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(0)])])
    );
    json!(r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect::<Vec<_>>())
}

/// DescribeProducers of partition 0 of `topics`: each topic's partitions' codes.
fn describe_producers(x: &mut Side, topics: &[&str]) -> Value {
    use describe_producers_request::TopicRequest;
    let r = ask!(
        x,
        DescribeProducers,
        0,
        DescribeProducersRequest::default().with_topics(
            topics
                .iter()
                .map(|t| {
                    TopicRequest::default()
                        .with_name(TopicName(s(t)))
                        .with_partition_indexes(vec![0])
                })
                .collect()
        )
    );
    json!(r
        .topics
        .iter()
        .map(|t| {
            let codes: Vec<_> = t.partitions.iter().map(|p| p.error_code).collect();
            json!([t.name.0.to_string(), codes])
        })
        .collect::<Vec<_>>())
}

/// A preferred election for partition 0 of `topic`: the request's and the partition's
/// codes.
fn elect_leaders(x: &mut Side, topic: &str) -> Value {
    use elect_leaders_request::TopicPartitions;
    let r = ask!(
        x,
        ElectLeaders,
        2,
        ElectLeadersRequest::default()
            .with_election_type(0)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![0])]))
    );
    let codes: Vec<_> = r
        .replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| p.error_code))
        .collect();
    json!({ "error": r.error_code, "partitions": codes })
}

fn txn_requests(d: &mut Diff) {
    const TXN_ID: &str = "acl-txn";
    d.step("end_txn.denied", |x| {
        let r = ask!(
            x,
            EndTxn,
            3,
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(TXN_ID)))
                .with_producer_id(ProducerId(1))
                .with_producer_epoch(0)
                .with_committed(true)
        );
        json!(r.error_code)
    });
    d.step("add_offsets_to_txn.denied", |x| {
        let r = ask!(
            x,
            AddOffsetsToTxn,
            3,
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s(TXN_ID)))
                .with_producer_id(ProducerId(1))
                .with_producer_epoch(0)
                .with_group_id(GroupId(s(OG)))
        );
        json!(r.error_code)
    });
    d.step("describe_transactions.denied", |x| {
        let r = ask!(
            x,
            DescribeTransactions,
            0,
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s(TXN_ID))])
        );
        json!(r
            .transaction_states
            .iter()
            .map(|t| t.error_code)
            .collect::<Vec<_>>())
    });
}

/// The checks Kafka makes per resource inside the config, offset, coordinator and
/// transaction requests, under the ACLs of `create_acls.ok`.
fn per_resource_checks(d: &mut Diff) {
    d.step("describe_configs.topic_denied", |x| {
        config_codes(x, "describe", TOPIC, DENIED)
    });
    d.step("describe_configs.group_denied", |x| {
        config_codes(x, "describe", 32, G)
    });
    d.step("describe_configs.broker", |x| {
        config_codes(x, "describe", 4, "1")
    });
    d.step("incremental_alter_configs.topic_denied", |x| {
        config_codes(x, "incremental", TOPIC, DENIED)
    });
    d.step("incremental_alter_configs.group_denied", |x| {
        config_codes(x, "incremental", 32, G)
    });
    d.step("alter_configs.topic_denied", |x| {
        config_codes(x, "legacy", TOPIC, DENIED)
    });
    // Both create their offsets topic on a FindCoordinator; Kafka answers
    // NOT_COORDINATOR while it loads the group's partition.
    d.each(|x| {
        wait_until(
            x,
            "a group coordinator",
            |x| find_coordinator(x, 4, OG, 0),
            |v| v["error"] == 0,
        );
        wait_until(
            x,
            "a group coordinator",
            |x| offset_commit(x, &[PREFIXED]),
            |v| v[0][1] == 0,
        );
    });
    d.step("offset_commit.partly_denied", |x| {
        offset_commit(x, &[DENIED, PREFIXED])
    });
    d.step("offset_fetch.topics_partly_denied", |x| {
        offset_fetch(x, OG, Some(&[DENIED, PREFIXED]))
    });
    d.step("offset_fetch.every_topic", |x| offset_fetch(x, OG, None));
    d.step("offset_fetch.group_denied", |x| offset_fetch(x, G, None));
    d.step("offset_fetch.v7_group_denied", |x| offset_fetch_v7(x, G));
    d.step("offset_delete.group_denied", |x| {
        offset_delete(x, G, &[PREFIXED])
    });
    d.step("offset_delete.topic_denied", |x| {
        offset_delete(x, OG, &[DENIED, PREFIXED])
    });
    d.step("find_coordinator.group_denied", |x| {
        find_coordinators(x, 4, G, 0)
    });
    d.step("find_coordinator.v3_group_denied", |x| {
        find_coordinators(x, 3, G, 0)
    });
    d.step("find_coordinator.transaction_denied", |x| {
        find_coordinators(x, 4, "acl-txn", 1)
    });
    d.step("describe_producers.partly_denied", |x| {
        describe_producers(x, &[DENIED, PREFIXED, OPEN])
    });
    d.step("offset_for_leader_epoch.denied", |x| {
        offset_for_leader_epoch(x, DENIED)
    });
    d.step("consumer_group_describe.denied", |x| {
        let r = ask!(
            x,
            ConsumerGroupDescribe,
            1,
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(G))])
        );
        json!(r.groups.iter().map(|g| g.error_code).collect::<Vec<_>>())
    });
    txn_requests(d);
}

/// With cluster ACLs that allow ALTER (so the ACLs can still be deleted) and
/// CLUSTER_ACTION (Kafka's broker forwards DeleteAcls and ListPartitionReassignments to
/// its controller as the anonymous principal: without it both fail with
/// UNKNOWN_SERVER_ERROR) but deny DESCRIBE and ALTER_CONFIGS: broker configs and
/// ListPartitionReassignments are refused and ListGroups is filtered.
fn cluster_checks(d: &mut Diff) {
    const ALTER: i8 = 7;
    const ALTER_CONFIGS: i8 = 11;
    const CLUSTER_ACTION: i8 = 9;
    d.step("create_acls.cluster", |x| {
        create_acls(
            x,
            vec![
                acl(CLUSTER, "kafka-cluster", LITERAL, "User:*", ALTER, ALLOW),
                acl(
                    CLUSTER,
                    "kafka-cluster",
                    LITERAL,
                    "User:*",
                    CLUSTER_ACTION,
                    ALLOW,
                ),
                acl(CLUSTER, "kafka-cluster", LITERAL, "User:*", DESCRIBE, DENY),
                acl(
                    CLUSTER,
                    "kafka-cluster",
                    LITERAL,
                    "User:*",
                    ALTER_CONFIGS,
                    DENY,
                ),
            ],
        )
    });
    // Kafka applies ACLs after answering CreateAcls.
    d.each(|x| {
        wait_until(
            x,
            "the cluster ACLs applied",
            |x| config_codes(x, "describe", 4, "1"),
            |v| v[0] == 31,
        );
    });
    d.step("list_partition_reassignments.denied", |x| {
        let r = ask!(
            x,
            ListPartitionReassignments,
            0,
            ListPartitionReassignmentsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(None)
        );
        json!(r.error_code)
    });
    d.step("describe_configs.broker_denied", |x| {
        config_codes(x, "describe", 4, "1")
    });
    d.step("describe_log_dirs.denied", |x| {
        let r = ask!(
            x,
            DescribeLogDirs,
            4,
            DescribeLogDirsRequest::default().with_topics(None)
        );
        json!({ "error": r.error_code, "dirs": r.results.len() })
    });
    d.step("incremental_alter_configs.broker_denied", |x| {
        config_codes(x, "incremental", 4, "1")
    });
    d.step("list_groups.filtered", |x| {
        let r = ask!(x, ListGroups, 5, ListGroupsRequest::default());
        let mut groups: Vec<String> = r
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .filter(|g| g.starts_with("acl-"))
            .collect();
        groups.sort();
        json!({ "error": r.error_code, "groups": groups })
    });
}
