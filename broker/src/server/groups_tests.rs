//! The coordinator load against a real partition log and replica state: it replays only
//! what the high watermark covers and serves once the high watermark reaches the log end
//! the leader had when it took over.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1;
use sluice_proto::{BrokerId, ErrorCode, LeaderEpoch, Offset, TopicPartition};

use super::{encode, load, Shared, OFFSETS_TOPIC};
use crate::group::coordinator::{Coordinator, CoordinatorConfig};
use crate::log::LogConfig;
use crate::replica::{Role, ToFetch};
use crate::server::{Broker, BrokerConfig};

fn broker(dir: &std::path::Path) -> Arc<Shared> {
    broker_with(dir, CoordinatorConfig::default())
}

fn broker_with(dir: &std::path::Path, groups: CoordinatorConfig) -> Arc<Shared> {
    let mut config = BrokerConfig::new(1, "127.0.0.1:1".into(), Vec::new(), dir.to_path_buf());
    config.groups = groups;
    let broker = Broker::open(config).unwrap();
    *broker.shared.metadata.write() = v1::MetadataResponse {
        topics: vec![v1::TopicMetadata {
            name: OFFSETS_TOPIC.into(),
            partitions: vec![v1::PartitionMetadata {
                partition: 0,
                leader: 1,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    broker.shared
}

fn lead(shared: &Shared, tp: &TopicPartition, epoch: u32) {
    lead_with_isr(shared, tp, epoch, &[1, 2]);
}

fn lead_with_isr(shared: &Shared, tp: &TopicPartition, epoch: u32, isr: &[u32]) {
    let role = Role {
        leader: Some(BrokerId(1)),
        leader_epoch: LeaderEpoch(epoch),
        replicas: vec![BrokerId(1), BrokerId(2)],
        isr: isr.iter().map(|b| BrokerId(*b)).collect(),
        partition_epoch: epoch as i32,
    };
    shared
        .replicas
        .apply_role(tp, role, LogConfig::default(), None)
        .unwrap();
}

/// Appends an admin commit of `offset` for group `g`, topic `t-0`, acks=1 (so the high
/// watermark does not follow until broker 2 fetches).
async fn commit(shared: &Shared, tp: &TopicPartition, offset: i64) {
    let mut scratch = Coordinator::new(CoordinatorConfig::default());
    let writes = scratch
        .commit(
            "g",
            "",
            -1,
            vec![(("t".into(), 0), offset, String::new())],
            0,
        )
        .unwrap();
    let records = encode(writes.iter()).unwrap();
    shared
        .replicas
        .produce(tp, records, 1, Duration::from_secs(5))
        .await
        .unwrap();
}

/// Broker 2 fetches at `at` in leader epoch `epoch`, its last batch from epoch 1.
fn follower_fetch(shared: &Shared, tp: &TopicPartition, at: u64, epoch: u32) {
    let f = ToFetch {
        tp: tp.clone(),
        fetch_offset: Offset(at),
        current_leader_epoch: Some(LeaderEpoch(epoch)),
        last_fetched_epoch: (at > 0).then_some(LeaderEpoch(1)),
    };
    shared.replicas.fetch_for_follower(2, &f, 1 << 20).unwrap();
}

fn committed(l: &super::Loaded) -> Option<i64> {
    let core = l.core.lock();
    core.fetch("g", &[("t".into(), 0)])[0]
        .1
        .as_ref()
        .map(|c| c.offset)
}

#[tokio::test]
async fn a_new_coordinator_shows_only_what_the_high_watermark_covers() {
    let dir = tempfile::tempdir().unwrap();
    let shared = broker(dir.path());
    let tp = TopicPartition::new(OFFSETS_TOPIC, 0);
    lead(&shared, &tp, 1);
    commit(&shared, &tp, 5).await;
    follower_fetch(&shared, &tp, 1, 1);
    assert_eq!(shared.replicas.partition(&tp).unwrap().high_watermark(), 1);
    // A commit broker 2 does not have: a failover to broker 2 would lose it.
    commit(&shared, &tp, 9).await;
    // Re-elected at epoch 2 with the commit of 9 above the high watermark.
    lead(&shared, &tp, 2);
    let part = shared.replicas.partition(&tp).unwrap();
    assert_eq!((part.high_watermark(), part.log.log_end_offset()), (1, 2));
    match load(&shared, 0).await {
        Err((code, _)) => assert_eq!(code, ErrorCode::CoordinatorLoadInProgress),
        Ok(l) => panic!(
            "loaded above the high watermark: OffsetFetch shows {:?}",
            committed(&l)
        ),
    }
    // Still held back: nothing moved.
    assert!(load(&shared, 0).await.is_err());
    // Broker 2 catches up: the commit is now safe, and shown.
    follower_fetch(&shared, &tp, 2, 2);
    assert_eq!(part.high_watermark(), 2);
    let l = load(&shared, 0).await.unwrap();
    assert_eq!(committed(&l), Some(9));
}

/// A join through the Groups service: (error code, message).
async fn join(shared: &Arc<Shared>, group: &str) -> (i32, String) {
    use sluice_proto::v1::groups_server::Groups;
    let api = super::super::groups_api::GroupsApi(shared.clone());
    let r = api
        .heartbeat(tonic::Request::new(v1::GroupHeartbeatRequest {
            group_id: group.into(),
            member_epoch: 0,
            subscription: Some(v1::Subscription {
                topics: vec!["t".into()],
                regex: String::new(),
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    (r.error_code, r.error_message)
}

#[tokio::test]
async fn a_new_group_past_the_brokers_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = broker_with(
        dir.path(),
        CoordinatorConfig {
            max_groups: 3,
            ..CoordinatorConfig::default()
        },
    );
    let tp = TopicPartition::new(OFFSETS_TOPIC, 0);
    lead_with_isr(&shared, &tp, 1, &[1]);
    for g in ["a", "b", "c"] {
        assert_eq!(join(&shared, g).await.0, 0, "group {g}");
    }
    let (code, msg) = join(&shared, "d").await;
    assert_eq!(
        ErrorCode::from_code(code),
        ErrorCode::GroupMaxSizeReached,
        "{msg}"
    );
    assert!(msg.contains("GROUPS_PER_BROKER_MAX"), "{msg}");
    // A group it holds still takes members.
    assert_eq!(join(&shared, "a").await.0, 0);
}
