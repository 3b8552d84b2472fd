//! The API keys and versions the listener serves: what ApiVersions advertises, and
//! nothing more (docs/kafka-compatibility.md is the ledger).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (key, lowest advertised, highest). Produce is advertised from 0 because older
/// librdkafka (Debian's kcat among them) turns compression off for a broker whose
/// Produce starts higher; versions below [`PRODUCE_SERVED_MIN`] are answered
/// UNSUPPORTED_VERSION.
pub(crate) const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
];

/// The lowest Produce version served (RecordBatch v2, what the crate decodes).
pub(crate) const PRODUCE_SERVED_MIN: i16 = 3;

/// The advertised range of `key`, if served.
pub(crate) fn served(key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether `version` of `key` is decoded and answered here.
pub(crate) fn answers(key: ApiKey, version: i16) -> bool {
    match served(key) {
        Some((min, max)) if key == ApiKey::Produce => {
            (min.max(PRODUCE_SERVED_MIN)..=max).contains(&version)
        }
        Some((min, max)) => (min..=max).contains(&version),
        None => false,
    }
}

/// The ApiVersions answer: every served key with its advertised range.
pub(crate) fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SERVED
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every advertised range lies within what the protocol crate can decode and
    /// encode (Produce below 3 excepted: answered without decoding).
    #[test]
    fn advertised_ranges_are_within_the_crates() {
        for (key, min, max) in SERVED {
            let valid = key.valid_versions();
            assert!(*max <= valid.max, "{key:?} max {max} > {}", valid.max);
            let lowest_served = if *key == ApiKey::Produce {
                PRODUCE_SERVED_MIN
            } else {
                *min
            };
            assert!(
                lowest_served >= valid.min,
                "{key:?} min {lowest_served} < {}",
                valid.min
            );
        }
        assert!(!answers(ApiKey::Produce, 2));
        assert!(answers(ApiKey::Produce, 3));
        assert!(answers(ApiKey::Fetch, 16) && !answers(ApiKey::Fetch, 17));
        assert!(answers(ApiKey::JoinGroup, 0) && answers(ApiKey::JoinGroup, 9));
        assert!(!answers(ApiKey::JoinGroup, 10));
    }
}
