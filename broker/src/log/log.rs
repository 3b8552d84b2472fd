//! One partition's log: an ordered map of segments, the last one active.
//!
//! Thread safety: every method takes `&self`. Appends, truncation and retention
//! serialize on one mutex over the segment map. Reads take only a view of one segment
//! under it and scan and copy outside it (see `Log::read` and docs/storage.md: a view's
//! bytes are immutable, or a truncation moved the generation and the read starts over).
//! Every method may block on the disk: call them from blocking threads, never from an
//! async worker. fsync runs outside that mutex, under a second one, so appends go on
//! while a flush is in progress and concurrent flush callers share one fsync (group
//! commit): whoever gets the flush lock syncs everything appended so far, and the
//! waiters behind it find their offset already covered.
//!
//! Invariants: `log_start_offset <= log_end_offset`; `flushed_offset <= log_end_offset`;
//! offsets strictly increase across batches and segments; the segment map is never
//! empty and only its last segment is unsealed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use sluice_proto::batch::RecordBatch;
use sluice_proto::limits::BATCH_HEADER_BYTES;
use sluice_proto::TopicPartition;
use tracing::{info, warn};

use super::epoch::{EpochCache, EpochEntry};
use super::error::{io_err, LogError};
use super::io_util::{fsync_dir, write_atomically};
use super::segment::{BatchInfo, Segment};
use super::topic_id::{self, TopicId};
use sluice_proto::topic_config::LogConfig;

const LOG_START_FILE: &str = "log-start-offset";
const EPOCH_FILE: &str = "leader-epoch-checkpoint";
/// Present once a transactional batch may have been appended (`replica::txns`).
const TRANSACTIONAL_FILE: &str = "transactional";
/// Ends the name of a deleted log's directory until its files are gone.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    /// Inclusive.
    pub last_offset: u64,
    /// The broker's timestamp when the topic uses LogAppendTime.
    pub log_append_time: Option<i64>,
    /// `flush.messages` is reached: the caller should [`Log::flush_to`] before acking.
    pub needs_flush: bool,
}

/// See [`Log::set_truncation_hook`].
pub(crate) type TruncationHook = std::sync::Arc<dyn Fn() -> Result<(), LogError> + Send + Sync>;

/// What [`Log::read`] returns.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches; empty at the end of the readable range.
    pub data: Bytes,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// How opening a log went, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    pub segments: usize,
    /// Segments scanned batch by batch (crash recovery or an untrustworthy index).
    pub segments_scanned: usize,
    /// Bytes of `.log` files read while opening.
    pub log_bytes_read: u64,
    /// Bytes cut from the end of the log because they were not valid batches.
    pub truncated_bytes: u64,
}

/// How the data directory was left, decided by the [`super::LogManager`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenHint {
    /// The previous process closed this log cleanly.
    pub(crate) clean: bool,
    /// Offset up to which the log was known flushed.
    pub(crate) recovery_point: Option<u64>,
}

#[derive(Debug)]
struct State {
    config: LogConfig,
    /// Invariant: non-empty; only the last segment is unsealed.
    segments: BTreeMap<u64, Segment>,
    /// Invariant: `log_start_offset <= log_end_offset`.
    log_start_offset: u64,
    log_end_offset: u64,
    epochs: EpochCache,
    /// Set after an error that may have left files and memory apart.
    offline: Option<String>,
    last_flush_ms: i64,
    /// Compaction: records below this were deduplicated by an earlier pass.
    /// Invariant: `first_dirty_offset <= log_end_offset`.
    first_dirty_offset: u64,
    /// Bumped by every truncation, reset and retention deletion: a compaction pass
    /// planned before it must not swap its segments in, and a read of the active file
    /// that overlapped it starts over. Invariant: changed only with `flush_lock` held
    /// (a compaction swap holds it to keep the generation still without this lock).
    generation: u64,
    /// Earliest delete horizon of a tombstone kept by the last compaction pass.
    next_tombstone_horizon_ms: Option<i64>,
    last_clean_ms: Option<i64>,
    /// One past the highest offset of a tombstone compaction removed (persisted with
    /// the first dirty offset).
    tombstones_removed_below: u64,
    tombstone_removals: compaction::TombstoneRemovals,
    /// A roll created files whose directory entries are not fsynced yet: the next
    /// flush syncs the directory before it moves the flushed offset (a roll under the
    /// lock does no fsync).
    dir_sync_pending: bool,
}

/// A partition's log. See the module docs.
pub struct Log {
    dir: PathBuf,
    tp: TopicPartition,
    state: Mutex<State>,
    /// Serializes fsyncs; held across one so waiters can share it.
    flush_lock: Mutex<()>,
    /// Invariant: `flushed_offset <= log_end_offset`.
    flushed_offset: AtomicU64,
    /// Called after a truncation lowered `flushed_offset`, so that the data
    /// directory's recovery-point checkpoint never claims offsets that are gone.
    truncation_hook: Mutex<Option<TruncationHook>>,
    /// fsync rounds performed (each may cover many appends).
    flush_count: AtomicU64,
    open_stats: OpenStats,
    /// The topic this directory belongs to, as recorded in `partition.metadata`
    /// (`None`: not recorded yet).
    topic_id: Mutex<Option<TopicId>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn open_stats(&self) -> OpenStats {
        self.open_stats
    }
    pub fn config(&self) -> LogConfig {
        self.state.lock().config.clone()
    }
    /// Applies new topic configs; segment and index sizes take effect at the next roll.
    pub fn set_config(&self, config: LogConfig) {
        self.state.lock().config = config;
    }
    pub fn log_start_offset(&self) -> u64 {
        self.state.lock().log_start_offset
    }
    pub fn log_end_offset(&self) -> u64 {
        self.state.lock().log_end_offset
    }
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset.load(Ordering::Acquire)
    }
    /// fsync rounds so far; with group commit, usually far fewer than flush callers.
    pub fn flush_count(&self) -> u64 {
        self.flush_count.load(Ordering::Relaxed)
    }
    pub fn size_bytes(&self) -> u64 {
        self.state.lock().segments.values().map(Segment::size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.state.lock().segments.len()
    }
    /// The latest leader epoch and the offset it started at.
    pub fn latest_epoch(&self) -> Option<EpochEntry> {
        self.state.lock().epochs.latest()
    }
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.state.lock().epochs.entries().to_vec()
    }
    /// A copy of the epoch cache, for the replication rules in `replica::state`.
    pub fn epoch_entries_snapshot(&self) -> super::EpochEntries {
        self.state.lock().epochs.snapshot()
    }
    /// Records that `epoch` starts at the current log end offset: what a new leader
    /// does before accepting writes, so followers can find where they diverged.
    pub fn assign_leader_epoch(&self, epoch: u32) -> Result<(), LogError> {
        let mut st = self.state.lock();
        self.check_online(&st)?;
        let end = st.log_end_offset;
        st.epochs.assign(epoch, end)
    }

    /// The largest epoch `<= epoch` known here and its end offset (KIP-101).
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        let st = self.state.lock();
        st.epochs.end_offset_for(epoch, st.log_end_offset)
    }
    /// The reason this log is offline, if it is.
    pub fn offline_reason(&self) -> Option<String> {
        self.state.lock().offline.clone()
    }

    fn check_online(&self, st: &State) -> Result<(), LogError> {
        match &st.offline {
            Some(reason) => Err(LogError::Offline {
                partition: self.tp.to_string(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Takes the log offline after an error that may have split files from memory.
    fn fail(&self, st: &mut State, e: LogError) -> LogError {
        if e.takes_log_offline() && st.offline.is_none() {
            warn!(partition = %self.tp, error = %e, "partition log goes offline");
            st.offline = Some(e.to_string());
        }
        e
    }

    /// Appends a validated producer batch: stamps the next offset and `leader_epoch`
    /// (and the broker time under LogAppendTime), writes it, and returns its offsets.
    pub fn append_as_leader(
        &self,
        batch: &RecordBatch,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let bytes = batch.as_bytes();
        let mut st = self.state.lock();
        self.check_online(&st)?;
        if bytes.len() as u64 > st.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size: bytes.len(),
                max: st.config.max_message_bytes as usize,
            });
        }
        let base = st.log_end_offset;
        let mut header = [0u8; BATCH_HEADER_BYTES];
        header.copy_from_slice(&bytes[..BATCH_HEADER_BYTES]);
        sluice_proto::batch::stamp(&mut header, base as i64, leader_epoch as i32);
        let log_append_time = st.config.log_append_time.then_some(now_ms);
        if let Some(ts) = log_append_time {
            // The CRC covers the records too: compute it across header and body.
            sluice_proto::batch::set_log_append_time_header(
                &mut header,
                ts,
                &bytes[BATCH_HEADER_BYTES..],
            );
        }
        let mut info =
            BatchInfo::parse_header(&header).expect("a validated batch has a valid header");
        info.leader_epoch = leader_epoch as i32;
        let result = self.append_info(&mut st, &header, &bytes[BATCH_HEADER_BYTES..], info, now_ms);
        result
            .map(|a| AppendInfo {
                log_append_time,
                ..a
            })
            .map_err(|e| self.fail(&mut st, e))
    }

    /// Appends batches copied from the leader, keeping their offsets and epochs. Each
    /// must start at or after the log end offset.
    pub fn append_as_follower(
        &self,
        batches: &[RecordBatch],
        now_ms: i64,
    ) -> Result<Option<AppendInfo>, LogError> {
        let mut st = self.state.lock();
        self.check_online(&st)?;
        let mut first: Option<AppendInfo> = None;
        for b in batches {
            if b.base_offset() < 0 || (b.base_offset() as u64) < st.log_end_offset {
                return Err(LogError::NonMonotonicOffset {
                    base_offset: b.base_offset(),
                    log_end_offset: st.log_end_offset,
                });
            }
            let bytes = b.as_bytes();
            // The CRC does not cover the offsets: a peer's batch can hold a negative
            // last offset delta. Refused before anything of it is written.
            let info = BatchInfo::parse_header(&bytes[..BATCH_HEADER_BYTES]).map_err(|reason| {
                LogError::BadHeader {
                    base_offset: b.base_offset(),
                    reason,
                }
            })?;
            let a = self
                .append_info(
                    &mut st,
                    &bytes[..BATCH_HEADER_BYTES],
                    &bytes[BATCH_HEADER_BYTES..],
                    info,
                    now_ms,
                )
                .map_err(|e| self.fail(&mut st, e))?;
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

    fn append_info(
        &self,
        st: &mut State,
        header: &[u8],
        rest: &[u8],
        info: BatchInfo,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let size = info.size;
        let active_base = *st.segments.keys().next_back().expect("non-empty");
        let must_roll =
            st.segments[&active_base].must_roll(&st.config, size, info.last_offset, now_ms)
                || info.base_offset.saturating_sub(active_base) > u32::MAX as u64;
        if must_roll {
            self.roll(st, info.base_offset, now_ms)?;
        }
        let active = st.segments.values_mut().next_back().expect("non-empty");
        active.append(header, rest, &info, now_ms)?;
        if info.leader_epoch >= 0 {
            st.epochs
                .assign(info.leader_epoch as u32, info.base_offset)?;
        }
        debug_assert!(info.last_offset >= st.log_end_offset);
        st.log_end_offset = info.last_offset + 1;
        let unflushed = st.log_end_offset - self.flushed_offset();
        let needs_flush = st.config.flush_messages.is_some_and(|n| unflushed >= n);
        Ok(AppendInfo {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time: None,
            needs_flush,
        })
    }

    /// Seals the active segment and starts a new one at `base_offset`. Runs under the
    /// lock, so it does no fsync: the new files' directory entries are synced by the
    /// next flush, before any offset in them counts as flushed (as Kafka leaves the
    /// flush of a rolled segment to its scheduler).
    fn roll(&self, st: &mut State, base_offset: u64, now_ms: i64) -> Result<(), LogError> {
        // Create first: if that fails (a full disk), the old segment stays active.
        let seg = match Segment::create(&self.dir, base_offset, &st.config, now_ms) {
            Ok(s) => s,
            Err(e) => {
                for ext in ["log", "index", "timeindex"] {
                    let _ = fs::remove_file(self.dir.join(format!("{base_offset:020}.{ext}")));
                }
                return Err(e);
            }
        };
        st.segments
            .values_mut()
            .next_back()
            .expect("non-empty")
            .seal()?;
        st.segments.insert(base_offset, seg);
        st.dir_sync_pending = true;
        Ok(())
    }

    /// Rolls the active segment now if it holds anything (an explicit `roll`).
    pub fn roll_now(&self, now_ms: i64) -> Result<(), LogError> {
        let mut st = self.state.lock();
        self.check_online(&st)?;
        let end = st.log_end_offset;
        if st.segments.values().next_back().expect("non-empty").size() == 0 {
            return Ok(());
        }
        self.roll(&mut st, end, now_ms)
            .map_err(|e| self.fail(&mut st, e))
    }

    /// Removes every batch whose last offset is `>= offset` (a follower dropping a
    /// divergent suffix). A batch holding `offset` goes whole, so the new log end
    /// offset may be below `offset`; it is returned.
    pub fn truncate_to(&self, offset: u64) -> Result<u64, LogError> {
        let _flush = self.flush_lock.lock();
        let mut st = self.state.lock();
        self.check_online(&st)?;
        if offset >= st.log_end_offset {
            // No bytes go, but an epoch that began at or past `offset` does (see
            // `EpochEntries::truncate_from_end`).
            st.epochs
                .truncate_from_end(offset)
                .map_err(|e| self.fail(&mut st, e))?;
            return Ok(st.log_end_offset);
        }
        if offset <= st.log_start_offset {
            self.reset_to(&mut st, offset)
                .map_err(|e| self.fail(&mut st, e))?;
            return Ok(st.log_end_offset);
        }
        let old = st.log_end_offset;
        let result = self.truncate_segments(&mut st, offset);
        let new_end = result.map_err(|e| self.fail(&mut st, e))?;
        info!(partition = %self.tp, old_log_end_offset = old, new_log_end_offset = new_end, "truncated log");
        Ok(new_end)
    }

    /// Installs the callback run after truncations (the manager rewrites its checkpoint).
    pub(crate) fn set_truncation_hook(&self, hook: TruncationHook) {
        *self.truncation_hook.lock() = Some(hook);
    }

    fn run_truncation_hook(&self) -> Result<(), LogError> {
        let hook = self.truncation_hook.lock().clone();
        hook.map_or(Ok(()), |h| h())
    }

    fn truncate_segments(&self, st: &mut State, offset: u64) -> Result<u64, LogError> {
        let later: Vec<u64> = st.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        // A segment whose base is past the cut holds only doomed batches.
        for base in later {
            st.segments.remove(&base).expect("listed").delete_files()?;
        }
        let (_, seg) = st
            .segments
            .range_mut(..=offset)
            .next_back()
            .expect("offset > log start");
        seg.unseal()?;
        let new_end = seg.truncate_to(offset)?.unwrap_or(offset);
        fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        st.log_end_offset = new_end;
        st.generation += 1;
        st.first_dirty_offset = st.first_dirty_offset.min(new_end);
        if new_end < st.log_start_offset {
            // The cut batch straddled the log start: keep log_start_offset <= log_end_offset.
            st.log_start_offset = new_end;
            write_log_start(&self.dir, new_end)?;
        }
        st.epochs.truncate_from_end(new_end)?;
        self.flushed_offset.fetch_min(new_end, Ordering::AcqRel);
        self.run_truncation_hook()?;
        Ok(new_end)
    }

    /// Deletes every segment and starts empty at `offset`.
    fn reset_to(&self, st: &mut State, offset: u64) -> Result<(), LogError> {
        for seg in std::mem::take(&mut st.segments).into_values() {
            seg.delete_files()?;
        }
        let seg = Segment::create(&self.dir, offset, &st.config, now_ms())?;
        st.segments.insert(offset, seg);
        fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        st.log_start_offset = offset;
        st.log_end_offset = offset;
        st.generation += 1;
        st.first_dirty_offset = offset;
        st.epochs.truncate_from_end(offset)?;
        st.epochs.truncate_from_start(offset)?;
        write_log_start(&self.dir, offset)?;
        self.flushed_offset.store(offset, Ordering::Release);
        self.run_truncation_hook()?;
        Ok(())
    }

    /// Makes `offset` the first readable offset (retention, delete-records): whole
    /// segments below it are deleted. Past the log end, the log restarts empty there.
    pub fn truncate_prefix_to(&self, offset: u64) -> Result<(), LogError> {
        let _flush = self.flush_lock.lock();
        let mut st = self.state.lock();
        self.check_online(&st)?;
        if offset <= st.log_start_offset {
            return Ok(());
        }
        let r = if offset > st.log_end_offset {
            self.reset_to(&mut st, offset)
        } else {
            self.advance_start(&mut st, offset)
        };
        r.map_err(|e| self.fail(&mut st, e))
    }

    fn advance_start(&self, st: &mut State, offset: u64) -> Result<(), LogError> {
        let bases: Vec<u64> = st.segments.keys().copied().collect();
        for w in bases.windows(2) {
            if w[1] > offset {
                break;
            }
            st.segments.remove(&w[0]).expect("listed").delete_files()?;
        }
        st.log_start_offset = offset;
        st.generation += 1;
        st.epochs.truncate_from_start(offset)?;
        write_log_start(&self.dir, offset)
    }

    /// Deletes sealed segments past `retention.ms` / `retention.bytes`, never one
    /// holding offsets at or past `high_watermark`. Returns how many went.
    pub fn apply_retention(&self, now_ms: i64, high_watermark: u64) -> Result<usize, LogError> {
        // Like every change of the generation, under the flush lock: a compaction swap
        // holds it while it replaces files without the state lock.
        let _exclusive = self.flush_lock.lock();
        let mut st = self.state.lock();
        self.check_online(&st)?;
        if !st.config.cleanup_policy.deletes() {
            return Ok(0);
        }
        let mut total: u64 = st.segments.values().map(Segment::size).sum();
        let bases: Vec<u64> = st.segments.keys().copied().collect();
        let mut deleted = 0;
        for w in bases.windows(2) {
            let (seg, next_base) = (&st.segments[&w[0]], w[1]);
            let expired = st
                .config
                .retention_ms
                .is_some_and(|r| seg.max_timestamp().is_some_and(|m| now_ms - m > r));
            let oversize = st
                .config
                .retention_bytes
                .is_some_and(|r| total - seg.size() >= r);
            if next_base > high_watermark || !(expired || oversize) {
                break;
            }
            total -= seg.size();
            st.generation += 1;
            let seg = st.segments.remove(&w[0]).expect("listed");
            if let Err(e) = seg.delete_files() {
                return Err(self.fail(&mut st, e));
            }
            deleted += 1;
        }
        if deleted > 0 {
            let first = *st.segments.keys().next().expect("non-empty");
            if first > st.log_start_offset {
                st.log_start_offset = first;
                st.epochs.truncate_from_start(first)?;
                write_log_start(&self.dir, first)?;
            }
            info!(partition = %self.tp, segments = deleted, log_start_offset = st.log_start_offset, "retention deleted segments");
        }
        Ok(deleted)
    }

    /// fsyncs everything appended so far (one fsync shared by concurrent callers) and
    /// returns the new flushed offset.
    pub fn flush(&self) -> Result<u64, LogError> {
        self.flush_segments(false)
    }

    /// fsyncs the segments rolled since the last flush (everything below the active
    /// segment), as Kafka flushes a segment once it is rolled, and returns the new flushed
    /// offset. Called by the broker's maintenance (off the request path), whose next
    /// recovery checkpoint then covers them: a crash rescans only what was written to
    /// the active segment since, not everything since the last clean shutdown.
    pub fn flush_rolled(&self) -> Result<u64, LogError> {
        self.flush_segments(true)
    }

    /// fsyncs (log and indexes, outside the state lock) every segment from the one holding
    /// the flushed offset on — up to the log end, or with `rolled_only` up to the active
    /// segment — and moves the flushed offset there. Only a whole flush counts as the one
    /// `flush.ms` measures from and in `flush_count`.
    fn flush_segments(&self, rolled_only: bool) -> Result<u64, LogError> {
        let _flush = self.flush_lock.lock();
        let (target, files, sync_dir) = {
            let mut st = self.state.lock();
            self.check_online(&st)?;
            let sync_dir = std::mem::take(&mut st.dir_sync_pending);
            let active = *st.segments.keys().next_back().expect("non-empty");
            let target = if rolled_only {
                active
            } else {
                st.log_end_offset
            };
            let flushed = self.flushed_offset();
            if target <= flushed && !sync_dir {
                return Ok(flushed);
            }
            let first = st
                .segments
                .range(..=flushed)
                .next_back()
                .map_or(0, |(b, _)| *b);
            let upto = if rolled_only { active } else { u64::MAX };
            let mut files = Vec::new();
            for (&base, seg) in st.segments.range(first..upto) {
                // The active segment's indexes are not synced: they are derived from
                // the log, and crash recovery rebuilds them for every segment from the
                // one holding the recovery point (the flushed offset, checkpointed) on,
                // which includes the active one. A segment's indexes are synced once it
                // is sealed, by the first flush after its roll — before the flushed
                // offset (and so the recovery point) can pass it. Index pages are
                // written by fsyncing their files below, not by an msync here: nothing
                // under this lock waits for the disk.
                if base != active {
                    match seg.index_files() {
                        Ok(indexes) => files.extend(indexes),
                        Err(e) => return Err(self.fail(&mut st, e)),
                    }
                }
                files.push((seg.file.clone(), seg.path().to_path_buf()));
            }
            if !rolled_only {
                st.last_flush_ms = now_ms();
            }
            (target, files, sync_dir)
        };
        if sync_dir {
            if let Err(e) = fsync_dir(&self.dir) {
                let mut st = self.state.lock();
                st.dir_sync_pending = true;
                return Err(self.fail(&mut st, LogError::io(&self.dir, e)));
            }
        }
        for (file, path) in files {
            if let Err(e) = file.sync_data() {
                let e = LogError::io(&path, e);
                return Err(self.fail(&mut self.state.lock(), e));
            }
        }
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        if !rolled_only {
            self.flush_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(target)
    }

    /// Returns once everything below `offset` is fsynced, flushing if needed.
    pub fn flush_to(&self, offset: u64) -> Result<(), LogError> {
        if self.flushed_offset() >= offset {
            return Ok(());
        }
        self.flush().map(|_| ())
    }

    /// Flushes if `flush.ms` has passed since the last flush with data unflushed.
    pub fn maybe_flush_by_time(&self, now_ms: i64) -> Result<(), LogError> {
        let due = {
            let st = self.state.lock();
            st.config
                .flush_ms
                .is_some_and(|ms| now_ms - st.last_flush_ms >= ms)
                && st.log_end_offset > self.flushed_offset()
        };
        if due {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes, trims the active segment's indexes and takes the log out of service;
    /// returns the log end offset, all of it flushed.
    pub fn close(&self) -> Result<u64, LogError> {
        let end = self.flush()?;
        let mut st = self.state.lock();
        let active = st.segments.values_mut().next_back().expect("non-empty");
        active.seal()?;
        // A clean close is trusted at the next open without a scan: the active
        // segment's indexes (not synced by the flushes, see `flush_segments`) go to
        // disk now, trimmed.
        for (file, path) in active.index_files()? {
            file.sync_data().map_err(|e| LogError::io(&path, e))?;
        }
        st.offline = Some("closed".into());
        Ok(end)
    }

    /// The id of the topic this directory belongs to, if recorded.
    pub fn topic_id(&self) -> Option<TopicId> {
        self.topic_id.lock().clone()
    }

    /// Records the topic this directory belongs to (durably, before returning).
    pub(crate) fn set_topic_id(&self, id: &TopicId) -> Result<(), LogError> {
        let mut held = self.topic_id.lock();
        if held.as_ref() != Some(id) {
            topic_id::write(&self.dir, id)?;
            *held = Some(id.clone());
        }
        Ok(())
    }

    /// Whether the log was marked as possibly holding transactional batches.
    pub fn is_transactional(&self) -> bool {
        self.dir.join(TRANSACTIONAL_FILE).exists()
    }

    /// Marks the log as possibly holding transactional batches (write, fsync, rename,
    /// fsync: the mark survives whatever the first transactional batch survives).
    pub fn mark_transactional(&self) -> Result<(), LogError> {
        let path = self.dir.join(TRANSACTIONAL_FILE);
        super::io_util::write_atomically(&path, b"transactional batches may follow\n")
            .map_err(super::error::io_err(&path))
    }

    /// Deletes the log's directory. The log must not be used afterwards.
    ///
    /// The directory is first renamed out of the `<topic>-<partition>` namespace (to
    /// `<topic>-<partition>.<nanos>.deleted`, a name no open parses as a partition) and
    /// the rename fsynced; only then are its files removed. A crash mid-removal leaves
    /// a `.deleted` directory, which the next open removes, never a half-deleted log
    /// that would be reopened (or a stale one a new log of the same name would meet).
    pub fn delete(&self) -> Result<(), LogError> {
        let mut st = self.state.lock();
        st.offline = Some("deleted".into());
        st.segments.clear();
        let Some(parent) = self.dir.parent() else {
            return fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir));
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let doomed = parent.join(format!("{name}.{nanos}{DELETED_SUFFIX}"));
        fs::rename(&self.dir, &doomed).map_err(io_err(&self.dir))?;
        fsync_dir(parent).map_err(io_err(parent))?;
        if let Err(e) = fs::remove_dir_all(&doomed) {
            // Out of the namespace already; the next open removes the rest.
            warn!(dir = %doomed.display(), error = %e, "could not remove a deleted log's files; the next start removes them");
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod flush_tests;

#[path = "compaction.rs"]
mod compaction;
#[path = "read.rs"]
mod read;
#[path = "recovery.rs"]
mod recovery;
#[cfg(test)]
pub(crate) use compaction::SWAP_PAUSE;
pub use compaction::{CleanOptions, CleanStats, CompactionView, CrashAt};
#[cfg(test)]
pub(crate) use read::READ_PAUSE;
use recovery::write_log_start;
