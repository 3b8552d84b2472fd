//! The Postgres source: logical replication with pgoutput.
//!
//! Every run first takes the fence ([`fence`]: an advisory lock keyed by the slot, held
//! on a session of its own until the run ends), so a second connector is refused even
//! while the slot is inactive during the initial copy. Start-up ([`setup`]) then checks
//! `wal_level`, every table's primary key and replica identity, the slot, and creates
//! (or extends) the publication for the captured tables, publishing partitions under
//! their partitioned table's name. Changes are matched to tables by relation OID.
//!
//! Initial copy: a new slot exports the snapshot it became consistent at; every table
//! is copied under that snapshot (no lock), and streaming starts at the slot's
//! consistent point, so copy and stream meet with no gap and no overlap. A copy cut
//! short by a crash cannot be resumed at the same point: the slot is dropped and the
//! copy starts over at a new one (rows get a later position).
//!
//! Streaming: pgoutput with streaming of in-progress transactions off, so Postgres
//! sends each transaction whole at commit, in commit order; the connector hands it on
//! as one [`crate::change::Transaction`] positioned at its commit's end LSN (a large one
//! spilled to a temporary file while received and handed on in parts, `crate::spill`).
//! A heartbeat task writes a
//! transactional logical message (`pg_logical_emit_message`) every heartbeat interval,
//! which arrives as an empty transaction: positions move while no captured table
//! changes (read-your-writes for writes elsewhere) and the slot's WAL is released.
//! `confirmed_flush_lsn` moves only to positions the runner confirms (acks=all).

use std::collections::{HashMap, HashSet};
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

use crate::change::{Op, Row, RowChange, SourceEvent, TableId};
use crate::sink::SnapshotState;
use crate::spill::{SpillConfig, TxnBuffer};
use crate::Error;

pub mod conn;
mod copy;
mod fence;
mod heartbeat;
mod incremental;
pub mod ops;
mod setup;
mod types;

use copy::{copy_added, copy_all, copy_plan, CopyPlan};
use heartbeat::{heartbeats, StallWatch};

use setup::TableInfo;

pub use pg_walstream::CancellationToken as Stop;

/// Most `--copy-workers`: each is a connection holding a snapshot open.
pub const COPY_WORKERS_MAX: usize = 32;

/// `--copy-workers` by default: one connection. A second one did not make the copy
/// faster where the connector and the broker were CPU-bound (docs/performance.md,
/// "Initial copy speed (issue 20)").
pub const COPY_WORKERS_DEFAULT: usize = 1;

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
    /// Tables, or patterns of them (`crate::change::resolve_tables`), resolved when
    /// each run starts.
    pub tables: Vec<TableId>,
    /// `--exclude-tables`: patterns of tables `tables` brings that are left out.
    pub exclude_tables: Vec<TableId>,
    pub slot: String,
    pub publication: String,
    pub snapshot: SnapshotMode,
    pub heartbeat: Duration,
    /// Rows per snapshot unit handed to the runner.
    pub snapshot_chunk_rows: usize,
    /// Connections that copy a large table together in the initial copy, each over a
    /// range of its blocks under the slot's snapshot (docs/cdc.md, "The initial
    /// copy"); 1 copies every table over one connection. At most [`COPY_WORKERS_MAX`].
    pub copy_workers: usize,
    /// Where a large transaction goes while it is received (`crate::spill`).
    pub spill: crate::spill::SpillConfig,
}

fn source_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Source(format!("postgres: {what}: {}", pg_text(&e)))
}

/// A tokio-postgres error on one line, with the server's own words: its `Display`
/// says only "db error" and leaves the message, detail and hint to its source.
pub(crate) fn pg_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; DETAIL: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; HINT: {h}"));
        }
        s.push_str(&format!(" (SQLSTATE {})", db.code().code()));
        return s.replace('\n', " ");
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s.replace('\n', " ")
}

fn pg_err(what: &str) -> impl Fn(pg_walstream::ReplicationError) -> Error + '_ {
    move |e| Error::Source(format!("postgres: {what}: {e}"))
}

/// The DSN for pg_walstream's walsender connection: resolved like every other
/// connection (environment, password file, TLS options), with `replication=database`.
fn replication_dsn(dsn: &str) -> Result<String, Error> {
    Ok(conn::PgConn::resolve(dsn)?.walstream_dsn(true))
}

/// A query connection to the DSN's database, TLS as its `sslmode` says.
async fn connect(dsn: &str) -> Result<tokio_postgres::Client, Error> {
    conn::PgConn::resolve(dsn)?.connect().await
}

/// Every table a pattern of `--tables` may name: ordinary and partitioned tables, not
/// the partitions of one (captured through their parent) nor the system's.
pub(crate) async fn list_tables(dsn: &str) -> Result<Vec<TableId>, Error> {
    let client = connect(dsn).await?;
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(source_err("listing tables"))?;
    Ok(rows
        .iter()
        .map(|r| TableId {
            schema: r.get(0),
            table: r.get(1),
        })
        .collect())
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Checks the server and tables (and creates or extends the publication) before the
/// caller creates any topic: a missing table or key is refused with nothing written.
pub async fn check(cfg: &PgSourceConfig) -> Result<(), Error> {
    setup::validate_slot_name(&cfg.slot)?;
    let client = connect(&cfg.dsn).await?;
    setup::prepare(&client, cfg).await.map(|_| ())
}

/// Runs the source until `stop` is cancelled or an error. Events go to `events`;
/// `confirmed` says how far Sluice acknowledged.
pub async fn run(
    cfg: PgSourceConfig,
    snapshot_state: HashMap<TableId, SnapshotState>,
    passes: HashMap<String, crate::incremental::Progress>,
    events: mpsc::Sender<SourceEvent>,
    confirmed: watch::Receiver<Option<SourcePos>>,
    stop: CancellationToken,
) -> Result<(), Error> {
    // Before anything touches the slot: a second connector is refused here, and the
    // run ends if the fence's session goes.
    let fence = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        f = fence::Fence::take(&cfg.dsn, &cfg.slot) => f?,
    };
    // Pinged from a task of its own: the copy can keep this task busy for long
    // stretches. Aborting it drops the session, which releases the lock.
    let mut keeper = tokio::spawn(async move { fence.lost().await });
    let result = tokio::select! {
        r = run_fenced(cfg, snapshot_state, passes, events, confirmed, stop) => r,
        e = &mut keeper => Err(e.unwrap_or_else(|e| {
            Error::Source(format!("postgres: the fence task failed: {e}"))
        })),
    };
    keeper.abort();
    result
}

async fn run_fenced(
    cfg: PgSourceConfig,
    snapshot_state: HashMap<TableId, SnapshotState>,
    recorded: HashMap<String, crate::incremental::Progress>,
    events: mpsc::Sender<SourceEvent>,
    mut confirmed: watch::Receiver<Option<SourcePos>>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let client = connect(&cfg.dsn).await?;
    let setup::Prepared { tables, uncaptured } = setup::prepare(&client, &cfg).await?;
    let by_oid: HashMap<u32, TableInfo> = tables.iter().map(|t| (t.oid, t.clone())).collect();
    let slot = setup::slot(&client, &cfg.slot).await?;
    if let Some(pid) = slot.as_ref().and_then(|s| s.active_pid) {
        return Err(Error::Config(format!(
            "postgres: replication slot {} is in use by another connection (pid {pid}); \
             another connector for this source is running (stop it, or give this one its \
             own --slot and --topic-prefix)",
            cfg.slot
        )));
    }
    let plan = copy_plan(&cfg, &tables, &snapshot_state, slot.is_some());
    let over_rows = snapshot_state.values().any(|s| *s != SnapshotState::Empty);
    // Before the slot the copy starts from exists: until the copy's end lands in a
    // partition, the partition must read as cut; and before anything is streamed (and
    // confirmed), the topics of tables left out of --tables are marked (see
    // `Sink::mark_topics`).
    let copy_pending = plan == CopyPlan::All && over_rows;
    let pos = SourcePos::Postgres(Lsn(0));
    send(&events, SourceEvent::MarkTopics { pos, copy_pending }).await?;
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = confirmed.wait_for(|c| c.is_some()) => {
            r.map_err(|_| Error::Source("the writer stopped".into()))?;
        }
    }
    if plan == CopyPlan::All && slot.is_some() {
        info!(slot = %cfg.slot, "the last copy did not finish: dropping the slot to copy again at a new consistent point");
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
            .await
            .map_err(source_err("drop slot"))?;
    }
    if let CopyPlan::Added(added) = &plan {
        // Before the stream starts: the slot waits where it was confirmed, and the
        // stream that follows replays from there (see `copy_added`).
        let added: Vec<&TableInfo> = tables.iter().filter(|t| added.contains(&t.id)).collect();
        if !copy_added(&cfg, &added, &by_oid, &events, &stop).await? {
            return Ok(());
        }
    }
    let config = ReplicationStreamConfig::builder(cfg.slot.clone(), cfg.publication.clone())
        .with_messages(true)
        .with_streaming_mode(StreamingMode::Off)
        .with_feedback_interval(Duration::from_millis(200));
    let stream = LogicalReplicationStream::new(&replication_dsn(&cfg.dsn)?, config)
        .await
        .map_err(pg_err("replication connection"))?;
    let mut stream = if plan == CopyPlan::All {
        match stream.snapshot().await.map_err(pg_err("create slot"))? {
            SnapshotOutcome::Unavailable(s) => s,
            SnapshotOutcome::Available(mut snap) => {
                // Only the captured tables: the publication may hold others.
                snap.retain_tables(|t| by_oid.contains_key(&t.relation().relation_id));
                let pos = SourcePos::Postgres(Lsn(snap.consistent_point().value()));
                let want = tables
                    .iter()
                    .map(|t| ((*t.id).clone(), t.estimated_rows))
                    .collect();
                send(&events, SourceEvent::SnapshotStarted { pos, tables: want }).await?;
                match copy_all(snap, &cfg, &by_oid, &events, &stop).await? {
                    Some(stream) => stream,
                    None => return Ok(()),
                }
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

    let watch = Arc::new(StallWatch::default());
    let heartbeat = {
        let (dsn, slot, every, stop, watch) = (
            cfg.dsn.clone(),
            cfg.slot.clone(),
            cfg.heartbeat,
            stop.clone(),
            watch.clone(),
        );
        tokio::spawn(async move { heartbeats(&dsn, &slot, every, stop, &watch).await })
    };
    // Incremental snapshots (`sluice cdc snapshot`): passes cut short resume here.
    let (mut passes, mut driver) = incremental::start(
        &cfg.dsn,
        &cfg.slot,
        cfg.snapshot_chunk_rows,
        &recorded,
        &by_oid,
        &events,
        &stop,
    )
    .await?;
    let mut relations = Relations {
        captured: by_oid,
        uncaptured,
        publication: cfg.publication.clone(),
    };
    let gap = cfg.heartbeat / 2;
    let result = tokio::select! {
        r = stream_loop(
            &mut stream,
            &mut relations,
            &mut passes,
            &events,
            &mut confirmed,
            &stop,
            gap,
            &watch,
            &cfg.spill,
        ) => r,
        r = &mut driver => match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(Error::Source("postgres: the incremental snapshot task ended".into())),
            Err(e) => Err(Error::Source(format!("postgres: the incremental snapshot task failed: {e}"))),
        },
    };
    driver.abort();
    heartbeat.abort();
    // Confirm what was acknowledged before going.
    // Read first: the watch's guard must not live across the await below.
    let last = confirmed.borrow().clone();
    if let Some(SourcePos::Postgres(lsn)) = last {
        stream.shared_lsn_feedback.update_flushed_lsn(lsn.0);
        stream.shared_lsn_feedback.update_applied_lsn(lsn.0);
        let _ = stream.send_feedback().await;
    }
    let _ = stream.stop().await;
    result
}

use crate::change::send;

/// The relations the stream may name, by OID (pgoutput names every change by it).
struct Relations {
    captured: HashMap<u32, TableInfo>,
    /// Published but not captured (known at start): their changes are skipped.
    uncaptured: HashSet<u32>,
    publication: String,
}

impl Relations {
    /// The captured table a change names; `None` for a table published but not
    /// captured; an error for a relation nothing maps to (never skipped silently: it
    /// may be rows of a captured table under another name).
    fn get(&self, oid: u32, schema: &str, table: &str) -> Result<Option<&TableInfo>, Error> {
        if let Some(t) = self.captured.get(&oid) {
            return Ok(Some(t));
        }
        if self.uncaptured.contains(&oid) {
            return Ok(None);
        }
        // A restart reads the publication again: a table added to it since is then
        // known (and skipped), a partitioned table published through its partitions is
        // refused with the fix.
        Err(Error::Source(format!(
            "postgres: publication {} sent a change of {schema}.{table} (oid {oid}), which \
             was not published when the connector started",
            self.publication
        )))
    }
}

/// (last unit sent, position received) while no transaction is open.
type Idle = (Option<u64>, u64);

#[allow(clippy::too_many_arguments)]
async fn stream_loop(
    stream: &mut LogicalReplicationStream,
    tables: &mut Relations,
    passes: &mut incremental::Passes,
    events: &mpsc::Sender<SourceEvent>,
    confirmed: &mut watch::Receiver<Option<SourcePos>>,
    stop: &CancellationToken,
    heartbeat_gap: Duration,
    watch: &StallWatch,
    spill: &SpillConfig,
) -> Result<(), Error> {
    let mut txn: Option<(u32, TxnBuffer)> = None;
    // Our logical messages in the open transaction (incremental snapshots).
    let mut msgs = incremental::TxnMessages::default();
    // `schema.table` → relation id, from the Relation messages (a Truncate names its
    // relations only by name).
    let mut names: HashMap<String, u32> = HashMap::new();
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
        watch.reading(true);
        let stalled = || {
            Err(Error::Source(
                "postgres: the replication connection stalled (the server waited to send while \
                 the connector waited to read)"
                    .into(),
            ))
        };
        let event = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = watch.stalled.notified() => return stalled(),
            e = stream.next_event_before(boundary, stop) => e,
        };
        let event = match event {
            Ok(Some(e)) => Ok(e),
            // A keepalive moved the received position: back to the top to confirm it.
            Ok(None) if stream.current_lsn() != received => continue,
            // A transaction's first frame is held at the boundary: take it.
            Ok(None) => tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = watch.stalled.notified() => return stalled(),
                e = stream.next_event(stop) => e,
            },
            Err(e) => Err(e),
        };
        watch.reading(false);
        let event = match event {
            Ok(e) => e,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => return Err(Error::Source(format!("postgres: replication stream: {e}"))),
        };
        match event.event_type {
            EventType::Begin { transaction_id, .. } => {
                txn = Some((transaction_id, TxnBuffer::new(spill.clone())));
                msgs = incremental::TxnMessages::default();
            }
            EventType::Message {
                flags,
                prefix,
                content,
                ..
            } if flags & 1 == 1 => {
                msgs.observe(&prefix, &content);
            }
            EventType::Insert {
                schema,
                table,
                relation_oid,
                data,
            } => {
                let Some(info) = tables.get(relation_oid, &schema, &table)? else {
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
                relation_oid,
                old_data,
                new_data,
                ..
            } => {
                let Some(info) = tables.get(relation_oid, &schema, &table)? else {
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
                relation_oid,
                old_data,
                ..
            } => {
                let Some(info) = tables.get(relation_oid, &schema, &table)? else {
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
            EventType::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                names.insert(format!("{namespace}.{relation_name}"), relation_id);
                // Columns added or dropped while running: rows follow the new shape. A
                // renamed table keeps its topic (it is the same OID).
                if let Some(info) = tables.captured.get_mut(&relation_id) {
                    if *info.id.schema != *namespace || *info.id.table != *relation_name {
                        warn!(table = %info.id, now = %format!("{namespace}.{relation_name}"), "a captured table was renamed: its changes still go to its topic");
                    }
                    info.columns = columns.iter().map(|c| c.name.to_string()).collect();
                    info.types = columns
                        .iter()
                        .map(|c| (c.name.to_string(), c.type_id))
                        .collect();
                }
            }
            EventType::Truncate { tables: t, .. } => {
                // pgoutput names every relation of the statement (CASCADE's too) after
                // sending its Relation message; with publish_via_partition_root a
                // partitioned table comes under its own name, its partitions not at all.
                for name in t.iter() {
                    let Some(&oid) = names.get(&**name) else {
                        return Err(Error::Source(format!(
                            "postgres: a TRUNCATE of {name}, a relation the stream never described"
                        )));
                    };
                    let (schema, table) = name.split_once('.').unwrap_or(("", name));
                    let Some(info) = tables.get(oid, schema, table)? else {
                        continue;
                    };
                    push(&mut txn, RowChange::truncate(info.id.clone()))?;
                }
            }
            EventType::Commit {
                end_lsn,
                commit_timestamp,
                ..
            } => {
                let pos = SourcePos::Postgres(Lsn(end_lsn.value()));
                let (xid, changes) = txn
                    .take()
                    .unwrap_or_else(|| (0, TxnBuffer::new(spill.clone())));
                let commit_ms = commit_timestamp.timestamp_millis();
                let ours = std::mem::take(&mut msgs);
                if !ours.is_empty() {
                    if !changes.is_empty() {
                        last_sent = Some(end_lsn.value());
                        let observe = |c: &[RowChange]| passes.observe_changes(c);
                        changes
                            .send(pos.clone(), xid.to_string(), commit_ms, events, observe, &mut Feedback(stream))
                            .await?;
                    }
                    let tables = &tables.captured;
                    if passes
                        .on_commit(ours, &pos, commit_ms, tables, events, stop)
                        .await?
                    {
                        last_sent = Some(end_lsn.value());
                    }
                    continue;
                }
                // Heartbeat messages of other connectors on this database arrive too
                // (logical messages ignore publications): at most one heartbeat per half
                // interval.
                if changes.is_empty() && last_heartbeat.elapsed() < heartbeat_gap {
                    continue;
                }
                last_sent = Some(end_lsn.value());
                if changes.is_empty() {
                    last_heartbeat = std::time::Instant::now();
                    send(events, SourceEvent::Heartbeat(pos)).await?;
                } else {
                    let observe = |c: &[RowChange]| passes.observe_changes(c);
                    changes
                        .send(pos, xid.to_string(), commit_ms, events, observe, &mut Feedback(stream))
                        .await?;
                }
            }
            _ => {}
        }
    }
    }
    .await;
    confirming.abort();
    result
}

/// While a large transaction's parts are written the stream is not read: a status
/// update every second keeps the walsender from ending the connection at
/// `wal_sender_timeout`, which counts from the client's last update.
struct Feedback<'a>(&'a mut LogicalReplicationStream);

impl crate::spill::KeepAlive for Feedback<'_> {
    async fn keep_alive(&mut self) {
        if let Err(e) = self.0.send_feedback().await {
            warn!(error = %e, "a status update to Postgres failed while a large transaction is written");
        }
    }
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

fn push(txn: &mut Option<(u32, TxnBuffer)>, c: RowChange) -> Result<(), Error> {
    match txn {
        Some((_, changes)) => changes.push(c),
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

/// The key of a row. A row without a key column is a setup error: it comes from the WAL
/// as it was written (the table's replica identity then lacked the key), so every retry
/// would replay the same change and fail the same way. A primary-key column is never
/// NULL, so a null one is one the change did not carry (pgoutput sends the columns
/// outside the replica identity of a delete's old row as nulls).
fn key_of(info: &TableInfo, row: &Row) -> Result<Row, Error> {
    info.key
        .iter()
        .map(|k| {
            row.iter()
                .find(|(n, v)| &**n == k && !v.is_null())
                .map(|(n, v)| (n.clone(), v.clone()))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "postgres: a change of {} carries no primary-key column {k} (the \
                         table's REPLICA IDENTITY did not include it when the change was \
                         made), so it cannot be written to a topic keyed by the primary key; \
                         with REPLICA IDENTITY DEFAULT or FULL set, drop the connector's slot \
                         (pg_drop_replication_slot) and restart it, which copies the tables \
                         again",
                        info.id
                    ))
                })
        })
        .collect()
}
