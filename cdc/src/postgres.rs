//! The Postgres source: logical replication with pgoutput.
//!
//! Start-up checks `wal_level`, every table's primary key and replica identity, and that
//! no other connector holds the slot (Postgres lets one walsender use a slot at a time:
//! a second connector is refused, never interleaved). The publication is created (or
//! extended) for the captured tables.
//!
//! Initial copy: a new slot exports the snapshot it became consistent at; every table
//! is copied under that snapshot (no lock), and streaming starts at the slot's
//! consistent point, so copy and stream meet with no gap and no overlap. A copy cut
//! short by a crash cannot be resumed at the same point: the slot is dropped and the
//! copy starts over at a new one (rows get a later position).
//!
//! Streaming: pgoutput with streaming of in-progress transactions off, so Postgres
//! sends each transaction whole at commit, in commit order; the connector hands it on
//! as one [`Transaction`] positioned at its commit's end LSN. A heartbeat task writes a
//! transactional logical message (`pg_logical_emit_message`) every heartbeat interval,
//! which arrives as an empty transaction: positions move while no captured table
//! changes (read-your-writes for writes elsewhere) and the slot's WAL is released.
//! `confirmed_flush_lsn` moves only to positions the runner confirms (acks=all).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pg_walstream::{
    CancellationToken, ColumnValue, EventType, LogicalReplicationStream, ReplicationStreamConfig,
    RowData, SnapshotOutcome, StreamingMode,
};
use serde_json::Value;
use sluice_proto::source_pos::{Lsn, SourcePos};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::change::{Op, Row, RowChange, SourceEvent, TableId, Transaction};
use crate::sink::SnapshotState;
use crate::Error;

mod types;

pub use pg_walstream::CancellationToken as Stop;

/// `--snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Copy every table first when the topics do not hold a finished copy.
    Initial,
    /// Stream only (from the slot's position, or from now for a new slot).
    Never,
}

#[derive(Debug, Clone)]
pub struct PgSourceConfig {
    pub dsn: String,
    pub tables: Vec<TableId>,
    pub slot: String,
    pub publication: String,
    pub snapshot: SnapshotMode,
    pub heartbeat: Duration,
    /// Rows per snapshot unit handed to the runner.
    pub snapshot_chunk_rows: usize,
}

/// What the connector learned about a captured table at start.
#[derive(Debug, Clone)]
struct TableInfo {
    id: Arc<TableId>,
    /// Primary-key columns in key order.
    key: Vec<String>,
    /// Column name → type OID.
    types: HashMap<String, u32>,
    /// Column names in table order.
    columns: Vec<String>,
    replica_identity_full: bool,
    estimated_rows: u64,
}

fn source_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Source(format!("postgres: {what}: {e}"))
}

fn pg_err(what: &str) -> impl Fn(pg_walstream::ReplicationError) -> Error + '_ {
    move |e| Error::Source(format!("postgres: {what}: {e}"))
}

/// The DSN with `replication=database`, for the walsender connection.
fn replication_dsn(dsn: &str) -> String {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let sep = if dsn.contains('?') { '&' } else { '?' };
        format!("{dsn}{sep}replication=database")
    } else {
        format!("{dsn} replication=database")
    }
}

async fn connect(dsn: &str) -> Result<tokio_postgres::Client, Error> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .map_err(source_err("connect"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            warn!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Checks the server and tables, creates or extends the publication.
async fn prepare(
    client: &tokio_postgres::Client,
    cfg: &PgSourceConfig,
) -> Result<Vec<TableInfo>, Error> {
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(source_err("SHOW wal_level"))?
        .get(0);
    if wal_level != "logical" {
        return Err(Error::Config(format!(
            "postgres: wal_level is {wal_level}; logical replication needs wal_level=logical \
             (ALTER SYSTEM SET wal_level = logical; then restart Postgres)"
        )));
    }
    let mut infos = Vec::new();
    for t in &cfg.tables {
        let qualified = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table));
        let row = client
            .query_opt(
                "SELECT c.oid, c.relreplident::text, greatest(c.reltuples, 0)::bigint \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&t.schema, &t.table],
            )
            .await
            .map_err(source_err("look up table"))?
            .ok_or_else(|| Error::Config(format!("postgres: table {t} does not exist")))?;
        let oid: u32 = row.get(0);
        let identity: String = row.get(1);
        let estimated: i64 = row.get(2);
        let key: Vec<String> = client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1 AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&oid],
            )
            .await
            .map_err(source_err("read primary key"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if key.is_empty() {
            return Err(Error::Config(format!(
                "postgres: table {t} has no primary key; a compacted topic is keyed by it \
                 (ALTER TABLE {qualified} ADD PRIMARY KEY (...))"
            )));
        }
        if identity == "n" {
            return Err(Error::Config(format!(
                "postgres: table {t} has REPLICA IDENTITY NOTHING, so deletes carry no key \
                 (ALTER TABLE {qualified} REPLICA IDENTITY DEFAULT)"
            )));
        }
        let cols = client
            .query(
                "SELECT a.attname::text, a.atttypid, t.typstorage::text FROM pg_attribute a \
                 JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(source_err("read columns"))?;
        let full = identity == "f";
        let toastable: Vec<String> = cols
            .iter()
            .filter(|r| r.get::<_, String>(2) != "p")
            .map(|r| r.get(0))
            .collect();
        if !full && !toastable.is_empty() {
            info!(table = %t, columns = ?toastable, "columns may be TOASTed and the table's REPLICA IDENTITY is not FULL: an update that leaves a large value unchanged does not carry it, and the connector stops rather than write a row without it (ALTER TABLE {qualified} REPLICA IDENTITY FULL)");
        }
        infos.push(TableInfo {
            id: Arc::new(t.clone()),
            key,
            types: cols.iter().map(|r| (r.get(0), r.get(1))).collect(),
            columns: cols.iter().map(|r| r.get(0)).collect(),
            replica_identity_full: full,
            estimated_rows: estimated as u64,
        });
    }
    // The publication: created for exactly these tables, or extended to them.
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(source_err("look up publication"))?
        .is_some();
    let list = cfg
        .tables
        .iter()
        .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table)))
        .collect::<Vec<_>>();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(&cfg.publication),
                list.join(", ")
            ))
            .await
            .map_err(source_err("create publication"))?;
        info!(publication = %cfg.publication, "created publication");
    } else {
        for t in &cfg.tables {
            let has = client
                .query_opt(
                    "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                    &[&cfg.publication, &t.schema, &t.table],
                )
                .await
                .map_err(source_err("read publication"))?
                .is_some();
            if !has {
                client
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {} ADD TABLE {}.{}",
                        quote_ident(&cfg.publication),
                        quote_ident(&t.schema),
                        quote_ident(&t.table)
                    ))
                    .await
                    .map_err(source_err("extend publication"))?;
            }
        }
    }
    Ok(infos)
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Checks the server and tables (and creates or extends the publication) before the
/// caller creates any topic: a missing table or key is refused with nothing written.
pub async fn check(cfg: &PgSourceConfig) -> Result<(), Error> {
    let client = connect(&cfg.dsn).await?;
    prepare(&client, cfg).await.map(|_| ())
}

/// Whether the slot exists, and the pid of a walsender using it.
async fn slot_state(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<Option<i32>>, Error> {
    Ok(client
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(source_err("look up slot"))?
        .map(|r| r.get::<_, Option<i32>>(0)))
}

/// Runs the source until `stop` is cancelled or an error. Events go to `events`;
/// `confirmed` says how far Sluice acknowledged.
pub async fn run(
    cfg: PgSourceConfig,
    snapshot_state: SnapshotState,
    events: mpsc::Sender<SourceEvent>,
    mut confirmed: watch::Receiver<Option<SourcePos>>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let client = connect(&cfg.dsn).await?;
    let tables = prepare(&client, &cfg).await?;
    let by_name: HashMap<(String, String), TableInfo> = tables
        .iter()
        .map(|t| ((t.id.schema.clone(), t.id.table.clone()), t.clone()))
        .collect();
    let slot = slot_state(&client, &cfg.slot).await?;
    if let Some(Some(pid)) = slot {
        return Err(Error::Config(format!(
            "postgres: replication slot {} is in use by another connection (pid {pid}); \
             another connector for this source is running (stop it, or give this one its \
             own --slot and --topic-prefix)",
            cfg.slot
        )));
    }
    let initial = cfg.snapshot == SnapshotMode::Initial;
    let recopy_lost_slot = initial && slot.is_none() && snapshot_state == SnapshotState::Complete;
    let copy = (initial && snapshot_state != SnapshotState::Complete) || recopy_lost_slot;
    if recopy_lost_slot {
        warn!(slot = %cfg.slot, "the topics hold a finished copy but the slot is gone: changes since are lost to streaming, so the tables are copied again");
    }
    if copy && slot.is_some() {
        info!(slot = %cfg.slot, ?snapshot_state, "the last copy did not finish: dropping the slot to copy again at a new consistent point");
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
            .await
            .map_err(source_err("drop slot"))?;
    }
    let config = ReplicationStreamConfig::builder(cfg.slot.clone(), cfg.publication.clone())
        .with_messages(true)
        .with_streaming_mode(StreamingMode::Off)
        .with_feedback_interval(Duration::from_millis(200));
    let stream = LogicalReplicationStream::new(&replication_dsn(&cfg.dsn), config)
        .await
        .map_err(pg_err("replication connection"))?;
    let mut stream = if copy {
        match stream.snapshot().await.map_err(pg_err("create slot"))? {
            SnapshotOutcome::Unavailable(s) => s,
            SnapshotOutcome::Available(snap) => {
                let pos = SourcePos::Postgres(Lsn(snap.consistent_point().value()));
                let mut want = Vec::new();
                for t in &tables {
                    want.push(((*t.id).clone(), t.estimated_rows));
                }
                send(&events, SourceEvent::SnapshotStarted { pos, tables: want }).await?;
                let mut rows = snap.rows();
                let mut chunk = Vec::with_capacity(cfg.snapshot_chunk_rows);
                loop {
                    if stop.is_cancelled() {
                        return Ok(());
                    }
                    let Some(row) = rows.next_row().await.map_err(pg_err("copy"))? else {
                        break;
                    };
                    let key = (
                        row.relation.namespace.to_string(),
                        row.relation.relation_name.to_string(),
                    );
                    let Some(info) = by_name.get(&key) else {
                        continue;
                    };
                    let after = to_row(info, &row.data)?;
                    chunk.push(RowChange {
                        table: info.id.clone(),
                        op: Op::Read,
                        key: key_of(info, &after)?,
                        before: None,
                        after: Some(after),
                    });
                    if chunk.len() >= cfg.snapshot_chunk_rows {
                        send(
                            &events,
                            SourceEvent::SnapshotRows(std::mem::take(&mut chunk)),
                        )
                        .await?;
                    }
                }
                if !chunk.is_empty() {
                    send(&events, SourceEvent::SnapshotRows(chunk)).await?;
                }
                send(&events, SourceEvent::SnapshotDone).await?;
                rows.finish().await.map_err(pg_err("finish copy"))?
            }
        }
    } else {
        let mut s = stream;
        s.ensure_replication_slot()
            .await
            .map_err(pg_err("create slot"))?;
        s
    };
    stream
        .start(None)
        .await
        .map_err(pg_err("start replication"))?;
    info!(slot = %cfg.slot, publication = %cfg.publication, "streaming");

    let heartbeat = {
        let (dsn, slot, every, stop) = (
            cfg.dsn.clone(),
            cfg.slot.clone(),
            cfg.heartbeat,
            stop.clone(),
        );
        tokio::spawn(async move { heartbeats(&dsn, &slot, every, stop).await })
    };
    let mut by_name = by_name;
    let gap = cfg.heartbeat / 2;
    let result = stream_loop(
        &mut stream,
        &mut by_name,
        &events,
        &mut confirmed,
        &stop,
        gap,
    )
    .await;
    heartbeat.abort();
    // Confirm what was acknowledged before going.
    if let Some(SourcePos::Postgres(lsn)) = confirmed.borrow().clone() {
        stream.shared_lsn_feedback.update_flushed_lsn(lsn.0);
        stream.shared_lsn_feedback.update_applied_lsn(lsn.0);
        let _ = stream.send_feedback().await;
    }
    let _ = stream.stop().await;
    result
}

async fn send(events: &mpsc::Sender<SourceEvent>, e: SourceEvent) -> Result<(), Error> {
    events
        .send(e)
        .await
        .map_err(|_| Error::Source("the writer stopped".into()))
}

/// Asks for a heartbeat every `every`, and publishes the slot's lag in bytes
/// (`sluice_cdc_lag_bytes`: the server's WAL position minus `confirmed_flush_lsn`).
async fn heartbeats(dsn: &str, slot: &str, every: Duration, stop: CancellationToken) {
    let mut client = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if client.is_none() {
            client = connect(dsn).await.ok();
        }
        if let Some(c) = &client {
            if let Err(e) = c
                .execute(
                    "SELECT pg_logical_emit_message(true, 'sluice.heartbeat', '')",
                    &[],
                )
                .await
            {
                warn!(error = %e, "heartbeat message failed");
                client = None;
            } else if let Ok(row) = c
                .query_one(
                    "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8 \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
            {
                if let Ok(Some(lag)) = row.try_get::<_, Option<f64>>(0) {
                    metrics::gauge!("sluice_cdc_lag_bytes").set(lag);
                }
            }
        }
    }
}

/// (last unit sent, position received) while no transaction is open.
type Idle = (Option<u64>, u64);

async fn stream_loop(
    stream: &mut LogicalReplicationStream,
    tables: &mut HashMap<(String, String), TableInfo>,
    events: &mpsc::Sender<SourceEvent>,
    confirmed: &mut watch::Receiver<Option<SourcePos>>,
    stop: &CancellationToken,
    heartbeat_gap: Duration,
) -> Result<(), Error> {
    let mut txn: Option<(u32, Vec<RowChange>)> = None;
    // The position of the last unit handed to the runner: once it is confirmed and no
    // transaction is open, everything the server sent is accounted for.
    let mut last_sent: Option<u64> = None;
    let mut last_heartbeat = std::time::Instant::now() - heartbeat_gap;
    let feedback = stream.shared_lsn_feedback.clone();
    // (last unit sent, position received) while no transaction is open. The confirming
    // task below moves the flush position to `received` once `last sent` is confirmed:
    // this loop is usually blocked reading the stream when that happens.
    let idle: Arc<parking_lot::Mutex<Option<Idle>>> = Arc::default();
    let confirming = {
        let (mut confirmed, idle, feedback) = (confirmed.clone(), idle.clone(), feedback.clone());
        tokio::spawn(async move {
            loop {
                let acked = match confirmed.borrow_and_update().clone() {
                    Some(SourcePos::Postgres(lsn)) => Some(lsn.0),
                    _ => None,
                };
                confirm(&feedback, acked, *idle.lock());
                if confirmed.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let result = async {
    loop {
        // Idle: the server's send position (a keepalive's WAL end) can be confirmed, so
        // WAL that holds nothing captured (other tables, checkpoints) is released and a
        // shutting-down server sees its walsender caught up.
        let state = txn.is_none().then_some((last_sent, stream.current_lsn()));
        *idle.lock() = state;
        let acked = match confirmed.borrow().clone() {
            Some(SourcePos::Postgres(lsn)) => Some(lsn.0),
            _ => None,
        };
        confirm(&feedback, acked, state);
        // Returns `None` when a keepalive reports the server past what was received,
        // which brings the loop back here to confirm it while idle.
        let received = stream.current_lsn();
        let boundary = pg_walstream::Lsn::new(received + 1);
        let event = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            e = stream.next_event_before(boundary, stop) => e,
        };
        let event = match event {
            Ok(Some(e)) => Ok(e),
            // A keepalive moved the received position: back to the top to confirm it.
            Ok(None) if stream.current_lsn() != received => continue,
            // A transaction's first frame is held at the boundary: take it.
            Ok(None) => tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                e = stream.next_event(stop) => e,
            },
            Err(e) => Err(e),
        };
        let event = match event {
            Ok(e) => e,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => return Err(Error::Source(format!("postgres: replication stream: {e}"))),
        };
        match event.event_type {
            EventType::Begin { transaction_id, .. } => txn = Some((transaction_id, Vec::new())),
            EventType::Insert {
                schema,
                table,
                data,
                ..
            } => {
                let Some(info) = tables.get(&(schema.to_string(), table.to_string())) else {
                    continue;
                };
                let after = to_row(info, &data)?;
                push(
                    &mut txn,
                    RowChange {
                        table: info.id.clone(),
                        op: Op::Create,
                        key: key_of(info, &after)?,
                        before: None,
                        after: Some(after),
                    },
                )?;
            }
            EventType::Update {
                schema,
                table,
                old_data,
                new_data,
                ..
            } => {
                let Some(info) = tables.get(&(schema.to_string(), table.to_string())) else {
                    continue;
                };
                let before = old_data.as_ref().map(|d| to_row(info, d)).transpose()?;
                let mut after = to_row(info, &new_data)?;
                fill_unchanged_toast(info, &mut after, before.as_ref())?;
                let new_key = key_of(info, &after)?;
                let old_key = before.as_ref().map(|b| key_of(info, b)).transpose()?;
                match old_key {
                    Some(old_key) if old_key != new_key => {
                        // A primary-key change: the old key goes, the new one comes.
                        push(
                            &mut txn,
                            RowChange {
                                table: info.id.clone(),
                                op: Op::Delete,
                                key: old_key,
                                before: before.clone(),
                                after: None,
                            },
                        )?;
                        push(
                            &mut txn,
                            RowChange {
                                table: info.id.clone(),
                                op: Op::Create,
                                key: new_key,
                                before: None,
                                after: Some(after),
                            },
                        )?;
                    }
                    _ => push(
                        &mut txn,
                        RowChange {
                            table: info.id.clone(),
                            op: Op::Update,
                            key: new_key,
                            before: before.filter(|_| info.replica_identity_full),
                            after: Some(after),
                        },
                    )?,
                }
            }
            EventType::Delete {
                schema,
                table,
                old_data,
                ..
            } => {
                let Some(info) = tables.get(&(schema.to_string(), table.to_string())) else {
                    continue;
                };
                let before = to_row(info, &old_data)?;
                push(
                    &mut txn,
                    RowChange {
                        table: info.id.clone(),
                        op: Op::Delete,
                        key: key_of(info, &before)?,
                        before: Some(before),
                        after: None,
                    },
                )?;
            }
            EventType::Relation { namespace, relation_name, columns, .. } => {
                // Columns added or dropped while running: rows follow the new shape.
                if let Some(info) = tables.get_mut(&(namespace.to_string(), relation_name.to_string())) {
                    info.columns = columns.iter().map(|c| c.name.to_string()).collect();
                    info.types = columns.iter().map(|c| (c.name.to_string(), c.type_id)).collect();
                }
            }
            EventType::Truncate { tables: t, .. } => {
                warn!(tables = ?t, "TRUNCATE is not carried: the topics keep the rows (delete them with DELETE to have the deletes captured)");
            }
            EventType::Commit {
                end_lsn,
                commit_timestamp,
                ..
            } => {
                let pos = SourcePos::Postgres(Lsn(end_lsn.value()));
                let (xid, changes) = txn.take().unwrap_or((0, Vec::new()));
                // Heartbeat messages of other connectors on this database arrive too
                // (logical messages ignore publications): at most one heartbeat per half
                // interval.
                if changes.is_empty() && last_heartbeat.elapsed() < heartbeat_gap {
                    continue;
                }
                let e = if changes.is_empty() {
                    last_heartbeat = std::time::Instant::now();
                    SourceEvent::Heartbeat(pos)
                } else {
                    SourceEvent::Transaction(Transaction {
                        pos,
                        id: xid.to_string(),
                        commit_ms: commit_timestamp.timestamp_millis(),
                        changes,
                    })
                };
                last_sent = Some(end_lsn.value());
                send(events, e).await?;
            }
            _ => {}
        }
    }
    }
    .await;
    confirming.abort();
    result
}

/// Moves the flush position to what Sluice acknowledged and, when idle with everything
/// sent acknowledged, to the position received.
fn confirm(feedback: &pg_walstream::SharedLsnFeedback, acked: Option<u64>, idle: Option<Idle>) {
    if let Some(a) = acked {
        feedback.update_flushed_lsn(a);
        feedback.update_applied_lsn(a);
    }
    if let Some((last_sent, received)) = idle {
        if last_sent.is_none_or(|s| acked.is_some_and(|a| a >= s)) {
            feedback.update_flushed_lsn(received);
            feedback.update_applied_lsn(received);
        }
    }
}

fn push(txn: &mut Option<(u32, Vec<RowChange>)>, c: RowChange) -> Result<(), Error> {
    match txn {
        Some((_, changes)) => {
            changes.push(c);
            Ok(())
        }
        None => Err(Error::Source(
            "postgres: a change outside a transaction (streaming mode must be off)".into(),
        )),
    }
}

/// Columns an update left out (unchanged TOAST values) come from the old row, which
/// REPLICA IDENTITY FULL carries whole; without it the connector stops rather than
/// write a row with a value missing.
fn fill_unchanged_toast(
    info: &TableInfo,
    after: &mut Row,
    before: Option<&Row>,
) -> Result<(), Error> {
    let has = |row: &Row, c: &str| row.iter().any(|(n, _)| &**n == c);
    let missing: Vec<&String> = info.columns.iter().filter(|c| !has(after, c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for c in missing {
        match before.and_then(|b| b.iter().find(|(n, _)| &**n == c.as_str())) {
            Some((n, v)) => after.push((n.clone(), v.clone())),
            None => {
                return Err(Error::Config(format!(
                    "postgres: an update of {} left column {c} out (an unchanged TOASTed value) \
                     and the old row does not carry it; run ALTER TABLE {}.{} REPLICA IDENTITY \
                     FULL and restart the connector",
                    info.id,
                    quote_ident(&info.id.schema),
                    quote_ident(&info.id.table)
                )))
            }
        }
    }
    let order = |name: &str| {
        info.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or(usize::MAX)
    };
    after.sort_by_key(|(n, _)| order(n));
    Ok(())
}

fn to_row(info: &TableInfo, data: &RowData) -> Result<Row, Error> {
    let mut row = Vec::with_capacity(data.len());
    for (name, v) in data.iter() {
        let oid = info.types.get(&**name).copied().unwrap_or(25);
        let value = match v {
            ColumnValue::Null => Value::Null,
            ColumnValue::Text(b) => types::text_to_json(oid, b),
            ColumnValue::Binary(b) => Value::String(base64_of(b)),
        };
        row.push((name.clone(), value));
    }
    Ok(row)
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn key_of(info: &TableInfo, row: &Row) -> Result<Row, Error> {
    info.key
        .iter()
        .map(|k| {
            row.iter()
                .find(|(n, _)| &**n == k)
                .map(|(n, v)| (n.clone(), v.clone()))
                .ok_or_else(|| {
                    Error::Source(format!(
                        "postgres: a change of {} without its key column {k}",
                        info.id
                    ))
                })
        })
        .collect()
}
