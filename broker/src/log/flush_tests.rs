//! Flushing rolled segments bounds crash recovery: after `flush_rolled` and a recovery
//! checkpoint, a crash (no clean-shutdown marker) rescans only the active segment.

use sluice_proto::{BatchBuilder, Compression, TopicPartition};

use crate::log::{LogConfig, LogManager};

fn batch(n: usize) -> sluice_proto::RecordBatch {
    let value = vec![b'x'; 400];
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        b.append(i as i64, None, Some(&value), &[]);
    }
    b.build().unwrap()
}

fn reopen_scans(flush_rolled: bool) -> (usize, usize, u64) {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        ..LogConfig::default()
    };
    let tp = TopicPartition::new("t", 0);
    let end = {
        let (m, _) = LogManager::open(d.path(), config.clone()).unwrap();
        let log = m.get_or_create(&tp, config.clone()).unwrap();
        for _ in 0..200 {
            log.append_as_leader(&batch(10), 0, 0).unwrap();
        }
        if flush_rolled {
            let flushed = log.flush_rolled().unwrap();
            assert!(flushed > 0 && flushed < log.log_end_offset());
        }
        m.checkpoint_recovery_points().unwrap();
        log.log_end_offset()
        // Dropped without shutdown: no clean-shutdown marker, as after kill -9.
    };
    let (m, failed) = LogManager::open(d.path(), config.clone()).unwrap();
    assert!(failed.is_empty() && !m.was_clean());
    let log = m.get(&tp).unwrap();
    assert_eq!(log.log_end_offset(), end, "nothing lost");
    let s = log.open_stats();
    (s.segments_scanned, s.segments, end)
}

#[test]
fn a_crash_after_rolled_segments_were_flushed_rescans_only_the_active_segment() {
    let (scanned, segments, _) = reopen_scans(true);
    assert!(segments > 50, "{segments} segments");
    assert_eq!(
        scanned, 1,
        "only the active segment of {segments} is scanned"
    );
    let (scanned, segments, _) = reopen_scans(false);
    assert_eq!(
        scanned, segments,
        "without it, everything since the start is scanned"
    );
}
