//! Stable wire error codes. The numbers are Kafka's, so a Kafka user reading a code
//! recognizes it; a retired code is never reused.

/// A typed error code carried in every response beside a human message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    None,
    UnknownServerError,
    OffsetOutOfRange,
    CorruptMessage,
    UnknownTopicOrPartition,
    LeaderNotAvailable,
    NotLeaderOrFollower,
    RequestTimedOut,
    BrokerNotAvailable,
    MessageTooLarge,
    StaleControllerEpoch,
    InvalidTopic,
    NotEnoughReplicas,
    /// acks=all: appended, but the ISR shrank below `min.insync.replicas` before the
    /// high watermark passed the records. Retriable (idempotence keeps a retry exact).
    NotEnoughReplicasAfterAppend,
    InvalidRequiredAcks,
    TopicAlreadyExists,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidConfig,
    NotController,
    InvalidRequest,
    StorageError,
    FencedLeaderEpoch,
    UnknownLeaderEpoch,
    StaleBrokerEpoch,
    InvalidUpdateVersion,
    IneligibleReplica,
    OutOfOrderSequence,
    /// A broker registered with an id that another live process holds.
    DuplicateBrokerRegistration,
    /// A record the topic cannot hold, e.g. one without a key on a compacted topic.
    /// Not retriable: the same record would be refused again.
    InvalidRecord,
    /// The group coordinator is loading its partition of `__consumer_offsets`. Retriable.
    CoordinatorLoadInProgress,
    /// No coordinator for the group yet (`__consumer_offsets` being created, no leader). Retriable.
    CoordinatorNotAvailable,
    /// This broker is not the group's coordinator: find it again. Retriable.
    NotCoordinator,
    InvalidGroupId,
    /// The coordinator does not know the member (fenced, expired): rejoin with epoch 0.
    UnknownMemberId,
    GroupIdNotFound,
    /// The operation needs a group without members (reset-offsets, delete).
    NonEmptyGroup,
    /// The member's epoch is not the coordinator's: give up every partition and rejoin.
    FencedMemberEpoch,
    /// A live member already holds this `group.instance.id`.
    UnreleasedInstanceId,
    /// An offset commit with an epoch other than the member's current one.
    StaleMemberEpoch,
    /// ListOffsets on a leader whose high watermark has not yet reached the start of its
    /// leader epoch: an answer now could move backwards later (KIP-207). Retriable.
    OffsetNotAvailable,
    /// The broker holds no partition of this topic id: a deleted topic's copy under a
    /// re-created topic's name, until the broker gets its new role. Retriable.
    UnknownTopicId,
    /// A join into a group that already has the most members a group may have
    /// (`group.max.size`). Not retriable until a member leaves.
    GroupMaxSizeReached,
    /// Classic group protocol: a generation other than the group's.
    IllegalGeneration,
    /// A protocol the group does not use, or the other group protocol.
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    /// Classic group protocol: the group is rebalancing; join again.
    RebalanceInProgress,
    /// Classic JoinGroup: join again with the member id given.
    MemberIdRequired,
    /// Another process holds this member's `group.instance.id` now.
    FencedInstanceId,
    /// A leader election of a partition whose preferred replica already leads.
    ElectionNotNeeded,
    /// A preferred election of a partition whose preferred replica is out of the ISR or
    /// not live.
    PreferredLeaderNotAvailable,
    /// No replica may lead (none live in the ISR; Sluice never elects outside it).
    EligibleLeadersNotAvailable,
    /// OffsetDelete of a partition whose topic a member of the group subscribes to.
    GroupSubscribedToTopic,
    /// A reassignment cancelled where none is in progress.
    NoReassignmentInProgress,
    /// A batch or request from a producer epoch the coordinator has fenced.
    InvalidProducerEpoch,
    /// A transaction request the transaction's state does not allow (EndTxn with nothing open).
    InvalidTxnState,
    /// The producer id is not the one the transactional id has.
    InvalidProducerIdMapping,
    /// A transaction timeout above `transaction.max.timeout.ms`.
    InvalidTransactionTimeout,
    /// The previous transaction of this transactional id is still completing. Retriable.
    ConcurrentTransactions,
    /// DescribeTransactions of a transactional id the coordinator does not know.
    TransactionalIdNotFound,
    /// OffsetFetch with `require_stable`: a transactional commit of the partition is pending. Retriable.
    UnstableOffsetCommit,
    /// Another producer with the same transactional id has a newer epoch.
    ProducerFenced,
    /// A transaction marker from a coordinator that a newer one replaced.
    TransactionCoordinatorFenced,
    /// Transactional records in a Produce request that names no transactional id.
    TransactionalIdAuthorizationFailed,
    /// Manual replica assignments Kafka's rules refuse (empty, duplicate or unknown
    /// brokers, lists of different lengths).
    InvalidReplicaAssignment,
    /// A code this build does not know (from a newer peer).
    Unknown(i32),
}

impl ErrorCode {
    pub fn code(self) -> i32 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::UnknownServerError => -1,
            ErrorCode::OffsetOutOfRange => 1,
            ErrorCode::CorruptMessage => 2,
            ErrorCode::UnknownTopicOrPartition => 3,
            ErrorCode::LeaderNotAvailable => 5,
            ErrorCode::NotLeaderOrFollower => 6,
            ErrorCode::RequestTimedOut => 7,
            ErrorCode::BrokerNotAvailable => 8,
            ErrorCode::MessageTooLarge => 10,
            ErrorCode::StaleControllerEpoch => 11,
            ErrorCode::InvalidTopic => 17,
            ErrorCode::NotEnoughReplicas => 19,
            ErrorCode::NotEnoughReplicasAfterAppend => 20,
            ErrorCode::InvalidRequiredAcks => 21,
            ErrorCode::TopicAlreadyExists => 36,
            ErrorCode::InvalidPartitions => 37,
            ErrorCode::InvalidReplicationFactor => 38,
            ErrorCode::InvalidConfig => 40,
            ErrorCode::NotController => 41,
            ErrorCode::InvalidRequest => 42,
            ErrorCode::StorageError => 56,
            ErrorCode::FencedLeaderEpoch => 74,
            ErrorCode::UnknownLeaderEpoch => 75,
            ErrorCode::StaleBrokerEpoch => 77,
            ErrorCode::InvalidUpdateVersion => 108,
            ErrorCode::IneligibleReplica => 107,
            ErrorCode::OutOfOrderSequence => 45,
            ErrorCode::DuplicateBrokerRegistration => 101,
            ErrorCode::InvalidRecord => 87,
            ErrorCode::CoordinatorLoadInProgress => 14,
            ErrorCode::CoordinatorNotAvailable => 15,
            ErrorCode::NotCoordinator => 16,
            ErrorCode::InvalidGroupId => 24,
            ErrorCode::UnknownMemberId => 25,
            ErrorCode::GroupIdNotFound => 69,
            ErrorCode::NonEmptyGroup => 68,
            ErrorCode::FencedMemberEpoch => 110,
            ErrorCode::UnreleasedInstanceId => 111,
            ErrorCode::StaleMemberEpoch => 113,
            ErrorCode::OffsetNotAvailable => 78,
            ErrorCode::UnknownTopicId => 100,
            ErrorCode::GroupMaxSizeReached => 81,
            ErrorCode::IllegalGeneration => 22,
            ErrorCode::InconsistentGroupProtocol => 23,
            ErrorCode::InvalidSessionTimeout => 26,
            ErrorCode::RebalanceInProgress => 27,
            ErrorCode::MemberIdRequired => 79,
            ErrorCode::FencedInstanceId => 82,
            ErrorCode::ElectionNotNeeded => 84,
            ErrorCode::PreferredLeaderNotAvailable => 80,
            ErrorCode::EligibleLeadersNotAvailable => 83,
            ErrorCode::GroupSubscribedToTopic => 86,
            ErrorCode::NoReassignmentInProgress => 85,
            ErrorCode::InvalidProducerEpoch => 47,
            ErrorCode::InvalidTxnState => 48,
            ErrorCode::InvalidProducerIdMapping => 49,
            ErrorCode::InvalidTransactionTimeout => 50,
            ErrorCode::ConcurrentTransactions => 51,
            ErrorCode::TransactionalIdNotFound => 105,
            ErrorCode::UnstableOffsetCommit => 88,
            ErrorCode::ProducerFenced => 90,
            ErrorCode::TransactionCoordinatorFenced => 52,
            ErrorCode::TransactionalIdAuthorizationFailed => 53,
            ErrorCode::InvalidReplicaAssignment => 39,
            ErrorCode::Unknown(c) => c,
        }
    }

    pub fn from_code(code: i32) -> ErrorCode {
        const ALL: [ErrorCode; 65] = [
            ErrorCode::None,
            ErrorCode::UnknownServerError,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::CorruptMessage,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::RequestTimedOut,
            ErrorCode::BrokerNotAvailable,
            ErrorCode::MessageTooLarge,
            ErrorCode::StaleControllerEpoch,
            ErrorCode::InvalidTopic,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::NotEnoughReplicasAfterAppend,
            ErrorCode::InvalidRequiredAcks,
            ErrorCode::TopicAlreadyExists,
            ErrorCode::InvalidPartitions,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::InvalidConfig,
            ErrorCode::NotController,
            ErrorCode::InvalidRequest,
            ErrorCode::StorageError,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch,
            ErrorCode::StaleBrokerEpoch,
            ErrorCode::InvalidUpdateVersion,
            ErrorCode::IneligibleReplica,
            ErrorCode::OutOfOrderSequence,
            ErrorCode::DuplicateBrokerRegistration,
            ErrorCode::InvalidRecord,
            ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NotCoordinator,
            ErrorCode::InvalidGroupId,
            ErrorCode::UnknownMemberId,
            ErrorCode::GroupIdNotFound,
            ErrorCode::NonEmptyGroup,
            ErrorCode::FencedMemberEpoch,
            ErrorCode::UnreleasedInstanceId,
            ErrorCode::StaleMemberEpoch,
            ErrorCode::OffsetNotAvailable,
            ErrorCode::UnknownTopicId,
            ErrorCode::GroupMaxSizeReached,
            ErrorCode::IllegalGeneration,
            ErrorCode::InconsistentGroupProtocol,
            ErrorCode::InvalidSessionTimeout,
            ErrorCode::RebalanceInProgress,
            ErrorCode::MemberIdRequired,
            ErrorCode::FencedInstanceId,
            ErrorCode::ElectionNotNeeded,
            ErrorCode::PreferredLeaderNotAvailable,
            ErrorCode::EligibleLeadersNotAvailable,
            ErrorCode::GroupSubscribedToTopic,
            ErrorCode::NoReassignmentInProgress,
            ErrorCode::InvalidProducerEpoch,
            ErrorCode::InvalidTxnState,
            ErrorCode::InvalidProducerIdMapping,
            ErrorCode::InvalidTransactionTimeout,
            ErrorCode::ConcurrentTransactions,
            ErrorCode::TransactionalIdNotFound,
            ErrorCode::UnstableOffsetCommit,
            ErrorCode::ProducerFenced,
            ErrorCode::TransactionCoordinatorFenced,
            ErrorCode::TransactionalIdAuthorizationFailed,
            ErrorCode::InvalidReplicaAssignment,
        ];
        ALL.into_iter()
            .find(|e| e.code() == code)
            .unwrap_or(ErrorCode::Unknown(code))
    }

    /// Whether a client should retry (after refreshing metadata where it applies).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::CorruptMessage
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::BrokerNotAvailable
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::NotController
                | ErrorCode::StorageError
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::OffsetNotAvailable
                | ErrorCode::UnknownTopicId
                | ErrorCode::ConcurrentTransactions
                | ErrorCode::UnstableOffsetCommit
        )
    }

    /// Kafka's upper-snake name, for messages and logs.
    pub fn name(self) -> String {
        format!("{self:?}").chars().fold(String::new(), |mut s, c| {
            if c.is_uppercase() && !s.is_empty() {
                s.push('_');
            }
            s.push(c.to_ascii_uppercase());
            s
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for c in [0, -1, 1, 3, 6, 19, 36, 41, 77] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
        assert_eq!(ErrorCode::from_code(9999), ErrorCode::Unknown(9999));
        assert_eq!(
            ErrorCode::NotLeaderOrFollower.name(),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert!(ErrorCode::NotLeaderOrFollower.is_retriable());
        assert!(!ErrorCode::TopicAlreadyExists.is_retriable());
    }
}
