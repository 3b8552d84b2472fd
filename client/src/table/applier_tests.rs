//! The applier's source positions: records go through the real decoder, assembler and
//! `apply_unit` into a set without network or tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::batch::{BatchBuilder, Header};
use sluice_proto::Compression;
use tokio::sync::{broadcast, watch};

use super::*;
use crate::table::fetch::decode;
use crate::table::source::SourceState;
use crate::table::store::Store;
use crate::table::txn::Rec;
use crate::table::{
    SourcePos, HEARTBEAT_HEADER, HEARTBEAT_KEY, POS_HEADER, TXN_END_HEADER, TXN_HEADER,
};

const USERS: usize = 0;

/// A set of one topic, "users", with `partitions` partitions at offset 0.
fn set(partitions: u32) -> Arc<SetShared> {
    let topic = TopicShared {
        topic: "users".into(),
        topic_id: "id-1".into(),
        store: Store::new(4, 0, 0),
        snapshot_rows: None,
        position: watch::channel((0..partitions).map(|p| (p, 0)).collect()).0,
        changes: broadcast::channel(16).0,
        malformed_positions: Default::default(),
        row_images: false,
    };
    Arc::new(SetShared {
        topics: vec![Arc::new(topic)],
        source: watch::channel(SourceState::new([partitions as usize])).0,
        readiness: watch::channel(Readiness::Ready).0,
        opened_at: Instant::now(),
        bootstrap_ms: OnceLock::new(),
        shutdown: watch::channel(false).0,
        finished: watch::channel(false).0,
        apply_lock_max_us: Default::default(),
        snapshot_dir: None,
        apply_chunk_records: 1024,
        large_unit_records: 4096,
    })
}

fn assembler(partitions: u32) -> Assembler {
    Assembler::new(
        &["users".to_string()],
        (0..partitions).map(|p| ((USERS, p), 0)),
        1024,
        Duration::from_secs(2),
    )
}

fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.into(),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// One record to encode: key, value, headers.
type Spec<'a> = (&'a [u8], &'a [u8], Vec<Header>);

/// `specs` encoded as one batch at `base` and decoded the way a fetch task does.
fn fetched(base: u64, specs: Vec<Spec<'_>>) -> (Vec<Rec>, u64) {
    let mut b = BatchBuilder::new(Compression::None);
    for (k, v, h) in &specs {
        b.append(0, Some(k), Some(v), h);
    }
    let mut buf = b.build().unwrap().into_bytes().to_vec();
    sluice_proto::batch::stamp(&mut buf, base as i64, 0);
    let d = decode("users", 0, Bytes::from(buf), base, false).unwrap();
    (d.records, d.malformed_positions)
}

fn row<'a>(key: &'a str, pos: &str, more: Vec<Header>) -> Spec<'a> {
    let mut h = vec![header(POS_HEADER, pos)];
    h.extend(more);
    (key.as_bytes(), b"v", h)
}

fn heartbeat(pos: &str) -> Spec<'static> {
    (
        HEARTBEAT_KEY,
        b"{}",
        vec![header(HEARTBEAT_HEADER, ""), header(POS_HEADER, pos)],
    )
}

fn txn(id: &str) -> Header {
    header(TXN_HEADER, id)
}

fn txn_end(list: &str) -> Header {
    header(TXN_END_HEADER, list)
}

/// Pushes `records` of partition `p` and applies everything that can be.
fn deliver(s: &SetShared, a: &mut Assembler, p: u32, records: Vec<Rec>) {
    let next = records.last().map_or(0, |r| r.offset + 1);
    let now = Instant::now();
    a.push((USERS, p), records, next, now);
    for unit in a.drain(now) {
        apply_unit(s, unit).unwrap();
    }
}

fn pg(s: &str) -> SourcePos {
    format!("pg:{s}").parse().unwrap()
}

fn table_min(s: &SetShared) -> Option<SourcePos> {
    s.source.borrow().topic_min(USERS).cloned()
}

#[test]
fn a_transaction_moves_the_source_position_only_once_it_is_visible() {
    let s = set(2);
    let mut a = assembler(2);
    let end = txn_end("users:0,users:1");
    let (p0, _) = fetched(
        0,
        vec![
            heartbeat("pg:0/4#0"),
            row("a", "pg:0/10#0", vec![txn("T")]),
            row("b", "pg:0/10#1", vec![txn("T"), end.clone()]),
        ],
    );
    deliver(&s, &mut a, 0, p0);
    assert_eq!(
        table_min(&s),
        None,
        "partition 1 applied nothing positioned"
    );
    let (p1, _) = fetched(0, vec![heartbeat("pg:0/5#0")]);
    deliver(&s, &mut a, 1, p1);
    assert_eq!(
        table_min(&s),
        Some(pg("0/4")),
        "T is held: partition 0 is at its heartbeat"
    );
    assert_eq!(s.topics[USERS].store.get(b"a"), None);
    let (p1, _) = fetched(1, vec![row("c", "pg:0/10#2", vec![txn("T"), end])]);
    deliver(&s, &mut a, 1, p1);
    assert_eq!(table_min(&s), Some(pg("0/10")));
    assert_eq!(s.source.borrow().min(), Some(&pg("0/10")));
    for k in [&b"a"[..], b"b", b"c"] {
        assert!(s.topics[USERS].store.get(k).is_some(), "{k:?} visible");
    }
}

#[test]
fn the_table_position_is_the_least_of_its_partitions() {
    let s = set(3);
    let mut a = assembler(3);
    for (p, pos) in [(0, "pg:0/30#0"), (1, "pg:0/10#4"), (2, "pg:0/20#0")] {
        let (r, _) = fetched(0, vec![row("k", pos, vec![])]);
        deliver(&s, &mut a, p, r);
    }
    assert_eq!(table_min(&s), Some(pg("0/10")));
    let (r, _) = fetched(1, vec![heartbeat("pg:0/40#0")]);
    deliver(&s, &mut a, 1, r);
    assert_eq!(table_min(&s), Some(pg("0/20")));
}

#[test]
fn heartbeats_move_the_position_and_are_never_rows() {
    let s = set(1);
    let mut a = assembler(1);
    let mut changes = s.topics[USERS].changes.subscribe();
    // A heartbeat with a sluice.txn header (no connector writes one) is still only a
    // heartbeat: not held, not a row.
    let mut odd = heartbeat("pg:0/8#0");
    odd.2.push(txn("T"));
    let (r, _) = fetched(0, vec![heartbeat("pg:0/7#0"), odd]);
    assert!(r.iter().all(|r| r.key.is_none() && r.txn.is_none()));
    deliver(&s, &mut a, 0, r);
    assert_eq!(table_min(&s), Some(pg("0/8")));
    assert_eq!(s.topics[USERS].store.totals().rows, 0);
    assert_eq!(s.topics[USERS].store.get(HEARTBEAT_KEY), None);
    assert!(changes.try_recv().is_err(), "no change set for heartbeats");
    assert_eq!(*s.topics[USERS].position.borrow(), BTreeMap::from([(0, 2)]));
}

#[test]
fn malformed_positions_are_counted_and_the_records_applied() {
    let s = set(1);
    let mut a = assembler(1);
    let (r, malformed) = fetched(
        0,
        vec![
            row("a", "pg:0/10#0", vec![]),
            row("b", "pg:nonsense", vec![]),
            (
                b"c",
                b"v",
                vec![Header {
                    key: POS_HEADER.into(),
                    value: None,
                }],
            ),
            row("d", "\u{0}#x", vec![]),
        ],
    );
    assert_eq!(malformed, 3);
    deliver(&s, &mut a, 0, r);
    assert_eq!(table_min(&s), Some(pg("0/10")));
    assert_eq!(s.topics[USERS].store.totals().rows, 4);
}

#[test]
fn rows_of_an_initial_copy_carry_no_position_until_the_heartbeat_after_it() {
    let copy = |k| {
        row(
            k,
            "pg:0/50#0",
            vec![header(sluice_proto::source_pos::SNAPSHOT_HEADER, "1")],
        )
    };
    let (recs, malformed) = fetched(
        0,
        vec![
            copy("a"),
            copy("b"),
            heartbeat("pg:0/50#18446744073709551615"),
        ],
    );
    assert_eq!(malformed, 0);
    assert!(
        recs[0].pos.is_none() && recs[1].pos.is_none(),
        "copy rows move no position"
    );
    assert_eq!(recs[0].key.as_deref(), Some(&b"a"[..]), "but they are rows");
    assert_eq!(
        recs[2].pos.as_deref().map(|p| (&p.pos, p.heartbeat)),
        Some((&"pg:0/50".parse::<SourcePos>().unwrap(), true))
    );
}

#[test]
fn a_truncate_marker_is_no_row_but_stays_in_its_transaction() {
    use sluice_proto::source_pos::{TRUNCATE_HEADER, TRUNCATE_KEY};
    let s = set(1);
    let mut a = assembler(1);
    let marker: Spec<'_> = (
        TRUNCATE_KEY,
        br#"{"op":"t"}"#,
        vec![
            header(POS_HEADER, "pg:0/9#0"),
            txn("9"),
            header(TRUNCATE_HEADER, "1"),
        ],
    );
    let (held, _) = fetched(0, vec![marker]);
    deliver(&s, &mut a, 0, held);
    assert_eq!(
        s.topics[USERS].position.borrow()[&0],
        0,
        "the marker is held with its transaction, not applied alone"
    );
    let (rest, _) = fetched(
        1,
        vec![row("k", "pg:0/9#1", vec![txn("9"), txn_end("users:0")])],
    );
    deliver(&s, &mut a, 0, rest);
    assert_eq!(s.topics[USERS].position.borrow()[&0], 2);
    assert_eq!(table_min(&s), Some(pg("0/9")));
    assert_eq!(s.topics[USERS].store.get(TRUNCATE_KEY), None, "never a row");
    assert!(s.topics[USERS].store.get(b"k").is_some());
}

/// `row_images`: every CDC record's value becomes its row, in a topic whose format
/// changed between connector runs (envelopes, then rows); other values stay.
#[test]
fn row_images_are_the_rows_of_envelopes_and_row_records_alike() {
    use crate::table::FORMAT_HEADER;
    let envelope = br#"{"before":null,"after":{"id":1,"n":"a"},"source":{"lsn":16},"op":"c"}"#;
    let deleted = br#"{"before":{"id":3},"after":null,"op":"d"}"#;
    let specs = || -> Vec<Spec<'static>> {
        vec![
            (b"k1", envelope, vec![header(POS_HEADER, "pg:0/10#0")]),
            (b"k3", deleted, vec![header(POS_HEADER, "pg:0/10#1")]),
            (
                b"k2",
                br#"{"id":2,"after":{"x":1}}"#,
                vec![
                    header(POS_HEADER, "pg:0/20#0"),
                    header(FORMAT_HEADER, "row"),
                ],
            ),
            // Not written by a connector: kept as it is.
            (b"k4", envelope, vec![]),
        ]
    };
    let encode = |row_images: bool| {
        let mut b = BatchBuilder::new(Compression::None);
        for (k, v, h) in &specs() {
            b.append(0, Some(k), Some(v), h);
        }
        let mut buf = b.build().unwrap().into_bytes().to_vec();
        sluice_proto::batch::stamp(&mut buf, 0, 0);
        decode("users", 0, Bytes::from(buf), 0, row_images)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()))
            .collect::<Vec<_>>()
    };
    let text = |b: &[u8]| Some(String::from_utf8(b.to_vec()).unwrap());
    assert_eq!(
        encode(true),
        vec![
            text(br#"{"id":1,"n":"a"}"#),
            None,
            text(br#"{"id":2,"after":{"x":1}}"#),
            text(envelope),
        ]
    );
    assert_eq!(
        encode(false),
        vec![
            text(envelope),
            text(deleted),
            text(br#"{"id":2,"after":{"x":1}}"#),
            text(envelope),
        ]
    );
}
