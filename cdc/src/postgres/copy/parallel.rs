//! The initial copy of large tables by several connections at once (`--copy-workers`).
//!
//! Every worker opens its own connection, starts a `REPEATABLE READ` transaction and
//! imports the new slot's exported snapshot (`SET TRANSACTION SNAPSHOT`), so each sees
//! exactly the rows the slot's consistent point `C` sees — no more, no fewer — as the
//! single reader of `pg_walstream` does. A table is cut into ranges of heap blocks
//! (`ctid >= '(a,0)' AND ctid < '(b,0)'`, a TID range scan on Postgres 14+); the last
//! range has no upper bound, so a row is read exactly once even in blocks added since
//! the table's size was read. Workers take ranges from one queue (tables in the order
//! given, ranges in block order) and each sends its rows to the runner in chunks of its
//! own; the runner numbers rows in the order chunks arrive, so ordinals stay unique and
//! increasing per partition, and the copy's end heartbeat is written only after every
//! worker has finished (the caller sends [`crate::change::SourceEvent::SnapshotDone`]
//! once [`copy`] returns). Each key appears once in a copy, so the order between
//! workers is free.
//!
//! Split: plain tables (`relkind = 'r'`) of at least [`SPLIT_BLOCKS_MIN`] blocks whose
//! publication entry has no row filter, on Postgres 14 or later. Partitioned tables,
//! filtered tables and small ones are copied by `pg_walstream`'s reader as before.
//!
//! The exported snapshot stays importable while the replication connection that made
//! it receives no command: the caller holds the stream parked inside `pg_walstream`'s
//! snapshot handle until the copy is done.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use pg_walstream::CancellationToken;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::info;

use super::text::{for_each_field, Lines};
use crate::change::send;
use crate::change::{Op, Row, RowChange, SourceEvent, TableId};
use crate::postgres::setup::TableInfo;
use crate::postgres::{connect, key_of, quote_ident, source_err, types};
use crate::Error;

/// Smallest table split across workers (8 MiB at the default 8 KiB block size, about
/// 60,000 rows of 100 B): below it, opening connections costs more than it saves.
const SPLIT_BLOCKS_MIN: u64 = 1024;

/// Ranges per worker and table: more than one, so a worker that meets a slower range
/// (dead tuples, TOAST) does not leave the others idle at the end.
const RANGES_PER_WORKER: u64 = 4;

/// Smallest range, in blocks.
const RANGE_BLOCKS_MIN: u64 = 128;

const _: () = assert!(SPLIT_BLOCKS_MIN >= 2 * RANGE_BLOCKS_MIN);

/// First TID range scans (`ctid >= … AND ctid < …` without a full scan).
const PG14: i32 = 140_000;
/// First row filters in publications (`pg_publication_rel.prqual`).
const PG15: i32 = 150_000;

/// A range of heap blocks: `start` inclusive, `end` exclusive, `None` for "to the end
/// of the table, however long it is now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl BlockRange {
    fn predicate(&self) -> String {
        match self.end {
            Some(end) => format!(
                "ctid >= '({},0)'::tid AND ctid < '({end},0)'::tid",
                self.start
            ),
            None => format!("ctid >= '({},0)'::tid", self.start),
        }
    }
}

/// Ranges that together cover every block from 0 on, in order, each of at least
/// `RANGE_BLOCKS_MIN` blocks (but the last, open one), at most `parts` of them.
fn block_ranges(blocks: u64, parts: u64) -> Vec<BlockRange> {
    let parts = parts.min(blocks / RANGE_BLOCKS_MIN).max(1);
    let step = blocks.div_ceil(parts);
    let mut out = Vec::with_capacity(parts as usize);
    let mut start = 0;
    for i in 0..parts {
        let end = (i + 1 < parts).then_some(start + step);
        out.push(BlockRange { start, end });
        start += step;
    }
    out
}

/// A table the workers copy.
pub(super) struct SplitTable {
    pub(super) oid: u32,
    id: Arc<TableId>,
    info: TableInfo,
    /// The published columns in `COPY` order, and each one's type.
    columns: Vec<(Arc<str>, u32)>,
    /// `COPY (SELECT cols FROM ONLY schema.table WHERE `, completed per range.
    select: String,
    blocks: u64,
}

impl SplitTable {
    fn copy_sql(&self, range: BlockRange) -> String {
        format!("{}{}) TO STDOUT", self.select, range.predicate())
    }

    /// One line of the table's `COPY` as a copied row.
    fn row_change(&self, line: &[u8], scratch: &mut Vec<u8>) -> Result<RowChange, Error> {
        let mut row: Row = Vec::with_capacity(self.columns.len());
        for_each_field(line, self.columns.len(), scratch, |i, v| {
            let (name, oid) = &self.columns[i];
            let value = match v {
                None => Value::Null,
                Some(text) => types::text_to_json(*oid, text),
            };
            row.push((name.clone(), value));
            Ok(())
        })
        .map_err(|e| Error::Source(format!("{e} (table {})", self.id)))?;
        Ok(RowChange {
            table: self.id.clone(),
            op: Op::Read,
            key: key_of(&self.info, &row)?,
            before: None,
            after: Some(row),
        })
    }
}

/// A connection inside a transaction that imported `snapshot`.
async fn snapshot_client(dsn: &str, snapshot: &str) -> Result<tokio_postgres::Client, Error> {
    let client = connect(dsn).await?;
    // An exported snapshot's name is the server's (hex digits and dashes); quoted anyway.
    let name = snapshot.replace('\'', "''");
    client
        .batch_execute(&format!(
            "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET TRANSACTION SNAPSHOT '{name}'"
        ))
        .await
        .map_err(source_err("import the copy's snapshot"))?;
    Ok(client)
}

/// The copy's connections and the tables they split; empty when nothing is worth it.
pub(super) struct Plan {
    clients: Vec<tokio_postgres::Client>,
    pub(super) tables: Vec<SplitTable>,
}

/// Which of `tables` (OID, published column names, the connector's view of it) to
/// split across `workers` connections under `snapshot`; opens those connections.
pub(super) async fn plan(
    dsn: &str,
    snapshot: &str,
    publication: &str,
    tables: Vec<(u32, Vec<Arc<str>>, TableInfo)>,
    workers: usize,
) -> Result<Plan, Error> {
    let none = Plan {
        clients: Vec::new(),
        tables: Vec::new(),
    };
    if workers < 2 || tables.is_empty() {
        return Ok(none);
    }
    let first = snapshot_client(dsn, snapshot).await?;
    let version: i32 = first
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(source_err("server version"))?
        .get(0);
    if version < PG14 {
        info!(
            version,
            "Postgres before 14 has no TID range scans: every table is copied by one connection"
        );
        return Ok(none);
    }
    let filter = if version >= PG15 {
        "EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid \
         WHERE p.pubname = $2 AND pr.prrelid = c.oid AND pr.prqual IS NOT NULL)"
    } else {
        "$2::text IS NULL"
    };
    let sql = format!(
        "SELECT c.relkind::text, pg_relation_size(c.oid) / current_setting('block_size')::bigint, \
         {filter} FROM pg_class c WHERE c.oid = $1"
    );
    let mut split = Vec::new();
    for (oid, names, info) in tables {
        let row = first
            .query_opt(sql.as_str(), &[&oid, &publication])
            .await
            .map_err(source_err("size of a table to copy"))?;
        let Some(row) = row else { continue };
        let (kind, blocks, filtered): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
        if kind != "r" || filtered || (blocks as u64) < SPLIT_BLOCKS_MIN {
            continue;
        }
        let mut cols = Vec::with_capacity(names.len());
        let mut quoted = Vec::with_capacity(names.len());
        for name in names {
            let oid = info.types.get(&*name).copied().unwrap_or(25);
            quoted.push(quote_ident(&name));
            cols.push((name, oid));
        }
        let select = format!(
            "COPY (SELECT {} FROM ONLY {}.{} WHERE ",
            quoted.join(", "),
            quote_ident(&info.id.schema),
            quote_ident(&info.id.table)
        );
        split.push(SplitTable {
            oid,
            id: info.id.clone(),
            info,
            columns: cols,
            select,
            blocks: blocks as u64,
        });
    }
    if split.is_empty() {
        return Ok(none);
    }
    let mut clients = vec![first];
    for _ in 1..workers {
        clients.push(snapshot_client(dsn, snapshot).await?);
    }
    Ok(Plan {
        clients,
        tables: split,
    })
}

/// One range of one table, for a worker.
#[derive(Debug, Clone, Copy)]
struct Unit {
    table: usize,
    range: BlockRange,
}

/// Copies the plan's tables with its connections. Returns `false` when stopped.
pub(super) async fn copy(
    plan: Plan,
    events: &mpsc::Sender<SourceEvent>,
    chunk_rows: usize,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    let workers = plan.clients.len() as u64;
    let mut units = VecDeque::new();
    for (i, t) in plan.tables.iter().enumerate() {
        let ranges = block_ranges(t.blocks, workers * RANGES_PER_WORKER);
        info!(table = %t.id, blocks = t.blocks, ranges = ranges.len(), workers, "copying a large table over several connections");
        units.extend(ranges.into_iter().map(|range| Unit { table: i, range }));
    }
    let queue = Arc::new(parking_lot::Mutex::new(units));
    let tables = Arc::new(plan.tables);
    let mut set = JoinSet::new();
    for client in plan.clients {
        let (queue, tables, events, stop) =
            (queue.clone(), tables.clone(), events.clone(), stop.clone());
        set.spawn(async move { work(client, &queue, &tables, &events, chunk_rows, &stop).await });
    }
    let mut finished = true;
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => finished = false,
            // Dropping the set aborts the other workers (their connections close).
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(Error::Source(format!(
                    "postgres: a copy worker failed: {e}"
                )))
            }
        }
    }
    Ok(finished && !stop.is_cancelled())
}

/// One worker: ranges from `queue` until it is empty. Returns `false` when stopped.
async fn work(
    client: tokio_postgres::Client,
    queue: &parking_lot::Mutex<VecDeque<Unit>>,
    tables: &[SplitTable],
    events: &mpsc::Sender<SourceEvent>,
    chunk_rows: usize,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    let mut cancelled = std::pin::pin!(stop.cancelled());
    let mut scratch = Vec::new();
    let mut chunk: Vec<RowChange> = Vec::with_capacity(chunk_rows);
    loop {
        let Some(unit) = queue.lock().pop_front() else {
            break;
        };
        let table = &tables[unit.table];
        let sql = table.copy_sql(unit.range);
        let rows = tokio::select! {
            _ = &mut cancelled => return Ok(false),
            r = client.copy_out(sql.as_str()) => r.map_err(source_err("copy"))?,
        };
        let mut rows = std::pin::pin!(rows);
        let mut lines = Lines::default();
        loop {
            let message = tokio::select! {
                biased;
                _ = &mut cancelled => return Ok(false),
                m = rows.next() => m,
            };
            let Some(message) = message else { break };
            let message = message.map_err(source_err("copy"))?;
            lines.feed(&message, |line| {
                chunk.push(table.row_change(line, &mut scratch)?);
                Ok(())
            })?;
            if chunk.len() >= chunk_rows {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_rows));
                send(events, SourceEvent::SnapshotRows(full)).await?;
            }
        }
        lines.finish()?;
    }
    if !chunk.is_empty() {
        send(events, SourceEvent::SnapshotRows(chunk)).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_cover_every_block_once_and_end_open() {
        for (blocks, parts) in [
            (1024, 8),
            (1025, 8),
            (5000, 3),
            (1024, 100),
            (100, 4),
            (0, 4),
        ] {
            let r = block_ranges(blocks, parts);
            assert!(!r.is_empty() && r.len() as u64 <= parts.max(1));
            assert_eq!(r[0].start, 0);
            assert_eq!(
                r.last().unwrap().end,
                None,
                "{blocks}/{parts}: the last range is open"
            );
            for w in r.windows(2) {
                assert_eq!(w[0].end, Some(w[1].start), "{blocks}/{parts}: contiguous");
                assert!(w[0].end.unwrap() - w[0].start >= RANGE_BLOCKS_MIN);
            }
            // Every block below `blocks` lies in a bounded range or the open one.
            assert!(r.last().unwrap().start <= blocks);
        }
        assert_eq!(
            block_ranges(1024, 2),
            vec![
                BlockRange {
                    start: 0,
                    end: Some(512)
                },
                BlockRange {
                    start: 512,
                    end: None
                }
            ]
        );
        assert_eq!(
            BlockRange {
                start: 3,
                end: Some(9)
            }
            .predicate(),
            "ctid >= '(3,0)'::tid AND ctid < '(9,0)'::tid"
        );
        assert_eq!(
            BlockRange {
                start: 3,
                end: None
            }
            .predicate(),
            "ctid >= '(3,0)'::tid"
        );
    }
}
