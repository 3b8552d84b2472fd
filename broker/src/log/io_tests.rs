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
    Batches::new(data.clone())
        .inspect(|b| assert!(b.is_ok(), "{b:?}"))
        .count()
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

/// Issue 18: a read held the log's mutex while it touched the chunk it returns — on a
/// cold mmap, a catch-up read of tens of MiB page-faults for as long as the disk needs,
/// and every produce to the partition waited. The slow part now runs outside the lock:
/// here the reader is stopped right where it touches the data, and an append (and a
/// second read) must still complete.
#[test]
fn an_append_does_not_wait_for_a_read_touching_its_data() {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        d.path(),
        LogConfig {
            segment_bytes: 64 << 10,
            ..LogConfig::default()
        },
    ));
    for i in 0..40 {
        log.append_as_leader(&sized_batch(4000, i), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            super::log::READ_PAUSE.with(|p| {
                *p.borrow_mut() = Some(Box::new(move || {
                    let _ = entered_tx.send(());
                    let _ = release_rx.recv_timeout(Duration::from_secs(30));
                }))
            });
            log.read(0, 1 << 20, None)
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reader reached its data");
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let a = log.append_as_leader(&sized_batch(100, 99), 0, 0).unwrap();
            let r = log.read(a.base_offset, 1 << 20, None).unwrap();
            (a.base_offset, r.data.len())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !writer.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = writer.is_finished();
    release_tx.send(()).unwrap();
    assert!(
        finished,
        "an append and a read waited for another read to touch its data"
    );
    let (base, len) = writer.join().unwrap();
    assert_eq!(base, 40);
    assert!(len > 0);
    let held = reader.join().unwrap().unwrap().data;
    assert!(touch_all(&held) >= 1);
}

/// Reads no longer check CRCs (a 50 MiB catch-up read ran CRC-32C over every byte under
/// the log's lock): a batch damaged inside its CRC-covered bytes is served as stored,
/// and what every reader of it runs — `RecordBatch::from_bytes`, through `Batches` in
/// the consumer, the table and the follower's `apply_fetched` — refuses it.
#[test]
fn a_damaged_body_is_served_as_stored_and_refused_by_its_reader() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), LogConfig::default());
    for i in 0..3 {
        log.append_as_leader(&sized_batch(100, i), 0, 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let file = d.path().join("t-0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&file).unwrap();
    let batch_bytes = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    // A byte of the second batch's record value.
    bytes[batch_bytes + batch_bytes - 5] ^= 0xFF;
    std::fs::write(&file, &bytes).unwrap();

    // Reopened as after a clean shutdown: no scan (a crash recovery would cut the
    // damaged batch off, as it checks CRCs).
    let log = Log::open(
        d.path().join("t-0"),
        TopicPartition::new("t", 0),
        LogConfig::default(),
        OpenHint {
            clean: true,
            recovery_point: Some(3),
        },
    )
    .unwrap();
    let data = log.read(0, 1 << 20, None).unwrap().data;
    assert_eq!(
        data.len(),
        3 * batch_bytes,
        "the read returns all three batches"
    );
    let checked: Vec<_> = Batches::new(data).collect();
    assert!(checked[0].is_ok());
    assert!(
        matches!(checked[1], Err(sluice_proto::BatchError::BadCrc { .. })),
        "{:?}",
        checked[1]
    );
    assert!(log.offline_reason().is_none());
}

/// Reads of the active segment `pread` outside the lock, where a follower truncation
/// may cut and rewrite the very bytes the read planned on. Here the reader takes its
/// view (a 600-byte segment of three 200-byte batches), stops, and meanwhile the log
/// is truncated to offset 1 and a 500-byte batch is appended at offset 1: its header now
/// claims bytes past the view's end. The read must notice the truncation (the log's
/// generation moved) and start over — not report corruption and take the log offline.
#[test]
fn a_read_overlapping_a_truncation_of_the_active_segment_starts_over() {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(d.path(), LogConfig::default()));
    for i in 0..3 {
        log.append_as_leader(&sized_batch(120, i), 0, 0).unwrap();
    }
    let first = log.read(0, 1, None).unwrap().data.len();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut once = Some((entered_tx, release_rx));
            super::log::READ_PAUSE.with(|p| {
                *p.borrow_mut() = Some(Box::new(move || {
                    if let Some((entered, release)) = once.take() {
                        let _ = entered.send(());
                        let _ = release.recv_timeout(Duration::from_secs(30));
                    }
                }))
            });
            log.read(1, 1 << 20, None)
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reader took its view");
    assert_eq!(log.truncate_to(1).unwrap(), 1);
    log.append_as_leader(&sized_batch(3 * first, 9), 1, 0)
        .unwrap();
    release_tx.send(()).unwrap();
    let data = reader.join().unwrap().expect("no corruption reported").data;
    let batches: Vec<RecordBatch> = Batches::new(data).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].base_offset(), 1);
    assert_eq!(
        batches[0].partition_leader_epoch(),
        1,
        "the batch written after the cut"
    );
    assert!(log.offline_reason().is_none());
}

/// Issue 18: a compaction swap renamed and deleted files and fsynced the directory
/// four times under the log's lock, so on a slow disk every produce to the partition
/// waited for it. The swap's file steps now hold only the flush lock: here the swap is
/// stopped after its commit point, and an append and a read must still complete.
#[test]
fn an_append_does_not_wait_for_a_compaction_swap() {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        d.path(),
        LogConfig {
            segment_bytes: 4096,
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        },
    ));
    let now = 1_000_000;
    for i in 0..60 {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(
            now,
            Some(format!("k{}", i % 5).as_bytes()),
            Some(&[b'v'; 200]),
            &[],
        );
        log.append_as_leader(&b.build().unwrap(), 0, now).unwrap();
    }
    log.roll_now(now).unwrap();
    let end = log.log_end_offset();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let cleaner = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut once = Some((entered_tx, release_rx));
            super::log::SWAP_PAUSE.with(|p| {
                *p.borrow_mut() = Some(Box::new(move || {
                    if let Some((entered, release)) = once.take() {
                        let _ = entered.send(());
                        let _ = release.recv_timeout(Duration::from_secs(30));
                    }
                }))
            });
            log.clean(&CleanOptions {
                now_ms: now + 1,
                high_watermark: end,
                dedupe_buffer_bytes: 1 << 20,
                producer_expiration_ms: 60_000,
                crash_at: None,
                throttle: None,
            })
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the cleaner reached its swap");
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let a = log
                .append_as_leader(&sized_batch(100, now), 0, now)
                .unwrap();
            log.read(0, 1 << 20, None).unwrap();
            a.base_offset
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !writer.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = writer.is_finished();
    release_tx.send(()).unwrap();
    assert!(
        finished,
        "an append waited for a compaction swap's file steps"
    );
    assert_eq!(writer.join().unwrap(), end);
    let stats = cleaner.join().unwrap().unwrap().expect("a pass ran");
    assert!(stats.records_removed > 0);
    // Latest value of each key, and the append made during the swap.
    let data = log.read(0, 1 << 20, None).unwrap().data;
    let records: usize = Batches::new(data)
        .map(|b| b.unwrap().record_count() as usize)
        .sum();
    assert!(records <= 5 + 1 + 5, "{records} records after compaction");
    assert!(log.offline_reason().is_none());
}

/// The other half of dropping the CRC pass from reads: a follower checks every batch
/// it is sent before appending anything, so a batch damaged on the leader's disk (and
/// served as stored) is refused, not replicated.
#[test]
fn a_follower_refuses_a_batch_whose_crc_is_bad() {
    use crate::replica::{FollowerFetched, ReplicaManager, Role};
    use sluice_proto::{BrokerId, ErrorCode, LeaderEpoch};

    let d = tempfile::tempdir().unwrap();
    let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
    let rm = ReplicaManager::new(2, logs);
    let tp = TopicPartition::new("t", 0);
    let role = Role {
        leader: Some(BrokerId(1)),
        leader_epoch: LeaderEpoch(1),
        replicas: vec![BrokerId(1), BrokerId(2)],
        isr: vec![BrokerId(1), BrokerId(2)],
        partition_epoch: 1,
    };
    rm.apply_role(&tp, role, LogConfig::default(), None)
        .unwrap();
    // As the leader stored it: offset 0, epoch 1 (outside the CRC).
    let mut good = sized_batch(100, 0).as_bytes().to_vec();
    sluice_proto::batch::stamp(&mut good, 0, 1);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let answer = |records: Vec<u8>| {
        Ok(FollowerFetched {
            records: Bytes::from(records),
            high_watermark: 1,
            log_start_offset: 0,
            log_end_offset: 1,
            diverging: None,
        })
    };
    let sent = rm.followed().remove(&1).unwrap().remove(0);
    let (code, message) = rm.apply_fetched(&sent, answer(bad)).unwrap_err();
    assert_eq!(code, ErrorCode::CorruptMessage, "{message}");
    let log = rm.partition(&tp).unwrap().log.clone();
    assert_eq!(
        log.log_end_offset(),
        0,
        "nothing of the bad batch was appended"
    );
    rm.apply_fetched(&sent, answer(good)).unwrap();
    assert_eq!(log.log_end_offset(), 1);
}
