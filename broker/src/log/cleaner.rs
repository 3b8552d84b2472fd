//! The log cleaner of one data directory: a thread that, every `backoff` (or at once
//! after a pass that did work), picks the compacted partition most in need — one past
//! `max.compaction.lag.ms` or with an expired tombstone horizon first, then the highest
//! dirty ratio at or above `min.cleanable.dirty.ratio` — and runs one pass on it
//! ([`Log::clean`]). Leaders and followers clean their own copies independently; a
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
    // Partitions whose last pass failed, with when to try again: one bad segment must
    // not make the cleaner spin on it or starve the rest.
    let mut failed: HashMap<TopicPartition, Instant> = HashMap::new();
    loop {
        if *shared.stop.lock() {
            return;
        }
        let worked =
            config.enabled && clean_one(&config, &partitions, &throttle, &mut failed, shared);
        if !worked {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.wake.wait_for(&mut stop, config.backoff);
            }
        }
    }
}

/// Cleans the partition most in need; false when none was due.
fn clean_one(
    config: &CleanerConfig,
    partitions: &PartitionSource,
    throttle: &Option<Arc<Throttle>>,
    failed: &mut HashMap<TopicPartition, Instant>,
    shared: &Shared,
) -> bool {
    let now = now_ms();
    let mut best: Option<(f64, Arc<Log>, u64, u64)> = None;
    for (log, hw) in partitions() {
        let tp = log.topic_partition().clone();
        if failed.get(&tp).is_some_and(|until| Instant::now() < *until) {
            continue;
        }
        let view = log.compaction_view(now, hw);
        if log.config().cleanup_policy.compacts() {
            metrics::gauge!("sluice_log_dirty_ratio", "topic" => tp.topic.clone(), "partition" => tp.partition.to_string())
                .set(view.dirty_ratio);
        }
        if view.due && best.as_ref().is_none_or(|b| view.dirty_ratio > b.0) {
            best = Some((view.dirty_ratio, log, hw, view.dirty_bytes));
        }
    }
    let Some((_, log, hw, dirty_bytes)) = best else {
        return false;
    };
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
    let tp = log.topic_partition().clone();
    match log.clean(&opts) {
        Ok(Some(stats)) => {
            let mut t = shared.totals.lock();
            t.runs += 1;
            t.bytes_read += stats.bytes_read;
            t.bytes_written += stats.bytes_written;
            t.records_removed += stats.records_removed;
            metrics::counter!("sluice_cleaner_runs_total").increment(1);
            metrics::counter!("sluice_cleaner_bytes_read_total").increment(stats.bytes_read);
            metrics::counter!("sluice_cleaner_bytes_written_total").increment(stats.bytes_written);
            metrics::counter!("sluice_cleaner_records_removed_total")
                .increment(stats.records_removed);
            metrics::gauge!("sluice_cleaner_last_clean_timestamp_seconds", "topic" => tp.topic.clone(), "partition" => tp.partition.to_string())
                .set(now as f64 / 1000.0);
            true
        }
        Ok(None) => false,
        Err(e) => {
            let retry = match e {
                LogError::CleanerBufferTooSmall { .. } => Duration::from_secs(600),
                _ => Duration::from_secs(60),
            };
            warn!(partition = %tp, error = %e, retry_in_s = retry.as_secs(), "compaction failed; the partition keeps serving uncompacted");
            failed.insert(tp, Instant::now() + retry);
            false
        }
    }
}
