//! Encoding of every served response version, and the hand-encoded answer to the
//! Produce versions that are advertised but not served.

use super::*;
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
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsResponse, CreatePartitionsResponse, CreateTopicsResponse, DeleteGroupsResponse,
    DeleteTopicsResponse, DescribeClusterResponse, DescribeConfigsResponse,
    IncrementalAlterConfigsResponse, ListGroupsResponse,
};
use kafka_protocol::messages::{
    DescribeGroupsResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    SyncGroupResponse,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest};

/// Every served version of every response encodes, with the values a real answer
/// carries (a field a version lacks, set, fails the encoder).
#[test]
fn every_served_version_of_every_response_encodes() {
    let md = v1::MetadataResponse {
        brokers: vec![v1::BrokerInfo {
            id: 1,
            addr: "127.0.0.1:9392".into(),
            rack: "r1".into(),
            alive: true,
            kafka_addr: "127.0.0.1:9092".into(),
        }],
        topics: vec![v1::TopicMetadata {
            name: "t".into(),
            topic_id: "9b03c994487722e2d10a652292bc8432".into(),
            partitions: vec![v1::PartitionMetadata {
                partition: 0,
                leader: 1,
                leader_epoch: 3,
                replicas: vec![1],
                isr: vec![1],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let produced = v1::ProduceResponse {
        partitions: vec![v1::ProducePartitionResponse {
            topic: "t".into(),
            partition: 0,
            error_code: 7,
            error_message: "timed out".into(),
            base_offset: 10,
            log_append_time: -1,
            log_start_offset: 0,
            invalid_records: Vec::new(),
        }],
    };
    let fetched = v1::FetchResponse {
        partitions: vec![v1::FetchPartitionResponse {
            topic: "t".into(),
            partition: 0,
            high_watermark: 5,
            log_start_offset: 0,
            log_end_offset: 5,
            records: Bytes::from_static(b"batch"),
            ..Default::default()
        }],
    };
    let listed = vec![v1::ListOffsetsPartitionResponse {
        topic: "t".into(),
        partition: 0,
        offset: 5,
        timestamp: -1,
        leader_epoch: 3,
        ..Default::default()
    }];
    for (key, min, max) in versions::SERVED {
        for version in *min..=*max {
            let body = match key {
                ApiKey::ApiVersions => ResponseKind::ApiVersions(versions::api_versions(0)),
                ApiKey::Metadata => ResponseKind::Metadata(metadata_response(1, md.clone())),
                ApiKey::Produce if version < versions::PRODUCE_SERVED_MIN => continue,
                ApiKey::Produce => ResponseKind::Produce(produce_response(produced.clone())),
                ApiKey::Fetch => {
                    let ids: std::collections::BTreeMap<String, uuid::Uuid> =
                        [("t".to_string(), uuid::Uuid::from_u128(7))].into();
                    let unknown = if version >= 13 {
                        vec![(uuid::Uuid::from_u128(9), vec![0, 1])]
                    } else {
                        Vec::new()
                    };
                    ResponseKind::Fetch(fetch_response(fetched.clone(), version, &ids, unknown))
                }
                ApiKey::ListOffsets => {
                    ResponseKind::ListOffsets(list_offsets_response(version, listed.clone()))
                }
                ApiKey::InitProducerId => {
                    ResponseKind::InitProducerId(groups::producer_id_response(0, 4000, 0))
                }
                ApiKey::FindCoordinator => {
                    let found = |key: &'static str, error: i16| {
                        (
                            StrBytes::from_static_str(key),
                            (
                                error,
                                (error != 0).then(|| StrBytes::from_static_str("why")),
                                if error == 0 { 1 } else { -1 },
                                StrBytes::from_static_str("127.0.0.1"),
                                9092,
                            ),
                        )
                    };
                    let keys = if version >= 4 {
                        vec![found("g", 0), found("h", 15)]
                    } else {
                        vec![found("g", 15)]
                    };
                    ResponseKind::FindCoordinator(groups::find_coordinator_response(version, keys))
                }
                ApiKey::OffsetCommit => {
                    use kafka_protocol::messages::offset_commit_request::{
                        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
                    };
                    let asked = OffsetCommitRequest::default().with_topics(vec![
                        OffsetCommitRequestTopic::default()
                            .with_name(name("t"))
                            .with_partitions(vec![
                                OffsetCommitRequestPartition::default().with_partition_index(0)
                            ]),
                    ]);
                    ResponseKind::OffsetCommit(groups::offset_commit_response(&asked, 113))
                }
                ApiKey::OffsetFetch => {
                    let found: groups::Fetched =
                        [("t".to_string(), vec![(0, 42, 3, "m".to_string())])].into();
                    let mut answers = vec![(GroupId(StrBytes::from_static_str("g")), 0, found)];
                    if version >= 8 {
                        answers.push((
                            GroupId(StrBytes::from_static_str("h")),
                            16,
                            Default::default(),
                        ));
                    }
                    ResponseKind::OffsetFetch(groups::offset_fetch_response(version, answers))
                }
                ApiKey::ConsumerGroupHeartbeat => {
                    let id = uuid::Uuid::try_parse("9b03c994487722e2d10a652292bc8432").unwrap();
                    let by_name = [("t".to_string(), id)].into();
                    let reply = v1::GroupHeartbeatResponse {
                        member_id: "m".into(),
                        member_epoch: 3,
                        heartbeat_interval_ms: 5000,
                        assignment: vec![v1::TopicPartitions {
                            topic: "t".into(),
                            partitions: vec![0, 1],
                        }],
                        ..Default::default()
                    };
                    let failed = v1::GroupHeartbeatResponse {
                        error_code: 110,
                        error_message: "fenced".into(),
                        ..Default::default()
                    };
                    for (reply, leaving) in [(failed, false), (reply.clone(), true)] {
                        let body = ResponseKind::ConsumerGroupHeartbeat(
                            groups::heartbeat_response(reply, leaving, &by_name),
                        );
                        assert!(matches!(
                            respond(*key, version, 7, body),
                            Outcome::Respond(_)
                        ));
                    }
                    ResponseKind::ConsumerGroupHeartbeat(groups::heartbeat_response(
                        reply, false, &by_name,
                    ))
                }
                ApiKey::ConsumerGroupDescribe => {
                    let id = uuid::Uuid::try_parse("9b03c994487722e2d10a652292bc8432").unwrap();
                    let by_name = [("t".to_string(), id)].into();
                    let tps = vec![v1::TopicPartitions {
                        topic: "t".into(),
                        partitions: vec![0, 1],
                    }];
                    let d = v1::DescribeGroupResponse {
                        group_id: "g".into(),
                        state: "stable".into(),
                        group_epoch: 3,
                        assignment_epoch: 3,
                        assignor: "uniform".into(),
                        members: vec![v1::GroupMember {
                            member_id: "m".into(),
                            instance_id: "i".into(),
                            member_epoch: 3,
                            subscribed_topics: vec!["t".into()],
                            subscribed_regex: "t.*".into(),
                            assignment: tps.clone(),
                            target_assignment: tps,
                        }],
                        ..Default::default()
                    };
                    let missing = v1::DescribeGroupResponse {
                        error_code: 69,
                        error_message: "no group h".into(),
                        ..Default::default()
                    };
                    ResponseKind::ConsumerGroupDescribe(groups::consumer_group_describe_response(
                        version,
                        vec![
                            (GroupId(StrBytes::from_static_str("g")), d),
                            (GroupId(StrBytes::from_static_str("h")), missing),
                        ],
                        &by_name,
                    ))
                }
                ApiKey::CreateTopics => {
                    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(vec![
                        CreatableTopicResult::default()
                            .with_name(name("t"))
                            .with_topic_id(uuid::Uuid::from_u128(7))
                            .with_error_code(36)
                            .with_error_message(Some(StrBytes::from_static_str("exists")))
                            .with_num_partitions(3)
                            .with_replication_factor(1)
                            .with_configs(Some(vec![CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("1")))
                                .with_config_source(1)])),
                    ]))
                }
                ApiKey::DeleteTopics => ResponseKind::DeleteTopics(
                    DeleteTopicsResponse::default().with_responses(vec![
                        DeletableTopicResult::default()
                            .with_name(Some(name("t")))
                            .with_topic_id(uuid::Uuid::from_u128(7))
                            .with_error_code(3)
                            .with_error_message(Some(StrBytes::from_static_str("gone"))),
                    ]),
                ),
                ApiKey::CreatePartitions => ResponseKind::CreatePartitions(
                    CreatePartitionsResponse::default().with_results(vec![
                        CreatePartitionsTopicResult::default()
                            .with_name(name("t"))
                            .with_error_code(37)
                            .with_error_message(Some(StrBytes::from_static_str("fewer"))),
                    ]),
                ),
                ApiKey::DescribeCluster => ResponseKind::DescribeCluster(
                    DescribeClusterResponse::default()
                        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
                        .with_controller_id(BrokerId(1))
                        .with_brokers(vec![DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(1))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(9092)
                            .with_rack(Some(StrBytes::from_static_str("r1")))]),
                ),
                ApiKey::DescribeConfigs => ResponseKind::DescribeConfigs(
                    DescribeConfigsResponse::default().with_results(vec![
                        DescribeConfigsResult::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("t"))
                            .with_configs(vec![DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("1")))
                                .with_config_source(1)]),
                    ]),
                ),
                ApiKey::AlterConfigs => ResponseKind::AlterConfigs(
                    AlterConfigsResponse::default().with_responses(vec![
                        AlterConfigsResourceResponse::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("t"))
                            .with_error_code(40)
                            .with_error_message(Some(StrBytes::from_static_str("bad"))),
                    ]),
                ),
                ApiKey::IncrementalAlterConfigs => ResponseKind::IncrementalAlterConfigs(
                    IncrementalAlterConfigsResponse::default().with_responses(vec![
                        IncrementalResourceResponse::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("t"))
                            .with_error_code(40)
                            .with_error_message(Some(StrBytes::from_static_str("bad"))),
                    ]),
                ),
                ApiKey::OffsetForLeaderEpoch => ResponseKind::OffsetForLeaderEpoch(
                    OffsetForLeaderEpochResponse::default().with_topics(vec![
                        OffsetForLeaderTopicResult::default()
                            .with_topic(name("t"))
                            .with_partitions(vec![EpochEndOffset::default()
                                .with_partition(0)
                                .with_error_code(74)
                                .with_leader_epoch(3)
                                .with_end_offset(15)]),
                    ]),
                ),
                ApiKey::ListGroups => {
                    use kafka_protocol::messages::list_groups_response::ListedGroup;
                    let mut g = ListedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_protocol_type(StrBytes::from_static_str("consumer"));
                    if version >= 4 {
                        g.group_state = StrBytes::from_static_str("Stable");
                    }
                    if version >= 5 {
                        g.group_type = StrBytes::from_static_str("consumer");
                    }
                    ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(vec![g]))
                }
                ApiKey::DeleteGroups => {
                    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
                    ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(
                        vec![DeletableGroupResult::default()
                            .with_group_id(GroupId(StrBytes::from_static_str("g")))
                            .with_error_code(68)],
                    ))
                }
                ApiKey::JoinGroup => {
                    use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
                    let mut r = JoinGroupResponse::default()
                        .with_generation_id(3)
                        .with_leader(StrBytes::from_static_str("m1"))
                        .with_member_id(StrBytes::from_static_str("m1"))
                        .with_protocol_name(Some(StrBytes::from_static_str("range")))
                        .with_members(vec![JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_static_str("m1"))
                            .with_metadata(bytes::Bytes::from_static(b"md"))]);
                    if version >= 7 {
                        r.protocol_type = Some(StrBytes::from_static_str("consumer"));
                    }
                    ResponseKind::JoinGroup(r)
                }
                ApiKey::SyncGroup => ResponseKind::SyncGroup(
                    SyncGroupResponse::default()
                        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                        .with_protocol_name(Some(StrBytes::from_static_str("range")))
                        .with_assignment(bytes::Bytes::from_static(b"a")),
                ),
                ApiKey::DeleteRecords => {
                    use kafka_protocol::messages::delete_records_response::{
                        DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
                    };
                    ResponseKind::DeleteRecords(
                        kafka_protocol::messages::DeleteRecordsResponse::default().with_topics(
                            vec![DeleteRecordsTopicResult::default()
                                .with_name(name("t"))
                                .with_partitions(vec![DeleteRecordsPartitionResult::default()
                                    .with_partition_index(0)
                                    .with_low_watermark(40)])],
                        ),
                    )
                }
                ApiKey::ElectLeaders => {
                    use kafka_protocol::messages::elect_leaders_response::{
                        PartitionResult, ReplicaElectionResult,
                    };
                    let mut r = kafka_protocol::messages::ElectLeadersResponse::default()
                        .with_replica_election_results(vec![ReplicaElectionResult::default()
                            .with_topic(name("t"))
                            .with_partition_result(vec![PartitionResult::default()
                                .with_partition_id(0)
                                .with_error_code(84)])]);
                    if version >= 1 {
                        r.error_code = 0;
                    }
                    ResponseKind::ElectLeaders(r)
                }
                ApiKey::Heartbeat => {
                    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(27))
                }
                ApiKey::LeaveGroup => {
                    use kafka_protocol::messages::leave_group_response::MemberResponse;
                    let mut r = LeaveGroupResponse::default();
                    if version >= 3 {
                        r.members = vec![MemberResponse::default()
                            .with_member_id(StrBytes::from_static_str("m1"))
                            .with_error_code(25)];
                    }
                    ResponseKind::LeaveGroup(r)
                }
                ApiKey::DescribeGroups => {
                    use kafka_protocol::messages::describe_groups_response::{
                        DescribedGroup, DescribedGroupMember,
                    };
                    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(
                        vec![DescribedGroup::default()
                            .with_group_id(GroupId(StrBytes::from_static_str("g")))
                            .with_group_state(StrBytes::from_static_str("Stable"))
                            .with_protocol_type(StrBytes::from_static_str("consumer"))
                            .with_protocol_data(StrBytes::from_static_str("range"))
                            .with_members(vec![DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_static_str("m1"))
                                .with_client_id(StrBytes::from_static_str("c"))
                                .with_client_host(StrBytes::from_static_str("/127.0.0.1"))])],
                    ))
                }
                ApiKey::OffsetDelete => {
                    use kafka_protocol::messages::offset_delete_response::{
                        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
                    };
                    ResponseKind::OffsetDelete(
                        kafka_protocol::messages::OffsetDeleteResponse::default().with_topics(
                            vec![OffsetDeleteResponseTopic::default()
                                .with_name(name("t"))
                                .with_partitions(vec![OffsetDeleteResponsePartition::default()
                                    .with_partition_index(0)
                                    .with_error_code(86)])],
                        ),
                    )
                }
                ApiKey::DescribeLogDirs => {
                    use kafka_protocol::messages::describe_log_dirs_response::{
                        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
                    };
                    let mut d = DescribeLogDirsResult::default()
                        .with_log_dir(StrBytes::from_static_str("/data"))
                        .with_topics(vec![DescribeLogDirsTopic::default()
                            .with_name(name("t"))
                            .with_partitions(vec![DescribeLogDirsPartition::default()
                                .with_partition_index(0)
                                .with_partition_size(4096)])]);
                    if version >= 4 {
                        d.total_bytes = 1 << 30;
                        d.usable_bytes = 1 << 29;
                    }
                    ResponseKind::DescribeLogDirs(
                        kafka_protocol::messages::DescribeLogDirsResponse::default()
                            .with_results(vec![d]),
                    )
                }
                ApiKey::DescribeProducers => {
                    use kafka_protocol::messages::describe_producers_response::{
                        PartitionResponse, ProducerState, TopicResponse,
                    };
                    ResponseKind::DescribeProducers(
                        kafka_protocol::messages::DescribeProducersResponse::default().with_topics(
                            vec![TopicResponse::default()
                                .with_name(name("t"))
                                .with_partitions(vec![PartitionResponse::default()
                                    .with_partition_index(0)
                                    .with_active_producers(vec![ProducerState::default()
                                        .with_producer_id(kafka_protocol::messages::ProducerId(7))
                                        .with_last_sequence(4)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)])])],
                        ),
                    )
                }
                ApiKey::AlterPartitionReassignments => {
                    use kafka_protocol::messages::alter_partition_reassignments_response::{
                        ReassignablePartitionResponse, ReassignableTopicResponse,
                    };
                    ResponseKind::AlterPartitionReassignments(
                        kafka_protocol::messages::AlterPartitionReassignmentsResponse::default()
                            .with_responses(vec![ReassignableTopicResponse::default()
                                .with_name(name("t"))
                                .with_partitions(vec![ReassignablePartitionResponse::default()
                                    .with_partition_index(0)
                                    .with_error_code(85)])]),
                    )
                }
                ApiKey::ListPartitionReassignments => {
                    use kafka_protocol::messages::list_partition_reassignments_response::{
                        OngoingPartitionReassignment, OngoingTopicReassignment,
                    };
                    use kafka_protocol::messages::BrokerId;
                    ResponseKind::ListPartitionReassignments(
                        kafka_protocol::messages::ListPartitionReassignmentsResponse::default()
                            .with_topics(vec![OngoingTopicReassignment::default()
                                .with_name(name("t"))
                                .with_partitions(vec![OngoingPartitionReassignment::default()
                                    .with_partition_index(0)
                                    .with_replicas(vec![BrokerId(2), BrokerId(1)])
                                    .with_adding_replicas(vec![BrokerId(2)])
                                    .with_removing_replicas(vec![BrokerId(1)])])]),
                    )
                }
                ApiKey::AddPartitionsToTxn => {
                    let mut out = kafka_protocol::messages::AddPartitionsToTxnResponse::default();
                    out.results_by_topic_v3_and_below = vec![
                        kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                            .with_name(name("t"))
                            .with_results_by_partition(vec![
                                kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(0)
                                    .with_partition_error_code(51),
                            ]),
                    ];
                    ResponseKind::AddPartitionsToTxn(out)
                }
                ApiKey::AddOffsetsToTxn => ResponseKind::AddOffsetsToTxn(
                    kafka_protocol::messages::AddOffsetsToTxnResponse::default()
                        .with_error_code(90),
                ),
                ApiKey::EndTxn => ResponseKind::EndTxn(
                    kafka_protocol::messages::EndTxnResponse::default().with_error_code(48),
                ),
                ApiKey::TxnOffsetCommit => {
                    use kafka_protocol::messages::txn_offset_commit_response::{
                        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
                    };
                    ResponseKind::TxnOffsetCommit(
                        kafka_protocol::messages::TxnOffsetCommitResponse::default().with_topics(
                            vec![TxnOffsetCommitResponseTopic::default()
                                .with_name(name("t"))
                                .with_partitions(vec![TxnOffsetCommitResponsePartition::default(
                                )
                                .with_partition_index(0)
                                .with_error_code(0)])],
                        ),
                    )
                }
                ApiKey::DescribeTransactions => {
                    use kafka_protocol::messages::describe_transactions_response::{
                        TopicData, TransactionState,
                    };
                    ResponseKind::DescribeTransactions(
                        kafka_protocol::messages::DescribeTransactionsResponse::default()
                            .with_transaction_states(vec![TransactionState::default()
                                .with_transaction_state(StrBytes::from_static_str("Ongoing"))
                                .with_transaction_timeout_ms(60_000)
                                .with_transaction_start_time_ms(1)
                                .with_topics(vec![TopicData::default()
                                    .with_topic(name("t"))
                                    .with_partitions(vec![0])])]),
                    )
                }
                ApiKey::ListTransactions => {
                    use kafka_protocol::messages::list_transactions_response::TransactionState;
                    let mut out = kafka_protocol::messages::ListTransactionsResponse::default()
                        .with_transaction_states(vec![TransactionState::default()
                            .with_transaction_state(StrBytes::from_static_str("Empty"))]);
                    out.unknown_state_filters = vec![StrBytes::from_static_str("Nope")];
                    ResponseKind::ListTransactions(out)
                }
                ApiKey::DescribeAcls => {
                    use kafka_protocol::messages::describe_acls_response::{
                        AclDescription, DescribeAclsResource,
                    };
                    ResponseKind::DescribeAcls(
                        kafka_protocol::messages::DescribeAclsResponse::default()
                            .with_error_message(Some(StrBytes::from_static_str("x")))
                            .with_resources(vec![DescribeAclsResource::default()
                                .with_resource_type(2)
                                .with_resource_name(StrBytes::from_static_str("t"))
                                .with_pattern_type(3)
                                .with_acls(vec![AclDescription::default()
                                    .with_principal(StrBytes::from_static_str("User:*"))
                                    .with_host(StrBytes::from_static_str("*"))
                                    .with_operation(2)
                                    .with_permission_type(2)])]),
                    )
                }
                ApiKey::CreateAcls => {
                    use kafka_protocol::messages::create_acls_response::AclCreationResult;
                    ResponseKind::CreateAcls(
                        kafka_protocol::messages::CreateAclsResponse::default().with_results(vec![
                            AclCreationResult::default()
                                .with_error_code(42)
                                .with_error_message(Some(StrBytes::from_static_str("x"))),
                        ]),
                    )
                }
                ApiKey::DeleteAcls => {
                    use kafka_protocol::messages::delete_acls_response::{
                        DeleteAclsFilterResult, DeleteAclsMatchingAcl,
                    };
                    ResponseKind::DeleteAcls(
                        kafka_protocol::messages::DeleteAclsResponse::default()
                            .with_filter_results(vec![DeleteAclsFilterResult::default()
                                .with_matching_acls(vec![DeleteAclsMatchingAcl::default()
                                    .with_resource_type(2)
                                    .with_resource_name(StrBytes::from_static_str("t"))
                                    .with_pattern_type(4)
                                    .with_principal(StrBytes::from_static_str("User:*"))
                                    .with_host(StrBytes::from_static_str("*"))
                                    .with_operation(3)
                                    .with_permission_type(3)])]),
                    )
                }
                ApiKey::DescribeUserScramCredentials => {
                    ResponseKind::DescribeUserScramCredentials(
                        crate::kafka::configs::describe_user_scram_credentials(
                            kafka_protocol::messages::DescribeUserScramCredentialsRequest::default()
                                .with_users(Some(vec![
                                    kafka_protocol::messages::describe_user_scram_credentials_request::UserName::default()
                                        .with_name(StrBytes::from_static_str("alice")),
                                ])),
                        ),
                    )
                }
                other => panic!("{other:?} served but not covered here"),
            };
            assert!(
                matches!(respond(*key, version, 7, body), Outcome::Respond(_)),
                "{key:?} v{version} does not encode"
            );
        }
    }
}

/// Produce v0–2 (advertised, not served) gets UNSUPPORTED_VERSION per partition in
/// the old layout; acks=0 gets nothing.
#[test]
fn old_produce_versions_are_refused_per_partition() {
    let mut req = BytesMut::new();
    req.extend_from_slice(&0i16.to_be_bytes()); // Produce
    req.extend_from_slice(&2i16.to_be_bytes()); // v2
    req.extend_from_slice(&42i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&3i16.to_be_bytes());
    req.extend_from_slice(b"cli");
    req.extend_from_slice(&1i16.to_be_bytes()); // acks
    req.extend_from_slice(&1000i32.to_be_bytes());
    req.extend_from_slice(&1i32.to_be_bytes()); // one topic
    req.extend_from_slice(&1i16.to_be_bytes());
    req.extend_from_slice(b"t");
    req.extend_from_slice(&2i32.to_be_bytes()); // two partitions
    for p in [0i32, 1] {
        req.extend_from_slice(&p.to_be_bytes());
        req.extend_from_slice(&3i32.to_be_bytes());
        req.extend_from_slice(b"xyz");
    }
    let frame = old_produce_refusal(2, 42, req.clone().freeze())
        .expect("well formed")
        .expect("acks=1 is answered");
    let mut b = frame.freeze();
    assert_eq!(b.get_i32() as usize, b.remaining());
    assert_eq!(b.get_i32(), 42);
    assert_eq!(b.get_i32(), 1);
    assert_eq!(b.get_i16(), 1);
    b.advance(1);
    assert_eq!(b.get_i32(), 2);
    for p in [0, 1] {
        assert_eq!(b.get_i32(), p);
        assert_eq!(b.get_i16(), UNSUPPORTED_VERSION);
        assert_eq!(b.get_i64(), -1);
        assert_eq!(b.get_i64(), -1);
    }
    assert_eq!(b.get_i32(), 0, "throttle time");
    assert!(!b.has_remaining());
    // Cut short: malformed, not a panic.
    let cut = req.freeze().slice(..30);
    assert!(old_produce_refusal(2, 42, cut).is_none());
}

/// A Produce partition carries exactly one batch: two, or none, are answered
/// INVALID_RECORD and taken out of the request; one (even one cut short, which the
/// append then refuses as corrupt) stays.
#[test]
fn produce_partitions_need_exactly_one_batch() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    // A batch as far as the framing goes: base offset, then a length covering the rest.
    let batch = |body: usize| {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&(body as i32).to_be_bytes());
        b.extend(std::iter::repeat_n(7u8, body));
        b
    };
    let one = batch(49);
    let two = [batch(49), batch(61)].concat();
    let cut = batch(49)[..30].to_vec();
    let partition = |index: i32, records: Option<Vec<u8>>| {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(records.map(Bytes::from))
    };
    let mut r = ProduceRequest::default().with_topic_data(vec![TopicProduceData::default()
        .with_name(name("t"))
        .with_partition_data(vec![
            partition(0, Some(one)),
            partition(1, Some(two)),
            partition(2, Some(Vec::new())),
            partition(3, None),
            partition(4, Some(cut)),
        ])]);
    let refused = not_one_batch(&mut r);
    let kept: Vec<i32> = r.topic_data[0]
        .partition_data
        .iter()
        .map(|p| p.index)
        .collect();
    assert_eq!(kept, vec![0, 4]);
    assert_eq!(
        refused
            .iter()
            .map(|p| (p.partition, p.error_code, p.base_offset))
            .collect::<Vec<_>>(),
        vec![(1, 87, -1), (2, 87, -1), (3, 87, -1)]
    );
}
