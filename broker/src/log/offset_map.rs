//! The cleaner's key → latest offset map, in a fixed memory budget
//! (`log.cleaner.dedupe.buffer.size`).
//!
//! Keys are not stored: each slot holds a 128-bit hash of the key and the offset, 24
//! bytes, in one flat open-addressed table. Two keys that hash alike would make the
//! cleaner drop the older one's record as superseded; with two independent keyed
//! SipHash halves the chance is about n²/2¹²⁹ per pass (for 10⁸ keys, ~10⁻²³), the
//! same trade Kafka makes with MD5. The hash keys are random per map, so no one can
//! choose colliding keys in advance.
//!
//! Invariant: `len <= max_entries`, and `max_entries` keeps the load at or below 90%
//! so probes stay short; when it is reached the caller stops and cleans what the map
//! covers (several passes for key sets larger than the budget).

use std::hash::{BuildHasher, Hasher, RandomState};

const SLOT_BYTES: usize = 24;
const MAX_LOAD: f64 = 0.9;

pub(crate) struct OffsetMap {
    /// `slots * SLOT_BYTES` bytes; a slot whose offset field is 0 is empty, so offsets
    /// are stored plus one.
    table: Vec<u8>,
    slots: usize,
    len: usize,
    max_entries: usize,
    hash_a: RandomState,
    hash_b: RandomState,
}

impl OffsetMap {
    /// A map using at most `budget_bytes` (at least a few slots).
    pub(crate) fn with_budget(budget_bytes: usize) -> OffsetMap {
        let slots = (budget_bytes / SLOT_BYTES).max(4);
        OffsetMap {
            table: vec![0; slots * SLOT_BYTES],
            slots,
            len: 0,
            max_entries: ((slots as f64 * MAX_LOAD) as usize).max(1),
            hash_a: RandomState::new(),
            hash_b: RandomState::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// How many more keys fit.
    pub(crate) fn remaining(&self) -> usize {
        self.max_entries - self.len
    }
    /// No new key fits.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.max_entries
    }
    fn digest(&self, key: &[u8]) -> [u8; 16] {
        let mut a = self.hash_a.build_hasher();
        a.write(key);
        let mut b = self.hash_b.build_hasher();
        b.write(key);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&a.finish().to_le_bytes());
        d[8..].copy_from_slice(&b.finish().to_le_bytes());
        d
    }

    /// The slot holding `digest`, or the empty slot where it would go.
    fn probe(&self, digest: &[u8; 16]) -> (usize, bool) {
        let start = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) as usize;
        let mut i = start % self.slots;
        loop {
            let slot = &self.table[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
            if slot[16..] == [0; 8] {
                return (i, false);
            }
            if slot[..16] == digest[..] {
                return (i, true);
            }
            i = (i + 1) % self.slots;
        }
    }

    /// Records `offset` as the latest for `key`. Returns false, changing nothing, when
    /// the key is new and the map is full.
    pub(crate) fn put(&mut self, key: &[u8], offset: u64) -> bool {
        let d = self.digest(key);
        let (i, found) = self.probe(&d);
        if !found {
            if self.is_full() {
                return false;
            }
            self.len += 1;
        }
        let slot = &mut self.table[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
        slot[..16].copy_from_slice(&d);
        slot[16..].copy_from_slice(&(offset + 1).to_le_bytes());
        true
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        let d = self.digest(key);
        let (i, found) = self.probe(&d);
        found.then(|| {
            let slot = &self.table[i * SLOT_BYTES + 16..(i + 1) * SLOT_BYTES];
            u64::from_le_bytes(slot.try_into().expect("8 bytes")) - 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn latest_offset_wins_and_the_budget_is_respected() {
        let mut m = OffsetMap::with_budget(24 * 100);
        let mut model = HashMap::new();
        for i in 0..200u64 {
            let key = format!("k{}", i % 50);
            assert!(m.put(key.as_bytes(), i));
            model.insert(key, i);
        }
        assert_eq!(m.len(), 50);
        for (k, v) in &model {
            assert_eq!(m.get(k.as_bytes()), Some(*v));
        }
        assert_eq!(m.get(b"absent"), None);
        // 100 slots hold 90 keys; the 91st new key is refused, known keys still update.
        for i in 50..90 {
            assert!(m.put(format!("k{i}").as_bytes(), 1000 + i));
        }
        assert!(m.is_full());
        assert!(!m.put(b"one too many", 5));
        assert!(m.put(b"k3", 7777));
        assert_eq!(m.get(b"k3"), Some(7777));
        assert_eq!(m.get(b"one too many"), None);
    }

    #[test]
    fn offset_zero_is_a_real_offset() {
        let mut m = OffsetMap::with_budget(1024);
        assert!(m.put(b"a", 0));
        assert_eq!(m.get(b"a"), Some(0));
    }
}
