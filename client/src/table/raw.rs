//! The handles applications hold: [`TableSet`] (several topics, one applier) and
//! [`RawTable`] (one topic of a set; bytes in, bytes out). Both are cheap clones of an
//! `Arc` to the shared state; the applier task owns the writing side.
//!
//! Invariant: consistent reads (snapshot, for_each, snapshot_all) read-lock shards in
//! the global order (topic index, shard index), the order the applier write-locks in,
//! so they never deadlock and never see part of an apply unit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLockReadGuard;
use sluice_proto::source_pos::{PosRequest, SourcePos};
use tokio::sync::{broadcast, watch};

use super::source::SourceState;
use super::store::{Shard, Store};
use super::{ChangeSet, TableConfig, TableSnapshot, TableStats};
use crate::{ClientConfig, Error};

/// Whether bootstrap has finished.
#[derive(Debug, Clone)]
pub(crate) enum Readiness {
    Bootstrapping,
    Ready,
    /// The table stopped following (a non-retriable error, or closed before ready).
    Failed(Error),
}

/// One topic's rows and progress, shared by readers and the applier.
pub(crate) struct TopicShared {
    pub(crate) topic: String,
    /// The topic's id at open (a snapshot of a deleted and re-created topic is
    /// not used).
    pub(crate) topic_id: String,
    pub(crate) store: Store,
    /// Rows loaded from a local snapshot at open.
    pub(crate) snapshot_rows: Option<usize>,
    /// Next offset not yet applied, per partition. Modified by the applier while it
    /// holds the write locks of the shards an apply unit touches.
    pub(crate) position: watch::Sender<BTreeMap<u32, u64>>,
    pub(crate) changes: broadcast::Sender<Arc<ChangeSet>>,
    /// `sluice.pos` headers of this topic that did not parse (its fetch tasks count).
    pub(crate) malformed_positions: Arc<AtomicU64>,
    /// [`super::TableConfig::row_images`]: the values held are row images (and the
    /// local snapshot is kept under its own name).
    pub(crate) row_images: bool,
}

/// What every handle of one set shares.
pub(crate) struct SetShared {
    pub(crate) topics: Vec<Arc<TopicShared>>,
    /// Source positions per partition, topic and set. Modified by the applier while
    /// it holds the write locks of the shards an apply unit touches, like `position`.
    pub(crate) source: watch::Sender<SourceState>,
    pub(crate) readiness: watch::Sender<Readiness>,
    pub(crate) opened_at: Instant,
    pub(crate) bootstrap_ms: OnceLock<u64>,
    /// `true` once closed: fetch tasks and the applier stop.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set when the applier has exited (after writing the final snapshot, if any).
    pub(crate) finished: watch::Sender<bool>,
    /// Longest hold of shard write locks for one apply unit (µs).
    pub(crate) apply_lock_max_us: std::sync::atomic::AtomicU64,
    /// Where snapshots go, when opened with one.
    pub(crate) snapshot_dir: Option<PathBuf>,
    /// [`TableConfig::apply_chunk_records`]: records per lock round of a large unit.
    pub(crate) apply_chunk_records: usize,
    /// [`TableConfig::large_unit_records`]: units with more keyed records than this are
    /// applied in chunks behind a fence.
    pub(crate) large_unit_records: usize,
}

impl SetShared {
    pub(crate) fn ready(&self) -> bool {
        matches!(*self.readiness.borrow(), Readiness::Ready)
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let mut rx = self.readiness.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(e) => return Err(e.clone()),
                Readiness::Bootstrapping => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    fn close(&self) {
        self.shutdown.send_replace(true);
    }

    async fn closed(&self) {
        let mut rx = self.finished.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Waits until `pick` (the set's or one topic's position) reaches `request`.
    async fn wait_for_source(
        &self,
        what: &str,
        request: &PosRequest,
        timeout: Duration,
        pick: impl Fn(&SourceState) -> Option<&SourcePos>,
    ) -> Result<(), Error> {
        let mut rx = self.source.subscribe();
        let done = |s: &SourceState| pick(s).is_some_and(|p| p.reached(request));
        let waited =
            tokio::time::timeout(timeout, async { rx.wait_for(done).await.map(|_| ()) }).await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                let at = match pick(&self.source.borrow()) {
                    Some(p) => format!("it is at {p}"),
                    None => "it has no source position yet (a partition has applied no \
                             record with sluice.pos)"
                        .to_string(),
                };
                Err(Error::Timeout(format!(
                    "{what}: source position {} not reached within {timeout:?}; {at}",
                    request_text(request)
                )))
            }
        }
    }
}

/// A request as the user wrote it (`0/16B3748`, `0-1-42`, `mysql-bin.000003:1234`).
pub(crate) fn request_text(request: &PosRequest) -> String {
    match request {
        PosRequest::Lsn(l) => l.to_string(),
        PosRequest::Gtids(g) => g.to_string(),
        PosRequest::Binlog(b) => b.to_string(),
    }
}

/// What handles hold: the last one dropped closes the set, so forgotten tables do
/// not keep fetching.
pub(crate) struct Handle(pub(crate) Arc<SetShared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Read-locks every shard of `topics`, in the global lock order.
pub(crate) fn read_all<'a>(topics: &'a [Arc<TopicShared>]) -> Vec<Vec<RwLockReadGuard<'a, Shard>>> {
    topics
        .iter()
        .map(|t| t.store.shards().iter().map(|s| s.read()).collect())
        .collect()
}

fn snapshot_locked(
    t: &TopicShared,
    guards: &[RwLockReadGuard<'_, Shard>],
    ready: bool,
    source_position: Option<SourcePos>,
) -> TableSnapshot {
    let rows_total: usize = guards.iter().map(|g| g.rows()).sum();
    let mut rows = Vec::with_capacity(rows_total);
    for g in guards {
        g.for_each(|k, v| rows.push((Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))));
    }
    TableSnapshot {
        topic: t.topic.clone(),
        ready,
        position: t.position.borrow().clone(),
        source_position,
        rows,
    }
}

/// Several topics followed by one applier, so a transaction spanning them becomes
/// visible in all at once.
#[derive(Clone)]
pub struct TableSet {
    handle: Arc<Handle>,
}

impl TableSet {
    /// Checks the topics exist, then bootstraps and follows them in the background;
    /// returns at once. Await [`TableSet::ready`] before trusting the contents.
    pub async fn open(
        client: &ClientConfig,
        topics: &[String],
        config: TableConfig,
    ) -> Result<TableSet, Error> {
        let shared = super::open::start(client, topics, config, None).await?;
        Ok(TableSet {
            handle: Arc::new(Handle(shared)),
        })
    }

    fn shared(&self) -> &SetShared {
        &self.handle.0
    }

    /// The table of `topic`, if the set follows it.
    pub fn table(&self, topic: &str) -> Option<RawTable> {
        let index = self.shared().topics.iter().position(|t| t.topic == topic)?;
        Some(RawTable {
            handle: self.handle.clone(),
            index,
        })
    }

    /// Names of the topics followed, in the set's order.
    pub fn topics(&self) -> Vec<String> {
        self.shared()
            .topics
            .iter()
            .map(|t| t.topic.clone())
            .collect()
    }

    /// Waits until every partition of every topic has been read up to the high
    /// watermark captured at open. An error when the set failed or was closed first.
    pub async fn ready(&self) -> Result<(), Error> {
        self.shared().wait_ready().await
    }

    pub fn is_ready(&self) -> bool {
        self.shared().ready()
    }

    /// One snapshot per topic, all taken at the same instant (no transaction is
    /// half-applied across them).
    pub fn snapshot_all(&self) -> Vec<TableSnapshot> {
        let ready = self.shared().ready();
        let guards = read_all(&self.shared().topics);
        let source = self.shared().source.borrow().clone();
        self.shared()
            .topics
            .iter()
            .zip(guards.iter())
            .enumerate()
            .map(|(i, (t, g))| snapshot_locked(t, g, ready, source.topic_min(i).cloned()))
            .collect()
    }

    /// How far into the source's change stream every table of the set is: the least
    /// of every partition's last applied `sluice.pos` (a transaction's counts once it
    /// is visible). `None` until every partition of every topic applied a positioned
    /// record (a heartbeat will do), or when the topics come from different kinds of
    /// source.
    pub fn source_position(&self) -> Option<SourcePos> {
        self.shared().source.borrow().min().cloned()
    }

    /// Returns once [`TableSet::source_position`] has reached `request` (what the
    /// application's own commit returned: `pg_current_wal_lsn()`, `@@gtid_binlog_pos`),
    /// so every table of the set shows that commit, else `Error::Timeout`. Waits on a
    /// `tokio::sync::watch` the applier sends to; never polls.
    pub async fn wait_for_source(
        &self,
        request: &PosRequest,
        timeout: Duration,
    ) -> Result<(), Error> {
        let what = self.topics().join(",");
        self.shared()
            .wait_for_source(&what, request, timeout, SourceState::min)
            .await
    }

    /// Stops following (and writes the final snapshot when opened with one, in the
    /// background; await [`TableSet::closed`] for it). Reads keep working on the rows
    /// held.
    pub fn close(self) {
        self.shared().close();
    }

    /// Waits until the background tasks have stopped after a close.
    pub async fn closed(&self) {
        self.shared().closed().await
    }
}

/// One topic's table: keys and values as bytes. Clone is cheap (an `Arc`).
#[derive(Clone)]
pub struct RawTable {
    handle: Arc<Handle>,
    index: usize,
}

impl std::fmt::Debug for RawTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTable")
            .field("topic", &self.topic())
            .finish()
    }
}

impl RawTable {
    /// Starts bootstrapping `topic` in the background; returns at once (after checking
    /// the topic exists).
    pub async fn open(
        client: &ClientConfig,
        topic: &str,
        config: TableConfig,
    ) -> Result<RawTable, Error> {
        let set = TableSet::open(client, &[topic.to_string()], config).await?;
        set.table(topic)
            .ok_or_else(|| Error::Invalid(format!("table set lost topic {topic}")))
    }

    /// Like [`RawTable::open`], starting from `dir/<topic>.snapshot` when it is usable
    /// (see docs/table.md), and writing it on close and every
    /// `config.snapshot_interval`.
    pub async fn open_with_snapshot(
        client: &ClientConfig,
        topic: &str,
        config: TableConfig,
        dir: &Path,
    ) -> Result<RawTable, Error> {
        let shared = super::open::start(client, &[topic.to_string()], config, Some(dir)).await?;
        Ok(RawTable {
            handle: Arc::new(Handle(shared)),
            index: 0,
        })
    }

    fn shared(&self) -> &SetShared {
        &self.handle.0
    }

    fn t(&self) -> &TopicShared {
        &self.shared().topics[self.index]
    }

    pub fn topic(&self) -> &str {
        &self.t().topic
    }

    /// The set this table belongs to.
    pub fn set(&self) -> TableSet {
        TableSet {
            handle: self.handle.clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.shared().ready()
    }

    pub async fn ready(&self) -> Result<(), Error> {
        self.shared().wait_ready().await
    }

    /// A copy of `key`'s value. Takes one shard read lock for the lookup; never waits
    /// for the network or for decoding.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.t().store.get(key)
    }

    pub fn len(&self) -> usize {
        self.t().store.totals().rows
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row and the positions they reflect, at one instant.
    pub fn snapshot(&self) -> TableSnapshot {
        let ready = self.shared().ready();
        let t = self.t();
        let guards: Vec<_> = t.store.shards().iter().map(|s| s.read()).collect();
        snapshot_locked(t, &guards, ready, self.source_position())
    }

    /// Calls `f` for every row, at one instant. Holds every shard's read lock
    /// meanwhile (readers go on; the applier waits), so keep `f` quick.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let guards: Vec<_> = self.t().store.shards().iter().map(|s| s.read()).collect();
        for g in &guards {
            g.for_each(&mut f);
        }
    }

    /// Next offset not yet applied, per partition.
    pub fn position(&self) -> BTreeMap<u32, u64> {
        self.t().position.borrow().clone()
    }

    /// Returns once every `(partition, offset)` is applied (its position is past the
    /// offset): pass the offsets a producer's sends returned for read-your-writes.
    pub async fn wait_for(&self, offsets: &[(u32, u64)], timeout: Duration) -> Result<(), Error> {
        let mut rx = self.t().position.subscribe();
        if let Some((p, _)) = offsets.iter().find(|(p, _)| !rx.borrow().contains_key(p)) {
            return Err(Error::Invalid(format!(
                "{} has no partition {p}",
                self.topic()
            )));
        }
        let done = |pos: &BTreeMap<u32, u64>| {
            offsets
                .iter()
                .all(|(p, o)| pos.get(p).is_some_and(|next| next > o))
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(done)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(format!(
                "{}: offsets {offsets:?} not applied within {timeout:?}",
                self.topic()
            ))),
        }
    }

    /// How far into the source's change stream this table is: the least of its
    /// partitions' last applied `sluice.pos` (a transaction's counts once it is
    /// visible). `None` until every partition applied a positioned record (a
    /// heartbeat will do). See [`TableSet::source_position`] for a whole set.
    pub fn source_position(&self) -> Option<SourcePos> {
        self.shared().source.borrow().topic_min(self.index).cloned()
    }

    /// Returns once [`RawTable::source_position`] has reached `request` (what the
    /// application's own commit returned: `pg_current_wal_lsn()`,
    /// `@@gtid_binlog_pos`), so the table shows that commit, else `Error::Timeout`.
    /// A transaction that also wrote other topics is visible in them too only if they
    /// are in this table's set: wait on [`TableSet::wait_for_source`] for all of them.
    pub async fn wait_for_source(
        &self,
        request: &PosRequest,
        timeout: Duration,
    ) -> Result<(), Error> {
        let index = self.index;
        self.shared()
            .wait_for_source(self.topic(), request, timeout, |s| s.topic_min(index))
            .await
    }

    /// Every applied change from now on, one [`ChangeSet`] per transaction or run.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeSet>> {
        self.t().changes.subscribe()
    }

    pub fn stats(&self) -> TableStats {
        let t = self.t().store.totals();
        TableStats {
            rows: t.rows,
            key_bytes: t.key_bytes,
            value_bytes: t.value_bytes,
            memory_bytes: t.memory_bytes,
            bytes_per_row: if t.rows == 0 {
                0.0
            } else {
                t.memory_bytes as f64 / t.rows as f64
            },
            bootstrap_ms: self.shared().bootstrap_ms.get().copied(),
            snapshot_rows: self.t().snapshot_rows,
            apply_lock_max_us: self
                .shared()
                .apply_lock_max_us
                .load(std::sync::atomic::Ordering::Relaxed),
            malformed_positions: self
                .t()
                .malformed_positions
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Stops following: closes the whole set this table belongs to. Reads keep
    /// working on the rows held.
    pub fn close(&self) {
        self.shared().close();
    }

    /// Waits until the background tasks have stopped after a close (the final
    /// snapshot, if any, is written by then).
    pub async fn closed(&self) {
        self.shared().closed().await
    }
}
