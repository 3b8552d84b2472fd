//! The simulator's storage: a deterministic in-memory [`ReplicaLog`] of real record
//! batches, a [`LogStore`] of them per broker, and a simulated [`Clock`], so the real
//! `ReplicaManager` runs in the simulation unchanged.
//!
//! A [`MemLog`] keeps whole stamped batches, as `Log` writes them, plus what the
//! checker needs: per offset, the record's id and the leader epoch it was written in.
//! It tracks `flushed_offset` as `Log` does — moved to the log end by a flush, lowered by
//! a truncation below it — so [`MemStore::power_loss`] can drop every byte not flushed.
//! The leader-epoch cache and the topic id are persisted on every change by the real
//! log (write, fsync, rename), so they survive a power loss; the cache is cut back to
//! the surviving log end, as `Log`'s recovery does. What is not modelled: a truncation
//! whose own metadata is lost (the real log's `set_len` is not fsynced before the next
//! flush), compaction, retention and offline logs.
//!
//! Invariants: `log_start_offset <= flushed_offset <= log_end_offset`; batches are
//! contiguous from `log_start_offset`; `entries[o]` is the record at offset `o`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice_broker::log::{
    AppendInfo, EpochEntries, EpochEntry, LogConfig, LogError, ReadResult, TopicId,
};
use sluice_broker::replica::{Clock, LogStore, ReplicaLog};
use sluice_proto::{RecordBatch, TopicPartition};

use crate::check::Entry;

/// The record id a simulated producer writes: the value's 8 bytes, big-endian.
pub(crate) fn record_id(b: &RecordBatch) -> u64 {
    b.records()
        .ok()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.value)
        .and_then(|v| v.as_ref().try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

#[derive(Debug, Default)]
struct Inner {
    config: LogConfig,
    topic_id: Option<TopicId>,
    transactional: bool,
    log_start_offset: u64,
    /// base offset -> stamped batch.
    batches: BTreeMap<u64, RecordBatch>,
    /// Invariant: `entries.len() == log_end_offset` (one record per batch here, but
    /// a batch of several records fills several entries with the same id).
    entries: Vec<Entry>,
    /// Invariant: `flushed_offset <= entries.len()`.
    flushed_offset: u64,
    epochs: EpochEntries,
    /// Records a truncation removed, for the checker; drained by the simulator.
    removed: Vec<(u64, Entry)>,
}

impl Inner {
    fn log_end_offset(&self) -> u64 {
        self.entries.len() as u64
    }

    fn push(&mut self, batch: RecordBatch) {
        let (base, next) = (batch.base_offset() as u64, batch.next_offset() as u64);
        let e = Entry {
            epoch: batch.partition_leader_epoch().max(0) as u32,
            id: record_id(&batch),
        };
        self.entries.resize(next as usize, e);
        self.batches.insert(base, batch);
    }

    /// Drops every batch from the one holding `offset` on; returns the new end.
    fn cut(&mut self, offset: u64, record: bool) -> u64 {
        let first_gone = self
            .batches
            .range(..=offset)
            .next_back()
            .filter(|(_, b)| b.next_offset() as u64 > offset)
            .map_or(offset, |(base, _)| *base);
        let new_end = first_gone.min(self.log_end_offset());
        self.batches.split_off(&new_end);
        if record {
            let gone = self.entries[new_end as usize..]
                .iter()
                .enumerate()
                .map(|(k, e)| (new_end + k as u64, *e));
            self.removed.extend(gone);
        }
        self.entries.truncate(new_end as usize);
        self.flushed_offset = self.flushed_offset.min(new_end);
        self.epochs.truncate_from_end(new_end);
        new_end
    }
}

/// One partition's in-memory log. See the module docs.
#[derive(Debug)]
pub struct MemLog {
    tp: TopicPartition,
    inner: Mutex<Inner>,
}

impl MemLog {
    fn new(tp: TopicPartition, config: LogConfig, topic_id: Option<TopicId>) -> MemLog {
        MemLog {
            tp,
            inner: Mutex::new(Inner {
                config,
                topic_id,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("single-threaded simulation")
    }

    /// Every record, by offset.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    pub fn entry_at(&self, offset: u64) -> Option<Entry> {
        self.lock().entries.get(offset as usize).copied()
    }

    pub fn epochs(&self) -> Vec<(u32, u64)> {
        let st = self.lock();
        st.epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// What truncations removed since the last call.
    pub fn take_removed(&self) -> Vec<(u64, Entry)> {
        std::mem::take(&mut self.lock().removed)
    }

    /// A crash in the middle of a write: the log keeps what lies below `offset` (at a
    /// batch boundary), never less than what was flushed. Not a replication decision,
    /// so the checker is not told.
    pub fn tear_to(&self, offset: u64) {
        let mut st = self.lock();
        let keep = offset.max(st.flushed_offset);
        st.cut(keep, false);
    }

    /// Power loss: everything past the flushed offset is gone.
    pub fn lose_unflushed(&self) -> u64 {
        let mut st = self.lock();
        let (end, flushed) = (st.log_end_offset(), st.flushed_offset);
        st.cut(flushed, false);
        end - flushed
    }
}

impl ReplicaLog for MemLog {
    fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }
    fn config(&self) -> LogConfig {
        self.lock().config.clone()
    }
    fn set_config(&self, config: LogConfig) {
        self.lock().config = config;
    }
    fn topic_id(&self) -> Option<TopicId> {
        self.lock().topic_id.clone()
    }
    fn set_topic_id(&self, id: &TopicId) -> Result<(), LogError> {
        self.lock().topic_id = Some(id.clone());
        Ok(())
    }
    fn is_transactional(&self) -> bool {
        self.lock().transactional
    }
    fn mark_transactional(&self) -> Result<(), LogError> {
        self.lock().transactional = true;
        Ok(())
    }
    fn log_start_offset(&self) -> u64 {
        self.lock().log_start_offset
    }
    fn log_end_offset(&self) -> u64 {
        self.lock().log_end_offset()
    }
    fn flushed_offset(&self) -> u64 {
        self.lock().flushed_offset
    }
    fn offline_reason(&self) -> Option<String> {
        None
    }
    fn latest_epoch(&self) -> Option<EpochEntry> {
        self.lock().epochs.latest()
    }
    fn epoch_entries_snapshot(&self) -> EpochEntries {
        self.lock().epochs.clone()
    }
    fn assign_leader_epoch(&self, epoch: u32) -> Result<(), LogError> {
        let mut st = self.lock();
        let end = st.log_end_offset();
        st.epochs.assign(epoch, end);
        Ok(())
    }

    fn append_as_leader(
        &self,
        batch: &RecordBatch,
        leader_epoch: u32,
        _now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut st = self.lock();
        let bytes = batch.as_bytes();
        if bytes.len() as u64 > st.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size: bytes.len(),
                max: st.config.max_message_bytes as usize,
            });
        }
        let base = st.log_end_offset();
        let mut buf = BytesMut::from(&bytes[..]);
        sluice_proto::batch::stamp(&mut buf, base as i64, leader_epoch as i32);
        let stamped = RecordBatch::from_bytes(buf.freeze())?;
        let last = stamped.last_offset() as u64;
        st.epochs.assign(leader_epoch, base);
        st.push(stamped);
        let unflushed = st.log_end_offset() - st.flushed_offset;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: last,
            log_append_time: None,
            needs_flush: st.config.flush_messages.is_some_and(|n| unflushed >= n),
        })
    }

    fn append_as_follower(
        &self,
        batches: &[RecordBatch],
        _now_ms: i64,
    ) -> Result<Option<AppendInfo>, LogError> {
        let mut st = self.lock();
        let mut first: Option<AppendInfo> = None;
        for b in batches {
            let end = st.log_end_offset();
            if b.base_offset() < 0 || (b.base_offset() as u64) < end {
                return Err(LogError::NonMonotonicOffset {
                    base_offset: b.base_offset(),
                    log_end_offset: end,
                });
            }
            if b.last_offset_delta() < 0 {
                return Err(LogError::BadHeader {
                    base_offset: b.base_offset(),
                    reason: "negative last offset delta".into(),
                });
            }
            // A gap would break `entries`; the real log accepts one, the leader never
            // sends one (it reads contiguous batches).
            assert_eq!(b.base_offset() as u64, end, "a follower append with a gap");
            if b.partition_leader_epoch() >= 0 {
                st.epochs
                    .assign(b.partition_leader_epoch() as u32, b.base_offset() as u64);
            }
            st.push(b.clone());
            let unflushed = st.log_end_offset() - st.flushed_offset;
            let a = AppendInfo {
                base_offset: b.base_offset() as u64,
                last_offset: b.last_offset() as u64,
                log_append_time: None,
                needs_flush: st.config.flush_messages.is_some_and(|n| unflushed >= n),
            };
            first = Some(match first {
                Some(f) => AppendInfo {
                    last_offset: a.last_offset,
                    needs_flush: a.needs_flush,
                    ..f
                },
                None => a,
            });
        }
        Ok(first)
    }

    fn read(
        &self,
        from: u64,
        max_bytes: usize,
        up_to: Option<u64>,
    ) -> Result<ReadResult, LogError> {
        let st = self.lock();
        let (start, end) = (st.log_start_offset, st.log_end_offset());
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let limit = up_to.unwrap_or(end).min(end);
        // The batch holding `from`, if any (then `from` may lie inside it).
        let first = st
            .batches
            .range(..=from)
            .next_back()
            .filter(|(_, b)| b.next_offset() as u64 > from)
            .map_or(from, |(base, _)| *base);
        let mut data = BytesMut::new();
        for b in st.batches.range(first..).map(|(_, b)| b) {
            let whole_fits = data.is_empty() || data.len() + b.size() <= max_bytes;
            if b.next_offset() as u64 > limit || !whole_fits {
                break;
            }
            data.extend_from_slice(b.as_bytes());
        }
        Ok(ReadResult {
            data: data.freeze(),
            log_start_offset: start,
            log_end_offset: end,
        })
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, LogError> {
        let st = self.lock();
        Ok(st
            .batches
            .values()
            .find(|b| b.max_timestamp() >= timestamp)
            .map(|b| (b.base_offset() as u64, b.max_timestamp())))
    }

    fn max_timestamp(&self) -> Option<i64> {
        let st = self.lock();
        st.batches.values().map(|b| b.max_timestamp()).max()
    }

    fn truncate_to(&self, offset: u64) -> Result<u64, LogError> {
        let mut st = self.lock();
        if offset >= st.log_end_offset() {
            st.epochs.truncate_from_end(offset);
            return Ok(st.log_end_offset());
        }
        Ok(st.cut(offset, true))
    }

    fn truncate_prefix_to(&self, offset: u64) -> Result<(), LogError> {
        let st = self.lock();
        if offset <= st.log_start_offset {
            return Ok(());
        }
        // Only a follower behind its leader's log start gets here, and the simulated
        // leaders never move their log start: refuse rather than model it half.
        Err(LogError::OffsetOutOfRange {
            requested: offset,
            log_start_offset: st.log_start_offset,
            log_end_offset: st.log_end_offset(),
        })
    }

    fn flush_to(&self, offset: u64) -> Result<(), LogError> {
        let mut st = self.lock();
        if st.flushed_offset < offset {
            st.flushed_offset = st.log_end_offset();
        }
        Ok(())
    }

    fn tombstone_removal_mark(&self) -> u64 {
        0
    }
    fn tombstones_removed_since(&self, _mark: Option<u64>) -> u64 {
        0
    }
}

/// One broker's logs; clones share them (the world keeps one across the broker's
/// restarts, each incarnation's `ReplicaManager` another).
#[derive(Debug, Clone, Default)]
pub struct MemStore(Arc<Mutex<BTreeMap<TopicPartition, Arc<MemLog>>>>);

impl MemStore {
    fn logs(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, Arc<MemLog>>> {
        self.0.lock().expect("single-threaded simulation")
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<MemLog>> {
        self.logs().get(tp).cloned()
    }

    /// Power loss: every log loses what it had not flushed; returns how many records.
    pub fn power_loss(&self) -> u64 {
        self.logs().values().map(|l| l.lose_unflushed()).sum()
    }
}

impl LogStore for MemStore {
    type Log = MemLog;

    /// `LogManager::get_or_create_for`'s identity rules.
    fn get_or_create_for(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
        topic_id: Option<&TopicId>,
    ) -> Result<Arc<MemLog>, LogError> {
        let mut logs = self.logs();
        if let Some(log) = logs.get(tp).cloned() {
            match (topic_id, log.topic_id()) {
                (Some(want), Some(held)) if *want != held => {}
                (Some(want), None) => {
                    log.set_topic_id(want)?;
                    return Ok(log);
                }
                _ => return Ok(log),
            }
        }
        let log = Arc::new(MemLog::new(tp.clone(), config, topic_id.cloned()));
        logs.insert(tp.clone(), log.clone());
        Ok(log)
    }

    fn delete(&self, tp: &TopicPartition) -> Result<bool, LogError> {
        Ok(self.logs().remove(tp).is_some())
    }

    fn all(&self) -> Vec<Arc<MemLog>> {
        self.logs().values().cloned().collect()
    }
}

/// Simulated time: the world sets it before every step.
#[derive(Debug, Clone)]
pub struct SimClock {
    base: Instant,
    ms: Arc<AtomicU64>,
}

/// The simulated wall clock starts here (2026-01-01), for record timestamps.
const WALL_START_MS: i64 = 1_767_225_600_000;

impl SimClock {
    pub fn new(base: Instant) -> SimClock {
        SimClock {
            base,
            ms: Arc::new(AtomicU64::new(0)),
        }
    }
    pub fn set_ms(&self, ms: u64) {
        self.ms.store(ms, Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }
    fn wall_ms(&self) -> i64 {
        WALL_START_MS + self.ms.load(Ordering::Relaxed) as i64
    }
}
