//! Apache Kafka as the reference: the same raw Kafka requests (the kafka-protocol crate's
//! types over a socket) go to a `sluice dev` and to Apache Kafka 4.4 (a KRaft broker in
//! one process, `tests/common/apache_kafka.rs`), and the answers are compared after
//! normalizing away what legitimately differs (ids, hosts, ports, timestamps, messages).
//!
//! Every step is compared. A difference fails the test unless [`ALLOWED`] lists its step
//! with the reason — the same differences docs/kafka-compatibility.md lists under
//! "Differences from Apache Kafka" — and an allowed step that no longer differs fails
//! it too, so the list stays true.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::apache_kafka::ApacheKafka;
use common::diff::*;
use common::kafka_raw::Conn;
use common::Dev;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::{json, Value};

/// Steps whose answers differ from Apache Kafka's, with the reason (by design). Each is in docs/kafka-compatibility.md,
/// "Differences from Apache Kafka".
const ALLOWED: &[(&str, &str)] = &[
    (
        "metadata.unknown_auto_create_first_answer",
        "a topic being auto-created is LEADER_NOT_AVAILABLE (5), as Kafka before 4 \
         answered; Kafka 4.4 answers UNKNOWN_TOPIC_OR_PARTITION (3); clients retry both",
    ),
    (
        "offset_commit.empty_group_id",
        "Sluice refuses an empty group id everywhere (INVALID_GROUP_ID, 24); Kafka keeps \
         the empty group for old clients' offset storage",
    ),
    (
        "offset_commit.consumer_member_v8",
        "a KIP-848 member may commit with any OffsetCommit version; Kafka requires v9+ \
         of it (UNSUPPORTED_VERSION, 35), as every KIP-848 client sends",
    ),
    (
        "describe_configs.min_insync_replicas",
        "Kafka 4's storage format writes a cluster-wide min.insync.replicas default and \
         reports it as DYNAMIC_DEFAULT_BROKER_CONFIG (3); Sluice has no dynamic broker \
         defaults: DEFAULT_CONFIG (5), the same value",
    ),
    (
        "describe_groups.of_a_consumer_group",
        "a group without members has no protocol in Sluice: DescribeGroups describes an \
         emptied KIP-848 group as an Empty classic one; Kafka keeps its type and answers \
         Dead (ConsumerGroupDescribe describes it alike on both)",
    ),
];

fn commit(
    side: &mut Side,
    group: &str,
    member: &str,
    generation: i32,
    t: &str,
    partition: i32,
    offset: i64,
) -> Value {
    let r = ask!(
        side,
        OffsetCommit,
        8,
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic(t))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(s("meta")))])])
    );
    json!({ "error": r.topics[0].partitions[0].error_code })
}

fn offset_fetch(side: &mut Side, group: &str, t: &str, partitions: &[i32]) -> Value {
    let r = ask!(
        side,
        OffsetFetch,
        8,
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic(t))
                .with_partition_indexes(partitions.to_vec())]))])
    );
    let g = &r.groups[0];
    json!({
        "error": g.error_code,
        "partitions": g.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| json!({
            "partition": p.partition_index, "offset": p.committed_offset,
            "metadata": p.metadata.as_ref().map(|m| m.to_string()), "error": p.error_code,
        })).collect::<Vec<_>>(),
    })
}

fn offset_fetch_v1(side: &mut Side, group: &str, t: &str, partition: i32) -> Value {
    let r = ask!(
        side,
        OffsetFetch,
        1,
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic(t))
                .with_partition_indexes(vec![partition])]))
    );
    let p = &r.topics[0].partitions[0];
    json!({ "offset": p.committed_offset, "error": p.error_code })
}

/// ConsumerProtocol subscription v0 to `topics`, no user data.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// ConsumerProtocol assignment v0 of partition 0 of `t`, no user data.
fn assignment(t: &str) -> Bytes {
    let mut b = vec![0, 0, 0, 0, 0, 1];
    b.extend_from_slice(&(t.len() as i16).to_be_bytes());
    b.extend_from_slice(t.as_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

const GROUP: &str = "cg";

fn join(
    side: &mut Side,
    group: &str,
    member: &str,
    session_ms: i32,
    protocol_type: &str,
) -> JoinGroupResponse {
    let r = side.ask(
        ApiKey::JoinGroup,
        7,
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_session_timeout_ms(session_ms)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s(member))
                .with_protocol_type(s(protocol_type))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(subscription(&["d"]))]),
        ),
    );
    match r {
        Ok(ResponseKind::JoinGroup(r)) => r,
        other => panic!("{}: JoinGroup answered {other:?}", side.name),
    }
}

fn join_step(side: &mut Side, group: &str, member: &str, session_ms: i32, ty: &str) -> Value {
    let r = join(side, group, member, session_ms, ty);
    json!({ "error": r.error_code, "generation": r.generation_id })
}

fn heartbeat(side: &mut Side, member: &str, generation: i32) -> Value {
    let r = ask!(
        side,
        Heartbeat,
        4,
        HeartbeatRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_generation_id(generation)
            .with_member_id(s(member))
    );
    json!({ "error": r.error_code })
}

fn sync(side: &mut Side, generation: i32) -> Value {
    let member = side.recall("member");
    let r = ask!(
        side,
        SyncGroup,
        5,
        SyncGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_generation_id(generation)
            .with_member_id(s(&member))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(assignment("d"))])
    );
    json!({
        "error": r.error_code,
        "protocol_type": r.protocol_type.as_ref().map(|p| p.to_string()),
        "protocol_name": r.protocol_name.as_ref().map(|p| p.to_string()),
        "assignment_is_the_leaders": r.assignment == assignment("d"),
    })
}

fn describe_group(side: &mut Side, group: &str) -> Value {
    let member = side.recall("member");
    let r = ask!(
        side,
        DescribeGroups,
        5,
        DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))])
    );
    let g = &r.groups[0];
    json!({
        "error": g.error_code, "state": g.group_state.as_str(),
        "protocol_type": g.protocol_type.as_str(), "protocol": g.protocol_data.as_str(),
        "members": g.members.iter().map(|m| json!({
            "is_the_member": m.member_id.as_str() == member,
            "client_id": m.client_id.as_str(),
            "metadata_as_joined": m.member_metadata == subscription(&["d"]),
            "assignment_as_synced": m.member_assignment == assignment("d"),
        })).collect::<Vec<_>>(),
    })
}

fn list_groups(side: &mut Side, states: &[&str]) -> Value {
    let r = ask!(
        side,
        ListGroups,
        4,
        ListGroupsRequest::default().with_states_filter(states.iter().map(|x| s(x)).collect())
    );
    let ours: Vec<Value> = r
        .groups
        .iter()
        .filter(|g| g.group_id.0.as_str() == GROUP)
        .map(|g| json!([g.protocol_type.as_str(), g.group_state.as_str()]))
        .collect();
    json!({ "error": r.error_code, "cg": ours })
}

fn delete_groups(side: &mut Side, groups: &[&str]) -> Value {
    let r = ask!(
        side,
        DeleteGroups,
        2,
        DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(s(g))).collect())
    );
    Value::Array(r.results.iter().map(|g| json!(g.error_code)).collect())
}

fn leave(side: &mut Side, member: &str) -> Value {
    let r = ask!(
        side,
        LeaveGroup,
        4,
        LeaveGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_members(vec![MemberIdentity::default().with_member_id(s(member))])
    );
    json!({
        "error": r.error_code,
        "members": r.members.iter().map(|m| m.error_code).collect::<Vec<_>>(),
    })
}

/// The whole differential run: one Apache Kafka, one `sluice dev`, every step on both.
#[test]
fn sluice_answers_as_apache_kafka_does() {
    // The JVM starts slowly: Sluice starts while Kafka does.
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
    topics_and_records(&mut d);
    admin(&mut d);
    simple_consumer_offsets(&mut d);
    classic_group(&mut d);
    classic_rebalance(&mut d);
    static_member(&mut d);
    consumer_group(&mut d);
    admin_and_views(&mut d);
    codecs_and_idempotence(&mut d);
    manual_assignments(&mut d);
    topic_compression(&mut d);
    validate_only(&mut d);
    d.verdict();
    drop(kafka);
}

fn topics_and_records(d: &mut Diff) {
    d.step("create_topics.new", |x| create_topic(x, "d", 1, -1, &[]));
    d.each(|x| wait_topic(x, "d", 1));
    d.step("produce.first_batch", |x| {
        produce(x, "d", 0, batch("a", 0, 3))
    });
    d.step("produce.second_batch", |x| {
        produce(x, "d", 0, batch("b", 3, 2))
    });
    d.step("fetch.from_start", |x| fetch(x, "d", 0, 0));
    d.step("fetch.middle_of_a_batch", |x| fetch(x, "d", 0, 1));
    d.step("fetch.second_batch", |x| fetch(x, "d", 0, 3));
    d.step("fetch.log_end", |x| fetch(x, "d", 0, 5));
    d.step("fetch.past_log_end", |x| fetch(x, "d", 0, 99));
    d.step("fetch.negative_offset", |x| fetch(x, "d", 0, -7));
    d.step("fetch.unknown_topic", |x| fetch(x, "no-such-topic", 0, 0));
    d.step("fetch.unknown_partition", |x| fetch(x, "d", 7, 0));
    d.step("produce.two_batches_for_one_partition", |x| {
        let mut two = BytesMut::from(&batch("c", 5, 1)[..]);
        two.extend_from_slice(&batch("c", 6, 1));
        produce(x, "d", 0, two.freeze())
    });
    d.step("produce.no_batch", |x| produce(x, "d", 0, Bytes::new()));
    d.step("produce.unknown_topic", |x| {
        produce(x, "no-such-topic", 0, batch("c", 0, 1))
    });
    d.step("produce.unknown_partition", |x| {
        produce(x, "d", 7, batch("c", 0, 1))
    });
    d.step("produce.message_too_large", |x| {
        let mut big = BytesMut::new();
        let mut r = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: T0,
            key: None,
            value: Some(Bytes::from(vec![b'x'; 1_100_000])),
            headers: Default::default(),
        };
        r.headers.clear();
        RecordBatchEncoder::encode(
            &mut big,
            [&r],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        produce(x, "d", 0, big.freeze())
    });
    d.step("fetch.after_refused_produces", |x| fetch(x, "d", 0, 5));
    d.step("list_offsets.earliest", |x| list_offsets(x, 6, "d", 0, -2));
    d.step("list_offsets.latest", |x| list_offsets(x, 6, "d", 0, -1));
    d.step("list_offsets.by_timestamp", |x| {
        list_offsets(x, 6, "d", 0, T0 + 1500)
    });
    d.step("list_offsets.by_exact_timestamp", |x| {
        list_offsets(x, 6, "d", 0, T0 + 3000)
    });
    d.step("list_offsets.after_every_timestamp", |x| {
        list_offsets(x, 6, "d", 0, T0 + 99_000)
    });
    d.step("list_offsets.v1_latest", |x| list_offsets(x, 1, "d", 0, -1));
    d.step("list_offsets.max_timestamp_v7", |x| {
        list_offsets(x, 7, "d", 0, -3)
    });
    d.step("list_offsets.unknown_topic", |x| {
        list_offsets(x, 6, "no-such-topic", 0, -1)
    });
    d.step("list_offsets.unknown_partition", |x| {
        list_offsets(x, 6, "d", 7, -1)
    });
    d.each(|x| {
        let r = match x.ask(
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic("d"))),
            ]))),
        ) {
            Ok(ResponseKind::Metadata(r)) => r,
            other => panic!("{}: Metadata answered {other:?}", x.name),
        };
        x.remember("d_id", r.topics[0].topic_id);
    });
    d.step("fetch.by_topic_id_v16", |x| {
        let id = x.recall("d_id").parse().ok();
        fetch_as(x, 16, "", id, 0, 3)
    });
    d.step("fetch.unknown_topic_id_v16", |x| {
        fetch_as(x, 16, "", Some(uuid::Uuid::from_u128(0x5eed)), 0, 0)
    });
    d.step("delete_records.before_offset_3", |x| {
        delete_records(x, "d", 0, 3)
    });
    d.step("delete_records.below_log_start", |x| {
        delete_records(x, "d", 0, 1)
    });
    d.step("delete_records.past_high_watermark", |x| {
        delete_records(x, "d", 0, 99)
    });
    d.step("delete_records.unknown_partition", |x| {
        delete_records(x, "d", 7, 0)
    });
    d.step("fetch.below_log_start", |x| fetch(x, "d", 0, 1));
    d.step("fetch.at_log_start", |x| fetch(x, "d", 0, 3));
    d.step("list_offsets.earliest_after_delete_records", |x| {
        list_offsets(x, 6, "d", 0, -2)
    });
}

fn delete_records(side: &mut Side, t: &str, partition: i32, before: i64) -> Value {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let r = ask!(
        side,
        DeleteRecords,
        2,
        DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic(t))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(before)])])
    );
    let p = &r.topics[0].partitions[0];
    json!({ "error": p.error_code, "low_watermark": p.low_watermark })
}

fn admin(d: &mut Diff) {
    d.step("metadata.unknown_no_auto_create", |x| {
        metadata(x, "never-made", false)
    });
    d.step(
        "metadata.unknown_auto_create_first_answer",
        |x| json!({ "error": metadata(x, "made-by-metadata", true)["error"] }),
    );
    d.step("metadata.auto_created", |x| {
        wait_until(
            x,
            "the auto-created topic",
            |x| metadata(x, "made-by-metadata", true),
            |v| v["error"] == 0 && v["partitions"][0]["has_leader"] == true,
        )
    });
    d.step("metadata.invalid_name_auto_create", |x| {
        metadata(x, "bad name!", true)
    });
    d.step("create_topics.existing", |x| {
        create_topic(x, "d", 1, -1, &[])
    });
    d.step("create_topics.invalid_name", |x| {
        create_topic(x, "bad name!", 1, -1, &[])
    });
    d.step("create_topics.empty_name", |x| {
        create_topic(x, "", 1, -1, &[])
    });
    d.step("create_topics.dot_name", |x| {
        create_topic(x, "..", 1, -1, &[])
    });
    d.step("create_topics.name_too_long", |x| {
        create_topic(x, &"n".repeat(250), 1, -1, &[])
    });
    d.step("create_topics.zero_partitions", |x| {
        create_topic(x, "zero", 0, -1, &[])
    });
    d.step("create_topics.replication_factor_above_brokers", |x| {
        create_topic(x, "rf2", 1, 2, &[])
    });
    d.step("create_topics.bad_config_value", |x| {
        create_topic(x, "badcfg", 1, -1, &[("retention.ms", "soon")])
    });
    d.step("create_topics.unknown_config", |x| {
        create_topic(x, "unknowncfg", 1, -1, &[("no.such.config", "1")])
    });
    d.step("create_topics.with_config", |x| {
        create_topic(x, "d2", 2, -1, &[("retention.ms", "3600000")])
    });
    d.each(|x| wait_topic(x, "d2", 2));
    d.step("delete_topics.unknown", |x| {
        delete_topic(x, "no-such-topic")
    });
    d.step("delete_topics.existing", |x| delete_topic(x, "d2"));
    d.step("metadata.deleted_topic", |x| {
        wait_until(
            x,
            "the deleted topic to go",
            |x| metadata(x, "d2", false),
            |v| v["error"] != 0,
        )
    });
}

fn simple_consumer_offsets(d: &mut Diff) {
    d.each(|x| {
        wait_until(
            x,
            "a group coordinator",
            |x| find_coordinator(x, 4, "simple", 0),
            |v| v["error"] == 0,
        );
        // Kafka answers COORDINATOR_LOAD_IN_PROGRESS while it loads the offsets topic
        wait_until(
            x,
            "the group coordinator to load",
            |x| offset_fetch(x, "warm-up", "d", &[0]),
            |v| v["error"] == 0,
        );
    });
    d.step("find_coordinator.v4", |x| {
        find_coordinator(x, 4, "simple", 0)
    });
    d.step("find_coordinator.v0", |x| {
        find_coordinator(x, 0, "simple", 0)
    });
    d.step("offset_fetch.never_committed_group", |x| {
        offset_fetch(x, "nobody-home", "d", &[0])
    });
    d.step("offset_commit.simple", |x| {
        commit(x, "simple", "", -1, "d", 0, 3)
    });
    d.step("offset_fetch.simple", |x| {
        offset_fetch(x, "simple", "d", &[0])
    });
    d.step("offset_fetch.simple_v1", |x| {
        offset_fetch_v1(x, "simple", "d", 0)
    });
    d.step("offset_fetch.uncommitted_partition", |x| {
        offset_fetch(x, "simple", "made-by-metadata", &[0])
    });
    d.step("offset_commit.simple_again", |x| {
        commit(x, "simple", "", -1, "d", 0, 4)
    });
    d.step("offset_fetch.simple_again", |x| {
        offset_fetch(x, "simple", "d", &[0])
    });
    d.step("offset_commit.unknown_topic", |x| {
        commit(x, "simple", "", -1, "no-such-topic", 0, 1)
    });
    d.step("offset_commit.unknown_partition", |x| {
        commit(x, "simple", "", -1, "d", 7, 1)
    });
    d.step("offset_commit.generation_without_member", |x| {
        commit(x, "simple", "", 3, "d", 0, 1)
    });
    d.step("offset_commit.unknown_member", |x| {
        commit(x, "simple", "ghost", 1, "d", 0, 1)
    });
    d.step("offset_commit.empty_group_id", |x| {
        commit(x, "", "", -1, "d", 0, 1)
    });
    d.step("delete_groups.simple", |x| delete_groups(x, &["simple"]));
    d.step("offset_fetch.after_delete", |x| {
        offset_fetch(x, "simple", "d", &[0])
    });
}

fn classic_group(d: &mut Diff) {
    d.each(|x| {
        wait_until(
            x,
            "a group coordinator",
            |x| find_coordinator(x, 4, GROUP, 0),
            |v| v["error"] == 0,
        );
    });
    d.step("join_group.member_id_required", |x| {
        let r = join(x, GROUP, "", 30_000, "consumer");
        x.remember("member", r.member_id.as_str());
        json!({ "error": r.error_code, "member_id_given": !r.member_id.is_empty() })
    });
    d.step("join_group.with_member_id", |x| {
        let member = x.recall("member");
        let r = join(x, GROUP, &member, 30_000, "consumer");
        x.remember("generation", r.generation_id);
        json!({
            "error": r.error_code, "generation": r.generation_id,
            "protocol_type": r.protocol_type.as_ref().map(|p| p.to_string()),
            "protocol": r.protocol_name.as_ref().map(|p| p.to_string()),
            "is_leader": r.leader == r.member_id && r.member_id.as_str() == member,
            "members": r.members.iter().map(|m| json!({
                "is_the_member": m.member_id.as_str() == member,
                "metadata_as_joined": m.metadata == subscription(&["d"]),
            })).collect::<Vec<_>>(),
        })
    });
    d.step("sync_group.wrong_generation", |x| {
        let g: i32 = x.recall("generation").parse().unwrap();
        sync(x, g + 1)
    });
    d.step("sync_group.leader", |x| {
        let g: i32 = x.recall("generation").parse().unwrap();
        sync(x, g)
    });
    d.step("join_group.unknown_member", |x| {
        join_step(x, GROUP, "ghost-member", 30_000, "consumer")
    });
    d.step("join_group.session_timeout_too_small", |x| {
        join_step(x, GROUP, "", 1, "consumer")
    });
    d.step("join_group.other_protocol_type", |x| {
        join_step(x, GROUP, "", 30_000, "connect")
    });
    d.step("heartbeat.current_generation", |x| {
        let (m, g) = (x.recall("member"), x.recall("generation").parse().unwrap());
        heartbeat(x, &m, g)
    });
    d.step("heartbeat.wrong_generation", |x| {
        let (m, g): (String, i32) = (x.recall("member"), x.recall("generation").parse().unwrap());
        heartbeat(x, &m, g + 5)
    });
    d.step("heartbeat.unknown_member", |x| {
        let g = x.recall("generation").parse().unwrap();
        heartbeat(x, "ghost-member", g)
    });
    d.step("offset_commit.member", |x| {
        let (m, g) = (x.recall("member"), x.recall("generation").parse().unwrap());
        commit(x, GROUP, &m, g, "d", 0, 2)
    });
    d.step("offset_commit.member_wrong_generation", |x| {
        let (m, g): (String, i32) = (x.recall("member"), x.recall("generation").parse().unwrap());
        commit(x, GROUP, &m, g + 1, "d", 0, 2)
    });
    d.step("offset_commit.simple_while_members", |x| {
        commit(x, GROUP, "", -1, "d", 0, 2)
    });
    d.step("offset_fetch.member", |x| offset_fetch(x, GROUP, "d", &[0]));
    d.step("describe_groups.stable", |x| describe_group(x, GROUP));
    d.step("list_groups.all", |x| list_groups(x, &[]));
    d.step("list_groups.stable", |x| list_groups(x, &["Stable"]));
    d.step("list_groups.empty", |x| list_groups(x, &["Empty"]));
    d.step("delete_groups.non_empty", |x| delete_groups(x, &[GROUP]));
    d.step("leave_group.member", |x| {
        let m = x.recall("member");
        leave(x, &m)
    });
    d.step("leave_group.again", |x| {
        let m = x.recall("member");
        leave(x, &m)
    });
    d.step("heartbeat.after_leaving", |x| {
        let (m, g) = (x.recall("member"), x.recall("generation").parse().unwrap());
        heartbeat(x, &m, g)
    });
    d.step("describe_groups.empty", |x| describe_group(x, GROUP));
    d.step("list_groups.empty_after_leave", |x| {
        list_groups(x, &["Empty"])
    });
    d.step("offset_fetch.after_leave", |x| {
        offset_fetch(x, GROUP, "d", &[0])
    });
    d.step("offset_commit.simple_after_members_left", |x| {
        commit(x, GROUP, "", -1, "d", 0, 1)
    });
    d.step("delete_groups.empty_and_unknown", |x| {
        delete_groups(x, &[GROUP, "no-such-group"])
    });
    d.step("describe_groups.deleted", |x| describe_group(x, GROUP));
}

/// A KIP-848 member's heartbeat in group `kg` (epoch 0 joins, -1 leaves).
fn consumer_heartbeat(side: &mut Side, member: &str, epoch: i32) -> ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let join = epoch == 0;
    let mut req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("kg")))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(if join { 30_000 } else { -1 });
    if join {
        req = req
            .with_subscribed_topic_names(Some(vec![topic("d")]))
            .with_topic_partitions(Some(Vec::<TopicPartitions>::new()));
    }
    match side.ask(
        ApiKey::ConsumerGroupHeartbeat,
        1,
        RequestKind::ConsumerGroupHeartbeat(req),
    ) {
        Ok(ResponseKind::ConsumerGroupHeartbeat(r)) => r,
        other => panic!("{}: ConsumerGroupHeartbeat answered {other:?}", side.name),
    }
}

fn consumer_group(d: &mut Diff) {
    d.step("consumer_group_heartbeat.join", |x| {
        let r = consumer_heartbeat(x, "kip848-member-1", 0);
        x.remember(
            "kip848",
            r.member_id
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        );
        x.remember("kip848_epoch", r.member_epoch);
        json!({ "error": r.error_code, "epoch_positive": r.member_epoch > 0 })
    });
    d.step("describe_groups.of_a_live_consumer_group", |x| {
        let r = describe_group(x, "kg");
        json!({ "error": r["error"], "state": r["state"], "members": r["members"] })
    });
    d.step("offset_commit.simple_while_consumer_members", |x| {
        commit(x, "kg", "", -1, "d", 0, 1)
    });
    d.step("offset_commit.consumer_member_v8", |x| {
        let (m, e) = (
            x.recall("kip848"),
            x.recall("kip848_epoch").parse().unwrap(),
        );
        commit(x, "kg", &m, e, "d", 0, 1)
    });
    d.step(
        "offset_delete.subscribed_topic_and_unknown_partition",
        |x| offset_delete(x, "kg", &[("d", 0), ("d", 1), ("no-such-topic", 0)]),
    );
    d.step("offset_delete.unknown_group", |x| {
        offset_delete(x, "no-such-group", &[("d", 0)])
    });
    d.step("consumer_group_heartbeat.leave", |x| {
        let m = x.recall("kip848");
        let r = consumer_heartbeat(x, &m, -1);
        json!({ "error": r.error_code, "epoch": r.member_epoch })
    });
    d.step("offset_commit.simple_after_consumer_left", |x| {
        commit(x, "kg", "", -1, "d", 0, 2)
    });
    d.step("offset_delete.after_the_members_left", |x| {
        offset_delete(x, "kg", &[("d", 0), ("d", 1)])
    });
    d.step("offset_fetch.after_offset_delete", |x| {
        offset_fetch(x, "kg", "d", &[0])
    });
}

/// OffsetDelete of `partitions` of `group`: the group's error and each partition's.
fn offset_delete(side: &mut Side, group: &str, partitions: &[(&str, i32)]) -> Value {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let mut topics: Vec<OffsetDeleteRequestTopic> = Vec::new();
    for (t, p) in partitions {
        let part = OffsetDeleteRequestPartition::default().with_partition_index(*p);
        match topics.iter_mut().find(|x| x.name.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetDeleteRequestTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let r = ask!(
        side,
        OffsetDelete,
        0,
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics)
    );
    // Sorted: Kafka lists the partitions it does not know first, Sluice in request
    // order; clients match partitions by name, not position.
    let mut each: Vec<(String, i32, i16)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    each.sort();
    json!({ "error": r.error_code, "partitions": each })
}

/// DescribeProducers of `partitions` of `t`: each partition's error and producers
/// (ids and times normalized away).
fn describe_producers(side: &mut Side, t: &str, partitions: &[i32]) -> Value {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let r = ask!(
        side,
        DescribeProducers,
        0,
        DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(topic(t))
            .with_partition_indexes(partitions.to_vec())])
    );
    let each: Vec<Value> = r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let producers: Vec<Value> = p
                .active_producers
                .iter()
                .map(|a| {
                    json!({
                        "id_given": a.producer_id.0 >= 0,
                        "epoch": a.producer_epoch,
                        "last_sequence": a.last_sequence,
                        "timestamp_given": a.last_timestamp > 0,
                        "coordinator_epoch": a.coordinator_epoch,
                        "txn_start": a.current_txn_start_offset,
                    })
                })
                .collect();
            json!({ "partition": p.partition_index, "error": p.error_code, "producers": producers })
        })
        .collect();
    json!(each)
}

/// DescribeLogDirs of `t`: one directory holding its partitions, sizes and disk space
/// (paths and byte counts normalized to "given").
fn describe_log_dirs(side: &mut Side, version: i16, t: &str) -> Value {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let r = ask!(
        side,
        DescribeLogDirs,
        version,
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(topic(t))
                .with_partitions(vec![0])]))
    );
    let dirs: Vec<Value> = r
        .results
        .iter()
        .map(|d| {
            let parts: Vec<Value> = d
                .topics
                .iter()
                .flat_map(|x| {
                    x.partitions.iter().map(|p| {
                        json!([
                            x.name.as_str(),
                            p.partition_index,
                            p.partition_size > 0,
                            p.offset_lag,
                            p.is_future_key
                        ])
                    })
                })
                .collect();
            json!({
                "error": d.error_code,
                "dir_given": !d.log_dir.is_empty(),
                "partitions": parts,
                "space_given": version < 4 || (d.total_bytes > 0 && d.usable_bytes > 0),
            })
        })
        .collect();
    json!({ "error": r.error_code, "dirs": dirs })
}

/// The classic protocol on connection `c` (a second member needs its own connection:
/// its JoinGroup and SyncGroup wait for the others).
fn join_on(c: &mut Conn, group: &str, member: &str, instance: Option<&str>) -> JoinGroupResponse {
    let ResponseKind::JoinGroup(r) = c.call(
        ApiKey::JoinGroup,
        7,
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_session_timeout_ms(30_000)
                .with_rebalance_timeout_ms(20_000)
                .with_member_id(s(member))
                .with_group_instance_id(instance.map(s))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(subscription(&["d"]))]),
        ),
    ) else {
        panic!("not a JoinGroup answer")
    };
    r
}

fn sync_on(
    c: &mut Conn,
    group: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
    assignments: &[(String, Bytes)],
) -> SyncGroupResponse {
    let ResponseKind::SyncGroup(r) = c.call(
        ApiKey::SyncGroup,
        5,
        RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation)
                .with_member_id(s(member))
                .with_group_instance_id(instance.map(s))
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")))
                .with_assignments(
                    assignments
                        .iter()
                        .map(|(m, a)| {
                            SyncGroupRequestAssignment::default()
                                .with_member_id(s(m))
                                .with_assignment(a.clone())
                        })
                        .collect(),
                ),
        ),
    ) else {
        panic!("not a SyncGroup answer")
    };
    r
}

fn heartbeat_on(
    c: &mut Conn,
    group: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
) -> i16 {
    let ResponseKind::Heartbeat(r) = c.call(
        ApiKey::Heartbeat,
        4,
        RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation)
                .with_member_id(s(member))
                .with_group_instance_id(instance.map(s)),
        ),
    ) else {
        panic!("not a Heartbeat answer")
    };
    r.error_code
}

fn leave_on(c: &mut Conn, group: &str, member: &str, instance: Option<&str>) -> Value {
    let ResponseKind::LeaveGroup(r) = c.call(
        ApiKey::LeaveGroup,
        4,
        RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_members(vec![MemberIdentity::default()
                    .with_member_id(s(member))
                    .with_group_instance_id(instance.map(s))]),
        ),
    ) else {
        panic!("not a LeaveGroup answer")
    };
    json!({
        "error": r.error_code,
        "members": r.members.iter().map(|m| m.error_code).collect::<Vec<_>>(),
    })
}

/// Heartbeats until the answer is `want` (30 s at most); the last answer.
fn heartbeat_until(c: &mut Conn, group: &str, generation: i32, member: &str, want: i16) -> i16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let error = heartbeat_on(c, group, generation, member, None);
        if error == want || Instant::now() >= deadline {
            return error;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A second member joins a stable classic group: the first hears
/// REBALANCE_IN_PROGRESS, rejoins, stays the leader and hands out the assignments of
/// the next generation; the follower's SyncGroup waits for them. Then the follower
/// leaves and the leader rebalances alone.
fn classic_rebalance(d: &mut Diff) {
    const G: &str = "cg-rebalance";
    d.step("classic_rebalance.two_members", |x| {
        let addr = x.addr.clone();
        let mut c1 = Conn::open(&addr);
        let m1 = join_on(&mut c1, G, "", None).member_id.to_string();
        let first = join_on(&mut c1, G, &m1, None);
        let gen1 = first.generation_id;
        let mine = (m1.clone(), assignment("d"));
        let synced = sync_on(&mut c1, G, gen1, &m1, None, std::slice::from_ref(&mine));
        let joining = std::thread::spawn(move || {
            let mut c2 = Conn::open(&addr);
            let m2 = join_on(&mut c2, G, "", None).member_id.to_string();
            let joined = join_on(&mut c2, G, &m2, None);
            (c2, m2, joined)
        });
        let told = heartbeat_until(&mut c1, G, gen1, &m1, 27);
        let rejoined = join_on(&mut c1, G, &m1, None);
        let (mut c2, m2, joined) = joining.join().expect("the second member's join");
        let theirs = (m2.clone(), assignment("made-by-metadata"));
        let follower = std::thread::spawn(move || {
            let r = sync_on(&mut c2, G, joined.generation_id, &m2, None, &[]);
            (c2, m2, joined, r)
        });
        let leader_sync = sync_on(
            &mut c1,
            G,
            rejoined.generation_id,
            &m1,
            None,
            &[mine.clone(), theirs.clone()],
        );
        let (mut c2, m2, joined, follower_sync) = follower.join().expect("the follower's sync");
        let stable = heartbeat_on(&mut c1, G, rejoined.generation_id, &m1, None);
        let left = leave_on(&mut c2, G, &m2, None);
        let after_leave = heartbeat_until(&mut c1, G, rejoined.generation_id, &m1, 27);
        let alone = join_on(&mut c1, G, &m1, None);
        let leader_left = leave_on(&mut c1, G, &m1, None);
        json!({
            "first": [first.error_code, first.generation_id, synced.error_code],
            "heartbeat_while_joining": told,
            "leader_rejoin": {
                "error": rejoined.error_code, "generation": rejoined.generation_id - gen1,
                "leader_stays": rejoined.leader.as_str() == m1,
                "members": rejoined.members.len(),
            },
            "follower_join": {
                "error": joined.error_code, "generation": joined.generation_id - gen1,
                "leader_is_first": joined.leader.as_str() == m1,
                "members": joined.members.len(),
            },
            "syncs": [leader_sync.error_code, follower_sync.error_code],
            "leader_got_its_own": leader_sync.assignment == mine.1,
            "follower_got_its_own": follower_sync.assignment == theirs.1,
            "heartbeat_when_stable": stable,
            "follower_leaves": left,
            "heartbeat_after_leave": after_leave,
            "alone": [alone.error_code, alone.generation_id - gen1, alone.members.len() as i32],
            "leader_leaves": leader_left,
        })
    });
}

/// Static membership (KIP-345): a member with a `group.instance.id` joins without
/// MEMBER_ID_REQUIRED; restarted (no member id, the same instance id) it takes its
/// place again with a new member id and its old assignment, and the old id is fenced.
fn static_member(d: &mut Diff) {
    const G: &str = "cg-static";
    const I: Option<&str> = Some("instance-1");
    d.step("static_member.first_join", |x| {
        let r = join_on(&mut x.conn, G, "", I);
        x.remember("static", r.member_id.as_str());
        x.remember("static_gen", r.generation_id);
        json!({ "error": r.error_code, "generation": r.generation_id })
    });
    d.step("static_member.first_sync", |x| {
        let (m, g) = (x.recall("static"), x.recall("static_gen").parse().unwrap());
        let r = sync_on(&mut x.conn, G, g, &m, I, &[(m.clone(), assignment("d"))]);
        json!({ "error": r.error_code, "assignment_as_given": r.assignment == assignment("d") })
    });
    d.step("static_member.restart_join", |x| {
        let (old, g): (String, i32) = (x.recall("static"), x.recall("static_gen").parse().unwrap());
        let r = join_on(&mut x.conn, G, "", I);
        x.remember("static_new", r.member_id.as_str());
        x.remember("static_new_gen", r.generation_id);
        json!({
            "error": r.error_code, "generation_after": r.generation_id - g,
            "new_member_id": r.member_id.as_str() != old && !r.member_id.is_empty(),
            "is_leader": r.leader == r.member_id, "members": r.members.len(),
            "skip_assignment": r.skip_assignment,
        })
    });
    d.step("static_member.restart_sync", |x| {
        let (m, g) = (
            x.recall("static_new"),
            x.recall("static_new_gen").parse().unwrap(),
        );
        let r = sync_on(&mut x.conn, G, g, &m, I, &[]);
        json!({ "error": r.error_code, "old_assignment": r.assignment == assignment("d") })
    });
    d.step("static_member.heartbeat_old_member_id", |x| {
        let (m, g) = (
            x.recall("static"),
            x.recall("static_new_gen").parse().unwrap(),
        );
        json!(heartbeat_on(&mut x.conn, G, g, &m, I))
    });
    d.step("static_member.heartbeat_new_member_id", |x| {
        let (m, g) = (
            x.recall("static_new"),
            x.recall("static_new_gen").parse().unwrap(),
        );
        json!(heartbeat_on(&mut x.conn, G, g, &m, I))
    });
    d.step("static_member.leave_by_instance", |x| {
        leave_on(&mut x.conn, G, "", I)
    });
}

fn create_partitions(side: &mut Side, t: &str, count: i32) -> Value {
    create_partitions_placed(side, t, count, None)
}

/// CreatePartitions v3, the new partitions' replicas given when `lists` is.
fn create_partitions_placed(
    side: &mut Side,
    t: &str,
    count: i32,
    lists: Option<&[&[i32]]>,
) -> Value {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    let assignments = lists.map(|ls| {
        ls.iter()
            .map(|l| {
                CreatePartitionsAssignment::default()
                    .with_broker_ids(l.iter().map(|b| BrokerId(*b)).collect())
            })
            .collect()
    });
    let r = ask!(
        side,
        CreatePartitions,
        3,
        CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic(t))
                .with_count(count)
                .with_assignments(assignments)])
    );
    json!({ "error": r.results[0].error_code })
}

/// CreateTopics v7 with each partition's replicas given (`counts`: the partition count
/// and replication factor sent beside them, -1 as Kafka wants).
fn create_topic_placed(side: &mut Side, t: &str, lists: &[&[i32]], counts: (i32, i16)) -> Value {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    let r = ask!(
        side,
        CreateTopics,
        7,
        CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic(t))
                .with_num_partitions(counts.0)
                .with_replication_factor(counts.1)
                .with_assignments(
                    lists
                        .iter()
                        .enumerate()
                        .map(|(i, l)| CreatableReplicaAssignment::default()
                            .with_partition_index(i as i32)
                            .with_broker_ids(l.iter().map(|b| BrokerId(*b)).collect()))
                        .collect()
                )])
    );
    let t = &r.topics[0];
    json!({ "error": t.error_code, "partitions": t.num_partitions, "replication_factor": t.replication_factor })
}

/// Manual replica assignments (kafka-topics `--replica-assignment`): placed as given on
/// the one broker (id 1 on both sides), refused as Kafka refuses them.
fn manual_assignments(d: &mut Diff) {
    d.step("create_topics.assigned", |x| {
        create_topic_placed(x, "ma", &[&[1], &[1]], (-1, -1))
    });
    d.each(|x| wait_topic(x, "ma", 2));
    d.step("create_topics.assigned_twice_the_same_broker", |x| {
        create_topic_placed(x, "mb", &[&[1, 1]], (-1, -1))
    });
    d.step("create_topics.assigned_unknown_broker", |x| {
        create_topic_placed(x, "mc", &[&[7]], (-1, -1))
    });
    d.step("create_topics.assigned_with_a_count", |x| {
        create_topic_placed(x, "md", &[&[1]], (1, -1))
    });
    d.step("create_partitions.assigned", |x| {
        create_partitions_placed(x, "ma", 3, Some(&[&[1]]))
    });
    d.step("create_partitions.assigned_too_few", |x| {
        create_partitions_placed(x, "ma", 5, Some(&[&[1]]))
    });
    d.step("create_partitions.assigned_unknown_broker", |x| {
        create_partitions_placed(x, "ma", 4, Some(&[&[7]]))
    });
    d.step("metadata.assigned", |x| metadata(x, "ma", false));
}

/// DescribeConfigs v4 of topic `t`, the keys asked: (value, source, read only).
fn describe_configs(side: &mut Side, t: &str, keys: &[&str]) -> Value {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let r = ask!(
        side,
        DescribeConfigs,
        4,
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(t))
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

/// IncrementalAlterConfigs v1 of topic `t`: (name, operation 0 SET / 1 DELETE, value).
fn alter_configs(side: &mut Side, t: &str, changes: &[(&str, i8, Option<&str>)]) -> Value {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let r = ask!(
        side,
        IncrementalAlterConfigs,
        1,
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(t))
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
    json!({ "error": r.responses[0].error_code })
}

fn consumer_group_describe(side: &mut Side, group: &str) -> Value {
    let r = ask!(
        side,
        ConsumerGroupDescribe,
        0,
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))])
    );
    let g = &r.groups[0];
    json!({ "error": g.error_code, "state": g.group_state.as_str(), "members": g.members.len() })
}

fn offset_fetch_all(side: &mut Side, group: &str) -> Value {
    let r = ask!(
        side,
        OffsetFetch,
        8,
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None)])
    );
    let g = &r.groups[0];
    let mut offsets: Vec<Value> = g
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| json!([t.name.0.as_str(), p.partition_index, p.committed_offset]))
        })
        .collect();
    offsets.sort_by_key(|o| o.to_string());
    json!({ "error": g.error_code, "offsets": offsets })
}

/// Admin calls Kafka's tools make (kafka-topics --alter, kafka-configs) and the group
/// views of the other protocol's groups.
fn admin_and_views(d: &mut Diff) {
    d.step("create_partitions.grow", |x| create_partitions(x, "d", 3));
    d.step("create_partitions.shrink", |x| create_partitions(x, "d", 2));
    d.step("create_partitions.same_count", |x| {
        create_partitions(x, "d", 3)
    });
    d.step("create_partitions.unknown_topic", |x| {
        create_partitions(x, "no-such-topic", 2)
    });
    const KEYS: &[&str] = &[
        "cleanup.policy",
        "retention.ms",
        "max.message.bytes",
        "segment.bytes",
    ];
    d.step("describe_configs.defaults", |x| {
        describe_configs(x, "d", KEYS)
    });
    d.step("describe_configs.min_insync_replicas", |x| {
        describe_configs(x, "d", &["min.insync.replicas"])
    });
    d.step("incremental_alter_configs.set", |x| {
        alter_configs(x, "d", &[("retention.ms", 0, Some("3600000"))])
    });
    // Kafka applies a config change through its metadata log: seen a moment later
    d.step("describe_configs.after_set", |x| {
        wait_until(
            x,
            "the set config",
            |x| describe_configs(x, "d", &["retention.ms"]),
            |v| v["configs"][0][1] == "3600000",
        )
    });
    d.step("incremental_alter_configs.delete", |x| {
        alter_configs(x, "d", &[("retention.ms", 1, None)])
    });
    d.step("describe_configs.after_delete", |x| {
        wait_until(
            x,
            "the deleted config",
            |x| describe_configs(x, "d", &["retention.ms"]),
            |v| v["configs"][0][1] != "3600000",
        )
    });
    d.step("incremental_alter_configs.invalid_value", |x| {
        alter_configs(x, "d", &[("retention.ms", 0, Some("soon"))])
    });
    d.step("incremental_alter_configs.unknown_config", |x| {
        alter_configs(x, "d", &[("no.such.config", 0, Some("1"))])
    });
    d.step("incremental_alter_configs.unknown_topic", |x| {
        alter_configs(x, "no-such-topic", &[("retention.ms", 0, Some("1000"))])
    });
    d.step("describe_configs.unknown_topic", |x| {
        describe_configs(x, "no-such-topic", &["retention.ms"])
    });
    d.step("offset_fetch.all_partitions_of_a_group", |x| {
        offset_fetch_all(x, "kg")
    });
    d.step("describe_groups.of_a_consumer_group", |x| {
        let r = describe_group(x, "kg");
        json!({ "error": r["error"], "state": r["state"] })
    });
    d.step("consumer_group_describe.of_a_classic_group", |x| {
        consumer_group_describe(x, "cg-rebalance")
    });
    d.step("consumer_group_describe.of_a_consumer_group", |x| {
        consumer_group_describe(x, "kg")
    });
    d.step("consumer_group_describe.unknown", |x| {
        consumer_group_describe(x, "no-such-group")
    });
}

/// Compressed batches stored as sent and read back; an idempotent producer's retried
/// batch answered with its first offsets, a gap in its sequences refused.
fn codecs_and_idempotence(d: &mut Diff) {
    d.step("create_topics.for_codecs", |x| {
        create_topic(x, "z", 1, -1, &[])
    });
    d.each(|x| wait_topic(x, "z", 1));
    for (name, codec) in [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        d.step(&format!("produce.{name}"), |x| {
            produce(x, "z", 0, encode_batch(name, 0, 4, None, codec))
        });
    }
    d.step("fetch.compressed_batches", |x| fetch(x, "z", 0, 0));
    // Kafka answers COORDINATOR_LOAD_IN_PROGRESS until its producer id manager is up
    d.step("init_producer_id", |x| {
        wait_until(x, "a producer id", init_producer_id, |v| v["error"] != 14)
    });
    let idempotent = |x: &mut Side, seq: i32, n: i64| {
        let pid: i64 = x.recall("pid").parse().unwrap();
        let records = encode_batch(
            "idem",
            100 + i64::from(seq),
            n,
            Some((pid, 0, seq)),
            Compression::None,
        );
        produce(x, "z", 0, records)
    };
    d.step("produce.idempotent_first", |x| idempotent(x, 0, 3));
    d.step("produce.idempotent_retried", |x| idempotent(x, 0, 3));
    d.step("produce.idempotent_next", |x| idempotent(x, 3, 2));
    d.step("describe_producers.after_idempotent_writes", |x| {
        describe_producers(x, "z", &[0, 7])
    });
    d.step("describe_log_dirs.v1", |x| describe_log_dirs(x, 1, "z"));
    d.step("describe_log_dirs.v4", |x| describe_log_dirs(x, 4, "z"));
    d.step("produce.idempotent_sequence_gap", |x| idempotent(x, 9, 1));
    d.step("produce.idempotent_older_retry", |x| idempotent(x, 0, 3));
    d.step("fetch.idempotent_records", |x| fetch(x, "z", 0, 16));
}

fn init_producer_id(x: &mut Side) -> Value {
    let r = ask!(
        x,
        InitProducerId,
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    );
    x.remember("pid", r.producer_id.0);
    json!({ "error": r.error_code, "epoch": r.producer_epoch, "id_given": r.producer_id.0 >= 0 })
}

/// The codec of the first batch `tx`-0 holds from offset 0, and its records.
fn stored_codec(side: &mut Side, t: &str) -> Value {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let r = ask!(
        side,
        Fetch,
        12,
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic(t))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(4 << 20)])])
    );
    let p = &r.responses[0].partitions[0];
    let raw = p.records.clone().unwrap_or_default();
    let codec = raw.get(22).map_or(-1, |a| i32::from(*a & 7));
    json!({ "error": p.error_code, "codec": codec, "records": fetch(side, t, 0, 0)["records"] })
}

/// `compression.type`: a topic set to lz4 stores an uncompressed batch as lz4; a
/// topic left at `producer` stores what came; an unknown codec is INVALID_CONFIG.
fn topic_compression(d: &mut Diff) {
    d.step("create_topics.compression_lz4", |x| {
        create_topic(x, "zc", 1, -1, &[("compression.type", "lz4")])
    });
    d.step("create_topics.compression_unknown", |x| {
        create_topic(x, "zx", 1, -1, &[("compression.type", "brotli")])
    });
    d.each(|x| wait_topic(x, "zc", 1));
    d.step("produce.to_lz4_topic", |x| {
        produce(x, "zc", 0, batch("zc", 0, 3))
    });
    d.step("fetch.lz4_topic_codec", |x| stored_codec(x, "zc"));
    d.step("describe_configs.compression", |x| {
        describe_configs(x, "zc", &["compression.type"])
    });
}

/// CreateTopics and CreatePartitions with `validate_only`: checked as for real, the
/// answer what would be made, nothing made.
fn validate_only(d: &mut Diff) {
    fn create(side: &mut Side, t: &str, partitions: i32, configs: &[(&str, &str)]) -> Value {
        create_topic_as(side, t, partitions, 1, configs, true)
    }
    fn grow(side: &mut Side, t: &str, count: i32) -> Value {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        let r = ask!(
            side,
            CreatePartitions,
            3,
            CreatePartitionsRequest::default()
                .with_timeout_ms(30_000)
                .with_validate_only(true)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic(t))
                    .with_count(count)
                    .with_assignments(None)])
        );
        json!({ "error": r.results[0].error_code })
    }
    d.step("create_topics.validate_only", |x| create(x, "vo", 3, &[]));
    d.step("create_topics.validate_only_bad_config", |x| {
        create(x, "vo", 3, &[("retention.ms", "soon")])
    });
    d.step("create_topics.validate_only_existing", |x| {
        create(x, "zc", 1, &[])
    });
    d.step("metadata.validate_only_made_nothing", |x| {
        metadata(x, "vo", false)
    });
    d.step("create_partitions.validate_only", |x| grow(x, "zc", 2));
    d.step("create_partitions.validate_only_fewer", |x| {
        grow(x, "zc", 1)
    });
    d.step("metadata.validate_only_grew_nothing", |x| {
        metadata(x, "zc", false)
    });
}
