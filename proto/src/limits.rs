//! Size limits, in one place so that every decoder and buffer agrees on them.
//! Each is checked where bytes from outside the process are read.

/// Bytes of a record batch header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;

/// `base_offset` (8) + `batch_length` (4): the bytes not counted by `batch_length`.
pub const LOG_OVERHEAD_BYTES: usize = 12;

/// Largest batch (header included) the codec accepts. Kafka's `message.max.bytes` is
/// far below this; the broker's per-topic `max.message.bytes` is checked separately.
pub const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Default bound on the inflated size of one compressed batch: past it the batch is
/// treated as a decompression bomb and rejected.
pub const UNCOMPRESSED_BATCH_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The smallest encoded record: length, attributes, timestamp delta, offset delta,
/// key length, value length and header count are one byte each at minimum. Used to
/// reject a record count that cannot fit in the bytes that carry it before allocating.
pub const RECORD_BYTES_MIN: usize = 7;

/// Largest gRPC message between Sluice processes on the control and admin paths
/// (LeaderAndIsr, metadata, describe answers): a full state for a broker with tens of
/// thousands of partitions fits, where tonic's 4 MiB default does not.
pub const CONTROL_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The most record bytes one fetch answer carries, whatever the request asks: well under
/// the 64 MiB the data path's transport takes, so a consumer asking more on a backlog
/// gets a smaller answer instead of the same transport error on every retry.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 48 * 1024 * 1024;

const _: () = assert!(BATCH_HEADER_BYTES > LOG_OVERHEAD_BYTES);
const _: () = assert!(FETCH_RESPONSE_BYTES_MAX < 64 * 1024 * 1024);
const _: () = assert!(BATCH_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(UNCOMPRESSED_BATCH_BYTES_MAX <= i32::MAX as usize);

/// Idempotent producer ids whose state one partition keeps. A new id past it evicts the
/// id idle longest (its retries are then taken as a new producer's), so a client that
/// makes a new producer per message cannot grow a partition's memory without bound.
pub const PRODUCER_IDS_PER_PARTITION_MAX: usize = 10_000;

/// Default `producer.id.expiration.ms` (Kafka's): a producer id idle this long is
/// forgotten by every partition.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;

const _: () = assert!(PRODUCER_IDS_PER_PARTITION_MAX > 0);

/// Members one consumer group may have (Kafka's `group.consumer.max.size`): a join past
/// it is refused with GROUP_MAX_SIZE_REACHED.
pub const GROUP_MEMBERS_MAX: usize = 1_000;

/// Consumer groups one broker coordinates: a request that would create one more is
/// refused with GROUP_MAX_SIZE_REACHED, so random group ids cannot grow its memory
/// without bound.
pub const GROUPS_PER_BROKER_MAX: usize = 100_000;

/// Longest subscription pattern, in bytes; a longer one is INVALID_REQUEST.
pub const GROUP_REGEX_BYTES_MAX: usize = 1_024;

/// Compiled size one subscription pattern may take (the `regex` crate's size limit).
pub const GROUP_REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;

/// Compiled patterns a group caches beyond those its members use.
pub const GROUP_REGEX_CACHE_MAX: usize = 64;

/// Groups that get their own `{group}` label on per-group metrics (those with the most
/// members, or the most lag); the rest are summed under `group="_other"`.
pub const GROUP_METRIC_LABELS_MAX: usize = 100;

const _: () = assert!(GROUP_MEMBERS_MAX > 0 && GROUPS_PER_BROKER_MAX > 0);
const _: () = assert!(GROUP_REGEX_CACHE_MAX > 0 && GROUP_METRIC_LABELS_MAX > 0);
