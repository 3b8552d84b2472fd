//! Splitting batches that exceed the topic's `max.message.bytes`, as Kafka's producer
//! does. A leader refuses such a batch whole (MESSAGE_TOO_LARGE) before appending any
//! of it, so its records are re-encoded into smaller pieces that go first in the
//! partition's queue, in order, and take over its sequence range (see
//! `PartQueue::next_sequence`). Pieces that are refused again are split again; a record
//! refused alone fails alone. The partition remembers the size that got through
//! (`PartQueue::batch_bytes_max`): later batches are built that small, and batches
//! built before it was learned are split here before they are sent.
//!
//! Called by the sender task, outside the accumulator lock except for short looks.

use sluice_proto::{BatchError, Compression, ErrorCode, RecordBatch};
use tracing::debug;

use super::{
    encode, record_bytes, Closed, Inner, Open, PartKey, Update, BATCH_HEADER_ESTIMATE_BYTES,
};
use crate::Error;

/// A batch refused with MESSAGE_TOO_LARGE: split in halves (or down to the size this
/// partition already learned), sent again piece by piece, recursively; a record that is
/// alone and still too large fails by itself. The leader checks the size before
/// anything is appended, so the batch's sequence range can be handed to the pieces.
pub(super) fn too_large(inner: &Inner, key: &PartKey, c: Closed, e: Error) -> Update {
    let sequences = c.base_sequence.map(|first| (first, c.records));
    if c.records == 1 {
        let error = record_too_large(key, &c, &e);
        inner.finish(&c, Err(error.clone()));
        return Update::Refused {
            sequences,
            pieces: Vec::new(),
            batch_bytes_max: None,
            failed: Some(error),
        };
    }
    let learned = inner
        .acc
        .lock()
        .part(&key.0, key.1)
        .and_then(|q| q.batch_bytes_max);
    // Halves: a piece takes up to half the records' bytes plus half an average record,
    // so n equal records split n/2 + n/2 rather than leaving a small third piece; no
    // piece can take all the records, so the recursion ends.
    let payload = c.bytes.saturating_sub(BATCH_HEADER_ESTIMATE_BYTES);
    let half =
        BATCH_HEADER_ESTIMATE_BYTES + payload.div_ceil(2) + payload / (2 * c.records as usize);
    let bytes_max = half.min(learned.unwrap_or(usize::MAX));
    match split(&c, bytes_max, inner.config.compression) {
        Ok(pieces) => {
            debug!(topic = %key.0, partition = key.1, records = c.records, bytes = c.data.len(),
                pieces = pieces.len(), "splitting a batch refused as too large");
            Update::Refused {
                sequences,
                pieces,
                batch_bytes_max: Some(bytes_max),
                failed: None,
            }
        }
        Err(split_error) => {
            debug!(error = %split_error, "cannot split a batch refused as too large");
            inner.finish(&c, Err(e.clone()));
            Update::Refused {
                sequences,
                pieces: Vec::new(),
                batch_bytes_max: None,
                failed: Some(e),
            }
        }
    }
}

/// Splits a batch built before its partition learned `bytes_max` (it grew while an
/// earlier batch was in flight), so that it is not sent only to be refused. An error
/// when it could not be encoded or split; its records have then failed with it.
pub(super) fn split_unsent(
    inner: &Inner,
    open: Open,
    bytes_max: usize,
) -> Result<Vec<Open>, Error> {
    let compression = inner.config.compression;
    let c = match encode(open, None, compression) {
        Ok(c) => c,
        Err(failed) => {
            let (c, e) = *failed;
            inner.finish(&c, Err(e.clone()));
            return Err(e);
        }
    };
    match split(&c, bytes_max, compression) {
        Ok(pieces) => Ok(pieces),
        Err(e) => {
            let error = Error::Invalid(format!(
                "cannot split a batch of {} bytes: {e}",
                c.data.len()
            ));
            inner.finish(&c, Err(error.clone()));
            Err(error)
        }
    }
}

/// Re-encodes the records of a batch the leader refused as too large into pieces of at
/// most `bytes_max` estimated bytes (a record larger than that forms a piece alone), in
/// order, without sequence numbers (they get them when sent). The pieces share the
/// batch's completion, its creation time (the delivery timeout still counts from
/// `send`) and, between them, exactly its share of `Inner::buffered`.
fn split(c: &Closed, bytes_max: usize, compression: Compression) -> Result<Vec<Open>, BatchError> {
    let batch = RecordBatch::from_bytes(c.data.clone())?;
    let base_timestamp = batch.base_timestamp();
    let mut pieces: Vec<Open> = Vec::new();
    for (i, r) in batch.records()?.iter().enumerate() {
        let (key, value) = (r.key.as_deref(), r.value.as_deref());
        let size = record_bytes(key, value, &r.headers);
        if pieces
            .last()
            .is_none_or(|p| p.records > 0 && p.bytes + size > bytes_max)
        {
            let first_index = c.first_index + i as u32;
            let shared = c.shared.clone();
            pieces.push(Open::new(
                compression,
                bytes_max,
                shared,
                first_index,
                c.created,
            ));
        }
        let piece = pieces.last_mut().expect("pushed");
        piece.append(base_timestamp + r.timestamp_delta, key, value, &r.headers);
    }
    let records: u32 = pieces.iter().map(|p| p.records).sum();
    if records != c.records {
        return Err(BatchError::BadRecordCount {
            declared: c.records as i32,
            bytes: c.data.len(),
        });
    }
    debug_assert_eq!(pieces.iter().map(|p| p.buffered).sum::<usize>(), c.buffered);
    Ok(pieces)
}

/// The error for a record refused on its own as larger than the topic allows: it
/// names the record's size; the leader's message names the batch's and the limit.
fn record_too_large(key: &PartKey, c: &Closed, leader: &Error) -> Error {
    let record = RecordBatch::from_bytes(c.data.clone())
        .and_then(|b| b.records())
        .ok()
        .and_then(|r| r.into_iter().next())
        .map_or(c.data.len(), |r| {
            r.key.map_or(0, |k| k.len()) + r.value.map_or(0, |v| v.len())
        });
    let message = match leader {
        Error::Broker { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Error::Broker {
        code: ErrorCode::MessageTooLarge,
        message: format!(
            "a record of {record} bytes (key and value) is too large for {}-{} even alone: {message}",
            key.0, key.1
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::producer::BatchShared;

    fn batch(values: &[usize], first_index: u32) -> Closed {
        let shared = Arc::new(BatchShared::default());
        let mut open = Open::new(Compression::Lz4, 0, shared, first_index, Instant::now());
        for (i, &len) in values.iter().enumerate() {
            let value = vec![b'a' + i as u8; len];
            open.append(1000 + i as i64, Some(b"k"), Some(&value), &[]);
        }
        encode(open, Some(7), Compression::Lz4)
            .map_err(|f| f.1)
            .unwrap()
    }

    fn contents(p: Open) -> Vec<(i64, usize, u8)> {
        let b = p.builder.build().unwrap();
        assert_eq!(b.base_sequence(), -1, "sequences are given when sent");
        let base = b.base_timestamp();
        let records = b.records().unwrap();
        records
            .into_iter()
            .map(|r| {
                let v = r.value.unwrap();
                (base + r.timestamp_delta, v.len(), v[0])
            })
            .collect()
    }

    #[test]
    fn pieces_keep_order_timestamps_indexes_and_the_batchs_share_of_the_buffer() {
        let c = batch(&[100, 100, 100, 100, 100], 3);
        let pieces = split(&c, 61 + 2 * 125 + 10, Compression::Lz4).unwrap();
        let shape: Vec<_> = pieces.iter().map(|p| (p.first_index, p.records)).collect();
        assert_eq!(shape, vec![(3, 2), (5, 2), (7, 1)]);
        assert_eq!(pieces.iter().map(|p| p.buffered).sum::<usize>(), c.buffered);
        assert!(pieces.iter().all(|p| p.created == c.created));
        let all: Vec<_> = pieces.into_iter().flat_map(contents).collect();
        let want: Vec<_> = (0..5).map(|i| (1000 + i, 100, b'a' + i as u8)).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn a_record_larger_than_the_bound_forms_a_piece_alone() {
        let c = batch(&[10, 5000, 10, 10], 0);
        let pieces = split(&c, 200, Compression::Lz4).unwrap();
        let shape: Vec<_> = pieces.iter().map(|p| (p.first_index, p.records)).collect();
        assert_eq!(shape, vec![(0, 1), (1, 1), (2, 2)]);
    }

    #[test]
    fn a_batch_that_is_not_one_is_an_error() {
        let mut c = batch(&[10, 10], 0);
        c.data = bytes::Bytes::from_static(b"garbage");
        assert!(split(&c, 100, Compression::None).is_err());
    }
}
