//! Kafka's admin APIs on the Kafka listener (CreateTopics, CreatePartitions,
//! DeleteTopics, DescribeCluster), sent as raw protocol frames at several versions and
//! checked against what Sluice's own CLI then reports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BytesMut};
use common::Dev;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, RequestHeader, ResponseHeader, TopicName,
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
    let kafka = dev.kafka_addr.clone().expect("kafka listener");
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
    assert_eq!(r.topics[1].num_partitions, 1);

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
    assert!(!listed.contains("admin-v2") && !listed.contains("admin-v5"), "{listed}");
    assert!(listed.contains("admin-v7"), "{listed}");
}
