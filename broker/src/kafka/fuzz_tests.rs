//! The request path (frame → header → body → dispatch → answer) never panics or hangs
//! on what a client sends: random frames, and well-formed requests of every served API
//! and version cut short or with bytes flipped. Each input ends in an answer, silence
//! (acks=0) or the connection closed. proptest prints the failing input to replay;
//! `PROPTEST_CASES=100000` runs a long campaign outside CI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeatRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    FetchRequest, FindCoordinatorRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, RequestKind,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

use super::{apis, versions, Outcome};
use crate::server::{Broker, BrokerConfig, Shared};

fn shared() -> (tempfile::TempDir, Arc<Shared>) {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig::new(1, "127.0.0.1:1".into(), Vec::new(), dir.path().into());
    let broker = Broker::open(config).unwrap();
    (dir, broker.shared.clone())
}

fn request_of(key: ApiKey) -> Option<RequestKind> {
    // Every served key: a key left out here would go unfuzzed.
    Some(match key {
        ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
        ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
        ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
        ApiKey::ConsumerGroupHeartbeat => {
            RequestKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest::default())
        }
        ApiKey::ConsumerGroupDescribe => {
            RequestKind::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default())
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
        ApiKey::OffsetForLeaderEpoch => {
            RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default())
        }
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default())
        }
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DeleteRecords => {
            RequestKind::DeleteRecords(kafka_protocol::messages::DeleteRecordsRequest::default())
        }
        ApiKey::ElectLeaders => {
            RequestKind::ElectLeaders(kafka_protocol::messages::ElectLeadersRequest::default())
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
        ApiKey::OffsetDelete => {
            RequestKind::OffsetDelete(kafka_protocol::messages::OffsetDeleteRequest::default())
        }
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(kafka_protocol::messages::DescribeLogDirsRequest::default())
        }
        ApiKey::DescribeProducers => RequestKind::DescribeProducers(
            kafka_protocol::messages::DescribeProducersRequest::default(),
        ),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            kafka_protocol::messages::AlterPartitionReassignmentsRequest::default(),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            kafka_protocol::messages::ListPartitionReassignmentsRequest::default(),
        ),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(
            kafka_protocol::messages::AddPartitionsToTxnRequest::default(),
        ),
        ApiKey::AddOffsetsToTxn => {
            RequestKind::AddOffsetsToTxn(kafka_protocol::messages::AddOffsetsToTxnRequest::default())
        }
        ApiKey::EndTxn => RequestKind::EndTxn(kafka_protocol::messages::EndTxnRequest::default()),
        ApiKey::TxnOffsetCommit => {
            RequestKind::TxnOffsetCommit(kafka_protocol::messages::TxnOffsetCommitRequest::default())
        }
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            kafka_protocol::messages::DescribeTransactionsRequest::default(),
        ),
        ApiKey::ListTransactions => RequestKind::ListTransactions(
            kafka_protocol::messages::ListTransactionsRequest::default(),
        ),
        ApiKey::DescribeAcls => {
            RequestKind::DescribeAcls(kafka_protocol::messages::DescribeAclsRequest::default())
        }
        ApiKey::CreateAcls => {
            RequestKind::CreateAcls(kafka_protocol::messages::CreateAclsRequest::default())
        }
        ApiKey::DeleteAcls => {
            RequestKind::DeleteAcls(kafka_protocol::messages::DeleteAclsRequest::default())
        }
        ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
            kafka_protocol::messages::DescribeUserScramCredentialsRequest::default(),
        ),
        other => panic!("{other:?} is served: give the fuzz tests a request of it"),
    })
}

/// A well-formed frame of `key` at `version` (default body), if the crate encodes it.
fn valid_frame(key: ApiKey, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    request_of(key)?.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

/// Runs one frame through the request path; fails on a panic or a hang.
fn run(shared: &Arc<Shared>, frame: Vec<u8>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    rt.block_on(async {
        let finishing = tokio::time::timeout(
            Duration::from_secs(5),
            apis::start(shared, Bytes::from(frame), peer),
        )
        .await
        .map_err(|_| TestCaseError::fail("starting a request hung"))?;
        // A fetch may long-poll (its max_wait): only an answer that never comes within
        // the fetch cap would be a hang; a short wait shows it does not panic first.
        match tokio::time::timeout(Duration::from_millis(200), finishing).await {
            Ok(Outcome::Respond(frame)) => {
                prop_assert!(frame.len() >= 8, "an answer without a header");
                let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                prop_assert_eq!(size as usize, frame.len() - 4, "the size prefix");
            }
            Ok(Outcome::Silent | Outcome::Close(_)) | Err(_) => {}
        }
        Ok(())
    })
}

fn served() -> Vec<(ApiKey, i16)> {
    versions::SERVED
        .iter()
        .flat_map(|(k, min, max)| (*min..=*max).map(move |v| (*k, v)))
        .collect()
}

proptest! {
    #[test]
    fn random_frames_never_panic(
        key in prop_oneof![Just(0i16), Just(1), Just(2), Just(3), Just(18), Just(19), -1i16..80],
        version in -1i16..20,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let (_dir, shared) = shared();
        let mut frame = Vec::new();
        frame.extend_from_slice(&key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&rest);
        run(&shared, frame)?;
    }

    #[test]
    fn damaged_requests_of_every_served_version_never_panic(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let all = served();
        let (key, version) = all[which.index(all.len())];
        let Some(mut frame) = valid_frame(key, version) else {
            return Ok(());
        };
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] ^= byte;
        }
        let keep = cut.index(frame.len() + 1);
        frame.truncate(keep.max(8));
        let (_dir, shared) = shared();
        run(&shared, frame)?;
    }
}

/// Every served version's well-formed default request is answered or, for what needs a
/// controller this broker does not have, answered with an error — never a closed
/// connection for a request that decodes.
#[test]
fn well_formed_requests_of_every_served_version_are_answered() {
    let (_dir, shared) = shared();
    every_served_version_is_answered(&shared);
}

/// The same with an authorizer that denies everything (no ACL, no
/// `allow.everyone.if.no.acl.found`): a refusal must be encodable in every served
/// version too (ElectLeaders v0 has no top-level error code, and a refusal that set one
/// closed the connection).
#[test]
fn refusals_of_every_served_version_are_answered() {
    let (_dir, shared) = shared();
    shared.authorizer.write().config = sluice_proto::acl::AuthorizerConfig {
        enabled: true,
        allow_if_no_acl: false,
        super_users: Vec::new(),
    };
    every_served_version_is_answered(&shared);
}

fn every_served_version_is_answered(shared: &Arc<Shared>) {
    for (key, version) in served() {
        let Some(frame) = valid_frame(key, version) else {
            continue;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let f = apis::start(shared, Bytes::from(frame), "127.0.0.1:9".parse().unwrap()).await;
            tokio::time::timeout(Duration::from_secs(5), f).await
        });
        match outcome {
            Ok(Outcome::Respond(_)) => {}
            Ok(Outcome::Silent) => assert_eq!(key, ApiKey::Produce, "only acks=0 is silent"),
            Ok(Outcome::Close(why)) => panic!("{key:?} v{version} closed: {why}"),
            Err(_) => panic!("{key:?} v{version} not answered in 5 s"),
        }
    }
}
