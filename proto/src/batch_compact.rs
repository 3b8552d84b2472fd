//! What the log cleaner needs from a batch: the key of every record, and a copy of
//! the batch that keeps only some records (same offsets, codec, producer fields).
//!
//! Offsets never change under compaction: a rewritten batch keeps its base offset and
//! its last offset delta, so its offset range — and a producer's last sequence, which
//! idempotence depends on — stay as they were even when its last records went. Record
//! bytes are copied as they are, except when the batch gets a delete horizon.
//!
//! Delete horizon (Kafka's KIP-534): the first clean that keeps a tombstone stamps its
//! batch with "tombstones may go after time H" — attribute bit 6 set and the base
//! timestamp replaced by H. Every record's timestamp delta is rewritten against the new
//! base, so `base_timestamp + delta` still gives each record's own timestamp. A later
//! clean past H drops the tombstones. The horizon travels with the batch, so no side
//! file has to agree with the segments after a crash.

use super::*;

/// Attribute bit 6: the base timestamp is the batch's delete horizon (KIP-534).
pub const DELETE_HORIZON_BIT: u16 = 0x40;

/// One record as the cleaner sees it.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRecord<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    /// A null value: deletes the key once compacted.
    pub tombstone: bool,
}

/// What [`retain`] made of a batch.
#[derive(Debug)]
pub enum Retained {
    /// Every record stays and nothing needs stamping: copy the batch as it is.
    Unchanged,
    /// No record stays and the batch need not be kept.
    Dropped,
    Rewritten(RecordBatch),
}

impl RecordBatch {
    /// The delete horizon a cleaner stamped on this batch, if any.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & DELETE_HORIZON_BIT != 0).then(|| self.base_timestamp())
    }

    /// Calls `f` with every record's key, in offset order, without copying.
    pub fn for_each_key(&self, mut f: impl FnMut(KeyedRecord<'_>)) -> Result<(), BatchError> {
        let data = self.records_data(UNCOMPRESSED_BATCH_BYTES_MAX)?;
        self.walk(&data, false, |view| {
            f(KeyedRecord {
                offset_delta: view.offset_delta,
                key: view.key,
                tombstone: view.value.is_none(),
            });
            Ok(())
        })
    }
}

/// A copy of `batch` keeping the records `keep` accepts.
///
/// `horizon_ms`: stamped as the delete horizon when a tombstone stays and the batch has
/// none yet. `keep_empty`: when no record stays, keep the header alone (a producer's
/// last batch, so its sequence survives); its codec becomes none, as there is nothing
/// to compress. Control batches are never touched.
pub fn retain(
    batch: &RecordBatch,
    mut keep: impl FnMut(&KeyedRecord<'_>) -> bool,
    horizon_ms: Option<i64>,
    keep_empty: bool,
) -> Result<Retained, BatchError> {
    if batch.is_control() {
        return Ok(Retained::Unchanged);
    }
    let data = batch.records_data(UNCOMPRESSED_BATCH_BYTES_MAX)?;
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let (mut total, mut tombstone_kept) = (0usize, false);
    let mut pos = 0usize;
    batch.walk(&data, false, |view| {
        let end = pos + view.encoded_len;
        let rec = KeyedRecord {
            offset_delta: view.offset_delta,
            key: view.key,
            tombstone: view.value.is_none(),
        };
        if keep(&rec) {
            kept.push((pos, end));
            tombstone_kept |= rec.tombstone;
        }
        total += 1;
        pos = end;
        Ok(())
    })?;
    let stamp = horizon_ms.filter(|_| tombstone_kept && batch.delete_horizon_ms().is_none());
    if kept.len() == total && stamp.is_none() {
        return Ok(Retained::Unchanged);
    }
    if kept.is_empty() && !keep_empty {
        return Ok(Retained::Dropped);
    }
    let old_base = batch.base_timestamp();
    let new_base = stamp.unwrap_or(old_base);
    let mut records = Vec::with_capacity(data.len());
    for &(start, end) in &kept {
        let raw = &data[start..end];
        if new_base == old_base {
            records.extend_from_slice(raw);
        } else {
            rebase_record(raw, old_base, new_base, &mut records)?;
        }
    }
    let mut attrs = batch.attributes();
    if stamp.is_some() {
        attrs |= DELETE_HORIZON_BIT;
    }
    let codec = if kept.is_empty() {
        attrs &= !CODEC_MASK;
        Compression::None
    } else {
        batch.compression()?
    };
    let mut buf = batch.as_bytes()[..BATCH_HEADER_BYTES].to_vec();
    if codec == Compression::None {
        buf.extend_from_slice(&records);
    } else {
        codec.compress(&records, &mut buf)?;
    }
    let total_len = buf.len();
    buf[LENGTH_AT..LENGTH_AT + 4]
        .copy_from_slice(&((total_len - LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    buf[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&new_base.to_be_bytes());
    buf[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = compute_crc(&buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Retained::Rewritten(RecordBatch {
        buf: Bytes::from(buf),
    }))
}

/// A copy of `batch` with its records compressed with `codec` (Kafka's topic
/// `compression.type`): every header field stays, the codec bits, length and CRC
/// follow the new body. Control batches and batches already in `codec` are returned
/// as they are.
pub fn recompress(batch: &RecordBatch, codec: Compression) -> Result<RecordBatch, BatchError> {
    if batch.is_control() || batch.compression()? == codec {
        return Ok(batch.clone());
    }
    let records = batch.records_data(UNCOMPRESSED_BATCH_BYTES_MAX)?;
    let mut buf = batch.as_bytes()[..BATCH_HEADER_BYTES].to_vec();
    if codec == Compression::None {
        buf.extend_from_slice(&records);
    } else {
        codec.compress(&records, &mut buf)?;
    }
    let attrs = (batch.attributes() & !CODEC_MASK) | u16::from(codec.id());
    let total_len = buf.len();
    buf[LENGTH_AT..LENGTH_AT + 4]
        .copy_from_slice(&((total_len - LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    let crc = compute_crc(&buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(RecordBatch {
        buf: Bytes::from(buf),
    })
}

/// Re-encodes one record (length prefix included) with its timestamp delta taken from
/// `new_base` instead of `old_base`; everything after the delta is copied.
fn rebase_record(
    raw: &[u8],
    old_base: i64,
    new_base: i64,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let bad = |e: VarintError| BatchError::record(0, e.to_string());
    let mut pos = 0usize;
    varint::read_varint(raw, &mut pos).map_err(bad)?;
    let attrs_at = pos;
    pos += 1;
    let delta = varint::read_varlong(raw, &mut pos).map_err(bad)?;
    let rest = &raw[pos..];
    let new_delta = old_base.wrapping_add(delta).wrapping_sub(new_base);
    let body = 1 + varint::varlong_len(new_delta) + rest.len();
    varint::write_varint(out, body as i32);
    out.push(raw[attrs_at]);
    varint::write_varlong(out, new_delta);
    out.extend_from_slice(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(codec: Compression, records: &[(Option<&str>, Option<&str>)]) -> RecordBatch {
        let mut b = BatchBuilder::new(codec).producer(7, 1, 10);
        for (i, (k, v)) in records.iter().enumerate() {
            b.append(
                1000 + i as i64 * 10,
                k.map(str::as_bytes),
                v.map(str::as_bytes),
                &[],
            );
        }
        b.build().unwrap()
    }

    fn decoded(b: &RecordBatch) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
        b.validate(&ValidateOptions {
            from_producer: false,
            ..Default::default()
        })
        .unwrap();
        b.records()
            .unwrap()
            .into_iter()
            .map(|r| {
                let ts = b.base_timestamp() + r.timestamp_delta;
                (r.offset_delta as i64, ts, r.key, r.value)
            })
            .collect()
    }

    #[test]
    fn dropping_records_keeps_offsets_codec_producer_and_timestamps() {
        for codec in [Compression::None, Compression::Zstd, Compression::Lz4] {
            let b = batch(
                codec,
                &[
                    (Some("a"), Some("1")),
                    (Some("b"), Some("2")),
                    (Some("c"), Some("3")),
                ],
            );
            let Retained::Rewritten(r) = retain(&b, |r| r.key != Some(b"c"), None, false).unwrap()
            else {
                panic!("expected a rewrite");
            };
            assert_eq!(r.compression().unwrap(), codec);
            assert_eq!(
                (r.last_offset_delta(), r.producer_id(), r.base_sequence()),
                (2, 7, 10)
            );
            assert_eq!(r.record_count(), 2);
            let got = decoded(&r);
            assert_eq!(got.len(), 2);
            assert_eq!((got[0].0, got[0].1), (0, 1000));
            assert_eq!((got[1].0, got[1].1), (1, 1010));
        }
    }

    #[test]
    fn a_kept_tombstone_gets_a_horizon_and_record_timestamps_survive() {
        let b = batch(
            Compression::Gzip,
            &[(Some("a"), None), (Some("b"), Some("2"))],
        );
        let Retained::Rewritten(r) = retain(&b, |_| true, Some(99_000), false).unwrap() else {
            panic!("expected a rewrite");
        };
        assert_eq!(r.delete_horizon_ms(), Some(99_000));
        let got = decoded(&r);
        assert_eq!((got[0].1, got[1].1), (1000, 1010));
        assert_eq!(got[0].3, None);
        // Stamped once: a second pass with another horizon leaves it alone.
        assert!(matches!(
            retain(&r, |_| true, Some(500_000), false).unwrap(),
            Retained::Unchanged
        ));
    }

    #[test]
    fn an_emptied_batch_is_dropped_or_kept_as_a_bare_header() {
        let b = batch(Compression::Snappy, &[(Some("a"), Some("1"))]);
        assert!(matches!(
            retain(&b, |_| false, None, false).unwrap(),
            Retained::Dropped
        ));
        let Retained::Rewritten(r) = retain(&b, |_| false, None, true).unwrap() else {
            panic!("expected a bare header");
        };
        assert_eq!(
            (r.record_count(), r.last_offset_delta(), r.producer_id()),
            (0, 0, 7)
        );
        assert_eq!(r.compression().unwrap(), Compression::None);
        assert!(decoded(&r).is_empty());
    }

    #[test]
    fn for_each_key_sees_keys_and_tombstones() {
        let b = batch(
            Compression::None,
            &[(Some("a"), Some("1")), (None, Some("x")), (Some("b"), None)],
        );
        let mut seen = Vec::new();
        b.for_each_key(|r| seen.push((r.offset_delta, r.key.map(<[u8]>::to_vec), r.tombstone)))
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, Some(b"a".to_vec()), false),
                (1, None, false),
                (2, Some(b"b".to_vec()), true)
            ]
        );
    }

    #[test]
    fn recompress_keeps_every_field_and_changes_only_the_codec() {
        use crate::batch::{Header, ValidateOptions};
        let mut b = BatchBuilder::new(Compression::None)
            .producer(42, 3, 17)
            .transactional(true);
        for i in 0..5i64 {
            let key = format!("k{i}");
            let value = format!("v{i}").repeat(50);
            let header = Header {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            };
            b.append(
                1_000 + i,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[header],
            );
        }
        let plain = b.build().unwrap();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = recompress(&plain, codec).unwrap();
            assert_eq!(packed.compression().unwrap(), codec);
            packed.validate(&ValidateOptions::default()).unwrap();
            assert!(packed.size() < plain.size(), "{codec:?} compresses");
            assert_eq!(packed.records().unwrap(), plain.records().unwrap());
            assert_eq!(
                (
                    packed.producer_id(),
                    packed.producer_epoch(),
                    packed.base_sequence()
                ),
                (42, 3, 17)
            );
            assert!(packed.is_transactional());
            assert_eq!(packed.max_timestamp(), plain.max_timestamp());
            let back = recompress(&packed, Compression::None).unwrap();
            assert_eq!(
                back.as_bytes(),
                plain.as_bytes(),
                "{codec:?} and back is the same batch"
            );
        }
    }
}
