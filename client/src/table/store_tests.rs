use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn set(store: &Store, key: &[u8], value: Option<&[u8]>) -> Option<Bytes> {
    let hash = store.hash(key);
    let mut shard = store.shards()[store.shard_of(hash)].write();
    let mut old = None;
    shard
        .apply(store.hasher(), hash, key, value, Some(&mut old))
        .unwrap();
    old
}

fn shard_of_key<'a>(store: &'a Store, key: &[u8]) -> &'a RwLock<Shard> {
    &store.shards()[store.shard_of(store.hash(key))]
}

#[test]
fn varints_pad_to_the_width_asked_and_decode_back() {
    for (v, w) in [
        (0, 1),
        (5, 1),
        (127, 1),
        (5, 2),
        (128, 2),
        (300, 3),
        (1 << 20, 3),
    ] {
        let mut buf = [0u8; 8];
        put_varint(&mut buf, v, w);
        assert_eq!(get_varint(&buf, 0), (v, w), "{v} in {w} bytes");
    }
    assert_eq!(varint_width(127), 1);
    assert_eq!(varint_width(128), 2);
    assert_eq!(varint_width(16383), 2);
    assert_eq!(varint_width(16384), 3);
}

#[test]
fn insert_get_update_in_place_grow_and_delete() {
    let store = Store::new(4, 0, 0);
    assert_eq!(set(&store, b"k", Some(b"hello")), None);
    assert_eq!(store.get(b"k").as_deref(), Some(&b"hello"[..]));
    let arena_len = shard_of_key(&store, b"k").read().arena.len();

    // Shorter and equal sizes fit the reserved capacity: no new entry.
    assert_eq!(
        set(&store, b"k", Some(b"hi")).as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        set(&store, b"k", Some(b"world")).as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(store.get(b"k").as_deref(), Some(&b"world"[..]));
    assert_eq!(shard_of_key(&store, b"k").read().arena.len(), arena_len);
    assert_eq!(shard_of_key(&store, b"k").read().garbage_bytes(), 0);

    // Larger: a new entry, the old one garbage.
    let big = vec![7u8; 300];
    set(&store, b"k", Some(&big));
    assert_eq!(store.get(b"k").as_deref(), Some(&big[..]));
    assert!(shard_of_key(&store, b"k").read().garbage_bytes() > 0);
    // The grown entry has slack: a slightly larger value still fits in place.
    let len = shard_of_key(&store, b"k").read().arena.len();
    set(&store, b"k", Some(&[1u8; 320]));
    assert_eq!(shard_of_key(&store, b"k").read().arena.len(), len);

    // Empty is a value; None deletes.
    set(&store, b"k", Some(b""));
    assert_eq!(store.get(b"k").as_deref(), Some(&b""[..]));
    let t = store.totals();
    assert_eq!((t.rows, t.key_bytes, t.value_bytes), (1, 1, 0));
    assert_eq!(set(&store, b"k", None).as_deref(), Some(&b""[..]));
    assert_eq!(store.get(b"k"), None);
    assert_eq!(set(&store, b"absent", None), None);
    let t = store.totals();
    assert_eq!((t.rows, t.key_bytes, t.value_bytes), (0, 0, 0));
}

#[test]
fn compaction_reclaims_garbage_and_keeps_every_row() {
    let store = Store::new(1, 0, 0);
    for i in 0..2000u32 {
        set(&store, &i.to_be_bytes(), Some(&[1u8; 50]));
    }
    // Every row grows twice (garbage), half are deleted (garbage).
    for round in 0..2 {
        for i in 0..2000u32 {
            set(
                &store,
                &i.to_be_bytes(),
                Some(&vec![round as u8; 100 * (round + 2)]),
            );
        }
    }
    for i in (0..2000u32).step_by(2) {
        set(&store, &i.to_be_bytes(), None);
    }
    let shard = store.shards()[0].read();
    // Compaction ran (waste stays under 15% of the arena, or under the minimum).
    assert!(
        shard.waste_bytes() * 100 <= shard.arena.len() * WASTE_PERCENT
            || shard.waste_bytes() < WASTE_BYTES_MIN,
        "waste {} of {}",
        shard.waste_bytes(),
        shard.arena.len()
    );
    drop(shard);
    for i in 0..2000u32 {
        let want = (i % 2 == 1).then(|| vec![1u8; 300]);
        assert_eq!(
            store.get(&i.to_be_bytes()).map(|b| b.to_vec()),
            want,
            "key {i}"
        );
    }
    assert_eq!(store.totals().rows, 1000);
}

#[test]
fn memory_stays_under_one_and_a_half_times_the_raw_bytes() {
    // 100 k rows of ~100 B values and ~12 B keys, grown without a size hint (the worst
    // case: arenas and indexes grow as they go), then after a trim.
    let store = Store::new(64, 0, 0);
    for i in 0..100_000u64 {
        let key = format!("user:{i:07}");
        let value = vec![b'v'; 90 + (i % 21) as usize];
        set(&store, key.as_bytes(), Some(&value));
    }
    let t = store.totals();
    let raw = t.key_bytes + t.value_bytes;
    let ratio = t.memory_bytes as f64 / raw as f64;
    assert_eq!(t.rows, 100_000);
    assert!(
        ratio <= 1.5,
        "memory {} for {raw} raw bytes: {ratio:.3}x",
        t.memory_bytes
    );
    for s in store.shards() {
        s.write().trim(store.hasher());
    }
    let trimmed = store.totals().memory_bytes as f64 / raw as f64;
    assert!(trimmed <= 1.5, "after trim {trimmed:.3}x");
}

#[test]
fn memory_stays_bounded_under_updates_that_grow_and_shrink_values() {
    // The worst steady state: values change size all the time, so entries move (1/8
    // slack each) and garbage builds up to the compaction threshold.
    let store = Store::new(64, 0, 0);
    let mut x: u64 = 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..100_000u64 {
        set(
            &store,
            format!("user:{i:07}").as_bytes(),
            Some(&[b'v'; 100]),
        );
    }
    let mut worst: f64 = 0.0;
    for round in 0..5 {
        for i in 0..100_000u64 {
            let len = 80 + (next() % 41) as usize; // 80..=120 bytes
            set(
                &store,
                format!("user:{i:07}").as_bytes(),
                Some(&vec![round as u8; len]),
            );
        }
        let t = store.totals();
        worst = worst.max(t.memory_bytes as f64 / (t.key_bytes + t.value_bytes) as f64);
        for s in store.shards() {
            s.read().check_invariants();
        }
    }
    assert!(worst <= 1.5, "memory reached {worst:.3}x raw under updates");
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, Vec<u8>),
    Delete(u8),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(k, v)| Op::Set(k, v)),
        3 => any::<u8>().prop_map(Op::Delete),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    /// The store against a HashMap: every op's old value, and the whole content and
    /// counters at the end.
    #[test]
    fn store_matches_a_hashmap(ops in proptest::collection::vec(op(), 1..400)) {
        let store = Store::new(2, 0, 0);
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                Op::Set(k, v) => {
                    let key = vec![k; 1 + (k % 5) as usize];
                    let old = set(&store, &key, Some(&v));
                    prop_assert_eq!(old.map(|b| b.to_vec()), model.insert(key, v));
                }
                Op::Delete(k) => {
                    let key = vec![k; 1 + (k % 5) as usize];
                    let old = set(&store, &key, None);
                    prop_assert_eq!(old.map(|b| b.to_vec()), model.remove(&key));
                }
                Op::Compact => {
                    for s in store.shards() {
                        s.write().compact(store.hasher());
                    }
                }
            }
        }
        for s in store.shards() {
            s.read().check_invariants();
        }
        let mut all = HashMap::new();
        for s in store.shards() {
            s.read().for_each(|k, v| { all.insert(k.to_vec(), v.to_vec()); });
        }
        prop_assert_eq!(&all, &model);
        let t = store.totals();
        prop_assert_eq!(t.rows, model.len());
        prop_assert_eq!(t.key_bytes, model.keys().map(Vec::len).sum::<usize>());
        prop_assert_eq!(t.value_bytes, model.values().map(Vec::len).sum::<usize>());
    }
}

/// Sets `key` behind its shard's fence (raised on first use); returns the old value.
fn set_fenced(store: &Store, key: &[u8], value: Option<&[u8]>) -> Option<Bytes> {
    let hash = store.hash(key);
    let mut shard = store.shards()[store.shard_of(hash)].write();
    let mut old = None;
    shard
        .apply_fenced(store.hasher(), hash, key, value, Some(&mut old))
        .unwrap();
    old
}

/// Every row readers see, through `for_each`.
fn visible(store: &Store) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut all = HashMap::new();
    for s in store.shards() {
        s.read().for_each(|k, v| {
            assert!(
                all.insert(k.to_vec(), v.to_vec()).is_none(),
                "a key listed twice"
            );
        });
    }
    all
}

fn lift_all(store: &Store) {
    for s in store.shards() {
        drop(s.write().lift_fence());
    }
}

#[test]
fn a_fence_shows_the_values_from_before_until_it_is_lifted() {
    let store = Store::new(1, 0, 0);
    for (k, v) in [(&b"a"[..], &b"1"[..]), (b"b", b"2"), (b"c", b"3")] {
        set(&store, k, Some(v));
    }
    let before = visible(&store);
    let before_totals = store.totals();
    let big = [7u8; 300];
    // In place, grown (a new entry), deleted, inserted, inserted then deleted, and a
    // key written twice: old values still come back to the change sets.
    assert_eq!(
        set_fenced(&store, b"a", Some(b"9")).as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        set_fenced(&store, b"b", Some(&big)).as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(set_fenced(&store, b"c", None).as_deref(), Some(&b"3"[..]));
    assert_eq!(set_fenced(&store, b"d", Some(b"4")), None);
    assert_eq!(set_fenced(&store, b"e", Some(b"5")), None);
    assert_eq!(set_fenced(&store, b"e", None).as_deref(), Some(&b"5"[..]));
    assert_eq!(
        set_fenced(&store, b"a", Some(b"11")).as_deref(),
        Some(&b"9"[..])
    );

    for (k, v) in [
        (&b"a"[..], Some(&b"1"[..])),
        (b"b", Some(b"2")),
        (b"c", Some(b"3")),
    ] {
        assert_eq!(store.get(k).as_deref(), v, "{k:?}");
    }
    assert_eq!(store.get(b"d"), None);
    assert_eq!(store.get(b"e"), None);
    assert_eq!(visible(&store), before);
    let fenced = store.totals();
    assert_eq!(
        (fenced.rows, fenced.key_bytes, fenced.value_bytes),
        (
            before_totals.rows,
            before_totals.key_bytes,
            before_totals.value_bytes
        )
    );
    assert!(
        fenced.memory_bytes > before_totals.memory_bytes,
        "the overlay is counted"
    );
    {
        let shard = store.shards()[0].read();
        shard.check_invariants();
        assert!(shard.fenced());
        assert_eq!(shard.fence.as_ref().unwrap().len(), 5, "a..e, once each");
    }

    lift_all(&store);
    assert!(!store.shards()[0].read().fenced());
    assert_eq!(store.get(b"a").as_deref(), Some(&b"11"[..]));
    assert_eq!(store.get(b"b").as_deref(), Some(&big[..]));
    assert_eq!(store.get(b"c"), None);
    assert_eq!(store.get(b"d").as_deref(), Some(&b"4"[..]));
    assert_eq!(store.get(b"e"), None);
    let t = store.totals();
    assert_eq!((t.rows, t.key_bytes, t.value_bytes), (3, 3, 2 + 300 + 1));
    store.shards()[0].read().check_invariants();
}

#[test]
fn an_overlay_sized_up_front_holds_the_old_values_and_little_else() {
    let store = Store::new(1, 0, 0);
    let rows = 10_000;
    let key = |i: usize| format!("key-{i:08}").into_bytes();
    for i in 0..rows {
        set(&store, &key(i), Some(&[b'x'; 100]));
    }
    let (hash_hint, raw) = (rows, rows * (12 + 100));
    {
        let mut shard = store.shards()[0].write();
        shard.raise_fence(store.hasher(), hash_hint);
    }
    let up_front = store.shards()[0]
        .read()
        .fence
        .as_ref()
        .unwrap()
        .memory_bytes();
    for i in 0..rows {
        set_fenced(&store, &key(i), Some(&[b'y'; 100]));
    }
    let shard = store.shards()[0].read();
    let undo = shard.fence.as_ref().unwrap();
    // Old values and keys, two one-byte varints each; nothing grew past the estimate.
    assert_eq!(undo.used_bytes(), raw + 2 * rows);
    assert_eq!(
        undo.memory_bytes(),
        up_front,
        "the overlay grew while in use"
    );
    let per_row = undo.memory_bytes() as f64 / rows as f64;
    assert!(per_row < 112.0 + 4.0 + 12.0, "{per_row} B per touched row");
}

proptest! {
    /// Rows set before a fence, then a unit's writes behind it: readers (get, for_each,
    /// totals) see the rows from before at every step, and exactly the model after the
    /// unit once the fences are lifted; old values handed back are the true ones.
    #[test]
    fn a_fenced_unit_is_invisible_until_lifted(
        before_ops in proptest::collection::vec(op(), 0..200),
        unit_ops in proptest::collection::vec(op(), 1..300),
    ) {
        let store = Store::new(4, 0, 0);
        let key_of = |k: u8| vec![k; 1 + (k % 5) as usize];
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for op in before_ops {
            match op {
                Op::Set(k, v) => { set(&store, &key_of(k), Some(&v)); model.insert(key_of(k), v); }
                Op::Delete(k) => { set(&store, &key_of(k), None); model.remove(&key_of(k)); }
                Op::Compact => {}
            }
        }
        let seen = model.clone();
        let t0 = store.totals();
        for (i, op) in unit_ops.into_iter().enumerate() {
            match op {
                Op::Set(k, v) => {
                    let old = set_fenced(&store, &key_of(k), Some(&v));
                    prop_assert_eq!(old.map(|b| b.to_vec()), model.insert(key_of(k), v));
                }
                Op::Delete(k) => {
                    let old = set_fenced(&store, &key_of(k), None);
                    prop_assert_eq!(old.map(|b| b.to_vec()), model.remove(&key_of(k)));
                }
                // Arena compaction behind the fence must not disturb the overlay.
                Op::Compact => {
                    for s in store.shards() {
                        s.write().compact(store.hasher());
                    }
                }
            }
            if i % 16 == 0 {
                prop_assert_eq!(&visible(&store), &seen);
                for k in 0..=255u8 {
                    prop_assert_eq!(store.get(&key_of(k)).map(|b| b.to_vec()), seen.get(&key_of(k)).cloned());
                }
            }
        }
        prop_assert_eq!(&visible(&store), &seen);
        let t = store.totals();
        prop_assert_eq!((t.rows, t.key_bytes, t.value_bytes), (t0.rows, t0.key_bytes, t0.value_bytes));
        for s in store.shards() {
            s.read().check_invariants();
        }
        lift_all(&store);
        prop_assert_eq!(&visible(&store), &model);
        let t = store.totals();
        prop_assert_eq!(t.rows, model.len());
        prop_assert_eq!(t.value_bytes, model.values().map(Vec::len).sum::<usize>());
    }
}
