//! Metadata writes, ordered, outside the state lock.
//!
//! A request changes the [`ClusterState`](crate::state::ClusterState) under the state
//! lock and *stages* the change there: it takes the next sequence number, a copy of the
//! snapshot, and queues the resulting pushes behind a [`DurableGate`] for that number.
//! Then it releases the lock and [`Staged::write`]s. Heartbeats, describes and other
//! requests take the state lock meanwhile and never wait on the store: a slow etcd write
//! delays only the requests whose change it carries.
//!
//! Order: writes take the store one at a time, and a write whose sequence number is
//! already durable is skipped, because every snapshot holds all changes staged before
//! it. So the store only moves forward, and a push goes out only once a snapshot that
//! holds its change is stored (the per-broker push queues are FIFO, so pushes keep the
//! order in which they were staged).
//!
//! A failed write ends the term (as before: nothing more is stored or pushed from a
//! state the store does not hold): later writes are refused, pushes gated on changes
//! that were never stored are dropped, and the controller loop resigns on its next tick.

use tokio::sync::{watch, Mutex};

use crate::pusher::PushAck;
use crate::state::Snapshot;
use crate::store::{LeaseProbe, Store, StoreError};

/// What the store holds, as far as this term knows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durable {
    /// Highest sequence number whose snapshot (or a later one) is stored.
    pub(crate) seq: u64,
    /// A write failed or the term ended: nothing more is written.
    pub(crate) failed: bool,
}

/// The store of one controller term and the order of its writes.
pub(crate) struct Writer {
    /// `None` once the term ended and the store was handed back to the campaign.
    store: Mutex<Option<Store>>,
    durable: watch::Sender<Durable>,
    /// Read without the store, which a write may hold for a while.
    lease: LeaseProbe,
}

impl Writer {
    pub(crate) fn new(store: Store) -> Writer {
        Writer {
            lease: store.lease_probe(),
            store: Mutex::new(Some(store)),
            durable: watch::channel(Durable::default()).0,
        }
    }

    /// A write failed (or the term ended): the term must end.
    pub(crate) fn failed(&self) -> bool {
        self.durable.borrow().failed
    }

    pub(crate) fn lease_lost(&self) -> bool {
        self.lease.lease_lost()
    }

    /// A gate that opens once the snapshot numbered `seq` is stored.
    pub(crate) fn gate(&self, seq: u64) -> DurableGate {
        DurableGate {
            durable: self.durable.subscribe(),
            seq,
        }
    }

    /// Writes `snapshot` (numbered `seq`) unless a later one is already stored.
    async fn write(&self, seq: u64, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut store = self.store.lock().await;
        let durable = *self.durable.borrow();
        if durable.failed {
            return Err(StoreError::TermEnded);
        }
        if durable.seq >= seq {
            return Ok(());
        }
        let Some(store) = store.as_mut() else {
            return Err(StoreError::TermEnded);
        };
        match store.save(snapshot).await {
            Ok(()) => {
                self.durable.send_modify(|d| d.seq = d.seq.max(seq));
                Ok(())
            }
            Err(e) => {
                self.durable.send_modify(|d| d.failed = true);
                Err(e)
            }
        }
    }

    /// Holds the store as a write in flight does, for tests of what must not wait on it.
    #[cfg(test)]
    pub(crate) async fn stall(&self) -> tokio::sync::MutexGuard<'_, Option<Store>> {
        self.store.lock().await
    }

    /// Ends the term: waits for a write in flight, refuses later ones, drops pushes
    /// still waiting for a write, and hands the store back.
    pub(crate) async fn end_term(&self) -> Option<Store> {
        let store = self.store.lock().await.take();
        self.durable.send_modify(|d| d.failed = true);
        store
    }
}

/// Opens once a given snapshot is stored; pushes wait on it.
#[derive(Clone)]
pub(crate) struct DurableGate {
    durable: watch::Receiver<Durable>,
    seq: u64,
}

impl DurableGate {
    /// `true` once the snapshot is stored; `false` if the term ended first.
    pub(crate) async fn passed(mut self) -> bool {
        let seq = self.seq;
        match self.durable.wait_for(|d| d.seq >= seq || d.failed).await {
            Ok(d) => d.seq >= seq,
            Err(_) => false,
        }
    }
}

/// A change staged under the state lock, to be written after releasing it.
#[must_use = "a staged change must be written"]
pub(crate) struct Staged {
    pub(crate) writer: std::sync::Arc<Writer>,
    pub(crate) seq: u64,
    pub(crate) snapshot: Snapshot,
    /// Pushes queued behind this write.
    pub(crate) acks: Vec<PushAck>,
}

impl Staged {
    /// Stores the change (in order); its pushes go out once it is stored. Call without
    /// holding the state lock.
    pub(crate) async fn write(self) -> Result<Vec<PushAck>, StoreError> {
        self.writer.write(self.seq, &self.snapshot).await?;
        Ok(self.acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> Writer {
        let spec = format!("embedded:{}", dir.display());
        Writer::new(Store::open(&spec, std::time::Duration::from_secs(1)).unwrap())
    }

    #[tokio::test]
    async fn a_later_snapshot_stored_first_covers_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(
            &format!("embedded:{}", dir.path().display()),
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        store.acquire(1, std::time::Duration::from_millis(10)).await;
        let w = Writer::new(store);
        let (early, late) = (w.gate(1), w.gate(2));
        let second = Snapshot {
            next_broker_epoch: 2,
            ..Snapshot::default()
        };
        w.write(2, &second).await.unwrap();
        // Seq 1 is covered by 2: skipped, never written over it.
        w.write(1, &Snapshot::default()).await.unwrap();
        assert!(early.passed().await && late.passed().await);
        let mut store = w.end_term().await.unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().next_broker_epoch, 2);
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_term_and_drops_gated_pushes() {
        let dir = tempfile::tempdir().unwrap();
        // Never acquired: the embedded store refuses to write without the lease.
        let w = writer(dir.path());
        let gate = w.gate(1);
        assert!(w.write(1, &Snapshot::default()).await.is_err());
        assert!(w.failed());
        assert!(!gate.passed().await);
        assert!(matches!(
            w.write(2, &Snapshot::default()).await,
            Err(StoreError::TermEnded)
        ));
    }
}
