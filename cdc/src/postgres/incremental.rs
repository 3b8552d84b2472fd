//! Incremental snapshots over Postgres (crate::incremental has the algorithm): the
//! driver task that writes each chunk's watermarks and reads its rows, and the stream
//! loop's side ([`Passes`]) that opens a window at a low watermark, records the keys
//! changes touch inside it, and at the high watermark hands the chunk's surviving rows
//! to the runner at that position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pg_walstream::{CancellationToken, ColumnValue, RowData};
use sluice_proto::source_pos::SourcePos;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::setup::TableInfo;
use super::{connect, key_of, quote_ident, send, source_err, to_row};
use crate::change::{IncrementalChunk, Op, RowChange, SourceEvent, TableId};
use crate::envelope::key_bytes;
use crate::incremental::{Progress, Signal, Watermark, Window, SIGNAL_PREFIX, WATERMARK_PREFIX};
use crate::Error;

/// Rows of a resumed pass's finished ranges read per query (keys only).
const KEY_BATCH: i64 = 20_000;

/// A pass for the driver.
pub(super) struct Request {
    table: TableInfo,
    id: String,
    after: Option<Vec<String>>,
}

/// One chunk read by the driver, waiting for its high watermark.
struct Chunk {
    n: u64,
    table: Arc<TableId>,
    id: String,
    rows: Vec<RowChange>,
    after: Option<Vec<String>>,
    last: bool,
}

/// The stream loop's side of incremental snapshots for one run.
pub(super) struct Passes {
    slot: String,
    run: String,
    /// Request ids seen (recorded in the progress topic, or acted on in this run): a
    /// signal read again after a restart is not acted on twice.
    known: HashSet<String>,
    windows: HashMap<u64, (Arc<TableId>, Window)>,
    requests: mpsc::UnboundedSender<Request>,
    chunks: mpsc::UnboundedReceiver<Chunk>,
    done: mpsc::UnboundedSender<u64>,
}

/// Messages of one transaction the stream loop keeps for its commit.
#[derive(Default)]
pub(super) struct TxnMessages {
    signals: Vec<Signal>,
    marks: Vec<Watermark>,
}

impl TxnMessages {
    /// A logical message of the transaction; `true` when it is one of ours.
    pub(super) fn observe(&mut self, prefix: &str, content: &[u8]) -> bool {
        if prefix == SIGNAL_PREFIX {
            match serde_json::from_slice::<Signal>(content) {
                Ok(s) => self.signals.push(s),
                Err(e) => {
                    warn!(error = %e, "an incremental snapshot signal that does not parse: ignored")
                }
            }
            return true;
        }
        if prefix == WATERMARK_PREFIX {
            if let Ok(m) = serde_json::from_slice::<Watermark>(content) {
                self.marks.push(m);
            }
            return true;
        }
        false
    }

    pub(super) fn is_empty(&self) -> bool {
        self.signals.is_empty() && self.marks.is_empty()
    }
}

/// Starts the driver of one run. Passes recorded as copying in the progress topic are
/// resumed after their last finished chunk: the runner is told first (it reads the
/// topic's keys), then the driver reads the finished ranges' keys and goes on.
pub(super) async fn start(
    dsn: &str,
    slot: &str,
    chunk_rows: usize,
    recorded: &HashMap<String, Progress>,
    tables: &HashMap<u32, TableInfo>,
    events: &mpsc::Sender<SourceEvent>,
    stop: &CancellationToken,
) -> Result<(Passes, tokio::task::JoinHandle<Result<(), Error>>), Error> {
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let (chunks_tx, chunks) = mpsc::unbounded_channel();
    let (done, done_rx) = mpsc::unbounded_channel();
    let run = format!(
        "{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let passes = Passes {
        slot: slot.to_string(),
        run: run.clone(),
        known: recorded.values().map(|p| p.id.clone()).collect(),
        windows: HashMap::new(),
        requests,
        chunks,
        done,
    };
    for p in recorded.values() {
        if p.state != crate::incremental::PassState::Copying {
            continue;
        }
        let Some(info) = p
            .table_id()
            .and_then(|id| tables.values().find(|t| *t.id == id))
        else {
            continue;
        };
        send(
            events,
            SourceEvent::IncrementalStarted {
                table: (*info.id).clone(),
                id: p.id.clone(),
                pos: None,
                requested_at: p.requested_at.clone(),
                after: p.after.clone(),
            },
        )
        .await?;
        info!(table = %info.id, id = %p.id, after = ?p.after, "resuming an incremental snapshot cut short");
        let _ = passes.requests.send(Request {
            table: info.clone(),
            id: p.id.clone(),
            after: p.after.clone(),
        });
    }
    let driver = Driver {
        dsn: dsn.to_string(),
        slot: slot.to_string(),
        run,
        chunk_rows: chunk_rows.max(1) as i64,
        events: events.clone(),
        chunks: chunks_tx,
        stop: stop.clone(),
    };
    let handle = tokio::spawn(driver.run(requests_rx, done_rx));
    Ok((passes, handle))
}

impl Passes {
    /// A committed transaction's changes, before it is handed on: keys touched inside
    /// an open window.
    pub(super) fn observe_changes(&mut self, changes: &[RowChange]) {
        if self.windows.is_empty() {
            return;
        }
        for c in changes {
            for (table, w) in self.windows.values_mut() {
                if **table != *c.table {
                    continue;
                }
                if c.op == Op::Truncate {
                    w.truncated();
                } else {
                    w.touched(key_bytes(&c.key));
                }
            }
        }
    }

    /// The messages of a transaction committed at `pos`: signals start passes (at
    /// `pos`), a low watermark opens its chunk's window, a high one closes it and
    /// hands the chunk on. Returns whether anything was handed to the runner.
    pub(super) async fn on_commit(
        &mut self,
        msgs: TxnMessages,
        pos: &SourcePos,
        commit_ms: i64,
        tables: &HashMap<u32, TableInfo>,
        events: &mpsc::Sender<SourceEvent>,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        let mut sent = false;
        for s in msgs.signals {
            if s.slot != self.slot || !self.known.insert(s.id.clone()) {
                continue;
            }
            for name in &s.tables {
                let found = TableId::parse(name)
                    .ok()
                    .and_then(|id| tables.values().find(|t| *t.id == id));
                let Some(info) = found else {
                    warn!(table = %name, id = %s.id, "an incremental snapshot was asked for a table this connector does not capture: ignored");
                    continue;
                };
                info!(table = %info.id, id = %s.id, at = %pos, "incremental snapshot asked");
                send(
                    events,
                    SourceEvent::IncrementalStarted {
                        table: (*info.id).clone(),
                        id: s.id.clone(),
                        pos: Some(pos.clone()),
                        requested_at: pos.to_string(),
                        after: None,
                    },
                )
                .await?;
                sent = true;
                self.requests
                    .send(Request {
                        table: info.clone(),
                        id: s.id.clone(),
                        after: None,
                    })
                    .map_err(|_| driver_gone())?;
            }
        }
        for m in msgs.marks {
            if m.slot != self.slot || m.run != self.run {
                continue;
            }
            if !m.high {
                let table = TableId::parse(&m.table).map_err(Error::Source)?;
                self.windows
                    .insert(m.chunk, (Arc::new(table), Window::default()));
                continue;
            }
            let chunk = tokio::select! {
                _ = stop.cancelled() => return Ok(sent),
                c = self.chunks.recv() => c.ok_or_else(driver_gone)?,
            };
            let window = self.windows.remove(&m.chunk);
            if chunk.n != m.chunk {
                return Err(Error::Source(format!(
                    "incremental snapshot: chunk {} read for the watermark of chunk {}",
                    chunk.n, m.chunk
                )));
            }
            let selected = chunk.rows.len();
            let rows: Vec<RowChange> = match &window {
                Some((_, w)) => chunk
                    .rows
                    .into_iter()
                    .filter(|r| w.keeps(&key_bytes(&r.key)))
                    .collect(),
                None => chunk.rows,
            };
            tracing::debug!(
                chunk = m.chunk,
                selected,
                kept = rows.len(),
                window = window.is_some(),
                "incremental snapshot chunk"
            );
            send(
                events,
                SourceEvent::IncrementalChunk(IncrementalChunk {
                    table: (*chunk.table).clone(),
                    id: chunk.id,
                    pos: pos.clone(),
                    commit_ms,
                    rows,
                    after: chunk.after,
                    last: chunk.last,
                }),
            )
            .await?;
            sent = true;
            let _ = self.done.send(m.chunk);
        }
        Ok(sent)
    }
}

fn driver_gone() -> Error {
    Error::Source("postgres: the incremental snapshot task stopped".into())
}

/// The task that runs the passes of one run, one chunk at a time.
struct Driver {
    dsn: String,
    slot: String,
    run: String,
    chunk_rows: i64,
    events: mpsc::Sender<SourceEvent>,
    chunks: mpsc::UnboundedSender<Chunk>,
    stop: CancellationToken,
}

impl Driver {
    async fn run(
        self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut done: mpsc::UnboundedReceiver<u64>,
    ) -> Result<(), Error> {
        let mut client = None;
        let mut n = 0u64;
        while let Some(req) = requests.recv().await {
            if client.is_none() {
                client = Some(connect(&self.dsn).await?);
            }
            let client = client.as_ref().expect("connected above");
            let sql = Sql::new(client, &req.table).await?;
            if let Some(after) = &req.after {
                self.finished_keys(client, &sql, &req.table, after).await?;
            }
            let mut after = req.after.clone();
            loop {
                if self.stop.is_cancelled() {
                    return Ok(());
                }
                n += 1;
                self.watermark(client, n, &req.table.id, false).await?;
                let (rows, next) = sql
                    .chunk(client, &req.table, after.as_deref(), self.chunk_rows)
                    .await?;
                let last = (rows.len() as i64) < self.chunk_rows;
                tracing::debug!(n, from = ?after, to = ?next, first = ?rows.first().map(|r| key_bytes(&r.key)).map(|k| String::from_utf8_lossy(&k).into_owned()), rows = rows.len(), "incremental snapshot chunk read");
                self.chunks
                    .send(Chunk {
                        n,
                        table: req.table.id.clone(),
                        id: req.id.clone(),
                        rows,
                        after: next.clone().or(after.clone()),
                        last,
                    })
                    .map_err(|_| Error::Source("the stream loop stopped".into()))?;
                self.watermark(client, n, &req.table.id, true).await?;
                // One chunk at a time: the next is read once this one is handed on.
                loop {
                    match done.recv().await {
                        Some(d) if d == n => break,
                        Some(_) => continue,
                        None => return Ok(()),
                    }
                }
                if last {
                    break;
                }
                after = next;
            }
        }
        Ok(())
    }

    /// A low or high watermark: a transactional logical message in a transaction of its
    /// own, so it arrives in the stream at its commit.
    async fn watermark(
        &self,
        client: &tokio_postgres::Client,
        chunk: u64,
        table: &TableId,
        high: bool,
    ) -> Result<(), Error> {
        let m = Watermark {
            slot: self.slot.clone(),
            run: self.run.clone(),
            chunk,
            table: table.to_string(),
            high,
        };
        let content = serde_json::to_string(&m).expect("a watermark serializes");
        client
            .execute(
                "SELECT pg_logical_emit_message(true, $1::text, $2::text)",
                &[&WATERMARK_PREFIX, &content],
            )
            .await
            .map_err(source_err("incremental snapshot watermark"))?;
        Ok(())
    }

    /// A resumed pass: the keys of the rows up to `after` (copied before the cut) are
    /// told to the runner, so they are not taken for rows the table no longer has.
    async fn finished_keys(
        &self,
        client: &tokio_postgres::Client,
        sql: &Sql,
        info: &TableInfo,
        upto: &[String],
    ) -> Result<(), Error> {
        let mut after: Option<Vec<String>> = None;
        loop {
            let (keys, next) = sql
                .keys_upto(client, info, after.as_deref(), upto, KEY_BATCH)
                .await?;
            let full = keys.len() as i64 == KEY_BATCH;
            send(
                &self.events,
                SourceEvent::IncrementalKeys {
                    table: (*info.id).clone(),
                    keys,
                },
            )
            .await?;
            if !full {
                return Ok(());
            }
            after = next;
        }
    }
}

/// The statements of one pass.
struct Sql {
    /// `SELECT every column::text ... WHERE (key) > (...) ORDER BY key LIMIT $n`.
    chunk_after: String,
    chunk_first: String,
    keys_after: String,
    keys_first: String,
    /// Column names in the select's order (then the key columns again, for `after`).
    columns: Vec<Arc<str>>,
    key_columns: Vec<Arc<str>>,
}

impl Sql {
    async fn new(client: &tokio_postgres::Client, info: &TableInfo) -> Result<Sql, Error> {
        let qualified = format!(
            "{}.{}",
            quote_ident(&info.id.schema),
            quote_ident(&info.id.table)
        );
        // Each key column's SQL type, to compare the text of `after` with it.
        let mut types = Vec::with_capacity(info.key.len());
        for k in &info.key {
            let t: String = client
                .query_one(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                     WHERE attrelid = $1::text::regclass AND attname = $2::text",
                    &[&qualified, &k],
                )
                .await
                .map_err(source_err("incremental snapshot: key column types"))?
                .get(0);
            types.push(t);
        }
        // Qualified: a bare name in ORDER BY would name the select list's `col::text`
        // (which keeps the column's name) and sort the key as text.
        let key_list = info
            .key
            .iter()
            .map(|k| format!("src.{}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let params = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::text::{t}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let limit = format!("${}", info.key.len() + 1);
        let cols = info
            .columns
            .iter()
            .map(|c| format!("src.{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let key_cols = info
            .key
            .iter()
            .map(|c| format!("src.{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let upto = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::text::{t}", i + 2 + info.key.len()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Sql {
            chunk_after: format!(
                "SELECT {cols} FROM {qualified} AS src WHERE ({key_list}) > ({params}) ORDER BY {key_list} LIMIT {limit}"
            ),
            chunk_first: format!("SELECT {cols} FROM {qualified} AS src ORDER BY {key_list} LIMIT $1"),
            keys_after: format!(
                "SELECT {key_cols} FROM {qualified} AS src WHERE ({key_list}) > ({params}) AND ({key_list}) <= ({upto}) ORDER BY {key_list} LIMIT {limit}"
            ),
            keys_first: format!(
                "SELECT {key_cols} FROM {qualified} AS src WHERE ({key_list}) <= ({}) ORDER BY {key_list} LIMIT $1",
                types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("${}::text::{t}", i + 2))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            columns: info.columns.iter().map(|c| Arc::from(c.as_str())).collect(),
            key_columns: info.key.iter().map(|c| Arc::from(c.as_str())).collect(),
        })
    }

    /// The next `limit` rows after `after` (from the start when `None`), and the key
    /// of the last one.
    async fn chunk(
        &self,
        client: &tokio_postgres::Client,
        info: &TableInfo,
        after: Option<&[String]>,
        limit: i64,
    ) -> Result<(Vec<RowChange>, Option<Vec<String>>), Error> {
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(a) = after {
            for v in a {
                params.push(v);
            }
        }
        params.push(&limit);
        let stmt = if after.is_some() {
            &self.chunk_after
        } else {
            &self.chunk_first
        };
        let rows = client
            .query(stmt.as_str(), &params)
            .await
            .map_err(source_err("incremental snapshot: chunk"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let data = row_data(r, &self.columns);
            let after = to_row(info, &data)?;
            out.push(RowChange {
                table: info.id.clone(),
                op: Op::Read,
                key: key_of(info, &after)?,
                before: None,
                after: Some(after),
            });
        }
        let next = rows
            .last()
            .map(|r| key_text(r, &self.columns, &self.key_columns));
        Ok((out, next))
    }

    /// Keys of rows after `after` and up to `upto`, `limit` at most.
    async fn keys_upto(
        &self,
        client: &tokio_postgres::Client,
        info: &TableInfo,
        after: Option<&[String]>,
        upto: &[String],
        limit: i64,
    ) -> Result<(Vec<crate::change::Row>, Option<Vec<String>>), Error> {
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(a) = after {
            for v in a {
                params.push(v);
            }
            params.push(&limit);
            for v in upto {
                params.push(v);
            }
        } else {
            params.push(&limit);
            for v in upto {
                params.push(v);
            }
        }
        let stmt = if after.is_some() {
            &self.keys_after
        } else {
            &self.keys_first
        };
        let rows = client
            .query(stmt.as_str(), &params)
            .await
            .map_err(source_err("incremental snapshot: keys"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let data = row_data(r, &self.key_columns);
            out.push(key_of(info, &to_row(info, &data)?)?);
        }
        let next = rows
            .last()
            .map(|r| key_text(r, &self.key_columns, &self.key_columns));
        Ok((out, next))
    }
}

/// A row of text columns as pgoutput would have sent it.
fn row_data(r: &tokio_postgres::Row, columns: &[Arc<str>]) -> RowData {
    let mut data = RowData::with_capacity(columns.len());
    for (i, name) in columns.iter().enumerate() {
        let v: Option<&str> = r.get(i);
        data.push(
            name.clone(),
            match v {
                Some(s) => ColumnValue::text(s),
                None => ColumnValue::Null,
            },
        );
    }
    data
}

/// The text of a row's key columns, in key order.
fn key_text(r: &tokio_postgres::Row, columns: &[Arc<str>], key: &[Arc<str>]) -> Vec<String> {
    key.iter()
        .map(|k| {
            let i = columns
                .iter()
                .position(|c| c == k)
                .expect("key columns are selected");
            r.get::<_, Option<String>>(i).unwrap_or_default()
        })
        .collect()
}
