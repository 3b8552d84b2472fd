//! Fetch and DeleteRecords over the Kafka protocol: a Kafka Fetch (topics by name, or
//! by id from v13) mapped onto the broker's native fetch and its answer back, and
//! DeleteRecords on each partition's leader. Records pass through as the stored bytes.

use std::collections::BTreeMap;

use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use sluice_proto::v1;
use sluice_proto::ErrorCode;

use super::apis::{code, name};
use crate::server::Shared;

/// The native fetch of a Kafka Fetch, and (v13+) the topic ids this broker does not know
/// with their partitions.
pub(super) fn fetch_request(
    r: &FetchRequest,
    version: i16,
    by_id: &BTreeMap<uuid::Uuid, String>,
) -> (v1::FetchRequest, Vec<(uuid::Uuid, Vec<i32>)>) {
    let mut unknown = Vec::new();
    let partitions = r
        .topics
        .iter()
        .filter_map(|t| {
            if version < 13 {
                return Some((t.topic.0.to_string(), t));
            }
            match by_id.get(&t.topic_id) {
                Some(name) => Some((name.clone(), t)),
                None => {
                    unknown.push((
                        t.topic_id,
                        t.partitions.iter().map(|p| p.partition).collect(),
                    ));
                    None
                }
            }
        })
        .flat_map(|(topic, t)| {
            t.partitions.iter().map(move |p| v1::FetchPartition {
                topic: topic.clone(),
                partition: p.partition.max(0) as u32,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes.max(0) as u32,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: -1,
                topic_id: String::new(),
            })
        })
        .collect();
    let request = v1::FetchRequest {
        max_wait_ms: r.max_wait_ms.max(0) as u32,
        min_bytes: r.min_bytes.max(0) as u32,
        max_bytes: r.max_bytes.max(0) as u32,
        partitions,
        replica_id: -1,
        isolation_level: i32::from(r.isolation_level),
    };
    (request, unknown)
}

pub(super) fn fetch_response(
    r: v1::FetchResponse,
    version: i16,
    by_name: &BTreeMap<String, uuid::Uuid>,
    unknown: Vec<(uuid::Uuid, Vec<i32>)>,
) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for p in r.partitions {
        let aborted = (!p.aborted_transactions.is_empty()).then(|| {
            p.aborted_transactions
                .iter()
                .map(|a| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(a.producer_id))
                        .with_first_offset(a.first_offset)
                })
                .collect()
        });
        let answer = PartitionData::default()
            .with_partition_index(p.partition as i32)
            .with_error_code(code(p.error_code))
            .with_high_watermark(p.high_watermark)
            .with_last_stable_offset(p.last_stable_offset)
            .with_log_start_offset(p.log_start_offset)
            .with_aborted_transactions(aborted)
            .with_records(Some(p.records));
        match topics.iter_mut().find(|t| t.topic.0.as_str() == p.topic) {
            Some(t) => t.partitions.push(answer),
            None => {
                let mut t = FetchableTopicResponse::default().with_partitions(vec![answer]);
                if version >= 13 {
                    t.topic_id = by_name.get(&p.topic).copied().unwrap_or_default();
                }
                // The name stays set for the lookup above; v13+ does not encode it.
                t.topic = name(&p.topic);
                topics.push(t);
            }
        }
    }
    if version >= 13 {
        for t in &mut topics {
            t.topic = TopicName::default();
        }
    }
    for (id, partitions) in unknown {
        topics.push(
            FetchableTopicResponse::default()
                .with_topic_id(id)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p)
                                .with_error_code(ErrorCode::UnknownTopicId.code() as i16)
                                .with_high_watermark(-1)
                                .with_last_stable_offset(-1)
                                .with_log_start_offset(-1)
                        })
                        .collect(),
                ),
        );
    }
    FetchResponse::default().with_responses(topics)
}

/// DeleteRecords on each partition's leader (the client sends each to its leader):
/// the new log start as the low watermark. Followers follow with their next fetch; the
/// answer does not wait for them (`timeout_ms` is not used).
pub(super) fn delete_records(
    shared: &Shared,
    r: kafka_protocol::messages::DeleteRecordsRequest,
) -> kafka_protocol::messages::DeleteRecordsResponse {
    use kafka_protocol::messages::delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
    };
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let topic = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let answer = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    let tp = sluice_proto::TopicPartition::new(
                        topic.clone(),
                        p.partition_index.max(0) as u32,
                    );
                    match shared.replicas.delete_records(&tp, p.offset) {
                        Ok(low) => answer.with_low_watermark(low as i64),
                        Err((c, _)) => answer
                            .with_low_watermark(-1)
                            .with_error_code(c.code() as i16),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    kafka_protocol::messages::DeleteRecordsResponse::default().with_topics(topics)
}
