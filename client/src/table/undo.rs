//! The fence of a large apply unit, per shard: what every key the unit has touched so
//! far held *before* the unit (its value, or "absent"). A unit with more records than
//! [`super::TableConfig::large_unit_records`] is applied in chunks, each under only its
//! own shards' write locks; between chunks readers see the arena already changed for
//! the keys done so far, so every read of a fenced shard (`get`, iteration, snapshot
//! files, row counts) answers from this overlay for those keys. The applier drops every
//! shard's overlay in one short lock round together with moving the positions, and the
//! whole unit becomes visible at once (`applier.rs`, docs/table.md "Large transactions").
//!
//! Format: an append-only byte buffer of entries, plus a `hashbrown::HashTable<u32>` of
//! their offsets (hashed with the store's hasher, so a `get` reuses its hash):
//!
//! ```text
//! varint key_len | varint before_len + 1 (0: the key was absent) | key | before value
//! ```
//!
//! Cost per touched key: its key and old value copied once (the first time the unit
//! touches it), two varints (2–4 B), and an index slot (4 B + 1 control byte, at most
//! 8/7 of them by load factor). The applier sizes both up front from the unit's record
//! count in the shard and the shard's mean row size, so neither doubles while in use.
//!
//! Invariants: every index slot is the offset of an entry whose key hashes to the
//! slot's hash; a key has at most one entry (the first touch wins: later writes of the
//! unit do not change what readers see); `rows`, `key_bytes`, `value_bytes` are the
//! shard's totals when the fence went up, which the unit's chunks do not change for
//! readers. Only the applier writes an overlay, under the shard's write lock.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::store::{get_varint, put_varint, varint_width, ShardFull};

/// One shard's overlay while a large unit is applied to it.
pub(crate) struct Undo {
    bytes: Vec<u8>,
    /// Invariant: each slot is the offset of an entry of `bytes`, one per key.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// The shard's row count when the fence went up (what readers see).
    pub(crate) rows: usize,
    pub(crate) key_bytes: usize,
    pub(crate) value_bytes: usize,
}

/// A decoded overlay entry: where its key is, and its old value's range (`None`:
/// the key was absent before the unit).
struct UndoEntry {
    key: std::ops::Range<usize>,
    before: Option<std::ops::Range<usize>>,
}

fn entry_at(bytes: &[u8], at: usize) -> UndoEntry {
    let (key_len, kw) = get_varint(bytes, at);
    let (tagged, vw) = get_varint(bytes, at + kw);
    let key_at = at + kw + vw;
    let key = key_at..key_at + key_len;
    let before = tagged.checked_sub(1).map(|len| key.end..key.end + len);
    UndoEntry { key, before }
}

impl Undo {
    /// An empty overlay over a shard holding `rows` rows of `key_bytes` + `value_bytes`;
    /// room for `keys_hint` keys of `bytes_hint` bytes in all.
    pub(crate) fn new(
        hasher: DefaultHashBuilder,
        totals: (usize, usize, usize),
        keys_hint: usize,
        bytes_hint: usize,
    ) -> Undo {
        Undo {
            bytes: Vec::with_capacity(bytes_hint),
            index: HashTable::with_capacity(keys_hint),
            hasher,
            rows: totals.0,
            key_bytes: totals.1,
            value_bytes: totals.2,
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<UndoEntry> {
        let bytes = &self.bytes;
        self.index
            .find(hash, |&o| &bytes[entry_at(bytes, o as usize).key] == key)
            .map(|&o| entry_at(bytes, o as usize))
    }

    /// What readers see for `key`: `None` when the unit has not touched it (the arena
    /// is still right), `Some(None)` when it was absent before the unit.
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        self.find(hash, key)
            .map(|e| e.before.map(|r| &self.bytes[r]))
    }

    /// Whether the unit has touched `key` in this shard.
    pub(crate) fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.find(hash, key).is_some()
    }

    /// Remembers `key`'s value before the unit. The caller checks first that no earlier
    /// record of the unit did ([`Undo::contains`]): the first one is the value before.
    pub(crate) fn record(
        &mut self,
        hash: u64,
        key: &[u8],
        before: Option<&[u8]>,
    ) -> Result<(), ShardFull> {
        debug_assert!(!self.contains(hash, key), "a key recorded twice");
        let tagged = before.map_or(0, |v| v.len() + 1);
        let (kw, vw) = (varint_width(key.len()), varint_width(tagged));
        let at = self.bytes.len();
        let need = kw + vw + key.len() + before.map_or(0, <[u8]>::len);
        if at + need > u32::MAX as usize {
            return Err(ShardFull);
        }
        self.bytes.resize(at + kw + vw, 0);
        put_varint(&mut self.bytes[at..], key.len(), kw);
        put_varint(&mut self.bytes[at + kw..], tagged, vw);
        self.bytes.extend_from_slice(key);
        if let Some(v) = before {
            self.bytes.extend_from_slice(v);
        }
        let (bytes, hasher) = (&self.bytes, &self.hasher);
        self.index.insert_unique(hash, at as u32, |&o| {
            hasher.hash_one(&bytes[entry_at(bytes, o as usize).key])
        });
        Ok(())
    }

    /// Every key that existed before the unit among those it touched, with its value
    /// then.
    pub(crate) fn for_each_before(&self, mut f: impl FnMut(&[u8], &[u8])) {
        for &o in self.index.iter() {
            let e = entry_at(&self.bytes, o as usize);
            if let Some(v) = e.before {
                f(&self.bytes[e.key], &self.bytes[v]);
            }
        }
    }

    /// Keys the unit has touched so far.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Buffer capacity plus the index's allocation.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.bytes.capacity() + self.index.allocation_size()
    }

    /// Bytes of entries written (tests: the overlay stays within its up-front size).
    #[cfg(test)]
    pub(crate) fn used_bytes(&self) -> usize {
        self.bytes.len()
    }
}
