use super::*;
use crate::replica::producers::{Check, ProducerStates};
use crate::replica::txns::{Marker, TxnIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_proto::{BatchBuilder, Compression, RecordBatch};
use std::collections::BTreeMap;

fn tp(t: &str, p: u32) -> Tp {
    (t.to_string(), p)
}

fn ready(o: InitOutcome) -> (i64, i16) {
    match o {
        InitOutcome::Ready {
            producer_id,
            producer_epoch,
            ..
        } => (producer_id, producer_epoch),
        other => panic!("expected Ready, got {other:?}"),
    }
}

#[test]
fn a_transaction_goes_through_kafkas_states() {
    let mut c = TxnCoordinator::new(TxnConfig::default());
    let (pid, epoch) = ready(c.init("t", 60_000, None, 100, 0).unwrap());
    assert_eq!((pid, epoch), (100, 0));
    assert_eq!(
        c.end("t", pid, epoch, true, 1),
        Err(ErrorCode::InvalidTxnState),
        "nothing open"
    );
    assert_eq!(
        c.add_partitions("t", pid, epoch, &[tp("a", 0)], 1)
            .unwrap()
            .len(),
        1
    );
    assert!(
        c.add_partitions("t", pid, epoch, &[tp("a", 0)], 2)
            .unwrap()
            .is_empty(),
        "a partition added twice is written once"
    );
    assert_eq!(
        c.add_partitions("t", pid + 1, epoch, &[tp("a", 1)], 2),
        Err(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(c.end("t", pid, epoch, true, 3).unwrap().len(), 1);
    assert_eq!(c.describe("t").unwrap().status, TxnStatus::PrepareCommit);
    assert_eq!(
        c.add_partitions("t", pid, epoch, &[tp("b", 0)], 4),
        Err(ErrorCode::ConcurrentTransactions)
    );
    assert_eq!(
        c.end("t", pid, epoch, true, 4),
        Err(ErrorCode::ConcurrentTransactions),
        "a retried commit waits for the markers"
    );
    let jobs = c.due();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].commit);
    assert_eq!(jobs[0].partitions, vec![tp("a", 0)]);
    assert!(c.due().is_empty(), "in flight");
    assert_eq!(c.markers_written(&jobs[0], 5).len(), 1);
    assert_eq!(c.describe("t").unwrap().status, TxnStatus::CompleteCommit);
    assert!(
        c.end("t", pid, epoch, true, 6).unwrap().is_empty(),
        "retry: done"
    );
    assert_eq!(
        c.end("t", pid, epoch, false, 6),
        Err(ErrorCode::InvalidTxnState)
    );
}

#[test]
fn a_second_instance_fences_the_first_and_aborts_its_transaction() {
    let mut c = TxnCoordinator::new(TxnConfig::default());
    let (pid, e0) = ready(c.init("t", 60_000, None, 7, 0).unwrap());
    c.add_partitions("t", pid, e0, &[tp("a", 0)], 1).unwrap();
    match c.init("t", 60_000, None, 8, 2).unwrap() {
        InitOutcome::Aborting { writes } => assert_eq!(writes.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.init("t", 60_000, None, 8, 3),
        Err(ErrorCode::ConcurrentTransactions)
    );
    let jobs = c.due();
    assert!(!jobs[0].commit);
    assert_eq!(
        jobs[0].producer_epoch,
        e0 + 1,
        "markers carry the new epoch"
    );
    c.markers_written(&jobs[0], 4);
    let (pid2, e2) = ready(c.init("t", 60_000, None, 8, 5).unwrap());
    assert_eq!((pid2, e2), (pid, e0 + 2));
    assert_eq!(
        c.add_partitions("t", pid, e0, &[tp("a", 0)], 6),
        Err(ErrorCode::ProducerFenced),
        "the old instance is fenced"
    );
    assert_eq!(c.end("t", pid, e0, true, 6), Err(ErrorCode::ProducerFenced));
}

#[test]
fn an_open_transaction_past_its_timeout_is_aborted_under_a_new_epoch() {
    let mut c = TxnCoordinator::new(TxnConfig::default());
    let (pid, e) = ready(c.init("t", 1_000, None, 7, 0).unwrap());
    c.add_partitions("t", pid, e, &[tp("a", 0)], 10).unwrap();
    assert!(c.tick(1_010).is_empty());
    assert_eq!(c.tick(1_011).len(), 1);
    let m = c.describe("t").unwrap();
    assert_eq!(
        (m.status, m.producer_epoch),
        (TxnStatus::PrepareAbort, e + 1)
    );
    assert_eq!(
        c.end("t", pid, e, true, 1_012),
        Err(ErrorCode::ProducerFenced)
    );
}

#[test]
fn only_the_current_instance_names_its_epoch() {
    let mut c = TxnCoordinator::new(TxnConfig::default());
    let (pid, e0) = ready(c.init("t", 60_000, None, 7, 0).unwrap());
    let (_, e1) = ready(c.init("t", 60_000, Some((pid, e0)), 9, 1).unwrap());
    assert_eq!(e1, e0 + 1);
    assert_eq!(
        c.init("t", 60_000, Some((pid, e0)), 9, 2),
        Err(ErrorCode::ProducerFenced),
        "the previous epoch, as Kafka 4.4 answers"
    );
    assert_eq!(
        c.init("t", 60_000, Some((pid + 5, 0)), 9, 3),
        Err(ErrorCode::ProducerFenced)
    );
    assert_eq!(
        c.init("t", 16 * 60_000, None, 9, 3),
        Err(ErrorCode::InvalidTransactionTimeout)
    );
}

#[test]
fn a_used_up_epoch_moves_to_a_fresh_producer_id() {
    let mut c = TxnCoordinator::new(TxnConfig::default());
    ready(c.init("t", 60_000, None, 7, 0).unwrap());
    let mut meta = c.describe("t").unwrap().clone();
    meta.producer_epoch = i16::MAX - 1;
    c.replay("t", Some(&serde_json::to_vec(&meta).unwrap()))
        .unwrap();
    assert_eq!(ready(c.init("t", 60_000, None, 99, 1).unwrap()), (99, 0));
}

// ---- Seeded simulation ---------------------------------------------------------------
//
// A coordinator, partitions (a log of batches, with the producer state and transaction
// index the broker keeps) and producer instances, some sharing a transactional id (a
// zombie left by a rolling update). Events are drawn at random: inits, partitions
// added, batches appended (by live and fenced instances), commits and aborts, markers
// written late, partly or after a coordinator failover (a replay of every record it
// wrote), timeouts. What the coordinator does not re-send is never repaired here.
//
// Checked throughout: a read_committed reader (up to the last stable offset, aborted
// transactions dropped) sees only records of transactions whose commit was
// acknowledged, never a record of an aborted or fenced one, and the last stable offset
// never moves back. At the end, once every marker is written: every record of every
// acknowledged commit is seen, each once.

struct SimPartition {
    log: Vec<(u64, RecordBatch)>,
    producers: ProducerStates,
    txns: TxnIndex,
    end: u64,
    lso_seen: u64,
}

impl SimPartition {
    fn new() -> SimPartition {
        SimPartition {
            log: Vec::new(),
            producers: ProducerStates::default(),
            txns: TxnIndex::default(),
            end: 0,
            lso_seen: 0,
        }
    }

    fn append(&mut self, b: RecordBatch) -> bool {
        if b.is_control() {
            let epoch = Marker::coordinator_epoch(&b).unwrap();
            if self.producers.check_marker(b.producer_id(), epoch).is_err() {
                return false;
            }
        } else {
            match self.producers.check(&b) {
                Check::Append => {}
                Check::Duplicate(_) => return true,
                _ => return false,
            }
        }
        let base = self.end;
        self.producers.record(&b, base, 0);
        self.txns.observe(&b, base);
        self.end += b.last_offset_delta() as u64 + 1;
        self.log.push((base, b));
        true
    }

    fn lso(&self) -> u64 {
        self.txns.first_unstable().unwrap_or(self.end).min(self.end)
    }

    /// What a read_committed consumer reads: (producer id, value).
    fn read_committed(&self) -> Vec<(i64, String)> {
        let lso = self.lso();
        let aborted = self.txns.aborted_in(0, lso);
        let mut out = Vec::new();
        for (base, b) in &self.log {
            if *base >= lso || b.is_control() {
                continue;
            }
            let dropped = b.is_transactional()
                && aborted.iter().any(|a| {
                    a.producer_id == b.producer_id()
                        && a.first_offset <= *base
                        && *base < a.last_offset
                });
            if dropped {
                continue;
            }
            for r in b.records().unwrap() {
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                out.push((b.producer_id(), v));
            }
        }
        out
    }
}

struct Instance {
    txn: String,
    pid: i64,
    epoch: i16,
    /// Partitions added and records sent in the open transaction.
    open: Option<(BTreeSet<u32>, Vec<String>)>,
    seq: BTreeMap<u32, i32>,
}

fn marker(pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> RecordBatch {
    let m = if commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    let mut b = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, -1)
        .transactional(true)
        .control(true);
    b.append(
        0,
        Some(&m.key()),
        Some(&Marker::value(coordinator_epoch)),
        &[],
    );
    b.build().unwrap()
}

fn simulate(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let partitions = rng.random_range(1..=4u32);
    let ids = rng.random_range(1..=3usize);
    let mut parts: Vec<SimPartition> = (0..partitions).map(|_| SimPartition::new()).collect();
    let mut coord = TxnCoordinator::new(TxnConfig::default());
    let mut log: Vec<Write> = Vec::new();
    let mut next_pid = 1000i64;
    let mut now = 0i64;
    let mut instances: Vec<Instance> = Vec::new();
    // Markers being written: the job, the partitions left, the coordinator's epoch.
    let mut in_flight: Vec<(MarkerJob, BTreeSet<u32>, i32)> = Vec::new();
    let mut coordinator_epoch = 1i32;
    let mut committed: BTreeSet<String> = BTreeSet::new();
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    let mut counter = 0u64;
    let topic = "t";
    for _step in 0..rng.random_range(50..400) {
        now += rng.random_range(0..300);
        match rng.random_range(0..100) {
            // A new instance of a transactional id (first start or a rolling update).
            0..=9 => {
                let txn = format!("id{}", rng.random_range(0..ids));
                next_pid += 1;
                match coord.init(&txn, 5_000, None, next_pid, now) {
                    Ok(InitOutcome::Ready {
                        producer_id,
                        producer_epoch,
                        writes,
                    }) => {
                        log.extend(writes);
                        instances.push(Instance {
                            txn,
                            pid: producer_id,
                            epoch: producer_epoch,
                            open: None,
                            seq: BTreeMap::new(),
                        });
                    }
                    Ok(InitOutcome::Aborting { writes }) => log.extend(writes),
                    Err(_) => {}
                }
            }
            // An instance adds a partition and sends a batch to it.
            10..=54 if !instances.is_empty() => {
                let i = rng.random_range(0..instances.len());
                let p = rng.random_range(0..partitions);
                let inst = &mut instances[i];
                let added = inst.open.as_ref().is_some_and(|(ps, _)| ps.contains(&p));
                if !added {
                    match coord.add_partitions(
                        &inst.txn,
                        inst.pid,
                        inst.epoch,
                        &[tp(topic, p)],
                        now,
                    ) {
                        Ok(w) => {
                            log.extend(w);
                            inst.open.get_or_insert_with(Default::default).0.insert(p);
                        }
                        Err(_) => continue,
                    }
                }
                counter += 1;
                let value = format!("{}-{counter}", inst.txn);
                let seq = inst.seq.entry(p).or_insert(0);
                let mut b = BatchBuilder::new(Compression::None)
                    .producer(inst.pid, inst.epoch, *seq)
                    .transactional(true);
                b.append(0, None, Some(value.as_bytes()), &[]);
                if parts[p as usize].append(b.build().unwrap()) {
                    *seq += 1;
                    if let Some((_, sent)) = inst.open.as_mut() {
                        sent.push(value);
                    }
                }
            }
            // An instance commits or aborts.
            55..=69 if !instances.is_empty() => {
                let i = rng.random_range(0..instances.len());
                let commit = rng.random_bool(0.7);
                let inst = &mut instances[i];
                if inst.open.is_none() {
                    continue;
                }
                match coord.end(&inst.txn, inst.pid, inst.epoch, commit, now) {
                    Ok(w) => {
                        log.extend(w);
                        let (_, sent) = inst.open.take().unwrap();
                        if commit {
                            committed.extend(sent);
                        } else {
                            doomed.extend(sent);
                        }
                    }
                    Err(ErrorCode::ProducerFenced) => {
                        let (_, sent) = inst.open.take().unwrap();
                        doomed.extend(sent);
                    }
                    Err(_) => {}
                }
            }
            // The coordinator starts markers for prepared transactions.
            70..=79 => {
                for job in coord.due() {
                    let left = job.partitions.iter().map(|(_, p)| *p).collect();
                    in_flight.push((job, left, coordinator_epoch));
                }
            }
            // One marker reaches its partition (possibly one a coordinator that has
            // since failed over sent, arriving late); a job of the current coordinator
            // with every marker appended completes. A refused marker is tried again.
            80..=89 if !in_flight.is_empty() => {
                let j = rng.random_range(0..in_flight.len());
                let (job, left, epoch) = &mut in_flight[j];
                if let Some(&p) = left.iter().next() {
                    let m = marker(job.producer_id, job.producer_epoch, job.commit, *epoch);
                    if parts[p as usize].append(m) || *epoch != coordinator_epoch {
                        left.remove(&p);
                    }
                }
                if left.is_empty() {
                    let (job, _, epoch) = in_flight.swap_remove(j);
                    if epoch == coordinator_epoch {
                        log.extend(coord.markers_written(&job, now));
                    }
                }
            }
            // Timeouts.
            90..=94 => log.extend(coord.tick(now)),
            // Failover: a new coordinator (the next epoch) replays the log. The old
            // one's markers still in flight may yet arrive.
            95..=99 => {
                coordinator_epoch += 1;
                let mut next = TxnCoordinator::new(TxnConfig::default());
                for w in &log {
                    let key: serde_json::Value = serde_json::from_slice(&w.key).unwrap();
                    let id = key["txn"].as_str().unwrap().to_string();
                    next.replay(&id, w.value.as_deref()).unwrap();
                }
                coord = next;
            }
            _ => {}
        }
        // Transactions the coordinator aborted on its own (timeout, fencing init).
        for inst in &mut instances {
            let fenced = coord
                .describe(&inst.txn)
                .is_none_or(|m| m.producer_id != inst.pid || m.producer_epoch != inst.epoch);
            if fenced {
                if let Some((_, sent)) = inst.open.take() {
                    doomed.extend(sent);
                }
            }
        }
        for (i, p) in parts.iter_mut().enumerate() {
            let lso = p.lso();
            assert!(
                lso >= p.lso_seen,
                "partition {i}: LSO moved back from {} to {lso}",
                p.lso_seen
            );
            p.lso_seen = lso;
            for (_, v) in p.read_committed() {
                assert!(
                    committed.contains(&v),
                    "partition {i}: read_committed sees {v}, which is not an acknowledged commit"
                );
            }
        }
    }
    // Drain: every prepared transaction gets all its markers (the current
    // coordinator's writes in flight are given up and sent again).
    for (job, _, epoch) in in_flight.drain(..) {
        if epoch == coordinator_epoch {
            coord.markers_failed(&job);
        }
    }
    for _ in 0..10 {
        log.extend(coord.tick(now + 10_000_000));
        for job in coord.due() {
            for (_, p) in &job.partitions {
                let m = marker(
                    job.producer_id,
                    job.producer_epoch,
                    job.commit,
                    coordinator_epoch,
                );
                assert!(
                    parts[*p as usize].append(m),
                    "the current coordinator's marker"
                );
            }
            log.extend(coord.markers_written(&job, now));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(
            p.txns.first_unstable(),
            None,
            "partition {i}: a transaction stayed open"
        );
        for (_, v) in p.read_committed() {
            assert!(seen.insert(v.clone()), "{v} read twice");
            assert!(!doomed.contains(&v), "{v} was aborted but is read");
        }
    }
    let missing: Vec<_> = committed.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "acknowledged commits not read: {missing:?}"
    );
}

/// `SLUICE_GROUP_SIM_SEEDS=N` runs N seeds; `SLUICE_GROUP_SIM_SEED=S` replays one.
#[test]
fn seeded_transactions_never_show_uncommitted_records() {
    crate::group::for_each_seed(300, simulate);
}

// ---- Transactional offset commits on the group coordinator ---------------------------

use crate::group::coordinator::{Coordinator, CoordinatorConfig, NewOffset};

fn offset(tp: Tp, offset: i64) -> NewOffset {
    NewOffset {
        tp,
        offset,
        leader_epoch: 3,
        metadata: String::new(),
    }
}

fn committed_offset(c: &Coordinator, g: &str, tp: &Tp) -> Option<i64> {
    c.fetch(g, std::slice::from_ref(tp))[0]
        .1
        .as_ref()
        .map(|c| c.offset)
}

/// Replays every record written so far into a fresh coordinator (a failover).
fn replayed(writes: &[Write]) -> Coordinator {
    let mut c = Coordinator::new(CoordinatorConfig::default());
    for w in writes {
        c.replay(&w.key, w.value.as_deref(), std::time::Instant::now())
            .unwrap();
    }
    c
}

#[test]
fn transactional_offsets_wait_for_the_commit_marker_and_survive_a_replay() {
    let mut c = Coordinator::new(CoordinatorConfig::default());
    let a = tp("in", 0);
    let mut log = c
        .txn_commit("g", (5, 0), "", -1, vec![offset(a.clone(), 10)], 1)
        .unwrap();
    assert_eq!(
        committed_offset(&c, "g", &a),
        None,
        "pending until the marker"
    );
    assert_eq!(c.pending_commits("g"), [a.clone()].into());
    let r = replayed(&log);
    assert_eq!(
        r.pending_commits("g"),
        [a.clone()].into(),
        "pending survives a replay"
    );
    c.complete_txn(5, 0, true, 2);
    assert_eq!(committed_offset(&c, "g", &a), Some(10));
    assert!(c.pending_commits("g").is_empty());
    log.extend(c.tick(std::time::Instant::now(), 3).writes);
    let r = replayed(&log);
    assert_eq!(
        committed_offset(&r, "g", &a),
        Some(10),
        "the commit was written"
    );
    assert!(
        r.pending_commits("g").is_empty(),
        "and the pending record tombstoned"
    );
    assert_eq!(
        r.fetch("g", std::slice::from_ref(&a))[0]
            .1
            .as_ref()
            .unwrap()
            .leader_epoch,
        3
    );
    // An abort drops what its transaction committed.
    let log2 = c
        .txn_commit("g", (5, 0), "", -1, vec![offset(a.clone(), 20)], 4)
        .unwrap();
    assert_eq!(log2.len(), 1);
    c.complete_txn(5, 0, false, 5);
    assert_eq!(committed_offset(&c, "g", &a), Some(10));
    assert!(c.pending_commits("g").is_empty());
}

#[test]
fn a_fenced_instance_cannot_commit_offsets_into_its_successors_transaction() {
    let mut c = Coordinator::new(CoordinatorConfig::default());
    let a = tp("in", 0);
    c.txn_commit("g", (5, 0), "", -1, vec![offset(a.clone(), 10)], 1)
        .unwrap();
    // The successor's InitProducerId aborts the open transaction under epoch 1.
    c.complete_txn(5, 1, false, 2);
    assert_eq!(
        c.txn_commit("g", (5, 0), "", -1, vec![offset(a.clone(), 99)], 3),
        Err(crate::group::state::GroupError::ProducerFenced),
        "the zombie's late commit"
    );
    c.txn_commit("g", (5, 2), "", -1, vec![offset(a.clone(), 20)], 4)
        .unwrap();
    c.complete_txn(5, 2, true, 5);
    assert_eq!(committed_offset(&c, "g", &a), Some(20));
}

#[test]
fn a_pending_commit_no_marker_settles_is_dropped_after_the_longest_transaction() {
    let mut c = Coordinator::new(CoordinatorConfig::default());
    let a = tp("in", 0);
    c.txn_commit("g", (5, 0), "", -1, vec![offset(a.clone(), 10)], 0)
        .unwrap();
    let now = std::time::Instant::now();
    assert!(c.tick(now, 60_000).writes.is_empty());
    assert_eq!(c.pending_commits("g").len(), 1);
    let w = c.tick(now, 31 * 60_000).writes;
    assert_eq!(w.len(), 1, "a tombstone");
    assert!(w[0].value.is_none());
    assert!(c.pending_commits("g").is_empty());
    assert_eq!(committed_offset(&c, "g", &a), None);
}
