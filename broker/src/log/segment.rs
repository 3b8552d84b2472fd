//! One segment: `{base_offset:020}.log` plus its `.index` and `.timeindex`.
//!
//! The `.log` holds whole batches back to back, exactly as sent on the wire. Only the
//! owning [`super::Log`] touches a segment, under its lock; readers get a [`ReadView`]
//! there and use it after the lock is released. Sealed segments are served
//! from a read-only mmap as `Bytes`; because a mapped file must never shrink under a
//! reader, truncating a segment whose file was ever mapped (sealed now, or sealed
//! once and unsealed by the truncation itself) writes a shortened copy and renames it
//! over the original instead of cutting the file in place.
//!
//! Invariants: every byte below `size` belongs to a whole batch that passed its CRC;
//! `last_offset - base_offset <= u32::MAX` for every batch (index entries are relative);
//! index entries never point at or past `size`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use sluice_proto::batch::{self, RecordBatch};
use sluice_proto::limits::BATCH_HEADER_BYTES;

use super::error::{io_err, LogError};
use super::index::{OffsetIndex, TimeIndex};
use super::io_util::{pread_exact, pwritev_all};
use sluice_proto::topic_config::LogConfig;

/// File names of the segment starting at `base_offset` in `dir`.
pub(crate) fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Bytes to preallocate per index file: `segment.index.bytes`, but no more than a full
/// segment can use (one entry per `index.interval.bytes`), since the space is reserved.
fn index_capacity_bytes(config: &LogConfig) -> u64 {
    let entries = config
        .segment_bytes
        .checked_div(config.index_interval_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(2);
    config
        .segment_index_bytes
        .min(entries.saturating_mul(12))
        .max(24)
}

/// The fields of a batch header the log needs, read without the batch body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub(crate) position: u64,
    pub(crate) size: u64,
    pub(crate) base_offset: u64,
    pub(crate) last_offset: u64,
    pub(crate) max_timestamp: i64,
    pub(crate) leader_epoch: i32,
}

impl BatchInfo {
    /// Parses a header that is not (yet) at a known position.
    pub(crate) fn parse_header(header: &[u8]) -> Result<BatchInfo, String> {
        BatchInfo::parse(header, 0)
    }

    fn parse(header: &[u8], position: u64) -> Result<BatchInfo, String> {
        // batch_size checks length and magic; it needs the whole batch, so give it a
        // header-only view and accept "truncated" past the header.
        let size = match batch::batch_size(header) {
            Ok(s) => s,
            Err(sluice_proto::BatchError::Truncated { needed, available })
                if available >= BATCH_HEADER_BYTES =>
            {
                needed
            }
            Err(e) => return Err(e.to_string()),
        } as u64;
        let i64_at = |at: usize| i64::from_be_bytes(header[at..at + 8].try_into().unwrap());
        let i32_at = |at: usize| i32::from_be_bytes(header[at..at + 4].try_into().unwrap());
        let base = i64_at(0);
        let delta = i32_at(23);
        if base < 0 || delta < 0 {
            return Err(format!(
                "negative base offset {base} or offset delta {delta}"
            ));
        }
        Ok(BatchInfo {
            position,
            size,
            base_offset: base as u64,
            last_offset: base as u64 + delta as u64,
            max_timestamp: i64_at(35),
            leader_epoch: i32_at(12),
        })
    }
}

/// What a full scan of a segment found (crash recovery, index rebuild).
#[derive(Debug, Default)]
pub(crate) struct ScanOutcome {
    /// Offset after the last valid batch, if any batch was valid.
    pub(crate) next_offset: Option<u64>,
    /// Bytes cut from the end because they did not form valid batches.
    pub(crate) truncated_bytes: u64,
    /// (leader epoch, base offset) of every valid batch, in order.
    pub(crate) epochs: Vec<(i32, u64)>,
    pub(crate) bytes_read: u64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    log_path: PathBuf,
    pub(crate) file: Arc<File>,
    /// Invariant: every byte below `size` belongs to a whole valid batch.
    size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    index_interval_bytes: u64,
    index_capacity_bytes: u64,
    bytes_since_index: u64,
    /// Largest batch timestamp in the segment; `None` when empty.
    max_timestamp: Option<i64>,
    /// Time of the first append (or of the open, for a non-empty segment), for `segment.ms`.
    pub(crate) created_ms: i64,
    /// Sealed segments: the whole file mapped read-only, sliced for reads.
    read_map: Option<Bytes>,
    /// The current `.log` file was mapped for readers at some point. Slices of that map
    /// may live on in fetch answers or a compaction pass after `read_map` is dropped
    /// (unseal), so such a file is never shrunk in place: `cut_to` copies it.
    /// Invariant: `read_map.is_some()` implies `mapped`.
    mapped: bool,
    sealed: bool,
}

struct MapOwner(Mmap);
impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Segment {
    /// Creates a new, empty segment at `base_offset`, replacing any leftover files.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        for ext in ["log", "index", "timeindex"] {
            let p = segment_path(dir, base_offset, ext);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io(&p, e))
                }
                _ => {}
            }
        }
        Segment::open(dir, base_offset, config, true, now_ms)
    }

    /// Opens (creating if missing) the segment at `base_offset`. `active` segments get
    /// preallocated indexes; the caller decides whether to trust or rebuild them.
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        active: bool,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let log_path = segment_path(dir, base_offset, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let size = file.metadata().map_err(io_err(&log_path))?.len();
        let cap = active.then(|| index_capacity_bytes(config));
        let ipath = segment_path(dir, base_offset, "index");
        let offset_index = OffsetIndex::open(&ipath, cap).map_err(io_err(&ipath))?;
        let tpath = segment_path(dir, base_offset, "timeindex");
        let time_index = TimeIndex::open(&tpath, cap).map_err(io_err(&tpath))?;
        let max_timestamp = time_index.last().map(|(ts, _)| ts);
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size,
            offset_index,
            time_index,
            index_interval_bytes: config.index_interval_bytes,
            index_capacity_bytes: index_capacity_bytes(config),
            bytes_since_index: 0,
            max_timestamp,
            created_ms: now_ms,
            read_map: None,
            mapped: false,
            sealed: !active,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }
    /// The first batch's largest timestamp: when the segment's oldest records were
    /// written, near enough for `max.compaction.lag.ms`.
    pub(crate) fn first_timestamp(&self) -> Option<i64> {
        (self.size > 0)
            .then(|| self.batch_at(0).ok().map(|b| b.max_timestamp))
            .flatten()
    }
    pub(crate) fn path(&self) -> &Path {
        &self.log_path
    }

    /// Whether appending a batch of `bytes` ending at `last_offset` needs a new segment.
    pub(crate) fn must_roll(
        &self,
        config: &LogConfig,
        bytes: u64,
        last_offset: u64,
        now_ms: i64,
    ) -> bool {
        self.size > 0
            && (self.size + bytes > config.segment_bytes
                || now_ms - self.created_ms >= config.segment_ms
                // max.compaction.lag.ms: the active segment is never compacted, so it
                // must not hold records longer than that.
                || (config.cleanup_policy.compacts()
                    && now_ms.saturating_sub(self.created_ms) >= config.max_compaction_lag_ms)
                || self.offset_index.is_full()
                || self.time_index.is_full()
                || last_offset - self.base_offset > u32::MAX as u64)
    }

    fn relative(&self, offset: u64) -> u32 {
        debug_assert!(offset >= self.base_offset && offset - self.base_offset <= u32::MAX as u64);
        (offset - self.base_offset) as u32
    }

    /// Appends one batch given as a (possibly restamped) header and the unchanged rest.
    /// On a write error the file is cut back so the segment stays as it was.
    pub(crate) fn append(
        &mut self,
        header: &[u8],
        rest: &[u8],
        info: &BatchInfo,
        now_ms: i64,
    ) -> Result<(), LogError> {
        debug_assert!(!self.sealed);
        let position = self.size;
        if position == 0 {
            self.created_ms = now_ms;
        }
        if let Err(e) = pwritev_all(&self.file, &[header, rest], position) {
            // Best effort: a torn tail would otherwise sit under the next append. If this
            // fails too, recovery will cut it at the next open.
            let _ = self.file.set_len(position);
            return Err(LogError::io(&self.log_path, e));
        }
        self.size += info.size;
        self.index_batch(info, position);
        Ok(())
    }

    fn index_batch(&mut self, info: &BatchInfo, position: u64) {
        if self.bytes_since_index >= self.index_interval_bytes && position > 0 {
            // A full index was checked by must_roll; a miss here only makes lookups scan further.
            let _ = self
                .offset_index
                .append(self.relative(info.base_offset), position as u32);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += info.size;
        if self.max_timestamp.is_none_or(|m| info.max_timestamp > m) {
            self.max_timestamp = Some(info.max_timestamp);
            let _ = self
                .time_index
                .maybe_append(info.max_timestamp, self.relative(info.base_offset));
        }
    }

    /// Reads and checks the header of the batch at `position`.
    pub(crate) fn batch_at(&self, position: u64) -> Result<BatchInfo, LogError> {
        let mut header = [0u8; BATCH_HEADER_BYTES];
        if position + BATCH_HEADER_BYTES as u64 > self.size {
            return Err(self.corrupt(position, "batch header runs past the segment's end"));
        }
        self.file
            .read_exact_at(&mut header, position)
            .map_err(io_err(&self.log_path))?;
        let info = BatchInfo::parse(&header, position).map_err(|r| self.corrupt(position, r))?;
        if position + info.size > self.size {
            return Err(self.corrupt(position, "batch runs past the segment's end"));
        }
        Ok(info)
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// The first batch whose last offset is `>= offset`, or `None` past the end.
    pub(crate) fn find(&self, offset: u64) -> Result<Option<BatchInfo>, LogError> {
        let rel = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        let (_, position) = self.offset_index.lookup(rel);
        let mut position = u64::from(position);
        while position < self.size {
            let info = self.batch_at(position)?;
            if info.last_offset >= offset {
                return Ok(Some(info));
            }
            position += info.size;
        }
        Ok(None)
    }

    /// Bytes `[position, position + len)` of the log file.
    pub(crate) fn bytes(&mut self, position: u64, len: u64) -> Result<Bytes, LogError> {
        debug_assert!(position + len <= self.size);
        if self.sealed && self.size > 0 {
            if self.read_map.is_none() {
                // SAFETY: once mapped, this file is never shrunk in place (`mapped`
                // makes `cut_to` replace it with a copy), and nothing writes below its
                // size while it is sealed; a later file of the same name is a new inode.
                let map = unsafe { Mmap::map(&*self.file) }.map_err(io_err(&self.log_path))?;
                self.read_map = Some(Bytes::from_owner(MapOwner(map)));
                self.mapped = true;
            }
            let map = self.read_map.as_ref().expect("just mapped");
            return Ok(map.slice(position as usize..(position + len) as usize));
        }
        let buf =
            pread_exact(&self.file, len as usize, position).map_err(io_err(&self.log_path))?;
        Ok(buf.freeze())
    }

    /// What a reader needs to read this segment from `offset` outside the log's lock:
    /// the file (a sealed one mapped whole), its size now, and where the offset index
    /// says to start scanning. Cheap: an index lookup in memory, at most one `mmap`
    /// call, no read of the `.log`.
    pub(crate) fn read_view(&mut self, offset: u64) -> Result<ReadView, LogError> {
        let map = if self.sealed && self.size > 0 {
            // Maps (a syscall, no IO) on the first read of a sealed segment.
            self.bytes(0, 0)?;
            self.read_map.clone()
        } else {
            None
        };
        let rel = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        Ok(ReadView {
            file: self.file.clone(),
            map,
            size: self.size,
            scan_from: u64::from(self.offset_index.lookup(rel).1),
            log_path: self.log_path.clone(),
        })
    }

    /// Scans the whole file, keeping the longest prefix of valid batches whose offsets
    /// increase from `expected_next`; cuts the rest and rebuilds both indexes.
    pub(crate) fn recover(&mut self, expected_next: u64) -> Result<ScanOutcome, LogError> {
        let mut out = ScanOutcome::default();
        self.read_map = None;
        let data = if self.size == 0 {
            Bytes::new()
        } else {
            // SAFETY: nothing else maps or resizes this file while recovery runs, and the
            // map is dropped before the file is cut.
            let map = unsafe { Mmap::map(&*self.file) }.map_err(io_err(&self.log_path))?;
            Bytes::from_owner(MapOwner(map))
        };
        out.bytes_read = data.len() as u64;
        self.offset_index.clear();
        self.time_index.clear();
        self.max_timestamp = None;
        self.bytes_since_index = 0;
        let mut position = 0usize;
        let mut next = expected_next.max(self.base_offset);
        while position < data.len() {
            let Ok((b, _)) = RecordBatch::split_first(&data.slice(position..)) else {
                break;
            };
            let base = b.base_offset();
            if base < 0
                || (base as u64) < next
                || b.last_offset() as u64 - self.base_offset > u32::MAX as u64
            {
                break;
            }
            let info = BatchInfo::parse(
                &data[position..position + BATCH_HEADER_BYTES],
                position as u64,
            )
            .expect("checked above");
            self.index_batch(&info, position as u64);
            out.epochs.push((info.leader_epoch, info.base_offset));
            next = info.last_offset + 1;
            out.next_offset = Some(next);
            position += b.size();
        }
        drop(data);
        if (position as u64) < self.size {
            out.truncated_bytes = self.size - position as u64;
            self.cut_to(position as u64)?;
        }
        self.size = position as u64;
        Ok(out)
    }

    /// Drops every batch whose last offset is `>= offset`; returns the new end offset
    /// if anything was dropped.
    pub(crate) fn truncate_to(&mut self, offset: u64) -> Result<Option<u64>, LogError> {
        let Some(first_gone) = self.find(offset)? else {
            return Ok(None);
        };
        self.cut_to(first_gone.position)?;
        let rel = self.relative(first_gone.base_offset);
        self.offset_index.truncate_to(rel);
        self.time_index.truncate_to(rel);
        self.max_timestamp = self.time_index.last().map(|(ts, _)| ts);
        self.bytes_since_index = 0;
        Ok(Some(first_gone.base_offset))
    }

    /// Shortens the log file to `position`. A file ever mapped for readers is replaced
    /// by a shortened copy so that `Bytes` already handed out stay valid (a store or
    /// load past the end of a shrunk mapped file is SIGBUS).
    fn cut_to(&mut self, position: u64) -> Result<(), LogError> {
        let p = &self.log_path;
        self.read_map = None;
        if std::mem::take(&mut self.mapped) {
            let tmp = p.with_extension("log.truncating");
            {
                (&*self.file).seek(SeekFrom::Start(0)).map_err(io_err(p))?;
                let mut src = (&*self.file).take(position);
                let mut dst = File::create(&tmp).map_err(io_err(&tmp))?;
                std::io::copy(&mut src, &mut dst).map_err(io_err(&tmp))?;
                dst.sync_all().map_err(io_err(&tmp))?;
            }
            fs::rename(&tmp, p).map_err(io_err(p))?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(io_err(p))?;
            self.file = Arc::new(f);
        } else {
            self.file.set_len(position).map_err(io_err(p))?;
        }
        self.size = position;
        Ok(())
    }

    /// Ends appends: the time index gets the final largest timestamp, both indexes are
    /// trimmed to their entries and written out.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        if self.sealed {
            return Ok(());
        }
        let ipath = self.offset_index.path().to_path_buf();
        self.offset_index.trim().map_err(io_err(&ipath))?;
        self.time_index.trim().map_err(io_err(&ipath))?;
        self.sealed = true;
        Ok(())
    }

    /// Makes a sealed segment appendable again (after a truncation reached into it).
    pub(crate) fn unseal(&mut self) -> Result<(), LogError> {
        if !self.sealed {
            return Ok(());
        }
        let ipath = self.offset_index.path().to_path_buf();
        self.offset_index
            .extend_to(self.index_capacity_bytes)
            .map_err(io_err(&ipath))?;
        self.time_index
            .extend_to(self.index_capacity_bytes)
            .map_err(io_err(&ipath))?;
        self.read_map = None;
        self.sealed = false;
        Ok(())
    }

    /// Whether the on-disk indexes can be trusted without reading the log.
    pub(crate) fn indexes_sane(&self) -> bool {
        self.offset_index.is_sane(self.size) && self.time_index.is_sane(u32::MAX)
    }

    /// Descriptors of the two index files, for a flush to fsync outside the log's lock
    /// (with their paths, for errors).
    pub(crate) fn index_files(&self) -> Result<[(Arc<File>, PathBuf); 2], LogError> {
        let (ip, tp) = (
            self.offset_index.path(),
            self.log_path.with_extension("timeindex"),
        );
        Ok([
            (
                Arc::new(self.offset_index.file_clone().map_err(io_err(ip))?),
                ip.to_path_buf(),
            ),
            (
                Arc::new(self.time_index.file_clone().map_err(io_err(&tp))?),
                tp,
            ),
        ])
    }

    /// Writes dirty index pages out (the log file itself is fsynced by the caller).
    pub(crate) fn flush_indexes(&self) -> Result<(), LogError> {
        let p = self.offset_index.path();
        self.offset_index.flush().map_err(io_err(p))?;
        self.time_index.flush().map_err(io_err(p))
    }

    /// Deletes the segment's three files.
    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        for ext in ["log", "index", "timeindex"] {
            let p = self.log_path.with_extension(ext);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io(&p, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The time index's starting point for `timestamp`: the base offset of a batch
    /// before which every record is older than `timestamp`.
    pub(crate) fn time_lookup(&self, timestamp: i64) -> u64 {
        self.base_offset + u64::from(self.time_index.lookup(timestamp.saturating_sub(1)))
    }
}

/// A segment as a reader sees it after leaving the log's lock ([`Segment::read_view`]).
///
/// Safe to use without the lock: everything below `size` is immutable for as long as
/// this view lives. Appends write only past `size`. A sealed file is read through a
/// map of its inode, which is never shrunk once mapped (truncation copies it, deletion
/// unlinks it, compaction swaps in another file), so the map stays valid and
/// unchanged. The active file is read with `pread` from a descriptor kept open here;
/// only a truncation rewrites bytes below `size`, and it bumps the log's generation,
/// which the reader checks afterwards ([`super::Log::read`]).
#[derive(Debug)]
pub(crate) struct ReadView {
    file: Arc<File>,
    /// The whole (sealed) file; `None`: read the active file with `pread`.
    map: Option<Bytes>,
    size: u64,
    /// A batch start at or below the offset asked for (from the offset index).
    scan_from: u64,
    log_path: PathBuf,
}

/// Bytes per page when touching mapped data ahead of its use.
const PAGE_BYTES: usize = 4096;

impl ReadView {
    /// Whether this view reads the active file, which a truncation may rewrite.
    pub(crate) fn reads_active_file(&self) -> bool {
        self.map.is_none()
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason: reason.into(),
        }
    }

    fn bytes(&self, position: u64, len: u64) -> Result<Bytes, LogError> {
        debug_assert!(position + len <= self.size);
        if let Some(map) = &self.map {
            return Ok(map.slice(position as usize..(position + len) as usize));
        }
        let buf =
            pread_exact(&self.file, len as usize, position).map_err(io_err(&self.log_path))?;
        Ok(buf.freeze())
    }

    fn batch_at(&self, position: u64) -> Result<BatchInfo, LogError> {
        if position + BATCH_HEADER_BYTES as u64 > self.size {
            return Err(self.corrupt(position, "batch header runs past the segment's end"));
        }
        let header = self.bytes(position, BATCH_HEADER_BYTES as u64)?;
        let info = BatchInfo::parse(&header, position).map_err(|r| self.corrupt(position, r))?;
        if position + info.size > self.size {
            return Err(self.corrupt(position, "batch runs past the segment's end"));
        }
        Ok(info)
    }

    /// The first batch whose last offset is `>= offset`, or `None` past the end.
    pub(crate) fn find(&self, offset: u64) -> Result<Option<BatchInfo>, LogError> {
        let mut position = self.scan_from;
        while position < self.size {
            let info = self.batch_at(position)?;
            if info.last_offset >= offset {
                return Ok(Some(info));
            }
            position += info.size;
        }
        Ok(None)
    }

    /// Whole batches from `start` (a batch boundary): at least the first batch, then as
    /// many as fit in `max_bytes`, none reaching `limit_offset`. Headers are checked
    /// (length, magic, offsets), CRCs are not: consumers check them, and followers
    /// check what they append. Mapped data is touched a page at a time before it is
    /// returned, so a cold file's page faults happen here, on the reader's (blocking)
    /// thread, not later where the answer is encoded.
    pub(crate) fn read(
        &self,
        start: &BatchInfo,
        max_bytes: u64,
        limit_offset: u64,
    ) -> Result<Bytes, LogError> {
        if start.last_offset >= limit_offset {
            return Ok(Bytes::new());
        }
        let len = start.size.max(max_bytes.min(self.size - start.position));
        let chunk = self.bytes(start.position, len)?;
        let mut used = 0usize;
        while used < chunk.len() {
            let rest = &chunk[used..];
            let position = start.position + used as u64;
            let size = match batch::batch_size(rest) {
                Ok(s) => s,
                Err(sluice_proto::BatchError::Truncated { .. }) if used > 0 => break,
                Err(e) => return Err(self.corrupt(position, e.to_string())),
            };
            let info = BatchInfo::parse(&rest[..BATCH_HEADER_BYTES], position)
                .map_err(|r| self.corrupt(position, r))?;
            if info.last_offset >= limit_offset {
                break;
            }
            used += size;
        }
        let data = chunk.slice(..used);
        if self.map.is_some() {
            prefault(&data);
        }
        Ok(data)
    }
}

impl ReadView {
    /// The first record at or after `from` whose timestamp is `>= timestamp`.
    pub(crate) fn scan_for_timestamp(
        &self,
        from: u64,
        timestamp: i64,
    ) -> Result<Option<(u64, i64)>, LogError> {
        let mut next = self.find(from)?;
        while let Some(info) = next {
            if info.max_timestamp >= timestamp {
                let bytes = self.bytes(info.position, info.size)?;
                let corrupt =
                    |e: sluice_proto::BatchError| self.corrupt(info.position, e.to_string());
                let batch = RecordBatch::from_bytes(bytes).map_err(corrupt)?;
                if batch.timestamp_type() == sluice_proto::TimestampType::LogAppendTime {
                    return Ok(Some((info.base_offset.max(from), batch.max_timestamp())));
                }
                for r in batch.records().map_err(corrupt)? {
                    let (offset, ts) = (
                        info.base_offset + r.offset_delta as u64,
                        batch.base_timestamp() + r.timestamp_delta,
                    );
                    if ts >= timestamp && offset >= from {
                        return Ok(Some((offset, ts)));
                    }
                }
            }
            let after = info.position + info.size;
            next = if after < self.size {
                Some(self.batch_at(after)?)
            } else {
                None
            };
        }
        Ok(None)
    }
}

/// Reads one byte of every page of `data`, so that it is resident when the caller
/// hands it on (an async task encoding it must not take the page faults).
fn prefault(data: &[u8]) {
    let mut sum = 0u8;
    for i in (0..data.len()).step_by(PAGE_BYTES) {
        // SAFETY: `i < data.len()`; a volatile read keeps the loop from being elided.
        sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(data.as_ptr().add(i)) });
    }
    std::hint::black_box(sum);
}
