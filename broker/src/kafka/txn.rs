//! Transactions over the Kafka protocol (transaction version 1, as Kafka 3.x and a 4.x
//! broker without `transaction.version` 2): InitProducerId with a transactional id,
//! AddPartitionsToTxn 0–3, AddOffsetsToTxn 0–3, EndTxn 0–3, TxnOffsetCommit 0–3,
//! DescribeTransactions 0 and ListTransactions 0–1, each decoded here and carried out by
//! the coordinator (`crate::server::txn`).

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as Listed;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::ErrorCode;

use super::apis::name;
use super::groups::{known_partitions, producer_id_response};
use crate::group::coordinator::NewOffset;
use crate::server::txn;
use crate::server::Shared;

fn err(f: &(ErrorCode, String)) -> i16 {
    f.0.code() as i16
}

/// InitProducerId with a transactional id (the caller handles the idempotent kind).
pub(crate) async fn init_producer_id(
    shared: &Arc<Shared>,
    txn_id: &str,
    r: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let expected = (r.producer_id.0 >= 0).then_some((r.producer_id.0, r.producer_epoch));
    match txn::init_producer_id(shared, txn_id, r.transaction_timeout_ms, expected).await {
        Ok((id, epoch)) => producer_id_response(0, id, epoch),
        Err(f) => producer_id_response(err(&f), -1, -1),
    }
}

/// AddPartitionsToTxn v0–3. A partition the metadata does not know is answered
/// UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as in Kafka.
pub(crate) async fn add_partitions(
    shared: &Arc<Shared>,
    r: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let known = known_partitions(shared);
    let is_known = |t: &str, p: i32| known.get(t).is_some_and(|n| p >= 0 && (p as usize) < *n);
    let tps: Vec<(String, u32)> = r
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), (*p).max(0) as u32))
        })
        .collect();
    let any_unknown = r
        .v3_and_below_topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| !is_known(&t.name, *p)));
    let result = if any_unknown {
        None
    } else {
        let txn_id = r.v3_and_below_transactional_id.0.to_string();
        Some(
            txn::add_partitions(
                shared,
                &txn_id,
                r.v3_and_below_producer_id.0,
                r.v3_and_below_producer_epoch,
                tps,
            )
            .await,
        )
    };
    const OPERATION_NOT_ATTEMPTED: i16 = 55;
    let results = r
        .v3_and_below_topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = match &result {
                                None if !is_known(&t.name, *p) => {
                                    ErrorCode::UnknownTopicOrPartition.code() as i16
                                }
                                None => OPERATION_NOT_ATTEMPTED,
                                Some(Ok(())) => 0,
                                Some(Err(f)) => err(f),
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
pub(crate) async fn add_offsets(
    shared: &Arc<Shared>,
    r: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = match txn::offsets_partition_of(shared, &r.group_id) {
        None => ErrorCode::CoordinatorNotAvailable.code() as i16,
        Some(tp) => match txn::add_partitions(
            shared,
            &r.transactional_id,
            r.producer_id.0,
            r.producer_epoch,
            vec![tp],
        )
        .await
        {
            Ok(()) => 0,
            Err(f) => err(&f),
        },
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub(crate) async fn end_txn(shared: &Arc<Shared>, r: EndTxnRequest) -> EndTxnResponse {
    let code = match txn::end_txn(
        shared,
        &r.transactional_id,
        r.producer_id.0,
        r.producer_epoch,
        r.committed,
    )
    .await
    {
        Ok(()) => 0,
        Err(f) => err(&f),
    };
    EndTxnResponse::default().with_error_code(code)
}

/// TxnOffsetCommit: pending offsets on the group's coordinator; a partition the
/// metadata does not know is UNKNOWN_TOPIC_OR_PARTITION and not committed.
pub(crate) async fn txn_offset_commit(
    shared: &Arc<Shared>,
    r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let known = known_partitions(shared);
    let is_known = |t: &str, p: i32| known.get(t).is_some_and(|n| p >= 0 && (p as usize) < *n);
    let offsets: Vec<_> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| is_known(&t.name, p.partition_index))
                .map(|p| NewOffset {
                    tp: (t.name.0.to_string(), p.partition_index as u32),
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch.max(-1),
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                })
        })
        .collect();
    let code = if offsets.is_empty() {
        0
    } else {
        match txn::txn_offset_commit(
            shared,
            &r.group_id,
            (r.producer_id.0, r.producer_epoch),
            &r.member_id,
            r.generation_id,
            offsets,
        )
        .await
        {
            Ok(()) => 0,
            Err(f) => err(&f),
        }
    };
    TxnOffsetCommitResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if is_known(&t.name, p.partition_index) {
                                        code
                                    } else {
                                        ErrorCode::UnknownTopicOrPartition.code() as i16
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub(crate) async fn describe(
    shared: &Arc<Shared>,
    r: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::new();
    for id in r.transactional_ids {
        let state = match txn::describe(shared, &id).await {
            Ok(m) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in &m.partitions {
                    match topics.iter_mut().find(|x| x.topic.0.as_str() == t) {
                        Some(x) => x.partitions.push(*p as i32),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(name(t))
                                .with_partitions(vec![*p as i32]),
                        ),
                    }
                }
                TransactionState::default()
                    .with_transaction_state(StrBytes::from_static_str(m.status.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(topics)
            }
            Err(f) => TransactionState::default().with_error_code(err(&f)),
        };
        states.push(state.with_transactional_id(id));
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: the ids this broker coordinates, filtered by state, producer id
/// and (v1) by running longer than `duration_filter` ms.
pub(crate) fn list(shared: &Arc<Shared>, r: ListTransactionsRequest) -> ListTransactionsResponse {
    use crate::group::txn::TxnStatus;
    const STATES: [TxnStatus; 6] = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
    ];
    let unknown: Vec<StrBytes> = r
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let states = txn::list(shared)
        .into_iter()
        .filter(|(_, m)| {
            r.state_filters.is_empty()
                || r.state_filters
                    .iter()
                    .any(|f| f.as_str() == m.status.name())
        })
        .filter(|(_, m)| {
            r.producer_id_filters.is_empty()
                || r.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
        })
        .filter(|(_, m)| {
            r.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms >= r.duration_filter)
        })
        .map(|(id, m)| {
            Listed::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.status.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
