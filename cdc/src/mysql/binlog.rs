//! The binlog stream: events in, whole committed transactions and heartbeats out.
//!
//! The connection registers as a replica (`--server-id`) with
//! `@mariadb_slave_capability=4`, so MariaDB sends its own GTID events (type 0xA2), which
//! `mysql_async` does not decode: their body is parsed here ([`parse_mariadb_gtid`]).
//! `@master_heartbeat_period` makes the server send a heartbeat event whenever it has
//! been idle that long, so a dead connection is noticed (no event for three periods).
//! A start with a GTID state is asked for by that state (`@slave_connect_state`), not by
//! file:offset, so it survives a binlog reset that kept the state, or a failover.
//!
//! Invariants: a [`Transaction`] is sent only at its commit event (XID, or a `COMMIT`
//! query for non-transactional engines), positioned at that event's end; its changes are
//! those of every row event since its GTID / `BEGIN`, in binlog order. Positions go up
//! in GTID order: a GTID at or below its domain's last stops the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use sluice_proto::source_pos::{BinlogPos, Gtid, GtidSet, SourcePos};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{binlog_row, connect, key_of, my_err, send, MySourceConfig, Stop, TableInfo};
use crate::change::{Op, RowChange, SourceEvent};
use crate::spill::{NoKeepAlive, SpillConfig, TxnBuffer};
use crate::Error;

/// MariaDB's GTID event.
const MARIADB_GTID_EVENT: u8 = 0xA2;
/// GTID flag: the event group is one statement with no BEGIN/COMMIT (DDL).
const FL_STANDALONE: u8 = 1;
/// Idle heartbeat periods after which the connection counts as dead.
const DEAD_AFTER_PERIODS: u32 = 3;
/// A stream idle (the server sends heartbeat events) while the server's GTID state is
/// ahead of the stream's for this long is stuck (a binlog reset under it can leave the
/// server's sender reading the old file's name for good): the run restarts.
const STUCK_AFTER: Duration = Duration::from_secs(3);
/// ER_MASTER_FATAL_ERROR_READING_BINLOG: the server will not send the binlog from where
/// it was asked (a purged file, a GTID state its binlog does not hold, a reset binlog).
const ER_BINLOG_FATAL: u16 = 1236;

/// A MariaDB GTID event's body: `seq_no` u64 LE, `domain_id` u32 LE, `flags` u8 (then
/// fields this connector does not need). The server id comes from the event header.
pub(super) fn parse_mariadb_gtid(body: &[u8], server_id: u32) -> Option<(Gtid, u8)> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    let flags = *body.get(12)?;
    Some((
        Gtid {
            domain,
            server: server_id,
            seq,
        },
        flags,
    ))
}

/// The file name of a rotate event. The artificial rotate the server sends first comes
/// before the format description, so the reader has not learnt yet that events end in
/// a 4-byte checksum and leaves it on the name: it is cut off here when the server
/// checksums its events (`binlog_checksum` other than NONE).
pub(super) fn binlog_file_name(raw: &[u8], checksum_left_on: bool) -> String {
    let raw = if checksum_left_on && raw.len() > 4 {
        &raw[..raw.len() - 4]
    } else {
        raw
    };
    String::from_utf8_lossy(raw).into_owned()
}

/// The table a `TRUNCATE [TABLE] [db.]name [WAIT n | NOWAIT]` statement empties, as
/// (database, table); `default_db` is the statement's current database. MariaDB logs
/// `TRUNCATE` as this statement (one table per statement), not as row events.
pub(super) fn parse_truncate(query: &str, default_db: &str) -> Option<(String, String)> {
    let rest = strip_word(query.trim_start(), "TRUNCATE")?;
    let rest = strip_word(rest, "TABLE").unwrap_or(rest);
    let (first, rest) = ident(rest)?;
    match rest.strip_prefix('.') {
        Some(rest) => {
            let (table, _) = ident(rest)?;
            Some((first, table))
        }
        None if default_db.is_empty() => None,
        None => Some((default_db.to_string(), first)),
    }
}

/// `s` without its leading keyword `word` (case-insensitive, followed by whitespace or
/// a backtick) and the whitespace after it.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let rest = &s[word.len()..];
    let boundary = rest.starts_with(|c: char| c.is_whitespace() || c == '`');
    (head.eq_ignore_ascii_case(word) && boundary).then(|| rest.trim_start())
}

/// One identifier, backquoted (`` ` `` doubled inside) or bare, and what follows it.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('`') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '`' {
                out.push(c);
                continue;
            }
            if rest[i + 1..].starts_with('`') {
                out.push('`');
                chars.next();
                continue;
            }
            return Some((out, &rest[i + 1..]));
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_string(), &s[end..]))
}

/// A transaction being read.
struct Open {
    gtid: Option<Gtid>,
    /// Begun by a standalone GTID: ends with its (one) query event.
    standalone: bool,
    /// Where it began, for an id when there is no GTID.
    begin: BinlogPos,
    changes: TxnBuffer,
}

struct State<'a> {
    tables: HashMap<(String, String), Arc<TableInfo>>,
    events: &'a mpsc::Sender<SourceEvent>,
    file: String,
    gtids: GtidSet,
    open: Option<Open>,
    /// The position after the last transaction, to be sent as a heartbeat at the
    /// instant given unless a later one replaces it first (then the instant stays).
    pending_heartbeat: Option<(SourcePos, Instant)>,
    last_heartbeat: Instant,
    every: Duration,
    /// The server checksums events (`binlog_checksum` is not NONE).
    checksums: bool,
    /// A format description arrived: the reader strips checksums from here on.
    fde_seen: bool,
    /// The server sent an event: it accepted where the stream was asked to start.
    accepted: bool,
    /// The DSN to read the server's GTID state with while the stream idles (`None`
    /// without GTIDs), the connection for it (opened again when the server closed it as
    /// idle, `wait_timeout`), and since when the server has been seen ahead.
    watch_dsn: Option<String>,
    watch: Option<Conn>,
    ahead_since: Option<Instant>,
    last_check: Instant,
    /// Where a large transaction goes while it is received.
    spill: SpillConfig,
}

/// The binlog connection, registered and asked for the stream from `start`: by its GTID
/// state when it has one (MariaDB's `@slave_connect_state`: the server finds that state
/// in its own binlog, whatever its files are called now, and sends what follows it in
/// every domain), else by file:offset. Returns the stream and whether the server
/// checksums its events.
async fn open(
    cfg: &MySourceConfig,
    (start, gtids): (&BinlogPos, &GtidSet),
    period: Duration,
) -> Result<(BinlogStream, bool), Error> {
    let mut conn = connect(&cfg.dsn).await?;
    let checksums = conn
        .query_first::<Option<String>, _>("SELECT @@GLOBAL.binlog_checksum")
        .await
        .map_err(my_err("read binlog_checksum"))?
        .flatten()
        .is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
    // A large transaction is written in parts while the binlog is not read (the source
    // waits for the writer, crate::spill): the server's write to this connection may
    // then block for longer than the default 60 s `net_write_timeout`, after which it
    // drops the connection. An hour covers any part.
    conn.query_drop("SET SESSION net_write_timeout = 3600")
        .await
        .map_err(my_err("set net_write_timeout"))?;
    conn.query_drop("SET @mariadb_slave_capability = 4")
        .await
        .map_err(my_err("set replica capability"))?;
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        period.as_nanos()
    ))
    .await
    .map_err(my_err("set heartbeat period"))?;
    let mut request = BinlogStreamRequest::new(cfg.server_id);
    if gtids.is_empty() {
        request = request
            .with_filename(start.file.as_bytes())
            .with_pos(start.offset);
    } else {
        // A GTID state is digits, '-' and ',' only (it was parsed): nothing to escape.
        conn.query_drop(format!("SET @slave_connect_state = '{gtids}'"))
            .await
            .map_err(my_err("set the GTID state to stream from"))?;
    }
    let binlog = conn
        .get_binlog_stream(request)
        .await
        .map_err(my_err("request binlog"))?;
    Ok((binlog, checksums))
}

/// Whether the server can stream from GTID state `gtids`: `Ok(Err(its refusal))` when it
/// cannot (its binlog does not hold that state). Only asks: the stream is closed at its
/// first event.
pub(super) async fn can_stream_from(
    cfg: &MySourceConfig,
    gtids: &GtidSet,
) -> Result<Result<(), String>, Error> {
    let period = cfg.heartbeat.max(Duration::from_millis(100));
    let any = BinlogPos {
        file: String::new(),
        offset: 4,
    };
    let (mut binlog, _) = open(cfg, (&any, gtids), period).await?;
    let first = tokio::time::timeout(period * DEAD_AFTER_PERIODS, binlog.next()).await;
    let answer = match first {
        Err(_) => Err(Error::Source(
            "mysql: no answer to a binlog request (probing the GTID state)".into(),
        )),
        Ok(Some(Err(mysql_async::Error::Server(e)))) if e.code == ER_BINLOG_FATAL => {
            Ok(Err(e.message))
        }
        Ok(Some(Err(e))) => Err(Error::Source(format!("mysql: binlog: {e}"))),
        Ok(None) => Err(Error::Source("mysql: the binlog stream ended".into())),
        Ok(Some(Ok(_))) => Ok(Ok(())),
    };
    drop(binlog);
    answer
}

pub(super) async fn stream(
    cfg: &MySourceConfig,
    tables: HashMap<(String, String), Arc<TableInfo>>,
    (start, gtids): (BinlogPos, GtidSet),
    events: &mpsc::Sender<SourceEvent>,
    stop: &Stop,
) -> Result<(), Error> {
    let period = cfg.heartbeat.max(Duration::from_millis(100));
    let by_gtid = !gtids.is_empty();
    let (mut binlog, checksums) = open(cfg, (&start, &gtids), period).await?;
    let mut st = State {
        tables,
        events,
        file: start.file.clone(),
        gtids,
        open: None,
        pending_heartbeat: None,
        last_heartbeat: Instant::now(),
        every: cfg.heartbeat,
        checksums,
        fde_seen: false,
        accepted: false,
        watch_dsn: by_gtid.then(|| cfg.dsn.clone()),
        watch: None,
        ahead_since: None,
        last_check: Instant::now(),
        spill: cfg.spill.clone(),
    };
    let dead_after = period * DEAD_AFTER_PERIODS;
    loop {
        let flush_at = st
            .pending_heartbeat
            .as_ref()
            .map_or_else(Instant::now, |(_, due)| *due);
        let next = tokio::select! {
            _ = stop.cancelled() => {
                // Every partition learns the last transaction's position before the
                // writer drains and stops: a restart then starts from that very point
                // (which a binlog reset keeping its GTID state still has).
                // (A writer already gone has its own error to report.)
                let _ = st.flush_heartbeat().await;
                break;
            }
            _ = tokio::time::sleep_until(flush_at), if st.pending_heartbeat.is_some() => {
                st.flush_heartbeat().await?;
                continue;
            }
            e = tokio::time::timeout(dead_after, binlog.next()) => e,
        };
        let event = match next {
            Err(_) => {
                return Err(Error::Source(format!(
                    "mysql: binlog connection silent for {dead_after:?} (heartbeats every \
                     {period:?}): the server is gone"
                )))
            }
            Ok(None) => return Err(Error::Source("mysql: the binlog stream ended".into())),
            // Refused before anything was sent: the start is purged, unreadable or (by
            // GTID) not in this server's binlog; asking again fails the same way.
            Ok(Some(Err(mysql_async::Error::Server(e))))
                if e.code == ER_BINLOG_FATAL && !st.accepted =>
            {
                // Nothing came: the state is still the one asked for.
                let start = SourcePos::Mysql {
                    binlog: start,
                    gtids: st.gtids.clone(),
                };
                return Err(match by_gtid {
                    true => super::resume::unplaceable(&start, &e.message),
                    false => Error::Config(format!(
                        "mysql: the server cannot send the binlog from {start} ({}); if the \
                         file was purged, the changes since are lost to streaming: delete \
                         this connector's topics (sluice topic delete PREFIX.DB.TABLE) and \
                         run it again with --snapshot initial to copy the tables anew",
                        e.message
                    )),
                });
            }
            // After the server accepted the start (the binlog was reset under the stream,
            // say): the restart places the topics' position again, or says why not.
            Ok(Some(Err(mysql_async::Error::Server(e)))) if e.code == ER_BINLOG_FATAL => {
                return Err(Error::Source(format!(
                    "mysql: the server stopped sending the binlog at {}: {}",
                    st.file, e.message
                )))
            }
            Ok(Some(Err(e))) => return Err(Error::Source(format!("mysql: binlog: {e}"))),
            Ok(Some(Ok(e))) => {
                st.accepted = true;
                e
            }
        };
        st.handle(&binlog, &event).await?;
    }
    let _ = binlog.close().await;
    Ok(())
}

impl State<'_> {
    fn pos_at(&self, offset: u32) -> SourcePos {
        SourcePos::Mysql {
            binlog: BinlogPos {
                file: self.file.clone(),
                offset: u64::from(offset),
            },
            gtids: self.gtids.clone(),
        }
    }

    /// A new event group. Its GTID must come after the state in its domain: positions
    /// are ordered by GTID, so one that went back would sort before changes already
    /// written, and the sink would drop it.
    fn begin(&mut self, gtid: Option<Gtid>, standalone: bool, at: u32) -> Result<(), Error> {
        self.ahead_since = None;
        if let Some(g) = gtid {
            if let Some(last) = self.gtids.get(g.domain).filter(|l| l.seq >= g.seq) {
                return Err(Error::Config(format!(
                    "mysql: GTID {g} at {}:{at} follows {last} in domain {}: sequence numbers \
                     went back (two primaries writing one domain?), so changes cannot be \
                     ordered; give each primary its own gtid_domain_id and set \
                     gtid_strict_mode=ON",
                    self.file, g.domain
                )));
            }
        }
        if let Some(open) = &self.open {
            warn!(begin = %open.begin, "a transaction began before the last one ended; dropping its {} change(s)", open.changes.len());
        }
        self.open = Some(Open {
            gtid,
            standalone,
            begin: BinlogPos {
                file: self.file.clone(),
                offset: u64::from(at),
            },
            changes: TxnBuffer::new(self.spill.clone()),
        });
        Ok(())
    }

    async fn handle(&mut self, binlog: &BinlogStream, event: &Event) -> Result<(), Error> {
        let header = event.header();
        let raw_type = header.event_type_raw();
        // The end of this event in its file (0 for artificial events: rotate, heartbeat).
        let end = header.log_pos();
        if raw_type == MARIADB_GTID_EVENT {
            let (gtid, flags) = parse_mariadb_gtid(event.data(), header.server_id())
                .ok_or_else(|| Error::Source("mysql: a GTID event too short".into()))?;
            let start = end.saturating_sub(header.event_size());
            return self.begin(Some(gtid), flags & FL_STANDALONE != 0, start);
        }
        let data = match event.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()), // MariaDB's other own events: GTID lists, checkpoints
            Err(e) => {
                return Err(Error::Source(format!(
                    "mysql: binlog event type {raw_type:#x} at {}:{end}: {e}",
                    self.file
                )))
            }
        };
        match data {
            EventData::RotateEvent(r) => {
                self.file = binlog_file_name(r.name_raw(), self.checksums && !self.fde_seen);
                debug!(file = %self.file, "binlog file");
            }
            EventData::QueryEvent(q) => {
                let query = q.query();
                let query = query.trim();
                if query.eq_ignore_ascii_case("BEGIN") {
                    if self.open.as_ref().is_none_or(|o| o.gtid.is_none()) {
                        let start = end.saturating_sub(header.event_size());
                        self.begin(None, false, start)?;
                    }
                } else if query.eq_ignore_ascii_case("COMMIT")
                    || query.eq_ignore_ascii_case("ROLLBACK")
                {
                    // A ROLLBACK in the binlog ends a group whose changes to
                    // non-transactional tables (the only ones logged) stay applied.
                    self.commit(end, header.timestamp()).await?;
                } else if self.open.as_ref().is_none_or(|o| o.standalone) {
                    // DDL (or another statement outside a transaction): it ends here.
                    if self.open.is_none() {
                        self.begin(None, true, end)?;
                    }
                    let table = parse_truncate(query, &q.schema());
                    if let Some(info) = table.and_then(|t| self.tables.get(&t)) {
                        let change = RowChange::truncate(info.id.clone());
                        if let Some(open) = self.open.as_mut() {
                            open.changes.push(change)?;
                        }
                    }
                    self.commit(end, header.timestamp()).await?;
                }
            }
            EventData::FormatDescriptionEvent(_) => self.fde_seen = true,
            EventData::HeartbeatEvent => self.idle().await?,
            EventData::XidEvent(_) => self.commit(end, header.timestamp()).await?,
            EventData::RowsEvent(rows) => self.rows(binlog, &rows)?,
            _ => {}
        }
        Ok(())
    }

    /// The server's sender is idle: at most once a second, compare the server's GTID state
    /// with the stream's. Ahead for [`STUCK_AFTER`] while idle: the stream is stuck.
    async fn idle(&mut self) -> Result<(), Error> {
        let Some(dsn) = self.watch_dsn.as_deref() else {
            return Ok(());
        };
        if self.last_check.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.last_check = Instant::now();
        const READ: &str = "SELECT @@GLOBAL.gtid_binlog_pos";
        let kept = match self.watch.as_mut() {
            Some(conn) => conn.query_first::<Option<String>, _>(READ).await.ok(),
            None => None,
        };
        let server = match kept {
            Some(v) => v,
            None => {
                let mut conn = connect(dsn).await?;
                let v = conn
                    .query_first::<Option<String>, _>(READ)
                    .await
                    .map_err(my_err("read the server's GTID state"))?;
                self.watch = Some(conn);
                v
            }
        };
        let server: GtidSet = server
            .flatten()
            .unwrap_or_default()
            .parse()
            .unwrap_or_default();
        if self.gtids.contains(&server) {
            self.ahead_since = None;
            return Ok(());
        }
        let since = *self.ahead_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= STUCK_AFTER {
            return Err(Error::Source(format!(
                "mysql: the binlog stream has sent nothing for {:?} while the server is at \
                 GTID state {server} and the stream at {} (its binlog reset under the \
                 stream?)",
                since.elapsed(),
                self.gtids
            )));
        }
        Ok(())
    }

    fn rows(&mut self, binlog: &BinlogStream, rows: &RowsEventData<'_>) -> Result<(), Error> {
        let tme = binlog.get_tme(rows.table_id()).ok_or_else(|| {
            Error::Source(format!(
                "mysql: a rows event for table id {} without its table map",
                rows.table_id()
            ))
        })?;
        let key = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        let Some(info) = self.tables.get(&key).cloned() else {
            return Ok(());
        };
        let Some(open) = self.open.as_mut() else {
            return Err(Error::Source(format!(
                "mysql: a row change of {} outside a transaction",
                info.id
            )));
        };
        for row in rows.rows(tme) {
            let (before, after) =
                row.map_err(|e| Error::Source(format!("mysql: a row of {}: {e}", info.id)))?;
            let before = before.map(|r| binlog_row(&info, &r)).transpose()?;
            let after = after.map(|r| binlog_row(&info, &r)).transpose()?;
            match (before, after) {
                (None, Some(after)) => open.changes.push(RowChange {
                    table: info.id.clone(),
                    op: Op::Create,
                    key: key_of(&info, &after)?,
                    before: None,
                    after: Some(after),
                })?,
                (Some(before), None) => open.changes.push(RowChange {
                    table: info.id.clone(),
                    op: Op::Delete,
                    key: key_of(&info, &before)?,
                    before: Some(before),
                    after: None,
                })?,
                (Some(before), Some(after)) => {
                    let old_key = key_of(&info, &before)?;
                    let new_key = key_of(&info, &after)?;
                    if old_key != new_key {
                        // A primary-key change: the old key goes, the new one comes.
                        open.changes.push(RowChange {
                            table: info.id.clone(),
                            op: Op::Delete,
                            key: old_key,
                            before: Some(before),
                            after: None,
                        })?;
                        open.changes.push(RowChange {
                            table: info.id.clone(),
                            op: Op::Create,
                            key: new_key,
                            before: None,
                            after: Some(after),
                        })?;
                    } else {
                        open.changes.push(RowChange {
                            table: info.id.clone(),
                            op: Op::Update,
                            key: new_key,
                            before: Some(before),
                            after: Some(after),
                        })?;
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    async fn commit(&mut self, end: u32, timestamp: u32) -> Result<(), Error> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if let Some(g) = open.gtid {
            self.gtids.apply(g);
        }
        let pos = self.pos_at(end);
        // Every transaction is followed by a heartbeat at its position one interval
        // later unless another comes first: partitions it did not touch learn that the
        // source moved (a Table's position is the least over its partitions), and
        // uncaptured transactions move the topics' position at most once an interval.
        let due = match &self.pending_heartbeat {
            Some((_, due)) => *due,
            None if open.changes.is_empty() => self.last_heartbeat + self.every,
            None => Instant::now() + self.every,
        };
        self.pending_heartbeat = Some((pos.clone(), due));
        if open.changes.is_empty() {
            if Instant::now() >= due {
                self.flush_heartbeat().await?;
            }
            return Ok(());
        }
        let id = match open.gtid {
            Some(g) => g.to_string(),
            None => open.begin.to_string(),
        };
        let commit_ms = i64::from(timestamp) * 1000;
        open.changes
            .send(pos, id, commit_ms, self.events, |_| {}, &mut NoKeepAlive)
            .await
    }

    async fn flush_heartbeat(&mut self) -> Result<(), Error> {
        self.last_heartbeat = Instant::now();
        match self.pending_heartbeat.take() {
            Some((pos, _)) => send(self.events, SourceEvent::Heartbeat(pos)).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_statements_name_their_table() {
        let t = |db: &str, table: &str| Some((db.to_string(), table.to_string()));
        assert_eq!(
            parse_truncate("TRUNCATE TABLE users", "shop"),
            t("shop", "users")
        );
        assert_eq!(parse_truncate("truncate users", "shop"), t("shop", "users"));
        assert_eq!(
            parse_truncate("TRUNCATE `od``d`.`x y` WAIT 3", ""),
            t("od`d", "x y")
        );
        assert_eq!(
            parse_truncate("TRUNCATE TABLE shop.users NOWAIT", "x"),
            t("shop", "users")
        );
        assert_eq!(parse_truncate("  TRUNCATE\nTABLE `t`", "db"), t("db", "t"));
        assert_eq!(parse_truncate("TRUNCATE\tTABLE `t`", "db"), t("db", "t"));
        assert_eq!(parse_truncate("TRUNCATE users", ""), None);
        assert_eq!(parse_truncate("TRUNCATED users", "db"), None);
        assert_eq!(parse_truncate("CREATE TABLE t (id int)", "db"), None);
        assert_eq!(parse_truncate("TRUNCATE TABLE `unterminated", "db"), None);
    }

    #[test]
    fn mariadb_gtid_events_parse_from_their_body() {
        let mut body = Vec::new();
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_STANDALONE | 4);
        body.extend_from_slice(&[0; 6]); // commit id etc.: ignored
        let (g, flags) = parse_mariadb_gtid(&body, 7).unwrap();
        assert_eq!(g.to_string(), "3-7-42");
        assert_eq!(flags & FL_STANDALONE, FL_STANDALONE);
        assert!(parse_mariadb_gtid(&body[..12], 7).is_none());
    }

    #[test]
    fn a_gtid_at_or_below_its_domains_state_is_refused() {
        let (tx, _rx) = mpsc::channel(1);
        let mut st = State {
            tables: HashMap::new(),
            events: &tx,
            file: "mysql-bin.000001".into(),
            gtids: "0-1-50,1-1-7".parse().unwrap(),
            open: None,
            pending_heartbeat: None,
            last_heartbeat: Instant::now(),
            every: Duration::from_millis(100),
            checksums: true,
            fde_seen: true,
            accepted: true,
            watch_dsn: None,
            watch: None,
            ahead_since: None,
            last_check: Instant::now(),
            spill: SpillConfig::default(),
        };
        let g = |s: &str| Some(s.parse::<Gtid>().unwrap());
        st.begin(g("0-1-51"), false, 4).unwrap();
        st.begin(g("1-2-8"), false, 4).unwrap();
        st.begin(g("2-1-1"), false, 4).unwrap();
        let e = st.begin(g("0-2-50"), false, 4).unwrap_err().to_string();
        assert!(e.contains("follows 0-1-50 in domain 0"), "{e}");
        assert!(st.begin(g("1-1-3"), false, 4).is_err());
    }

    #[test]
    fn rotate_names_lose_a_trailing_checksum() {
        let name = b"mysql-bin.000001\x9a9\x07\x01";
        assert_eq!(binlog_file_name(name, true), "mysql-bin.000001");
        assert_eq!(binlog_file_name(&name[..16], false), "mysql-bin.000001");
    }
}
