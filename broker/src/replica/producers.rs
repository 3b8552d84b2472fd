//! Idempotent-producer state of one partition: for each producer id, its epoch, the
//! last sequence number appended, and the last few batches (first and last sequence,
//! base offset). A retried batch that is already in the log is answered with its
//! original offset instead of being appended again; a gap is OUT_OF_ORDER_SEQUENCE.
//!
//! Leaders and followers keep it on every append, so a follower that becomes leader
//! already has it; a broker that (re)starts hosting a partition rebuilds it by reading
//! the log's batch headers (Kafka keeps snapshots instead; a later improvement).
//!
//! Bounded: a producer id idle for `producer.id.expiration.ms` is forgotten (checked
//! every [`EXPIRY_CHECK_INTERVAL_MS`]), and past [`PRODUCER_IDS_PER_PARTITION_MAX`] ids
//! the one idle longest is evicted. Idle time is measured on this broker's clock from
//! the last append it saw; a rebuild counts every producer it finds as active at the
//! rebuild (the log keeps no append times), so after a restart an id expires at most one
//! expiration period late, never early.

use std::collections::{HashMap, VecDeque};

use sluice_proto::batch::Batches;
use sluice_proto::limits::PRODUCER_IDS_PER_PARTITION_MAX;
use sluice_proto::RecordBatch;
use tracing::warn;

use super::ReplicaLog;
use crate::log::LogError;

/// Batches remembered per producer for duplicate detection (Kafka keeps five).
const RECENT_BATCHES: usize = 5;

/// How far back (in records) a rebuild reads.
const REBUILD_WINDOW_RECORDS: u64 = 100_000;

/// How often a partition looks for expired producer ids (Kafka's
/// `producer.id.expiration.check.interval.ms` is 10 minutes; a scan is cheap).
pub(crate) const EXPIRY_CHECK_INTERVAL_MS: i64 = 10_000;

#[derive(Debug, Default, Clone)]
struct Entry {
    epoch: i16,
    last_sequence: i32,
    /// (first sequence, last sequence, base offset), oldest first.
    recent: VecDeque<(i32, i32, u64)>,
    /// Wall-clock ms of the last append from this producer seen here.
    last_append_ms: i64,
    /// The highest coordinator epoch of a transaction marker of this producer here (0:
    /// none seen): a marker from an older coordinator is refused.
    coordinator_epoch: i32,
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// This broker's wall clock at the producer's last append seen here (the time of
    /// the partition's rebuild for a producer found by reading the log).
    pub last_append_ms: i64,
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
    /// An epoch older than the producer's current one: a zombie the transaction
    /// coordinator fenced (INVALID_PRODUCER_EPOCH).
    Fenced {
        current: i16,
    },
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    /// Invariant: at most [`PRODUCER_IDS_PER_PARTITION_MAX`] entries.
    producers: HashMap<i64, Entry>,
    /// Wall-clock ms of the last expiry scan.
    last_expiry_check_ms: i64,
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
    pub(crate) fn rebuild<L: ReplicaLog + ?Sized>(
        log: &L,
        now_ms: i64,
    ) -> Result<ProducerStates, LogError> {
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
                states.record(&b, b.base_offset() as u64, now_ms);
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
        if b.producer_epoch() < e.epoch {
            return Check::Fenced { current: e.epoch };
        }
        if first < 0 {
            // No sequence: a transactional offset commit the group coordinator writes.
            return Check::Append;
        }
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

    /// Notes an appended batch (no-op for batches without a producer id), appended at
    /// `now_ms`. A new id beyond [`PRODUCER_IDS_PER_PARTITION_MAX`] evicts the id idle
    /// longest.
    pub(crate) fn record(&mut self, b: &RecordBatch, base_offset: u64, now_ms: i64) {
        if b.producer_id() < 0 {
            return;
        }
        let (first, last) = sequences(b);
        if self.producers.len() >= PRODUCER_IDS_PER_PARTITION_MAX
            && !self.producers.contains_key(&b.producer_id())
        {
            self.evict_idlest();
        }
        let fresh = !self.producers.contains_key(&b.producer_id());
        let e = self.producers.entry(b.producer_id()).or_default();
        e.last_append_ms = e.last_append_ms.max(now_ms);
        if b.producer_epoch() != e.epoch || (fresh && first < 0) {
            // A transaction marker or an offset commit (no sequence) may be the first
            // thing seen of a producer or of its new epoch: its next batch starts at 0.
            *e = Entry {
                epoch: b.producer_epoch(),
                last_sequence: -1,
                ..e.clone()
            };
            e.recent.clear();
        }
        if b.is_control() {
            if let Some(epoch) = super::txns::Marker::coordinator_epoch(b) {
                e.coordinator_epoch = e.coordinator_epoch.max(epoch);
            }
            return;
        }
        if first < 0 {
            return;
        }
        e.last_sequence = last;
        e.recent.push_back((first, last, base_offset));
        while e.recent.len() > RECENT_BATCHES {
            e.recent.pop_front();
        }
    }

    /// Whether a transaction marker of `producer_id` from the coordinator at
    /// `coordinator_epoch` may be appended: not when a newer coordinator already wrote
    /// one here (a delayed marker of a coordinator that failed over). Returns the
    /// newer epoch when refused.
    pub(crate) fn check_marker(&self, producer_id: i64, coordinator_epoch: i32) -> Result<(), i32> {
        match self.producers.get(&producer_id) {
            Some(e) if e.coordinator_epoch > coordinator_epoch => Err(e.coordinator_epoch),
            _ => Ok(()),
        }
    }

    /// Forgets the id idle longest (a scan: this runs only at the cap).
    fn evict_idlest(&mut self) {
        let idlest = self
            .producers
            .iter()
            .min_by_key(|(pid, e)| (e.last_append_ms, **pid))
            .map(|(pid, _)| *pid);
        if let Some(pid) = idlest {
            self.producers.remove(&pid);
            metrics::counter!("sluice_producer_ids_evicted_total").increment(1);
            warn!(
                producer_id = pid,
                max = PRODUCER_IDS_PER_PARTITION_MAX,
                "too many producer ids on one partition: forgot the one idle longest"
            );
        }
    }

    /// Forgets producer ids idle for `expiration` or longer, at most once per
    /// [`EXPIRY_CHECK_INTERVAL_MS`]; returns how many.
    /// (An expiration shorter than twice the interval is checked at half its period.)
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let interval = EXPIRY_CHECK_INTERVAL_MS.min(expiration_ms / 2);
        if now_ms - self.last_expiry_check_ms < interval {
            return 0;
        }
        self.last_expiry_check_ms = now_ms;
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_append_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// The producers this partition remembers, by id (Kafka's DescribeProducers).
    pub(crate) fn describe(&self) -> Vec<ProducerView> {
        let mut out: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerView {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_sequence,
                last_append_ms: e.last_append_ms,
            })
            .collect();
        out.sort_by_key(|v| v.producer_id);
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
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
        s.record(&first, 100, 0);
        assert_eq!(
            s.check(&first),
            Check::Duplicate(100),
            "a retry of the same batch"
        );
        let next = batch(7, 3, 2);
        assert_eq!(s.check(&next), Check::Append);
        s.record(&next, 103, 0);
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

#[cfg(test)]
mod bound_tests {
    use super::*;
    use sluice_proto::{BatchBuilder, Compression};

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn batch(pid: i64, seq: i32) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None).producer(pid, 0, seq);
        b.append(0, None, Some(b"v"), &[]);
        b.build().unwrap()
    }

    #[test]
    fn an_idle_producer_id_expires_and_an_active_one_does_not() {
        let mut s = ProducerStates::default();
        let t0 = 1_000_000_000_000;
        s.record(&batch(7, 0), 0, t0);
        s.record(&batch(8, 0), 1, t0);
        // Producer 8 stays active.
        s.record(&batch(8, 1), 2, t0 + DAY_MS / 2);
        assert_eq!(s.expire(t0 + DAY_MS - 1, DAY_MS), 0, "not idle a day yet");
        assert_eq!(s.len(), 2);
        // Within the check interval nothing is scanned.
        assert_eq!(s.expire(t0 + DAY_MS, DAY_MS), 0);
        assert_eq!(s.expire(t0 + DAY_MS + EXPIRY_CHECK_INTERVAL_MS, DAY_MS), 1);
        assert_eq!(s.len(), 1);
        // 7 is forgotten: a batch at any sequence is taken as a new producer's.
        assert_eq!(s.check(&batch(7, 1)), Check::Append);
        assert_eq!(
            s.check(&batch(8, 9)),
            Check::OutOfOrder {
                expected: 2,
                got: 9
            },
            "8 is still known"
        );
    }

    #[test]
    fn producer_ids_past_the_cap_evict_the_idlest() {
        let mut s = ProducerStates::default();
        let max = PRODUCER_IDS_PER_PARTITION_MAX as i64;
        for pid in 0..max {
            // Producer 0 is the idlest; the rest appended later, in order.
            s.record(&batch(pid, 0), pid as u64, 1_000 + pid);
        }
        // Producer 0 appends again: now producer 1 is the idlest.
        s.record(&batch(0, 1), max as u64, 1_000 + max);
        assert_eq!(s.len(), PRODUCER_IDS_PER_PARTITION_MAX);
        s.record(&batch(max, 0), max as u64 + 1, 1_000 + max + 1);
        assert_eq!(s.len(), PRODUCER_IDS_PER_PARTITION_MAX, "capped");
        assert_eq!(
            s.check(&batch(1, 1)),
            Check::Append,
            "producer 1, idle longest, was forgotten"
        );
        assert_eq!(s.check(&batch(0, 1)), Check::Duplicate(max as u64));
        assert_eq!(s.check(&batch(max, 0)), Check::Duplicate(max as u64 + 1));
    }
}
