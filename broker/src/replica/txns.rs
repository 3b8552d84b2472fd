//! Transactions as one partition sees them: which producers have a transaction open
//! here (from their first transactional batch to their commit or abort marker), and
//! the transactions that were aborted. The first gives the last stable offset (LSO):
//! a `read_committed` consumer reads up to the first offset of the oldest open
//! transaction, never past the high watermark. The second is what Kafka's fetch answer
//! lists as `aborted_transactions`, so such a consumer drops the aborted records.
//!
//! Leaders and followers keep it on every append, beside the producer state. A broker
//! that starts hosting a partition, or truncates it, rebuilds it from the batch headers
//! of the whole log (a sealed segment is read through its memory map, so the walk
//! touches one page per batch) — only for a log marked transactional before its first
//! transactional batch was appended; docs/transactions.md says why no index file is kept.

use std::collections::{BTreeSet, HashMap};

use sluice_proto::batch::Batches;
use sluice_proto::RecordBatch;

use super::ReplicaLog;
use crate::log::LogError;

/// A transaction aborted on this partition: its producer, the offset of its first
/// batch here and the offset of its abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// What a control batch's record key says (Kafka's `ControlRecordType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    /// The marker a control batch carries; `None` for other control records (Kafka
    /// has leader-change and snapshot records) or an undecodable one.
    pub fn of(b: &RecordBatch) -> Option<Marker> {
        let records = b.records().ok()?;
        let key = records.first()?.key.as_ref()?;
        if key.len() < 4 {
            return None;
        }
        match i16::from_be_bytes([key[2], key[3]]) {
            0 => Some(Marker::Abort),
            1 => Some(Marker::Commit),
            _ => None,
        }
    }

    /// The coordinator epoch a transaction marker carries.
    pub fn coordinator_epoch(b: &RecordBatch) -> Option<i32> {
        let records = b.records().ok()?;
        let value = records.first()?.value.as_ref()?;
        let bytes: [u8; 4] = value.get(2..6)?.try_into().ok()?;
        Some(i32::from_be_bytes(bytes))
    }

    /// The control record's key: version 0, then the type.
    pub fn key(self) -> [u8; 4] {
        let t: i16 = match self {
            Marker::Abort => 0,
            Marker::Commit => 1,
        };
        let [a, b] = t.to_be_bytes();
        [0, 0, a, b]
    }

    /// The control record's value: version 0, then the coordinator epoch.
    pub fn value(coordinator_epoch: i32) -> [u8; 6] {
        let mut v = [0u8; 6];
        v[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
        v
    }
}

/// See the module docs. Invariant: `firsts` holds exactly `(first, pid)` for each
/// entry of `open`; `aborted` is ordered by `last_offset`.
#[derive(Debug, Default)]
pub(crate) struct TxnIndex {
    open: HashMap<i64, u64>,
    firsts: BTreeSet<(u64, i64)>,
    aborted: Vec<AbortedTxn>,
    /// The log carries the transactional mark ([`ReplicaLog::mark_transactional`]).
    marked: bool,
}

impl TxnIndex {
    /// Reads every batch header of a log marked transactional; one without the mark
    /// holds no transactional batch.
    pub(crate) fn rebuild<L: ReplicaLog + ?Sized>(log: &L) -> Result<TxnIndex, LogError> {
        let mut index = TxnIndex {
            marked: log.is_transactional(),
            ..TxnIndex::default()
        };
        if !index.marked {
            return Ok(index);
        }
        let mut next = log.log_start_offset();
        while next < log.log_end_offset() {
            let r = log.read(next, 16 << 20, None)?;
            if r.data.is_empty() {
                break;
            }
            for b in Batches::new(r.data).flatten() {
                index.observe(&b, b.base_offset().max(0) as u64);
                next = b.next_offset() as u64;
            }
        }
        Ok(index)
    }

    /// Before `batches` are appended: marks the log transactional (once) if any is.
    pub(crate) fn before_append<'a, L: ReplicaLog + ?Sized>(
        &mut self,
        log: &L,
        mut batches: impl Iterator<Item = &'a RecordBatch>,
    ) -> Result<(), LogError> {
        if !self.marked && batches.any(RecordBatch::is_transactional) {
            log.mark_transactional()?;
            self.marked = true;
        }
        Ok(())
    }

    /// Notes a batch appended at `base_offset`.
    pub(crate) fn observe(&mut self, b: &RecordBatch, base_offset: u64) {
        if !b.is_transactional() {
            return;
        }
        let pid = b.producer_id();
        if b.is_control() {
            let Some(marker) = Marker::of(b) else { return };
            if let Some(first) = self.open.remove(&pid) {
                self.firsts.remove(&(first, pid));
                if marker == Marker::Abort {
                    self.aborted.push(AbortedTxn {
                        producer_id: pid,
                        first_offset: first,
                        last_offset: base_offset,
                    });
                }
            }
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(v) = self.open.entry(pid) {
            v.insert(base_offset);
            self.firsts.insert((base_offset, pid));
        }
    }

    /// The first offset of the oldest transaction still open here.
    pub(crate) fn first_unstable(&self) -> Option<u64> {
        self.firsts.first().map(|(o, _)| *o)
    }

    /// Transactions open here: (producer id, first offset), oldest first.
    pub(crate) fn open(&self) -> Vec<(i64, u64)> {
        self.firsts.iter().map(|(o, p)| (*p, *o)).collect()
    }

    /// The aborted transactions a fetch of `[from, to)` must name: those whose marker
    /// is at or after `from` and whose first batch is before `to`.
    pub(crate) fn aborted_in(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly below the log start.
    pub(crate) fn prune(&mut self, log_start: u64) {
        let below = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::{BatchBuilder, Compression};

    fn data(pid: i64) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(pid, 0, 0)
            .transactional(true);
        b.append(0, None, Some(b"v"), &[]);
        b.build().unwrap()
    }

    fn marker(pid: i64, m: Marker) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(pid, 0, -1)
            .transactional(true)
            .control(true);
        b.append(0, Some(&m.key()), Some(&Marker::value(0)), &[]);
        b.build().unwrap()
    }

    #[test]
    fn the_oldest_open_transaction_bounds_the_stable_offset() {
        let mut t = TxnIndex::default();
        t.observe(&data(1), 10);
        t.observe(&data(2), 11);
        t.observe(&data(1), 12);
        assert_eq!(t.first_unstable(), Some(10));
        t.observe(&marker(1, Marker::Commit), 13);
        assert_eq!(t.first_unstable(), Some(11));
        t.observe(&marker(2, Marker::Abort), 14);
        assert_eq!(t.first_unstable(), None);
        assert_eq!(
            t.aborted_in(0, 100),
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 11,
                last_offset: 14
            }]
        );
        assert!(t.aborted_in(15, 100).is_empty(), "marker before the fetch");
        assert!(
            t.aborted_in(0, 11).is_empty(),
            "first batch after the fetch"
        );
        assert_eq!(t.aborted_in(14, 15).len(), 1);
        t.prune(15);
        assert!(t.aborted_in(0, 100).is_empty());
    }

    #[test]
    fn markers_decode_as_written_and_others_are_ignored() {
        assert_eq!(Marker::of(&marker(5, Marker::Abort)), Some(Marker::Abort));
        assert_eq!(Marker::of(&marker(5, Marker::Commit)), Some(Marker::Commit));
        let mut t = TxnIndex::default();
        // A marker for a producer with nothing open changes nothing.
        t.observe(&marker(9, Marker::Abort), 3);
        assert!(t.aborted_in(0, 100).is_empty());
        assert_eq!(t.first_unstable(), None);
    }
}

#[cfg(test)]
mod rebuild_tests {
    use super::*;
    use crate::log::Log;
    use sluice_proto::topic_config::LogConfig;
    use sluice_proto::{BatchBuilder, Compression, TopicPartition};

    fn open(dir: &std::path::Path) -> std::sync::Arc<Log> {
        let config = LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 100,
            ..LogConfig::default()
        };
        let (logs, failed) = crate::log::LogManager::open(dir, config.clone()).unwrap();
        assert!(failed.is_empty());
        logs.get_or_create_for(&TopicPartition::new("t", 0), config, None)
            .unwrap()
    }

    fn batch(pid: i64, transactional: bool, marker: Option<Marker>) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(pid, 0, if marker.is_some() { -1 } else { 0 })
            .transactional(transactional)
            .control(marker.is_some());
        match marker {
            Some(m) => b.append(0, Some(&m.key()), Some(&Marker::value(1)), &[]),
            None => b.append(0, Some(b"k"), Some(&[b'v'; 200]), &[]),
        }
        b.build().unwrap()
    }

    /// Over several segments: an aborted and an open transaction come back after a
    /// reopen; a log that never had a transactional batch is not read at all.
    #[test]
    fn a_reopened_log_has_its_open_and_aborted_transactions_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut index = TxnIndex::default();
        let plain = batch(-1, false, None);
        for _ in 0..10 {
            index.before_append(&*log, std::iter::once(&plain)).unwrap();
            let at = log.append_as_leader(&plain, 0, 0).unwrap().base_offset;
            index.observe(&plain, at);
        }
        assert!(!log.is_transactional(), "no transactional batch yet");
        let script = [
            batch(7, true, None),
            batch(8, true, None),
            batch(-1, false, None),
            batch(7, true, Some(Marker::Abort)),
            batch(7, true, None),
            batch(8, true, Some(Marker::Commit)),
        ];
        for b in &script {
            index.before_append(&*log, std::iter::once(b)).unwrap();
            let at = log.append_as_leader(b, 0, 0).unwrap().base_offset;
            index.observe(b, at);
        }
        assert!(log.is_transactional());
        drop(log);
        let log = open(dir.path());
        let rebuilt = TxnIndex::rebuild(&*log).unwrap();
        assert_eq!(rebuilt.first_unstable(), index.first_unstable());
        assert_eq!(
            rebuilt.first_unstable(),
            Some(14),
            "producer 7's second transaction"
        );
        assert_eq!(rebuilt.aborted_in(0, 100), index.aborted_in(0, 100));
        assert_eq!(
            rebuilt.aborted_in(0, 100),
            vec![AbortedTxn {
                producer_id: 7,
                first_offset: 10,
                last_offset: 13
            }]
        );
        let other = tempfile::tempdir().unwrap();
        let plain_log = open(other.path());
        plain_log.append_as_leader(&plain, 0, 0).unwrap();
        assert!(!TxnIndex::rebuild(&*plain_log).unwrap().marked);
    }
}
