//! Tests of the RecordBatch v2 codec: round trips, every malformation, and byte
//! equality with an independent encoder (the `kafka-protocol` crate).

use super::*;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records as kp;
use proptest::prelude::*;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn sample(compression: Compression, n: usize) -> RecordBatch {
    let mut b = BatchBuilder::new(compression);
    for i in 0..n {
        let key = format!("key-{i}");
        let value = format!("value-{i}").repeat(3);
        let headers = [Header {
            key: "h".into(),
            value: Some(Bytes::from_static(b"v")),
        }];
        b.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &headers,
        );
    }
    b.build().unwrap()
}

fn mutate(batch: &RecordBatch, f: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut v = batch.as_bytes().to_vec();
    f(&mut v);
    Bytes::from(v)
}

/// Recomputes the CRC so that a test reaches the check behind it.
fn fix_crc(v: &mut [u8]) {
    let crc = crc32c::crc32c(&v[ATTRIBUTES_AT..]);
    v[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn builds_and_decodes_every_codec() {
    for c in CODECS {
        let batch = sample(c, 50);
        let reparsed = RecordBatch::from_bytes(batch.as_bytes().clone()).unwrap();
        assert_eq!(reparsed.compression().unwrap(), c);
        let summary = reparsed.validate(&ValidateOptions::default()).unwrap();
        assert_eq!(summary.record_count, 50);
        assert_eq!(summary.max_timestamp, Some(1_700_000_000_049));
        let records = reparsed.records().unwrap();
        assert_eq!(records.len(), 50);
        assert_eq!(records[7].key.as_deref(), Some(&b"key-7"[..]));
        assert_eq!(records[7].headers[0].key, "h");
        assert_eq!(reparsed.last_offset_delta(), 49);
    }
}

#[test]
fn stamping_keeps_the_crc_valid() {
    let batch = sample(Compression::None, 3);
    let mut v = batch.as_bytes().to_vec();
    stamp(&mut v, 1234, 7);
    let b = RecordBatch::from_bytes(Bytes::from(v)).unwrap();
    assert_eq!(
        (b.base_offset(), b.partition_leader_epoch(), b.last_offset()),
        (1234, 7, 1236)
    );
    let mut v = b.as_bytes().to_vec();
    set_log_append_time(&mut v, 42);
    let b = RecordBatch::from_bytes(Bytes::from(v)).unwrap();
    assert_eq!(
        (b.timestamp_type(), b.max_timestamp()),
        (TimestampType::LogAppendTime, 42)
    );
}

#[test]
fn null_keys_values_and_empty_batches() {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(5, None, None, &[]);
    let batch = b.build().unwrap();
    let r = &batch.records().unwrap()[0];
    assert_eq!((r.key.as_ref(), r.value.as_ref()), (None, None));
    let empty = BatchBuilder::new(Compression::None).build().unwrap();
    assert!(matches!(
        empty.validate(&ValidateOptions::default()),
        Err(BatchError::Empty)
    ));
    let lenient = ValidateOptions {
        from_producer: false,
        ..Default::default()
    };
    assert_eq!(empty.validate(&lenient).unwrap().record_count, 0);
}

#[test]
fn short_buffers_are_truncated_errors() {
    let batch = sample(Compression::None, 2);
    for cut in [0, 10, 60, batch.size() - 1] {
        let err = RecordBatch::from_bytes(batch.as_bytes().slice(..cut)).unwrap_err();
        assert!(
            matches!(err, BatchError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn bad_magic_crc_and_lying_length() {
    let batch = sample(Compression::None, 2);
    let err = RecordBatch::from_bytes(mutate(&batch, |v| v[MAGIC_AT] = 1)).unwrap_err();
    assert!(matches!(err, BatchError::BadMagic { magic: 1 }));
    let err = RecordBatch::from_bytes(mutate(&batch, |v| v[70] ^= 1)).unwrap_err();
    assert!(matches!(err, BatchError::BadCrc { .. }));
    let err = RecordBatch::from_bytes(mutate(&batch, |v| {
        v[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&(-5i32).to_be_bytes())
    }))
    .unwrap_err();
    assert!(matches!(err, BatchError::BadLength { .. }));
    let err = RecordBatch::from_bytes(mutate(&batch, |v| {
        let len = (v.len() - LOG_OVERHEAD_BYTES + 100) as i32;
        v[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
    }))
    .unwrap_err();
    assert!(matches!(err, BatchError::Truncated { .. }));
    let err = RecordBatch::from_bytes(mutate(&batch, |v| v.push(0))).unwrap_err();
    assert!(matches!(err, BatchError::TrailingBytes { bytes: 1 }));
}

#[test]
fn lying_record_count_is_rejected() {
    let batch = sample(Compression::None, 3);
    for count in [2i32, 4, -1, i32::MAX] {
        let b = mutate(&batch, |v| {
            v[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
            fix_crc(v);
        });
        let b = RecordBatch::from_bytes(b).unwrap();
        assert!(
            b.validate(&ValidateOptions::default()).is_err(),
            "count {count}"
        );
    }
}

#[test]
fn out_of_order_offset_deltas_are_rejected() {
    // Two records, the second claiming offset delta 0 again.
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1, None, Some(b"a"), &[]);
    b.append(1, None, Some(b"b"), &[]);
    let batch = b.build().unwrap();
    let v = mutate(&batch, |v| {
        // Record layout: len, attrs, ts delta, offset delta. Second record starts after
        // the first's length prefix + body.
        let first_len = v[BATCH_HEADER_BYTES] as usize / 2; // zig-zag, small
        let second = BATCH_HEADER_BYTES + 1 + first_len;
        v[second + 3] = 0; // offset delta 1 (zig-zag 2) -> 0
        fix_crc(v);
    });
    let err = RecordBatch::from_bytes(v)
        .unwrap()
        .validate(&ValidateOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, BatchError::OffsetDeltaOutOfOrder { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn wrong_last_offset_delta_is_rejected() {
    let batch = sample(Compression::Lz4, 3);
    let v = mutate(&batch, |v| {
        v[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        fix_crc(v);
    });
    let err = RecordBatch::from_bytes(v)
        .unwrap()
        .validate(&ValidateOptions::default())
        .unwrap_err();
    assert!(matches!(
        err,
        BatchError::LastOffsetDeltaMismatch {
            declared: 5,
            found: 2
        }
    ));
}

#[test]
fn varint_overflow_inside_a_record_is_rejected() {
    let batch = sample(Compression::None, 1);
    let v = mutate(&batch, |v| {
        for b in &mut v[BATCH_HEADER_BYTES + 2..BATCH_HEADER_BYTES + 8] {
            *b = 0xff;
        }
        fix_crc(v);
    });
    let err = RecordBatch::from_bytes(v)
        .unwrap()
        .validate(&ValidateOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, BatchError::BadRecord { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn decompression_bomb_is_rejected() {
    let mut b = BatchBuilder::new(Compression::Zstd);
    let zeros = vec![0u8; 4 << 20];
    b.append(0, None, Some(&zeros), &[]);
    let batch = b.build().unwrap();
    assert!(batch.size() < 64 * 1024);
    let opts = ValidateOptions {
        uncompressed_bytes_max: 1 << 20,
        from_producer: true,
    };
    let err = batch.validate(&opts).unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::Compression(CompressionError::TooLarge { .. })
        ),
        "{err}"
    );
}

#[test]
fn reserved_codec_is_rejected() {
    let batch = sample(Compression::None, 1);
    let v = mutate(&batch, |v| {
        v[ATTRIBUTES_AT + 1] |= 0x07;
        fix_crc(v);
    });
    let b = RecordBatch::from_bytes(v).unwrap();
    assert!(matches!(
        b.validate(&ValidateOptions::default()),
        Err(BatchError::Compression(_))
    ));
}

#[test]
fn batches_iterator_splits_and_stops_on_garbage() {
    let mut all = Vec::new();
    for n in 1..4 {
        all.extend_from_slice(sample(Compression::None, n).as_bytes());
    }
    let good: Vec<_> = Batches::new(Bytes::from(all.clone()))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(good.len(), 3);
    all.extend_from_slice(&[1, 2, 3]);
    let results: Vec<_> = Batches::new(Bytes::from(all)).collect();
    assert_eq!(results.len(), 4);
    assert!(results[3].is_err());
}

// ---- cross-check against kafka-protocol ---------------------------------------------

fn kp_compression(c: Compression) -> kp::Compression {
    match c {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    }
}

type TestRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn kp_records(records: &[TestRecord], producer: (i64, i16, i32)) -> Vec<kp::Record> {
    records
        .iter()
        .enumerate()
        .map(|(i, (ts, k, v, hs))| {
            let mut headers = IndexMap::new();
            for (hk, hv) in hs {
                headers.insert(
                    StrBytes::from_string(hk.clone()),
                    hv.clone().map(Bytes::from),
                );
            }
            kp::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer.0,
                producer_epoch: producer.1,
                timestamp_type: kp::TimestampType::Creation,
                offset: i as i64,
                sequence: producer.2.wrapping_add(i as i32),
                timestamp: *ts,
                key: k.clone().map(Bytes::from),
                value: v.clone().map(Bytes::from),
                headers,
            }
        })
        .collect()
}

fn ours(records: &[TestRecord], c: Compression, producer: (i64, i16, i32)) -> RecordBatch {
    let mut b = BatchBuilder::new(c).producer(producer.0, producer.1, producer.2);
    for (ts, k, v, hs) in records {
        let headers: Vec<Header> = hs
            .iter()
            .map(|(k, v)| Header {
                key: k.clone(),
                value: v.clone().map(Bytes::from),
            })
            .collect();
        b.append(*ts, k.as_deref(), v.as_deref(), &headers);
    }
    b.build().unwrap()
}

fn arb_records() -> impl Strategy<Value = Vec<TestRecord>> {
    let bytes = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
    let header = (
        "[a-z]{1,6}",
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
    );
    let headers = proptest::collection::btree_map(header.0, header.1, 0..3)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    let record = (
        1_600_000_000_000i64..1_800_000_000_000,
        bytes.clone(),
        bytes,
        headers,
    );
    // Sorted by timestamp: Kafka's Java producer takes the first record's timestamp as
    // the batch's base, kafka-protocol the smallest; with ordered timestamps they agree.
    proptest::collection::vec(record, 1..20).prop_map(|mut v| {
        v.sort_by_key(|r| r.0);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Uncompressed batches are byte-identical to kafka-protocol's; compressed ones
    /// decode to the same records in both directions.
    #[test]
    fn matches_kafka_protocol(records in arb_records(), codec in 0usize..5, idem in any::<bool>()) {
        let c = CODECS[codec];
        let producer = if idem { (4242, 3, 17) } else { (-1, -1, -1) };
        let mine = ours(&records, c, producer);
        let theirs_records = kp_records(&records, producer);
        let mut theirs = bytes::BytesMut::new();
        let opts = kp::RecordEncodeOptions { version: 2, compression: kp_compression(c) };
        kp::RecordBatchEncoder::encode(&mut theirs, theirs_records.iter(), &opts).unwrap();
        if c == Compression::None {
            prop_assert_eq!(mine.as_bytes().as_ref(), theirs.as_ref());
        }
        // theirs -> ours
        let parsed = RecordBatch::from_bytes(theirs.freeze()).unwrap();
        parsed.validate(&ValidateOptions::default()).unwrap();
        let decoded = parsed.records().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (d, r) in decoded.iter().zip(&records) {
            prop_assert_eq!(parsed.base_timestamp() + d.timestamp_delta, r.0);
            prop_assert_eq!(d.key.as_deref(), r.1.as_deref());
            prop_assert_eq!(d.value.as_deref(), r.2.as_deref());
        }
        // ours -> theirs
        let mut buf = mine.as_bytes().clone();
        let set = kp::RecordBatchDecoder::decode(&mut buf).unwrap();
        prop_assert_eq!(set.records.len(), records.len());
        for (k, r) in set.records.iter().zip(&theirs_records) {
            prop_assert_eq!(k.key.clone(), r.key.clone());
            prop_assert_eq!(k.value.clone(), r.value.clone());
            prop_assert_eq!(k.timestamp, r.timestamp);
            prop_assert_eq!(k.sequence, r.sequence);
            prop_assert_eq!(&k.headers, &r.headers);
        }
    }

    /// Flipping any byte under the CRC is caught; no mutation anywhere panics.
    #[test]
    fn mutations_never_panic(records in arb_records(), codec in 0usize..5, at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let batch = ours(&records, CODECS[codec], (-1, -1, -1));
        let mut v = batch.as_bytes().to_vec();
        let i = at.index(v.len());
        v[i] ^= xor;
        let result = RecordBatch::from_bytes(Bytes::from(v.clone()));
        if i >= ATTRIBUTES_AT {
            prop_assert!(result.is_err());
        }
        // Re-sign the CRC so the record walk itself sees the mutation.
        if v.len() > ATTRIBUTES_AT { fix_crc(&mut v); }
        if let Ok(b) = RecordBatch::from_bytes(Bytes::from(v)) {
            let _ = b.validate(&ValidateOptions::default());
            let _ = b.records();
        }
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Batches::new(Bytes::from(v.clone())).count();
        if let Ok(b) = RecordBatch::from_bytes(Bytes::from(v)) {
            let _ = b.validate(&ValidateOptions::default());
        }
    }
}
