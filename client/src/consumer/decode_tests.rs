//! Tests of `decode_fetched`: CRCs checked or not (`check.crcs`), truncated and
//! malformed batches refused either way, records below the fetch position skipped, and
//! keys and values handed out as slices of the fetched bytes.

use bytes::{Bytes, BytesMut};
use sluice_proto::batch::{stamp, BatchBuilder, BatchError};
use sluice_proto::Compression;

use super::decode_fetched;

/// Two batches of `n` records each at offsets 10.. and 10+n.., back to back as a fetch
/// returns them.
fn fetched(n: usize) -> Bytes {
    let mut all = BytesMut::new();
    for b in 0..2 {
        let mut builder = BatchBuilder::new(Compression::None);
        for i in 0..n {
            let key = format!("k{}", b * n + i);
            builder.append(
                1_000 + i as i64,
                Some(key.as_bytes()),
                Some(&[7u8; 100]),
                &[],
            );
        }
        let mut buf = builder.build().expect("batch").into_bytes().to_vec();
        stamp(&mut buf, 10 + (b * n) as i64, 0);
        all.extend_from_slice(&buf);
    }
    all.freeze()
}

#[test]
fn decodes_records_as_slices_of_the_fetched_bytes() {
    let data = fetched(5);
    let mut out = Vec::new();
    let next = decode_fetched("t", 3, data.clone(), 10, true, &mut out).expect("decode");
    assert_eq!(next, 20);
    assert_eq!(out.len(), 10);
    for (i, r) in out.iter().enumerate() {
        assert_eq!((r.topic.as_str(), r.partition), ("t", 3));
        assert_eq!(r.offset, 10 + i as u64);
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        // The value shares the fetched buffer: no copy per record.
        let v = r.value.as_ref().expect("value");
        let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        assert!(range.contains(&(v.as_ptr() as usize)));
    }
    assert_eq!(out[0].timestamp, 1_000);
    assert_eq!(out[4].timestamp, 1_004);
}

#[test]
fn skips_records_below_the_fetch_position() {
    let mut out = Vec::new();
    let next = decode_fetched("t", 0, fetched(5), 13, true, &mut out).expect("decode");
    assert_eq!(next, 20);
    assert_eq!(out.first().map(|r| r.offset), Some(13));
    assert_eq!(out.len(), 7);
}

/// Flips one byte of the first record's value (inside the CRC's range, not in any
/// length or varint).
fn corrupted() -> Bytes {
    let data = fetched(5);
    let mut bytes = data.to_vec();
    let at = bytes
        .windows(100)
        .position(|w| w == [7u8; 100])
        .expect("first value");
    bytes[at + 50] ^= 0xff;
    Bytes::from(bytes)
}

#[test]
fn a_corrupted_batch_fails_with_check_crcs_on() {
    let mut out = Vec::new();
    let err = decode_fetched("t", 0, corrupted(), 10, true, &mut out).expect_err("bad crc");
    assert!(matches!(err, BatchError::BadCrc { .. }), "{err}");
    assert!(out.is_empty());
}

/// Documented behaviour: with `check.crcs` off the CRC is not read, so a corruption that
/// keeps the batch's structure reaches the application.
#[test]
fn a_corrupted_value_is_returned_with_check_crcs_off() {
    let mut out = Vec::new();
    let next = decode_fetched("t", 0, corrupted(), 10, false, &mut out).expect("no check");
    assert_eq!(next, 20);
    assert_eq!(out.len(), 10);
    assert_ne!(out[0].value.as_deref(), Some(&[7u8; 100][..]));
}

/// Structure is checked either way: a batch cut short is an error, not a panic.
#[test]
fn a_truncated_fetch_fails_with_either_setting() {
    let data = fetched(5);
    for check in [true, false] {
        let cut = data.slice(..data.len() - 3);
        let mut out = Vec::new();
        let err = decode_fetched("t", 0, cut, 10, check, &mut out).expect_err("truncated");
        assert!(matches!(err, BatchError::Truncated { .. }), "{err}");
    }
    // The first record's length (the varint after the 61-byte batch header) made
    // negative (zigzag 0x7f = -64), with the CRC not read.
    let mut bytes = data.to_vec();
    bytes[61] = 0x7f;
    let mut out = Vec::new();
    assert!(decode_fetched("t", 0, Bytes::from(bytes), 10, false, &mut out).is_err());
}
