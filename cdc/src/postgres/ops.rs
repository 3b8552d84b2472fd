//! Operating a Postgres connector from outside it: what its slot and fence say
//! (`sluice cdc status --dsn`) and removing what it made (`sluice cdc drop`).
//!
//! A connector makes two things in the database: its replication slot and its
//! publication. Its fence is a session-level advisory lock (gone with the session) and
//! its heartbeats are logical messages (nothing to remove); the temporary slot of a
//! copy of added tables goes with its session too. A slot left behind holds WAL until
//! the disk fills (docs/cdc.md, Operations), which is why dropping it is a command.
//!
//! Dropping takes the connector's own fence first, on a session of its own, and holds
//! it until the slot and publication are gone: a connector starting meanwhile is
//! refused by the fence instead of creating a slot that the drop then removes.

use tokio_postgres::Client;

use super::fence::key_of;
use super::{connect, quote_ident, source_err};
use crate::Error;

/// The slot as `pg_replication_slots` shows it, with the server's WAL position.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    pub name: String,
    pub exists: bool,
    /// A walsender streams from it.
    pub active: bool,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<u64>,
    /// The oldest WAL the slot keeps.
    pub restart_lsn: Option<u64>,
    /// `reserved`, `extended`, `unreserved` or `lost` (invalidated).
    pub wal_status: Option<String>,
    /// `pg_current_wal_lsn()`.
    pub current_lsn: u64,
}

impl SlotStatus {
    /// WAL written since the slot's confirmed position: how far the connector is behind.
    pub fn lag_bytes(&self) -> Option<u64> {
        self.confirmed_flush_lsn
            .map(|c| self.current_lsn.saturating_sub(c))
    }

    /// WAL the server keeps for the slot (from its restart position).
    pub fn retained_bytes(&self) -> Option<u64> {
        self.restart_lsn.map(|r| self.current_lsn.saturating_sub(r))
    }
}

/// Who holds a connector's fence: a running connector.
#[derive(Debug, Clone)]
pub struct FenceHolder {
    pub pid: i32,
    pub application_name: Option<String>,
}

/// What `sluice cdc status --dsn` reads from Postgres.
#[derive(Debug, Clone)]
pub struct PgStatus {
    pub slot: SlotStatus,
    /// `Some` while a connector for the slot runs.
    pub fence: Option<FenceHolder>,
    pub publication_exists: bool,
    /// `schema.table` → the planner's row estimate (0 when never analyzed).
    pub estimated_rows: Vec<(String, u64)>,
}

fn lsn_of(s: Option<String>) -> Option<u64> {
    s.and_then(|s| s.parse::<sluice_proto::source_pos::Lsn>().ok())
        .map(|l| l.0)
}

async fn slot_status(client: &Client, slot: &str) -> Result<SlotStatus, Error> {
    let current: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(source_err("pg_current_wal_lsn"))?
        .get(0);
    let current_lsn = lsn_of(Some(current)).unwrap_or(0);
    let row = client
        .query_opt(
            "SELECT active, active_pid, confirmed_flush_lsn::text, restart_lsn::text, \
             wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(source_err("read pg_replication_slots"))?;
    Ok(match row {
        None => SlotStatus {
            name: slot.to_string(),
            exists: false,
            active: false,
            active_pid: None,
            confirmed_flush_lsn: None,
            restart_lsn: None,
            wal_status: None,
            current_lsn,
        },
        Some(r) => SlotStatus {
            name: slot.to_string(),
            exists: true,
            active: r.get(0),
            active_pid: r.get(1),
            confirmed_flush_lsn: lsn_of(r.get(2)),
            restart_lsn: lsn_of(r.get(3)),
            wal_status: r.get(4),
            current_lsn,
        },
    })
}

/// The session holding the slot's fence, if any (a bigint advisory lock shows in
/// `pg_locks` as classid = high half, objid = low half, objsubid = 1).
async fn fence_holder(client: &Client, slot: &str) -> Result<Option<FenceHolder>, Error> {
    let key = key_of(slot);
    let row = client
        .query_opt(
            "SELECT l.pid, a.application_name::text FROM pg_locks l \
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2 \
             AND l.pid <> pg_backend_pid() \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&((key as u64 >> 32) as u32), &(key as u64 as u32)],
        )
        .await
        .map_err(source_err("read pg_locks"))?;
    Ok(row.map(|r| FenceHolder {
        pid: r.get(0),
        application_name: r.get(1),
    }))
}

/// The slot, the fence, the publication and the tables' row estimates.
pub async fn status(
    dsn: &str,
    slot: &str,
    publication: &str,
    tables: &[crate::TableId],
) -> Result<PgStatus, Error> {
    let client = connect(dsn).await?;
    let slot_status = slot_status(&client, slot).await?;
    let fence = fence_holder(&client, slot).await?;
    let publication_exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(source_err("read pg_publication"))?
        .is_some();
    let mut estimated_rows = Vec::new();
    for t in tables {
        // Leaf partitions for a partitioned table (it holds no rows itself).
        let n: Option<i64> = client
            .query_opt(
                "SELECT CASE WHEN r.relkind = 'p' THEN \
                   (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) \
                    FROM pg_partition_tree(r.oid) p JOIN pg_class c ON c.oid = p.relid \
                    WHERE p.isleaf) \
                 ELSE greatest(r.reltuples, 0) END::bigint \
                 FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace \
                 WHERE n.nspname = $1 AND r.relname = $2",
                &[&t.schema, &t.table],
            )
            .await
            .map_err(source_err("estimate rows"))?
            .map(|r| r.get(0));
        estimated_rows.push((t.to_string(), n.unwrap_or(0).max(0) as u64));
    }
    Ok(PgStatus {
        slot: slot_status,
        fence,
        publication_exists,
        estimated_rows,
    })
}

/// What [`drop_connector`] removed.
#[derive(Debug, Clone, Default)]
pub struct Dropped {
    pub slot: bool,
    pub publication: bool,
}

/// Drops the connector's slot and publication. Refused (an [`Error::Config`]: not
/// retried) while a connector runs: its fence is held, or its slot is active.
/// Idempotent: what is already gone is skipped.
pub async fn drop_connector(dsn: &str, slot: &str, publication: &str) -> Result<Dropped, Error> {
    let client = connect(dsn).await?;
    let key = key_of(slot);
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(source_err("pg_try_advisory_lock"))?
        .get(0);
    if !got {
        let holder = fence_holder(&client, slot).await?;
        return Err(Error::Config(format!(
            "postgres: a connector for slot {slot} is running (its fence is held by session \
             pid {}); stop it first, then run cdc drop again",
            holder.map_or("?".to_string(), |h| h.pid.to_string())
        )));
    }
    // The fence is ours until `client` closes: no connector can start meanwhile.
    let s = slot_status(&client, slot).await?;
    if s.active {
        return Err(Error::Config(format!(
            "postgres: replication slot {slot} is in use (walsender pid {}); stop the \
             connector that streams from it first, then run cdc drop again",
            s.active_pid.map_or("?".to_string(), |p| p.to_string())
        )));
    }
    let mut dropped = Dropped::default();
    if s.exists {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => dropped.slot = true,
            // Gone meanwhile (dropped by hand): what was asked for.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {}
            Err(e) => return Err(source_err("drop slot")(e)),
        }
    }
    let existed = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(source_err("read pg_publication"))?
        .is_some();
    if existed {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                quote_ident(publication)
            ))
            .await
            .map_err(source_err("drop publication"))?;
        dropped.publication = true;
    }
    Ok(dropped)
}

/// Asks the connector of `slot` to copy `tables` again (an incremental snapshot,
/// crate::incremental): a signal written into the database's change stream, which the
/// connector acts on when it reads it (now if it runs, else when it next starts).
/// Refused with one line when the slot or a table does not exist. Returns the
/// request's id and the signal's position.
pub async fn request_snapshot(
    dsn: &str,
    slot: &str,
    tables: &[crate::change::TableId],
) -> Result<(String, String), Error> {
    let client = connect(dsn).await?;
    let slot_exists = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(source_err("read pg_replication_slots"))?
        .is_some();
    if !slot_exists {
        return Err(Error::Config(format!(
            "postgres: no replication slot {slot}: no connector has run for this topic prefix              (give the connector's --slot, or start it first: its first run copies every table)"
        )));
    }
    for t in tables {
        let qualified = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table));
        let found: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&qualified])
            .await
            .map_err(source_err("look up the table"))?
            .get(0);
        if found.is_none() {
            return Err(Error::Config(format!(
                "postgres: no table {t} in the database"
            )));
        }
    }
    let id = format!(
        "{:x}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros()),
        std::process::id()
    );
    let signal = crate::incremental::Signal {
        slot: slot.to_string(),
        id: id.clone(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
    };
    let content = serde_json::to_string(&signal).expect("a signal serializes");
    let lsn: String = client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1::text, $2::text)::text",
            &[&crate::incremental::SIGNAL_PREFIX, &content],
        )
        .await
        .map_err(source_err("write the snapshot signal"))?
        .get(0);
    Ok((id, lsn))
}
