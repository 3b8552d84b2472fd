//! Model-based test of compaction: random keyed appends (tombstones, a few keyless
//! records, every codec), rolls, time passing, cleaner passes with random high
//! watermarks and dedupe budgets, crashes injected at every step of the swap (the new
//! segment torn at any byte included), clean reopens — against a plain list of every
//! record ever appended. After every step:
//! - every record read back is the model's record at that offset (offsets never move),
//!   offsets strictly increase, and reading from any offset gives exactly the records
//!   at or after it;
//! - the latest record of every key is there, unless it is a tombstone and a pass at
//!   least `delete.retention.ms` ago already covered it;
//! - nothing at or above the high watermark a pass was given was touched;
//! - no older value of a key outlives its removed tombstone (budgets below the key
//!   count make passes stop where the map fills, before such a tombstone);
//!
//! and after a full clean (roll, high watermark at the end, passes until none is due),
//! nothing superseded is left. proptest prints the failing sequence to replay.

use std::collections::HashMap;

use proptest::prelude::*;
use sluice_proto::batch::Batches;
use sluice_proto::{BatchBuilder, Compression, TopicPartition};

use super::{CleanOptions, CleanupPolicy, CrashAt, Log, LogConfig, LogManager};

const RETENTION_MS: i64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        /// (key index or None, tombstone)
        records: Vec<(Option<u8>, bool)>,
        codec: u8,
        producer: Option<u8>,
    },
    Roll,
    Sleep(i64),
    Clean {
        hw_share: f64,
        budget_keys: usize,
        crash: Option<CrashAt>,
    },
    FullClean {
        budget_keys: usize,
    },
    Reopen,
}

fn crash() -> impl Strategy<Value = Option<CrashAt>> {
    prop_oneof![
        6 => Just(None),
        1 => (0.0..1.0f64).prop_map(|s| Some(CrashAt::TornTmp(s))),
        2 => (1u8..=5).prop_map(|s| Some(CrashAt::AfterSwapStep(s))),
    ]
}

/// Dedupe budgets in keys: half of them below the 8 keys the records use, so passes
/// often stop where the map fills, before a tombstone whose horizon has passed.
fn budget() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 2usize..8, 1 => 8usize..40]
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        prop::option::weighted(0.95, 0u8..8),
        prop::bool::weighted(0.15),
    );
    prop_oneof![
        10 => (prop::collection::vec(record, 1..6), 0u8..5, prop::option::of(0u8..3))
            .prop_map(|(records, codec, producer)| Op::Append { records, codec, producer }),
        2 => Just(Op::Roll),
        2 => (0i64..1500).prop_map(Op::Sleep),
        4 => (0.0..1.2f64, budget(), crash())
            .prop_map(|(hw_share, budget_keys, crash)| Op::Clean { hw_share, budget_keys, crash }),
        1 => budget().prop_map(|budget_keys| Op::FullClean { budget_keys }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    offset: u64,
    key: Option<String>,
    value: Option<String>,
    appended_ms: i64,
}

#[derive(Default)]
struct Model {
    records: Vec<Rec>,
    /// Times of passes that returned a result.
    cleans: Vec<i64>,
    now: i64,
    counter: u64,
}

impl Model {
    fn latest_per_key(&self) -> HashMap<String, &Rec> {
        let mut m = HashMap::new();
        for r in &self.records {
            if let Some(k) = &r.key {
                m.insert(k.clone(), r);
            }
        }
        m
    }
    /// A tombstone may be gone only once a pass covering it is `RETENTION_MS` old.
    fn may_be_gone(&self, r: &Rec) -> bool {
        r.value.is_none()
            && self
                .cleans
                .iter()
                .any(|&t| t >= r.appended_ms && t + RETENTION_MS <= self.now)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 120,
        segment_index_bytes: 240,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: RETENTION_MS,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn codec(i: u8) -> Compression {
    [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ][i as usize % 5]
}

/// Every record in the log from `from`: (offset, key, value).
fn read_from(log: &Log, from: u64) -> Vec<(u64, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut next = from;
    let s = |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
    loop {
        let r = log.read(next, 300, None).unwrap();
        if r.data.is_empty() {
            return out;
        }
        for b in Batches::new(r.data) {
            let b = b.unwrap();
            for rec in b.records().unwrap() {
                let off = b.base_offset() as u64 + rec.offset_delta as u64;
                if off >= from {
                    out.push((off, s(rec.key), s(rec.value)));
                }
            }
            next = b.next_offset() as u64;
        }
    }
}

fn opts(m: &Model, hw: u64, budget_keys: usize, crash: Option<CrashAt>) -> CleanOptions {
    CleanOptions {
        now_ms: m.now,
        high_watermark: hw,
        dedupe_buffer_bytes: budget_keys * 27,
        producer_expiration_ms: 60_000,
        crash_at: crash,
        throttle: None,
    }
}

fn check(log: &Log, m: &Model, untouched_from: u64) -> Result<(), TestCaseError> {
    let got = read_from(log, 0);
    let by_offset: HashMap<u64, &Rec> = m.records.iter().map(|r| (r.offset, r)).collect();
    let mut last = None;
    for (off, k, v) in &got {
        prop_assert!(
            last.is_none_or(|l| l < *off),
            "offsets must increase: {:?} then {}",
            last,
            off
        );
        last = Some(*off);
        let r = by_offset.get(off);
        prop_assert!(r.is_some(), "offset {} is not in the model", off);
        let r = r.unwrap();
        prop_assert_eq!((&r.key, &r.value), (k, v), "record at {} changed", off);
    }
    let present: std::collections::HashSet<u64> = got.iter().map(|g| g.0).collect();
    for r in m.latest_per_key().values() {
        prop_assert!(
            present.contains(&r.offset) || m.may_be_gone(r),
            "latest record of {:?} at {} is gone",
            r.key,
            r.offset
        );
    }
    // No older value of a key outlives its removed tombstone: a reader that starts
    // from the beginning would see the value and never the delete.
    let mut removed_tombstones: HashMap<&str, u64> = HashMap::new();
    for r in &m.records {
        if let (Some(k), None) = (&r.key, &r.value) {
            if !present.contains(&r.offset) {
                let newest = removed_tombstones.entry(k.as_str()).or_insert(r.offset);
                *newest = (*newest).max(r.offset);
            }
        }
    }
    for (off, k, v) in &got {
        if let (Some(k), Some(_)) = (k, v) {
            let removed = removed_tombstones.get(k.as_str());
            prop_assert!(
                removed.is_none_or(|t| t < off),
                "the value of {:?} at {} outlives its tombstone at {:?}, which is gone",
                k,
                off,
                removed
            );
        }
    }
    for r in m
        .records
        .iter()
        .filter(|r| r.key.is_none() || r.offset >= untouched_from)
    {
        prop_assert!(
            present.contains(&r.offset),
            "record at {} must be untouched",
            r.offset
        );
    }
    // Reading from any offset, gaps included, gives exactly the records at or after it.
    for from in [1, got.len() / 3, got.len() / 2, got.len().saturating_sub(1)] {
        if let Some(&(start, ..)) = got.get(from) {
            let probe = start.saturating_sub(1).max(log.log_start_offset());
            let want: Vec<_> = got.iter().filter(|g| g.0 >= probe).cloned().collect();
            prop_assert_eq!(read_from(log, probe), want);
        }
    }
    Ok(())
}

fn append(log: &Log, m: &mut Model, records: &[(Option<u8>, bool)], c: u8, producer: Option<u8>) {
    let mut b = BatchBuilder::new(codec(c));
    if let Some(p) = producer {
        b = b.producer(i64::from(p), 0, m.counter as i32);
    }
    let base = log.log_end_offset();
    for (i, (key, tomb)) in records.iter().enumerate() {
        m.counter += 1;
        let key = key.map(|k| format!("k{k}"));
        let value = (!tomb || key.is_none()).then(|| format!("v{}", m.counter));
        b.append(
            m.now,
            key.as_deref().map(str::as_bytes),
            value.as_deref().map(str::as_bytes),
            &[],
        );
        m.records.push(Rec {
            offset: base + i as u64,
            key,
            value,
            appended_ms: m.now,
        });
    }
    log.append_as_leader(&b.build().unwrap(), 1, m.now).unwrap();
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("c", 0);
    let (mut mgr, _) = LogManager::open(d.path(), config()).unwrap();
    let mut log = mgr.get_or_create(&tp, config()).unwrap();
    let mut m = Model {
        now: 1_000_000,
        ..Model::default()
    };
    let mut untouched_from = 0u64;
    for op in ops {
        match op {
            Op::Append {
                records,
                codec,
                producer,
            } => append(&log, &mut m, &records, codec, producer),
            Op::Roll => log.roll_now(m.now).unwrap(),
            Op::Sleep(ms) => m.now += ms,
            Op::Clean {
                hw_share,
                budget_keys,
                crash,
            } => {
                let end = log.log_end_offset();
                let hw = ((end as f64) * hw_share).min(end as f64) as u64;
                untouched_from = untouched_from.max(hw);
                match log.clean(&opts(&m, hw, budget_keys, crash)) {
                    Ok(Some(_)) => m.cleans.push(m.now),
                    Ok(None) => {}
                    Err(e) => {
                        prop_assert!(
                            crash.is_some()
                                || matches!(e, super::LogError::CleanerBufferTooSmall { .. }),
                            "clean failed: {}",
                            e
                        );
                        if crash.is_some() {
                            // The process "dies" here: no clean shutdown, reopen.
                            m.cleans.push(m.now);
                            drop(log);
                            drop(mgr);
                            (mgr, _) = LogManager::open(d.path(), config()).unwrap();
                            log = mgr.get(&tp).unwrap();
                            prop_assert!(log.offline_reason().is_none());
                        }
                    }
                }
            }
            Op::FullClean { budget_keys } => {
                log.roll_now(m.now).unwrap();
                let end = log.log_end_offset();
                for _ in 0..20 {
                    match log.clean(&opts(&m, end, budget_keys.max(8), None)).unwrap() {
                        Some(_) => m.cleans.push(m.now),
                        None => break,
                    }
                }
                untouched_from = end;
                check(&log, &m, end)?;
                let live: std::collections::HashSet<u64> =
                    m.latest_per_key().values().map(|r| r.offset).collect();
                for (off, key, _) in read_from(&log, 0) {
                    prop_assert!(
                        key.is_none() || live.contains(&off),
                        "superseded record at {} survived a full clean",
                        off
                    );
                }
            }
            Op::Reopen => {
                mgr.shutdown().unwrap();
                drop(log);
                drop(mgr);
                (mgr, _) = LogManager::open(d.path(), config()).unwrap();
                log = mgr.get(&tp).unwrap();
            }
        }
        check(&log, &m, untouched_from)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150),
        ..ProptestConfig::default()
    })]
    #[test]
    fn compaction_matches_model(ops in proptest::collection::vec(op(), 1..50)) {
        run(ops)?;
    }
}

/// Found by the model: a merged group that lost every record became an empty segment,
/// which crash recovery took for a torn write and cut everything after.
#[test]
fn an_emptied_group_survives_crash_recovery() {
    use Op::*;
    let a = |r: Vec<(Option<u8>, bool)>, codec: u8| Append {
        records: r,
        codec,
        producer: None,
    };
    let n = None;
    let ops = vec![
        a(vec![(Some(4), false)], 0),
        a(vec![(Some(0), false)], 0),
        FullClean { budget_keys: 2 },
        a(vec![(n, false), (Some(0), false), (n, false)], 1),
        a(
            vec![
                (n, false),
                (Some(0), false),
                (n, false),
                (Some(1), false),
                (Some(0), false),
            ],
            2,
        ),
        a(
            vec![
                (n, false),
                (Some(2), false),
                (Some(0), false),
                (Some(4), false),
            ],
            1,
        ),
        a(vec![(n, false), (n, false)], 1),
        FullClean { budget_keys: 2 },
        a(vec![(Some(0), false)], 1),
        a(
            vec![(Some(0), false), (Some(1), false), (Some(0), false)],
            1,
        ),
        a(vec![(n, false), (n, false)], 1),
        a(vec![(n, false), (n, false), (n, false)], 1),
        a(vec![(n, false), (n, false)], 1),
        a(vec![(n, false), (n, false)], 1),
        a(
            vec![(n, false), (n, false), (n, false), (n, false), (n, false)],
            0,
        ),
        Clean {
            hw_share: 0.8053072808477515,
            budget_keys: 2,
            crash: Some(CrashAt::TornTmp(0.0)),
        },
    ];
    run(ops).unwrap();
}

fn keyed(log: &Log, now: i64, producer: Option<(i64, i32)>, records: &[(&str, Option<&str>)]) {
    let mut b = BatchBuilder::new(Compression::None);
    if let Some((id, seq)) = producer {
        b = b.producer(id, 0, seq);
    }
    for (k, v) in records {
        b.append(now, Some(k.as_bytes()), v.map(str::as_bytes), &[]);
    }
    log.append_as_leader(&b.build().unwrap(), 1, now).unwrap();
}

fn one_log(d: &std::path::Path) -> (LogManager, std::sync::Arc<Log>) {
    let (mgr, _) = LogManager::open(d, config()).unwrap();
    let log = mgr
        .get_or_create(&TopicPartition::new("c", 0), config())
        .unwrap();
    (mgr, log)
}

fn clean_opts(now: i64, hw: u64, budget_keys: usize) -> CleanOptions {
    CleanOptions {
        now_ms: now,
        high_watermark: hw,
        dedupe_buffer_bytes: budget_keys * 27,
        producer_expiration_ms: 60_000,
        crash_at: None,
        throttle: None,
    }
}

#[test]
fn a_producers_last_batch_stays_as_a_header_so_its_sequence_survives() {
    let d = tempfile::tempdir().unwrap();
    let (_mgr, log) = one_log(d.path());
    let now = 1_000_000;
    keyed(
        &log,
        now,
        Some((7, 0)),
        &[("a", Some("1")), ("b", Some("1"))],
    );
    keyed(&log, now, Some((7, 2)), &[("a", Some("2"))]);
    keyed(&log, now, None, &[("a", Some("3")), ("b", Some("3"))]);
    log.roll_now(now).unwrap();
    log.clean(&clean_opts(now, log.log_end_offset(), 100))
        .unwrap()
        .unwrap();
    let r = log.read(0, 1 << 20, None).unwrap();
    let batches: Vec<_> = Batches::new(r.data).map(Result::unwrap).collect();
    // Producer 7's first batch went entirely; its last (offset 2) stays as a bare
    // header with its sequence; the plain batch keeps both records.
    let shape: Vec<_> = batches
        .iter()
        .map(|b| {
            (
                b.base_offset(),
                b.record_count(),
                b.producer_id(),
                b.base_sequence(),
            )
        })
        .collect();
    assert_eq!(shape, vec![(2, 0, 7, 2), (3, 2, -1, -1)]);
}

#[test]
fn tombstones_stay_for_delete_retention_after_the_first_pass_then_go() {
    let d = tempfile::tempdir().unwrap();
    let (_mgr, log) = one_log(d.path());
    let t0 = 1_000_000;
    keyed(&log, t0, None, &[("a", Some("1")), ("b", Some("1"))]);
    keyed(&log, t0, None, &[("a", None)]);
    log.roll_now(t0).unwrap();
    let end = log.log_end_offset();
    log.clean(&clean_opts(t0 + 10, end, 100)).unwrap().unwrap();
    let keys = |log: &Log| -> Vec<(u64, Option<String>, Option<String>)> { read_from(log, 0) };
    assert_eq!(
        keys(&log),
        vec![
            (1, Some("b".into()), Some("1".into())),
            (2, Some("a".into()), None)
        ]
    );
    // Not yet due: the horizon is the first pass's time plus delete.retention.ms.
    assert!(!log.compaction_view(t0 + 10 + RETENTION_MS - 1, end).due);
    log.clean(&clean_opts(t0 + 10 + RETENTION_MS - 1, end, 100))
        .unwrap();
    assert_eq!(
        keys(&log).len(),
        2,
        "a pass before the horizon keeps the tombstone"
    );
    assert!(log.compaction_view(t0 + 10 + RETENTION_MS, end).due);
    let before = log.tombstone_removal_mark();
    assert_eq!(log.tombstones_removed_since(Some(before)), 0);
    log.clean(&clean_opts(t0 + 10 + RETENTION_MS, end, 100))
        .unwrap()
        .unwrap();
    assert_eq!(keys(&log), vec![(1, Some("b".into()), Some("1".into()))]);
    // Followers that never fetched offset 2 must learn that a tombstone went there:
    // one whose previous fetch began before the pass, or that never fetched before.
    assert_eq!(log.tombstones_removed_below(), 3);
    assert_eq!(log.tombstones_removed_since(Some(before)), 3);
    assert_eq!(log.tombstones_removed_since(None), 3);
    let after = log.tombstone_removal_mark();
    assert_eq!(log.tombstones_removed_since(Some(after)), 0);
    drop(log);
    drop(_mgr);
    let (_mgr, log) = one_log(d.path());
    assert_eq!(
        log.tombstones_removed_below(),
        3,
        "persisted across a restart"
    );
    assert_eq!(
        log.tombstones_removed_since(Some(after)),
        3,
        "a mark from before a reopen covers what the reopened log cannot list"
    );
}

#[test]
fn a_small_dedupe_buffer_takes_several_passes_and_merges_segments() {
    let d = tempfile::tempdir().unwrap();
    let (mgr, log) = one_log(d.path());
    let now = 1_000_000;
    for round in 0..5 {
        for k in 0..20 {
            let v = format!("{round}");
            keyed(
                &log,
                now,
                None,
                &[(&format!("key{k:02}"), Some(v.as_str()))],
            );
        }
    }
    log.roll_now(now).unwrap();
    let before = (log.segment_count(), log.size_bytes());
    let end = log.log_end_offset();
    let mut passes = 0;
    while log.clean(&clean_opts(now, end, 6)).unwrap().is_some() {
        passes += 1;
        assert!(passes < 50, "cleaning must converge");
    }
    assert!(
        passes > 2,
        "20 keys in a 6-key buffer need several passes, took {passes}"
    );
    let got = read_from(&log, 0);
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|(_, _, v)| v.as_deref() == Some("4")));
    let after = (log.segment_count(), log.size_bytes());
    assert!(
        after.0 < before.0 && after.1 * 4 < before.1,
        "{before:?} -> {after:?}"
    );
    // And a clean restart reads the compacted log back unchanged.
    mgr.shutdown().unwrap();
    drop((log, mgr));
    let (_mgr, log) = one_log(d.path());
    assert_eq!(read_from(&log, 0), got);
}

#[test]
fn nothing_at_or_above_the_high_watermark_is_used_or_touched() {
    let d = tempfile::tempdir().unwrap();
    let (_mgr, log) = one_log(d.path());
    let now = 1_000_000;
    keyed(&log, now, None, &[("a", Some("1"))]);
    log.roll_now(now).unwrap();
    keyed(&log, now, None, &[("a", Some("2"))]);
    log.roll_now(now).unwrap();
    // The second segment reaches the high watermark: "a"=2 might still be truncated,
    // so "a"=1 must stay.
    assert!(log
        .clean(&clean_opts(now, 1, 100))
        .unwrap()
        .is_none_or(|s| s.records_removed == 0));
    assert_eq!(read_from(&log, 0).len(), 2);
    log.clean(&clean_opts(now, 2, 100)).unwrap().unwrap();
    assert_eq!(
        read_from(&log, 0),
        vec![(1, Some("a".into()), Some("2".into()))]
    );
}

/// Issue 18: a pass whose map filled before a tombstone past its horizon removed the
/// tombstone and kept the older value below the map's end — the key came back.
#[test]
fn a_tombstone_above_a_full_maps_end_stays_until_a_map_covers_it() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let (mgr, _) = LogManager::open(d.path(), config.clone()).unwrap();
    let log = mgr
        .get_or_create(&TopicPartition::new("c", 0), config)
        .unwrap();
    let t0 = 1_000_000;
    keyed(&log, t0, None, &[("a", Some("old"))]);
    for k in 1..10 {
        keyed(&log, t0, None, &[(&format!("k{k}"), Some("v"))]);
    }
    keyed(&log, t0, None, &[("a", None)]);
    // One sealed segment holds it all; every pass rewrites it whole.
    log.roll_now(t0).unwrap();
    let end = log.log_end_offset();
    let a_values = |log: &Log| -> Vec<(u64, Option<String>)> {
        read_from(log, 0)
            .into_iter()
            .filter(|(_, k, _)| k.as_deref() == Some("a"))
            .map(|(o, _, v)| (o, v))
            .collect()
    };
    let mut now = t0;
    let mut passes = 0;
    // A 3-key map: each pass covers three batches, so the first passes end below the
    // tombstone at offset 10 — after its horizon has passed.
    while log.clean(&clean_opts(now, end, 4)).unwrap().is_some() {
        passes += 1;
        assert!(passes < 20, "cleaning must converge");
        let a = a_values(&log);
        assert!(
            a.is_empty() || a.last().is_some_and(|(_, v)| v.is_none()),
            "after pass {passes}, key a reads as {a:?}: its tombstone went before its value"
        );
        now += RETENTION_MS + 1;
    }
    assert!(passes >= 3, "the map filled: several passes, took {passes}");
    assert_eq!(a_values(&log), vec![], "key a is deleted for good");
    assert_eq!(read_from(&log, 0).len(), 9);
}
