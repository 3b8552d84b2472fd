//! Storage benchmarks.
//!
//! First, the append-versus-disk comparison the performance docs quote: for each
//! record and batch size, the same bytes are appended through `Log::append_as_leader`
//! and written with plain `write(2)` to the same directory, in the same run, and the
//! ratio printed (best of several rounds each, interleaved). Then divan runs the
//! micro-benchmarks: append, sequential read (sealed and active segments), index lookup,
//! batch validation. Between them, the flush-per-append comparison
//! (`SLUICE_BENCH_ONLY=flush` runs only it; `SLUICE_BENCH_SYNCS` appends per round,
//! default 2000). `SLUICE_BENCH_ONLY=micro` runs only the divan benches.
//!
//! Run: `cargo bench -p sluice-benches --bench log` (set `SLUICE_BENCH_MB` to change
//! the bytes per round, default 256; `SLUICE_BENCH_DIR` to pick the disk).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_benches::{batch_of_size, mb_per_sec, raw_write};
use sluice_broker::log::{LogConfig, LogManager};
use sluice_proto::batch::ValidateOptions;
use sluice_proto::TopicPartition;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("SLUICE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("bench dir"),
        Err(_) => {
            tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir under target/")
        }
    }
}

fn append_round(
    dir: &PathBuf,
    batch: &sluice_proto::RecordBatch,
    total: u64,
    fsync: bool,
) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    let (m, _) = LogManager::open(dir, LogConfig::default()).expect("open");
    let log = m
        .get_or_create(&TopicPartition::new("bench", 0), LogConfig::default())
        .expect("log");
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        log.append_as_leader(batch, 0, 0).expect("append");
        written += batch.size() as u64;
    }
    if fsync {
        log.flush().expect("flush");
    }
    let took = start.elapsed();
    drop(log);
    drop(m);
    std::fs::remove_dir_all(dir).expect("cleanup");
    took
}

fn compare_with_disk() {
    let mb: u64 = std::env::var("SLUICE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = mb * 1024 * 1024;
    let root = bench_dir();
    let logdir = root.path().join("data");
    println!(
        "append vs write(2), same bytes, same directory ({}), {mb} MiB per round, best of 3",
        root.path().display()
    );
    println!("durability: acks n/a (storage only), replication none, fsync as shown");
    println!(
        "{:>8} {:>8} {:>7} {:>12} {:>12} {:>7}",
        "record", "batch", "fsync", "log MB/s", "write MB/s", "ratio"
    );
    for fsync in [false, true] {
        for (record, batch_bytes) in [
            (100, 16 * 1024),
            (100, 1 << 20),
            (1024, 16 * 1024),
            (1024, 1 << 20),
        ] {
            let batch = batch_of_size(batch_bytes, record);
            let chunk = batch.as_bytes().to_vec();
            let (mut best_log, mut best_raw) = (Duration::MAX, Duration::MAX);
            for _ in 0..3 {
                best_raw = best_raw.min(raw_write(root.path(), &chunk, total, fsync));
                best_log = best_log.min(append_round(&logdir, &batch, total, fsync));
            }
            let (l, r) = (mb_per_sec(total, best_log), mb_per_sec(total, best_raw));
            println!(
                "{:>7}B {:>7}K {:>7} {:>12.0} {:>12.0} {:>6.0}%",
                record,
                batch_bytes / 1024,
                if fsync { "end" } else { "none" },
                l,
                r,
                100.0 * l / r
            );
        }
    }
    println!();
}

/// One fsync per append (`flush.messages=1`, a producer waiting on every write) against
/// the disk doing the same: `write(2)` of the same bytes and `fdatasync` each time, to a
/// file in the same directory. Interleaved rounds; best of 3.
fn compare_flush_per_append() {
    let n: u64 = std::env::var("SLUICE_BENCH_SYNCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let root = bench_dir();
    let logdir = root.path().join("data");
    println!(
        "append + flush per batch vs write(2) + fdatasync per batch, {n} per round, best of 3"
    );
    println!("durability: acks n/a (storage only), replication none, fsync every append");
    println!(
        "{:>8} {:>12} {:>14} {:>7}",
        "batch", "log /s", "write+sync /s", "ratio"
    );
    for batch_bytes in [1024usize, 16 * 1024] {
        let batch = batch_of_size(batch_bytes, 1024.min(batch_bytes));
        let chunk = batch.as_bytes().to_vec();
        let (mut best_log, mut best_raw) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            best_raw = best_raw.min(raw_write_sync_each(root.path(), &chunk, n));
            best_log = best_log.min(flush_each_round(&logdir, &batch, n));
        }
        let per_sec = |d: Duration| n as f64 / d.as_secs_f64();
        let (l, r) = (per_sec(best_log), per_sec(best_raw));
        println!(
            "{:>7}K {:>12.0} {:>14.0} {:>6.0}%",
            batch_bytes / 1024,
            l,
            r,
            100.0 * l / r
        );
    }
    println!();
}

fn flush_each_round(dir: &PathBuf, batch: &sluice_proto::RecordBatch, n: u64) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    let (m, _) = LogManager::open(dir, LogConfig::default()).expect("open");
    let log = m
        .get_or_create(&TopicPartition::new("bench", 0), LogConfig::default())
        .expect("log");
    let start = Instant::now();
    for _ in 0..n {
        log.append_as_leader(batch, 0, 0).expect("append");
        log.flush().expect("flush");
    }
    let took = start.elapsed();
    drop(log);
    drop(m);
    std::fs::remove_dir_all(dir).expect("cleanup");
    took
}

fn raw_write_sync_each(dir: &std::path::Path, chunk: &[u8], n: u64) -> Duration {
    use std::io::Write;
    let path = dir.join("raw-sync");
    let mut f = std::fs::File::create(&path).expect("raw file");
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(chunk).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let took = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).expect("cleanup");
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return divan::main();
    }
    match std::env::var("SLUICE_BENCH_ONLY").as_deref() {
        Ok("flush") => return compare_flush_per_append(),
        // The divan micro-benchmarks alone (a name filter may follow: `-- sequential_read`).
        Ok("micro") => return divan::main(),
        _ => {}
    }
    compare_with_disk();
    compare_flush_per_append();
    divan::main();
}

mod micro {
    use super::*;
    use divan::counter::BytesCount;
    use divan::Bencher;
    use std::sync::Arc;

    const SIZES: &[(usize, usize)] = &[
        (100, 16 * 1024),
        (100, 1 << 20),
        (1024, 16 * 1024),
        (1024, 1 << 20),
    ];

    /// Appending one batch to a page-cache-backed log (no fsync).
    #[divan::bench(args = SIZES, sample_count = 30)]
    fn append(bencher: Bencher, &(record, batch_bytes): &(usize, usize)) {
        let root = bench_dir();
        let (m, _) = LogManager::open(root.path(), LogConfig::default()).unwrap();
        let config = LogConfig {
            segment_bytes: 256 << 20,
            ..LogConfig::default()
        };
        let log = m
            .get_or_create(&TopicPartition::new("b", 0), config)
            .unwrap();
        let batch = batch_of_size(batch_bytes, record);
        bencher
            .counter(BytesCount::new(batch.size()))
            .bench_local(|| log.append_as_leader(&batch, 0, 0).unwrap());
    }

    /// `sealed`: 64 MiB segments, the last rolled (read through mmaps); else one
    /// active segment (read with `pread`).
    fn filled_log(
        batch_bytes: usize,
        total: usize,
        sealed: bool,
    ) -> (tempfile::TempDir, LogManager, Arc<sluice_broker::log::Log>) {
        let root = bench_dir();
        let (m, _) = LogManager::open(root.path(), LogConfig::default()).unwrap();
        let config = LogConfig {
            segment_bytes: if sealed { 64 << 20 } else { 1 << 30 },
            ..LogConfig::default()
        };
        let log = m
            .get_or_create(&TopicPartition::new("r", 0), config)
            .unwrap();
        let batch = batch_of_size(batch_bytes, 1024);
        for _ in 0..total / batch.size() {
            log.append_as_leader(&batch, 0, 0).unwrap();
        }
        if sealed {
            log.roll_now(0).unwrap();
        }
        (root, m, log)
    }

    /// Reading a whole 256 MiB log front to back, 1 MiB per read: sealed segments
    /// (mmap) and the active segment (`pread`), from the page cache.
    #[divan::bench(args = ["sealed", "active"], sample_count = 10)]
    fn sequential_read(bencher: Bencher, segments: &str) {
        let total = 256 << 20;
        let (_root, _m, log) = filled_log(16 * 1024, total, segments == "sealed");
        bencher.counter(BytesCount::new(total)).bench_local(|| {
            let mut next = 0;
            let mut bytes = 0;
            while next < log.log_end_offset() {
                let r = log.read(next, 1 << 20, None).unwrap();
                let last = sluice_proto::batch::Batches::new(r.data.clone())
                    .last()
                    .unwrap()
                    .unwrap();
                next = last.next_offset() as u64;
                bytes += r.data.len();
            }
            bytes
        });
    }

    /// Locating a random offset in a 256 MiB log (index binary search + short scan).
    #[divan::bench(sample_count = 30)]
    fn index_lookup(bencher: Bencher) {
        let (_root, _m, log) = filled_log(16 * 1024, 256 << 20, true);
        let end = log.log_end_offset();
        let mut x: u64 = 88172645463325252;
        bencher.bench_local(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            log.read(x % end, 1, None).unwrap().data.len()
        });
    }

    /// Validating a producer batch (CRC + walking every record).
    #[divan::bench(args = SIZES, sample_count = 30)]
    fn validate(bencher: Bencher, &(record, batch_bytes): &(usize, usize)) {
        let batch = batch_of_size(batch_bytes, record);
        bencher
            .counter(BytesCount::new(batch.size()))
            .bench_local(|| {
                let b = sluice_proto::RecordBatch::from_bytes(batch.as_bytes().clone()).unwrap();
                b.validate(&ValidateOptions::default()).unwrap()
            });
    }
}
