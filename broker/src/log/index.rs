//! Sparse, memory-mapped indexes of one segment. Both are derived data: rebuilt from the
//! `.log` when missing, torn or failing the sanity check, so they need no checksum.
//!
//! - [`OffsetIndex`] (`.index`): 8-byte entries `relative_offset: u32, position: u32`
//!   (big-endian), one per `index.interval.bytes` of log, mapping a batch's base offset
//!   (relative to the segment's base, so 4 bytes suffice) to its byte position.
//! - [`TimeIndex`] (`.timeindex`): 12-byte entries `timestamp: i64, relative_offset: u32`,
//!   appended when the segment's largest timestamp grows past the last entry's.
//!
//! The active segment's index files are preallocated to `segment.index.bytes` and
//! mapped once; sealing trims them to their entries. Invariant: both fields of an
//! entry are non-decreasing along the file (strictly, for the offset index).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

/// A file of fixed-size entries mapped read-write. No descriptor is kept: the map stays
/// valid after its descriptor is closed, and the file is opened again only to resize it
/// (a few times per segment), so ten thousand partitions hold no index descriptors — the
/// descriptor limit is spent on segments and sockets (docs/storage.md).
#[derive(Debug)]
struct IndexFile {
    path: PathBuf,
    /// `None` while the file is empty: a zero-length file cannot be mapped.
    mmap: Option<MmapMut>,
    entry_bytes: usize,
    /// Invariant: `entries * entry_bytes <= mmap.len()`.
    entries: usize,
    /// The most the file may grow to (`segment.index.bytes`); the mapped, reserved part
    /// grows towards it as entries come (see `push`).
    /// Invariant: `mmap.len() <= max_bytes` while appendable.
    max_bytes: u64,
}

/// What an appendable index reserves at first and at least per growth: one page. The
/// reservation doubles as entries come, up to `segment.index.bytes`, so ten thousand
/// mostly idle partitions hold kilobytes of index each rather than the whole capacity.
const INDEX_RESERVE_STEP_BYTES: u64 = 4096;

impl IndexFile {
    /// Opens (creating if needed). With `capacity_bytes`, the file is extended to that
    /// size for appends; `entries` starts as what the file's length implies and the
    /// caller corrects it after a sanity check.
    fn open(path: &Path, entry_bytes: usize, capacity_bytes: Option<u64>) -> io::Result<IndexFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        drop(file);
        let entries = (len / entry_bytes as u64) as usize;
        let mut idx = IndexFile {
            path: path.to_path_buf(),
            mmap: None,
            entry_bytes,
            entries,
            max_bytes: capacity_bytes.unwrap_or(len),
        };
        let reserve = match capacity_bytes {
            Some(cap) => cap.min(len.max(INDEX_RESERVE_STEP_BYTES)),
            None => len,
        };
        idx.remap(reserve)?;
        Ok(idx)
    }

    /// Lets the file grow to `max_bytes` again (a sealed segment made appendable),
    /// reserving one step past its entries.
    fn extend_to(&mut self, max_bytes: u64) -> io::Result<()> {
        self.max_bytes = max_bytes;
        let used = (self.entries * self.entry_bytes) as u64;
        self.remap(max_bytes.min(used + INDEX_RESERVE_STEP_BYTES))
    }

    /// Reserves more of the file (doubling, up to `max_bytes`); `false` at the maximum
    /// or when the disk refuses (the entry is then skipped: lookups scan further).
    fn grow(&mut self) -> bool {
        let now = self.mmap.as_ref().map_or(0, |m| m.len() as u64);
        let target = (now * 2)
            .max(now + INDEX_RESERVE_STEP_BYTES)
            .min(self.max_bytes);
        if target < now + self.entry_bytes as u64 {
            return false;
        }
        match self.remap(target) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot grow an index: entry skipped");
                // The old size is still reserved: map it again.
                let _ = self.remap(now);
                false
            }
        }
    }

    fn remap(&mut self, bytes: u64) -> io::Result<()> {
        let eb = self.entry_bytes as u64;
        let bytes = (bytes / eb * eb).max(self.entries as u64 * eb);
        self.mmap = None;
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        let len = file.metadata()?.len();
        if bytes > len {
            // Reserve real blocks: a store into a mapped hole on a full disk is SIGBUS,
            // while a failed fallocate here is an ordinary ENOSPC error.
            use std::os::unix::io::AsRawFd;
            // SAFETY: plain syscall on an owned, open descriptor.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
        } else if bytes < len {
            file.set_len(bytes)?;
        }
        if bytes > 0 {
            // SAFETY: the file is private to this segment; only this struct resizes it,
            // and it drops the map before doing so.
            self.mmap = Some(unsafe { MmapMut::map_mut(&file)? });
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mmap.as_ref().map_or(0, |m| m.len() / self.entry_bytes)
    }

    fn entry(&self, i: usize) -> &[u8] {
        debug_assert!(i < self.entries);
        let m = self.mmap.as_ref().expect("entries imply a map");
        &m[i * self.entry_bytes..(i + 1) * self.entry_bytes]
    }

    /// Appends one entry; `false` if the file is full (the caller rolls the segment).
    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.entries >= self.capacity() && !self.grow() {
            return false;
        }
        let at = self.entries * self.entry_bytes;
        let m = self.mmap.as_mut().expect("capacity implies a map");
        m[at..at + self.entry_bytes].copy_from_slice(bytes);
        self.entries += 1;
        true
    }

    fn truncate_entries(&mut self, n: usize) {
        self.entries = self.entries.min(n);
    }

    /// No room left up to `max_bytes` (the segment rolls).
    fn is_full(&self) -> bool {
        (self.entries * self.entry_bytes) as u64 + self.entry_bytes as u64 > self.max_bytes
    }

    /// Trims the file to its entries: called when the segment seals, under the log's
    /// lock, so it does not write them out (no `msync`): the entries stay in the page
    /// cache after the unmap, and the log's next flush fsyncs the file (outside the lock).
    fn trim(&mut self) -> io::Result<()> {
        self.remap(0)
    }

    /// A descriptor of the file (opened again: the index keeps none), to fsync it
    /// without holding the index.
    fn file_clone(&self) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(&self.path)
    }

    fn flush(&self) -> io::Result<()> {
        match &self.mmap {
            Some(m) => m.flush(),
            None => Ok(()),
        }
    }
}

/// `.index`: relative offset → byte position of the batch with that base offset.
#[derive(Debug)]
pub(crate) struct OffsetIndex(IndexFile);

impl OffsetIndex {
    pub(crate) fn open(path: &Path, capacity_bytes: Option<u64>) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex(IndexFile::open(path, 8, capacity_bytes)?))
    }

    fn get(&self, i: usize) -> (u32, u32) {
        let e = self.0.entry(i);
        (
            u32::from_be_bytes(e[..4].try_into().unwrap()),
            u32::from_be_bytes(e[4..].try_into().unwrap()),
        )
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.entries
    }

    /// The entry with the largest offset `<= relative_offset`, or the segment's start.
    pub(crate) fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        // partition_point: number of entries with offset <= target.
        let (mut lo, mut hi) = (0, self.0.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).0 <= relative_offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            (0, 0)
        } else {
            self.get(lo - 1)
        }
    }

    pub(crate) fn append(&mut self, relative_offset: u32, position: u32) -> bool {
        debug_assert!(self.0.entries == 0 || self.get(self.0.entries - 1).0 < relative_offset);
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&relative_offset.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.0.push(&e)
    }

    /// Drops entries for offsets `>= relative_offset`.
    pub(crate) fn truncate_to(&mut self, relative_offset: u32) {
        let keep = (0..self.0.entries)
            .take_while(|&i| self.get(i).0 < relative_offset)
            .count();
        self.0.truncate_entries(keep);
    }

    pub(crate) fn clear(&mut self) {
        self.0.truncate_entries(0);
    }

    pub(crate) fn is_full(&self) -> bool {
        self.0.is_full()
    }

    /// Entries strictly increase and point inside the log: the check that decides
    /// whether a segment's index can be trusted or must be rebuilt.
    pub(crate) fn is_sane(&self, log_bytes: u64) -> bool {
        (0..self.0.entries).all(|i| {
            let (o, p) = self.get(i);
            u64::from(p) < log_bytes.max(1)
                && (i == 0 || {
                    let (po, pp) = self.get(i - 1);
                    po < o && pp < p
                })
        })
    }

    pub(crate) fn trim(&mut self) -> io::Result<()> {
        self.0.trim()
    }
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    /// A descriptor to fsync the file with (outside the log's lock); on Linux that
    /// writes the pages stored through the map too.
    pub(crate) fn file_clone(&self) -> io::Result<File> {
        self.0.file_clone()
    }
    pub(crate) fn extend_to(&mut self, capacity_bytes: u64) -> io::Result<()> {
        self.0.extend_to(capacity_bytes)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0.path
    }
}

/// `.timeindex`: timestamp → relative offset of the first batch at or after which the
/// segment's records reach that timestamp.
#[derive(Debug)]
pub(crate) struct TimeIndex(IndexFile);

impl TimeIndex {
    pub(crate) fn open(path: &Path, capacity_bytes: Option<u64>) -> io::Result<TimeIndex> {
        Ok(TimeIndex(IndexFile::open(path, 12, capacity_bytes)?))
    }

    fn get(&self, i: usize) -> (i64, u32) {
        let e = self.0.entry(i);
        (
            i64::from_be_bytes(e[..8].try_into().unwrap()),
            u32::from_be_bytes(e[8..].try_into().unwrap()),
        )
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        (self.0.entries > 0).then(|| self.get(self.0.entries - 1))
    }

    /// Relative offset of the last entry with timestamp `<= timestamp`, or 0.
    pub(crate) fn lookup(&self, timestamp: i64) -> u32 {
        let (mut lo, mut hi) = (0, self.0.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).0 <= timestamp {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            0
        } else {
            self.get(lo - 1).1
        }
    }

    /// Appends unless the timestamp does not grow. `false` only if the file is full.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) -> bool {
        if let Some((ts, off)) = self.last() {
            if timestamp <= ts || relative_offset < off {
                return true;
            }
        }
        let mut e = [0u8; 12];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&relative_offset.to_be_bytes());
        self.0.push(&e)
    }

    pub(crate) fn truncate_to(&mut self, relative_offset: u32) {
        let keep = (0..self.0.entries)
            .take_while(|&i| self.get(i).1 < relative_offset)
            .count();
        self.0.truncate_entries(keep);
    }

    pub(crate) fn clear(&mut self) {
        self.0.truncate_entries(0);
    }

    pub(crate) fn is_full(&self) -> bool {
        self.0.is_full()
    }

    pub(crate) fn is_sane(&self, max_relative_offset: u32) -> bool {
        (0..self.0.entries).all(|i| {
            let (t, o) = self.get(i);
            o <= max_relative_offset
                && (i == 0 || {
                    let (pt, po) = self.get(i - 1);
                    pt < t && po <= o
                })
        })
    }

    pub(crate) fn trim(&mut self) -> io::Result<()> {
        self.0.trim()
    }
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    /// A descriptor to fsync the file with (outside the log's lock); on Linux that
    /// writes the pages stored through the map too.
    pub(crate) fn file_clone(&self) -> io::Result<File> {
        self.0.file_clone()
    }
    pub(crate) fn extend_to(&mut self, capacity_bytes: u64) -> io::Result<()> {
        self.0.extend_to(capacity_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks the file really holds on disk (not its apparent length).
    fn disk_bytes(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn an_appendable_index_reserves_a_page_and_grows_to_its_capacity() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("0.index");
        let cap = 10 * 1024 * 1024;
        let mut idx = OffsetIndex::open(&path, Some(cap)).unwrap();
        assert!(
            disk_bytes(&path) <= 8192,
            "{} bytes reserved",
            disk_bytes(&path)
        );
        assert!(!idx.is_full());
        for i in 1..=5000u32 {
            assert!(idx.append(i, i * 10), "entry {i}");
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            (5000 * 8..=2 * 5000 * 8 + 4096).contains(&len),
            "{len} bytes for 5000 entries"
        );
        assert_eq!(idx.lookup(2500), (2500, 25000));
        // Full only at the configured capacity.
        let small = d.path().join("1.index");
        let mut idx = OffsetIndex::open(&small, Some(80)).unwrap();
        for i in 1..=10u32 {
            assert!(!idx.is_full());
            assert!(idx.append(i, i));
        }
        assert!(idx.is_full());
        assert!(!idx.append(11, 11));
    }

    #[test]
    fn offset_index_lookup_finds_floor_entry() {
        let d = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&d.path().join("0.index"), Some(80)).unwrap();
        assert_eq!(idx.lookup(5), (0, 0));
        for (o, p) in [(10, 100), (20, 200), (30, 300)] {
            assert!(idx.append(o, p));
        }
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 100));
        assert_eq!(idx.lookup(25), (20, 200));
        assert_eq!(idx.lookup(u32::MAX), (30, 300));
        idx.truncate_to(20);
        assert_eq!(idx.len(), 1);
        assert!(idx.is_sane(101));
        assert!(
            !idx.is_sane(100),
            "entry pointing at the log's end is not sane"
        );
    }

    #[test]
    fn full_index_refuses_and_trim_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.index");
        let mut idx = OffsetIndex::open(&p, Some(20)).unwrap(); // room for 2 entries
        assert!(idx.append(1, 10) && idx.append(2, 20));
        assert!(idx.is_full());
        assert!(!idx.append(3, 30));
        idx.trim().unwrap();
        drop(idx);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
        let idx = OffsetIndex::open(&p, None).unwrap();
        assert_eq!((idx.len(), idx.lookup(9)), (2, (2, 20)));
    }

    #[test]
    fn zero_filled_preallocation_is_not_sane() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.index");
        let mut idx = OffsetIndex::open(&p, Some(800)).unwrap();
        idx.append(3, 30);
        drop(idx);
        // A crash leaves the preallocated zero tail behind.
        let idx = OffsetIndex::open(&p, None).unwrap();
        assert_eq!(idx.len(), 100);
        assert!(!idx.is_sane(1000));
    }

    #[test]
    fn time_index_only_grows() {
        let d = tempfile::tempdir().unwrap();
        let mut t = TimeIndex::open(&d.path().join("0.timeindex"), Some(120)).unwrap();
        assert!(t.maybe_append(100, 0));
        assert!(t.maybe_append(90, 5)); // older timestamp: skipped
        assert!(t.maybe_append(200, 10));
        assert_eq!(t.last(), Some((200, 10)));
        assert_eq!((t.lookup(50), t.lookup(150), t.lookup(500)), (0, 0, 10));
        t.truncate_to(10);
        assert_eq!(t.last(), Some((100, 0)));
        assert!(t.is_sane(10));
    }
}
