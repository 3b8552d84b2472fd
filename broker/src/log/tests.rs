//! Tests of the partition log through its public API, on real files.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sluice_proto::batch::Batches;
use sluice_proto::{BatchBuilder, Compression, RecordBatch, TopicPartition};

use super::log::OpenHint;
use super::*;

pub(crate) fn batch(values: &[&str], ts: i64) -> RecordBatch {
    let mut b = BatchBuilder::new(Compression::None);
    for (i, v) in values.iter().enumerate() {
        b.append(ts + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build().unwrap()
}

fn sized_batch(n: usize, value_bytes: usize, ts: i64) -> RecordBatch {
    let value = vec![b'x'; value_bytes];
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        b.append(ts + i as i64, None, Some(&value), &[]);
    }
    b.build().unwrap()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
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

/// (offset, value) of every record readable from `from`, paging `max_bytes` at a time.
pub(crate) fn read_all(log: &Log, from: u64, max_bytes: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = log.read(next, max_bytes, None).unwrap();
        if r.data.is_empty() {
            return out;
        }
        for b in Batches::new(r.data) {
            let b = b.unwrap();
            for rec in b.records().unwrap() {
                let off = b.base_offset() as u64 + rec.offset_delta as u64;
                if off >= from {
                    out.push((off, String::from_utf8(rec.value.unwrap().to_vec()).unwrap()));
                }
            }
            next = b.next_offset() as u64;
        }
    }
}

#[test]
fn append_assigns_offsets_and_reads_across_segments() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), small_segments());
    let mut expected = Vec::new();
    for i in 0..60u64 {
        let v = format!("v{i}");
        let info = log
            .append_as_leader(&batch(&[&v, &v], 1000 + i as i64), 3, 0)
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (2 * i, 2 * i + 1));
        expected.push((2 * i, v.clone()));
        expected.push((2 * i + 1, v));
    }
    assert!(
        log.segment_count() >= 4,
        "1 KiB segments must have rolled: {}",
        log.segment_count()
    );
    assert_eq!(log.log_end_offset(), 120);
    for max in [1, 100, 1 << 20] {
        assert_eq!(read_all(&log, 0, max), expected);
    }
    // From the middle of a batch and of a segment.
    assert_eq!(read_all(&log, 77, 300)[0], (77, "v38".to_string()));
    let b = Batches::new(log.read(77, 1, None).unwrap().data)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((b.base_offset(), b.partition_leader_epoch()), (76, 3));
}

#[test]
fn reads_stop_below_up_to_and_reject_out_of_range() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), LogConfig::default());
    for i in 0..5 {
        log.append_as_leader(&batch(&["a", "b"], i), 0, 0).unwrap();
    }
    let r = log.read(0, 1 << 20, Some(4)).unwrap();
    let n: Vec<_> = Batches::new(r.data)
        .map(|b| b.unwrap().base_offset())
        .collect();
    assert_eq!(n, vec![0, 2]);
    assert!(log.read(4, 1 << 20, Some(4)).unwrap().data.is_empty());
    assert!(
        log.read(10, 100, None).unwrap().data.is_empty(),
        "reading at the end is empty"
    );
    let err = log.read(11, 100, None).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OffsetOutOfRange {
                requested: 11,
                log_start_offset: 0,
                log_end_offset: 10
            }
        ),
        "{err}"
    );
}

#[test]
fn rolls_on_segment_ms_and_on_full_index() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 100,
        ..LogConfig::default()
    };
    let log = open(d.path(), config);
    log.append_as_leader(&batch(&["a"], 0), 0, 1_000).unwrap();
    log.append_as_leader(&batch(&["b"], 0), 0, 1_050).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_as_leader(&batch(&["c"], 0), 0, 1_200).unwrap();
    assert_eq!(log.segment_count(), 2);

    let d = tempfile::tempdir().unwrap();
    // Room for three offset-index entries; every batch gets an entry.
    let config = LogConfig {
        index_interval_bytes: 0,
        segment_index_bytes: 36,
        ..LogConfig::default()
    };
    let log = open(d.path(), config);
    for i in 0..10 {
        log.append_as_leader(&batch(&["x"], i), 0, 0).unwrap();
    }
    assert!(
        log.segment_count() >= 3,
        "full indexes roll: {}",
        log.segment_count()
    );
    assert_eq!(read_all(&log, 0, 1).len(), 10);
}

#[test]
fn oversized_batches_are_refused_and_the_log_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let log = open(
        d.path(),
        LogConfig {
            max_message_bytes: 500,
            ..LogConfig::default()
        },
    );
    let err = log
        .append_as_leader(&sized_batch(1, 1000, 0), 0, 0)
        .unwrap_err();
    assert!(matches!(err, LogError::RecordTooLarge { max: 500, .. }));
    log.append_as_leader(&batch(&["ok"], 0), 0, 0).unwrap();
    assert_eq!(read_all(&log, 0, 100), vec![(0, "ok".to_string())]);
}

#[test]
fn truncate_to_drops_whole_batches_and_epochs() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), small_segments());
    for i in 0..40u32 {
        log.append_as_leader(&batch(&["a", "b", "c"], 0), i / 10, 0)
            .unwrap();
    }
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 60)));
    // 64 sits inside the batch [63, 65]: the whole batch goes.
    assert_eq!(log.truncate_to(64).unwrap(), 63);
    assert_eq!(log.log_end_offset(), 63);
    assert_eq!(
        log.latest_epoch(),
        Some(EpochEntry {
            epoch: 2,
            start_offset: 60
        })
    );
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 63)));
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 63);
    // Appending continues at the new end.
    let info = log.append_as_leader(&batch(&["z"], 0), 5, 0).unwrap();
    assert_eq!(info.base_offset, 63);
    assert_eq!(
        read_all(&log, 60, 1 << 20).last().unwrap(),
        &(63, "z".to_string())
    );
}

#[test]
fn truncate_prefix_and_retention_respect_the_high_watermark() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(2048),
        ..small_segments()
    };
    let log = open(d.path(), config);
    for i in 0..50 {
        log.append_as_leader(&sized_batch(2, 50, 1000 + i), 0, 0)
            .unwrap();
    }
    let before = log.segment_count();
    assert_eq!(
        log.apply_retention(0, 0).unwrap(),
        0,
        "nothing below HW 0 may go"
    );
    let deleted = log.apply_retention(0, 100).unwrap();
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(
        log.size_bytes() >= 2048 - 1024 && log.size_bytes() <= 2048 + 1024,
        "{}",
        log.size_bytes()
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.read(start - 1, 10, None),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, start, 1 << 20)[0].0, start);

    log.truncate_prefix_to(95).unwrap();
    assert_eq!(log.log_start_offset(), 95);
    assert_eq!(read_all(&log, 95, 1 << 20).len(), 5);
    // Past the end: the log restarts empty there.
    log.truncate_prefix_to(500).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert_eq!(
        log.append_as_leader(&batch(&["n"], 0), 0, 0)
            .unwrap()
            .base_offset,
        500
    );
}

#[test]
fn retention_by_time_deletes_old_sealed_segments_only() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(1000),
        ..small_segments()
    };
    let log = open(d.path(), config);
    for i in 0..30 {
        log.append_as_leader(&sized_batch(1, 100, 10_000 + i * 100), 0, 0)
            .unwrap();
    }
    let n = log.segment_count();
    // Everything older than 11_000 is past retention at now=12_001.
    let deleted = log.apply_retention(12_001, 30).unwrap();
    assert!(deleted > 0 && deleted < n);
    let first = read_all(&log, log.log_start_offset(), 1 << 20);
    assert!(!first.is_empty());
    // Even if everything is expired, the active segment stays.
    log.apply_retention(i64::MAX / 2, 30).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 30);
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), small_segments());
    for i in 0..50i64 {
        // Two records per batch, timestamps 10*i and 10*i + 1.
        log.append_as_leader(&batch(&["a", "b"], 10 * i), 0, 0)
            .unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(101).unwrap(), Some((21, 101)));
    assert_eq!(log.offset_for_timestamp(102).unwrap(), Some((22, 110)));
    assert_eq!(log.offset_for_timestamp(491).unwrap(), Some((99, 491)));
    assert_eq!(log.offset_for_timestamp(492).unwrap(), None);
}

#[test]
fn log_append_time_is_stamped_with_a_valid_crc() {
    let d = tempfile::tempdir().unwrap();
    let log = open(
        d.path(),
        LogConfig {
            log_append_time: true,
            ..LogConfig::default()
        },
    );
    let info = log
        .append_as_leader(&batch(&["a", "b"], 5), 0, 777)
        .unwrap();
    assert_eq!(info.log_append_time, Some(777));
    let b = RecordBatch::from_bytes(log.read(0, 1000, None).unwrap().data).unwrap();
    assert_eq!(
        (b.max_timestamp(), b.timestamp_type()),
        (777, sluice_proto::TimestampType::LogAppendTime)
    );
}

#[test]
fn follower_appends_keep_offsets_and_reject_going_backwards() {
    let d = tempfile::tempdir().unwrap();
    let leader = open(d.path(), LogConfig::default());
    for e in 0..3 {
        leader
            .append_as_leader(&batch(&["a", "b"], 0), e, 0)
            .unwrap();
    }
    let data = leader.read(0, 1 << 20, None).unwrap().data;
    let batches: Vec<RecordBatch> = Batches::new(data).map(Result::unwrap).collect();
    let d2 = tempfile::tempdir().unwrap();
    let follower = open(d2.path(), LogConfig::default());
    let info = follower.append_as_follower(&batches, 0).unwrap().unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 5));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    let err = follower.append_as_follower(&batches[..1], 0).unwrap_err();
    assert!(matches!(
        err,
        LogError::NonMonotonicOffset {
            base_offset: 0,
            log_end_offset: 6
        }
    ));
}

/// Issue 18: the CRC does not cover `last_offset_delta`'s meaning, only its bytes; a
/// peer's CRC-valid batch with a negative one made `append_as_follower` panic, and with
/// it the fetch loop, on every retry.
#[test]
fn a_follower_refuses_a_crc_valid_batch_with_a_negative_last_offset_delta() {
    let d = tempfile::tempdir().unwrap();
    let follower = open(d.path(), LogConfig::default());
    let good = batch(&["a", "b"], 0);
    let mut bytes = good.as_bytes().to_vec();
    bytes[23..27].copy_from_slice(&(-5i32).to_be_bytes());
    // Recomputes the CRC over the altered header: the batch is CRC-valid.
    sluice_proto::batch::set_log_append_time(&mut bytes, 0);
    let bad = RecordBatch::from_bytes(Bytes::from(bytes)).expect("a CRC-valid batch");
    assert_eq!(bad.last_offset_delta(), -5);
    let err = follower.append_as_follower(&[bad], 0).unwrap_err();
    assert!(
        matches!(err, LogError::BadHeader { base_offset: 0, .. }),
        "{err:?}"
    );
    // Nothing was written and the log serves on.
    assert!(follower.offline_reason().is_none());
    assert_eq!(follower.log_end_offset(), 0);
    let info = follower.append_as_follower(&[good], 0).unwrap().unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 1));
}

#[test]
fn concurrent_flushers_share_one_fsync() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        d.path(),
        LogConfig {
            flush_messages: Some(1),
            ..LogConfig::default()
        },
    ));
    let mut ends = Vec::new();
    for _ in 0..16 {
        let info = log.append_as_leader(&batch(&["a"], 0), 0, 0).unwrap();
        assert!(info.needs_flush);
        ends.push(info.last_offset + 1);
    }
    let threads: Vec<_> = ends
        .into_iter()
        .map(|end| {
            let log = log.clone();
            std::thread::spawn(move || log.flush_to(end).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.flushed_offset(), 16);
    assert_eq!(
        log.flush_count(),
        1,
        "every waiter was covered by the first fsync"
    );
}

// ---- recovery ----------------------------------------------------------------------

fn tp(i: u32) -> TopicPartition {
    TopicPartition::new("topic", i)
}

#[test]
fn clean_reopen_of_100_partitions_reads_no_log_bytes() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    {
        let (m, failed) = LogManager::open(d.path(), config.clone()).unwrap();
        assert!(failed.is_empty());
        for p in 0..100 {
            let log = m.get_or_create(&tp(p), config.clone()).unwrap();
            for i in 0..40 {
                log.append_as_leader(&sized_batch(10, 400, i), 0, 0)
                    .unwrap();
            }
        }
        m.shutdown().unwrap();
    }
    let (m, failed) = LogManager::open(d.path(), config.clone()).unwrap();
    assert!(failed.is_empty() && m.was_clean());
    assert_eq!(m.all().len(), 100);
    for log in m.all() {
        let s = log.open_stats();
        assert!(s.segments > 1);
        assert_eq!(
            (s.segments_scanned, s.log_bytes_read),
            (0, 0),
            "{}",
            log.topic_partition()
        );
        assert_eq!((log.log_end_offset(), log.flushed_offset()), (400, 400));
    }
    // And the data is all there, appendable at the right offset.
    let log = m.get(&tp(42)).unwrap();
    assert_eq!(read_all(&log, 390, 1 << 20).len(), 10);
    assert_eq!(
        log.append_as_leader(&batch(&["more"], 0), 0, 0)
            .unwrap()
            .base_offset,
        400
    );
    // The marker is consumed: a crash now is seen as a crash.
    drop(m);
    let (m, _) = LogManager::open(d.path(), config).unwrap();
    assert!(!m.was_clean());
    assert_eq!(m.get(&tp(42)).unwrap().log_end_offset(), 401);
}

fn segment_files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn crash_recovery_cuts_a_torn_tail_and_rebuilds_indexes() {
    let d = tempfile::tempdir().unwrap();
    let config = small_segments();
    {
        let (m, _) = LogManager::open(d.path(), config.clone()).unwrap();
        let log = m.get_or_create(&tp(0), config.clone()).unwrap();
        for i in 0..30 {
            log.append_as_leader(&batch(&[&format!("v{i}")], i), 0, 0)
                .unwrap();
        }
        log.flush().unwrap();
        m.checkpoint_recovery_points().unwrap();
        for i in 30..40 {
            log.append_as_leader(&batch(&[&format!("v{i}")], i), 0, 0)
                .unwrap();
        }
        // No shutdown: the process "dies" here.
    }
    let pdir = d.path().join("topic-0");
    let last = segment_files(&pdir, "log").pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Tear the last batch and add junk after it, as a power cut mid-write might.
    let mut bytes = fs::read(&last).unwrap();
    bytes.truncate(len as usize - 7);
    bytes.extend_from_slice(&[0xAB; 33]);
    fs::write(&last, &bytes).unwrap();
    // Scribble over every index: they are derived data and must not matter.
    for idx in segment_files(&pdir, "index")
        .iter()
        .chain(&segment_files(&pdir, "timeindex"))
    {
        let n = fs::metadata(idx).unwrap().len() as usize;
        fs::write(idx, vec![0x5A; n]).unwrap();
    }
    let (m, failed) = LogManager::open(d.path(), config).unwrap();
    assert!(failed.is_empty());
    let log = m.get(&tp(0)).unwrap();
    assert_eq!(log.log_end_offset(), 39, "only the torn batch is lost");
    assert!(log.open_stats().truncated_bytes > 0);
    let all = read_all(&log, 0, 200);
    assert_eq!(all.len(), 39);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, (o, v))| *o == i as u64 && *v == format!("v{i}")));
    assert_eq!(log.offset_for_timestamp(20).unwrap(), Some((20, 20)));
    assert_eq!(
        log.append_as_leader(&batch(&["new"], 0), 0, 0)
            .unwrap()
            .base_offset,
        39
    );
}

/// A flush does not sync the active segment's indexes (docs/storage.md, "Flushes"):
/// after a crash they may hold nothing of what was flushed, even with the recovery point
/// past it. Recovery rebuilds them, as it starts at the segment holding the recovery
/// point; sealed segments' indexes were synced by the flush after their roll.
#[test]
fn unsynced_active_indexes_are_rebuilt_after_a_crash_past_the_recovery_point() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    {
        let (m, _) = LogManager::open(d.path(), config.clone()).unwrap();
        let log = m.get_or_create(&tp(0), config.clone()).unwrap();
        for i in 0..60 {
            log.append_as_leader(&batch(&[&format!("v{i}")], 1000 + i), 0, 0)
                .unwrap();
        }
        log.flush().unwrap();
        m.checkpoint_recovery_points().unwrap();
        // No shutdown: the process "dies" here, everything flushed and checkpointed.
    }
    let pdir = d.path().join("topic-0");
    let logs = segment_files(&pdir, "log");
    assert!(
        logs.len() > 1,
        "the test needs a sealed segment and an active one"
    );
    // The active segment's indexes as a power cut may leave them: never written back
    // (their preallocated zeros).
    for ext in ["index", "timeindex"] {
        let idx = segment_files(&pdir, ext).pop().unwrap();
        let n = fs::metadata(&idx).unwrap().len() as usize;
        fs::write(&idx, vec![0; n]).unwrap();
    }
    let (m, failed) = LogManager::open(d.path(), config).unwrap();
    assert!(failed.is_empty());
    let log = m.get(&tp(0)).unwrap();
    assert_eq!(log.log_end_offset(), 60, "nothing flushed is lost");
    assert!(log.open_stats().segments_scanned >= 1);
    let all = read_all(&log, 0, 300);
    assert_eq!(all.len(), 60);
    // Reads from the middle of the active segment and time lookups into it go through
    // its rebuilt indexes.
    let active_base: u64 = logs
        .last()
        .unwrap()
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mid = (active_base + 60) / 2;
    assert_eq!(read_all(&log, mid, 300)[0], (mid, format!("v{mid}")));
    assert_eq!(
        log.offset_for_timestamp(1000 + mid as i64).unwrap(),
        Some((mid, 1000 + mid as i64))
    );
}

#[test]
fn corruption_inside_a_sealed_segment_takes_only_that_partition_offline() {
    let d = tempfile::tempdir().unwrap();
    let config = small_segments();
    {
        let (m, _) = LogManager::open(d.path(), config.clone()).unwrap();
        for p in 0..2 {
            let log = m.get_or_create(&tp(p), config.clone()).unwrap();
            for i in 0..30 {
                log.append_as_leader(&sized_batch(1, 60, i), 0, 0).unwrap();
            }
        }
        m.shutdown().unwrap();
    }
    let pdir = d.path().join("topic-0");
    let first = segment_files(&pdir, "log").remove(0);
    let mut bytes = fs::read(&first).unwrap();
    // The magic byte of the third batch: reads walk headers (length, magic, offsets)
    // and no longer check CRCs (docs/storage.md), so the damage is put where they look.
    let batch_bytes = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let damaged = 2 * batch_bytes + 16;
    bytes[damaged] ^= 0xFF;
    fs::write(&first, &bytes).unwrap();

    let (m, failed) = LogManager::open(d.path(), config).unwrap();
    assert!(
        failed.is_empty(),
        "a clean open reads no log bytes, so it cannot see the damage yet"
    );
    let bad = m.get(&tp(0)).unwrap();
    let err = bad.read(0, 1 << 20, None).unwrap_err();
    match &err {
        LogError::Corrupt { path, position, .. } => {
            assert_eq!(path, &first);
            assert!(*position <= damaged as u64, "position {position}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(matches!(
        bad.append_as_leader(&batch(&["x"], 0), 0, 0),
        Err(LogError::Offline { .. })
    ));
    let good = m.get(&tp(1)).unwrap();
    assert_eq!(read_all(&good, 0, 1 << 20).len(), 30);
    good.append_as_leader(&batch(&["x"], 0), 0, 0).unwrap();
}

/// A small tmpfs, so that the disk really fills. Unmounted on drop.
struct Tmpfs(tempfile::TempDir);
impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(d.path())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root (the test suite runs as root)"
        );
        Tmpfs(d)
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_the_log_consistent() {
    let fs_ = Tmpfs::new("1m");
    let filler = fs_.0.path().join("filler");
    fs::write(&filler, vec![0u8; 256 * 1024]).unwrap();
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    let log = open(fs_.0.path(), config);
    let mut appended = 0u64;
    let err = loop {
        match log.append_as_leader(&sized_batch(4, 2000, 0), 0, 0) {
            Ok(info) => appended = info.last_offset + 1,
            Err(e) => break e,
        }
        assert!(appended < 10_000, "the disk never filled");
    };
    assert!(matches!(err, LogError::DiskFull { .. }), "{err}");
    assert!(log.offline_reason().is_none());
    assert_eq!(log.log_end_offset(), appended);
    assert_eq!(read_all(&log, 0, 1 << 20).len() as u64, appended);
    fs::remove_file(&filler).unwrap();
    let info = log
        .append_as_leader(&sized_batch(4, 2000, 0), 0, 0)
        .unwrap();
    assert_eq!(info.base_offset, appended);
    // And a reopen after the crash finds exactly what was acknowledged.
    drop(log);
    let log = open(
        fs_.0.path(),
        LogConfig {
            segment_bytes: 64 * 1024,
            ..LogConfig::default()
        },
    );
    assert_eq!(log.log_end_offset(), appended + 4);
}

#[test]
fn permission_errors_are_typed() {
    let d = tempfile::tempdir().unwrap();
    let log = open(
        d.path(),
        LogConfig {
            segment_bytes: 200,
            ..LogConfig::default()
        },
    );
    log.append_as_leader(&sized_batch(1, 150, 0), 0, 0).unwrap();
    let pdir = d.path().join("t-0");
    // Root ignores mode bits; the immutable attribute stops even root.
    let ok = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&pdir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chattr +i failed");
    let err = log
        .append_as_leader(&sized_batch(1, 150, 0), 0, 0)
        .unwrap_err();
    std::process::Command::new("chattr")
        .arg("-i")
        .arg(&pdir)
        .status()
        .unwrap();
    assert!(matches!(err, LogError::PermissionDenied { .. }), "{err}");
    assert!(log.offline_reason().is_none());
    assert_eq!(read_all(&log, 0, 1000).len(), 1);
    log.append_as_leader(&sized_batch(1, 150, 0), 0, 0).unwrap();
}

#[test]
fn manager_reports_a_broken_partition_and_opens_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    {
        let (m, _) = LogManager::open(d.path(), config.clone()).unwrap();
        for p in 0..3 {
            m.get_or_create(&tp(p), config.clone())
                .unwrap()
                .append_as_leader(&batch(&["a"], 0), 0, 0)
                .unwrap();
        }
        m.shutdown().unwrap();
    }
    fs::write(
        d.path().join("topic-1").join("leader-epoch-checkpoint"),
        "garbage",
    )
    .unwrap();
    let (m, failed) = LogManager::open(d.path(), config).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, tp(1));
    assert_eq!(m.all().len(), 2);
    let _ = Bytes::new();
}

#[test]
fn orphan_index_files_are_removed_on_open() {
    let d = tempfile::tempdir().unwrap();
    let pdir = d.path().join("t-0");
    std::fs::create_dir_all(&pdir).unwrap();
    // Index files whose .log vanished in a crash, at the base the log will start at.
    std::fs::write(
        pdir.join("00000000000000000000.index"),
        [0u8, 0, 0, 9, 0, 0, 1, 0],
    )
    .unwrap();
    std::fs::write(pdir.join("00000000000000000000.timeindex"), [1u8; 12]).unwrap();
    let log = open(d.path(), small_segments());
    for i in 0..5 {
        log.append_as_leader(&batch(&["v"], i), 0, 0).unwrap();
    }
    assert_eq!(read_all(&log, 0, 1 << 20).len(), 5);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
}
