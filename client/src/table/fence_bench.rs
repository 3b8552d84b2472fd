//! Measurement (not a test: `#[ignore]`d, run in release by hand) of a large
//! transaction's apply: a 1 M-row UPDATE of a 1 M-row table while a reader thread loops
//! on `get`. Reports the longest `get` (the stall readers see), time to visible (the
//! apply from start to flip), the longest write-lock round, and the process's RSS before
//! and its peak during the apply. `SLUICE_FENCE_BENCH_MODE=before` applies the unit in
//! one lock round (the path every unit took before the fence: `large_unit_records` =
//! max), `after` (default) with the default `TableConfig`. One mode per process, so the
//! peak RSS is the mode's own:
//!
//! ```text
//! cargo test --release -p sluice-client --lib fence_bench -- --ignored --nocapture
//! ```
//!
//! `SLUICE_FENCE_BENCH_ROWS` (default 1000000) sets the size, `SLUICE_FENCE_BENCH_CHUNK`
//! `apply_chunk_records` (default 1024); `SLUICE_FENCE_BENCH_READER=0` applies with no
//! reader (the apply's own cost). Nothing is asserted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::table::TableConfig;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux: writing 5 to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn row_value(i: usize, version: u32) -> String {
    // ~100 B of JSON, like a user row.
    format!(
        r#"{{"id":{i},"version":{version},"name":"user {i:08}","email":"user{i:08}@example.com","balance":{}}}"#,
        (i as u64 * 7919 + version as u64) % 100_000
    )
}

#[test]
#[ignore = "a release measurement, run by hand (docs/performance.md)"]
fn fence_bench() {
    let rows: usize = env("SLUICE_FENCE_BENCH_ROWS", "1000000").parse().unwrap();
    let mode = env("SLUICE_FENCE_BENCH_MODE", "after");
    let defaults = TableConfig::default();
    let chunk: usize = env(
        "SLUICE_FENCE_BENCH_CHUNK",
        &defaults.apply_chunk_records.to_string(),
    )
    .parse()
    .unwrap();
    let large = match mode.as_str() {
        "before" => usize::MAX,
        _ => defaults.large_unit_records.max(chunk),
    };
    let s = super::fence_tests::set(1, defaults.shards, chunk, large);
    let key = |i: usize| format!("user-{i:08}");
    let store = &s.topics[0].store;
    for i in 0..rows {
        let k = key(i);
        let hash = store.hash(k.as_bytes());
        let mut shard = store.shards()[store.shard_of(hash)].write();
        shard
            .apply(
                store.hasher(),
                hash,
                k.as_bytes(),
                Some(row_value(i, 0).as_bytes()),
                None,
            )
            .unwrap();
    }
    let unit = super::fence_tests::unit(vec![(
        0,
        0,
        (0..rows).map(|i| (key(i), Some(row_value(i, 1)))).collect(),
    )]);
    let table_mib = store.totals().memory_bytes as f64 / (1 << 20) as f64;
    reset_peak();
    let (rss_before, _) = rss_mib();

    let reading = env("SLUICE_FENCE_BENCH_READER", "1") != "0";
    let done = AtomicBool::new(false);
    let (applied, gets) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 22);
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            while reading && !done.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let k = key(rng as usize % rows);
                let t = Instant::now();
                std::hint::black_box(store.get(k.as_bytes()));
                lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
            }
            lat
        });
        // Let the reader run alone for a moment (a baseline for its latencies).
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        apply_unit(&s, unit).unwrap();
        let applied = t.elapsed();
        std::thread::sleep(Duration::from_millis(200));
        done.store(true, Ordering::Relaxed);
        (applied, reader.join().unwrap())
    });
    let (rss_after, peak) = rss_mib();
    let mut sorted = gets.clone();
    sorted.sort_unstable();
    if sorted.is_empty() {
        sorted.push(0); // no reader: figures of 0
    }
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    assert_eq!(
        store.get(key(rows - 1).as_bytes()).as_deref(),
        Some(row_value(rows - 1, 1).as_bytes())
    );
    println!(
        "fence_bench mode={mode} rows={rows} large_unit_records={large} chunk={} \
         table_mib={table_mib:.1} time_to_visible_ms={:.1} lock_round_max_ms={:.2} \
         gets={} get_p50_us={:.2} get_p999_us={:.1} get_max_ms={:.2} gets_over_1ms={} \
         gets_over_10ms={} \
         rss_before_mib={rss_before:.1} rss_peak_mib={peak:.1} rss_after_mib={rss_after:.1} \
         peak_over_before_mib={:.1}",
        chunk,
        applied.as_secs_f64() * 1000.0,
        s.apply_lock_max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        sorted.len(),
        pct(0.5),
        pct(0.999),
        pct(1.0) / 1000.0,
        sorted.iter().filter(|&&ns| ns > 1_000_000).count(),
        sorted.iter().filter(|&&ns| ns > 10_000_000).count(),
        peak - rss_before,
    );
}
