//! Log cleaner throughput against a plain sequential read of the same segment files,
//! in the same run, on the same disk.
//!
//! Builds one compacted partition log of `SLUICE_BENCH_MB` MiB (default 256) through
//! `Log::append_as_leader`: records of a `key-NNNNNNN` key and `SLUICE_BENCH_VALUE`
//! bytes of value (default 200), keys drawn at random from `SLUICE_BENCH_KEYS`
//! (default 250 000, so about 4–5 updates per key), ~16 KiB batches (the producer's
//! `batch.size`), codec `SLUICE_BENCH_CODEC` (none, lz4, zstd, snappy, gzip; default
//! none), `segment.bytes` `SLUICE_BENCH_SEGMENT_MB` (default 64). The active segment is
//! rolled so that every byte is cleanable. Then, each on a fresh copy of that log:
//!
//! - read: every `.log` file read start to end with 1 MiB `read(2)` calls;
//! - clean: one full `Log::clean` pass (dedupe buffer `SLUICE_BENCH_DEDUPE_MB`, default
//!   128, the broker default; no I/O throttle). The cleaner fsyncs each new segment
//!   and the directory at every swap, so this is a durable rewrite; the read is not.
//!
//! both warm (files just read, in the page cache) and, when this process may write
//! `/proc/sys/vm/drop_caches` (root), cold (`sync` then drop caches first).
//! Throughput is the log's size on disk before the pass divided by the wall time.
//!
//! Run: `cargo run --release -p sluice-benches --example cleaner`
//! (`SLUICE_BENCH_DIR` picks the disk; default a temp dir under `target/`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_benches::mb_per_sec;
use sluice_broker::log::{CleanOptions, CleanStats, CleanupPolicy, LogConfig, LogManager};
use sluice_proto::{BatchBuilder, Compression, TopicPartition};

/// What one run is made of, from the environment.
struct Settings {
    mb: u64,
    keys: u64,
    value_bytes: usize,
    codec: Compression,
    segment_bytes: u64,
    dedupe_bytes: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        let codec = match std::env::var("SLUICE_BENCH_CODEC").as_deref() {
            Err(_) | Ok("none") => Compression::None,
            Ok("lz4") => Compression::Lz4,
            Ok("zstd") => Compression::Zstd,
            Ok("snappy") => Compression::Snappy,
            Ok("gzip") => Compression::Gzip,
            Ok(other) => panic!("SLUICE_BENCH_CODEC={other}: none, lz4, zstd, snappy or gzip"),
        };
        Settings {
            mb: env_or("SLUICE_BENCH_MB", 256),
            keys: env_or("SLUICE_BENCH_KEYS", 250_000),
            value_bytes: env_or("SLUICE_BENCH_VALUE", 200),
            codec,
            segment_bytes: env_or::<u64>("SLUICE_BENCH_SEGMENT_MB", 64) << 20,
            dedupe_bytes: env_or::<usize>("SLUICE_BENCH_DEDUPE_MB", 128) << 20,
        }
    }

    fn log_config(&self) -> LogConfig {
        LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: self.segment_bytes,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tp() -> TopicPartition {
    TopicPartition::new("bench", 0)
}

/// Writes the log under `dir` and closes it cleanly; returns the records written.
fn build(dir: &Path, s: &Settings) -> u64 {
    let (m, _) = LogManager::open(dir, s.log_config()).expect("open data dir");
    let log = m.get_or_create(&tp(), s.log_config()).expect("create log");
    let total = s.mb << 20;
    let value: Vec<u8> = (0..s.value_bytes).map(|i| (i % 251) as u8).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut records, mut written) = (0u64, 0u64);
    while written < total {
        let mut b = BatchBuilder::new(s.codec);
        let ts = now_ms();
        let mut raw = 0;
        while raw < 16 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("key-{:07}", x % s.keys);
            b.append(ts, Some(key.as_bytes()), Some(&value), &[]);
            raw += key.len() + value.len() + 12;
            records += 1;
        }
        let batch = b.build().expect("batch");
        log.append_as_leader(&batch, 0, ts).expect("append");
        written += batch.size() as u64;
    }
    log.roll_now(now_ms()).expect("roll");
    drop(log);
    m.shutdown().expect("clean shutdown");
    records
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(tp().dir_name()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn log_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Reads every segment file start to end; returns the bytes read.
fn read_all(dir: &Path) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for p in segment_files(dir) {
        let mut f = std::fs::File::open(&p).unwrap();
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    total
}

/// `sync` and drop the page cache; false when not permitted.
fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc_sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

extern "C" {
    #[link_name = "sync"]
    fn libc_sync();
}

/// One clean pass over a fresh copy of `built` at `work`, cold or warm.
fn clean_once(built: &Path, work: &Path, s: &Settings, cold: bool) -> (Duration, CleanStats) {
    copy_dir(built, work);
    let (m, failed) = LogManager::open(work, s.log_config()).expect("open copy");
    assert!(failed.is_empty(), "{failed:?}");
    let log = m.get(&tp()).expect("the copied log");
    if cold {
        drop_caches();
    } else {
        read_all(work);
    }
    let opts = CleanOptions {
        now_ms: now_ms(),
        high_watermark: log.log_end_offset(),
        dedupe_buffer_bytes: s.dedupe_bytes,
        producer_expiration_ms: 24 * 3600 * 1000,
        crash_at: None,
        throttle: None,
    };
    let start = Instant::now();
    let stats = log.clean(&opts).expect("clean").expect("a pass was due");
    let took = start.elapsed();
    drop(log);
    m.shutdown().expect("shutdown");
    (took, stats)
}

fn main() {
    let s = Settings::from_env();
    let root = match std::env::var("SLUICE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("bench dir"),
        Err(_) => {
            let under = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
            std::fs::create_dir_all(&under).unwrap();
            tempfile::tempdir_in(under).expect("bench dir under target/")
        }
    };
    let built = root.path().join("built");
    let work = root.path().join("work");
    let started = Instant::now();
    let records = build(&built, &s);
    let size = log_bytes(&built);
    println!(
        "log: {:.0} MB on disk, {records} records, {} keys ({:.1} updates/key), value {} B, \
         key 11 B, ~16 KiB batches, codec {:?}, segment.bytes {} MiB, {} segments; built in {:.1?}",
        size as f64 / 1e6,
        s.keys,
        records as f64 / s.keys as f64,
        s.value_bytes,
        s.codec,
        s.segment_bytes >> 20,
        segment_files(&built).len(),
        started.elapsed()
    );
    println!(
        "cleaner: dedupe buffer {} MiB, no throttle, fsync of every new segment + dir at each swap; \
         dir {}",
        s.dedupe_bytes >> 20,
        root.path().display()
    );
    let can_drop = drop_caches();
    if !can_drop {
        println!("(cannot write /proc/sys/vm/drop_caches: warm only)");
    }
    println!(
        "{:>6} {:>10} {:>11} {:>8} {:>10} {:>10} {:>9} {:>12}",
        "cache", "read MB/s", "clean MB/s", "ratio", "read s", "clean s", "out MB", "clean Mrec/s"
    );
    let modes: &[bool] = if can_drop { &[true, false] } else { &[false] };
    for &cold in modes {
        copy_dir(&built, &work);
        if cold {
            drop_caches();
        } else {
            read_all(&work);
        }
        let start = Instant::now();
        let read = read_all(&work);
        let read_took = start.elapsed();
        assert_eq!(read, size);
        let (clean_took, stats) = clean_once(&built, &work, &s, cold);
        let (r, c) = (mb_per_sec(size, read_took), mb_per_sec(size, clean_took));
        println!(
            "{:>6} {:>10.0} {:>11.0} {:>7.1}% {:>10.2} {:>10.2} {:>9.1} {:>12.2}",
            if cold { "cold" } else { "warm" },
            r,
            c,
            100.0 * c / r,
            read_took.as_secs_f64(),
            clean_took.as_secs_f64(),
            log_bytes(&work) as f64 / 1e6,
            records as f64 / clean_took.as_secs_f64() / 1e6,
        );
        println!(
            "        pass: bytes_read {:.0} MB (map + rewrite), bytes_written {:.0} MB, \
             records_removed {}, segments {} -> {}",
            stats.bytes_read as f64 / 1e6,
            stats.bytes_written as f64 / 1e6,
            stats.records_removed,
            stats.segments_before,
            stats.segments_after
        );
    }
}
