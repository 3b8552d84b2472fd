//! The copies of the MariaDB source: which tables a run copies ([`copy_plan`]), and the
//! copy itself ([`copy`]): every table at one consistent snapshot before streaming starts
//! there, or only tables added to `--tables` at a snapshot of their own, after which the
//! stream goes on from the topics' position. Called by the source's task before it
//! streams (docs/cdc-mysql.md, "Initial copy" and "Adding and removing tables").
//!
//! The snapshot: `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then
//! `binlog_snapshot_file` / `binlog_snapshot_position` read in that transaction (the
//! binlog coordinate of exactly that snapshot, without a lock) and the GTID state there
//! (`BINLOG_GTID_POS`). Every row of the copy is positioned at that point.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_proto::source_pos::{BinlogPos, GtidSet, SourcePos};
use tokio::sync::mpsc;
use tracing::info;

use super::{
    connect, gtids_at, key_of, my_err, qualified, quote_ident, send, status, types, MySourceConfig,
    SnapshotMode, Stop, TableInfo,
};
use crate::change::{CopyChunks, Row, SourceEvent, TableId};
use crate::sink::SnapshotState;
use crate::Error;

/// What a run copies before it streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyPlan {
    /// Nothing: stream from the topics' position (or, with nothing written and
    /// `--snapshot never`, from the binlog's end).
    None,
    /// Every table at one snapshot; streaming starts at its point. `over_rows`: some
    /// topic already holds records (a copy cut short).
    All { over_rows: bool },
    /// Only these tables (their topics hold no finished copy: added to `--tables`, or
    /// added back after being left out, or their own copy was cut short), at a snapshot
    /// of their own; the other tables' topics hold a finished copy and stream on from
    /// their position.
    Added(Vec<TableId>),
}

impl CopyPlan {
    /// Whether a table's topic places the stream's start: every table's, except one
    /// this plan copies on its own (its topic holds no finished copy, and its last
    /// records may be older than the others' or of a copy cut short).
    pub fn streams_from_topic(&self, table: &TableId) -> bool {
        match self {
            CopyPlan::Added(added) => !added.contains(table),
            _ => true,
        }
    }
}

/// Which tables a run copies, from what their topics hold (`states`).
pub fn copy_plan(
    mode: SnapshotMode,
    tables: &[TableId],
    states: &HashMap<TableId, SnapshotState>,
) -> CopyPlan {
    let state = |t: &TableId| states.get(t).copied().unwrap_or(SnapshotState::Empty);
    if mode != SnapshotMode::Initial {
        return CopyPlan::None;
    }
    let missing: Vec<TableId> = tables
        .iter()
        .filter(|t| state(t) != SnapshotState::Complete)
        .cloned()
        .collect();
    if missing.is_empty() {
        return CopyPlan::None;
    }
    if missing.len() == tables.len() {
        let over_rows = tables.iter().any(|t| state(t) != SnapshotState::Empty);
        return CopyPlan::All { over_rows };
    }
    CopyPlan::Added(missing)
}

/// Copies `tables` at a new consistent snapshot; `added`: they are tables added to a
/// running capture ([`SourceEvent::AddedTablesCopyStarted`]: the sink then takes only
/// their changes past the snapshot from the stream that follows, which starts below it),
/// else the initial copy of every table ([`SourceEvent::SnapshotStarted`]: the stream
/// starts at the snapshot). Returns the snapshot's point, or `None` when stopped.
pub(super) async fn copy(
    cfg: &MySourceConfig,
    tables: &[&TableInfo],
    added: bool,
    events: &mpsc::Sender<SourceEvent>,
    stop: &Stop,
) -> Result<Option<(BinlogPos, GtidSet)>, Error> {
    let mut conn = connect(&cfg.dsn).await?;
    // TIMESTAMPs read in UTC, as the binlog carries them.
    for set in [
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        conn.query_drop(set)
            .await
            .map_err(my_err("prepare snapshot session"))?;
    }
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(my_err("START TRANSACTION WITH CONSISTENT SNAPSHOT"))?;
    let file = status(&mut conn, "binlog_snapshot_file").await?;
    let offset = status(&mut conn, "binlog_snapshot_position").await?;
    let offset: u64 = offset.parse().map_err(|_| {
        Error::Source(format!(
            "mysql: binlog_snapshot_position {offset:?} is not a number"
        ))
    })?;
    let at = BinlogPos { file, offset };
    let gtids = gtids_at(&mut conn, &at).await;
    let pos = SourcePos::Mysql {
        binlog: at.clone(),
        gtids: gtids.clone(),
    };
    let want = tables
        .iter()
        .map(|t| ((*t.id).clone(), t.estimated_rows))
        .collect();
    let start = if added {
        info!(%pos, "copy of added tables at a consistent snapshot");
        SourceEvent::AddedTablesCopyStarted { pos, tables: want }
    } else {
        info!(%pos, "initial copy at a consistent snapshot");
        SourceEvent::SnapshotStarted { pos, tables: want }
    };
    send(events, start).await?;
    for t in tables {
        if !copy_table(&mut conn, cfg, t, events, stop).await? {
            return Ok(None);
        }
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(my_err("end snapshot"))?;
    send(events, SourceEvent::SnapshotDone).await?;
    Ok(Some((at, gtids)))
}

/// Reads one table in the snapshot's transaction on `conn`, handing its rows to the
/// runner in chunks. Returns `false` when stopped.
async fn copy_table(
    conn: &mut Conn,
    cfg: &MySourceConfig,
    t: &TableInfo,
    events: &mpsc::Sender<SourceEvent>,
    stop: &Stop,
) -> Result<bool, Error> {
    // In key order (InnoDB's clustered index: no sort): a copy started over at the
    // same binlog position numbers its rows as the cut one did.
    let select = format!(
        "SELECT {} FROM {} ORDER BY {}",
        t.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
        qualified(&t.id),
        t.key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut result = conn
        .exec_iter(select.as_str(), ())
        .await
        .map_err(my_err("snapshot SELECT"))?;
    let mut chunks = CopyChunks::new(events, cfg.snapshot_chunk_rows);
    let (started, mut rows) = (std::time::Instant::now(), 0u64);
    let table: Arc<TableId> = t.id.clone();
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        let Some(mut row) = result.next().await.map_err(my_err("snapshot read"))? else {
            break;
        };
        let mut after: Row = Vec::with_capacity(t.columns.len());
        for (i, c) in t.columns.iter().enumerate() {
            let v = row
                .take::<mysql_async::Value, _>(i)
                .unwrap_or(mysql_async::Value::NULL);
            after.push((c.name.clone(), types::to_json(&c.kind, &v)));
        }
        rows += 1;
        let key = key_of(t, &after)?;
        chunks.push(table.clone(), key, after).await?;
    }
    chunks.finish().await?;
    // Handed to the writer, not yet written: the channel holds up to 256 chunks.
    info!(table = %t.id, rows, seconds = started.elapsed().as_secs_f64(), "table read");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tables_without_a_finished_copy_are_copied_beside_ones_with_one() {
        use SnapshotState::*;
        let t = |s: &str| TableId::parse(s).unwrap();
        let tables = vec![t("shop.a"), t("shop.b"), t("shop.c")];
        let states = |s: [SnapshotState; 3]| -> HashMap<TableId, SnapshotState> {
            tables.iter().cloned().zip(s).collect()
        };
        let plan = |s| copy_plan(SnapshotMode::Initial, &tables, &states(s));
        assert_eq!(
            plan([Empty, Empty, Empty]),
            CopyPlan::All { over_rows: false }
        );
        // A copy of every table cut short: copied again, all of it.
        assert_eq!(
            plan([Incomplete, Empty, Incomplete]),
            CopyPlan::All { over_rows: true }
        );
        assert_eq!(plan([Complete, Complete, Complete]), CopyPlan::None);
        // Added (empty), added back (marked) or an added copy cut short: those alone.
        let added = plan([Complete, Empty, Incomplete]);
        assert_eq!(added, CopyPlan::Added(vec![t("shop.b"), t("shop.c")]));
        assert!(added.streams_from_topic(&t("shop.a")));
        assert!(!added.streams_from_topic(&t("shop.b")));
        // A table the sink knows nothing of counts as empty.
        let few: HashMap<TableId, SnapshotState> = [(t("shop.a"), Complete)].into();
        assert_eq!(
            copy_plan(SnapshotMode::Initial, &tables, &few),
            CopyPlan::Added(vec![t("shop.b"), t("shop.c")])
        );
        assert_eq!(
            copy_plan(
                SnapshotMode::Never,
                &tables,
                &states([Complete, Empty, Empty])
            ),
            CopyPlan::None
        );
    }
}
