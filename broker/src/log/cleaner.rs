//! The log cleaner of one data directory: a thread that, every `backoff` (or at once
//! after a pass that did work), picks the compacted partition most in need — one past
//! `max.compaction.lag.ms` or with an expired tombstone horizon first, then the highest
//! dirty ratio at or above `min.cleanable.dirty.ratio` — and runs one pass on it
//! ([`Log::clean`]). A partition that was due but planned nothing (its dirty segments
//! younger than `min.compaction.lag.ms`, say) rests for `backoff` and the next one is
//! tried at once, as after a failed pass (which rests a minute), so one such partition
//! never holds up the others. Leaders and followers clean their own copies independently; a
//! pass never changes what a reader sees at an offset, except that superseded records
//! are gone.
//!
//! The caller supplies the partitions and their high watermarks (the log knows
//! neither), so this module stays free of replication. All cleaner I/O goes through
//! one [`Throttle`] (`log.cleaner.io.max.bytes.per.second`).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use sluice_proto::TopicPartition;
use tracing::warn;

use super::{CleanOptions, Log, LogError};

/// Broker-wide cleaner settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// `log.cleaner.dedupe.buffer.size`: memory for the key → offset map of one pass.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: read + written; `None` = unthrottled.
    pub io_max_bytes_per_second: Option<u64>,
    /// `log.cleaner.backoff.ms`: sleep when no partition needs cleaning.
    pub backoff: Duration,
    /// `producer.id.expiration.ms`: an idle producer's last batch is not kept past it.
    pub producer_expiration_ms: i64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enabled: true,
            dedupe_buffer_bytes: 128 * 1024 * 1024,
            io_max_bytes_per_second: None,
            backoff: Duration::from_secs(15),
            producer_expiration_ms: 24 * 3600 * 1000,
        }
    }
}

/// A token bucket over bytes: [`Throttle::consume`] sleeps the caller just long enough
/// to hold the long-run rate.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: u64,
    /// (window start, bytes used since).
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle {
            bytes_per_second: bytes_per_second.max(1),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    pub fn consume(&self, bytes: u64) {
        let wait = {
            let mut w = self.window.lock();
            if w.0.elapsed() > Duration::from_secs(1) {
                *w = (Instant::now(), 0);
            }
            w.1 += bytes;
            let due = Duration::from_secs_f64(w.1 as f64 / self.bytes_per_second as f64);
            due.saturating_sub(w.0.elapsed())
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// What the cleaner has done, for metrics and `topic describe`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerTotals {
    pub runs: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
}

/// The partitions to consider, each with its high watermark.
pub type PartitionSource = Box<dyn Fn() -> Vec<(Arc<Log>, u64)> + Send>;

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    totals: Mutex<CleanerTotals>,
}

/// A running cleaner thread; stopped (and joined) by [`Cleaner::stop`] or on drop.
pub struct Cleaner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Cleaner {
    pub fn start(config: CleanerConfig, partitions: PartitionSource) -> Cleaner {
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            totals: Mutex::new(CleanerTotals::default()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-cleaner".into())
            .spawn(move || run(config, partitions, &s))
            .expect("spawning a thread");
        Cleaner {
            shared,
            thread: Some(thread),
        }
    }

    pub fn totals(&self) -> CleanerTotals {
        *self.shared.totals.lock()
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cleaner {
    fn drop(&mut self) {
        self.halt();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn run(config: CleanerConfig, partitions: PartitionSource, shared: &Shared) {
    let throttle = config
        .io_max_bytes_per_second
        .map(|r| Arc::new(Throttle::new(r)));
    // Partitions not to look at before the given time: one whose last pass failed (one
    // bad segment must not make the cleaner spin on it or starve the rest), and one that
    // was due but had nothing to clean (say, every dirty segment younger than
    // `min.compaction.lag.ms`): planning it again at once would only repeat that.
    let mut resting: HashMap<TopicPartition, Instant> = HashMap::new();
    loop {
        if *shared.stop.lock() {
            return;
        }
        let worked =
            config.enabled && clean_one(&config, &partitions, &throttle, &mut resting, shared);
        if !worked {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.wake.wait_for(&mut stop, config.backoff);
            }
        }
    }
}

/// Runs one pass on the partition most in need that has something to clean, trying
/// the next when one plans nothing or fails; false when none did any work.
fn clean_one(
    config: &CleanerConfig,
    partitions: &PartitionSource,
    throttle: &Option<Arc<Throttle>>,
    resting: &mut HashMap<TopicPartition, Instant>,
    shared: &Shared,
) -> bool {
    let now = now_ms();
    resting.retain(|_, until| Instant::now() < *until);
    let mut due: Vec<(f64, Arc<Log>, u64, u64)> = Vec::new();
    for (log, hw) in partitions() {
        let tp = log.topic_partition().clone();
        if resting.contains_key(&tp) {
            continue;
        }
        let view = log.compaction_view(now, hw);
        if log.config().cleanup_policy.compacts() {
            metrics::gauge!("sluice_log_dirty_ratio", "topic" => tp.topic.clone(), "partition" => tp.partition.to_string())
                .set(view.dirty_ratio);
        }
        if view.due {
            due.push((view.dirty_ratio, log, hw, view.dirty_bytes));
        }
    }
    // Highest dirty ratio first; the sort is stable, so ties keep the source's order.
    due.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, log, hw, dirty_bytes) in due {
        let tp = log.topic_partition().clone();
        match clean_log(config, &log, hw, dirty_bytes, now, throttle, shared) {
            Ok(true) => return true,
            Ok(false) => {
                resting.insert(tp, Instant::now() + config.backoff);
            }
            Err(e) => {
                let retry = match e {
                    LogError::CleanerBufferTooSmall { .. } => Duration::from_secs(600),
                    _ => Duration::from_secs(60),
                };
                warn!(partition = %tp, error = %e, retry_in_s = retry.as_secs(), "compaction failed; the partition keeps serving uncompacted");
                resting.insert(tp, Instant::now() + retry);
            }
        }
    }
    false
}

/// One pass on `log`; false when it had nothing to clean.
fn clean_log(
    config: &CleanerConfig,
    log: &Log,
    hw: u64,
    dirty_bytes: u64,
    now: i64,
    throttle: &Option<Arc<Throttle>>,
    shared: &Shared,
) -> Result<bool, LogError> {
    // The map never needs more slots than the dirty section has records (8+ bytes each).
    let needed = (dirty_bytes / 8 + 1024).saturating_mul(27) as usize;
    let opts = CleanOptions {
        now_ms: now,
        high_watermark: hw,
        dedupe_buffer_bytes: config.dedupe_buffer_bytes.min(needed),
        producer_expiration_ms: config.producer_expiration_ms,
        crash_at: None,
        throttle: throttle.clone(),
    };
    let Some(stats) = log.clean(&opts)? else {
        return Ok(false);
    };
    let tp = log.topic_partition();
    let mut t = shared.totals.lock();
    t.runs += 1;
    t.bytes_read += stats.bytes_read;
    t.bytes_written += stats.bytes_written;
    t.records_removed += stats.records_removed;
    metrics::counter!("sluice_cleaner_runs_total").increment(1);
    metrics::counter!("sluice_cleaner_bytes_read_total").increment(stats.bytes_read);
    metrics::counter!("sluice_cleaner_bytes_written_total").increment(stats.bytes_written);
    metrics::counter!("sluice_cleaner_records_removed_total").increment(stats.records_removed);
    metrics::gauge!("sluice_cleaner_last_clean_timestamp_seconds", "topic" => tp.topic.clone(), "partition" => tp.partition.to_string())
        .set(now as f64 / 1000.0);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{CleanupPolicy, LogConfig, LogManager};
    use sluice_proto::{BatchBuilder, Compression};

    fn compacted(min_compaction_lag_ms: i64) -> LogConfig {
        LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            min_compaction_lag_ms,
            min_cleanable_dirty_ratio: 0.01,
            ..LogConfig::default()
        }
    }

    /// Issue 18: the cleaner picked the partition with the highest dirty ratio, and when
    /// its pass planned nothing (its dirty segments younger than
    /// `min.compaction.lag.ms`), slept `backoff` — every round, so a partition behind it
    /// was never cleaned.
    #[test]
    fn a_partition_that_plans_nothing_does_not_hold_up_the_next() {
        let d = tempfile::tempdir().unwrap();
        let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        let now = now_ms();
        let young = logs
            .get_or_create(&TopicPartition::new("young", 0), compacted(3_600_000))
            .unwrap();
        let ready = logs
            .get_or_create(&TopicPartition::new("ready", 0), compacted(0))
            .unwrap();
        for log in [&young, &ready] {
            for v in ["1", "2", "3"] {
                let mut b = BatchBuilder::new(Compression::None);
                b.append(now, Some(b"k"), Some(v.as_bytes()), &[]);
                log.append_as_leader(&b.build().unwrap(), 0, now).unwrap();
            }
            log.roll_now(now).unwrap();
        }
        let (young_log, ready_log) = (young.clone(), ready.clone());
        // Both equally dirty; the young one comes first, as the highest ratio would.
        let source: PartitionSource = Box::new(move || {
            vec![
                (young_log.clone(), young_log.log_end_offset()),
                (ready_log.clone(), ready_log.log_end_offset()),
            ]
        });
        let cleaner = Cleaner::start(
            CleanerConfig {
                backoff: Duration::from_secs(60),
                ..CleanerConfig::default()
            },
            source,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while cleaner.totals().runs == 0 {
            assert!(
                Instant::now() < deadline,
                "the ready partition was not cleaned within 10 s (backoff 60 s)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cleaner.stop();
        assert_eq!(ready.segment_count(), 2);
        assert_eq!(
            ready.size_bytes() * 3,
            young.size_bytes(),
            "one of three records left"
        );
    }
}
