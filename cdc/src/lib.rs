//! Change data capture from Postgres and MariaDB into compacted topics.
//!
//! A source (logical replication from Postgres, the row-based binlog from MariaDB)
//! produces [`change::SourceEvent`]s: snapshot rows, whole committed transactions and
//! heartbeats. The [`runner`] writes them to Sluice through a [`sink::Sink`]: one
//! compacted topic per table, keyed by primary key, a Debezium-shaped JSON value
//! ([`envelope`]), every record carrying its source position (`sluice.pos`) and every
//! transaction its boundary headers (`sluice.txn`, `sluice.txn.end`), so a Table applies
//! it whole. The position a source may confirm to its database comes from the sans-IO
//! [`position::Tracker`]: only what the broker acknowledged with acks=all.
//! A restarted connector reads each partition's last position back and skips what is
//! already there ([`position::Resume`]), which makes the feed effectively-once.

pub mod change;
pub mod connector;
pub mod envelope;
pub mod health;
pub mod incremental;
pub mod mysql;
pub mod position;
pub mod runner;
pub mod sink;
pub mod spill;
pub mod status;

#[cfg(feature = "postgres")]
pub mod postgres;

pub use change::{Op, RowChange, SourceEvent, TableId, Transaction};

/// A connection string fit for a log line or an error: the password of a URL
/// (`scheme://user:password@host`) or of a `password=...` pair replaced by `***`.
pub fn redact_dsn(dsn: &str) -> String {
    if let Some((scheme, rest)) = dsn.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}{tail}");
            }
        }
        return dsn.to_string();
    }
    dsn.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing to Sluice failed.
    #[error("sluice: {0}")]
    Sluice(#[from] sluice_client::Error),
    /// The source database failed or sent something the connector cannot carry.
    #[error("{0}")]
    Source(String),
    /// The source is not set up for capture (with what to do about it).
    #[error("{0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redacted_dsn_keeps_everything_but_the_password() {
        assert_eq!(
            super::redact_dsn("postgres://app:s3cr@t:x@db.example:5432/app?sslmode=require"),
            "postgres://app:***@db.example:5432/app?sslmode=require"
        );
        assert_eq!(
            super::redact_dsn("mysql://root@127.0.0.1:3306/shop"),
            "mysql://root@127.0.0.1:3306/shop"
        );
        assert_eq!(
            super::redact_dsn("host=db user=app password=hunter2 dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
    }
}
