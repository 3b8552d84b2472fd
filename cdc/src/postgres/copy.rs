//! The copies of the Postgres source: which tables a run copies ([`copy_plan`]), every
//! table under a new slot's exported snapshot, or only tables added to `--tables` under
//! a temporary slot's snapshot while the slot and the other tables' stream go on
//! ([`copy_added`]); rows go to the runner in chunks ([`copy_rows`]). Called by the
//! source's task before it streams. A copy of every table splits large tables across
//! several connections ([`parallel`], `--copy-workers`); the rest, and copies of added
//! tables, are read by `pg_walstream`'s single reader.

use std::collections::HashMap;
use std::sync::Arc;

use pg_walstream::CancellationToken;
use sluice_proto::source_pos::{Lsn, SourcePos};
use tokio::sync::mpsc;
use tracing::{info, warn};

mod parallel;
mod text;

use super::setup::TableInfo;
use super::{key_of, pg_err, send, to_row, PgSourceConfig, SnapshotMode};
use crate::change::{CopyChunks, SourceEvent, TableId};
use crate::sink::SnapshotState;
use crate::Error;

/// What a run copies before it streams.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CopyPlan {
    None,
    /// Every table, under the snapshot of a new slot (an existing one is dropped).
    All,
    /// Only these tables (added to `--tables` since the others were copied), under a
    /// snapshot of their own; the slot and the other tables' stream go on.
    Added(Vec<Arc<TableId>>),
}

/// Which tables a run copies, from what the topics hold (`states`) and whether the slot
/// still exists.
pub(super) fn copy_plan(
    cfg: &PgSourceConfig,
    tables: &[TableInfo],
    states: &HashMap<TableId, SnapshotState>,
    slot_exists: bool,
) -> CopyPlan {
    if cfg.snapshot != SnapshotMode::Initial {
        return CopyPlan::None;
    }
    let (copied, missing): (Vec<&TableInfo>, Vec<&TableInfo>) = tables
        .iter()
        .partition(|t| states.get(&*t.id) == Some(&SnapshotState::Complete));
    if !slot_exists && !copied.is_empty() {
        warn!(slot = %cfg.slot, "the topics hold a finished copy but the slot is gone: changes since are lost to streaming, so the tables are copied again");
        return CopyPlan::All;
    }
    if missing.is_empty() {
        return CopyPlan::None;
    }
    if copied.is_empty() {
        return CopyPlan::All;
    }
    let added: Vec<Arc<TableId>> = missing.iter().map(|t| t.id.clone()).collect();
    info!(tables = ?added.iter().map(|t| t.to_string()).collect::<Vec<_>>(), "tables without a finished copy beside tables that have one: copying only those, the rest stream on from the slot");
    CopyPlan::Added(added)
}

/// Copies every captured table under a new slot's exported snapshot (`snap`, already
/// narrowed to the captured tables), after the runner was told the copy started: the
/// large tables first, each split across `--copy-workers` connections that import the
/// snapshot, then the others through `snap`'s own reader, in its order. Sends
/// [`SourceEvent::SnapshotDone`] once every row is handed on and returns the stream,
/// parked until then so that the snapshot stays importable; `None` when stopped (the
/// handle is dropped, which drops the new slot: the next run copies again).
pub(super) async fn copy_all(
    mut snap: pg_walstream::Snapshot,
    cfg: &PgSourceConfig,
    by_oid: &HashMap<u32, TableInfo>,
    events: &mpsc::Sender<SourceEvent>,
    stop: &CancellationToken,
) -> Result<Option<pg_walstream::LogicalReplicationStream>, Error> {
    let snapshot = snap.stream().exported_snapshot_name().map(str::to_string);
    if let (Some(snapshot), true) = (snapshot, cfg.copy_workers > 1) {
        let candidates = snap
            .tables()
            .iter()
            .filter_map(|t| {
                let r = t.relation();
                let info = by_oid.get(&r.relation_id)?;
                let names = r.columns.iter().map(|c| c.name.clone()).collect();
                Some((r.relation_id, names, info.clone()))
            })
            .collect();
        let plan = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            p = parallel::plan(&cfg.dsn, &snapshot, &cfg.publication, candidates, cfg.copy_workers) => p?,
        };
        let split: Vec<u32> = plan.tables.iter().map(|t| t.oid).collect();
        if !split.is_empty() {
            if !parallel::copy(plan, events, cfg.snapshot_chunk_rows, stop).await? {
                return Ok(None);
            }
            snap.retain_tables(|t| !split.contains(&t.relation().relation_id));
        }
    }
    let mut rows = snap.rows();
    if !copy_rows(&mut rows, cfg, by_oid, events, stop).await? {
        return Ok(None);
    }
    send(events, SourceEvent::SnapshotDone).await?;
    Ok(Some(rows.finish().await.map_err(pg_err("finish copy"))?))
}

/// Copies tables added to `--tables` on their own, before the stream starts, under
/// the exported snapshot of a temporary slot (`C`, its consistent point). The table
/// joined the publication (`setup::prepare`, committed before this), and the temporary
/// slot becomes consistent only once every transaction open when it was created has
/// ended, so every change to the table either committed below `C` (in the copy) or
/// commits past it and is decoded by the connector's own slot, which replays from its
/// confirmed position: the sink writes the table's changes only past `C` (the copy's
/// end heartbeat), the other tables' from where their topics end. Returns `false` when
/// stopped.
pub(super) async fn copy_added(
    cfg: &PgSourceConfig,
    added: &[&TableInfo],
    by_oid: &HashMap<u32, TableInfo>,
    events: &mpsc::Sender<SourceEvent>,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    let names: Vec<(&str, &str)> = added
        .iter()
        .map(|t| (t.id.schema.as_str(), t.id.table.as_str()))
        .collect();
    let publications = [cfg.publication.as_str()];
    let dsn = super::conn::PgConn::resolve(&cfg.dsn)?.walstream_dsn(false);
    let snap = tokio::select! {
        _ = stop.cancelled() => return Ok(false),
        s = pg_walstream::AlignedSnapshot::capture(&dsn, &publications, &names) => {
            s.map_err(pg_err("snapshot of the added tables"))?
        }
    };
    let mut snap = snap.with_cancellation(stop.clone());
    let pos = SourcePos::Postgres(Lsn(snap.consistent_point().value()));
    let want = added
        .iter()
        .map(|t| ((*t.id).clone(), t.estimated_rows))
        .collect();
    send(
        events,
        SourceEvent::AddedTablesCopyStarted { pos, tables: want },
    )
    .await?;
    if !copy_rows(&mut snap, cfg, by_oid, events, stop).await? {
        return Ok(false);
    }
    snap.finish().map_err(pg_err("finish copy"))?;
    send(events, SourceEvent::SnapshotDone).await?;
    Ok(true)
}

/// Where copy rows come from: the snapshot of a new slot, or of a temporary one.
pub(super) trait CopySource {
    async fn next(&mut self) -> Result<Option<pg_walstream::SnapshotRow>, Error>;
}

impl CopySource for pg_walstream::SnapshotRows {
    async fn next(&mut self) -> Result<Option<pg_walstream::SnapshotRow>, Error> {
        self.next_row().await.map_err(pg_err("copy"))
    }
}

impl CopySource for pg_walstream::AlignedSnapshot {
    async fn next(&mut self) -> Result<Option<pg_walstream::SnapshotRow>, Error> {
        self.next_row().await.map_err(pg_err("copy"))
    }
}

/// Hands every row of a copy to the runner in chunks. Returns `false` when stopped.
pub(super) async fn copy_rows(
    rows: &mut impl CopySource,
    cfg: &PgSourceConfig,
    by_oid: &HashMap<u32, TableInfo>,
    events: &mpsc::Sender<SourceEvent>,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    let mut chunks = CopyChunks::new(events, cfg.snapshot_chunk_rows);
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        let Some(row) = rows.next().await? else {
            break;
        };
        let Some(info) = by_oid.get(&row.relation.relation_id) else {
            return Err(Error::Source(format!(
                "postgres: the copy sent a row of {}.{} (oid {}), which is not captured",
                row.relation.namespace, row.relation.relation_name, row.relation.relation_id
            )));
        };
        let after = to_row(info, &row.data)?;
        let key = key_of(info, &after)?;
        chunks.push(info.id.clone(), key, after).await?;
    }
    chunks.finish().await?;
    Ok(true)
}
