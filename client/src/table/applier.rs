//! The set's single applier task: takes fetch deliveries, runs them through the
//! transaction assembler, and applies each released unit to the stores under one
//! round of shard write locks (topic index, then shard index: the global lock order).
//! Positions — offsets and source positions (`source.rs`) — advance while those locks
//! are held and change sets go out after, so a reader that sees a position also sees
//! the rows it covers, and `wait_for`/`wait_for_source` wake only once they are there.
//!
//! A unit with more keyed records than `large_unit_records` (a large transaction) is
//! applied in chunks instead, each under only its own shards' write locks, behind a
//! fence (`undo.rs`): readers see every touched key as it was before the unit until one
//! last short lock round over every touched shard lifts the fences and moves the
//! positions together, so the rule above holds for it too while no reader waits for
//! more than a chunk. A unit that fails halfway leaves its fences up: readers keep
//! seeing the table from before it (the set stops, as for any apply error).
//!
//! It also decides readiness (every partition's position reached the high watermark
//! captured at open), trims the stores' spare capacity at that moment, and writes
//! periodic and final snapshots when the set has a snapshot directory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLockWriteGuard;
use sluice_proto::source_pos::SourcePos;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::fetch::Delivery;
use super::raw::{Readiness, SetShared, TopicShared};
use super::store::Shard;
use super::txn::{Assembler, Tp, Unit};
use super::{Change, ChangeSet};
use crate::Error;

pub(crate) struct Applier {
    pub shared: Arc<SetShared>,
    pub assembler: Assembler,
    /// High watermarks captured at open: ready once every position reaches them.
    pub targets: BTreeMap<Tp, u64>,
    pub rx: mpsc::Receiver<Delivery>,
    pub snapshot_interval: Option<std::time::Duration>,
}

impl Applier {
    pub(crate) async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        self.check_ready();
        let mut tick = self.snapshot_interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            tokio::select! {
                biased;
                _ = closed(&mut shutdown) => break,
                d = self.rx.recv() => match d {
                    Some(d) => {
                        if let Err(e) = self.on_delivery(d) {
                            self.fail(e);
                            break;
                        }
                    }
                    None => break,
                },
                _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                    self.write_snapshots().await;
                }
            }
        }
        self.shared.shutdown.send_replace(true);
        if self.shared.ready() {
            self.write_snapshots().await;
        }
        if matches!(*self.shared.readiness.borrow(), Readiness::Bootstrapping) {
            self.shared
                .readiness
                .send_replace(Readiness::Failed(Error::Closed));
        }
        self.shared.finished.send_replace(true);
    }

    fn fail(&self, error: Error) {
        warn!(error = %error, "table stopped following");
        self.shared.readiness.send_replace(Readiness::Failed(error));
    }

    fn on_delivery(&mut self, d: Delivery) -> Result<(), Error> {
        let now = Instant::now();
        match d {
            Delivery::Records {
                tp,
                records,
                next_offset,
                high_watermark,
                _permit,
            } => self
                .assembler
                .push_fetched(tp, records, next_offset, high_watermark, now),
            Delivery::Reset { tp, offset } => self.assembler.reset(tp, offset),
            Delivery::Failed { error } => return Err(error),
        }
        for unit in self.assembler.drain(now) {
            apply_unit(&self.shared, unit)?;
        }
        self.check_ready();
        Ok(())
    }

    fn check_ready(&mut self) {
        if !matches!(*self.shared.readiness.borrow(), Readiness::Bootstrapping) {
            return;
        }
        let done = self.targets.iter().all(|(&(t, p), &target)| {
            let pos = self.shared.topics[t].position.borrow();
            pos.get(&p).is_some_and(|&o| o >= target)
        });
        if !done {
            return;
        }
        let ms = self.shared.opened_at.elapsed().as_millis() as u64;
        let _ = self.shared.bootstrap_ms.set(ms);
        for t in &self.shared.topics {
            for s in t.store.shards() {
                s.write().trim(t.store.hasher());
            }
            let totals = t.store.totals();
            info!(topic = %t.topic, rows = totals.rows, bootstrap_ms = ms,
                memory_bytes = totals.memory_bytes, "table ready");
        }
        self.shared.readiness.send_replace(Readiness::Ready);
    }

    async fn write_snapshots(&self) {
        let Some(dir) = self.shared.snapshot_dir.clone() else {
            return;
        };
        for t in &self.shared.topics {
            let t = t.clone();
            let dir = dir.clone();
            let topic = t.topic.clone();
            let written =
                tokio::task::spawn_blocking(move || super::snapshot::write(&dir, &t)).await;
            match written {
                Ok(Ok(path)) => info!(topic, path = %path.display(), "table snapshot written"),
                Ok(Err(e)) => warn!(topic, error = %e, "table snapshot not written"),
                Err(e) => warn!(topic, error = %e, "table snapshot task failed"),
            }
        }
    }
}

/// Resolves once the set is closed (or its handles are all gone).
async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|closed| *closed).await.map(|_| ());
}

/// Applies one unit: hashes outside the locks, then write-locks every shard it
/// touches in the global order, applies the records and moves the positions, and
/// publishes the change sets after unlocking. A unit larger than
/// `large_unit_records` goes through [`apply_fenced`] instead.
pub(crate) fn apply_unit(shared: &SetShared, unit: Unit) -> Result<(), Error> {
    let topics = &shared.topics;
    let (plan, touched) = plan_unit(topics, &unit);
    if plan.len() > shared.large_unit_records {
        return apply_fenced(shared, &unit, plan, &touched);
    }
    if shared.ready() {
        warm(topics, &unit, &plan);
    }
    let locked_at = Instant::now();
    let mut guards = lock_touched(topics, &touched);
    let watching: Vec<bool> = topics
        .iter()
        .map(|t| t.changes.receiver_count() > 0)
        .collect();
    let mut changes: Vec<Vec<Change>> = vec![Vec::new(); topics.len()];
    for (pi, ri, hash, shard) in plan {
        let piece = &unit.pieces[pi];
        let t = piece.tp.0;
        let r = &piece.records[ri];
        let Some(key) = &r.key else { continue };
        let Some(guard) = guards[t][shard].as_mut() else {
            continue;
        };
        let mut old = None;
        let hasher = topics[t].store.hasher();
        let watched = watching[t];
        guard
            .apply(
                hasher,
                hash,
                key,
                r.value.as_deref(),
                watched.then_some(&mut old),
            )
            .map_err(|e| Error::Invalid(format!("{}: {e}", topics[t].topic)))?;
        if watched {
            changes[t].push(Change {
                key: key.clone(),
                old,
                new: r.value.clone(),
            });
        }
    }
    advance_positions(shared, &unit);
    drop(guards);
    note_lock_hold(shared, locked_at);
    publish(topics, changes);
    Ok(())
}

/// Applies a large unit in chunks behind a fence — one shard write-locked at a time,
/// for at most `apply_chunk_records` records — then makes it visible in one lock round
/// (module doc). The change sets list the unit's records in their order.
fn apply_fenced(
    shared: &SetShared,
    unit: &Unit,
    plan: Plan,
    touched: &[Vec<bool>],
) -> Result<(), Error> {
    let topics = &shared.topics;
    // Records per (topic, shard): sizes each shard's overlay up front.
    let mut per_shard: Vec<Vec<usize>> = topics
        .iter()
        .map(|t| vec![0; t.store.shards().len()])
        .collect();
    for &(pi, _, _, shard) in &plan {
        per_shard[unit.pieces[pi].tp.0][shard] += 1;
    }
    let watching: Vec<bool> = topics
        .iter()
        .map(|t| t.changes.receiver_count() > 0)
        .collect();
    let mut changes: Vec<Vec<(usize, Change)>> = vec![Vec::new(); topics.len()];
    // No `warm` pass here: a hold covers at most a chunk of one shard's records, cache
    // misses and all (about a millisecond), and looking every key up twice made a
    // million-row unit slower to become visible (docs/performance.md).
    let chunk = shared.apply_chunk_records.max(1);
    let shards: usize = topics.iter().map(|t| t.store.shards().len()).sum();
    let mut order: Vec<(usize, usize, usize)> = Vec::new();
    // Windows of about one chunk per shard, each applied by (topic, shard): every
    // shard is write-locked once per window for about a chunk, then left to readers
    // while the window's other shards are written (a shard re-locked for every chunk
    // kept a parked reader waiting for many chunks on a loaded machine), and the
    // unit's records are still read about in order (sorting the whole unit by shard
    // made it half again slower to apply). `i` keeps a key's records in their order
    // (one key, one shard).
    let window = chunk.saturating_mul(shards.max(1));
    for start in (0..plan.len()).step_by(window) {
        order.clear();
        order.extend(
            (start..plan.len().min(start.saturating_add(window)))
                .map(|i| (unit.pieces[plan[i].0].tp.0, plan[i].3, i)),
        );
        order.sort_unstable();
        let mut held: Option<Held<'_>> = None;
        for &(t, shard, i) in &order {
            let (pi, ri, hash, _) = plan[i];
            let piece = &unit.pieces[pi];
            let Some(key) = &piece.records[ri].key else {
                continue;
            };
            let store = &topics[t].store;
            if held
                .as_ref()
                .is_none_or(|(at, _, _, n)| *at != (t, shard) || *n >= chunk)
            {
                if let Some((_, g, locked_at, _)) = held.take() {
                    drop(g);
                    note_lock_hold(shared, locked_at);
                }
                let locked_at = Instant::now();
                let mut g = store.shards()[shard].write();
                if !g.fenced() {
                    g.raise_fence(store.hasher(), per_shard[t][shard]);
                }
                held = Some(((t, shard), g, locked_at, 0));
            }
            let (_, guard, _, n) = held.as_mut().expect("locked above");
            *n += 1;
            let r = &piece.records[ri];
            let mut old = None;
            guard
                .apply_fenced(
                    store.hasher(),
                    hash,
                    key,
                    r.value.as_deref(),
                    watching[t].then_some(&mut old),
                )
                .map_err(|e| Error::Invalid(format!("{}: {e}", topics[t].topic)))?;
            if watching[t] {
                let new = r.value.clone();
                let change = Change {
                    key: key.clone(),
                    old,
                    new,
                };
                changes[t].push((i, change));
            }
        }
        if let Some((_, g, locked_at, _)) = held.take() {
            drop(g);
            note_lock_hold(shared, locked_at);
        }
    }
    let locked_at = Instant::now();
    let mut guards = lock_touched(topics, touched);
    let overlays: Vec<_> = guards
        .iter_mut()
        .flatten()
        .flatten()
        .filter_map(|g| g.lift_fence())
        .collect();
    advance_positions(shared, unit);
    drop(guards);
    note_lock_hold(shared, locked_at);
    drop(overlays);
    let changes = changes
        .into_iter()
        .map(|mut c| {
            c.sort_unstable_by_key(|&(i, _)| i);
            c.into_iter().map(|(_, c)| c).collect()
        })
        .collect();
    publish(topics, changes);
    Ok(())
}

/// The shard a large unit's chunk is writing: (topic, shard), its write guard, when it
/// was locked, and the records written under it so far.
type Held<'a> = ((usize, usize), RwLockWriteGuard<'a, Shard>, Instant, usize);

/// Moves every piece's offset position and the source positions (the caller holds the
/// write locks of every shard the unit touched).
fn advance_positions(shared: &SetShared, unit: &Unit) {
    for piece in &unit.pieces {
        let (t, p) = piece.tp;
        shared.topics[t].position.send_modify(|pos| {
            pos.insert(p, piece.position);
        });
    }
    advance_source(shared, unit);
}

/// Records how long one lock round held shard write locks (`stats().apply_lock_max_us`,
/// once ready).
fn note_lock_hold(shared: &SetShared, locked_at: Instant) {
    if shared.ready() {
        let held_us = locked_at.elapsed().as_micros() as u64;
        shared
            .apply_lock_max_us
            .fetch_max(held_us, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Moves the source positions to the unit's last positioned record per partition
/// (the caller still holds the unit's write locks); wakes `wait_for_source` only when
/// one moved.
fn advance_source(shared: &SetShared, unit: &Unit) {
    let mut moved: Vec<(Tp, &SourcePos)> = unit
        .pieces
        .iter()
        .filter_map(|piece| Some((piece.tp, piece.source_position()?)))
        .collect();
    if moved.is_empty() {
        return;
    }
    shared.source.send_if_modified(|state| {
        moved.drain(..).fold(false, |changed, ((t, p), pos)| {
            state.advance(t, p, pos) | changed
        })
    });
}

/// (piece index, record index, key hash, shard) of each keyed record of a unit.
type Plan = Vec<(usize, usize, u64, usize)>;

/// Hashes every key of `unit` (outside any lock) and marks the shards it touches,
/// per topic.
fn plan_unit(topics: &[Arc<TopicShared>], unit: &Unit) -> (Plan, Vec<Vec<bool>>) {
    let mut plan = Vec::new();
    let mut touched: Vec<Vec<bool>> = topics
        .iter()
        .map(|t| vec![false; t.store.shards().len()])
        .collect();
    for (pi, piece) in unit.pieces.iter().enumerate() {
        let store = &topics[piece.tp.0].store;
        for (ri, r) in piece.records.iter().enumerate() {
            if let Some(key) = &r.key {
                let hash = store.hash(key);
                let shard = store.shard_of(hash);
                touched[piece.tp.0][shard] = true;
                plan.push((pi, ri, hash, shard));
            }
        }
    }
    (plan, touched)
}

/// Looks every key of the unit up under read locks first, so the index groups and
/// arena entries the write pass needs are in cache: the write locks (which readers
/// wait on) are then held for a fraction of the misses. Only once ready; a bootstrap
/// has no readers to spare and would pay the lookups twice.
fn warm<'a>(
    topics: &[Arc<TopicShared>],
    unit: &Unit,
    plan: impl IntoIterator<Item = &'a (usize, usize, u64, usize)>,
) {
    for &(pi, ri, hash, shard) in plan {
        let piece = &unit.pieces[pi];
        if let Some(key) = &piece.records[ri].key {
            let guard = topics[piece.tp.0].store.shards()[shard].read();
            std::hint::black_box(guard.get(hash, key).map(|v| v.len()));
        }
    }
}

/// Write-locks the touched shards in the global order (topic, then shard index).
fn lock_touched<'a>(
    topics: &'a [Arc<TopicShared>],
    touched: &[Vec<bool>],
) -> Vec<Vec<Option<RwLockWriteGuard<'a, Shard>>>> {
    topics
        .iter()
        .zip(touched)
        .map(|(t, touched)| {
            t.store
                .shards()
                .iter()
                .zip(touched)
                .map(|(s, &yes)| yes.then(|| s.write()))
                .collect()
        })
        .collect()
}

/// One change set per topic that changed (only collected while someone subscribes).
fn publish(topics: &[Arc<TopicShared>], changes: Vec<Vec<Change>>) {
    for (t, changes) in changes.into_iter().enumerate() {
        if changes.is_empty() {
            continue;
        }
        let _ = topics[t].changes.send(Arc::new(ChangeSet {
            topic: topics[t].topic.clone(),
            changes,
            position: topics[t].position.borrow().clone(),
        }));
    }
}

#[cfg(test)]
#[path = "applier_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "fence_tests.rs"]
mod fence_tests;

#[cfg(test)]
#[path = "fence_bench.rs"]
mod fence_bench;
