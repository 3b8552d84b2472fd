//! Table bootstrap benchmark: how long a process takes to load a compacted topic of
//! N rows into a `RawTable`, what the rows cost in memory, and how long a `get`
//! takes while the applier applies a stream of updates.
//!
//! ```text
//! table-bootstrap --bootstrap 127.0.0.1:9392 --rows 3000000 --partitions 8 [--value-bytes 100]
//!                 [--topic T] [--skip-produce] [--no-latency] [--csv PATH]
//!                 [--partition-max-bytes N] [--snapshot-dir DIR]
//! ```
//!
//! Phases: (1) produce `rows` distinct keys (acks=all, idempotent; the topic is
//! created with `cleanup.policy=compact`, RF 1) unless `--skip-produce`; (2) open a
//! table, time open → ready, read RSS before and after; (3) `get` latency (unless `--no-latency`) from a
//! reader thread, idle and while a producer updates keys the table follows. Prints
//! one JSON object. `--csv PATH` writes the same rows (`key,value`) for a
//! `COPY ... FROM` comparison (scripts/table-bench.sh is the hook for it).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use sluice_client::{
    Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord, RawTable, TableConfig,
};

use sluice_benches::{rss_bytes, table_row as row};

struct Args {
    bootstrap: String,
    topic: String,
    rows: u64,
    partitions: u32,
    value_bytes: usize,
    skip_produce: bool,
    no_latency: bool,
    csv: Option<String>,
    /// `TableConfig::partition_max_bytes` (default: the library's).
    partition_max_bytes: Option<u32>,
    /// Open with a local snapshot in this directory (and write it on exit).
    snapshot_dir: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bootstrap: "127.0.0.1:9392".into(),
        topic: String::new(),
        rows: 3_000_000,
        partitions: 1,
        value_bytes: 100,
        skip_produce: false,
        no_latency: false,
        csv: None,
        partition_max_bytes: None,
        snapshot_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = val()?,
            "--topic" => a.topic = val()?,
            "--rows" => a.rows = val()?.parse().map_err(|e| format!("--rows: {e}"))?,
            "--partitions" => {
                a.partitions = val()?.parse().map_err(|e| format!("--partitions: {e}"))?
            }
            "--value-bytes" => {
                a.value_bytes = val()?.parse().map_err(|e| format!("--value-bytes: {e}"))?
            }
            "--skip-produce" => a.skip_produce = true,
            "--no-latency" => a.no_latency = true,
            "--snapshot-dir" => a.snapshot_dir = Some(val()?),
            "--partition-max-bytes" => {
                a.partition_max_bytes = Some(
                    val()?
                        .parse()
                        .map_err(|e| format!("--partition-max-bytes: {e}"))?,
                )
            }
            "--csv" => a.csv = Some(val()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.topic.is_empty() {
        a.topic = format!("table-bench-{}-{}p", a.rows, a.partitions);
    }
    Ok(a)
}

fn write_csv(path: &str, rows: u64, value_bytes: usize) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..rows {
        let (k, v) = row(i, value_bytes);
        // CSV quoting: the value is JSON with quotes.
        writeln!(w, "{k},\"{}\"", v.replace('"', "\"\""))?;
    }
    w.flush()
}

async fn produce(client: &ClientConfig, a: &Args) -> Result<f64, sluice_client::Error> {
    let configs = [("cleanup.policy".to_string(), "compact".to_string())].into();
    Admin::new(client)
        .create_topic(&a.topic, a.partitions, 1, configs)
        .await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            batch_size: 256 * 1024,
            linger: Duration::from_millis(10),
            ..Default::default()
        },
    )
    .await?;
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..a.rows {
        let (k, v) = row(i, a.value_bytes);
        pending.push_back(
            producer
                .send(ProducerRecord::new(a.topic.as_str(), Some(k), v))
                .await?,
        );
        if pending.len() > 200_000 {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    for d in pending {
        d.await?;
    }
    producer.close().await;
    Ok(start.elapsed().as_secs_f64())
}

/// `get` latency percentiles (ns) over `n` random keys from a reader thread.
fn get_latency(table: &RawTable, rows: u64, n: usize) -> BTreeMap<&'static str, u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut found = 0usize;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("user:{:08}", x % rows.max(1));
        let t = Instant::now();
        let v = table.get(key.as_bytes());
        h.record(t.elapsed().as_nanos() as u64).ok();
        found += usize::from(v.is_some());
    }
    assert!(found > 0 || rows == 0, "no key found");
    [
        ("p50", h.value_at_quantile(0.5)),
        ("p99", h.value_at_quantile(0.99)),
        ("p999", h.value_at_quantile(0.999)),
        ("max", h.max()),
    ]
    .into()
}

/// Updates random existing keys (values of the same size, so in place) until `stop`.
async fn update_until(client: ClientConfig, a: &Args, stop: Arc<AtomicBool>) -> u64 {
    let Ok(producer) = Producer::new(&client, ProducerConfig::default()).await else {
        return 0;
    };
    let mut sent = 0u64;
    let mut pending = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let i = (sent * 7919) % a.rows.max(1);
        let (k, v) = row(i, a.value_bytes);
        let v = v.replace("user", "USER");
        match producer
            .send(ProducerRecord::new(
                a.topic.as_str(),
                Some(k),
                Bytes::from(v),
            ))
            .await
        {
            Ok(d) => pending.push_back(d),
            Err(_) => break,
        }
        if pending.len() > 10_000 {
            let _ = pending.pop_front().expect("non-empty").await;
        }
        sent += 1;
    }
    producer.close().await;
    sent
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("table-bootstrap: {e}");
            std::process::exit(2);
        }
    };
    let client = ClientConfig::new(&a.bootstrap);
    if let Some(path) = &a.csv {
        write_csv(path, a.rows, a.value_bytes).expect("write csv");
    }
    let produce_s = if a.skip_produce {
        None
    } else {
        Some(produce(&client, &a).await.expect("produce"))
    };
    let rss_before = rss_bytes();
    let opened = Instant::now();
    let mut config = TableConfig::default();
    if let Some(b) = a.partition_max_bytes {
        config.partition_max_bytes = b;
    }
    let table = match &a.snapshot_dir {
        Some(dir) => {
            RawTable::open_with_snapshot(&client, &a.topic, config, std::path::Path::new(dir)).await
        }
        None => RawTable::open(&client, &a.topic, config).await,
    }
    .expect("open");
    table.ready().await.expect("ready");
    let ready_ms = opened.elapsed().as_millis() as u64;
    let rss_after = rss_bytes();
    let stats = table.stats();
    assert_eq!(stats.rows as u64, a.rows, "every row loaded");
    // What stays once the allocator returns freed fetch buffers to the OS.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let rss_trimmed = rss_bytes();
    if a.no_latency {
        let close_started = Instant::now();
        table.close();
        table.closed().await;
        println!(
            "{}",
            serde_json::json!({"rows": a.rows, "ready_ms": ready_ms, "bytes_per_row": stats.bytes_per_row,
                "rss_delta_per_row": (rss_trimmed.saturating_sub(rss_before)) as f64 / a.rows.max(1) as f64,
                "snapshot_rows": stats.snapshot_rows,
                "close_ms": close_started.elapsed().as_millis() as u64})
        );
        return;
    }

    let idle = {
        let t = table.clone();
        let rows = a.rows;
        tokio::task::spawn_blocking(move || get_latency(&t, rows, 2_000_000))
            .await
            .expect("reader")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (t, rows, stop) = (table.clone(), a.rows, stop.clone());
        std::thread::spawn(move || {
            let h = get_latency(&t, rows, 4_000_000);
            stop.store(true, Ordering::Relaxed);
            h
        })
    };
    let position_before: u64 = table.position().values().sum();
    let updates = update_until(client.clone(), &a, stop.clone()).await;
    let busy = reader.join().expect("reader");
    let applied = table.position().values().sum::<u64>() - position_before;
    let out = serde_json::json!({
        "rows": a.rows,
        "partitions": a.partitions,
        "value_bytes": a.value_bytes,
        "produce_s": produce_s,
        "ready_ms": ready_ms,
        "rss_before_open_bytes": rss_before,
        "rss_after_ready_bytes": rss_after,
        "rss_delta_per_row": (rss_after.saturating_sub(rss_before)) as f64 / a.rows.max(1) as f64,
        "rss_after_malloc_trim_bytes": rss_trimmed,
        "rss_delta_per_row_after_malloc_trim": (rss_trimmed.saturating_sub(rss_before)) as f64 / a.rows.max(1) as f64,
        "key_bytes": stats.key_bytes,
        "value_bytes_total": stats.value_bytes,
        "memory_bytes": stats.memory_bytes,
        "bytes_per_row": stats.bytes_per_row,
        "raw_bytes_per_row": (stats.key_bytes + stats.value_bytes) as f64 / stats.rows.max(1) as f64,
        "get_ns_idle": idle,
        "get_ns_while_applying": busy,
        "updates_sent_while_reading": updates,
        "records_applied_while_reading": applied,
        "apply_lock_max_us": table.stats().apply_lock_max_us,
        "durability": {"acks": "all", "replication_factor": 1, "fsync": "broker default (sluice dev)"},
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    table.close();
}
