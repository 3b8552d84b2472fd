//! What [`ReplicaManager`](super::ReplicaManager) needs from storage and from time, as
//! traits: [`ReplicaLog`] (one partition's log), [`LogStore`] (the broker's set of
//! logs) and [`Clock`]. The broker implements them with the real [`Log`] and
//! [`LogManager`] (below, by delegation: no behaviour of their own) and the system
//! clock; the replication simulator (`sim/`) implements them with a deterministic
//! in-memory log that knows which of its bytes are flushed (so it can model power loss)
//! and a simulated clock, and so drives the same `ReplicaManager` the binary runs.
//!
//! The methods are [`Log`]'s, with its meaning: offsets are Kafka's (end offsets
//! exclusive), `truncate_to` drops whole batches from the end and returns the new log
//! end offset, an append as leader stamps base offset and leader epoch, an append as
//! follower keeps the leader's. Every method takes `&self`: a log serializes its own
//! callers, and the replica manager calls it under the partition's lock where order
//! matters. Implementations must not block on the network; disk work is theirs.

use std::sync::Arc;
use std::time::Instant;

use sluice_proto::topic_config::LogConfig;
use sluice_proto::{RecordBatch, TopicPartition};

use crate::log::{
    AppendInfo, EpochEntries, EpochEntry, Log, LogError, LogManager, ReadResult, TopicId,
};

/// One partition's log as the replica manager uses it. See the module docs.
pub trait ReplicaLog: Send + Sync + 'static {
    fn topic_partition(&self) -> &TopicPartition;
    fn config(&self) -> LogConfig;
    /// New topic configs (size limits take effect at the next roll).
    fn set_config(&self, config: LogConfig);
    /// The topic this log belongs to, if recorded.
    fn topic_id(&self) -> Option<TopicId>;
    /// Records the topic this log belongs to, durably.
    fn set_topic_id(&self, id: &TopicId) -> Result<(), LogError>;
    /// Whether [`ReplicaLog::mark_transactional`] was ever called: a log without the
    /// mark holds no transactional batch, so its transaction state needs no log scan.
    fn is_transactional(&self) -> bool;
    /// Records, durably and before the first transactional batch is appended, that the
    /// log may hold some.
    fn mark_transactional(&self) -> Result<(), LogError>;
    fn log_start_offset(&self) -> u64;
    fn log_end_offset(&self) -> u64;
    /// Offset below which everything survives a power loss.
    /// Invariant: `flushed_offset <= log_end_offset`.
    fn flushed_offset(&self) -> u64;
    /// Why the log refuses work, after an error that may have split files from memory.
    fn offline_reason(&self) -> Option<String>;
    fn latest_epoch(&self) -> Option<EpochEntry>;
    /// A copy of the leader-epoch cache, for the rules in `replica::state`.
    fn epoch_entries_snapshot(&self) -> EpochEntries;
    /// Records that `epoch` starts at the current log end offset.
    fn assign_leader_epoch(&self, epoch: u32) -> Result<(), LogError>;
    fn append_as_leader(
        &self,
        batch: &RecordBatch,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError>;
    fn append_as_follower(
        &self,
        batches: &[RecordBatch],
        now_ms: i64,
    ) -> Result<Option<AppendInfo>, LogError>;
    /// Whole batches from the one holding `from`, about `max_bytes`, none reaching
    /// `up_to` (exclusive).
    fn read(&self, from: u64, max_bytes: usize, up_to: Option<u64>)
        -> Result<ReadResult, LogError>;
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, LogError>;
    /// The largest record timestamp in the log (`None`: empty).
    fn max_timestamp(&self) -> Option<i64>;
    /// Drops every batch whose last offset is `>= offset`; returns the new log end.
    fn truncate_to(&self, offset: u64) -> Result<u64, LogError>;
    /// Makes `offset` the first readable offset (past the end: restarts empty there).
    fn truncate_prefix_to(&self, offset: u64) -> Result<(), LogError>;
    /// Returns once everything below `offset` is flushed.
    fn flush_to(&self, offset: u64) -> Result<(), LogError>;
    /// See [`Log::tombstone_removal_mark`]; a log that never compacts answers 0.
    fn tombstone_removal_mark(&self) -> u64;
    /// See [`Log::tombstones_removed_since`]; a log that never compacts answers 0.
    fn tombstones_removed_since(&self, mark: Option<u64>) -> u64;
}

/// The logs of one broker, by partition.
pub trait LogStore: Send + Sync + 'static {
    type Log: ReplicaLog;
    /// The log for `tp` of topic `topic_id`: created empty when missing; one recorded as
    /// another topic's is deleted and replaced (see [`LogManager::get_or_create_for`]).
    fn get_or_create_for(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
        topic_id: Option<&TopicId>,
    ) -> Result<Arc<Self::Log>, LogError>;
    /// Removes `tp`'s log; whether there was one.
    fn delete(&self, tp: &TopicPartition) -> Result<bool, LogError>;
    fn all(&self) -> Vec<Arc<Self::Log>>;
}

/// Where the replica manager reads time: `now` for deadlines and lag (monotonic),
/// `wall_ms` for record timestamps and producer-id expiry.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    fn wall_ms(&self) -> i64;
}

/// The process's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

impl ReplicaLog for Log {
    fn topic_partition(&self) -> &TopicPartition {
        Log::topic_partition(self)
    }
    fn config(&self) -> LogConfig {
        Log::config(self)
    }
    fn set_config(&self, config: LogConfig) {
        Log::set_config(self, config)
    }
    fn topic_id(&self) -> Option<TopicId> {
        Log::topic_id(self)
    }
    fn set_topic_id(&self, id: &TopicId) -> Result<(), LogError> {
        Log::set_topic_id(self, id)
    }
    fn is_transactional(&self) -> bool {
        Log::is_transactional(self)
    }
    fn mark_transactional(&self) -> Result<(), LogError> {
        Log::mark_transactional(self)
    }
    fn log_start_offset(&self) -> u64 {
        Log::log_start_offset(self)
    }
    fn log_end_offset(&self) -> u64 {
        Log::log_end_offset(self)
    }
    fn flushed_offset(&self) -> u64 {
        Log::flushed_offset(self)
    }
    fn offline_reason(&self) -> Option<String> {
        Log::offline_reason(self)
    }
    fn latest_epoch(&self) -> Option<EpochEntry> {
        Log::latest_epoch(self)
    }
    fn epoch_entries_snapshot(&self) -> EpochEntries {
        Log::epoch_entries_snapshot(self)
    }
    fn assign_leader_epoch(&self, epoch: u32) -> Result<(), LogError> {
        Log::assign_leader_epoch(self, epoch)
    }
    fn append_as_leader(
        &self,
        batch: &RecordBatch,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        Log::append_as_leader(self, batch, leader_epoch, now_ms)
    }
    fn append_as_follower(
        &self,
        batches: &[RecordBatch],
        now_ms: i64,
    ) -> Result<Option<AppendInfo>, LogError> {
        Log::append_as_follower(self, batches, now_ms)
    }
    fn read(
        &self,
        from: u64,
        max_bytes: usize,
        up_to: Option<u64>,
    ) -> Result<ReadResult, LogError> {
        Log::read(self, from, max_bytes, up_to)
    }
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, LogError> {
        Log::offset_for_timestamp(self, timestamp)
    }
    fn max_timestamp(&self) -> Option<i64> {
        Log::max_timestamp(self)
    }
    fn truncate_to(&self, offset: u64) -> Result<u64, LogError> {
        Log::truncate_to(self, offset)
    }
    fn truncate_prefix_to(&self, offset: u64) -> Result<(), LogError> {
        Log::truncate_prefix_to(self, offset)
    }
    fn flush_to(&self, offset: u64) -> Result<(), LogError> {
        Log::flush_to(self, offset)
    }
    fn tombstone_removal_mark(&self) -> u64 {
        Log::tombstone_removal_mark(self)
    }
    fn tombstones_removed_since(&self, mark: Option<u64>) -> u64 {
        Log::tombstones_removed_since(self, mark)
    }
}

impl LogStore for LogManager {
    type Log = Log;
    fn get_or_create_for(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
        topic_id: Option<&TopicId>,
    ) -> Result<Arc<Log>, LogError> {
        LogManager::get_or_create_for(self, tp, config, topic_id)
    }
    fn delete(&self, tp: &TopicPartition) -> Result<bool, LogError> {
        LogManager::delete(self, tp)
    }
    fn all(&self) -> Vec<Arc<Log>> {
        LogManager::all(self)
    }
}
