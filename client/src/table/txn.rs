//! The transaction assembler: sans-IO. Fetched records go in per partition, in offset
//! order; apply units come out, each either a run of plain records of one partition
//! or every held record of one transaction across the partitions (and topics) the set
//! follows. The applier applies each unit under one round of shard locks.
//!
//! Rules (docs/table.md has the user-facing version):
//! - A record without [`TXN_HEADER`] is released as soon as nothing is held before it
//!   in its partition.
//! - Records with `sluice.txn = X` are held. The piece of X in partition p is complete
//!   when p delivered X's end record ([`TXN_END_HEADER`]), or a record after X's that
//!   is not X (the end record was compacted away).
//! - X's pieces: the partitions whose records of X arrived, plus every followed
//!   `topic:partition` an end record lists. A listed piece of which nothing arrived
//!   holds nothing more of X once it was applied earlier (recently-applied memory), or:
//!   - X has a source position (`sluice.pos`, written by the CDC connector): once its
//!     partition delivered a record positioned after X (a heartbeat at X's own
//!     position included). Compaction that removed a whole piece leaves the later
//!     record that superseded it, so this still decides; a partition with nothing
//!     after X yet is waited for, however long (the connector's next heartbeat ends it).
//!   - X has none (a topic written by something else): once `missing_piece_wait`
//!     passed since X was first seen and after that the partition was read up to its
//!     high watermark (so a partition still bootstrapping is waited for).
//! - A positioned X none of whose end records arrived (all compacted away) names no
//!   pieces: every other followed partition must then have delivered a record after X
//!   (or be one that was read to its high watermark without ever carrying a position,
//!   which no connector writes). That is by position for partitions of topics tied to
//!   X's (`source_of`: a transaction was seen in both), by the wall clock for others (another
//!   connector's positions say nothing of X's). Without positions such an X goes out
//!   piece by piece.
//! - X is released when every piece is complete and at the head of its partition.
//!
//! Invariant: within a partition, units come out in offset order; a partition's
//! position never passes a held record. A partition's `last_pos` only grows between
//! resets (records of a partition come in position order).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::source_pos::SourcePos;

/// A partition of a topic of the set: (topic index, partition).
pub(crate) type Tp = (usize, u32);

/// Transaction headers of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnTag {
    pub id: Bytes,
    /// The end record's list of pieces (`topic:partition,...`), when this is one.
    pub end: Option<Bytes>,
}

/// One decoded record, as the fetcher hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub offset: u64,
    /// `None`: a record without key, which a table cannot hold (skipped on apply);
    /// heartbeats are decoded without one.
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub txn: Option<Box<TxnTag>>,
    /// Its `sluice.pos` (boxed: most topics have none, and bootstrap holds millions).
    pub pos: Option<Box<RecPos>>,
}

/// A record's source position, as the table uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecPos {
    pub pos: SourcePos,
    /// A heartbeat: its partition holds everything of the source up to and including
    /// `pos`. Any other record at `pos` belongs to the transaction there.
    pub heartbeat: bool,
}

/// Records of one partition in a unit, and the position after applying them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Piece {
    pub tp: Tp,
    pub records: Vec<Rec>,
    /// Next offset not yet applied in `tp` once this unit is applied.
    pub position: u64,
}

impl Piece {
    /// The source position `tp` reaches once this piece is applied: its last
    /// positioned record's (records of a partition come in position order).
    pub(crate) fn source_position(&self) -> Option<&SourcePos> {
        self.records
            .iter()
            .rev()
            .find_map(|r| r.pos.as_deref().map(|p| &p.pos))
    }
}

/// What to apply at once.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Unit {
    /// The transaction id, when this is a transaction.
    pub txn: Option<Bytes>,
    pub pieces: Vec<Piece>,
}

#[derive(Debug)]
struct Part {
    queue: VecDeque<Rec>,
    /// Next offset after everything delivered.
    next_offset: u64,
    /// The position last reported (so empty advances are reported once).
    reported: u64,
    /// When a delivery last reached the high watermark (nothing more to read then).
    last_caught_up: Option<Instant>,
    /// The last positioned record delivered since the start or the last reset: the
    /// greatest, as a partition's records come in position order.
    last_pos: Option<RecPos>,
    /// Whether any record delivered since open carried a position.
    positioned: bool,
}

#[derive(Debug)]
struct Txn {
    first_seen: Instant,
    /// Followed pieces named by end records.
    listed: HashSet<Tp>,
    /// Whether an end record arrived: then `listed` holds every followed piece.
    end_seen: bool,
    /// X's source position, from its first record that carried one. `None`: written
    /// without positions, so only the wall clock can give up on a missing piece.
    pos: Option<SourcePos>,
    /// Topics X's records arrived in or its end records list (`topic_bit`).
    topics: u64,
}

impl Txn {
    fn new(first_seen: Instant) -> Txn {
        Txn {
            first_seen,
            listed: HashSet::new(),
            end_seen: false,
            pos: None,
            topics: 0,
        }
    }

    /// Takes in what one of X's records says.
    fn note(&mut self, r: &Rec, topics: &HashMap<String, usize>) {
        if self.pos.is_none() {
            self.pos = r.pos.as_ref().map(|p| p.pos.clone());
        }
        if let Some(list) = r.txn.as_ref().and_then(|t| t.end.as_ref()) {
            self.end_seen = true;
            self.listed.extend(parse_pieces(list, topics));
        }
    }
}

/// Recently applied transactions remembered, so a piece that arrives after its
/// transaction was applied elsewhere does not wait for pieces already gone.
const RECENT_TXNS_MAX: usize = 4096;

pub(crate) struct Assembler {
    topic_index: HashMap<String, usize>,
    parts: HashMap<Tp, Part>,
    /// Sorted, for deterministic release order.
    order: Vec<Tp>,
    txns: HashMap<Bytes, Txn>,
    recent: VecDeque<(Bytes, Tp)>,
    recent_set: HashSet<(Bytes, Tp)>,
    chunk_records: usize,
    missing_piece_wait: Duration,
    /// Union-find over topic indices: topics tied to one source because a transaction
    /// wrote both (its records arrived in both, or an end record lists both).
    /// Invariant: `source_of[t] <= t`, so `find` ends.
    source_of: Vec<usize>,
}

impl Assembler {
    /// `starts`: every followed partition and the offset it starts at.
    pub(crate) fn new(
        topics: &[String],
        starts: impl IntoIterator<Item = (Tp, u64)>,
        chunk_records: usize,
        missing_piece_wait: Duration,
    ) -> Assembler {
        let parts: HashMap<Tp, Part> = starts
            .into_iter()
            .map(|(tp, o)| {
                let part = Part {
                    queue: VecDeque::new(),
                    next_offset: o,
                    reported: o,
                    last_caught_up: None,
                    last_pos: None,
                    positioned: false,
                };
                (tp, part)
            })
            .collect();
        let mut order: Vec<Tp> = parts.keys().copied().collect();
        order.sort_unstable();
        Assembler {
            topic_index: topics
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i))
                .collect(),
            parts,
            order,
            txns: HashMap::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            chunk_records: chunk_records.max(1),
            missing_piece_wait,
            source_of: (0..topics.len()).collect(),
        }
    }

    /// Records fetched from `tp` (offset order), and the offset after them (past
    /// control batches and compacted gaps too). Records below what was delivered
    /// before are dropped.
    #[cfg(test)]
    pub(crate) fn push(&mut self, tp: Tp, records: Vec<Rec>, next_offset: u64, now: Instant) {
        self.push_fetched(tp, records, next_offset, next_offset, now)
    }

    /// Like `push`, with the partition's high watermark from the same fetch answer:
    /// a delivery that reaches it says nothing more is there to read yet.
    pub(crate) fn push_fetched(
        &mut self,
        tp: Tp,
        records: Vec<Rec>,
        next_offset: u64,
        high_watermark: u64,
        now: Instant,
    ) {
        let Some(part) = self.parts.get_mut(&tp) else {
            return;
        };
        if next_offset >= high_watermark {
            part.last_caught_up = Some(now);
        }
        let from = part.next_offset;
        let mut records = records;
        records.retain(|r| r.offset >= from);
        for r in &records {
            if let Some(tag) = &r.txn {
                let txn = self
                    .txns
                    .entry(tag.id.clone())
                    .or_insert_with(|| Txn::new(now));
                let known = txn.topics;
                txn.note(r, &self.topic_index);
                txn.topics |= topic_bit(tp.0);
                if tag.end.is_some() {
                    for t in txn.listed.iter().map(|l| l.0) {
                        txn.topics |= topic_bit(t);
                    }
                }
                // Ties only when X showed a new topic: bootstrap pushes millions.
                let tied = txn.topics;
                if tied != known {
                    for t in (0..self.source_of.len()).filter(|&t| tied & topic_bit(t) != 0) {
                        union(&mut self.source_of, t, tp.0);
                    }
                }
            }
        }
        if let Some(pos) = records.iter().rev().find_map(|r| r.pos.as_deref()) {
            part.last_pos = Some(pos.clone());
            part.positioned = true;
        }
        if let Some(last) = records.last() {
            part.next_offset = part.next_offset.max(last.offset + 1);
        }
        // Taking the Vec over as the queue moves nothing.
        if part.queue.is_empty() {
            part.queue = VecDeque::from(records);
        } else {
            part.queue.extend(records);
        }
        part.next_offset = part.next_offset.max(next_offset);
    }

    /// `tp` starts over at `offset` (its log start moved past the position): held
    /// records of it are dropped, and what it delivered says nothing any more of what
    /// it holds after `offset`.
    pub(crate) fn reset(&mut self, tp: Tp, offset: u64) {
        if let Some(part) = self.parts.get_mut(&tp) {
            part.queue.clear();
            part.last_pos = None;
            part.next_offset = offset;
            part.reported = u64::MAX; // reported again, even if equal
        }
    }

    /// Every unit that can be applied now, in order.
    pub(crate) fn drain(&mut self, now: Instant) -> Vec<Unit> {
        let mut out = Vec::new();
        loop {
            let mut progress = false;
            for i in 0..self.order.len() {
                let tp = self.order[i];
                while let Some(unit) = self.release_head(tp, now) {
                    out.push(unit);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        // Positions that moved without records (control batches, compacted gaps).
        let mut idle = Unit::default();
        for tp in &self.order {
            let part = self.parts.get_mut(tp).expect("order lists parts");
            if part.queue.is_empty() && part.reported != part.next_offset {
                part.reported = part.next_offset;
                idle.pieces.push(Piece {
                    tp: *tp,
                    records: Vec::new(),
                    position: part.next_offset,
                });
            }
        }
        if !idle.pieces.is_empty() {
            out.push(idle);
        }
        out
    }

    /// Whether any record is held.
    #[cfg(test)]
    pub(crate) fn holding(&self) -> bool {
        self.parts.values().any(|p| !p.queue.is_empty())
    }

    fn release_head(&mut self, tp: Tp, now: Instant) -> Option<Unit> {
        let part = self.parts.get(&tp)?;
        let head = part.queue.front()?;
        match head.txn.as_ref().map(|t| t.id.clone()) {
            None => Some(self.release_plain(tp)),
            Some(id) => {
                let pieces = self.pieces_if_complete(&id, now)?;
                Some(self.release_txn(id, pieces, now))
            }
        }
    }

    fn release_plain(&mut self, tp: Tp) -> Unit {
        let part = self.parts.get_mut(&tp).expect("checked by caller");
        let n = part
            .queue
            .iter()
            .take(self.chunk_records)
            .take_while(|r| r.txn.is_none())
            .count();
        let records: Vec<Rec> = part.queue.drain(..n).collect();
        let position = position_of(part);
        part.reported = position;
        release_memory(part);
        Unit {
            txn: None,
            pieces: vec![Piece {
                tp,
                records,
                position,
            }],
        }
    }

    /// X's pieces (each at the head of its partition) when every one is complete.
    fn pieces_if_complete(&self, id: &Bytes, now: Instant) -> Option<Vec<Tp>> {
        let txn = self.txns.get(id)?;
        let mut pieces: Vec<Tp> = txn.listed.iter().copied().collect();
        for (tp, part) in &self.parts {
            if !txn.listed.contains(tp) && part.queue.iter().any(|r| is_txn(r, id)) {
                pieces.push(*tp);
            }
        }
        pieces.sort_unstable();
        let mut ready = Vec::new();
        for &tp in &pieces {
            // A listed partition the set does not follow (or that does not exist).
            let Some(part) = self.parts.get(&tp) else {
                continue;
            };
            match head_run(part, id) {
                Some((_, true)) => ready.push(tp),
                Some((_, false)) => return None,
                None if part.queue.iter().any(|r| is_txn(r, id)) => return None,
                None if self.recent_set.contains(&(id.clone(), tp)) => {}
                // Nothing of X arrived in tp: compacted away, or not fetched yet.
                None if !self.holds_no_more(txn, part, now) => return None,
                None => {}
            }
        }
        if let (false, Some(x)) = (txn.end_seen, &txn.pos) {
            // No end record: nothing says which partitions hold pieces of X. Those of
            // X's source are waited for by position; a topic nothing ties to it may be
            // another connector's (its positions say nothing of X): the wall clock.
            let sources: Vec<usize> = pieces
                .iter()
                .map(|tp| find(&self.source_of, tp.0))
                .collect();
            for tp in &self.order {
                if pieces.binary_search(tp).is_ok() || self.recent_set.contains(&(id.clone(), *tp))
                {
                    continue;
                }
                let part = &self.parts[tp];
                let never_positioned = !part.positioned && part.last_caught_up.is_some();
                if never_positioned || past(part, x) {
                    continue;
                }
                if sources.contains(&find(&self.source_of, tp.0)) || !self.given_up(txn, part, now)
                {
                    return None;
                }
            }
        }
        Some(ready)
    }

    /// Whether `part`, a piece of `txn` of which nothing arrived, is known to hold no
    /// more of it: by position when X has one, else by the wall clock.
    fn holds_no_more(&self, txn: &Txn, part: &Part, now: Instant) -> bool {
        match &txn.pos {
            Some(x) => past(part, x),
            None => self.given_up(txn, part, now),
        }
    }

    /// The wall-clock rule: `missing_piece_wait` passed since X was first seen, and
    /// after that `part` was read up to its high watermark.
    fn given_up(&self, txn: &Txn, part: &Part, now: Instant) -> bool {
        let given_up = txn.first_seen + self.missing_piece_wait;
        now >= given_up && part.last_caught_up.is_some_and(|d| d >= given_up)
    }

    fn release_txn(&mut self, id: Bytes, tps: Vec<Tp>, now: Instant) -> Unit {
        self.txns.remove(&id);
        let mut unit = Unit {
            txn: Some(id.clone()),
            pieces: Vec::new(),
        };
        for tp in tps {
            let part = self.parts.get_mut(&tp).expect("complete pieces exist");
            let (len, _) = head_run(part, &id).unwrap_or((0, false));
            let records: Vec<Rec> = part.queue.drain(..len).collect();
            let position = position_of(part);
            part.reported = position;
            release_memory(part);
            unit.pieces.push(Piece {
                tp,
                records,
                position,
            });
            self.remember(id.clone(), tp);
        }
        // Records of X still queued behind the released run (a second run) start a
        // new transaction state of their own.
        let mut again: Option<Txn> = None;
        for tp in &self.order {
            for r in self.parts[tp].queue.iter().filter(|r| is_txn(r, &id)) {
                let txn = again.get_or_insert_with(|| Txn::new(now));
                txn.note(r, &self.topic_index);
                txn.topics |= topic_bit(tp.0);
            }
        }
        if let Some(txn) = again {
            self.txns.insert(id, txn);
        }
        unit
    }

    fn remember(&mut self, id: Bytes, tp: Tp) {
        if self.recent_set.insert((id.clone(), tp)) {
            self.recent.push_back((id, tp));
            if self.recent.len() > RECENT_TXNS_MAX {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
    }
}

/// Whether `part` delivered a record after every record of the transaction at `x`: one
/// positioned after `x`, or a heartbeat at `x` (it covers its own position). A position
/// of another kind of source means another source writes there now: nothing more of
/// `x` comes.
fn past(part: &Part, x: &SourcePos) -> bool {
    let Some(last) = &part.last_pos else {
        return false;
    };
    match last.pos.compare(x) {
        Some(Ordering::Greater) | None => true,
        Some(Ordering::Equal) => last.heartbeat,
        Some(Ordering::Less) => false,
    }
}

/// Topic `t`'s bit in `Txn::topics`; topics past 63 share the last bit (a set of that
/// many topics ties them all: safe, only slower).
fn topic_bit(t: usize) -> u64 {
    1 << t.min(63)
}

fn find(source_of: &[usize], mut t: usize) -> usize {
    while source_of[t] != t {
        t = source_of[t];
    }
    t
}

/// Ties topics `a` and `b` to one source (the smaller root becomes the parent).
fn union(source_of: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(source_of, a), find(source_of, b));
    let (lo, hi) = (ra.min(rb), ra.max(rb));
    source_of[hi] = lo;
}

fn is_txn(r: &Rec, id: &Bytes) -> bool {
    r.txn.as_ref().is_some_and(|t| t.id == *id)
}

/// The run of X at the head of `part`: its length, and whether the piece is complete
/// (it ends with an end record, or another record follows it). `None` when the head
/// is not X.
fn head_run(part: &Part, id: &Bytes) -> Option<(usize, bool)> {
    let mut len = 0;
    for r in &part.queue {
        match &r.txn {
            Some(t) if t.id == *id => {
                len += 1;
                if t.end.is_some() {
                    return Some((len, true));
                }
            }
            _ => return (len > 0).then_some((len, true)),
        }
    }
    (len > 0).then_some((len, false))
}

/// An emptied queue gives its allocation back: one large fetch must not pin
/// megabytes per partition for the table's lifetime.
fn release_memory(part: &mut Part) {
    if part.queue.is_empty() && part.queue.capacity() > 1024 {
        part.queue = VecDeque::new();
    }
}

/// Next offset not applied: the first held record's, or past everything delivered.
fn position_of(part: &Part) -> u64 {
    part.queue.front().map_or(part.next_offset, |r| r.offset)
}

/// `topic:partition,topic:partition` → the pieces of followed topics. Malformed
/// entries are skipped (a bad marker must not stop the table).
pub(crate) fn parse_pieces(list: &[u8], topics: &HashMap<String, usize>) -> Vec<Tp> {
    let Ok(s) = std::str::from_utf8(list) else {
        return Vec::new();
    };
    s.split(',')
        .filter_map(|piece| {
            let (topic, partition) = piece.trim().rsplit_once(':')?;
            Some((*topics.get(topic)?, partition.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "txn_sim.rs"]
mod sim;
