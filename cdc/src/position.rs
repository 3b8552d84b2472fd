//! Sans-IO position bookkeeping: what a restarted connector skips ([`Resume`]) and what
//! it may confirm to its source ([`Tracker`]).
//!
//! The source is confirmed only up to a unit (a transaction, a heartbeat, a chunk of
//! snapshot rows) that — with every unit before it — the broker acknowledged with
//! acks=all. After a crash the source replays from its confirmed position, which is at
//! or below everything the topics may hold; every record carries (position, ordinal),
//! unique and increasing within its partition, so the connector writes a replayed
//! record only when its partition's last record is older. Each partition thus holds
//! every change exactly once, in source order.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use sluice_proto::source_pos::{RecordPos, SourcePos};

/// Whether the topics (or one table's topic) hold a finished copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// No partition holds a record: nothing was ever written.
    Empty,
    /// Some partition's last record is a copy record (a copy was cut short), or some
    /// partition is empty while others are not.
    Incomplete,
    /// Every partition ends past the copy.
    Complete,
}

/// The copy state of partitions from their last records: `None` for an empty
/// partition, `Some(true)` when the last record belongs to a copy (`sluice.snapshot`).
///
/// A copy over partitions that already end past an earlier copy (a re-copy after the
/// slot was lost) first writes a copy-start marker to each of them (`Sink::begin_copy`):
/// otherwise a copy cut short before any of its records reached some partition would
/// leave that partition looking finished, and the next run would stream on from the
/// new slot with the partition's old rows — stale values and deleted keys — for good.
pub fn copy_state(lasts: impl IntoIterator<Item = Option<bool>>) -> SnapshotState {
    let (mut any, mut incomplete, mut empty) = (false, false, false);
    for last in lasts {
        match last {
            None => empty = true,
            Some(copy) => {
                any = true;
                incomplete |= copy;
            }
        }
    }
    if !any {
        SnapshotState::Empty
    } else if incomplete || empty {
        SnapshotState::Incomplete
    } else {
        SnapshotState::Complete
    }
}

/// During a copy over topics that already hold rows: the keys whose latest record is a
/// row, by topic, that the copy has not (yet) written. What is left when the copy's
/// rows are all written was deleted in the source since those rows were written (while
/// no slot recorded it, or before a cut copy was started over) and gets a tombstone
/// before the copy counts as finished: a copy alone would leave such a row in the
/// compacted topic, and in every Table, for good.
#[derive(Debug, Default)]
pub struct StaleKeys {
    live: HashMap<Arc<str>, HashSet<Bytes>>,
}

impl StaleKeys {
    /// A record of `topic` read back in offset order: a row (`true`) or a tombstone.
    /// Heartbeats are no keys and are not passed.
    pub fn observe(&mut self, topic: &Arc<str>, key: Bytes, row: bool) {
        let keys = self.live.entry(topic.clone()).or_default();
        if row {
            keys.insert(key);
        } else {
            keys.remove(&key);
        }
    }

    /// The copy wrote `key` to `topic`.
    pub fn copied(&mut self, topic: &str, key: &[u8]) {
        if let Some(keys) = self.live.get_mut(topic) {
            keys.remove(key);
        }
    }

    /// Keys not written by the copy (so far).
    pub fn len(&self) -> u64 {
        self.live.values().map(|k| k.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys to tombstone once the copy's rows are all written.
    pub fn into_remaining(self) -> impl Iterator<Item = (Arc<str>, Bytes)> {
        self.live
            .into_iter()
            .flat_map(|(topic, keys)| keys.into_iter().map(move |k| (topic.clone(), k)))
    }
}

/// The last record position of each partition, read when the connector starts.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    last: HashMap<(String, u32), RecordPos>,
}

impl Resume {
    pub fn new() -> Resume {
        Resume::default()
    }

    /// Records the last position found in a partition.
    pub fn insert(&mut self, topic: &str, partition: u32, last: RecordPos) {
        self.last.insert((topic.to_string(), partition), last);
    }

    /// Whether a record at `pos` is new to its partition.
    pub fn should_write(&self, topic: &str, partition: u32, pos: &RecordPos) -> bool {
        match self.last.get(&(topic.to_string(), partition)) {
            None => true,
            Some(last) => last.compare(pos) == Some(Ordering::Less),
        }
    }

    /// The last position of a partition, if it holds one.
    pub fn last(&self, topic: &str, partition: u32) -> Option<&RecordPos> {
        self.last.get(&(topic.to_string(), partition))
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// A unit written to the broker and not yet known to be acknowledged.
#[derive(Debug)]
struct Unit {
    seq: u64,
    /// `None`: a unit that confirms nothing by itself (a copy of tables added to a
    /// running capture: its position is ahead of the stream that follows it).
    pos: Option<SourcePos>,
    acked: bool,
}

/// Units in source order and the position the source may be confirmed to.
#[derive(Debug, Default)]
pub struct Tracker {
    next_seq: u64,
    pending: VecDeque<Unit>,
    confirmed: Option<SourcePos>,
    failed: bool,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// A unit at `pos` was handed to the producer; returns its number for [`Tracker::acked`].
    /// Positions must not go backwards.
    pub fn sent(&mut self, pos: SourcePos) -> u64 {
        self.push(Some(pos))
    }

    /// A unit whose acknowledgement confirms no position (it still holds back every
    /// unit after it until it is acknowledged).
    pub fn sent_unpositioned(&mut self) -> u64 {
        self.push(None)
    }

    fn push(&mut self, pos: Option<SourcePos>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Unit {
            seq,
            pos,
            acked: false,
        });
        seq
    }

    /// Every record of unit `seq` was acknowledged. Acknowledgements may come in any order.
    /// Returns the newly confirmable position, if it moved.
    pub fn acked(&mut self, seq: u64) -> Option<&SourcePos> {
        if self.failed {
            return None;
        }
        if let Some(u) = self.pending.iter_mut().find(|u| u.seq == seq) {
            u.acked = true;
        }
        let mut moved = false;
        while self.pending.front().is_some_and(|u| u.acked) {
            let u = self.pending.pop_front().expect("checked");
            if let Some(pos) = u.pos {
                self.confirmed = Some(pos);
                moved = true;
            }
        }
        if moved {
            self.confirmed.as_ref()
        } else {
            None
        }
    }

    /// A record of some unit failed for good: nothing after the current confirmed
    /// position may be confirmed any more (the connector must restart).
    pub fn failed(&mut self) {
        self.failed = true;
    }

    pub fn confirmed(&self) -> Option<&SourcePos> {
        self.confirmed.as_ref()
    }

    /// Units written and not yet confirmable.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
pub(crate) mod sim;
