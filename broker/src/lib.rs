//! The Sluice broker.
//!
//! - [`log`]: partition storage: segmented logs, mmapped indexes, recovery, retention.
//!   No networking and no knowledge of replication.

pub mod log;
pub mod replica;
pub mod server;
