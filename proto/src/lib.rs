//! Sluice's wire-level vocabulary, shared by every other crate and doing no I/O.
//!
//! - [`batch`]: the Kafka RecordBatch v2 (magic 2) codec. It is the unit of storage,
//!   replication and transfer; the broker stores the bytes a producer sent, after
//!   validating them and stamping the base offset and partition leader epoch.
//! - [`compression`]: the five codecs Kafka clients use, with a bound on inflated size.
//! - [`varint`]: Kafka's zig-zag varints.
//! - [`types`]: newtypes for offsets, epochs and broker ids.
//! - [`limits`]: every size limit in one place.
//! - [`source_pos`]: CDC source positions (the `sluice.pos` header).
//! - [`status`]: typed error codes on gRPC statuses (a broker that is not ready yet).
//! - [`digest`]: digests of control state for heartbeat reconciliation.

pub mod acl;
pub mod batch;
pub mod compression;
pub mod digest;
pub mod dynamic_config;
pub mod error;
pub mod limits;
pub mod source_pos;
pub mod status;
pub mod topic_config;
pub mod types;
pub mod varint;

pub use batch::{BatchBuilder, BatchError, Header, Record, RecordBatch, TimestampType};
pub use compression::Compression;
pub use error::ErrorCode;
pub use types::{BrokerId, LeaderEpoch, Offset, TopicPartition};

/// Generated gRPC types and services of package `sluice.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}
