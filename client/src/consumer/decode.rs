//! Turning one partition's fetched bytes into [`ConsumerRecord`]s: the consumer's
//! per-batch and per-record cost on replay (docs/performance.md, "Native consumer
//! replay (issue 21)").
//!
//! Keys and values are slices of the fetched `Bytes` (no copy of the record bytes);
//! records go straight into the caller's buffer (no `Vec<Record>` per batch); the CRC
//! of each batch is read only with `check.crcs` on.

use bytes::Bytes;
use sluice_proto::batch::{BatchError, Batches};
use sluice_proto::TimestampType;

use super::ConsumerRecord;

/// Decodes `records` (the batches one fetch returned for `topic`/`partition`) into
/// `out`, skipping records below `from` (a fetch starts at a batch's base offset), and
/// returns the offset after the last batch seen (at least `from`), control batches
/// included. With `check_crcs` off a batch's CRC is not read: a batch whose bytes
/// changed since its producer computed the CRC is returned as it is, unless the change
/// breaks its structure (lengths, varints), which is always an error.
pub fn decode_fetched(
    topic: &str,
    partition: u32,
    records: Bytes,
    from: u64,
    check_crcs: bool,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64, BatchError> {
    let mut next = from;
    for batch in Batches::check_crc(records, check_crcs) {
        let batch = batch?;
        let batch_next = batch.next_offset().max(0) as u64;
        if batch.is_control() || batch_next <= next {
            next = next.max(batch_next);
            continue;
        }
        let base = batch.base_offset() as u64;
        let log_append = batch.timestamp_type() == TimestampType::LogAppendTime;
        let (base_ts, max_ts) = (batch.base_timestamp(), batch.max_timestamp());
        out.reserve(batch.record_count().max(0) as usize);
        let floor = next;
        batch.for_each_record(|r| {
            let offset = base + r.offset_delta as u64;
            if offset < floor {
                return;
            }
            out.push(ConsumerRecord {
                topic: topic.to_owned(),
                partition,
                offset,
                timestamp: if log_append {
                    max_ts
                } else {
                    base_ts + r.timestamp_delta
                },
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        })?;
        next = next.max(batch_next);
    }
    Ok(next)
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
