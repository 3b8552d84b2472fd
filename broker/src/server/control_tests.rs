//! Control pushes apply in the order the controller queued them, whatever order the
//! network delivers them in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_proto::v1::broker_control_server::BrokerControl;
use sluice_proto::v1::{self};
use sluice_proto::TopicPartition;
use tonic::Request;

use super::{Control, PushOrder};
use crate::server::{Broker, BrokerConfig};

const CONTROLLER_EPOCH: i64 = 4;
const BROKER_EPOCH: i64 = 7;
const OLD_ID: &str = "9b03c994487722e2d10a652292bc8432";
const NEW_ID: &str = "d3e7351278d2f2ce9373b01542ae986c";

fn control(dir: &std::path::Path) -> Control {
    let config = BrokerConfig::new(1, "127.0.0.1:1".into(), Vec::new(), dir.to_path_buf());
    let broker = Broker::open(config).unwrap();
    broker
        .shared
        .broker_epoch
        .store(BROKER_EPOCH, Ordering::Release);
    Control(Arc::clone(&broker.shared))
}

fn lead(seq: u64, topic_id: &str) -> Request<v1::LeaderAndIsrRequest> {
    Request::new(v1::LeaderAndIsrRequest {
        controller_id: 100,
        controller_epoch: CONTROLLER_EPOCH,
        broker_epoch: BROKER_EPOCH,
        partitions: vec![v1::PartitionState {
            topic: "re".into(),
            partition: 2,
            leader: 1,
            leader_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            partition_epoch: 0,
            topic_id: topic_id.into(),
            ..Default::default()
        }],
        full_state: false,
        push_seq: seq,
    })
}

fn stop(seq: u64) -> Request<v1::StopReplicaRequest> {
    Request::new(v1::StopReplicaRequest {
        controller_id: 100,
        controller_epoch: CONTROLLER_EPOCH,
        broker_epoch: BROKER_EPOCH,
        partitions: vec![v1::StopReplicaPartition {
            topic: "re".into(),
            partition: 2,
            delete: true,
        }],
        push_seq: seq,
    })
}

fn held_id(c: &Control) -> Option<String> {
    c.0.replicas
        .partition(&TopicPartition::new("re", 2))
        .map(|p| p.log.topic_id().map(|i| i.to_string()).unwrap_or_default())
}

/// The failure CI met: the StopReplica of a deleted topic, sent while the connection
/// was cut, lands after the role of the re-created topic (sent later, on a fresh
/// connection). Applied, it deleted the new topic's replica and its acknowledged
/// records.
#[tokio::test]
async fn a_delayed_stop_replica_does_not_delete_the_replica_a_newer_push_created() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(dir.path());
    let answer = c
        .leader_and_isr(lead(1, OLD_ID))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.error_code, 0, "{}", answer.error_message);
    // Pushes 2 (the deletion's StopReplica) is delayed; 3 (the new topic's role) lands.
    let answer = c
        .leader_and_isr(lead(3, NEW_ID))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.error_code, 0, "{}", answer.error_message);
    assert_eq!(held_id(&c).as_deref(), Some(NEW_ID));
    let answer = c.stop_replica(stop(2)).await.unwrap().into_inner();
    assert_eq!(answer.error_code, 0, "a late push is not an error");
    assert_eq!(
        held_id(&c).as_deref(),
        Some(NEW_ID),
        "the delayed StopReplica deleted the re-created topic's replica"
    );
    // A newer StopReplica still applies.
    c.stop_replica(stop(4)).await.unwrap();
    assert_eq!(held_id(&c), None);
}

#[tokio::test]
async fn a_delayed_metadata_push_does_not_replace_newer_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(dir.path());
    let metadata = |seq: u64, topic: &str| {
        Request::new(v1::UpdateMetadataRequest {
            controller_id: 100,
            controller_epoch: CONTROLLER_EPOCH,
            metadata: Some(v1::MetadataResponse {
                topics: vec![v1::TopicMetadata {
                    name: topic.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            push_seq: seq,
            acls: vec![acl(topic)],
            resource_configs: Vec::new(),
        })
    };
    c.update_metadata(metadata(5, "new")).await.unwrap();
    c.update_metadata(metadata(4, "old")).await.unwrap();
    assert_eq!(c.0.metadata.read().topics[0].name, "new");
    assert_eq!(c.0.authorizer.read().acls[0].resource_name, "new");
    c.update_metadata(metadata(6, "newer")).await.unwrap();
    assert_eq!(c.0.metadata.read().topics[0].name, "newer");
    // The ACLs come with the metadata, whole: the newer set replaces the old.
    let acls = &c.0.authorizer.read().acls;
    assert_eq!(acls.len(), 1);
    assert_eq!(acls[0].resource_name, "newer");
}

fn acl(topic: &str) -> v1::AclBinding {
    v1::AclBinding {
        resource_type: 2,
        resource_name: topic.into(),
        pattern_type: 3,
        principal: "User:*".into(),
        host: "*".into(),
        operation: 2,
        permission: 2,
    }
}

#[test]
fn push_order_admits_newer_pushes_retries_and_a_new_controller() {
    let mut o = PushOrder::default();
    assert!(o.admit(1, 5));
    assert!(!o.admit(1, 4), "older");
    assert!(o.admit(1, 5), "a retry of the newest applies again");
    assert!(o.admit(1, 9), "gaps are pushes dropped by the controller");
    assert!(o.admit(1, 0), "unnumbered");
    assert!(!o.admit(1, 8));
    assert!(o.admit(2, 1), "a new controller numbers from 1 again");
    assert!(!o.admit(1, 10), "a deposed controller's push");
    assert!(o.admit(2, 2));
}
