//! Kafka's admin APIs on the Kafka listener (CreateTopics, CreatePartitions,
//! DeleteTopics, DescribeCluster, DescribeConfigs, IncrementalAlterConfigs,
//! AlterConfigs), sent as raw protocol frames at several versions and
//! checked against what Sluice's own CLI then reports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BytesMut};
use common::Dev;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as AlterResource, AlterableConfig as LegacyAlterable,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncrementalResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// One Kafka connection, one request at a time.
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).expect("connect to the Kafka listener"),
            correlation: 0,
        }
    }

    fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation += 1;
        let key = ApiKey::try_from(R::KEY).expect("known key");
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("kafka_admin test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        self.stream
            .write_all(&(body.len() as i32).to_be_bytes())
            .unwrap();
        self.stream.write_all(&body).unwrap();
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("a response");
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        let mut frame = bytes::Bytes::from(frame);
        let h = ResponseHeader::decode(&mut frame, R::Response::header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.correlation);
        let resp = R::Response::decode(&mut frame, version).unwrap();
        assert!(!frame.has_remaining(), "bytes left after the response");
        resp
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

fn describe(dev: &Dev, topic: &str) -> serde_json::Value {
    serde_json::from_str(&dev.ok(&["topic", "describe", topic, "--output", "json"], "")).unwrap()
}

#[test]
fn kafka_admin_calls_create_grow_and_delete_topics() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "2"]);
    let kafka = dev.kafka();
    let mut c = Conn::new(&kafka);

    for version in [2, 5, 7] {
        let topic = format!("admin-v{version}");
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(&topic))
                .with_num_partitions(3)
                .with_replication_factor(2)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("3600000")))])]);
        let r: CreateTopicsResponse = c.call(&create, version);
        let t = &r.topics[0];
        assert_eq!(t.error_code, 0, "v{version}: {:?}", t.error_message);
        if version >= 5 {
            assert_eq!((t.num_partitions, t.replication_factor), (3, 2));
        }
        let d = describe(&dev, &topic);
        assert_eq!(d["partitions"].as_array().map(Vec::len), Some(3), "{d}");
        assert_eq!(d["configs"]["retention.ms"], "3600000", "{d}");
        if version >= 7 {
            assert_eq!(
                t.topic_id.simple().to_string(),
                d["topic_id"].as_str().unwrap(),
                "the topic id Kafka clients see is Sluice's"
            );
        }
        // Again: TOPIC_ALREADY_EXISTS, with a message from v1 on.
        let again: CreateTopicsResponse = c.call(&create, version);
        assert_eq!(again.topics[0].error_code, 36);
    }

    // A name Kafka refuses, and defaults (-1) for partitions and replication factor.
    let r: CreateTopicsResponse = c.call(
        &CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(name("bad/name"))
                .with_num_partitions(1)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(name("defaults"))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        ]),
        7,
    );
    assert_eq!(r.topics[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    assert_eq!(r.topics[1].error_code, 0, "{:?}", r.topics[1].error_message);
    assert_eq!(r.topics[1].num_partitions, 1, "dev's --num-partitions");
    assert_eq!(
        r.topics[1].replication_factor, 2,
        "three replicas, or every live broker when fewer"
    );

    // More partitions; fewer is refused (INVALID_PARTITIONS).
    for (count, code) in [(5, 0), (4, 37)] {
        let r: CreatePartitionsResponse = c.call(
            &CreatePartitionsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("admin-v7"))
                    .with_count(count)]),
            3,
        );
        assert_eq!(r.results[0].error_code, code, "{:?}", r.results[0]);
    }
    assert_eq!(
        describe(&dev, "admin-v7")["partitions"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );

    // Configs: effective values with their sources, then altered both ways.
    let configs_of = |c: &mut Conn, version: i16| -> Vec<(String, Option<String>, i8)> {
        let r: DescribeConfigsResponse = c.call(
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("admin-v7"))
                    .with_configuration_keys(None),
            ]),
            version,
        );
        assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0]);
        r.results[0]
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_ref().map(|v| v.to_string()),
                    c.config_source,
                )
            })
            .collect()
    };
    for version in [1, 4] {
        let configs = configs_of(&mut c, version);
        assert!(
            configs.contains(&("retention.ms".into(), Some("3600000".into()), 1)),
            "the topic's own setting, DYNAMIC_TOPIC_CONFIG: {configs:?}"
        );
        assert!(
            configs.contains(&("cleanup.policy".into(), Some("delete".into()), 5)),
            "a default, DEFAULT_CONFIG: {configs:?}"
        );
    }
    let r: IncrementalAlterConfigsResponse = c.call(
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            IncrementalResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("admin-v7"))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("segment.ms"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_static_str("600000"))),
                    AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_config_operation(1),
                ]),
        ]),
        1,
    );
    assert_eq!(r.responses[0].error_code, 0, "{:?}", r.responses[0]);
    let d = describe(&dev, "admin-v7");
    assert_eq!(d["configs"]["segment.ms"], "600000", "{d}");
    assert_eq!(d["config_sources"]["retention.ms"], "default", "{d}");
    // The legacy AlterConfigs replaces the whole set: segment.ms goes back to default.
    let r: AlterConfigsResponse = c.call(
        &AlterConfigsRequest::default().with_resources(vec![AlterResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("admin-v7"))
            .with_configs(vec![LegacyAlterable::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("7200000")))])]),
        2,
    );
    assert_eq!(r.responses[0].error_code, 0, "{:?}", r.responses[0]);
    let d = describe(&dev, "admin-v7");
    assert_eq!(d["configs"]["retention.ms"], "7200000", "{d}");
    assert_eq!(d["config_sources"]["segment.ms"], "default", "{d}");
    // An invalid value is the controller's refusal, named.
    let r: IncrementalAlterConfigsResponse = c.call(
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            IncrementalResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("admin-v7"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("soon")))]),
        ]),
        0,
    );
    assert_eq!(
        r.responses[0].error_code, 40,
        "INVALID_CONFIG: {:?}",
        r.responses[0]
    );

    // The cluster: both brokers at their Kafka addresses.
    let cluster: DescribeClusterResponse = c.call(&DescribeClusterRequest::default(), 1);
    assert_eq!(cluster.error_code, 0);
    assert_eq!(cluster.brokers.len(), 2);
    assert!(
        cluster
            .brokers
            .iter()
            .any(|b| format!("{}:{}", b.host.as_str(), b.port) == kafka),
        "{cluster:?}"
    );

    // Delete by name (v1) and by id (v6); an unknown name answers its error.
    let v2_id = {
        let d = describe(&dev, "admin-v5");
        uuid::Uuid::try_parse(d["topic_id"].as_str().unwrap()).unwrap()
    };
    let r: DeleteTopicsResponse = c.call(
        &DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topic_names(vec![name("admin-v2"), name("no-such-topic")]),
        1,
    );
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(r.responses[1].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let r: DeleteTopicsResponse = c.call(
        &DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteTopicState::default().with_topic_id(v2_id)]),
        6,
    );
    assert_eq!(r.responses[0].error_code, 0, "{:?}", r.responses[0]);
    assert_eq!(
        r.responses[0].name.as_ref().map(|n| n.0.to_string()),
        Some("admin-v5".to_string())
    );
    let listed = dev.ok(&["topic", "list"], "");
    assert!(
        !listed.contains("admin-v2") && !listed.contains("admin-v5"),
        "{listed}"
    );
    assert!(listed.contains("admin-v7"), "{listed}");
}

/// IncrementalAlterConfigs APPEND and SUBTRACT on `cleanup.policy`, Kafka's list-valued
/// topic config (librdkafka's suite turns compaction on with `APPEND compact`, test
/// 0011); on a config that is not a list they answer INVALID_CONFIG.
#[test]
fn incremental_alter_configs_appends_and_subtracts_cleanup_policy() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &[]);
    let mut c = Conn::new(&dev.kafka());
    dev.ok(&["topic", "create", "policies", "--partitions", "1"], "");
    let mut alter = |op: i8, name: &'static str, value: &'static str| {
        let r: IncrementalAlterConfigsResponse = c.call(
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                IncrementalResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("policies"))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(StrBytes::from_static_str(name))
                        .with_config_operation(op)
                        .with_value(Some(StrBytes::from_static_str(value)))]),
            ]),
            1,
        );
        (
            r.responses[0].error_code,
            r.responses[0].error_message.clone(),
        )
    };
    let policy = |dev: &Dev| describe(dev, "policies")["configs"]["cleanup.policy"].clone();
    // APPEND to the default (delete).
    assert_eq!(alter(2, "cleanup.policy", "compact").0, 0);
    assert_eq!(policy(&dev), "compact,delete");
    // APPEND of an item already there changes nothing; SUBTRACT removes one.
    assert_eq!(alter(2, "cleanup.policy", "delete").0, 0);
    assert_eq!(policy(&dev), "compact,delete");
    assert_eq!(alter(3, "cleanup.policy", "delete").0, 0);
    assert_eq!(policy(&dev), "compact");
    // Not a list: INVALID_CONFIG, and nothing changes.
    let (code, message) = alter(2, "retention.ms", "5");
    assert_eq!(code, 40, "INVALID_CONFIG: {message:?}");
    assert_eq!(policy(&dev), "compact");
    dev.stop();
}

/// With no ACLs every operation is allowed: Metadata (v8+) and DescribeCluster give the
/// full authorized-operations bit sets when asked — 8 topic operations, 7 cluster ones —
/// and Kafka's "not given" (i32::MIN) otherwise (librdkafka's 0081_admin DescribeTopics
/// and DescribeCluster "with authorized operations" expected 8 and 7, got 0).
#[test]
fn authorized_operations_are_all_when_asked() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &[]);
    let mut c = Conn::new(&dev.kafka());
    dev.ok(&["topic", "create", "ops", "--partitions", "1"], "");
    let ops = |bits: i32| (0..32).filter(|b| bits & (1 << b) != 0).count();
    for version in [8, 10, 12] {
        for asked in [false, true] {
            let r: MetadataResponse = c.call(
                &MetadataRequest::default()
                    .with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(name("ops")))
                    ]))
                    .with_include_topic_authorized_operations(asked)
                    .with_include_cluster_authorized_operations(asked && version <= 10),
                version,
            );
            let t = &r.topics[0];
            assert_eq!(t.error_code, 0, "{t:?}");
            if asked {
                assert_eq!(ops(t.topic_authorized_operations), 8, "v{version}: {t:?}");
            } else {
                assert_eq!(t.topic_authorized_operations, i32::MIN, "v{version}");
            }
            if asked && version <= 10 {
                assert_eq!(ops(r.cluster_authorized_operations), 7, "v{version}");
            }
        }
    }
    for asked in [false, true] {
        let r: DescribeClusterResponse = c.call(
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(asked),
            1,
        );
        if asked {
            assert_eq!(ops(r.cluster_authorized_operations), 7, "{r:?}");
        } else {
            assert_eq!(r.cluster_authorized_operations, i32::MIN, "{r:?}");
        }
    }
    dev.stop();
}
