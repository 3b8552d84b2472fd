//! The Sluice broker.
//!
//! - [`log`]: partition storage: segmented logs, mmapped indexes, recovery, retention.
//!   No networking and no knowledge of replication.
//! - `ratelimit`: `LogLimiter`, one line per interval for log lines that can repeat in a loop.

pub mod alloc;
pub mod group;
mod kafka;

/// The broker's unit tests run under the allocator the `sluice` binary uses.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;
pub mod log;
pub(crate) mod ratelimit;
pub mod replica;
pub mod server;
