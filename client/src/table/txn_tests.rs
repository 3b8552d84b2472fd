use std::time::{Duration, Instant};

use super::*;

const A: Tp = (0, 0);
const B: Tp = (0, 1);
const C: Tp = (1, 0);
const WAIT: Duration = Duration::from_secs(2);

fn plain(offset: u64, key: &str) -> Rec {
    Rec {
        offset,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::from_static(b"v")),
        txn: None,
        pos: None,
    }
}

fn txn(offset: u64, key: &str, id: &str, end: Option<&str>) -> Rec {
    Rec {
        txn: Some(Box::new(TxnTag {
            id: Bytes::copy_from_slice(id.as_bytes()),
            end: end.map(|e| Bytes::copy_from_slice(e.as_bytes())),
        })),
        ..plain(offset, key)
    }
}

fn assembler() -> Assembler {
    Assembler::new(
        &["users".to_string(), "orders".to_string()],
        [(A, 0), (B, 0), (C, 0)],
        1000,
        WAIT,
    )
}

/// (txn id, [(tp, keys, position)]) of one unit.
type UnitSummary = (Option<String>, Vec<(Tp, Vec<String>, u64)>);

/// Each unit summarized, for compact assertions.
fn summary(units: &[Unit]) -> Vec<UnitSummary> {
    units
        .iter()
        .map(|u| {
            (
                u.txn
                    .as_ref()
                    .map(|t| String::from_utf8_lossy(t).into_owned()),
                u.pieces
                    .iter()
                    .map(|p| {
                        let keys = p
                            .records
                            .iter()
                            .map(|r| {
                                String::from_utf8_lossy(r.key.as_deref().unwrap_or(b""))
                                    .into_owned()
                            })
                            .collect();
                        (p.tp, keys, p.position)
                    })
                    .collect(),
            )
        })
        .collect()
}

fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn plain_records_are_released_at_once_in_chunks() {
    let mut a = Assembler::new(&["users".to_string()], [(A, 0)], 2, WAIT);
    let now = Instant::now();
    a.push(A, vec![plain(0, "a"), plain(1, "b"), plain(2, "c")], 5, now);
    let units = a.drain(now);
    assert_eq!(
        summary(&units),
        vec![
            (None, vec![(A, keys(&["a", "b"]), 2)]),
            (None, vec![(A, keys(&["c"]), 5)]),
        ]
    );
    assert!(!a.holding());
}

#[test]
fn a_transaction_is_held_until_its_end_record_and_position_stops_before_it() {
    let mut a = assembler();
    let now = Instant::now();
    a.push(A, vec![plain(0, "p"), txn(1, "x1", "T", None)], 2, now);
    let units = a.drain(now);
    assert_eq!(summary(&units), vec![(None, vec![(A, keys(&["p"]), 1)])]);
    assert!(a.holding());
    a.push(
        A,
        vec![txn(2, "x2", "T", Some("users:0")), plain(3, "q")],
        4,
        now,
    );
    assert_eq!(
        summary(&a.drain(now)),
        vec![
            (Some("T".into()), vec![(A, keys(&["x1", "x2"]), 3)]),
            (None, vec![(A, keys(&["q"]), 4)]),
        ]
    );
}

#[test]
fn pieces_in_several_partitions_and_topics_are_released_together() {
    let mut a = assembler();
    let now = Instant::now();
    let list = "users:0,users:1,orders:0";
    a.push(A, vec![txn(0, "a", "T", Some(list))], 1, now);
    a.push(C, vec![txn(0, "c", "T", Some(list))], 1, now);
    // users:1 has not delivered its piece yet: nothing is released.
    assert!(a.drain(now).is_empty());
    a.push(
        B,
        vec![plain(0, "before"), txn(1, "b", "T", Some(list))],
        2,
        now,
    );
    let units = a.drain(now);
    assert_eq!(
        summary(&units),
        vec![
            (None, vec![(B, keys(&["before"]), 1)]),
            (
                Some("T".into()),
                vec![
                    (A, keys(&["a"]), 1),
                    (B, keys(&["b"]), 2),
                    (C, keys(&["c"]), 1)
                ]
            ),
        ]
    );
}

#[test]
fn a_compacted_end_record_completes_the_piece_when_the_partition_moves_on() {
    let mut a = assembler();
    let now = Instant::now();
    // T's end record in A was compacted away: A goes on with U's records.
    a.push(
        A,
        vec![txn(0, "a1", "T", None), txn(1, "a2", "T", None)],
        2,
        now,
    );
    assert!(a.drain(now).is_empty(), "A's piece may still continue");
    a.push(A, vec![txn(5, "u", "U", Some("users:0"))], 6, now);
    assert_eq!(
        summary(&a.drain(now)),
        vec![
            (Some("T".into()), vec![(A, keys(&["a1", "a2"]), 5)]),
            (Some("U".into()), vec![(A, keys(&["u"]), 6)]),
        ]
    );
    // A plain record after a transaction completes it too.
    a.push(B, vec![txn(0, "b", "V", None), plain(1, "p")], 2, now);
    assert_eq!(
        summary(&a.drain(now)),
        vec![
            (Some("V".into()), vec![(B, keys(&["b"]), 1)]),
            (None, vec![(B, keys(&["p"]), 2)]),
        ]
    );
}

#[test]
fn a_listed_piece_that_never_arrives_is_given_up_on_after_the_wait() {
    let mut a = assembler();
    let t0 = Instant::now();
    a.push(A, vec![txn(0, "a", "T", Some("users:0,users:1"))], 1, t0);
    a.push(B, vec![], 7, t0);
    assert!(summary(&a.drain(t0)).iter().all(|(t, _)| t.is_none()));
    // B answered, but not after the wait: still held.
    let later = t0 + WAIT + Duration::from_millis(1);
    assert!(summary(&a.drain(later)).iter().all(|(t, _)| t.is_none()));
    a.push(B, vec![], 7, later);
    assert_eq!(
        summary(&a.drain(later)),
        vec![(Some("T".into()), vec![(A, keys(&["a"]), 1)])]
    );
}

#[test]
fn a_listed_piece_is_waited_for_while_its_partition_is_still_behind() {
    let mut a = assembler();
    let t0 = Instant::now();
    a.push(A, vec![txn(0, "a", "T", Some("users:0,users:1"))], 1, t0);
    // B is bootstrapping: far from its high watermark, long past the wait.
    let later = t0 + WAIT * 10;
    a.push_fetched(B, vec![plain(0, "x")], 1, 1_000_000, later);
    let units = a.drain(later);
    assert!(
        summary(&units).iter().all(|(t, _)| t.is_none()),
        "T released early"
    );
    // B reaches its piece: T comes out whole.
    a.push_fetched(
        B,
        vec![txn(1, "b", "T", Some("users:0,users:1"))],
        2,
        1_000_000,
        later,
    );
    assert_eq!(
        summary(&a.drain(later)),
        vec![(
            Some("T".into()),
            vec![(A, keys(&["a"]), 1), (B, keys(&["b"]), 2)]
        )]
    );
}

#[test]
fn a_piece_queued_behind_another_transaction_waits_for_it() {
    let mut a = assembler();
    let now = Instant::now();
    a.push(A, vec![txn(0, "a", "T", Some("users:0,users:1"))], 1, now);
    // In B, S (not complete) comes before T's piece.
    a.push(
        B,
        vec![
            txn(0, "s", "S", None),
            txn(1, "b", "T", Some("users:0,users:1")),
        ],
        2,
        now,
    );
    let units = a.drain(now);
    // B's S run is followed by another record, so S (only in B) completes first,
    // then T.
    assert_eq!(
        summary(&units),
        vec![
            (Some("S".into()), vec![(B, keys(&["s"]), 1)]),
            (
                Some("T".into()),
                vec![(A, keys(&["a"]), 1), (B, keys(&["b"]), 2)]
            ),
        ]
    );
}

fn at(mut r: Rec, pos: &str) -> Rec {
    r.pos = Some(Box::new(RecPos {
        pos: format!("pg:{pos}").parse().unwrap(),
        heartbeat: false,
    }));
    r
}

/// A heartbeat as `fetch::decode` hands it over.
fn heartbeat(offset: u64, pos: &str) -> Rec {
    Rec {
        offset,
        key: None,
        value: None,
        txn: None,
        pos: Some(Box::new(RecPos {
            pos: format!("pg:{pos}").parse().unwrap(),
            heartbeat: true,
        })),
    }
}

fn txn_units(units: &[Unit]) -> Vec<UnitSummary> {
    summary(units)
        .into_iter()
        .filter(|(t, _)| t.is_some())
        .collect()
}

#[test]
fn a_late_piece_of_a_positioned_transaction_is_waited_for_however_long() {
    let mut a = assembler();
    let t0 = Instant::now();
    let list = "users:0,users:1";
    a.push(A, vec![at(txn(0, "a", "T", Some(list)), "0/10")], 1, t0);
    // B answers at its high watermark again and again, long past the wait, with
    // nothing or only records from before T: its piece may still come.
    for i in 1..20u64 {
        let later = t0 + WAIT * i as u32;
        let recs = match i {
            5 => vec![heartbeat(0, "0/5")],
            9 => vec![at(txn(1, "s", "S", Some("users:1")), "0/8")],
            _ => vec![],
        };
        let next = match i {
            ..5 => 0,
            5..9 => 1,
            _ => 2,
        };
        a.push(B, recs, next, later);
        assert!(txn_units(&a.drain(later))
            .iter()
            .all(|(t, _)| t.as_deref() == Some("S")));
    }
    let later = t0 + WAIT * 30;
    a.push(B, vec![at(txn(2, "b", "T", Some(list)), "0/10")], 3, later);
    assert_eq!(
        txn_units(&a.drain(later)),
        vec![(
            Some("T".into()),
            vec![(A, keys(&["a"]), 1), (B, keys(&["b"]), 3)]
        )]
    );
}

#[test]
fn a_piece_is_known_absent_once_its_partition_delivers_a_record_after_it() {
    let t0 = Instant::now();
    let list = "users:0,users:1";
    // After T: a later change, or a heartbeat at T's own position (written after it).
    for after in [at(plain(4, "later"), "0/11"), heartbeat(4, "0/10")] {
        let mut a = assembler();
        a.push(A, vec![at(txn(0, "a", "T", Some(list)), "0/10")], 1, t0);
        // A record at T's position that is neither T's nor a heartbeat says nothing.
        a.push(B, vec![at(plain(3, "odd"), "0/10")], 4, t0);
        assert!(txn_units(&a.drain(t0)).is_empty());
        a.push(B, vec![after], 5, t0);
        assert_eq!(
            txn_units(&a.drain(t0)),
            vec![(Some("T".into()), vec![(A, keys(&["a"]), 1)])],
            "compaction removed B's piece"
        );
    }
}

#[test]
fn a_positioned_transaction_without_end_records_waits_for_every_partition() {
    let mut a = assembler();
    let t0 = Instant::now();
    // T's end records were compacted away: A's piece is complete (a later record
    // follows it), but which other partitions hold pieces is unknown.
    a.push(
        A,
        vec![at(txn(0, "a", "T", None), "0/10"), heartbeat(1, "0/20")],
        2,
        t0,
    );
    a.push(B, vec![heartbeat(0, "0/30")], 1, t0);
    assert!(
        txn_units(&a.drain(t0 + WAIT * 10)).is_empty(),
        "C may hold a piece"
    );
    a.push(C, vec![at(txn(0, "c", "T", None), "0/10")], 1, t0);
    assert!(txn_units(&a.drain(t0)).is_empty(), "C's piece may go on");
    a.push(C, vec![heartbeat(1, "0/10")], 2, t0);
    assert_eq!(
        txn_units(&a.drain(t0)),
        vec![(
            Some("T".into()),
            vec![(A, keys(&["a"]), 1), (C, keys(&["c"]), 1)]
        )]
    );
}

#[test]
fn a_partition_read_to_its_end_without_any_position_is_no_piece_of_an_unlisted_transaction() {
    let mut a = assembler();
    let t0 = Instant::now();
    a.push(
        A,
        vec![at(txn(0, "a", "T", None), "0/10"), heartbeat(1, "0/20")],
        2,
        t0,
    );
    a.push(B, vec![heartbeat(0, "0/30")], 1, t0);
    // C is still being read (not at its high watermark): it may hold a piece.
    a.push_fetched(C, vec![plain(0, "x")], 1, 50, t0);
    assert!(txn_units(&a.drain(t0)).is_empty());
    // C (another writer's topic) is read to its end: no position anywhere in it.
    a.push_fetched(C, vec![plain(1, "y")], 2, 2, t0);
    assert_eq!(
        txn_units(&a.drain(t0)),
        vec![(Some("T".into()), vec![(A, keys(&["a"]), 1)])]
    );
}

#[test]
fn a_topic_nothing_ties_to_the_transactions_source_is_waited_for_by_the_wall_clock_only() {
    let mut a = assembler();
    let t0 = Instant::now();
    // users (A, B) and orders (C) come from two databases: C's positions are another
    // server's and may stay below T's for good. T's end records were compacted away.
    a.push(
        A,
        vec![at(txn(0, "a", "T", None), "0/900"), heartbeat(1, "0/950")],
        2,
        t0,
    );
    a.push(B, vec![heartbeat(0, "0/1000")], 1, t0);
    a.push(C, vec![heartbeat(0, "0/10")], 1, t0);
    assert!(txn_units(&a.drain(t0)).is_empty(), "C may hold a piece");
    let later = t0 + WAIT + Duration::from_millis(1);
    a.push(C, vec![], 1, later);
    assert_eq!(
        txn_units(&a.drain(later)),
        vec![(Some("T".into()), vec![(A, keys(&["a"]), 1)])],
        "no wait forever on another source's positions"
    );
}

#[test]
fn a_topic_an_end_record_ties_to_the_transactions_source_is_waited_for_by_position() {
    let mut a = assembler();
    let t0 = Instant::now();
    // U wrote users:0 and orders:0: one source.
    let list = "users:0,orders:0";
    a.push(A, vec![at(txn(0, "u", "U", Some(list)), "0/5")], 1, t0);
    a.push(C, vec![at(txn(0, "o", "U", Some(list)), "0/5")], 1, t0);
    assert_eq!(txn_units(&a.drain(t0)).len(), 1);
    a.push(
        A,
        vec![at(txn(1, "a", "T", None), "0/900"), heartbeat(2, "0/950")],
        3,
        t0,
    );
    a.push(B, vec![heartbeat(0, "0/1000")], 1, t0);
    for i in 1..10u32 {
        let later = t0 + WAIT * i;
        a.push(C, vec![], 1, later);
        assert!(txn_units(&a.drain(later)).is_empty(), "C may hold a piece");
    }
    a.push(C, vec![heartbeat(1, "0/900")], 2, t0 + WAIT * 10);
    assert_eq!(txn_units(&a.drain(t0 + WAIT * 10)).len(), 1);
}

#[test]
fn a_reset_forgets_how_far_the_partition_was_read() {
    let mut a = assembler();
    let t0 = Instant::now();
    let list = "users:0,users:1";
    a.push(B, vec![heartbeat(0, "0/5")], 1, t0);
    a.push(B, vec![heartbeat(7, "0/50")], 8, t0);
    a.reset(B, 3);
    a.push(A, vec![at(txn(0, "a", "T", Some(list)), "0/10")], 1, t0);
    assert!(txn_units(&a.drain(t0)).is_empty(), "B is read again from 3");
    a.push(B, vec![at(txn(3, "b", "T", Some(list)), "0/10")], 4, t0);
    assert_eq!(txn_units(&a.drain(t0)).len(), 1);
}

#[test]
fn redelivered_offsets_are_dropped_and_reset_starts_over() {
    let mut a = assembler();
    let now = Instant::now();
    a.push(A, vec![plain(0, "a"), plain(1, "b")], 2, now);
    a.drain(now);
    a.push(A, vec![plain(1, "b"), plain(2, "c")], 3, now);
    assert_eq!(
        summary(&a.drain(now)),
        vec![(None, vec![(A, keys(&["c"]), 3)])]
    );
    a.push(A, vec![txn(3, "held", "T", None)], 4, now);
    a.reset(A, 10);
    assert_eq!(summary(&a.drain(now)), vec![(None, vec![(A, vec![], 10)])]);
    assert!(!a.holding());
}

#[test]
fn empty_deliveries_move_the_position_once() {
    let mut a = assembler();
    let now = Instant::now();
    a.push(C, vec![], 4, now);
    assert_eq!(summary(&a.drain(now)), vec![(None, vec![(C, vec![], 4)])]);
    a.push(C, vec![], 4, now);
    assert!(a.drain(now).is_empty());
}

#[test]
fn end_marker_lists_are_parsed_leniently() {
    let topics: HashMap<String, usize> = [("users".to_string(), 0), ("a:b".to_string(), 1)]
        .into_iter()
        .collect();
    assert_eq!(
        parse_pieces(b"users:0, a:b:3,unknown:1,users:x,,users", &topics),
        vec![(0, 0), (1, 3)]
    );
    assert!(parse_pieces(&[0xff, 0xfe], &topics).is_empty());
}

mod model {
    //! Random transaction logs delivered in random chunks: the assembler must release
    //! every record once, in offset order per partition, each transaction whole in one
    //! unit (when its end records exist), and end with every position at the log end.

    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;

    const PARTS: [Tp; 3] = [(0, 0), (0, 1), (1, 0)];

    /// One source event: a transaction touching some partitions (records per
    /// partition, 0 = not touched), or a plain record in one partition.
    #[derive(Debug, Clone)]
    enum Event {
        Txn([u8; 3]),
        Plain(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            3 => proptest::array::uniform3(0u8..3).prop_map(Event::Txn),
            1 => (0usize..3).prop_map(Event::Plain),
        ]
    }

    /// The logs the events produce, written in commit order, and each transaction's
    /// records. With `drop_ends`, end records of transactions are removed (as
    /// compaction would) and every partition ends with a plain record.
    fn logs(events: &[Event], drop_ends: bool) -> (Vec<Vec<Rec>>, HashMap<String, usize>) {
        let names = ["t0:0", "t0:1", "t1:0"];
        let mut logs: Vec<Vec<Rec>> = vec![Vec::new(); 3];
        let mut next = [0u64; 3];
        let mut sizes = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Plain(p) => {
                    logs[*p].push(plain(next[*p], &format!("p{i}")));
                    next[*p] += 1;
                }
                Event::Txn(counts) => {
                    let id = format!("T{i}");
                    let list: Vec<&str> = (0..3)
                        .filter(|&p| counts[p] > 0)
                        .map(|p| names[p])
                        .collect();
                    let list = list.join(",");
                    let mut total = 0;
                    for p in 0..3 {
                        for r in 0..counts[p] {
                            let last = r + 1 == counts[p];
                            let end = (last && !drop_ends).then_some(list.as_str());
                            logs[p].push(txn(next[p], &format!("{id}-{p}-{r}"), &id, end));
                            next[p] += 1;
                            total += 1;
                        }
                    }
                    if total > 0 {
                        sizes.insert(id, total);
                    }
                }
            }
        }
        if drop_ends {
            for p in 0..3 {
                logs[p].push(plain(next[p], &format!("tail{p}")));
            }
        }
        (logs, sizes)
    }

    /// What came out of the assembler so far.
    #[derive(Default)]
    struct Seen {
        released: Vec<Vec<u64>>,
        records_per_txn: BTreeMap<String, usize>,
        positions: [u64; 3],
        txn_units: usize,
    }

    impl Seen {
        fn apply(&mut self, units: Vec<Unit>) -> Result<(), TestCaseError> {
            for u in units {
                for piece in &u.pieces {
                    let p = PARTS.iter().position(|&tp| tp == piece.tp).unwrap();
                    for r in &piece.records {
                        let id = r.txn.as_ref().map(|t| t.id.clone());
                        prop_assert_eq!(&id, &u.txn, "a unit mixes transactions");
                        self.released[p].push(r.offset);
                        if let Some(id) = &id {
                            let id = String::from_utf8(id.to_vec()).unwrap();
                            *self.records_per_txn.entry(id).or_default() += 1;
                        }
                    }
                    prop_assert!(piece.position >= self.positions[p], "position went back");
                    self.positions[p] = piece.position;
                }
                self.txn_units += usize::from(u.txn.is_some());
            }
            Ok(())
        }
    }

    fn check(
        events: Vec<Event>,
        chunks: Vec<(usize, usize)>,
        drop_ends: bool,
    ) -> Result<(), TestCaseError> {
        let (logs, sizes) = logs(&events, drop_ends);
        let mut a = Assembler::new(
            &["t0".to_string(), "t1".to_string()],
            PARTS.iter().map(|&tp| (tp, 0)),
            3,
            WAIT,
        );
        let now = Instant::now();
        let mut delivered = [0usize; 3];
        let mut seen = Seen {
            released: vec![Vec::new(); 3],
            ..Seen::default()
        };
        let mut chunks = chunks.into_iter().cycle();
        while (0..3).any(|p| delivered[p] < logs[p].len()) {
            let (p, n) = chunks.next().unwrap();
            let p = if delivered[p] < logs[p].len() {
                p
            } else {
                (0..3).find(|&q| delivered[q] < logs[q].len()).unwrap()
            };
            let end = (delivered[p] + n).min(logs[p].len());
            let part = logs[p][delivered[p]..end].to_vec();
            delivered[p] = end;
            a.push(PARTS[p], part, end as u64, now);
            seen.apply(a.drain(now))?;
        }
        for (p, log) in logs.iter().enumerate() {
            let offsets: Vec<u64> = (0..log.len() as u64).collect();
            prop_assert_eq!(&seen.released[p], &offsets, "partition {} order", p);
            prop_assert_eq!(seen.positions[p], log.len() as u64);
        }
        let sizes: BTreeMap<String, usize> = sizes.into_iter().collect();
        prop_assert_eq!(
            &seen.records_per_txn,
            &sizes,
            "every transaction record released"
        );
        if !drop_ends {
            // With its end records, each transaction is one unit. Without any, a piece
            // is released once its partition moves on, which may be before another
            // partition's piece arrives: pieces may come out apart (docs/table.md).
            prop_assert_eq!(
                seen.txn_units,
                sizes.len(),
                "a transaction split over units"
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn transactions_come_out_whole_and_in_order(
            events in proptest::collection::vec(event(), 1..40),
            chunks in proptest::collection::vec((0usize..3, 1usize..6), 1..20),
        ) {
            check(events, chunks, false)?;
        }

        #[test]
        fn transactions_whose_end_records_were_compacted_still_come_out_in_order(
            events in proptest::collection::vec(event(), 1..40),
            chunks in proptest::collection::vec((0usize..3, 1usize..6), 1..20),
        ) {
            check(events, chunks, true)?;
        }
    }
}
