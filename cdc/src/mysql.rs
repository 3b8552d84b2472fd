//! The MariaDB (and MySQL) source: the row-based binlog, read as a replica would.
//!
//! Start-up checks the server (`log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL`,
//! `binlog_row_metadata=FULL`, a `--server-id` unlike the server's own) and every table
//! (it exists, it has a primary key), each failure one line saying what fixes it.
//!
//! Initial copy, without locks: a connection starts `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT` and reads `binlog_snapshot_file` / `binlog_snapshot_position`, the binlog
//! coordinate of exactly that snapshot (MariaDB's lock-free way), and the GTID state there
//! (`BINLOG_GTID_POS(file, pos)`). Each table is read by one streaming SELECT (rows go out
//! in chunks as they arrive), then the binlog is read from that coordinate: copy and
//! stream meet with no gap and no overlap. A copy cut short starts over. Tables added to
//! `--tables` (or added back) are copied alone at a snapshot of their own, and the stream
//! then goes on from the other tables' position ([`copy`], [`CopyPlan`]). Topics of tables
//! left out are marked first, so that adding one back copies it again.
//!
//! Streaming ([`binlog`]): every row event between a transaction's GTID (or BEGIN) and
//! its XID (or COMMIT) is buffered, and the whole transaction goes out at its commit,
//! positioned at the end of the commit event with the GTID state after it; nothing
//! uncommitted is ever sent. Transactions that touch no captured table become heartbeats
//! (at most one per heartbeat interval), so positions move while captured tables are idle.
//!
//! MariaDB keeps no replica position for the connector: the position lives in the topics.
//! A restart resumes from the oldest last position over all partitions
//! ([`resume_position`]); the sink skips what each partition already holds. Positions
//! carry the server's GTID state, and a restart asks for the stream by GTID: a
//! failover or a `RESET MASTER` renumbers binlog files, not GTIDs. A position the
//! server cannot place (its binlog was reset, another server) stops the connector
//! ([`place`]): streaming from anywhere else would skip or repeat changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow};
use serde_json::Value;
use sluice_proto::source_pos::{BinlogPos, GtidSet, SourcePos};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::change::{Row, SourceEvent, TableId};
use crate::Error;

mod binlog;
mod copy;
pub mod ops;
mod resume;
pub mod tls;
pub mod types;

pub use copy::{copy_plan, CopyPlan};
use resume::place;
pub use resume::{resume_position, ResumeFrom};

use types::Kind;

/// `--snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Copy every table first when the topics do not hold a finished copy.
    Initial,
    /// Stream only: from the topics' position, or from the binlog's end when they are empty.
    Never,
}

#[derive(Debug, Clone)]
pub struct MySourceConfig {
    /// `mysql://user:password@host:port/db`.
    pub dsn: String,
    /// Tables, or patterns of them (`crate::change::resolve_tables`), resolved when
    /// each run starts.
    pub tables: Vec<TableId>,
    /// `--exclude-tables`: patterns of tables `tables` brings that are left out.
    pub exclude_tables: Vec<TableId>,
    /// The replica id the binlog connection registers with; must differ from the
    /// server's and from every other replica's (MariaDB drops an older connection that
    /// registers the same id).
    pub server_id: u32,
    pub snapshot: SnapshotMode,
    /// Most time between heartbeats while only uncaptured tables change, and the
    /// server's binlog heartbeat period while nothing changes.
    pub heartbeat: Duration,
    /// Rows per snapshot unit handed to the runner.
    pub snapshot_chunk_rows: usize,
    /// Where streaming resumes when the topics hold a finished copy
    /// ([`resume_position`] of the sink's [`Resume`](crate::position::Resume)).
    pub resume_from: Option<ResumeFrom>,
    /// The name of a MariaDB user lock (`GET_LOCK`) held for the whole run: a second
    /// connector for the same topics is refused while this one holds it, and a
    /// connector whose lock connection is lost stops (see [`run`]). `None`: no lock.
    pub fence: Option<String>,
    /// Where a large transaction goes while it is received (`crate::spill`).
    pub spill: crate::spill::SpillConfig,
}

/// Asks the source to stop (Ctrl-C): a cloneable flag to wait on.
#[derive(Debug, Clone)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop(Arc::new(watch::channel(false).0))
    }
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// A captured column.
#[derive(Debug, Clone)]
struct Column {
    name: Arc<str>,
    kind: Kind,
    /// The binlog carries text in the column's own character set (a SELECT converts to
    /// the connection's, UTF-8).
    latin1: bool,
}

/// What the connector learned about a captured table at start.
#[derive(Debug, Clone)]
struct TableInfo {
    id: Arc<TableId>,
    /// Primary-key columns in key order.
    key: Vec<Arc<str>>,
    /// In table order.
    columns: Vec<Column>,
    estimated_rows: u64,
}

impl TableInfo {
    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| &*c.name == name)
    }
}

fn my_err(what: &str) -> impl Fn(mysql_async::Error) -> Error + '_ {
    move |e| Error::Source(format!("mysql: {what}: {e}"))
}

/// Every base table a pattern of `--tables` may name, but the server's own schemas.
pub(crate) async fn list_tables(dsn: &str) -> Result<Vec<TableId>, Error> {
    let mut conn = connect(dsn).await?;
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN \
             ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2",
        )
        .await
        .map_err(my_err("listing tables"))?;
    let _ = conn.disconnect().await;
    Ok(rows
        .into_iter()
        .map(|(schema, table)| TableId { schema, table })
        .collect())
}

async fn connect(dsn: &str) -> Result<Conn, Error> {
    let c = tls::parse(dsn)?;
    let shown = crate::redact_dsn(dsn);
    match Conn::new(c.opts.clone()).await {
        Ok(conn) => Ok(conn),
        Err(e) if c.mode == tls::SslMode::Preferred && tls::is_tls_error(&e) => {
            Conn::new(c.plain()).await.map_err(my_err("connect"))
        }
        // A certificate that does not check out, or a server without TLS: retrying
        // does not fix it.
        Err(e) if c.mode != tls::SslMode::Disabled && tls::is_tls_error(&e) => {
            Err(Error::Config(format!(
                "mysql: connect to {shown} (ssl-mode={}): {e}",
                c.mode.as_str()
            )))
        }
        Err(e) => Err(my_err("connect")(e)),
    }
}

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, Error> {
    conn.query_first::<Option<String>, _>(format!("SELECT @@GLOBAL.{name}"))
        .await
        .map(Option::flatten)
        .map_err(my_err("read server variables"))
}

/// Refuses a server that cannot feed capture, one line naming the fix.
async fn check_server(conn: &mut Conn, server_id: u32) -> Result<(), Error> {
    let log_bin = variable(conn, "log_bin").await?.unwrap_or_default();
    if log_bin != "1" && !log_bin.eq_ignore_ascii_case("on") {
        return Err(Error::Config(
            "mysql: the binary log is off (log_bin); start the server with log-bin \
             (e.g. log-bin=mysql-bin in [mariadbd])"
                .into(),
        ));
    }
    let wants = [
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
    ];
    for (name, want) in wants {
        let have = match variable(conn, name).await {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => "unknown (MariaDB before 10.5 has no such setting)".into(),
        };
        if !have.eq_ignore_ascii_case(want) {
            let config = name.replace('_', "-");
            return Err(Error::Config(format!(
                "mysql: {name} is {have}; capture needs {name}={want} (SET GLOBAL {name} = \
                 '{want}'; and {config}={want} in the server's config to keep it)"
            )));
        }
    }
    let own: u64 = variable(conn, "server_id")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if server_id == 0 {
        return Err(Error::Config(
            "mysql: give --server-id N, a replica id no other replica of this server uses (not 0)"
                .into(),
        ));
    }
    if u64::from(server_id) == own {
        return Err(Error::Config(format!(
            "mysql: --server-id {server_id} is the server's own server_id; give a different one"
        )));
    }
    Ok(())
}

/// Columns, kinds and the primary key of every table; refuses one without a key.
async fn describe(conn: &mut Conn, tables: &[TableId]) -> Result<Vec<TableInfo>, Error> {
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<(String, String, String, Option<String>)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&t.schema, &t.table),
            )
            .await
            .map_err(my_err("read columns"))?;
        if cols.is_empty() {
            return Err(Error::Config(format!("mysql: table {t} does not exist")));
        }
        let key: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (&t.schema, &t.table),
            )
            .await
            .map_err(my_err("read primary key"))?;
        if key.is_empty() {
            return Err(Error::Config(format!(
                "mysql: table {t} has no primary key; a compacted topic is keyed by it \
                 (ALTER TABLE {} ADD PRIMARY KEY (...))",
                qualified(t)
            )));
        }
        let estimated: Option<Option<u64>> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.schema, &t.table),
            )
            .await
            .map_err(my_err("read table size"))?;
        let mut columns: Vec<Column> = Vec::with_capacity(cols.len());
        for (name, data_type, column_type, charset) in &cols {
            let kind = Kind::of(data_type, column_type);
            let charset = charset.as_deref().unwrap_or("binary").to_ascii_lowercase();
            let latin1 = charset == "latin1";
            let known = matches!(
                charset.as_str(),
                "utf8mb4" | "utf8mb3" | "utf8" | "ascii" | "latin1" | "binary"
            );
            if kind == Kind::Text && !known {
                return Err(Error::Config(format!(
                    "mysql: column {t}.{name} is in character set {charset}; the binlog carries \
                     its bytes as they are and the connector reads utf8mb4, utf8mb3, ascii and \
                     latin1 only (ALTER TABLE {} MODIFY {} ... CHARACTER SET utf8mb4)",
                    qualified(t),
                    quote_ident(name)
                )));
            }
            columns.push(Column {
                name: name.as_str().into(),
                kind,
                latin1,
            });
        }
        let key = key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .find(|c| &*c.name == k)
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| k.as_str().into())
            })
            .collect();
        out.push(TableInfo {
            id: Arc::new(t.clone()),
            key,
            columns,
            estimated_rows: estimated.flatten().unwrap_or(0),
        });
    }
    Ok(out)
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn qualified(t: &TableId) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table))
}

/// The GTID state at a binlog coordinate (MariaDB's `BINLOG_GTID_POS`); empty where the
/// server has none (MySQL, whose GTIDs are not carried).
async fn gtids_at(conn: &mut Conn, pos: &BinlogPos) -> GtidSet {
    let read: Result<Option<Option<String>>, _> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&pos.file, pos.offset))
        .await;
    match read {
        Ok(v) => {
            let text = v.flatten().unwrap_or_default();
            text.parse().unwrap_or_else(|e| {
                warn!(gtids = %text, error = %e, "GTID state not understood; positions carry none");
                GtidSet::default()
            })
        }
        Err(e) => {
            warn!(error = %e, "no BINLOG_GTID_POS (not MariaDB?); positions carry no GTIDs");
            GtidSet::default()
        }
    }
}

/// The binlog's end now (`SHOW MASTER STATUS`), for streaming without a copy.
async fn binlog_end(conn: &mut Conn) -> Result<BinlogPos, Error> {
    // MySQL 8.4 knows only the new name, MariaDB 10.11 and older MySQL the old one.
    let row: Option<MyRow> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row,
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(my_err("SHOW MASTER STATUS"))?,
    };
    let row = row.ok_or_else(|| {
        Error::Config("mysql: SHOW MASTER STATUS is empty: the binary log is off".into())
    })?;
    let file: Option<String> = row.get(0);
    let offset: Option<u64> = row.get(1);
    match (file, offset) {
        (Some(file), Some(offset)) => Ok(BinlogPos { file, offset }),
        _ => Err(Error::Source(
            "mysql: SHOW MASTER STATUS: no file and position".into(),
        )),
    }
}

async fn status(conn: &mut Conn, name: &str) -> Result<String, Error> {
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW STATUS LIKE '{name}'"))
        .await
        .map_err(my_err("SHOW STATUS"))?;
    row.map(|(_, v)| v).ok_or_else(|| {
        Error::Config(format!(
            "mysql: the server has no {name} status (MariaDB's consistent-snapshot binlog \
             position is needed for the initial copy; use --snapshot never on MySQL)"
        ))
    })
}

use crate::change::send;

/// The start-up checks alone (server settings, `--server-id`, tables and their keys),
/// so a command line can refuse a bad setup before it creates any topic.
pub async fn check(cfg: &MySourceConfig) -> Result<(), Error> {
    let mut conn = connect(&cfg.dsn).await?;
    check_server(&mut conn, cfg.server_id).await?;
    describe(&mut conn, &cfg.tables).await?;
    Ok(())
}

/// Runs the source until `stop` or an error. Events go to `events`; `plan` says what is
/// copied first ([`copy_plan`] of what the topics hold); `confirmed` says how far the
/// runner's writes are acknowledged (awaited once, for the topic marks).
pub async fn run(
    cfg: MySourceConfig,
    plan: CopyPlan,
    events: mpsc::Sender<SourceEvent>,
    mut confirmed: watch::Receiver<Option<SourcePos>>,
    stop: Stop,
) -> Result<(), Error> {
    let mut conn = connect(&cfg.dsn).await?;
    if let Some(name) = &cfg.fence {
        take_fence(&mut conn, name).await?;
    }
    check_server(&mut conn, cfg.server_id).await?;
    let tables = describe(&mut conn, &cfg.tables).await?;
    // Where streaming starts unless a copy of every table sets it. Everything that
    // needs `conn` happens here: from now on it only holds (and pings) the fence.
    let resume = match &plan {
        CopyPlan::All { over_rows } => {
            if *over_rows {
                info!("the topics hold a copy that did not finish: copying again");
            }
            None
        }
        CopyPlan::None | CopyPlan::Added(_) => Some(stream_start(&cfg, &plan, &mut conn).await?),
    };
    // Before anything is copied or streamed, the topics of tables left out of --tables
    // are marked, so that adding one back copies it again (`Sink::mark_topics`); before a
    // copy of every table over rows, every captured partition too. Placed first: a
    // refused position writes nothing.
    let pos = resume.clone().map_or_else(
        || SourcePos::Mysql {
            binlog: BinlogPos {
                file: String::new(),
                offset: 0,
            },
            gtids: GtidSet::default(),
        },
        |(binlog, gtids)| SourcePos::Mysql { binlog, gtids },
    );
    let copy_pending = plan == CopyPlan::All { over_rows: true };
    send(&events, SourceEvent::MarkTopics { pos, copy_pending }).await?;
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = confirmed.wait_for(|c| c.is_some()) => {
            r.map_err(|_| Error::Source("the writer stopped".into()))?;
        }
    }
    let body = async {
        let start = match (resume, &plan) {
            (None, _) => {
                let all: Vec<&TableInfo> = tables.iter().collect();
                match copy::copy(&cfg, &all, false, &events, &stop).await? {
                    Some(pos) => pos,
                    None => return Ok(()), // stopped
                }
            }
            (Some(start), CopyPlan::Added(added)) => {
                // Before the stream: it starts below the copy's point, and the sink
                // takes the added tables' changes only past it (`copy::copy`).
                let added: Vec<&TableInfo> =
                    tables.iter().filter(|t| added.contains(&t.id)).collect();
                info!(tables = ?added.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(), from = %start.0, "tables without a finished copy beside tables that have one: copying only those, then the stream goes on from the others' position");
                if copy::copy(&cfg, &added, true, &events, &stop)
                    .await?
                    .is_none()
                {
                    return Ok(());
                }
                start
            }
            (Some(start), _) => start,
        };
        let by_name: HashMap<(String, String), Arc<TableInfo>> = tables
            .into_iter()
            .map(|t| ((t.id.schema.clone(), t.id.table.clone()), Arc::new(t)))
            .collect();
        info!(from = %start.0, gtids = %start.1, "streaming the binlog");
        binlog::stream(&cfg, by_name, start, &events, &stop).await
    };
    match &cfg.fence {
        None => {
            drop(conn);
            body.await
        }
        // The lock lives as long as `conn`, pinged every second through the copy and
        // the stream (an idle connection would be closed by `wait_timeout` in a long
        // copy, and the lock with it); its loss ends the run (a restart takes the lock
        // again, or is refused while another holds it).
        // A task of its own: the copy's task can be busy for long stretches.
        Some(name) => {
            let name = name.clone();
            let mut keeper = tokio::spawn(async move { hold_fence(conn, &name).await });
            let result = tokio::select! {
                r = body => r,
                e = &mut keeper => Err(e.unwrap_or_else(|e| {
                    Error::Source(format!("mysql: the fence task failed: {e}"))
                })),
            };
            keeper.abort();
            result
        }
    }
}

/// Where the stream starts without a copy of every table: the topics' position (of the
/// tables that stream on, see [`CopyPlan::streams_from_topic`]), placed on the server,
/// or the binlog's end when nothing was written and nothing is copied.
async fn stream_start(
    cfg: &MySourceConfig,
    plan: &CopyPlan,
    conn: &mut Conn,
) -> Result<(BinlogPos, GtidSet), Error> {
    match cfg.resume_from.clone() {
        Some(ResumeFrom {
            oldest: SourcePos::Mysql { binlog, gtids },
            newest,
        }) => {
            let oldest = SourcePos::Mysql { binlog, gtids };
            place(cfg, conn, &oldest).await?;
            if newest.compare(&oldest) != Some(std::cmp::Ordering::Equal) {
                place(cfg, conn, &newest).await?;
            }
            let SourcePos::Mysql { binlog, gtids } = oldest else {
                unreachable!("matched above")
            };
            Ok((binlog, gtids))
        }
        Some(ResumeFrom { oldest: other, .. }) => Err(Error::Config(format!(
            "mysql: the topics hold positions of another source ({other}); give this \
             connector its own --topic-prefix"
        ))),
        None if cfg.snapshot == SnapshotMode::Initial || *plan != CopyPlan::None => {
            Err(Error::Source(
                "mysql: the topics hold a finished copy but no position to resume from".into(),
            ))
        }
        None => {
            let end = binlog_end(conn).await?;
            let gtids = gtids_at(conn, &end).await;
            Ok((end, gtids))
        }
    }
}

/// Takes the user lock `name` on `conn` or says who holds it.
async fn take_fence(conn: &mut Conn, name: &str) -> Result<(), Error> {
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 5)", (name,))
        .await
        .map_err(my_err("GET_LOCK"))?;
    if got.flatten() == Some(1) {
        return Ok(());
    }
    let holder: Option<Option<i64>> = conn
        .exec_first("SELECT IS_USED_LOCK(?)", (name,))
        .await
        .map_err(my_err("IS_USED_LOCK"))?;
    Err(Error::Config(format!(
        "mysql: another connector for these topics is running (it holds lock {name:?}, \
         connection {}); stop it first — two would interleave their writes",
        holder.flatten().map_or("?".to_string(), |c| c.to_string())
    )))
}

/// Returns (an error) once `conn` no longer holds the lock. The check doubles as the
/// keep-alive: it runs every second, or every half `wait_timeout` when that is shorter,
/// so the server never closes the connection (and with it the lock) as idle.
async fn hold_fence(mut conn: Conn, name: &str) -> Error {
    let wait_timeout_s: u64 = match conn.query_first("SELECT @@SESSION.wait_timeout").await {
        Ok(Some(s)) => s,
        Ok(None) => 28_800,
        Err(e) => return Error::Source(format!("mysql: the fence connection failed: {e}")),
    };
    let every = Duration::from_secs(1).min(Duration::from_millis(wait_timeout_s * 500));
    loop {
        tokio::time::sleep(every).await;
        let mine: Result<Option<Option<i64>>, _> = conn
            .exec_first("SELECT IS_USED_LOCK(?) = CONNECTION_ID()", (name,))
            .await;
        match mine {
            Ok(Some(Some(1))) => {}
            Ok(_) => return Error::Source(format!("mysql: lost the fence lock {name:?}")),
            Err(e) => return Error::Source(format!("mysql: the fence connection failed: {e}")),
        }
    }
}

fn key_of(info: &TableInfo, row: &Row) -> Result<Row, Error> {
    info.key
        .iter()
        .map(|k| {
            row.iter()
                .find(|(n, _)| n == k)
                .map(|(n, v)| (n.clone(), v.clone()))
                .ok_or_else(|| {
                    Error::Source(format!(
                        "mysql: a row of {} without its key column {k}",
                        info.id
                    ))
                })
        })
        .collect()
}

/// A row from the binlog as a JSON row, named and typed by the captured table.
fn binlog_row(info: &TableInfo, row: &mysql_async::binlog::row::BinlogRow) -> Result<Row, Error> {
    use mysql_async::binlog::value::BinlogValue;
    let mut out: Row = Vec::with_capacity(row.len());
    for (i, col) in row.columns_ref().iter().enumerate() {
        let name = col.name_str();
        // Without column names (binlog_row_metadata below FULL) the position decides.
        let column = if name.starts_with('@') {
            info.columns.get(i)
        } else {
            info.column(&name)
        };
        let (name, kind, latin1): (Arc<str>, &Kind, bool) = match column {
            Some(c) => (c.name.clone(), &c.kind, c.latin1),
            None => (name.as_ref().into(), &Kind::Other, false),
        };
        let value = match row.as_ref(i) {
            None => Value::Null,
            Some(BinlogValue::Value(mysql_async::Value::Bytes(b))) if latin1 => {
                types::to_json(kind, &mysql_async::Value::Bytes(types::latin1_to_utf8(b)))
            }
            Some(BinlogValue::Value(v)) => types::to_json(kind, v),
            Some(v @ BinlogValue::Jsonb(_)) => match mysql_async::Value::try_from(v.clone()) {
                Ok(v) => types::to_json(&Kind::Json, &v),
                Err(e) => {
                    return Err(Error::Source(format!(
                        "mysql: {}.{name}: a JSON value: {e}",
                        info.id
                    )))
                }
            },
            Some(BinlogValue::JsonDiff(_)) => {
                return Err(Error::Config(format!(
                    "mysql: {}.{name}: a partial JSON update; capture needs whole values \
                     (SET GLOBAL binlog_row_value_options = '')",
                    info.id
                )))
            }
        };
        out.push((name, value));
    }
    Ok(out)
}
