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
pub mod envelope;
pub mod mysql;
pub mod position;
pub mod runner;
pub mod sink;

#[cfg(feature = "postgres")]
pub mod postgres;

pub use change::{Op, RowChange, SourceEvent, TableId, Transaction};

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
