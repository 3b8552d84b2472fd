//! The table's rows: N shards by key hash, each an append-only byte arena plus an
//! open-addressing index of arena offsets. About 1.1–1.2× the raw key+value bytes
//! per row, where a `HashMap<Bytes, Bytes>` costs ~2× (two `Bytes` headers, two heap
//! blocks and the map's slot per row).
//!
//! Arena entry at offset `o` (offsets are `u32`, so a shard holds at most 4 GiB):
//!
//! ```text
//! varint key_len | varint val_cap | val_len (padded varint, as wide as val_cap's) | key | value bytes, val_cap reserved
//! ```
//!
//! `val_len` has the width of `val_cap`, so an update that fits the reserved capacity
//! rewrites the value and its length in place without moving the entry. An update
//! that does not fit appends a new entry (with 1/8 slack) and the old one becomes
//! garbage; a delete leaves garbage too. When waste — garbage plus capacity reserved
//! beyond the live values — exceeds 15% of a shard's arena, the shard is compacted
//! (live entries copied tight to a fresh arena, offsets fixed in the index). With
//! arenas growing by an eighth, that bounds a shard at ~1.3× its tight entries.
//!
//! Invariants: every index slot is the offset of a live entry whose key hashes to the
//! slot's hash; `garbage_bytes + live entry bytes == arena.len()`; `slack_bytes` sums
//! the live entries' unused capacity; `rows`,
//! `key_bytes`, `value_bytes` sum the live entries.
//!
//! Locking is the caller's: [`Store`] hands out the shards' `RwLock`s; the applier
//! write-locks the shards an apply unit touches in index order, readers read-lock one
//! shard (get) or all in index order (snapshot).
//!
//! The fence: while a large unit is applied in chunks, a shard it has touched carries an
//! [`Undo`] overlay (`undo.rs`) with the values from before the unit, and every read
//! method here (`get`, `for_each`, `rows`, the totals) answers as if the unit had not
//! begun; [`Shard::lift_fence`] makes it visible. Writes (`apply`, `apply_fenced`) and
//! the arena's own counters always see the arena as it is.

use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::HashTable;
use parking_lot::RwLock;

use super::undo::Undo;

/// Largest arena a shard may hold (offsets are u32).
const ARENA_BYTES_MAX: usize = u32::MAX as usize;
/// Compaction starts when waste (dead entries plus capacity reserved beyond live
/// values) exceeds this percentage of the arena …
const WASTE_PERCENT: usize = 15;
/// … and is at least this large, so tiny shards are not compacted on every delete.
const WASTE_BYTES_MIN: usize = 16 * 1024;
/// Smallest arena growth step.
const GROW_BYTES_MIN: usize = 4096;

/// The arena would pass 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a table shard would exceed 4 GiB; open the table with more shards")]
pub(crate) struct ShardFull;

/// Every shard of one topic's table.
pub(crate) struct Store {
    shards: Box<[RwLock<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
    /// log2 of the shard count.
    shard_bits: u32,
}

impl Store {
    /// `shards` is rounded up to a power of two; `rows_hint` and `bytes_hint` (key +
    /// value bytes) pre-size the indexes and arenas.
    pub(crate) fn new(shards: usize, rows_hint: usize, bytes_hint: usize) -> Store {
        let n = shards.clamp(1, 1024).next_power_of_two();
        let shards = (0..n)
            .map(|_| RwLock::new(Shard::with_capacity(rows_hint / n, bytes_hint / n)))
            .collect();
        Store {
            shards,
            hasher: Default::default(),
            shard_bits: n.trailing_zeros(),
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard for a hash. Uses bits 32.. so that neither the index's bucket bits
    /// (low) nor its tag bits (top 7) are constant within a shard.
    pub(crate) fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) as usize) & ((1usize << self.shard_bits) - 1)
    }

    pub(crate) fn shards(&self) -> &[RwLock<Shard>] {
        &self.shards
    }

    pub(crate) fn hasher(&self) -> &hashbrown::DefaultHashBuilder {
        &self.hasher
    }

    /// A copy of `key`'s value as readers may see it (from before a fenced unit): one
    /// shard read lock, held for the lookup and copy.
    /// `read_recursive` does not queue behind a writer that is only waiting: while a
    /// snapshot holds every shard's read lock (hundreds of ms for millions of rows)
    /// the applier waits for it, and point reads must not wait behind the applier.
    /// The applier still gets in: these holds last nanoseconds.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Bytes> {
        let hash = self.hash(key);
        let shard = self.shards[self.shard_of(hash)].read_recursive();
        shard.get(hash, key).map(Bytes::copy_from_slice)
    }

    /// Sums over every shard (not one consistent instant).
    pub(crate) fn totals(&self) -> ShardTotals {
        let mut t = ShardTotals::default();
        for s in self.shards.iter() {
            let s = s.read_recursive();
            let (rows, key_bytes, value_bytes) = s.visible_totals();
            t.rows += rows;
            t.key_bytes += key_bytes;
            t.value_bytes += value_bytes;
            t.memory_bytes += s.memory_bytes();
        }
        t
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardTotals {
    pub rows: usize,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub memory_bytes: usize,
}

/// One shard's arena and index.
#[derive(Default)]
pub(crate) struct Shard {
    arena: Vec<u8>,
    /// Invariant: each slot is the offset of a live entry in `arena`.
    index: HashTable<u32>,
    /// Invariant: bytes of dead entries; `garbage_bytes <= arena.len()`.
    garbage_bytes: usize,
    /// Invariant: sum of `val_cap - val_len` over live entries (reserved, unused).
    slack_bytes: usize,
    rows: usize,
    key_bytes: usize,
    value_bytes: usize,
    /// Set while a large unit is applied in chunks: the values from before it of every
    /// key it touched here, which readers see instead of the arena's.
    /// Invariant: `None` whenever no unit is between its first chunk and its flip.
    fence: Option<Box<Undo>>,
}

/// A decoded entry header.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where `val_len` is written (`width` bytes).
    len_at: usize,
    width: usize,
    key_at: usize,
    key_len: usize,
    val_cap: usize,
    val_len: usize,
}

impl Entry {
    fn val_at(&self) -> usize {
        self.key_at + self.key_len
    }
    #[cfg(test)]
    fn end(&self) -> usize {
        self.val_at() + self.val_cap
    }
}

pub(super) fn varint_width(v: usize) -> usize {
    let mut w = 1;
    let mut v = v >> 7;
    while v != 0 {
        w += 1;
        v >>= 7;
    }
    w
}

/// Writes `v` as a LEB128 varint of exactly `width` bytes (padded with continuation
/// bytes), which decodes like any varint.
pub(super) fn put_varint(buf: &mut [u8], v: usize, width: usize) {
    let mut v = v;
    for (i, b) in buf[..width].iter_mut().enumerate() {
        let more = i + 1 < width;
        *b = (v & 0x7f) as u8 | if more { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// Reads a varint our own code wrote (so well formed): value and width.
pub(super) fn get_varint(buf: &[u8], at: usize) -> (usize, usize) {
    let mut v = 0usize;
    let mut shift = 0;
    let mut i = at;
    loop {
        let b = buf[i];
        v |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            return (v, i - at);
        }
        shift += 7;
    }
}

fn entry_at(arena: &[u8], at: usize) -> Entry {
    let (key_len, kw) = get_varint(arena, at);
    let (val_cap, width) = get_varint(arena, at + kw);
    let len_at = at + kw + width;
    let (val_len, _) = get_varint(arena, len_at);
    Entry {
        len_at,
        width,
        key_at: len_at + width,
        key_len,
        val_cap,
        val_len,
    }
}

fn key_of(arena: &[u8], at: u32) -> &[u8] {
    let e = entry_at(arena, at as usize);
    &arena[e.key_at..e.key_at + e.key_len]
}

/// Appends an entry for `key` and `value` with `val_cap >= value.len()` reserved.
fn encode_entry(buf: &mut Vec<u8>, key: &[u8], value: &[u8], val_cap: usize) {
    let at = buf.len();
    let kw = varint_width(key.len());
    let w = varint_width(val_cap);
    buf.resize(at + kw + 2 * w, 0);
    put_varint(&mut buf[at..], key.len(), kw);
    put_varint(&mut buf[at + kw..], val_cap, w);
    put_varint(&mut buf[at + kw + w..], value.len(), w);
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    buf.resize(at + entry_bytes(key.len(), val_cap), 0);
}

fn entry_bytes(key_len: usize, val_cap: usize) -> usize {
    varint_width(key_len) + 2 * varint_width(val_cap) + key_len + val_cap
}

impl Shard {
    fn with_capacity(rows: usize, bytes: usize) -> Shard {
        Shard {
            arena: Vec::with_capacity(bytes + bytes / 16),
            index: HashTable::with_capacity(rows),
            ..Default::default()
        }
    }

    /// Rows as readers see them (before a fenced unit).
    pub(crate) fn rows(&self) -> usize {
        self.visible_totals().0
    }

    /// (rows, key bytes, value bytes) as readers see them.
    fn visible_totals(&self) -> (usize, usize, usize) {
        match &self.fence {
            Some(f) => (f.rows, f.key_bytes, f.value_bytes),
            None => (self.rows, self.key_bytes, self.value_bytes),
        }
    }

    /// Arena capacity plus the index's allocation, plus a fence's overlay.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.arena.capacity()
            + self.index.allocation_size()
            + self.fence.as_ref().map_or(0, |f| f.memory_bytes())
    }

    /// Whether a large unit is being applied here (readers see the values before it).
    pub(crate) fn fenced(&self) -> bool {
        self.fence.is_some()
    }

    /// Puts the fence up before a large unit's first write to this shard: from now on
    /// readers see the shard as it is now. `keys_hint` (the unit's records in this
    /// shard, an upper bound on the keys it touches) sizes the overlay up front, with
    /// the shard's mean row size for the old values.
    pub(crate) fn raise_fence(&mut self, hasher: &hashbrown::DefaultHashBuilder, keys_hint: usize) {
        debug_assert!(self.fence.is_none(), "a fence is already up");
        let keys = keys_hint.min(self.rows);
        let mean_row = (self.key_bytes + self.value_bytes)
            .checked_div(self.rows)
            .unwrap_or(0);
        self.fence = Some(Box::new(Undo::new(
            *hasher,
            (self.rows, self.key_bytes, self.value_bytes),
            keys_hint,
            keys * (mean_row + 4),
        )));
    }

    /// [`Shard::apply`] behind the fence (raised first if it is not): the key's value
    /// before the unit is remembered the first time the unit touches it, so readers go
    /// on seeing it until [`Shard::lift_fence`].
    pub(crate) fn apply_fenced(
        &mut self,
        hasher: &hashbrown::DefaultHashBuilder,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        old: Option<&mut Option<Bytes>>,
    ) -> Result<(), ShardFull> {
        if self.fence.is_none() {
            self.raise_fence(hasher, 0);
        }
        let found = self.find(hash, key);
        let fence = self.fence.as_deref_mut().expect("raised above");
        if !fence.contains(hash, key) {
            let before = found.map(|e| &self.arena[e.val_at()..e.val_at() + e.val_len]);
            fence.record(hash, key, before)?;
        }
        self.apply_found(hasher, hash, key, found, value, old)
    }

    /// Takes the fence down: readers see the arena (the whole unit) from now on. The
    /// overlay is returned so the caller can free it after unlocking.
    pub(crate) fn lift_fence(&mut self) -> Option<Box<Undo>> {
        self.fence.take()
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<Entry> {
        let arena = &self.arena;
        self.index
            .find(hash, |&o| key_of(arena, o) == key)
            .map(|&o| entry_at(arena, o as usize))
    }

    /// `key`'s value as readers see it: from before a fenced unit, if one touched it.
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        if let Some(before) = self.fence.as_ref().and_then(|f| f.get(hash, key)) {
            return before;
        }
        self.find(hash, key)
            .map(|e| &self.arena[e.val_at()..e.val_at() + e.val_len])
    }

    /// Every (key, value) readers see, in no particular order: while fenced, the arena's
    /// rows the unit has not touched, then the touched ones as they were before it.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let fence = self.fence.as_deref().filter(|u| u.len() > 0);
        for &o in self.index.iter() {
            let e = entry_at(&self.arena, o as usize);
            let key = &self.arena[e.key_at..e.key_at + e.key_len];
            if fence.is_some_and(|u| u.contains(u.hash(key), key)) {
                continue;
            }
            f(key, &self.arena[e.val_at()..e.val_at() + e.val_len]);
        }
        if let Some(u) = fence {
            u.for_each_before(f);
        }
    }

    /// Sets `key` to `value` (`None` deletes). When `old` is given, it receives the
    /// previous value.
    pub(crate) fn apply(
        &mut self,
        hasher: &impl BuildHasher,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        old: Option<&mut Option<Bytes>>,
    ) -> Result<(), ShardFull> {
        let found = self.find(hash, key);
        self.apply_found(hasher, hash, key, found, value, old)
    }

    /// [`Shard::apply`] with `key`'s entry already looked up (`found`).
    fn apply_found(
        &mut self,
        hasher: &impl BuildHasher,
        hash: u64,
        key: &[u8],
        found: Option<Entry>,
        value: Option<&[u8]>,
        old: Option<&mut Option<Bytes>>,
    ) -> Result<(), ShardFull> {
        if let (Some(out), Some(e)) = (old, found) {
            *out = Some(Bytes::copy_from_slice(
                &self.arena[e.val_at()..e.val_at() + e.val_len],
            ));
        }
        match (found, value) {
            (None, None) => Ok(()),
            (Some(e), None) => {
                self.remove(hasher, hash, key, e);
                Ok(())
            }
            (Some(e), Some(v)) if v.len() <= e.val_cap => {
                put_varint(&mut self.arena[e.len_at..], v.len(), e.width);
                self.arena[e.val_at()..e.val_at() + v.len()].copy_from_slice(v);
                self.value_bytes = self.value_bytes + v.len() - e.val_len;
                self.slack_bytes = self.slack_bytes + e.val_len - v.len();
                if v.len() < e.val_len {
                    self.maybe_compact(hasher);
                }
                Ok(())
            }
            (Some(e), Some(v)) => {
                let cap = v.len() + v.len() / 8;
                let at = self.append(key, v, cap)?;
                let arena = &self.arena;
                // The new entry is not indexed yet, so this finds the old one's slot.
                if let Some(slot) = self.index.find_mut(hash, |&o| key_of(arena, o) == key) {
                    *slot = at;
                }
                self.garbage_bytes += entry_bytes(e.key_len, e.val_cap);
                self.slack_bytes = self.slack_bytes + (cap - v.len()) - (e.val_cap - e.val_len);
                self.value_bytes = self.value_bytes + v.len() - e.val_len;
                self.maybe_compact(hasher);
                Ok(())
            }
            (None, Some(v)) => {
                let at = self.append(key, v, v.len())?;
                let arena = &self.arena;
                self.index
                    .insert_unique(hash, at, |&o| hasher.hash_one(key_of(arena, o)));
                self.rows += 1;
                self.key_bytes += key.len();
                self.value_bytes += v.len();
                Ok(())
            }
        }
    }

    fn remove(&mut self, hasher: &impl BuildHasher, hash: u64, key: &[u8], e: Entry) {
        let arena = &self.arena;
        if let Ok(entry) = self.index.find_entry(hash, |&o| key_of(arena, o) == key) {
            entry.remove();
        }
        self.garbage_bytes += entry_bytes(e.key_len, e.val_cap);
        self.slack_bytes -= e.val_cap - e.val_len;
        self.rows -= 1;
        self.key_bytes -= e.key_len;
        self.value_bytes -= e.val_len;
        self.maybe_compact(hasher);
    }

    /// Appends an entry; returns its offset. The arena grows by an eighth at a time
    /// (not doubling), so spare capacity stays within the memory bound.
    fn append(&mut self, key: &[u8], value: &[u8], val_cap: usize) -> Result<u32, ShardFull> {
        let need = entry_bytes(key.len(), val_cap);
        let at = self.arena.len();
        if at + need > ARENA_BYTES_MAX {
            return Err(ShardFull);
        }
        if self.arena.capacity() - at < need {
            let step = (self.arena.capacity() / 8).max(GROW_BYTES_MIN).max(need);
            self.arena.reserve_exact(step);
        }
        encode_entry(&mut self.arena, key, value, val_cap);
        Ok(at as u32)
    }

    fn maybe_compact(&mut self, hasher: &impl BuildHasher) {
        let waste = self.garbage_bytes + self.slack_bytes;
        if waste >= WASTE_BYTES_MIN && waste * 100 > self.arena.len() * WASTE_PERCENT {
            self.compact(hasher);
        }
    }

    /// Copies live entries to a fresh arena, each re-encoded with no reserved
    /// capacity (the next growth reserves again), and points the index at the new
    /// offsets; then lets the index shrink if deletes left it mostly empty.
    pub(crate) fn compact(&mut self, hasher: &impl BuildHasher) {
        let live = self.arena.len() - self.garbage_bytes - self.slack_bytes;
        let mut fresh = Vec::with_capacity(live + live / 16);
        for slot in self.index.iter_mut() {
            let e = entry_at(&self.arena, *slot as usize);
            *slot = fresh.len() as u32;
            let key = &self.arena[e.key_at..e.key_at + e.key_len];
            let value = &self.arena[e.val_at()..e.val_at() + e.val_len];
            encode_entry(&mut fresh, key, value, e.val_len);
        }
        self.arena = fresh;
        self.garbage_bytes = 0;
        self.slack_bytes = 0;
        let arena = &self.arena;
        self.index
            .shrink_to(self.rows, |&o| hasher.hash_one(key_of(arena, o)));
    }

    /// Gives back spare capacity (after bootstrap, when the pre-sizing estimate was
    /// high): arena to its length plus 1/16, index to its rows.
    pub(crate) fn trim(&mut self, hasher: &impl BuildHasher) {
        let len = self.arena.len();
        if self.arena.capacity() > len + len / 8 + GROW_BYTES_MIN {
            self.arena.shrink_to(len + len / 16);
        }
        let arena = &self.arena;
        self.index
            .shrink_to(self.rows, |&o| hasher.hash_one(key_of(arena, o)));
    }

    /// Keys behind the fence (0 when none is up).
    #[cfg(test)]
    pub(crate) fn fenced_keys(&self) -> usize {
        self.fence.as_ref().map_or(0, |f| f.len())
    }

    #[cfg(test)]
    fn garbage_bytes(&self) -> usize {
        self.garbage_bytes
    }

    #[cfg(test)]
    fn waste_bytes(&self) -> usize {
        self.garbage_bytes + self.slack_bytes
    }

    /// Recomputes the counters from the entries; panics (tests only) on a mismatch.
    #[cfg(test)]
    fn check_invariants(&self) {
        let (mut live, mut slack, mut keys, mut values) = (0, 0, 0, 0);
        for &o in self.index.iter() {
            let e = entry_at(&self.arena, o as usize);
            live += e.end() - o as usize;
            slack += e.val_cap - e.val_len;
            keys += e.key_len;
            values += e.val_len;
        }
        assert_eq!(self.garbage_bytes + live, self.arena.len(), "garbage");
        assert_eq!(self.slack_bytes, slack, "slack");
        assert_eq!((self.key_bytes, self.value_bytes), (keys, values), "sums");
        assert_eq!(self.rows, self.index.len(), "rows");
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
