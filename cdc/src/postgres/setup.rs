//! Start-up of the Postgres source: what the server, the tables, the publication and
//! the slot must be for capture, checked before anything is streamed.
//!
//! Every state here that a restart cannot change (a table without a key, a replica
//! identity that carries no key, a publication that sends partitions under their own
//! names, an invalid or invalidated slot) is an [`Error::Config`]: the command exits
//! with one line naming the fix instead of retrying forever.
//!
//! Tables are tracked by OID from here on: pgoutput names every change by its
//! relation's OID, so a renamed table keeps its topic, and a relation the connector
//! did not expect is noticed instead of skipped by name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::info;

use super::{quote_ident, source_err, PgSourceConfig};
use crate::change::TableId;
use crate::Error;

/// Longest identifier Postgres keeps (NAMEDATALEN - 1): a longer slot name would be
/// cut, and a restart would then look for a slot that does not exist.
const NAME_BYTES_MAX: usize = 63;

/// What the connector learned about a captured table at start.
#[derive(Debug, Clone)]
pub(super) struct TableInfo {
    pub id: Arc<TableId>,
    pub oid: u32,
    /// Primary-key columns in key order.
    pub key: Vec<String>,
    /// Column name → type OID.
    pub types: HashMap<String, u32>,
    /// Column names in table order.
    pub columns: Vec<String>,
    pub replica_identity_full: bool,
    /// `PARTITION BY`: its rows live in its partitions, which the publication must
    /// publish under this table's name (`publish_via_partition_root`).
    pub partitioned: bool,
    pub estimated_rows: u64,
}

/// The captured tables and the rest of what the publication sends.
pub(super) struct Prepared {
    pub tables: Vec<TableInfo>,
    /// OIDs the publication publishes that are not captured (a table left out of
    /// `--tables`, a publication `FOR ALL TABLES`): their changes are skipped. Any
    /// other relation in the stream is an error.
    pub uncaptured: HashSet<u32>,
}

/// Refuses a slot name Postgres would refuse (`CREATE_REPLICATION_SLOT` fails the
/// same way on every retry) or cut.
pub(super) fn validate_slot_name(slot: &str) -> Result<(), Error> {
    let valid = !slot.is_empty()
        && slot.len() <= NAME_BYTES_MAX
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        return Ok(());
    }
    Err(Error::Config(format!(
        "postgres: replication slot name {slot:?} is invalid: Postgres allows only lower-case \
         letters, digits and _ (at most {NAME_BYTES_MAX} bytes); give --slot NAME (the default \
         is sluice_<topic prefix>, so a lower-case --topic-prefix also works)"
    )))
}

/// Checks the server and tables, creates or extends the publication.
pub(super) async fn prepare(
    client: &tokio_postgres::Client,
    cfg: &PgSourceConfig,
) -> Result<Prepared, Error> {
    validate_slot_name(&cfg.slot)?;
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
    let mut tables = Vec::new();
    for t in &cfg.tables {
        tables.push(describe(client, t).await?);
    }
    publication(client, &cfg.publication, &tables).await?;
    let uncaptured = published(client, &cfg.publication, &tables).await?;
    Ok(Prepared { tables, uncaptured })
}

/// One table: key, columns, replica identity.
async fn describe(client: &tokio_postgres::Client, t: &TableId) -> Result<TableInfo, Error> {
    let qualified = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table));
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, greatest(c.reltuples, 0)::bigint, \
             c.relkind = 'p' \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&t.schema, &t.table],
        )
        .await
        .map_err(source_err("look up table"))?
        .ok_or_else(|| Error::Config(format!("postgres: table {t} does not exist")))?;
    let oid: u32 = row.get(0);
    let identity: String = row.get(1);
    let mut estimated: i64 = row.get(2);
    let partitioned: bool = row.get(3);
    if partitioned {
        // A partitioned table holds no rows itself: its partitions' estimates, for the
        // copy's progress.
        estimated = client
            .query_one(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint \
                 FROM pg_partition_tree($1::oid::regclass) p \
                 JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf",
                &[&oid],
            )
            .await
            .map_err(source_err("estimate partition rows"))?
            .get(0);
    }
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
    if identity == "i" {
        identity_index_covers_key(client, t, oid, &key).await?;
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
    Ok(TableInfo {
        id: Arc::new(t.clone()),
        oid,
        key,
        types: cols.iter().map(|r| (r.get(0), r.get(1))).collect(),
        columns: cols.iter().map(|r| r.get(0)).collect(),
        replica_identity_full: full,
        partitioned,
        estimated_rows: estimated as u64,
    })
}

/// `REPLICA IDENTITY USING INDEX`: a delete carries only the index's columns, so the
/// index must hold every primary-key column or the delete cannot name its record
/// (and a restart would meet the same delete again).
async fn identity_index_covers_key(
    client: &tokio_postgres::Client,
    t: &TableId,
    oid: u32,
    key: &[String],
) -> Result<(), Error> {
    let rows = client
        .query(
            "SELECT ic.relname::text, a.attname::text FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid \
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1 AND i.indisreplident",
            &[&oid],
        )
        .await
        .map_err(source_err("read replica identity index"))?;
    let index: Option<String> = rows.first().map(|r| r.get(0));
    let covered: HashSet<String> = rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(1))
        .collect();
    let missing: Vec<&str> = key
        .iter()
        .filter(|k| !covered.contains(*k))
        .map(|k| k.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let qualified = format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table));
    Err(Error::Config(format!(
        "postgres: table {t} has REPLICA IDENTITY USING INDEX {} without primary-key \
         column(s) {}, so its deletes cannot name their key; run ALTER TABLE {qualified} \
         REPLICA IDENTITY DEFAULT (or FULL) and restart the connector",
        index
            .as_deref()
            .map_or("(dropped)".to_string(), quote_ident),
        missing.join(", ")
    )))
}

/// Creates the publication for exactly these tables (publishing partitions under their
/// root's name), or extends an existing one to them. An existing publication that
/// publishes a captured partitioned table's rows under its partitions' names is
/// refused: the connector would never see a change of that table.
async fn publication(
    client: &tokio_postgres::Client,
    name: &str,
    tables: &[TableInfo],
) -> Result<(), Error> {
    let existing = client
        .query_opt(
            "SELECT oid, pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(source_err("look up publication"))?;
    let qualified =
        |t: &TableInfo| format!("{}.{}", quote_ident(&t.id.schema), quote_ident(&t.id.table));
    let Some(row) = existing else {
        let list: Vec<String> = tables.iter().map(qualified).collect();
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                quote_ident(name),
                list.join(", ")
            ))
            .await
            .map_err(source_err("create publication"))?;
        info!(publication = %name, "created publication");
        return Ok(());
    };
    let (pub_oid, via_root): (u32, bool) = (row.get(0), row.get(1));
    if let Some(t) = tables.iter().find(|t| t.partitioned) {
        if !via_root {
            return Err(Error::Config(format!(
                "postgres: table {} is partitioned and publication {name} publishes its rows \
                 under the partitions' names; run ALTER PUBLICATION {} SET \
                 (publish_via_partition_root = true) and restart the connector",
                t.id,
                quote_ident(name)
            )));
        }
    }
    for t in tables {
        // The table itself, a schema or all tables: `pg_publication_tables` alone
        // lists a published partitioned table under its partitions' names.
        let has = client
            .query_opt(
                "SELECT 1 FROM pg_publication p WHERE p.oid = $1 AND (p.puballtables \
                 OR EXISTS (SELECT 1 FROM pg_publication_rel r \
                            WHERE r.prpubid = p.oid AND r.prrelid = $2) \
                 OR EXISTS (SELECT 1 FROM pg_publication_tables pt WHERE pt.pubname = p.pubname \
                            AND pt.schemaname = $3 AND pt.tablename = $4))",
                &[&pub_oid, &t.oid, &t.id.schema, &t.id.table],
            )
            .await
            .map_err(source_err("read publication"))?
            .is_some();
        if !has {
            client
                .batch_execute(&format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    quote_ident(name),
                    qualified(t)
                ))
                .await
                .map_err(source_err("extend publication"))?;
            info!(publication = %name, table = %t.id, "added the table to the publication");
        }
    }
    Ok(())
}

/// What the publication sends, by OID: every captured table must be among it under its
/// own name; the rest is returned (skipped while streaming).
async fn published(
    client: &tokio_postgres::Client,
    name: &str,
    tables: &[TableInfo],
) -> Result<HashSet<u32>, Error> {
    let rows = client
        .query(
            "SELECT c.oid, pt.schemaname::text, pt.tablename::text \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = $1",
            &[&name],
        )
        .await
        .map_err(source_err("read publication"))?;
    let mut sent: HashMap<u32, String> = rows
        .iter()
        .map(|r| {
            let (s, t): (String, String) = (r.get(1), r.get(2));
            (r.get(0), format!("{s}.{t}"))
        })
        .collect();
    for t in tables {
        if sent.remove(&t.oid).is_none() {
            return Err(Error::Config(format!(
                "postgres: publication {name} does not publish table {} under its own name \
                 (is it a partition? its changes would arrive under the partitioned table's \
                 name: capture that table instead)",
                t.id
            )));
        }
    }
    if !sent.is_empty() {
        let mut names: Vec<&String> = sent.values().collect();
        names.sort();
        info!(publication = %name, tables = ?names, "the publication also publishes tables that are not captured: their changes are skipped");
    }
    Ok(sent.into_keys().collect())
}

/// A replication slot as `pg_replication_slots` shows it.
pub(super) struct Slot {
    /// The walsender using it.
    pub active_pid: Option<i32>,
    /// `lost`: invalidated (it fell behind `max_slot_wal_keep_size`); its WAL is gone.
    pub wal_status: Option<String>,
}

/// The slot, if it exists. An invalidated slot is refused: streaming from it is
/// impossible, and only dropping it (and copying again) gets past that.
pub(super) async fn slot(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<Slot>, Error> {
    let row = client
        .query_opt(
            "SELECT active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(source_err("look up slot"))?;
    let Some(row) = row else { return Ok(None) };
    let s = Slot {
        active_pid: row.get(0),
        wal_status: row.get(1),
    };
    if s.wal_status.as_deref() == Some("lost") {
        return Err(Error::Config(format!(
            "postgres: replication slot {slot} was invalidated (wal_status lost: it fell \
             behind max_slot_wal_keep_size and the WAL it needed is gone); run SELECT \
             pg_drop_replication_slot('{slot}') and restart the connector, which then copies \
             the tables again (and consider a larger max_slot_wal_keep_size)"
        )));
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_postgres_refuses_are_refused_up_front() {
        assert!(validate_slot_name("sluice_cdc_1").is_ok());
        for bad in ["sluice_CDC", "", "a-b", "a.b", "ä", &"a".repeat(64)] {
            let e = validate_slot_name(bad).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{bad:?}");
            assert!(e.to_string().contains("--slot"), "{e}");
        }
    }
}
