//! Compaction of one partition log (`cleanup.policy=compact`): keep the latest record
//! of every key, drop tombstones once their delete horizon has passed, never change an
//! offset. Driven by the data directory's cleaner thread ([`super::super::cleaner`]);
//! a child of `log.rs`, so it works on [`Log`]'s private state.
//!
//! One pass:
//! 1. Plan (under the log's lock): the cleanable end `E` is the base of the first
//!    segment that is active, reaches the high watermark, or is younger than
//!    `min.compaction.lag.ms`. Records at or above the high watermark may still be
//!    truncated away, so nothing there may be used to supersede anything.
//! 2. Map (no lock): from the first dirty offset towards `E`, key → latest offset, in
//!    a fixed memory budget. If the budget fills, the pass stops at that batch and the
//!    rest waits for the next pass.
//! 3. Rewrite (no lock), group by group: consecutive segments whose sizes fit one
//!    `segment.bytes` are merged into one new segment under `cleaner.tmp/`, keeping a
//!    record unless the map holds a later offset for its key, or it is a tombstone past
//!    its horizon. Every batch at or above the map's end stays untouched, tombstones
//!    included: its keys are not in the map, so an older value below the end may have
//!    been kept, and only the tombstone deletes it. Invariant: no older value of a key
//!    outlives a removed tombstone of that key. A producer's last batch stays (perhaps
//!    emptied to its header), so idempotent producers keep their sequence.
//! 4. Swap (under the flush lock, which every generation change takes; the state lock
//!    only to check the generation and to swap the segment map), crash-safe in this order: fsync the new files; rename
//!    `cleaner.tmp` to `cleaner.swap-B-E` (the commit point: B..E is the offset range
//!    the group covers); delete the old segments of B..E; move the new files in, the
//!    `.log` last; remove the swap directory. [`complete_interrupted_clean`] finishes
//!    a swap directory left by a crash and discards `cleaner.tmp`, so a crash at any
//!    point leaves either the old segments or the new one, never both or neither.
//!    A truncation or retention that ran meanwhile (the log's generation moved) makes
//!    the pass give the group up instead of swapping.
//!
//! The first dirty offset is kept in `cleaner-offset-checkpoint` in the partition
//! directory; losing it only costs a re-clean.

use std::collections::{HashMap, VecDeque};

use sluice_proto::batch::compact::{retain, Retained};

use super::super::offset_map::OffsetMap;
use super::super::segment::segment_path;
use super::recovery::list_segments;
use super::*;

pub(super) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const TMP_DIR: &str = "cleaner.tmp";
const SWAP_PREFIX: &str = "cleaner.swap-";

/// Inputs of one pass.
#[derive(Debug, Clone)]
pub struct CleanOptions {
    pub now_ms: i64,
    pub high_watermark: u64,
    /// `log.cleaner.dedupe.buffer.size` (this pass's share of it).
    pub dedupe_buffer_bytes: usize,
    /// `producer.id.expiration.ms`: an idle producer's last batch is not kept past it.
    pub producer_expiration_ms: i64,
    /// For tests: stop as if the process died at this swap step (see [`CrashAt`]).
    pub crash_at: Option<CrashAt>,
    /// `log.cleaner.io.max.bytes.per.second`, shared by every pass of the cleaner.
    pub throttle: Option<std::sync::Arc<super::super::cleaner::Throttle>>,
}

impl CleanOptions {
    fn throttle(&self, bytes: u64) {
        if let Some(t) = &self.throttle {
            t.consume(bytes);
        }
    }
}

/// Where a test makes a pass stop as if killed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CrashAt {
    /// The new segment under `cleaner.tmp` is written up to this share of its bytes.
    TornTmp(f64),
    /// After this many swap steps (1 = renamed to the swap directory, 2 = half the old
    /// files deleted, 3 = all deleted, 4 = indexes moved, 5 = `.log` moved).
    AfterSwapStep(u8),
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// The first dirty offset after the pass.
    pub cleaned_to: u64,
    /// Groups given up because the log changed underneath.
    pub groups_abandoned: usize,
    /// One past the highest offset of a tombstone this pass removed (0: none).
    pub tombstones_removed_below: u64,
}

/// The compaction state an operator or the cleaner's scheduler looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionView {
    /// Dirty bytes over all bytes of sealed segments (0 when there are none).
    pub dirty_ratio: f64,
    pub dirty_bytes: u64,
    pub first_dirty_offset: u64,
    /// Time of the last pass that changed this log, if any since it was opened.
    pub last_clean_ms: Option<i64>,
    /// A pass is due: the ratio is reached, `max.compaction.lag.ms` passed, or a
    /// tombstone horizon expired.
    pub due: bool,
}

/// A sealed segment as the pass sees it: its bytes stay valid (mmap) whatever happens
/// to the log meanwhile.
struct SegView {
    base: u64,
    /// Base of the next segment: every offset here is below it.
    end: u64,
    data: Bytes,
}

struct Plan {
    generation: u64,
    segments: Vec<SegView>,
    first_dirty: u64,
    config: LogConfig,
}

impl Log {
    /// The dirty ratio and whether a pass is due at `now_ms` (no I/O).
    pub fn compaction_view(&self, now_ms: i64, high_watermark: u64) -> CompactionView {
        let st = self.state.lock();
        let bases: Vec<u64> = st.segments.keys().copied().collect();
        let (mut dirty, mut total) = (0u64, 0u64);
        let mut oldest_dirty: Option<i64> = None;
        for w in bases.windows(2) {
            let seg = &st.segments[&w[0]];
            total += seg.size();
            if w[1] > st.first_dirty_offset {
                dirty += seg.size();
                if oldest_dirty.is_none() {
                    oldest_dirty = seg.first_timestamp();
                }
            }
        }
        let ratio = if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        };
        let c = &st.config;
        let compacts = c.cleanup_policy != sluice_proto::topic_config::CleanupPolicy::Delete;
        let lagging =
            oldest_dirty.is_some_and(|t| now_ms.saturating_sub(t) > c.max_compaction_lag_ms);
        let horizon = st.next_tombstone_horizon_ms.is_some_and(|h| h <= now_ms);
        // The oldest sealed segment lies wholly below the high watermark.
        let cleanable = bases.get(1).is_some_and(|&end| end <= high_watermark);
        CompactionView {
            dirty_ratio: ratio,
            dirty_bytes: dirty,
            first_dirty_offset: st.first_dirty_offset,
            last_clean_ms: st.last_clean_ms,
            due: compacts
                && cleanable
                && ((dirty > 0 && (ratio >= c.min_cleanable_dirty_ratio || lagging)) || horizon),
        }
    }

    /// One compaction pass (see the module docs). `Ok(None)`: nothing to clean.
    pub fn clean(&self, opts: &CleanOptions) -> Result<Option<CleanStats>, LogError> {
        let Some(plan) = self.plan_clean(opts)? else {
            return Ok(None);
        };
        let mut stats = CleanStats {
            segments_before: plan.segments.len(),
            ..CleanStats::default()
        };
        let mut map = OffsetMap::with_budget(opts.dedupe_buffer_bytes);
        let map_end = build_map(&plan, &mut map, &mut stats, opts)?;
        if map_end <= plan.first_dirty && !self.tombstones_due(opts.now_ms) {
            return Ok(None);
        }
        let last_batches = last_batch_per_producer(&plan.segments, map_end);
        let groups = group_segments(&plan.segments, map_end, plan.config.segment_bytes);
        let map = MapView {
            map: &map,
            end: map_end,
        };
        let mut horizon: Option<i64> = None;
        for group in groups {
            let written = self.write_group(&plan, group, &map, &last_batches, opts, &mut stats)?;
            horizon = min_opt(horizon, written.horizon);
            if !self.swap_group(&plan, &written, opts)? {
                stats.groups_abandoned += 1;
                let _ = fs::remove_dir_all(self.dir.join(TMP_DIR));
                return Ok(Some(stats));
            }
            stats.segments_after += 1;
        }
        let mut st = self.state.lock();
        st.tombstones_removed_below = st
            .tombstones_removed_below
            .max(stats.tombstones_removed_below);
        if st.generation == plan.generation {
            st.first_dirty_offset = map_end;
        }
        // Written even when the log changed meanwhile: the groups swapped in before
        // that did remove tombstones, and followers must learn of it after a restart.
        write_cleaner_checkpoint(
            &self.dir,
            st.first_dirty_offset,
            st.tombstones_removed_below,
        )?;
        st.next_tombstone_horizon_ms = horizon;
        st.last_clean_ms = Some(opts.now_ms);
        stats.cleaned_to = map_end;
        info!(partition = %self.tp, cleaned_to = map_end, bytes_read = stats.bytes_read, bytes_written = stats.bytes_written, records_removed = stats.records_removed, "compacted log");
        Ok(Some(stats))
    }

    /// One past the highest offset of a tombstone compaction removed from this copy.
    /// A replica whose log ends below this (and holds anything) may keep values whose
    /// deletes it never saw: the leader makes such a follower start over
    /// (`ReplicaManager::fetch_for_follower`).
    pub fn tombstones_removed_below(&self) -> u64 {
        self.state.lock().tombstones_removed_below
    }

    /// A mark to pass to [`Log::tombstones_removed_since`] later: taken before a read,
    /// it covers every removal that read may have seen.
    pub fn tombstone_removal_mark(&self) -> u64 {
        REMOVAL_COUNTER.load(Ordering::Acquire)
    }

    /// One past the highest offset of a tombstone removed after `mark` was taken
    /// (0: none). Without a mark, or with one older than what is remembered, every
    /// removal ever counts ([`Log::tombstones_removed_below`]).
    pub fn tombstones_removed_since(&self, mark: Option<u64>) -> u64 {
        let st = self.state.lock();
        let r = &st.tombstone_removals;
        match mark {
            Some(m) if m > r.opened_at && m > r.forgotten => r
                .recent
                .iter()
                .filter(|(n, _)| *n >= m)
                .map(|(_, below)| *below)
                .max()
                .unwrap_or(0),
            _ => st.tombstones_removed_below,
        }
    }

    fn tombstones_due(&self, now_ms: i64) -> bool {
        self.state
            .lock()
            .next_tombstone_horizon_ms
            .is_some_and(|h| h <= now_ms)
    }

    fn plan_clean(&self, opts: &CleanOptions) -> Result<Option<Plan>, LogError> {
        let mut st = self.state.lock();
        self.check_online(&st)?;
        if st.config.cleanup_policy == sluice_proto::topic_config::CleanupPolicy::Delete {
            return Ok(None);
        }
        let bases: Vec<u64> = st.segments.keys().copied().collect();
        let lag_limit = opts.now_ms.saturating_sub(st.config.min_compaction_lag_ms);
        let mut segments = Vec::new();
        for w in bases.windows(2) {
            let (base, end) = (w[0], w[1]);
            let seg = st.segments.get_mut(&base).expect("listed");
            let young = seg.max_timestamp().is_some_and(|t| t > lag_limit);
            if end > opts.high_watermark || young {
                break;
            }
            let data = if seg.size() == 0 {
                Bytes::new()
            } else {
                seg.bytes(0, seg.size())
                    .map_err(|e| self.fail(&mut st, e))?
            };
            segments.push(SegView { base, end, data });
        }
        if segments.is_empty() {
            return Ok(None);
        }
        let first_dirty = st.first_dirty_offset.max(st.log_start_offset);
        Ok(Some(Plan {
            generation: st.generation,
            segments,
            first_dirty,
            config: st.config.clone(),
        }))
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn corrupt(base: u64, e: impl ToString) -> LogError {
    LogError::Corrupt {
        path: PathBuf::from(format!("segment {base:020}")),
        position: 0,
        reason: e.to_string(),
    }
}

fn batches_of(seg: &SegView) -> impl Iterator<Item = Result<RecordBatch, LogError>> + '_ {
    sluice_proto::batch::Batches::new(seg.data.clone())
        .map(move |b| b.map_err(|e| corrupt(seg.base, e)))
}

/// Maps key → latest offset from the first dirty offset on; returns where the map
/// stops covering (a batch boundary, at most the cleanable end).
fn build_map(
    plan: &Plan,
    map: &mut OffsetMap,
    stats: &mut CleanStats,
    opts: &CleanOptions,
) -> Result<u64, LogError> {
    let cleanable_end = plan.segments.last().map_or(plan.first_dirty, |s| s.end);
    for seg in plan.segments.iter().filter(|s| s.end > plan.first_dirty) {
        stats.bytes_read += seg.data.len() as u64;
        opts.throttle(seg.data.len() as u64);
        for b in batches_of(seg) {
            let b = b?;
            let base = b.base_offset() as u64;
            if (b.last_offset() as u64) < plan.first_dirty || b.is_control() {
                continue;
            }
            // Batches are mapped whole. Only near a full map is it worth counting the
            // batch's new keys first (a second decode); usually its record count fits.
            if (b.record_count().max(0) as usize) > map.remaining() {
                let mut new_keys = 0;
                b.for_each_key(|r| {
                    new_keys += usize::from(r.key.is_some_and(|k| map.get(k).is_none()))
                })
                .map_err(|e| corrupt(seg.base, e))?;
                if new_keys > map.remaining() {
                    if base <= plan.first_dirty {
                        return Err(LogError::CleanerBufferTooSmall { keys: new_keys });
                    }
                    return Ok(base);
                }
            }
            b.for_each_key(|r| {
                if let Some(k) = r.key {
                    // Fits: checked above.
                    map.put(k, base + r.offset_delta as u64);
                }
            })
            .map_err(|e| corrupt(seg.base, e))?;
        }
    }
    Ok(cleanable_end)
}

/// For every producer id, the base offset of its last batch below `end`.
fn last_batch_per_producer(segments: &[SegView], end: u64) -> HashMap<i64, u64> {
    let mut last = HashMap::new();
    for seg in segments.iter().filter(|s| s.base < end) {
        for b in batches_of(seg).flatten() {
            if b.producer_id() >= 0 && (b.base_offset() as u64) < end {
                last.insert(b.producer_id(), b.base_offset() as u64);
            }
        }
    }
    last
}

/// Consecutive segments below `end` whose total size fits `segment_bytes` and whose
/// offsets fit the index's 32-bit relative offsets; every segment is in one group.
fn group_segments(
    segments: &[SegView],
    end: u64,
    segment_bytes: u64,
) -> Vec<std::ops::Range<usize>> {
    let n = segments.iter().take_while(|s| s.base < end).count();
    let mut groups = Vec::new();
    let mut start = 0;
    while start < n {
        let mut stop = start + 1;
        let mut size = segments[start].data.len() as u64;
        while stop < n {
            let next = &segments[stop];
            let span = next.end - segments[start].base;
            if size + next.data.len() as u64 > segment_bytes || span > u32::MAX as u64 {
                break;
            }
            size += next.data.len() as u64;
            stop += 1;
        }
        groups.push(start..stop);
        start = stop;
    }
    groups
}

/// A cleaned group waiting under `cleaner.tmp` to be swapped in.
struct Written {
    base: u64,
    end: u64,
    /// Earliest delete horizon of a tombstone kept.
    horizon: Option<i64>,
    /// One past the highest offset of a tombstone this group removed, if it removed any.
    tombstones_removed_below: Option<u64>,
}

/// Where every removal of tombstones since the log was opened happened, so the leader
/// can tell whether one happened above a follower's fetch offset after that follower's
/// previous fetch ([`Log::tombstones_removed_since`]). Removals are numbered from one
/// process-wide counter, so a number taken before a reopen is older than every removal
/// after it.
#[derive(Debug)]
pub(super) struct TombstoneRemovals {
    /// The counter's value when the log was opened: removals before it are known only
    /// through the persisted `tombstones_removed_below`.
    opened_at: u64,
    /// (number, one past the highest offset removed), oldest first, at most
    /// [`REMOVALS_KEPT`].
    recent: VecDeque<(u64, u64)>,
    /// The number of the newest removal dropped from `recent` (0: none).
    forgotten: u64,
}

const REMOVALS_KEPT: usize = 256;
static REMOVAL_COUNTER: AtomicU64 = AtomicU64::new(1);

impl TombstoneRemovals {
    pub(super) fn new() -> TombstoneRemovals {
        TombstoneRemovals {
            opened_at: REMOVAL_COUNTER.fetch_add(1, Ordering::AcqRel),
            recent: VecDeque::new(),
            forgotten: 0,
        }
    }

    fn record(&mut self, below: u64) {
        let n = REMOVAL_COUNTER.fetch_add(1, Ordering::AcqRel);
        if self.recent.len() == REMOVALS_KEPT {
            if let Some((n, _)) = self.recent.pop_front() {
                self.forgotten = n;
            }
        }
        self.recent.push_back((n, below));
    }
}

impl Log {
    fn write_group(
        &self,
        plan: &Plan,
        group: std::ops::Range<usize>,
        map: &MapView<'_>,
        last_batches: &HashMap<i64, u64>,
        opts: &CleanOptions,
        stats: &mut CleanStats,
    ) -> Result<Written, LogError> {
        let tmp = self.dir.join(TMP_DIR);
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let segs = &plan.segments[group];
        let (base, end) = (segs[0].base, segs[segs.len() - 1].end);
        let mut out = Segment::create(&tmp, base, &plan.config, opts.now_ms)?;
        let new_horizon = opts.now_ms.saturating_add(plan.config.delete_retention_ms);
        let mut horizon = None;
        let mut last_batch = None;
        // Groups go up in offset order, so a group removed tombstones iff the pass's
        // highest removed offset moved during it.
        let removed_before = stats.tombstones_removed_below;
        for seg in segs {
            stats.bytes_read += seg.data.len() as u64;
            let written_before = stats.bytes_written;
            for b in batches_of(seg) {
                let b = b?;
                last_batch = Some(b.clone());
                let Some(kept) = clean_batch(b, map, last_batches, opts, new_horizon, stats)
                    .map_err(|e| corrupt(seg.base, e))?
                else {
                    continue;
                };
                if let Some(h) = kept.delete_horizon_ms() {
                    let mut has_tombstone = false;
                    let _ = kept.for_each_key(|r| has_tombstone |= r.tombstone);
                    if has_tombstone {
                        horizon = min_opt(horizon, Some(h));
                    }
                }
                stats.bytes_written += append_batch(&mut out, &kept, seg.base, opts.now_ms)?;
            }
            opts.throttle(seg.data.len() as u64 + stats.bytes_written - written_before);
        }
        if out.size() == 0 {
            // Recovery reads an empty segment before others as a torn write and cuts
            // there, so a group that lost every record keeps its last batch's header.
            if let Some(b) = last_batch {
                if let Retained::Rewritten(bare) =
                    retain(&b, |_| false, None, true).map_err(|e| corrupt(base, e))?
                {
                    stats.bytes_written += append_batch(&mut out, &bare, base, opts.now_ms)?;
                }
            }
        }
        out.seal()?;
        out.flush_indexes()?;
        let log_path = out.path().to_path_buf();
        out.file.sync_all().map_err(io_err(&log_path))?;
        if let Some(CrashAt::TornTmp(share)) = opts.crash_at {
            let len = (out.size() as f64 * share) as u64;
            out.file.set_len(len).map_err(io_err(&log_path))?;
            return Err(injected());
        }
        fsync_dir(&tmp).map_err(io_err(&tmp))?;
        let tombstones_removed_below = (stats.tombstones_removed_below > removed_before)
            .then_some(stats.tombstones_removed_below);
        Ok(Written {
            base,
            end,
            horizon,
            tombstones_removed_below,
        })
    }

    /// Swaps a written group in; false when the log changed since the plan.
    ///
    /// The file steps (renames, deletions and their directory fsyncs) run without the
    /// log's state lock, so appends and reads of the partition go on meanwhile: they
    /// never touch these sealed segments' files, and readers holding the old files keep
    /// reading them after they are unlinked. What must not interleave — a truncation, a
    /// prefix truncation, retention (everything that moves the generation) and a flush —
    /// takes the flush lock, held here from the generation check to the in-memory swap.
    fn swap_group(&self, plan: &Plan, w: &Written, opts: &CleanOptions) -> Result<bool, LogError> {
        let _exclusive = self.flush_lock.lock();
        let (old, config) = {
            let mut st = self.state.lock();
            if st.generation != plan.generation || st.offline.is_some() {
                return Ok(false);
            }
            if let Some(below) = w.tombstones_removed_below {
                // Known before any reader can see the group: a follower fetch that
                // reads the new segment must also see that tombstones went.
                st.tombstones_removed_below = st.tombstones_removed_below.max(below);
                st.tombstone_removals.record(below);
            }
            let old: Vec<u64> = st.segments.range(w.base..w.end).map(|(b, _)| *b).collect();
            let checkpoint = (st.first_dirty_offset, st.tombstones_removed_below);
            (old, (st.config.clone(), checkpoint))
        };
        let (config, (first_dirty, removed_below)) = config;
        let crash = |step: u8| opts.crash_at == Some(CrashAt::AfterSwapStep(step));
        let result = (|| {
            if w.tombstones_removed_below.is_some() {
                // Persisted before the commit point, for the same reason.
                write_cleaner_checkpoint(&self.dir, first_dirty, removed_below)?;
            }
            let swap = self.dir.join(format!("{SWAP_PREFIX}{}-{}", w.base, w.end));
            let tmp = self.dir.join(TMP_DIR);
            fs::rename(&tmp, &swap).map_err(io_err(&swap))?;
            fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
            if crash(1) {
                return Err(injected());
            }
            #[cfg(test)]
            swap_pause();
            for (i, b) in old.iter().enumerate() {
                delete_segment_files(&self.dir, *b)?;
                if crash(2) && i + 1 >= old.len().div_ceil(2) {
                    return Err(injected());
                }
            }
            fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
            if crash(3) {
                return Err(injected());
            }
            move_swapped_in(&swap, &self.dir, w.base, crash(4))?;
            if crash(5) {
                return Err(injected());
            }
            fs::remove_dir(&swap).map_err(io_err(&swap))?;
            fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
            Segment::open(&self.dir, w.base, &config, false, opts.now_ms)
        })();
        let mut st = self.state.lock();
        match result {
            Ok(seg) => {
                for b in &old {
                    st.segments.remove(b);
                }
                st.segments.insert(w.base, seg);
                Ok(true)
            }
            // Files and memory may now disagree: offline until reopened, when
            // `complete_interrupted_clean` finishes the swap.
            Err(e) => Err(self.fail_hard(&mut st, e)),
        }
    }

    fn fail_hard(&self, st: &mut State, e: LogError) -> LogError {
        if st.offline.is_none() {
            warn!(partition = %self.tp, error = %e, "compaction swap failed; partition log goes offline");
            st.offline = Some(e.to_string());
        }
        e
    }
}

/// The pass's offset map and where it stops covering.
struct MapView<'a> {
    map: &'a OffsetMap,
    /// Every key's latest offset below this is in `map`; nothing at or above it is.
    end: u64,
}

/// The batch as it goes into the cleaned segment, or `None` when it goes entirely.
///
/// A batch at or above the map's end stays as it is, tombstones included: the map
/// knows nothing of its keys, so an older value of such a tombstone's key below the
/// map's end may have been kept as the latest the map saw — removing the tombstone
/// would bring that value back. (Kafka's cleaner keeps every record at or above the
/// map's end for the same reason.) Batches never straddle the end: it is a batch
/// boundary.
fn clean_batch(
    b: RecordBatch,
    map: &MapView<'_>,
    last_batches: &HashMap<i64, u64>,
    opts: &CleanOptions,
    new_horizon: i64,
    stats: &mut CleanStats,
) -> Result<Option<RecordBatch>, sluice_proto::BatchError> {
    let base = b.base_offset() as u64;
    if base >= map.end {
        return Ok(Some(b));
    }
    let map = map.map;
    let expired = b.delete_horizon_ms().is_some_and(|h| h <= opts.now_ms);
    let keep_empty = b.producer_id() >= 0
        && last_batches.get(&b.producer_id()) == Some(&base)
        && opts.now_ms.saturating_sub(b.max_timestamp()) < opts.producer_expiration_ms;
    let mut removed = 0u64;
    let mut tombstones_below = 0u64;
    let keep = |r: &sluice_proto::batch::compact::KeyedRecord<'_>| {
        let offset = base + r.offset_delta as u64;
        let keep = match r.key {
            None => true,
            Some(k) => {
                let superseded = map.get(k).is_some_and(|m| m > offset);
                if r.tombstone && expired && !superseded {
                    tombstones_below = tombstones_below.max(offset + 1);
                }
                !(superseded || (r.tombstone && expired))
            }
        };
        removed += u64::from(!keep);
        keep
    };
    let decision = retain(&b, keep, Some(new_horizon), keep_empty)?;
    stats.records_removed += removed;
    stats.tombstones_removed_below = stats.tombstones_removed_below.max(tombstones_below);
    Ok(match decision {
        Retained::Unchanged => Some(b),
        Retained::Dropped => None,
        Retained::Rewritten(r) => Some(r),
    })
}

/// Appends `batch` to the segment being written; returns its size.
fn append_batch(
    out: &mut Segment,
    batch: &RecordBatch,
    seg_base: u64,
    now_ms: i64,
) -> Result<u64, LogError> {
    let bytes = batch.as_bytes();
    let info =
        BatchInfo::parse_header(&bytes[..BATCH_HEADER_BYTES]).map_err(|e| corrupt(seg_base, e))?;
    out.append(
        &bytes[..BATCH_HEADER_BYTES],
        &bytes[BATCH_HEADER_BYTES..],
        &info,
        now_ms,
    )?;
    Ok(info.size)
}

fn injected() -> LogError {
    LogError::Io {
        path: PathBuf::from("cleaner"),
        source: std::io::Error::other("injected crash"),
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: called in the middle of a swap's file steps (after its commit point), to
    /// show what a swap waiting on the disk holds.
    pub(crate) static SWAP_PAUSE: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn swap_pause() {
    SWAP_PAUSE.with(|p| {
        if let Some(f) = p.borrow_mut().as_mut() {
            f()
        }
    })
}

/// Deletes the three files of the segment at `base` in `dir` (those already gone are
/// fine: a crash may have taken some).
fn delete_segment_files(dir: &Path, base: u64) -> Result<(), LogError> {
    for ext in ["log", "index", "timeindex"] {
        let p = segment_path(dir, base, ext);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&p)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Moves the new segment's files from `swap` into `dir`: indexes first, the `.log`
/// last, so that a `.log` still in `swap` means nothing of it is in place yet.
fn move_swapped_in(
    swap: &Path,
    dir: &Path,
    base: u64,
    stop_before_log: bool,
) -> Result<(), LogError> {
    for ext in ["index", "timeindex", "log"] {
        if ext == "log" && stop_before_log {
            return Err(injected());
        }
        let from = segment_path(swap, base, ext);
        let to = segment_path(dir, base, ext);
        match fs::rename(&from, &to) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.map_err(io_err(&to))?,
        }
    }
    fsync_dir(dir).map_err(io_err(dir))
}

/// Run before a log's segments are listed: discards a half-written `cleaner.tmp` and
/// completes any swap a crash interrupted (see the module docs for why this is safe).
pub(super) fn complete_interrupted_clean(dir: &Path) -> Result<(), LogError> {
    let tmp = dir.join(TMP_DIR);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let swap = entry.map_err(io_err(dir))?.path();
        let name = swap
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(range) = name.strip_prefix(SWAP_PREFIX) else {
            continue;
        };
        let parsed = range
            .split_once('-')
            .and_then(|(b, e)| Some((b.parse::<u64>().ok()?, e.parse::<u64>().ok()?)));
        let Some((base, end)) = parsed else {
            return Err(LogError::Corrupt {
                path: swap.clone(),
                position: 0,
                reason: "unreadable compaction swap directory name".into(),
            });
        };
        if segment_path(&swap, base, "log").exists() {
            // The `.log` has not moved: whatever segment files of base..end remain in
            // `dir` are the old ones.
            for old in list_segments(dir)?
                .into_iter()
                .filter(|b| (base..end).contains(b))
            {
                for ext in ["log", "index", "timeindex"] {
                    let p = segment_path(dir, old, ext);
                    match fs::remove_file(&p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(LogError::io(&p, e))
                        }
                        _ => {}
                    }
                }
            }
            fsync_dir(dir).map_err(io_err(dir))?;
        }
        move_swapped_in(&swap, dir, base, false)?;
        fs::remove_dir_all(&swap).map_err(io_err(&swap))?;
        fsync_dir(dir).map_err(io_err(dir))?;
        info!(dir = %dir.display(), base, end, "completed an interrupted compaction swap");
    }
    Ok(())
}

/// `cleaner-offset-checkpoint`: "FIRST_DIRTY TOMBSTONES_REMOVED_BELOW" (the second
/// number absent in files of the first version). Unreadable means "nothing known".
pub(super) fn read_cleaner_checkpoint(dir: &Path) -> (u64, u64) {
    let text = fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE)).unwrap_or_default();
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    let first_dirty = numbers.next().flatten().unwrap_or(0);
    (first_dirty, numbers.next().flatten().unwrap_or(0))
}

fn write_cleaner_checkpoint(
    dir: &Path,
    first_dirty: u64,
    tombstones_below: u64,
) -> Result<(), LogError> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let text = format!("{first_dirty} {tombstones_below}\n");
    write_atomically(&path, text.as_bytes()).map_err(io_err(&path))
}
