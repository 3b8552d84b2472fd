//! Table: a key → value cache materialized from (compacted) topics, for application
//! processes that keep millions of rows in memory and must follow every change live.
//!
//! Data flow: one fetch task per partition (`fetch.rs`) reads large fetches, decodes
//! the batches outside any lock and hands runs of records to the set's single applier
//! task (`applier.rs`). The applier feeds them to the sans-IO transaction assembler
//! (`txn.rs`), which releases records in apply units (a run of plain records, or a whole
//! transaction across partitions and topics); each unit is applied to the sharded
//! arena store (`store.rs`) holding the write locks of just the shards it touches, and
//! the positions advance under those same locks. Readers ([`RawTable`], [`Table`])
//! take one shard read lock for a `get`, all of them (in index order) for a snapshot.
//!
//! Invariants:
//! - A reader never sees part of an apply unit: a unit's rows and positions change
//!   while every shard it touches is write-locked, and consistent reads lock every
//!   shard of every topic in one global order (topic index, then shard index). A unit
//!   larger than `large_unit_records` is written in chunks behind per-shard undo
//!   overlays (`undo.rs`) that readers see through, and lifted with the positions in one
//!   such lock round.
//! - `position()[p]` is the next offset of partition `p` not yet applied; it never
//!   passes a held transaction record.
//! - Null values (tombstones) remove keys; an empty value is a real value.
//! - A partition's source position (`source.rs`) is its last applied `sluice.pos`; it
//!   moves with the rows, never ahead of a held transaction. Heartbeats
//!   ([`HEARTBEAT_HEADER`]) move it and are never rows.
//!
//! Headers (see docs/table.md): [`TXN_HEADER`], [`TXN_END_HEADER`], [`POS_HEADER`],
//! [`HEARTBEAT_HEADER`].
//!
//! Callers: application code and `sluice table dump|serve` (src/cli/table.rs), from
//! any thread; the tasks run on the caller's tokio runtime.

mod applier;
mod fetch;
mod open;
mod raw;
mod row_image;
mod snapshot;
mod source;
mod store;
mod txn;
mod typed;
mod undo;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

pub use raw::{RawTable, TableSet};
pub use typed::Table;

/// Header naming the source transaction a record belongs to (opaque bytes; UTF-8 from
/// CDC). Records carrying it are held until the whole transaction can be applied.
pub const TXN_HEADER: &str = "sluice.txn";
/// Header on the last record of a transaction in its partition; its value lists every
/// `topic:partition` piece of the transaction, comma-separated.
pub const TXN_END_HEADER: &str = "sluice.txn.end";
/// Header on every record a CDC connector writes with `--value-format row`
/// (`sluice.format: row`): the value is the row itself, a delete only its tombstone.
/// A CDC record (one with `sluice.pos`) without it holds Debezium's envelope; see
/// [`TableConfig::row_images`].
pub const FORMAT_HEADER: &str = "sluice.format";
/// The source position of a record (`sluice.pos`, [`RecordPos`]) and the heartbeat
/// marker (`sluice.heartbeat`: not a row, only a position), re-exported from the
/// shared vocabulary in `sluice_proto::source_pos`. See [`RawTable::source_position`].
pub use sluice_proto::source_pos::{
    PosRequest, RecordPos, SourcePos, HEARTBEAT_HEADER, HEARTBEAT_KEY, POS_HEADER, TRUNCATE_HEADER,
};

/// How a Table reads and stores. Every field has a default suited to 1–3 M rows.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Bytes fetched but not yet applied, across all partitions of the set: the
    /// bound on memory the fetch pipeline adds on top of the table.
    pub fetch_max_bytes: u32,
    /// Bytes one partition fetch may return while catching up. Large, so bootstrap
    /// needs few round trips; `fetch_max_bytes / partition_max_bytes` such fetches
    /// run at once. Caught-up partitions long-poll with 256 KiB fetches, so a set
    /// can follow `fetch_max_bytes / 256 KiB` partitions (256 by default) live.
    pub partition_max_bytes: u32,
    /// How long the broker holds a fetch with nothing new (long poll) while following.
    pub fetch_max_wait: Duration,
    /// Lock shards per topic (by key hash); more shards, less contention between the
    /// applier and readers. Rounded up to a power of two, at most 1024.
    pub shards: usize,
    /// How often a table opened with a snapshot directory writes its snapshot (and
    /// always on close). `None`: only on close.
    pub snapshot_interval: Option<Duration>,
    /// Capacity of the change broadcast; a subscriber that falls further behind gets
    /// `RecvError::Lagged`.
    pub changes_capacity: usize,
    /// Records applied per lock round for runs of plain (non-transactional) records:
    /// bounds how long a reader can wait behind the applier. Transactions up to
    /// `large_unit_records` are applied whole in one lock round; larger ones in chunks
    /// of this size behind a fence.
    pub apply_chunk_records: usize,
    /// A transaction with more keyed records than this is applied in chunks of
    /// `apply_chunk_records`, each under only its own shards' write locks, behind a
    /// fence: until its last chunk, reads see every touched key's value from before it
    /// (an overlay costing about the touched rows' key and old value plus ~10 B each),
    /// then one short lock round makes the whole transaction visible with its
    /// positions. So a million-row UPDATE holds a reader for about one chunk, not for
    /// the whole apply. A value below `apply_chunk_records` counts as that (a unit
    /// of one chunk gains nothing from a fence). See docs/table.md.
    pub large_unit_records: usize,
    /// A transaction piece listed in an end marker but never seen in its partition
    /// (compaction removed every record of it, or it is late) is given up on after its
    /// partition has been caught up for this long — only for transactions without
    /// source positions: a positioned one waits until the partition delivers a record
    /// after it, however long. See docs/table.md.
    pub missing_piece_wait: Duration,
    /// Expected rows, to pre-size the store; `None`: estimated from the topic's size.
    pub expected_rows: Option<usize>,
    /// Store and return the row image of CDC records whatever the topic's
    /// `--value-format`: the `after` object of an envelope (a delete's envelope, whose
    /// `after` is null, removes the key), the value of a row-format record as it is.
    /// `get`, iteration, snapshots and `subscribe()` then all see rows, so application
    /// code does not depend on the format, and an envelope topic costs the memory of
    /// its rows only. Records without `sluice.pos` (not written by a connector), and
    /// values that are not envelopes, are kept as they are. `false` (the default):
    /// values as the topic holds them. A local snapshot is kept apart per setting
    /// (`<topic>.rows.snapshot`).
    pub row_images: bool,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            fetch_max_bytes: 64 << 20,
            partition_max_bytes: 16 << 20,
            fetch_max_wait: Duration::from_millis(500),
            shards: 64,
            snapshot_interval: Some(Duration::from_secs(600)),
            changes_capacity: 1024,
            apply_chunk_records: 1024,
            large_unit_records: 4 * 1024,
            missing_piece_wait: Duration::from_secs(2),
            expected_rows: None,
            row_images: false,
        }
    }
}

impl TableConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::Invalid(format!("table config: {m}")));
        if self.partition_max_bytes < 1024 || self.fetch_max_bytes < self.partition_max_bytes {
            return bad("need 1 KiB <= partition_max_bytes <= fetch_max_bytes");
        }
        if self.shards == 0 || self.shards > 1024 {
            return bad("shards must be 1..=1024");
        }
        if self.changes_capacity == 0 || self.apply_chunk_records == 0 {
            return bad("changes_capacity and apply_chunk_records must be > 0");
        }
        Ok(())
    }
}

/// Size and progress of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStats {
    pub rows: usize,
    /// Sum of live key lengths.
    pub key_bytes: usize,
    /// Sum of live value lengths.
    pub value_bytes: usize,
    /// What the store holds: arena capacity plus index tables.
    pub memory_bytes: usize,
    /// `memory_bytes / rows` (0 when empty).
    pub bytes_per_row: f64,
    /// Milliseconds from open to ready; `None` while bootstrapping.
    pub bootstrap_ms: Option<u64>,
    /// Rows loaded from a local snapshot at open (`None`: bootstrapped from the log).
    pub snapshot_rows: Option<usize>,
    /// Longest the applier held shard write locks in one lock round since ready (µs):
    /// a unit, a chunk of a large one, or a large one's flip; the longest a `get` can
    /// have waited on the applier. Tune with `apply_chunk_records`.
    pub apply_lock_max_us: u64,
    /// `sluice.pos` headers that did not parse since open: ignored for the source
    /// position (the records themselves are applied). Nonzero means a writer is wrong.
    pub malformed_positions: u64,
}

/// A consistent copy of a table: whole transactions only, with the positions the rows
/// reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSnapshot {
    pub topic: String,
    pub ready: bool,
    pub position: BTreeMap<u32, u64>,
    /// The source position the rows reflect ([`RawTable::source_position`]).
    pub source_position: Option<SourcePos>,
    pub rows: Vec<(Bytes, Bytes)>,
}

/// One key's change. `old`: the value before (only filled while someone subscribes);
/// `new`: `None` when the key was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Bytes,
    pub old: Option<Bytes>,
    pub new: Option<Bytes>,
}

/// Every change of one applied unit (a transaction or a run of plain records) to one
/// topic, and the topic's positions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    pub topic: String,
    pub changes: Vec<Change>,
    pub position: BTreeMap<u32, u64>,
}
