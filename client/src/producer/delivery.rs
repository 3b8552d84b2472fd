//! Delivery futures: what [`super::Producer::send`] returns, resolved by the sender task.
//!
//! Every record of a batch, as `send` built it, shares one [`BatchShared`] and knows its
//! index in that batch. A batch is normally answered as a whole; one the leader refused
//! as larger than the topic's `max.message.bytes` is split and sent again as pieces,
//! each answered on its own, with its own base offset and possibly its own error. So
//! completions are kept per piece — (first index, record count, result) — and a
//! record's offset is its piece's base offset plus its position within the piece.
//!
//! Completed by the sender task (any tokio task); polled by whoever awaits the record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;

use crate::Error;

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: u32,
    /// `None` with acks=0.
    pub offset: Option<u64>,
    pub timestamp: i64,
}

/// A piece's answer: its base offset (`None` with acks=0) and the broker's
/// LogAppendTime if the topic uses it.
pub(super) type BatchResult = Result<(Option<u64>, Option<i64>), Error>;

/// The answer for records `first_index .. first_index + records` of a batch.
struct Completed {
    first_index: u32,
    records: u32,
    result: BatchResult,
    /// When the answer arrived (for latency measured independently of the awaiter).
    at: Instant,
}

#[derive(Default)]
struct State {
    /// Sorted by `first_index`.
    /// Invariant: the ranges are disjoint (pieces of a batch hold disjoint records, and
    /// each piece completes once).
    completed: Vec<Completed>,
    wakers: Vec<Waker>,
}

impl State {
    fn find(&self, index: u32) -> Option<&Completed> {
        let after = self.completed.partition_point(|c| c.first_index <= index);
        let c = self.completed[..after].last()?;
        (index - c.first_index < c.records).then_some(c)
    }
}

/// Completion shared by every record of one batch (and of the pieces it was split into).
#[derive(Default)]
pub(super) struct BatchShared {
    state: Mutex<State>,
}

impl BatchShared {
    /// Answers records `first_index .. first_index + records`.
    pub(super) fn complete(&self, first_index: u32, records: u32, result: BatchResult) {
        let wakers = {
            let mut st = self.state.lock();
            if st.find(first_index).is_some() {
                debug_assert!(false, "records from {first_index} completed twice");
                return;
            }
            let at = st
                .completed
                .partition_point(|c| c.first_index < first_index);
            st.completed.insert(
                at,
                Completed {
                    first_index,
                    records,
                    result,
                    at: Instant::now(),
                },
            );
            // Wakes the awaiters of other pieces too; they look again and wait on.
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves when the record is acknowledged (or has failed for good).
pub struct DeliveryFuture {
    shared: Arc<BatchShared>,
    /// The record's index in the batch `send` put it in.
    index: u32,
    topic: Arc<str>,
    partition: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(super) fn new(
        shared: Arc<BatchShared>,
        index: u32,
        topic: Arc<str>,
        partition: u32,
        timestamp: i64,
    ) -> DeliveryFuture {
        DeliveryFuture {
            shared,
            index,
            topic,
            partition,
            timestamp,
        }
    }

    /// When the acknowledgement (or failure) arrived, once it has.
    pub fn completed_at(&self) -> Option<Instant> {
        self.shared.state.lock().find(self.index).map(|c| c.at)
    }

    fn metadata(&self, c: &Completed) -> Result<RecordMetadata, Error> {
        c.result.clone().map(|(base, append_time)| RecordMetadata {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: base.map(|b| b + u64::from(self.index - c.first_index)),
            timestamp: append_time.unwrap_or(self.timestamp),
        })
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // One lock for the check and the registration: a completion cannot slip between.
        let mut st = self.shared.state.lock();
        if let Some(c) = st.find(self.index) {
            return Poll::Ready(self.metadata(c));
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future(shared: &Arc<BatchShared>, index: u32) -> DeliveryFuture {
        DeliveryFuture::new(shared.clone(), index, Arc::from("t"), 0, 7)
    }

    #[test]
    fn each_piece_gives_its_records_their_own_offsets_and_errors() {
        let shared = Arc::new(BatchShared::default());
        let futures: Vec<_> = (0..6).map(|i| future(&shared, i)).collect();
        // Pieces [0,1] at 100, [2] failed, [3,4,5] at 40 — answered out of order.
        shared.complete(3, 3, Ok((Some(40), None)));
        assert!(futures[0].completed_at().is_none());
        assert!(futures[2].completed_at().is_none());
        shared.complete(0, 2, Ok((Some(100), Some(9))));
        shared.complete(2, 1, Err(Error::Invalid("too large".into())));
        let offsets: Vec<_> = futures
            .into_iter()
            .map(|f| futures::executor::block_on(f).map(|m| (m.offset, m.timestamp)))
            .collect();
        assert_eq!(offsets[0].as_ref().unwrap(), &(Some(100), 9));
        assert_eq!(offsets[1].as_ref().unwrap(), &(Some(101), 9));
        assert!(offsets[2].is_err());
        assert_eq!(offsets[3].as_ref().unwrap(), &(Some(40), 7));
        assert_eq!(offsets[5].as_ref().unwrap(), &(Some(42), 7));
    }

    #[test]
    fn an_unanswered_index_is_not_found() {
        let mut st = State::default();
        assert!(st.find(0).is_none());
        st.completed.push(Completed {
            first_index: 2,
            records: 2,
            result: Ok((None, None)),
            at: Instant::now(),
        });
        assert!(st.find(1).is_none());
        assert!(st.find(2).is_some() && st.find(3).is_some());
        assert!(st.find(4).is_none());
    }
}
