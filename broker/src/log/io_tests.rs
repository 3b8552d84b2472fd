//! Tests of the log's IO boundary: what readers may hold and do outside the log's lock
//! (docs/storage.md, "Where disk work runs").

use std::path::Path;

use bytes::Bytes;
use sluice_proto::batch::Batches;
use sluice_proto::{BatchBuilder, Compression, RecordBatch, TopicPartition};

use super::log::OpenHint;
use super::*;

fn sized_batch(value_bytes: usize, ts: i64) -> RecordBatch {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(ts, Some(b"k"), Some(&vec![b'x'; value_bytes]), &[]);
    b.build().unwrap()
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(
        dir.join("t-0"),
        TopicPartition::new("t", 0),
        config,
        OpenHint {
            clean: false,
            recovery_point: Some(0),
        },
    )
    .unwrap()
}

/// Every byte of `data` read, and its batches checked (CRC included).
fn touch_all(data: &Bytes) -> usize {
    let sum = data.iter().fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
    std::hint::black_box(sum);
    Batches::new(data.clone()).map(|b| b.unwrap()).count()
}

/// Issue 18: a follower truncating into a sealed segment unsealed it first, which
/// dropped the segment's read map, and then cut the file in place because no map was
/// "held" — while a fetch answer or a compaction pass still held `Bytes` slicing that
/// map. Touching the pages past the new end then killed the broker with SIGBUS. A
/// sealed (once mapped) file must be replaced by a shortened copy, never shrunk.
#[test]
fn a_slice_held_across_a_truncation_into_a_sealed_segment_stays_readable() {
    let d = tempfile::tempdir().unwrap();
    let log = open(
        d.path(),
        LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        },
    );
    for i in 0..50 {
        log.append_as_leader(&sized_batch(4000, i), 0, 0).unwrap();
    }
    log.roll_now(0).unwrap();
    log.append_as_leader(&sized_batch(10, 50), 0, 0).unwrap();
    let held = log.read(0, 1 << 20, None).unwrap().data;
    assert!(held.len() > 150 << 10, "read {} bytes", held.len());
    assert_eq!(touch_all(&held), 50);

    // Into the sealed segment: 48 of its 50 batches go, ~190 KiB of file.
    assert_eq!(log.truncate_to(2).unwrap(), 2);
    assert_eq!(touch_all(&held), 50, "the held slice still reads whole");
    let after = log.read(0, 1 << 20, None).unwrap().data;
    assert_eq!(touch_all(&after), 2);
    // The shortened segment is active again and takes appends where the cut was.
    let a = log.append_as_leader(&sized_batch(10, 60), 1, 0).unwrap();
    assert_eq!(a.base_offset, 2);
    assert_eq!(touch_all(&held), 50);
}
