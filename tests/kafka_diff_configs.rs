//! Broker, group and topic configs against Apache Kafka 4.4 as the reference (the
//! harness of tests/kafka_diff.rs, `tests/common/diff.rs`): DescribeConfigs,
//! AlterConfigs and IncrementalAlterConfigs on BROKER resources (this broker, another
//! id, the cluster-wide default; a config that can be set, one that cannot, a bad
//! value), on GROUP resources (KIP-848's `consumer.session.timeout.ms` and
//! `consumer.heartbeat.interval.ms`, within and out of Kafka's bounds, the interval a
//! member is then given), and the topic configs Sluice accepts without acting on them
//! (`file.delete.delay.ms`, …) with Kafka's defaults — what librdkafka's 0081_admin and
//! 0077_compaction send. Error codes are compared, not messages.

#[macro_use]
mod common;

use common::apache_kafka::ApacheKafka;
use common::diff::*;
use common::Dev;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use serde_json::{json, Value};

/// Steps whose answers differ from Apache Kafka's, with the reason.
const ALLOWED: &[(&str, &str)] = &[
    (
        "alter.broker.unknown_config",
        "Kafka stores a broker config name it does not know (for plugins to read); Sluice has no plugins and refuses it (INVALID_REQUEST) rather than store what nothing reads",
    ),
    (
        "incremental.broker.background_threads",
        "Kafka resizes its background thread pool; Sluice has none to resize and refuses the config as Kafka refuses one it cannot change without a restart (INVALID_REQUEST)",
    ),
    (
        "incremental.broker.append_log_cleanup_policy",
        "Kafka takes a per-broker default cleanup policy; Sluice's log defaults come from its command line only, so it refuses the change (INVALID_REQUEST) rather than store what it would not apply",
    ),
];

const BROKER: i8 = 4;
const GROUP: i8 = 32;
const TOPIC: i8 = 2;
const RELOGIN: &str = "sasl.kerberos.min.time.before.relogin";
const SESSION: &str = "consumer.session.timeout.ms";
const INTERVAL: &str = "consumer.heartbeat.interval.ms";

/// The topic configs Sluice takes without acting on them (docs/kafka-compatibility.md).
const PASSIVE: &[&str] = &[
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "file.delete.delay.ms",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "segment.jitter.ms",
];

/// DescribeConfigs v4 of one resource, the keys asked: (name, value, source, read only).
fn describe(side: &mut Side, kind: i8, name: &str, keys: &[&str]) -> Value {
    let r = ask!(
        side,
        DescribeConfigs,
        4,
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))
            .with_configuration_keys(Some(keys.iter().map(|k| s(k)).collect()))])
    );
    let res = &r.results[0];
    let mut configs: Vec<Value> = res
        .configs
        .iter()
        .map(|c| {
            json!([
                c.name.as_str(),
                c.value.as_ref().map(|v| v.to_string()),
                c.config_source,
                c.read_only
            ])
        })
        .collect();
    configs.sort_by_key(|c| c[0].as_str().unwrap_or_default().to_string());
    json!({ "error": res.error_code, "configs": configs })
}

/// IncrementalAlterConfigs v1 of one resource: (name, operation, value).
fn incremental(
    side: &mut Side,
    kind: i8,
    name: &str,
    changes: &[(&str, i8, Option<&str>)],
) -> Value {
    let r = ask!(
        side,
        IncrementalAlterConfigs,
        1,
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(s(name))
                .with_configs(
                    changes
                        .iter()
                        .map(|(k, op, v)| AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(*op)
                            .with_value(v.map(s)))
                        .collect()
                )
        ])
    );
    let res = &r.responses[0];
    eprintln!(
        "    {}: {:?}",
        side.name,
        res.error_message.as_ref().map(|m| m.to_string())
    );
    json!({ "error": res.error_code })
}

/// AlterConfigs v2 (the legacy call: the resource's whole set) of one resource.
fn alter(side: &mut Side, kind: i8, name: &str, configs: &[(&str, &str)]) -> Value {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let r = ask!(
        side,
        AlterConfigs,
        2,
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| AlterableConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v))))
                    .collect()
            )])
    );
    let res = &r.responses[0];
    eprintln!(
        "    {}: {:?}",
        side.name,
        res.error_message.as_ref().map(|m| m.to_string())
    );
    json!({ "error": res.error_code })
}

/// A KIP-848 member joining group `g` (subscribed to `t`): the error and the heartbeat
/// interval it is given.
fn join(side: &mut Side, g: &str, t: &str) -> Value {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let r = ask!(
        side,
        ConsumerGroupHeartbeat,
        1,
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(g)))
            .with_member_id(s("m-1"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![topic(t)]))
            .with_topic_partitions(Some(Vec::<TopicPartitions>::new()))
    );
    json!({ "error": r.error_code, "heartbeat_interval_ms": r.heartbeat_interval_ms })
}

/// Waits on both sides until `key` of the resource reads `value`: Kafka applies a change
/// after answering it (its controller commits it, then each broker applies it).
fn settle(d: &mut Diff, kind: i8, name: &str, key: &str, value: &str) {
    d.each(|x| {
        wait_until(
            x,
            "the change applied",
            |x| describe(x, kind, name, &[key]),
            |v| v["configs"][0][1] == value,
        );
    });
}

#[test]
fn configs_answer_as_apache_kafka_does() {
    let mut kafka = ApacheKafka::launch();
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    kafka.wait_ready();
    let mut d = Diff {
        sides: [
            Side::new("sluice", dev.kafka()),
            Side::new("kafka", kafka.addr.clone()),
        ],
        steps: Vec::new(),
        allowed: ALLOWED,
    };
    // Brokers: both answer as node 1.
    d.step("describe.broker", |x| {
        describe(x, BROKER, "1", &["broker.id", RELOGIN])
    });
    d.step("describe.broker.other_id", |x| {
        describe(x, BROKER, "7", &[RELOGIN])
    });
    d.step("describe.broker.cluster_default", |x| {
        describe(x, BROKER, "", &[RELOGIN])
    });
    d.step("incremental.broker.set", |x| {
        incremental(x, BROKER, "1", &[(RELOGIN, 0, Some("58000"))])
    });
    settle(&mut d, BROKER, "1", RELOGIN, "58000");
    d.step("describe.broker.set", |x| {
        describe(x, BROKER, "1", &[RELOGIN])
    });
    d.step("incremental.broker.bad_value", |x| {
        incremental(x, BROKER, "1", &[(RELOGIN, 0, Some("soon"))])
    });
    d.step("incremental.broker.read_only", |x| {
        incremental(x, BROKER, "1", &[("broker.id", 0, Some("5"))])
    });
    d.step("incremental.broker.background_threads", |x| {
        incremental(x, BROKER, "1", &[("background.threads", 0, Some("9"))])
    });
    d.step("incremental.broker.append_log_cleanup_policy", |x| {
        incremental(
            x,
            BROKER,
            "1",
            &[("log.cleanup.policy", 2, Some("compact"))],
        )
    });
    d.step("incremental.broker.not_a_number", |x| {
        incremental(x, BROKER, "one", &[(RELOGIN, 0, Some("58000"))])
    });
    d.step("alter.broker.set", |x| {
        alter(x, BROKER, "1", &[(RELOGIN, "57000")])
    });
    settle(&mut d, BROKER, "1", RELOGIN, "57000");
    d.step("describe.broker.altered", |x| {
        describe(x, BROKER, "1", &[RELOGIN])
    });
    d.step("incremental.broker.delete", |x| {
        incremental(x, BROKER, "1", &[(RELOGIN, 1, None)])
    });
    settle(&mut d, BROKER, "1", RELOGIN, "60000");
    d.step("describe.broker.deleted", |x| {
        describe(x, BROKER, "1", &[RELOGIN])
    });
    // Listener settings cannot be set cluster-wide.
    d.step("incremental.cluster_default.set", |x| {
        incremental(x, BROKER, "", &[(RELOGIN, 0, Some("59000"))])
    });
    d.step("alter.broker.unknown_config", |x| {
        alter(x, BROKER, "1", &[("no.such.config", "1")])
    });

    // Groups (KIP-848 group configs), for a group that does not exist yet.
    d.step("describe.group.unknown", |x| {
        describe(x, GROUP, "cg", &[SESSION, INTERVAL])
    });
    d.step("incremental.group.set", |x| {
        incremental(
            x,
            GROUP,
            "cg",
            &[(SESSION, 0, Some("50000")), (INTERVAL, 0, Some("6000"))],
        )
    });
    settle(&mut d, GROUP, "cg", SESSION, "50000");
    d.step("describe.group.set", |x| {
        describe(x, GROUP, "cg", &[SESSION, INTERVAL])
    });
    d.step("incremental.group.session_too_short", |x| {
        incremental(x, GROUP, "cg", &[(SESSION, 0, Some("1000"))])
    });
    d.step("incremental.group.interval_too_long", |x| {
        incremental(x, GROUP, "cg", &[(INTERVAL, 0, Some("60000"))])
    });
    d.step("incremental.group.unknown_config", |x| {
        incremental(x, GROUP, "cg", &[("no.such.config", 0, Some("1"))])
    });
    // A member of the group is given the group's heartbeat interval. Kafka answers
    // NOT_COORDINATOR while it loads the group's partition.
    d.step("create_topics.cg", |x| create_topic(x, "cgt", 1, 1, &[]));
    d.each(|x| wait_topic(x, "cgt", 1));
    d.each(|x| {
        wait_until(
            x,
            "the offsets topic",
            |x| find_coordinator(x, 4, "cg", 0),
            |v| v["error"] == 0,
        );
        wait_until(
            x,
            "a group coordinator",
            |x| join(x, "cg", "cgt"),
            |v| v["error"] == 0,
        );
    });
    d.step("consumer_group_heartbeat.group_interval", |x| {
        join(x, "cg", "cgt")
    });
    // The legacy call replaces the group's whole set.
    d.step("alter.group", |x| {
        alter(x, GROUP, "cg", &[(SESSION, "55000")])
    });
    settle(&mut d, GROUP, "cg", INTERVAL, "5000");
    d.step("describe.group.altered", |x| {
        describe(x, GROUP, "cg", &[SESSION, INTERVAL])
    });
    d.step("incremental.group.delete", |x| {
        incremental(x, GROUP, "cg", &[(SESSION, 1, None), (INTERVAL, 1, None)])
    });
    settle(&mut d, GROUP, "cg", SESSION, "45000");
    d.step("describe.group.deleted", |x| {
        describe(x, GROUP, "cg", &[SESSION, INTERVAL])
    });

    // Topic configs Sluice takes without acting on them: Kafka's defaults, and a topic
    // created with `file.delete.delay.ms` as librdkafka's 0077 creates one.
    d.step("create_topics.file_delete_delay", |x| {
        create_topic(x, "fdd", 1, 1, &[("file.delete.delay.ms", "10000")])
    });
    d.each(|x| wait_topic(x, "fdd", 1));
    d.step("describe.topic.passive_defaults", |x| {
        describe(x, TOPIC, "fdd", PASSIVE)
    });
    d.step("incremental.topic.passive_set", |x| {
        incremental(
            x,
            TOPIC,
            "fdd",
            &[
                ("preallocate", 0, Some("true")),
                ("segment.jitter.ms", 0, Some("1000")),
                ("compression.gzip.level", 0, Some("5")),
            ],
        )
    });
    d.step("incremental.topic.passive_bad_value", |x| {
        incremental(
            x,
            TOPIC,
            "fdd",
            &[("compression.gzip.level", 0, Some("12"))],
        )
    });
    settle(&mut d, TOPIC, "fdd", "preallocate", "true");
    d.step("describe.topic.passive_set", |x| {
        describe(x, TOPIC, "fdd", PASSIVE)
    });
    d.verdict();
}
