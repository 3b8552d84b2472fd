//! Partition storage: one [`Log`] per partition, a [`LogManager`] per data directory.
//!
//! Data flow: the produce path validates a batch (in `proto`) and calls
//! [`Log::append_as_leader`], which stamps the base offset and leader epoch and writes
//! the batch bytes as they came; followers call [`Log::append_as_follower`] with the
//! leader's bytes. Fetches call [`Log::read`], which returns whole batches as `Bytes`
//! (sealed segments straight from an mmap). Nothing here knows of networking or
//! replication; the high watermark is an argument wherever it matters.
//!
//! On-disk layout of `DATA_DIR/`:
//!
//! ```text
//! recovery-point-offset-checkpoint   per-log offset known flushed (write-fsync-rename)
//! .clean-shutdown                    present only between a clean close and the next open
//! <topic>-<partition>/
//!     00000000000000000000.log       batches, back to back, exactly as on the wire
//!     00000000000000000000.index     sparse offset index, mmapped (derived data)
//!     00000000000000000000.timeindex sparse time index, mmapped (derived data)
//!     leader-epoch-checkpoint        epoch -> start offset
//!     log-start-offset               written when the prefix is truncated
//!     partition.metadata             the topic id this directory belongs to (topic_id.rs)
//! <topic>-<partition>.<nanos>.deleted  a deleted log whose files are being removed
//! ```

mod checkpoint;
mod cleaner;
mod epoch;
mod error;
mod index;
mod io_util;
#[allow(clippy::module_inception)]
mod log;
mod manager;
mod offset_map;
mod segment;
mod topic_id;

pub use cleaner::{Cleaner, CleanerConfig, CleanerTotals, PartitionSource, Throttle};
pub use epoch::{EpochEntries, EpochEntry};
pub use error::LogError;
pub use log::{
    AppendInfo, CleanOptions, CleanStats, CompactionView, CrashAt, Log, OpenStats, ReadResult,
};
pub use manager::LogManager;
pub use sluice_proto::topic_config::{CleanupPolicy, ConfigError, LogConfig, CONFIG_NAMES};
pub use topic_id::TopicId;

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod io_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
