//! Seeded simulation of incremental snapshots (the watermark algorithm of
//! [`super`]) against concurrent writes and crashes, with the connector's own
//! [`Window`] (which chunk rows survive) and [`StaleKeys`] (which keys get tombstones).
//!
//! One timeline: the database commits transactions (inserts, updates, deletes over a
//! small key space) and, for the pass, a low watermark, a `SELECT` of the next chunk at
//! a random moment after it, and a high watermark; the stream reads the WAL behind the
//! database by a random lag, as the connector's stream loop does, and the writer
//! applies each unit to a compacted topic. The topic starts out of step with the table
//! (ghost rows the table lacks, stale values, missing rows). Runs crash at random
//! points; the next run resumes the pass after its last recorded chunk (the record may
//! lag the rows by a chunk), reading the topic's keys again and the finished range's
//! keys from the table.
//!
//! Checked: whenever a unit lands at position `p`, every key written since the pass
//! began holds the table's value at `p` (no Table ever sees a row older than a change
//! it already showed); after the pass and the stream are done, the topic equals the
//! table. Switching off the window filter, the tombstones or the resumed pass's key
//! reading makes it fail (see the tests below).
//!
//! `SLUICE_CDC_SIM_SEEDS=N` runs N seeds (default 400), `SLUICE_CDC_SIM_SEED=S`
//! replays one; a failure prints its seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::Window;
use crate::position::sim::{seeds, Rng};
use crate::position::StaleKeys;

/// What the algorithm may be switched to, to check the simulation catches it.
#[derive(Clone, Copy)]
struct Rules {
    window_filter: bool,
    tombstones: bool,
    resume_keys: bool,
}

const CORRECT: Rules = Rules {
    window_filter: true,
    tombstones: true,
    resume_keys: true,
};

type Table = BTreeMap<u32, u64>;

/// A chunk read, waiting for its high watermark: (chunk, rows, its last key, last).
type Selected = (u64, Vec<(u32, u64)>, Option<u32>, bool);

/// A WAL entry, in commit order.
enum Wal {
    Txn(Vec<(u32, Option<u64>)>),
    Low(u64),
    High(u64),
}

fn key(k: u32) -> Bytes {
    Bytes::from(format!("{{\"id\":{k}}}"))
}

const TOPIC: &str = "t";

fn run(seed: u64, rules: Rules) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let keys = 8 + rng.below(40) as u32;
    let chunk = 1 + rng.below(6) as usize;
    // The table, and the topic out of step with it.
    let mut table: Table = BTreeMap::new();
    let mut topic: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    for k in 0..keys {
        let in_table = rng.chance(70);
        if in_table {
            table.insert(k, rng.below(1000));
        }
        match rng.below(4) {
            0 => {}
            1 => {
                topic.insert(k, Some(rng.below(1000)));
            }
            _ => {
                if let Some(v) = table.get(&k) {
                    topic.insert(k, Some(*v));
                }
            }
        }
    }
    // The table after each WAL entry (index = position).
    let mut history: Vec<Table> = vec![table.clone()];
    let mut wal: Vec<Wal> = Vec::new();
    // The stream has applied WAL entries below `read`.
    let mut read = 0usize;
    // The pass: the last key recorded, and the run's own state.
    let mut recorded_after: Option<u32> = None;
    let mut done = false;
    let mut chunk_no = 0u64;
    // Run state (lost at a crash).
    struct RunState {
        stale: StaleKeys,
        after: Option<u32>,
        windows: BTreeMap<u64, Window>,
        /// Chunks read, waiting for their high watermark.
        selected: VecDeque<Selected>,
        /// The driver: waiting to select (after its low watermark) or idle.
        low_at: Option<u64>,
        waiting_high: bool,
    }
    let mut written: BTreeSet<u32> = BTreeSet::new();
    let mut runs = 0;
    while !done {
        runs += 1;
        if runs > 2000 {
            return Err("the pass never finished".into());
        }
        // A run starts: the writer reads the topic's keys; a resumed pass reads the
        // finished range's keys from the table (they are no tombstone candidates).
        let mut st = RunState {
            stale: StaleKeys::default(),
            after: recorded_after,
            windows: BTreeMap::new(),
            selected: VecDeque::new(),
            low_at: None,
            waiting_high: false,
        };
        let name: Arc<str> = TOPIC.into();
        for (k, v) in &topic {
            st.stale.observe(&name, key(*k), v.is_some());
        }
        if let (Some(upto), true) = (recorded_after, rules.resume_keys) {
            for k in table.keys().filter(|k| **k <= upto) {
                st.stale.copied(TOPIC, &key(*k));
            }
        }
        // The stream replays from what was confirmed: everything applied so far stays
        // applied (the topic skips what it holds), so resume at `read`.
        let crash_after = 5 + rng.below(60);
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > crash_after && rng.chance(30) {
                break; // crash: this run's state is lost
            }
            match rng.below(10) {
                // The database commits a transaction.
                0..=1 => {
                    let mut changes = Vec::new();
                    for _ in 0..1 + rng.below(3) {
                        let k = rng.below(keys as u64) as u32;
                        let v = if rng.chance(25) {
                            table.remove(&k);
                            None
                        } else {
                            let v = 1000 + rng.below(100_000);
                            table.insert(k, v);
                            Some(v)
                        };
                        changes.push((k, v));
                    }
                    wal.push(Wal::Txn(changes));
                    history.push(table.clone());
                }
                // The driver: low watermark, select, high watermark, one chunk at a time.
                2..=4 => {
                    if st.waiting_high {
                        continue;
                    }
                    match st.low_at {
                        None => {
                            chunk_no += 1;
                            st.low_at = Some(chunk_no);
                            wal.push(Wal::Low(chunk_no));
                            history.push(table.clone());
                        }
                        Some(n) if !st.selected.iter().any(|c| c.0 == n) => {
                            // The SELECT, at a moment of its own: transactions may
                            // commit between it and either watermark.
                            let rows: Vec<(u32, u64)> = table
                                .range(st.after.map_or(0, |a| a + 1)..)
                                .take(chunk)
                                .map(|(k, v)| (*k, *v))
                                .collect();
                            let last = rows.len() < chunk;
                            let next = rows.last().map(|r| r.0).or(st.after);
                            st.selected.push_back((n, rows, next, last));
                            st.after = next;
                        }
                        Some(n) => {
                            st.low_at = None;
                            st.waiting_high = true;
                            wal.push(Wal::High(n));
                            history.push(table.clone());
                        }
                    }
                }
                // The stream reads the next WAL entry and the writer applies it.
                _ => {
                    if read >= wal.len() {
                        continue;
                    }
                    let pos = read + 1;
                    match &wal[read] {
                        Wal::Txn(changes) => {
                            for (k, v) in changes {
                                for w in st.windows.values_mut() {
                                    w.touched(key(*k).to_vec());
                                }
                                topic.insert(*k, *v);
                                st.stale.copied(TOPIC, &key(*k));
                                written.insert(*k);
                            }
                        }
                        Wal::Low(n) => {
                            st.windows.insert(*n, Window::default());
                        }
                        Wal::High(n) => {
                            let window = st.windows.remove(n);
                            // A chunk of an earlier run (its watermarks read again
                            // after a crash) belongs to no chunk of this one.
                            let mine = st.selected.front().is_some_and(|c| c.0 == *n);
                            if mine {
                                let (_, rows, next, last) =
                                    st.selected.pop_front().expect("checked");
                                for (k, v) in rows {
                                    let keep = !rules.window_filter
                                        || window.as_ref().is_none_or(|w| w.keeps(&key(k)));
                                    if keep {
                                        topic.insert(k, Some(v));
                                        st.stale.copied(TOPIC, &key(k));
                                        written.insert(k);
                                    }
                                }
                                if last {
                                    if rules.tombstones {
                                        let stale = std::mem::take(&mut st.stale);
                                        for (_, k) in stale.into_remaining() {
                                            let id: u32 = std::str::from_utf8(&k[6..k.len() - 1])
                                                .unwrap()
                                                .parse()
                                                .unwrap();
                                            topic.insert(id, None);
                                            written.insert(id);
                                        }
                                    }
                                    done = true;
                                }
                                // The progress record goes with the chunk's unit, and
                                // may be lost with a crash right after the rows.
                                if last || !rng.chance(20) {
                                    recorded_after = next;
                                }
                                st.waiting_high = false;
                            }
                        }
                    }
                    read += 1;
                    // No key written since the pass began is older than the table at
                    // this position.
                    let at = &history[pos];
                    for k in &written {
                        if topic.get(k).copied().flatten() != at.get(k).copied() {
                            return Err(format!(
                                "key {k} holds {:?} at position {pos}, the table {:?} (run {runs})",
                                topic.get(k),
                                at.get(k)
                            ));
                        }
                    }
                    if done {
                        break;
                    }
                }
            }
        }
    }
    // The stream catches up.
    while read < wal.len() {
        if let Wal::Txn(changes) = &wal[read] {
            for (k, v) in changes {
                topic.insert(*k, *v);
            }
        }
        read += 1;
    }
    let held: Table = topic
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    if held != table {
        return Err(format!(
            "after the pass the topic holds {held:?}, the table {table:?}"
        ));
    }
    Ok(())
}

#[test]
fn a_pass_under_writes_and_crashes_never_regresses_a_row_and_ends_equal_to_the_table() {
    for seed in seeds() {
        if let Err(e) = run(seed, CORRECT) {
            panic!("seed {seed} (replay: SLUICE_CDC_SIM_SEED={seed}): {e}");
        }
    }
}

/// The simulation must catch each rule switched off, within the default seeds.
#[test]
fn each_rule_switched_off_is_caught() {
    for (what, rules) in [
        (
            "window filter",
            Rules {
                window_filter: false,
                ..CORRECT
            },
        ),
        (
            "tombstones",
            Rules {
                tombstones: false,
                ..CORRECT
            },
        ),
        (
            "resumed key reading",
            Rules {
                resume_keys: false,
                ..CORRECT
            },
        ),
    ] {
        let caught = (1..=400).find(|s| run(*s, rules).is_err());
        assert!(caught.is_some(), "{what} off: no seed of 400 failed");
    }
}
