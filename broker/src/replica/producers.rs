//! Idempotent-producer state of one partition: for each producer id, its epoch, the
//! last sequence number appended, and the last few batches (first and last sequence,
//! base offset). A retried batch that is already in the log is answered with its
//! original offset instead of being appended again; a gap is OUT_OF_ORDER_SEQUENCE.
//!
//! Leaders and followers keep it on every append, so a follower that becomes leader
//! already has it; a broker that (re)starts hosting a partition rebuilds it by reading
//! the log's batch headers (Kafka keeps snapshots instead; a later improvement).

use std::collections::{HashMap, VecDeque};

use sluice_proto::batch::Batches;
use sluice_proto::RecordBatch;

use crate::log::{Log, LogError};

/// Batches remembered per producer for duplicate detection (Kafka keeps five).
const RECENT_BATCHES: usize = 5;

/// How far back (in records) a rebuild reads.
const REBUILD_WINDOW_RECORDS: u64 = 100_000;

#[derive(Debug, Default, Clone)]
struct Entry {
    epoch: i16,
    last_sequence: i32,
    /// (first sequence, last sequence, base offset), oldest first.
    recent: VecDeque<(i32, i32, u64)>,
}

/// What to do with an incoming producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Append,
    /// Already in the log at this base offset.
    Duplicate(u64),
    OutOfOrder {
        expected: i32,
        got: i32,
    },
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, Entry>,
}

fn sequences(b: &RecordBatch) -> (i32, i32) {
    let first = b.base_sequence();
    (first, first.wrapping_add(b.last_offset_delta()))
}

impl ProducerStates {
    /// Rebuilds the state from the batch headers of the log's last
    /// [`REBUILD_WINDOW_RECORDS`] records: retries only ever concern a producer's last
    /// few batches, and this bounds what a broker reads when it starts hosting a
    /// partition. A producer seen only before the window is treated as new.
    pub(crate) fn rebuild(log: &Log) -> Result<ProducerStates, LogError> {
        let mut states = ProducerStates::default();
        let mut next = log
            .log_start_offset()
            .max(log.log_end_offset().saturating_sub(REBUILD_WINDOW_RECORDS));
        while next < log.log_end_offset() {
            let r = log.read(next, 16 << 20, None)?;
            if r.data.is_empty() {
                break;
            }
            for b in Batches::new(r.data).flatten() {
                states.record(&b, b.base_offset() as u64);
                next = b.next_offset() as u64;
            }
        }
        Ok(states)
    }

    pub(crate) fn check(&self, b: &RecordBatch) -> Check {
        let (first, last) = sequences(b);
        let Some(e) = self.producers.get(&b.producer_id()) else {
            return Check::Append;
        };
        if b.producer_epoch() != e.epoch {
            // A new epoch starts its sequences afresh.
            return if b.producer_epoch() > e.epoch && first == 0 {
                Check::Append
            } else {
                Check::OutOfOrder {
                    expected: 0,
                    got: first,
                }
            };
        }
        if let Some(&(_, _, base)) = e.recent.iter().find(|(f, l, _)| *f == first && *l == last) {
            return Check::Duplicate(base);
        }
        let expected = e.last_sequence.wrapping_add(1);
        if first == expected {
            Check::Append
        } else {
            Check::OutOfOrder {
                expected,
                got: first,
            }
        }
    }

    /// Notes an appended batch (no-op for batches without a producer id).
    pub(crate) fn record(&mut self, b: &RecordBatch, base_offset: u64) {
        if b.producer_id() < 0 {
            return;
        }
        let (first, last) = sequences(b);
        let e = self.producers.entry(b.producer_id()).or_default();
        if b.producer_epoch() != e.epoch {
            *e = Entry {
                epoch: b.producer_epoch(),
                ..Entry::default()
            };
        }
        e.last_sequence = last;
        e.recent.push_back((first, last, base_offset));
        while e.recent.len() > RECENT_BATCHES {
            e.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::{BatchBuilder, Compression};

    fn batch(pid: i64, seq: i32, n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None).producer(pid, 0, seq);
        for _ in 0..n {
            b.append(0, None, Some(b"v"), &[]);
        }
        b.build().unwrap()
    }

    #[test]
    fn duplicates_are_found_and_gaps_refused() {
        let mut s = ProducerStates::default();
        let first = batch(7, 0, 3);
        assert_eq!(s.check(&first), Check::Append);
        s.record(&first, 100);
        assert_eq!(
            s.check(&first),
            Check::Duplicate(100),
            "a retry of the same batch"
        );
        let next = batch(7, 3, 2);
        assert_eq!(s.check(&next), Check::Append);
        s.record(&next, 103);
        assert_eq!(
            s.check(&batch(7, 9, 1)),
            Check::OutOfOrder {
                expected: 5,
                got: 9
            }
        );
        assert_eq!(
            s.check(&batch(8, 4, 1)),
            Check::Append,
            "unknown producers are taken as they come"
        );
    }
}
