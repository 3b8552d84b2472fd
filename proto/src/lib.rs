//! Sluice's wire-level vocabulary, shared by every other crate and doing no I/O.
//!
//! - [`batch`]: the Kafka RecordBatch v2 (magic 2) codec. It is the unit of storage,
//!   replication and transfer; the broker stores the bytes a producer sent, after
//!   validating them and stamping the base offset and partition leader epoch.
//! - [`compression`]: the five codecs Kafka clients use, with a bound on inflated size.
//! - [`varint`]: Kafka's zig-zag varints.
//! - [`types`]: newtypes for offsets, epochs and broker ids.
//! - [`limits`]: every size limit in one place.

pub mod batch;
pub mod compression;
pub mod limits;
pub mod types;
pub mod varint;

pub use batch::{BatchBuilder, BatchError, Header, Record, RecordBatch, TimestampType};
pub use compression::Compression;
pub use types::{BrokerId, LeaderEpoch, Offset, TopicPartition};
