//! Operating a MariaDB/MySQL connector from outside it: the binlog's end and its files
//! (lag in bytes for `sluice cdc status --dsn`), whether a connector runs (its fence, a
//! user lock), and `sluice cdc drop`.
//!
//! The connector makes nothing that outlives it in the server: no slot (the binlog's
//! retention is the server's `binlog_expire_logs_seconds`, not held by a reader), and
//! its fence is a user lock that goes with its connection. So a drop only checks that
//! no connector runs, and says there was nothing to remove.

use mysql_async::prelude::Queryable;
use mysql_async::Row as MyRow;
use sluice_proto::source_pos::BinlogPos;

use super::{binlog_end, connect, my_err};
use crate::Error;

/// The user lock a connector for `prefix` holds for its whole run.
pub fn fence_name(prefix: &str) -> String {
    format!("sluice_cdc.{prefix}")
}

/// What `sluice cdc status --dsn` reads from MariaDB.
#[derive(Debug, Clone)]
pub struct MyStatus {
    /// The connection holding the fence: a running connector.
    pub fence_connection: Option<i64>,
    /// `SHOW MASTER STATUS`.
    pub binlog_end: BinlogPos,
    /// `@@gtid_binlog_pos` (empty on MySQL or before any GTID).
    pub gtid_binlog_pos: String,
    /// `SHOW BINARY LOGS`: every file and its size, oldest first.
    pub binlogs: Vec<(String, u64)>,
    /// `db.table` → `information_schema.TABLES.TABLE_ROWS` (an estimate for InnoDB).
    pub estimated_rows: Vec<(String, u64)>,
}

impl MyStatus {
    /// Binlog bytes written after `from`: the rest of its file, the files after it, and
    /// the current file up to its end. `None` when its file is no longer on the server.
    pub fn lag_bytes(&self, from: &BinlogPos) -> Option<u64> {
        let end = &self.binlog_end;
        if from.file == end.file {
            return Some(end.offset.saturating_sub(from.offset));
        }
        let i = self.binlogs.iter().position(|(f, _)| *f == from.file)?;
        let mut bytes = self.binlogs[i].1.saturating_sub(from.offset);
        for (f, size) in &self.binlogs[i + 1..] {
            if *f == end.file {
                return Some(bytes + end.offset);
            }
            bytes += size;
        }
        None
    }
}

async fn fence_connection(conn: &mut mysql_async::Conn, name: &str) -> Result<Option<i64>, Error> {
    let holder: Option<Option<i64>> = conn
        .exec_first("SELECT IS_USED_LOCK(?)", (name,))
        .await
        .map_err(my_err("IS_USED_LOCK"))?;
    Ok(holder.flatten())
}

/// The binlog, the fence and the tables' row estimates.
pub async fn status(dsn: &str, prefix: &str, tables: &[crate::TableId]) -> Result<MyStatus, Error> {
    let mut conn = connect(dsn).await?;
    let fence_connection = fence_connection(&mut conn, &fence_name(prefix)).await?;
    let binlog_end = binlog_end(&mut conn).await?;
    // MySQL has no @@gtid_binlog_pos.
    let gtid_binlog_pos = conn
        .query_first::<Option<String>, _>("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .ok()
        .flatten()
        .flatten()
        .unwrap_or_default();
    let rows: Vec<MyRow> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(my_err("SHOW BINARY LOGS"))?;
    let binlogs = rows
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect();
    let mut estimated_rows = Vec::new();
    for t in tables {
        let n: Option<Option<u64>> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.schema, &t.table),
            )
            .await
            .map_err(my_err("estimate rows"))?;
        estimated_rows.push((t.to_string(), n.flatten().unwrap_or(0)));
    }
    Ok(MyStatus {
        fence_connection,
        binlog_end,
        gtid_binlog_pos,
        binlogs,
        estimated_rows,
    })
}

/// Refused (an [`Error::Config`]) while a connector for `prefix` runs; otherwise there
/// is nothing in the server to remove.
pub async fn drop_connector(dsn: &str, prefix: &str) -> Result<(), Error> {
    let mut conn = connect(dsn).await?;
    let name = fence_name(prefix);
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 0)", (&name,))
        .await
        .map_err(my_err("GET_LOCK"))?;
    if got.flatten() != Some(1) {
        let holder = fence_connection(&mut conn, &name).await?;
        return Err(Error::Config(format!(
            "mysql: a connector for topic prefix {prefix} is running (it holds lock {name:?}, \
             connection {}); stop it first, then run cdc drop again",
            holder.map_or("?".to_string(), |c| c.to_string())
        )));
    }
    let _: Option<Option<i64>> = conn
        .exec_first("SELECT RELEASE_LOCK(?)", (&name,))
        .await
        .map_err(my_err("RELEASE_LOCK"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, offset: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            offset,
        }
    }

    #[test]
    fn lag_counts_the_rest_of_each_file_up_to_the_end() {
        let s = MyStatus {
            fence_connection: None,
            binlog_end: at("b.000003", 300),
            gtid_binlog_pos: String::new(),
            binlogs: vec![
                ("b.000001".into(), 1000),
                ("b.000002".into(), 500),
                ("b.000003".into(), 300),
            ],
            estimated_rows: vec![],
        };
        assert_eq!(s.lag_bytes(&at("b.000003", 100)), Some(200));
        assert_eq!(s.lag_bytes(&at("b.000003", 300)), Some(0));
        assert_eq!(s.lag_bytes(&at("b.000002", 400)), Some(100 + 300));
        assert_eq!(s.lag_bytes(&at("b.000001", 900)), Some(100 + 500 + 300));
        // Purged: not computable.
        assert_eq!(s.lag_bytes(&at("b.000000", 4)), None);
    }
}
