//! Seeded simulation of the connector's position bookkeeping against crashes: a source
//! of transactions over several partitions (and heartbeats at a transaction's own
//! position to every partition, as the runner writes them), a broker that appends each partition's
//! records in order and acknowledges them at random times, crashes that lose whatever
//! was in flight, a source that replays from the position it was last confirmed (which
//! may lag the tracker's). After the final run every partition must hold each of its
//! records exactly once, in source order; and at every step the confirmed position must
//! never pass a transaction with a record missing from the logs.
//!
//! Besides crashes, a record can fail for good at the broker (too large, a delivery
//! timeout while its partition had no leader): it is not appended, the acknowledgement
//! task fails the run, and the producer — gapless per partition, as the sink configures
//! it — writes nothing queued behind it in that partition, while other partitions'
//! requests in flight may still land. The run then restarts in-process (a fresh
//! `Resume`), as the CLI's supervisor does. With `GAPLESS` off (the producer before the
//! fix) the later records of the partition land after the hole and the restart skips
//! the failed record for good: the final check catches that.
//!
//! A second simulation ([`recopy`]) models keys and re-copies: a keyed source table
//! whose rows are inserted, updated and deleted; a compacted topic over several
//! partitions; runs that copy (the first one, one after a copy cut short, one after
//! the slot was lost while rows changed and were deleted) or stream from the slot, each
//! cut by crashes that land a random prefix of every partition's queue. After the last
//! run the topic's latest record per key must equal the table: no deleted key
//! survives, no stale value, nothing missing. It drives the connector's own rules:
//! [`copy_state`] (what a run decides from each partition's last record),
//! [`StaleKeys`] (the tombstones for keys the copy did not write) and [`Resume`].
//! Switching off `TOMBSTONE_ABSENT_KEYS` (the re-copy that left deleted rows behind)
//! or `COPY_START_MARKERS` (a re-copy cut before it reached some partition, which then
//! looked finished) makes it fail.
//!
//! `SLUICE_CDC_SIM_SEEDS=N` runs N seeds (default 400), `SLUICE_CDC_SIM_SEED=S` replays
//! one; a failure prints its seed (`SLUICE_CDC_SIM_TRACE=1` prints the re-copy runs).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use sluice_proto::source_pos::{Lsn, RecordPos, SourcePos};

use super::{copy_state, Resume, SnapshotState, StaleKeys, Tracker};

/// The simulations' seeded generator (xorshift64*), shared with `incremental::sim`.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const TOPIC: &str = "t";
/// What `Sink::write_heartbeat` uses: after every record at its position.
const HEARTBEAT_ORDINAL: u64 = u64::MAX;

/// Whether the modelled producer is gapless (`ProducerConfig::gapless`, set by the sink).
const GAPLESS: bool = true;

#[derive(Clone)]
struct Txn {
    pos: SourcePos,
    /// (partition, ordinal)
    records: Vec<(u32, u64)>,
    /// A heartbeat at the previous transaction's position (what the runner writes after
    /// a transaction): one record per partition with ordinal `u64::MAX`.
    heartbeat: bool,
}

fn rp(pos: &SourcePos, ordinal: u64) -> RecordPos {
    RecordPos {
        pos: pos.clone(),
        ordinal,
    }
}

fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let partitions = 1 + rng.below(4) as u32;
    let n = 5 + rng.below(60) as usize;
    let mut lsn = 100u64;
    let mut txns: Vec<Txn> = Vec::new();
    for _ in 0..n {
        if txns.last().is_some_and(|t: &Txn| !t.heartbeat) && rng.chance(30) {
            txns.push(Txn {
                pos: SourcePos::Postgres(Lsn(lsn)),
                records: (0..partitions).map(|p| (p, HEARTBEAT_ORDINAL)).collect(),
                heartbeat: true,
            });
            continue;
        }
        lsn += 1 + rng.below(50);
        let k = rng.below(6);
        txns.push(Txn {
            pos: SourcePos::Postgres(Lsn(lsn)),
            records: (0..k)
                .map(|o| (rng.below(partitions as u64) as u32, o))
                .collect(),
            heartbeat: false,
        });
    }
    let mut logs: Vec<Vec<RecordPos>> = vec![Vec::new(); partitions as usize];
    // The source's confirmed position: replay starts after it.
    let mut source_confirmed: Option<SourcePos> = None;
    let mut crashes = 0;
    loop {
        // (Re)start: read each partition's last position.
        let mut resume = Resume::new();
        for (p, log) in logs.iter().enumerate() {
            if let Some(last) = log.last() {
                resume.insert(TOPIC, p as u32, last.clone());
            }
        }
        let mut tracker = Tracker::new();
        // In flight per partition: (record, unit seq).
        let mut queues: Vec<VecDeque<(RecordPos, u64)>> =
            vec![VecDeque::new(); partitions as usize];
        let mut unacked: Vec<(u64, usize)> = Vec::new(); // (seq, records outstanding)
        let start = txns
            .iter()
            .position(|t| {
                source_confirmed
                    .as_ref()
                    .is_none_or(|c| t.pos.compare(c) == Some(std::cmp::Ordering::Greater))
            })
            .unwrap_or(txns.len());
        let may_crash = crashes < 6;
        let mut next = start;
        let mut crashed = false;
        while next < txns.len() || queues.iter().any(|q| !q.is_empty()) {
            if may_crash && rng.chance(3) {
                crashed = true;
                crashes += 1;
                break;
            }
            if next < txns.len() && rng.chance(50) {
                let t = &txns[next];
                next += 1;
                let seq = tracker.sent(t.pos.clone());
                let mut outstanding = 0;
                for &(p, o) in &t.records {
                    let r = rp(&t.pos, o);
                    if resume.should_write(TOPIC, p, &r) {
                        queues[p as usize].push_back((r, seq));
                        outstanding += 1;
                    }
                }
                if outstanding == 0 {
                    tracker.acked(seq);
                } else {
                    unacked.push((seq, outstanding));
                }
            } else {
                let p = rng.below(partitions as u64) as usize;
                if let Some((r, seq)) = queues[p].pop_front() {
                    if may_crash && rng.chance(2) {
                        // Fails for good and the run stops on the error. A refusal
                        // appended nothing; a delivery timeout may have been appended
                        // after all (the answer was what got lost).
                        if rng.chance(50) {
                            logs[p].push(r);
                        }
                        tracker.failed();
                        let behind = std::mem::take(&mut queues[p]);
                        if !GAPLESS {
                            logs[p].extend(behind.into_iter().map(|(r, _)| r));
                        }
                        // Other partitions: what was already sent may land, in order.
                        for (q, queue) in queues.iter_mut().enumerate() {
                            let land = rng.below(queue.len() as u64 + 1) as usize;
                            logs[q].extend(queue.drain(..).take(land).map(|(r, _)| r));
                        }
                        crashed = true;
                        crashes += 1;
                        break;
                    }
                    logs[p].push(r);
                    let u = unacked
                        .iter_mut()
                        .find(|(s, _)| *s == seq)
                        .expect("a unit with records in flight");
                    u.1 -= 1;
                    if u.1 == 0 {
                        tracker.acked(seq);
                    }
                }
            }
            // The confirmation reaches the source now or later.
            if rng.chance(40) {
                source_confirmed = tracker.confirmed().cloned().or(source_confirmed);
            }
            // Invariant: every change at or below the tracker's confirmed position is
            // logged (a heartbeat is no change: one lost in a crash is superseded).
            if let Some(c) = tracker.confirmed() {
                for t in txns.iter().filter(|t| {
                    !t.heartbeat && t.pos.compare(c) != Some(std::cmp::Ordering::Greater)
                }) {
                    for &(p, o) in &t.records {
                        if !logs[p as usize].contains(&rp(&t.pos, o)) {
                            return Err(format!(
                                "confirmed {c} but {}#{o} is not in partition {p}",
                                t.pos
                            ));
                        }
                    }
                }
            }
        }
        if !crashed {
            break;
        }
    }
    for p in 0..partitions {
        // Records of a partition strictly increase (no repeat, no reorder), heartbeats
        // included; the changes are exactly the source's, once each.
        let log = &logs[p as usize];
        if let Some(w) = log
            .windows(2)
            .find(|w| w[0].compare(&w[1]) != Some(std::cmp::Ordering::Less))
        {
            return Err(format!("partition {p}: {} then {}", w[0], w[1]));
        }
        let changes: Vec<RecordPos> = log
            .iter()
            .filter(|r| r.ordinal != HEARTBEAT_ORDINAL)
            .cloned()
            .collect();
        let want: Vec<RecordPos> = txns
            .iter()
            .filter(|t| !t.heartbeat)
            .flat_map(|t| {
                t.records
                    .iter()
                    .filter(move |(q, _)| *q == p)
                    .map(move |&(_, o)| rp(&t.pos, o))
            })
            .collect();
        if changes != want {
            return Err(format!(
                "partition {p} after {crashes} crashes holds {:?}, want {:?}",
                logs[p as usize]
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>(),
                want.iter().map(|r| r.to_string()).collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

/// The seeds to run (`SLUICE_CDC_SIM_SEED`, `SLUICE_CDC_SIM_SEEDS`), shared with
/// `incremental::sim`.
pub(crate) fn seeds() -> Vec<u64> {
    match std::env::var("SLUICE_CDC_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SLUICE_CDC_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SLUICE_CDC_SIM_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(400u64);
            (1..=n).collect()
        }
    }
}

#[test]
fn every_change_lands_exactly_once_in_order_across_crashes() {
    for seed in seeds() {
        if let Err(e) = run(seed) {
            panic!("seed {seed} (replay: SLUICE_CDC_SIM_SEED={seed}): {e}");
        }
    }
}

#[test]
fn the_tracker_confirms_only_an_acknowledged_prefix() {
    let pos = |n| SourcePos::Postgres(Lsn(n));
    let mut t = Tracker::new();
    let a = t.sent(pos(1));
    let b = t.sent(pos(2));
    let c = t.sent(pos(3));
    assert_eq!(t.acked(b), None, "b before a cannot be confirmed");
    assert_eq!(t.acked(a), Some(&pos(2)));
    t.failed();
    assert_eq!(t.acked(c), None, "nothing moves after a failure");
    assert_eq!(t.confirmed(), Some(&pos(2)));
}

/// Whether a copy over rows tombstones the keys it did not write (`Sink::finish_copy`).
const TOMBSTONE_ABSENT_KEYS: bool = true;
/// Whether a copy first marks every partition it copies to (`Sink::begin_copy`).
const COPY_START_MARKERS: bool = true;

/// A record of the modelled topic.
#[derive(Clone, Debug)]
struct KeyedRec {
    /// `None`: a heartbeat-keyed record (a heartbeat, a copy-start marker).
    key: Option<u32>,
    /// The row's version; `None` a tombstone.
    value: Option<u32>,
    pos: RecordPos,
    /// Carries `sluice.snapshot` (copy rows, copy tombstones, markers).
    copy: bool,
}

fn key_bytes(k: u32) -> Bytes {
    Bytes::from(format!("{{\"id\":{k}}}"))
}

/// The re-copy simulation for one seed (see the module doc).
fn recopy(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let partitions = 1 + rng.below(3) as u32;
    let part = |k: u32| (k % partitions) as usize;
    let topic: Arc<str> = Arc::from(TOPIC);
    let mut table: BTreeMap<u32, u32> = (0..5 + rng.below(25) as u32).map(|k| (k, 1)).collect();
    let mut next_key = 1000u32;
    // The source's changes, in commit order: (lsn, key, version or deleted).
    let mut wal: Vec<(u64, u32, Option<u32>)> = Vec::new();
    let mut lsn = 100u64;
    let mut mutate =
        |rng: &mut Rng, table: &mut BTreeMap<u32, u32>, wal: &mut Vec<_>, deletes: u64| {
            lsn += 1 + rng.below(5);
            let keys: Vec<u32> = table.keys().copied().collect();
            if !keys.is_empty() && rng.chance(deletes) {
                let k = keys[rng.below(keys.len() as u64) as usize];
                table.remove(&k);
                wal.push((lsn, k, None));
            } else if keys.is_empty() || rng.chance(30) {
                next_key += 1;
                table.insert(next_key, 1);
                wal.push((lsn, next_key, Some(1)));
            } else {
                let k = keys[rng.below(keys.len() as u64) as usize];
                let v = table.get_mut(&k).expect("a key of the table");
                *v += 1;
                wal.push((lsn, k, Some(*v)));
            }
            lsn
        };
    let mut logs: Vec<Vec<KeyedRec>> = vec![Vec::new(); partitions as usize];
    // The slot's confirmed position; `None`: no slot.
    let mut slot: Option<u64> = None;
    let lose_slot_at = 1 + rng.below(3);
    let (mut crashes, mut runs, mut lost) = (0, 0u64, false);
    loop {
        runs += 1;
        if runs > 40 {
            return Err("no run finished in 40".into());
        }
        // Between runs the table changes; once, the slot is lost meanwhile (and then
        // deletes are likely).
        if runs > 1 && runs - 1 == lose_slot_at && !lost {
            lost = true;
            slot = None;
        }
        for _ in 0..rng.below(8) {
            let deletes = if slot.is_none() { 50 } else { 20 };
            mutate(&mut rng, &mut table, &mut wal, deletes);
        }
        let lasts: Vec<Option<bool>> = logs.iter().map(|l| l.last().map(|r| r.copy)).collect();
        let state = copy_state(lasts);
        let copy = state != SnapshotState::Complete || slot.is_none();
        if std::env::var("SLUICE_CDC_SIM_TRACE").is_ok() {
            eprintln!("run {runs}: state {state:?} slot {slot:?} copy {copy} table {table:?}");
            for (p, l) in logs.iter().enumerate() {
                eprintln!(
                    "  p{p}: {:?}",
                    l.iter()
                        .map(|r| format!(
                            "{:?}={:?}@{}{}",
                            r.key,
                            r.value,
                            r.pos,
                            if r.copy { "s" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                );
            }
        }
        let mut queues: Vec<VecDeque<KeyedRec>> = vec![VecDeque::new(); partitions as usize];
        let mut resume = Resume::new();
        for (p, log) in logs.iter().enumerate() {
            if let Some(last) = log.last() {
                resume.insert(TOPIC, p as u32, last.pos.clone());
            }
        }
        // Before a copy over rows creates its slot, every non-empty partition gets a
        // copy-pending marker, and the slot is made only once they all landed.
        if copy && COPY_START_MARKERS && logs.iter().any(|l| !l.is_empty()) {
            let mut marks: Vec<VecDeque<KeyedRec>> = logs
                .iter()
                .map(|l| {
                    l.last()
                        .map(|last| KeyedRec {
                            key: None,
                            value: None,
                            pos: last.pos.clone(),
                            copy: true,
                        })
                        .into_iter()
                        .collect()
                })
                .collect();
            let mut crashed = false;
            while marks.iter().any(|q| !q.is_empty()) {
                if crashes < 5 && rng.chance(10) {
                    for (p, q) in marks.iter_mut().enumerate() {
                        let land = rng.below(q.len() as u64 + 1) as usize;
                        logs[p].extend(q.drain(..).take(land));
                    }
                    crashes += 1;
                    crashed = true;
                    break;
                }
                let p = rng.below(partitions as u64) as usize;
                if let Some(r) = marks[p].pop_front() {
                    logs[p].push(r);
                }
            }
            if crashed {
                continue;
            }
        }
        // Streaming starts after this position.
        let stream_from;
        if copy {
            // A new slot, consistent at the current position; the copy reads the table
            // as of there.
            let c = wal.last().map_or(100, |w| w.0);
            slot = Some(c);
            stream_from = c;
            let pos = SourcePos::Postgres(Lsn(c));
            let mut stale = StaleKeys::default();
            if state != SnapshotState::Empty {
                for log in &logs {
                    for r in log.iter().filter(|r| r.key.is_some()) {
                        stale.observe(
                            &topic,
                            key_bytes(r.key.expect("filtered")),
                            r.value.is_some(),
                        );
                    }
                }
            }
            let mut ordinal = 0;
            for (&k, &v) in &table {
                stale.copied(&topic, &key_bytes(k));
                queues[part(k)].push_back(KeyedRec {
                    key: Some(k),
                    value: Some(v),
                    pos: rp(&pos, ordinal),
                    copy: true,
                });
                ordinal += 1;
            }
            if TOMBSTONE_ABSENT_KEYS {
                for (_, key) in stale.into_remaining() {
                    let k: u32 = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|s| s.strip_prefix("{\"id\":")?.strip_suffix('}')?.parse().ok())
                        .expect("a key the simulation wrote");
                    queues[part(k)].push_back(KeyedRec {
                        key: Some(k),
                        value: None,
                        pos: rp(&pos, ordinal),
                        copy: true,
                    });
                    ordinal += 1;
                }
            }
            for q in queues.iter_mut() {
                q.push_back(KeyedRec {
                    key: None,
                    value: None,
                    pos: rp(&pos, HEARTBEAT_ORDINAL),
                    copy: false,
                });
            }
        } else {
            stream_from = slot.expect("a slot when streaming");
        }
        // The stream: every change after `stream_from` the partition does not hold yet,
        // then changes made while the run goes on.
        let mut streamed = 0;
        let enqueue = |queues: &mut Vec<VecDeque<KeyedRec>>,
                       wal: &[(u64, u32, Option<u32>)],
                       streamed: &mut usize| {
            for &(l, k, v) in wal.iter().filter(|w| w.0 > stream_from).skip(*streamed) {
                *streamed += 1;
                let r = rp(&SourcePos::Postgres(Lsn(l)), 0);
                // A copy run's partitions take everything after the copy.
                if copy || resume.should_write(TOPIC, k % partitions, &r) {
                    queues[part(k)].push_back(KeyedRec {
                        key: Some(k),
                        value: v,
                        pos: r,
                        copy: false,
                    });
                }
            }
        };
        enqueue(&mut queues, &wal, &mut streamed);
        let mut crashed = false;
        while queues.iter().any(|q| !q.is_empty()) {
            if crashes < 5 && rng.chance(4) {
                // What was sent lands as a prefix of each partition's queue.
                for (p, q) in queues.iter_mut().enumerate() {
                    let land = rng.below(q.len() as u64 + 1) as usize;
                    logs[p].extend(q.drain(..).take(land));
                }
                crashes += 1;
                crashed = true;
                break;
            }
            if rng.chance(10) {
                mutate(&mut rng, &mut table, &mut wal, 20);
                enqueue(&mut queues, &wal, &mut streamed);
            }
            let p = rng.below(partitions as u64) as usize;
            if let Some(r) = queues[p].pop_front() {
                logs[p].push(r);
            }
        }
        if crashed {
            continue;
        }
        // Everything was written: the slot is confirmed up to the last change.
        if let Some(&(l, _, _)) = wal.last() {
            slot = slot.map(|s| s.max(l));
        }
        if lost && runs > lose_slot_at + 1 {
            break;
        }
    }
    // What a Table (or compaction) keeps: the latest record of every key.
    let mut latest: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    for log in &logs {
        for r in log {
            if let Some(k) = r.key {
                latest.insert(k, r.value);
            }
        }
    }
    for (k, v) in &latest {
        match (v, table.get(k)) {
            (Some(v), None) => {
                return Err(format!(
                    "key {k} was deleted in the source but the topic still holds it (version \
                     {v}) after {runs} runs, {crashes} crashes"
                ))
            }
            (Some(v), Some(want)) if v != want => {
                return Err(format!(
                    "key {k}: the topic holds version {v}, the table {want}"
                ))
            }
            _ => {}
        }
    }
    if let Some((k, _)) = table
        .iter()
        .find(|(k, _)| !matches!(latest.get(*k), Some(Some(_))))
    {
        return Err(format!("key {k} of the table is missing from the topic"));
    }
    Ok(())
}

#[test]
fn no_deleted_key_survives_a_recopy_across_crashes() {
    for seed in seeds() {
        if let Err(e) = recopy(seed) {
            panic!("seed {seed} (replay: SLUICE_CDC_SIM_SEED={seed}): {e}");
        }
    }
}

#[test]
fn a_unit_without_position_confirms_nothing_but_holds_back_the_rest() {
    let pos = |n| SourcePos::Postgres(Lsn(n));
    let mut t = Tracker::new();
    let copy = t.sent_unpositioned();
    let stream = t.sent(pos(5));
    assert_eq!(t.acked(stream), None, "held back by the copy before it");
    assert_eq!(t.acked(copy), Some(&pos(5)));
    let copy = t.sent_unpositioned();
    assert_eq!(
        t.acked(copy),
        None,
        "a copy of added tables confirms no position"
    );
    assert_eq!(t.confirmed(), Some(&pos(5)));
}
