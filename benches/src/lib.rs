//! Helpers shared by Sluice's storage benchmarks.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_proto::{BatchBuilder, Compression, RecordBatch};

/// A batch of `records` records of `record_bytes` each (values only, no key).
pub fn make_batch(records: usize, record_bytes: usize) -> RecordBatch {
    let value: Vec<u8> = (0..record_bytes).map(|i| (i % 251) as u8).collect();
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..records {
        b.append(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.build().expect("batch builds")
}

/// A batch of about `batch_bytes` made of `record_bytes` records.
pub fn batch_of_size(batch_bytes: usize, record_bytes: usize) -> RecordBatch {
    // Value plus per-record framing (length, attributes, deltas, key and value lengths).
    let per_record = record_bytes + 12;
    make_batch(((batch_bytes - 61) / per_record).max(1), record_bytes)
}

/// Time to write `bytes` to a new file in `dir` with plain `write(2)` calls of
/// `chunk` bytes, optionally followed by one fsync: the disk's own baseline.
pub fn raw_write(dir: &Path, chunk: &[u8], total_bytes: u64, fsync: bool) -> Duration {
    let path = dir.join("raw-baseline");
    let _ = std::fs::remove_file(&path);
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).expect("create baseline file");
    let mut written = 0;
    while written < total_bytes {
        f.write_all(chunk).expect("write baseline");
        written += chunk.len() as u64;
    }
    if fsync {
        f.sync_data().expect("fsync baseline");
    }
    let took = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).expect("remove baseline");
    took
}

pub fn mb_per_sec(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// The Table benchmark's row `i`: a 13-byte key and a JSON value padded to
/// `value_bytes`. Deterministic, so the Table harness and the Postgres baseline
/// (`table_bootstrap`, `pg_copy_load`) load exactly the same rows.
pub fn table_row(i: u64, value_bytes: usize) -> (String, String) {
    let key = format!("user:{i:08}");
    let mut value = format!("{{\"id\":{i},\"name\":\"user {i}\",\"pad\":\"");
    while value.len() + 2 < value_bytes {
        value.push((b'a' + (i % 26) as u8) as char);
    }
    value.push_str("\"}");
    (key, value)
}

/// This process's resident set size (`VmRSS` of /proc/self/status), 0 if unknown.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
