//! Feeds arbitrary bytes to every RecordBatch decoder entry point. Any panic, hang or
//! unbounded allocation is a bug: malformed input must come back as a `BatchError`.
//! Run: `cargo +nightly fuzz run batch_decode` from the repository root.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_proto::batch::{Batches, ValidateOptions};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    for batch in Batches::new(buf).flatten() {
        let opts = ValidateOptions { uncompressed_bytes_max: 1 << 20, from_producer: false };
        let _ = batch.validate(&opts);
        let _ = batch.records();
    }
    // Also with a good CRC, so the record walk sees the fuzzer's bytes.
    if data.len() >= 61 {
        let mut v = data.to_vec();
        let crc = crc_fix(&v);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        if let Ok(b) = sluice_proto::RecordBatch::from_bytes(Bytes::from(v)) {
            let _ = b.validate(&ValidateOptions { uncompressed_bytes_max: 1 << 20, from_producer: true });
        }
    }
});

fn crc_fix(v: &[u8]) -> u32 {
    // CRC-32C (Castagnoli), bitwise: slow but dependency-free.
    let mut crc = !0u32;
    for &b in &v[21..] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}
