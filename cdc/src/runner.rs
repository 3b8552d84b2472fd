//! Drives a source's events into the sink and acknowledgements back to the source.
//!
//! The source task sends [`SourceEvent`]s on a bounded channel. Each event becomes one
//! unit: its records are handed to the producer in source order (the producer keeps
//! each partition's order), and a second task awaits their acknowledgements (any
//! order) and feeds them to the [`Tracker`], whose confirmed position is published on a
//! watch channel for the source to confirm to its database.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::Error;
use futures::stream::{FuturesUnordered, StreamExt};
use metrics::{counter, gauge};
use sluice_proto::source_pos::SourcePos;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::change::{SourceEvent, TableId};
use crate::health::Phase;
use crate::position::Tracker;
use crate::sink::{now_ms, Pending, Sink};

/// Counters a terminal progress line and `/metrics` read.
#[derive(Debug, Default)]
pub struct Stats {
    pub snapshot_rows: AtomicU64,
    pub snapshot_rows_expected: AtomicU64,
    pub snapshot_done: std::sync::atomic::AtomicBool,
    pub transactions: AtomicU64,
    pub changes: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Commit time of the last transaction written (ms since the epoch).
    pub last_commit_ms: AtomicI64,
    /// Records handed to the producer and not yet acknowledged.
    pub in_flight_units: AtomicU64,
    /// Liveness for `/healthz`: the phase and progress this runner marks, the failures
    /// the supervisor marks.
    pub health: crate::health::Health,
}

/// How often, at most, the runner looks for partitions due a heartbeat after a
/// transaction (see `run`; only partitions idle for `--heartbeat-ms` get one).
const CATCH_UP_HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The run's error when the acknowledgement task failed first (its error is returned).
const ACKER_FAILED: &str = "a write to Sluice failed";

/// Most units awaiting acknowledgement before the runner stops reading the source.
const MAX_IN_FLIGHT_UNITS: usize = 4096;

/// A copy being written.
struct CopyInProgress {
    /// Where its rows are (the snapshot's consistent point).
    pos: SourcePos,
    tables: Vec<TableId>,
    /// Whether its units confirm `pos` to the source: yes for a copy of every table
    /// (the stream starts at `pos`), no for a copy of tables added to a running
    /// capture (the stream that follows replays from below `pos`, and confirming `pos`
    /// would let the source forget changes of the other tables not written yet).
    positioned: bool,
}

/// A copy of `tables` at `pos` begins: progress counters, and the keys their topics
/// already hold (see [`Sink::begin_copy`]).
async fn start_copy(
    sink: &mut Sink,
    stats: &Stats,
    in_copy: bool,
    pos: SourcePos,
    tables: Vec<(TableId, u64)>,
    positioned: bool,
) -> Result<CopyInProgress, Error> {
    if in_copy {
        return Err(Error::Source("a copy started inside another".into()));
    }
    let expected: u64 = tables.iter().map(|(_, n)| n).sum();
    stats
        .snapshot_rows_expected
        .store(expected, Ordering::Relaxed);
    stats.snapshot_done.store(false, Ordering::Relaxed);
    gauge!("sluice_cdc_snapshot_rows_expected").set(expected as f64);
    let tables: Vec<TableId> = tables.into_iter().map(|(t, _)| t).collect();
    if positioned {
        info!(%pos, tables = tables.len(), expected_rows = expected, "initial copy started");
    } else {
        info!(%pos, tables = ?tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(), expected_rows = expected, "copy of tables added to --tables started; the others keep streaming");
    }
    sink.begin_copy(&tables).await?;
    Ok(CopyInProgress {
        pos,
        tables,
        positioned,
    })
}

/// Runs until the source's channel closes (clean stop) or a write fails. Returns the
/// last confirmed position.
pub async fn run(
    mut sink: Sink,
    mut events: mpsc::Receiver<SourceEvent>,
    confirmed_tx: watch::Sender<Option<SourcePos>>,
    stats: Arc<Stats>,
) -> Result<Option<SourcePos>, Error> {
    let exclude_columns = sink.exclude_columns().clone();
    let (unit_tx, mut unit_rx) = mpsc::channel::<(u64, Pending)>(MAX_IN_FLIGHT_UNITS);
    let tracker = Arc::new(parking_lot::Mutex::new(Tracker::new()));
    let acker = {
        let tracker = tracker.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut waiting = FuturesUnordered::new();
            loop {
                tokio::select! {
                    unit = unit_rx.recv() => match unit {
                        Some((seq, pending)) => waiting.push(async move {
                            for f in pending {
                                f.await?;
                            }
                            Ok::<u64, sluice_client::Error>(seq)
                        }),
                        None => break,
                    },
                    Some(done) = waiting.next(), if !waiting.is_empty() => {
                        let seq = done.map_err(Error::from)?;
                        stats.in_flight_units.fetch_sub(1, Ordering::Relaxed);
                        stats.health.acked();
                        let moved = tracker.lock().acked(seq).cloned();
                        if let Some(pos) = moved {
                            confirmed_tx.send_replace(Some(pos));
                        }
                    }
                }
            }
            while let Some(done) = waiting.next().await {
                let seq = done.map_err(Error::from)?;
                stats.in_flight_units.fetch_sub(1, Ordering::Relaxed);
                stats.health.acked();
                if let Some(pos) = tracker.lock().acked(seq).cloned() {
                    confirmed_tx.send_replace(Some(pos));
                }
            }
            Ok::<(), Error>(())
        })
    };
    let mut copy: Option<CopyInProgress> = None;
    let mut last_catch_up = std::time::Instant::now();
    // The position of the last transaction or heartbeat: a clean stop leaves every
    // partition there (heartbeats skip partitions written within the interval, and
    // no later heartbeat will come to bring them up to it).
    let mut last_streamed: Option<SourcePos> = None;
    let mut snapshot_ordinal = 0u64;
    let result: Result<(), Error> = async {
        loop {
            // Partitions a heartbeat skipped while they were busy get the latest
            // position once idle, whether or not the source sends anything more.
            // None between the parts of a transaction: a heartbeat there would put a
            // lower position after some of its records.
            let due = last_streamed
                .as_ref()
                .filter(|_| !sink.transaction_open())
                .and(sink.next_heartbeat_due());
            let wake = tokio::time::Instant::from_std(due.unwrap_or_else(std::time::Instant::now));
            let event = tokio::select! {
                e = events.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
                _ = tokio::time::sleep_until(wake), if due.is_some() => {
                    let pos = last_streamed.clone().expect("guarded by due");
                    let pending = sink.write_heartbeat(&pos).await?;
                    if !pending.is_empty() {
                        // Its position was confirmed with its own unit already.
                        let seq = tracker.lock().sent_unpositioned();
                        stats.in_flight_units.fetch_add(1, Ordering::Relaxed);
                        stats.health.sent();
                        if unit_tx.send((seq, pending)).await.is_err() {
                            return Err(Error::Source(ACKER_FAILED.into()));
                        }
                    }
                    continue;
                }
            };
            stats.health.event();
            let mut event = event;
            exclude_columns.apply_event(&mut event);
            if sink.transaction_open()
                && !matches!(
                    event,
                    SourceEvent::Transaction(_) | SourceEvent::TransactionPart { .. }
                )
            {
                return Err(Error::Source(
                    "the source sent another event between the parts of a transaction".into(),
                ));
            }
            // A unit of a copy of added tables, or a part of a transaction, confirms
            // nothing (see `CopyInProgress`; the last part confirms the transaction).
            let mut positioned = true;
            let (pos, pending) = match event {
                SourceEvent::MarkTopics { pos, copy_pending } => {
                    // The source copies or streams next (a copy says so when it starts).
                    stats.health.set_phase(Phase::Streaming);
                    (Some(pos), sink.mark_topics(copy_pending).await?)
                }
                SourceEvent::SnapshotStarted { pos, tables } => {
                    stats.health.set_phase(Phase::Copying);
                    let c = start_copy(&mut sink, &stats, copy.is_some(), pos, tables, true);
                    copy = Some(c.await?);
                    snapshot_ordinal = 0;
                    continue;
                }
                SourceEvent::AddedTablesCopyStarted { pos, tables } => {
                    stats.health.set_phase(Phase::Copying);
                    let c = start_copy(&mut sink, &stats, copy.is_some(), pos, tables, false);
                    copy = Some(c.await?);
                    snapshot_ordinal = 0;
                    continue;
                }
                SourceEvent::SnapshotRows(rows) => {
                    let c = copy.as_ref().ok_or_else(|| {
                        Error::Source("snapshot rows before the snapshot started".into())
                    })?;
                    positioned = c.positioned;
                    let pos = c.pos.clone();
                    let pending = sink
                        .write_snapshot_rows(&rows, &pos, snapshot_ordinal)
                        .await?;
                    snapshot_ordinal += rows.len() as u64;
                    stats
                        .snapshot_rows
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    counter!("sluice_cdc_snapshot_rows_total").increment(rows.len() as u64);
                    (Some(pos), pending)
                }
                SourceEvent::SnapshotDone => {
                    let c = copy.take().ok_or_else(|| {
                        Error::Source("snapshot end before the snapshot started".into())
                    })?;
                    positioned = c.positioned;
                    // Keys the topics held that the copy did not write were deleted in
                    // the source meanwhile: tombstoned before the copy counts as done.
                    let (mut pending, tombstones) =
                        sink.finish_copy(&c.pos, snapshot_ordinal).await?;
                    snapshot_ordinal += tombstones;
                    stats.snapshot_done.store(true, Ordering::Relaxed);
                    stats.health.set_phase(Phase::Streaming);
                    info!(
                        rows = snapshot_ordinal,
                        tombstones,
                        tables = c.tables.len(),
                        "initial copy written"
                    );
                    // Every partition of the copied tables ends past the copy: a restart
                    // knows it finished.
                    pending.extend(sink.write_copy_end(&c.pos, &c.tables).await?);
                    (Some(c.pos), pending)
                }
                SourceEvent::Transaction(txn) => {
                    if !sink.transaction_open() {
                        sink.stream_moved();
                    }
                    let pending = sink.write_transaction(&txn).await?;
                    stats.transactions.fetch_add(1, Ordering::Relaxed);
                    stats
                        .changes
                        .fetch_add(txn.changes.len() as u64, Ordering::Relaxed);
                    stats.last_commit_ms.store(txn.commit_ms, Ordering::Relaxed);
                    counter!("sluice_cdc_transactions_total").increment(1);
                    counter!("sluice_cdc_changes_total").increment(txn.changes.len() as u64);
                    gauge!("sluice_cdc_lag_seconds")
                        .set((now_ms() - txn.commit_ms).max(0) as f64 / 1000.0);
                    let mut pending = pending;
                    // Partitions idle for `--heartbeat-ms` learn the transaction's position
                    // now rather than at the source's next heartbeat (a Table's position
                    // is its partitions' minimum); the busy ones are at most that old.
                    if last_catch_up.elapsed() >= CATCH_UP_HEARTBEAT_EVERY {
                        pending.extend(sink.write_heartbeat(&txn.pos).await?);
                        last_catch_up = std::time::Instant::now();
                    }
                    last_streamed = Some(txn.pos.clone());
                    (Some(txn.pos), pending)
                }
                SourceEvent::TransactionPart {
                    txn,
                    truncated,
                    permit,
                } => {
                    // The stream moves to the transaction with its first part.
                    if !sink.transaction_open() {
                        sink.stream_moved();
                    }
                    let pending = sink.write_transaction_part(&txn, &truncated).await?;
                    // The source may read the next part (the producer's buffer bounds
                    // what is in flight from here).
                    drop(permit);
                    stats
                        .changes
                        .fetch_add(txn.changes.len() as u64, Ordering::Relaxed);
                    counter!("sluice_cdc_changes_total").increment(txn.changes.len() as u64);
                    counter!("sluice_cdc_transaction_parts_total").increment(1);
                    positioned = false;
                    (Some(txn.pos), pending)
                }
                SourceEvent::Heartbeat(pos) => {
                    sink.stream_moved();
                    last_streamed = Some(pos.clone());
                    let pending = sink.write_heartbeat(&pos).await?;
                    stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    (Some(pos), pending)
                }
                SourceEvent::IncrementalStarted {
                    table,
                    id,
                    pos,
                    requested_at,
                    after,
                } => {
                    // At the signal's place in the stream: the signal is not confirmed
                    // to the source before the pass is recorded (a crash replays it).
                    let pending = sink
                        .begin_incremental(&table, &id, &requested_at, after)
                        .await?;
                    (pos, pending)
                }
                SourceEvent::IncrementalKeys { table, keys } => {
                    sink.incremental_keys(&table, &keys);
                    continue;
                }
                SourceEvent::IncrementalChunk(chunk) => {
                    sink.stream_moved();
                    let pending = sink.write_incremental_chunk(&chunk).await?;
                    counter!("sluice_cdc_incremental_rows_total")
                        .increment(chunk.rows.len() as u64);
                    last_streamed = Some(chunk.pos.clone());
                    (Some(chunk.pos), pending)
                }
            };
            let seq = match pos.filter(|_| positioned) {
                Some(pos) => tracker.lock().sent(pos),
                None => tracker.lock().sent_unpositioned(),
            };
            stats.in_flight_units.fetch_add(1, Ordering::Relaxed);
            stats.health.sent();
            if unit_tx.send((seq, pending)).await.is_err() {
                // The acker failed; its error is what is returned (below).
                return Err(Error::Source(ACKER_FAILED.into()));
            }
        }
        if let Some(pos) = last_streamed {
            let pending = sink.write_final_heartbeat(&pos).await?;
            let seq = tracker.lock().sent(pos);
            stats.in_flight_units.fetch_add(1, Ordering::Relaxed);
            if unit_tx.send((seq, pending)).await.is_err() {
                return Err(Error::Source(ACKER_FAILED.into()));
            }
        }
        Ok(())
    }
    .await;
    drop(unit_tx);
    if result.is_err() {
        tracker.lock().failed();
        // Nothing more of this run may land: a record queued after a failed one would
        // sit after a hole (the producer is gapless per partition; this covers the rest).
        sink.abort().await;
    } else {
        sink.flush().await;
    }
    let acked = acker
        .await
        .map_err(|e| Error::Source(format!("acknowledgement task: {e}")))?;
    sink.close().await;
    match result {
        Err(Error::Source(m)) if m == ACKER_FAILED => acked?,
        // The run's own error first: an acknowledgement failing after it (a record the
        // abort failed unsent) is its consequence.
        Err(e) => return Err(e),
        Ok(()) => acked?,
    }
    let confirmed = tracker.lock().confirmed().cloned();
    Ok(confirmed)
}
