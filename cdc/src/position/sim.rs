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
//! `SLUICE_CDC_SIM_SEEDS=N` runs N seeds (default 400), `SLUICE_CDC_SIM_SEED=S` replays
//! one; a failure prints its seed.

use std::collections::VecDeque;

use sluice_proto::source_pos::{Lsn, RecordPos, SourcePos};

use super::{Resume, Tracker};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
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

#[test]
fn every_change_lands_exactly_once_in_order_across_crashes() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_CDC_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SLUICE_CDC_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SLUICE_CDC_SIM_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(400u64);
            (1..=n).collect()
        }
    };
    for seed in seeds {
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
