//! CDC (Postgres) benchmark: `sluice cdc postgres` against a running Postgres and
//! Sluice, each figure beside a Postgres baseline the script times in the same run
//! (scripts/cdc-bench.sh drives it; docs/performance.md records the figures).
//!
//! ```text
//! cdc_bench snapshot --sluice BIN --dsn URL --bootstrap ADDR --prefix P --table T --rows N
//!                    [--partitions 1] [--log FILE]
//! cdc_bench stream   --sluice BIN --dsn URL --bootstrap ADDR --prefix P --table T --rows N
//!                    --changes 200000 --txn-rows 10000 [--sync-commit on|off] [--log FILE]
//! cdc_bench latency  --dsn URL --bootstrap ADDR --prefix P --table T --rows N
//!                    [--tps 1000] [--seconds 60] [--readers 3] [--writers 8]
//! ```
//!
//! - `snapshot` starts the connector on an empty topic and times, from the spawn, the
//!   log line "initial copy written" (every row handed to the producer) and the topic's
//!   high watermarks covering N records (every row acknowledged with acks=all).
//! - `stream` applies `changes` single-row UPDATEs with the connector stopped — one
//!   server-side PL/pgSQL loop, committing every `txn-rows` rows, which is the fastest
//!   Postgres itself applies them and so the baseline — then starts the connector
//!   (it resumes from its slot) with heartbeats off and times until the high
//!   watermarks grew by `changes`. Row `i` updated is `(i * 7919) % rows + 1`.
//! - `latency` needs the connector running on the table. It opens `readers` TableSets
//!   on the topic, each subscribed to its changes, and `writers` connections commit
//!   single-row updates on a fixed schedule of `tps` per second; update `i` sets the
//!   row's `version` to `i + 2`, so a change names the commit it shows. Visibility
//!   latency is the subscriber's clock at the change set minus the writer's clock when
//!   its commit returned (one process, one monotonic clock). A sampler meanwhile
//!   commits an update to a row the writers leave alone (the table's last 100 rows)
//!   every 100 ms, reads `pg_current_wal_lsn()` and times `wait_for_source` on the
//!   first set from the commit's return; then the same 100 times with the writers
//!   stopped (idle).
//!
//! Every subcommand prints one JSON object on stdout. Progress goes to stderr.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sluice_client::{Admin, ClientConfig, PosRequest, TableConfig, TableSet};
use tokio_postgres::NoTls;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmd {
    Snapshot,
    Stream,
    Latency,
}

#[derive(Debug)]
struct Args {
    cmd: Cmd,
    /// The `sluice` binary whose `cdc postgres` is measured.
    sluice: String,
    /// postgres://user@host:port/db, for the connector and the benchmark's own clients.
    dsn: String,
    bootstrap: String,
    prefix: String,
    /// Captured table (schema public); the topic is `PREFIX.public.TABLE`.
    table: String,
    /// Rows the table holds (ids 1..=rows).
    rows: u64,
    partitions: u32,
    changes: u64,
    txn_rows: u64,
    /// `synchronous_commit` of the session applying the burst (`None`: the server's).
    sync_commit: Option<String>,
    tps: u64,
    seconds: u64,
    readers: usize,
    writers: usize,
    log: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = match it.next().as_deref() {
        Some("snapshot") => Cmd::Snapshot,
        Some("stream") => Cmd::Stream,
        Some("latency") => Cmd::Latency,
        _ => {
            return Err("usage: cdc_bench snapshot|stream|latency [flags] (see the source)".into())
        }
    };
    let mut a = Args {
        cmd,
        sluice: "sluice".into(),
        dsn: String::new(),
        bootstrap: String::new(),
        prefix: "bench".into(),
        table: "users".into(),
        rows: 3_000_000,
        partitions: 1,
        changes: 200_000,
        txn_rows: 10_000,
        sync_commit: None,
        tps: 1000,
        seconds: 60,
        readers: 3,
        writers: 8,
        log: std::env::temp_dir().join("cdc-bench-connector.log"),
    };
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--sluice" => a.sluice = val()?,
            "--dsn" => a.dsn = val()?,
            "--bootstrap" => a.bootstrap = val()?,
            "--prefix" => a.prefix = val()?,
            "--table" => a.table = val()?,
            "--rows" => a.rows = num(val()?)?,
            "--partitions" => a.partitions = num(val()?)? as u32,
            "--changes" => a.changes = num(val()?)?,
            "--txn-rows" => a.txn_rows = num(val()?)?.max(1),
            "--sync-commit" => a.sync_commit = Some(val()?),
            "--tps" => a.tps = num(val()?)?.max(1),
            "--seconds" => a.seconds = num(val()?)?.max(1),
            "--readers" => a.readers = num(val()?)?.max(1) as usize,
            "--writers" => a.writers = num(val()?)?.max(1) as usize,
            "--log" => a.log = PathBuf::from(val()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.dsn.is_empty() || a.bootstrap.is_empty() {
        return Err("--dsn and --bootstrap are required".into());
    }
    if !a
        .table
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "--table: plain identifier expected, not {}",
            a.table
        ));
    }
    Ok(a)
}

fn topic(a: &Args) -> String {
    format!("{}.public.{}", a.prefix, a.table)
}

async fn pg(dsn: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {dsn}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `sluice cdc postgres` with stderr (RUST_LOG=info) into `log`.
fn spawn_connector(a: &Args, extra: &[&str]) -> Child {
    let table = format!("public.{}", a.table);
    let partitions = a.partitions.to_string();
    Command::new(&a.sluice)
        .args([
            "cdc",
            "postgres",
            "--bootstrap",
            &a.bootstrap,
            "--dsn",
            &a.dsn,
        ])
        .args(["--tables", &table, "--topic-prefix", &a.prefix])
        .args(["--partitions", &partitions])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&a.log).expect("create the connector log"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", a.sluice))
}

/// Ctrl-C (the connector confirms what was acknowledged to the slot), then waits.
fn stop_connector(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cdc_bench: the connector did not stop on Ctrl-C in 30 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn check_alive(child: &mut Child, log: &Path) {
    if let Ok(Some(status)) = child.try_wait() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the connector exited ({status}):\n{text}");
    }
}

/// Sum of the topic's high watermarks and its bytes on disk; `None` before it exists.
async fn topic_end(admin: &Admin, topic: &str) -> Option<(u64, u64)> {
    let d = admin.describe_topic(topic).await.ok()?;
    let hw = d
        .partitions
        .iter()
        .map(|p| p.high_watermark.unwrap_or(0))
        .sum();
    let bytes = d.partitions.iter().map(|p| p.size_bytes.unwrap_or(0)).sum();
    Some((hw, bytes))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

async fn snapshot(a: &Args) -> Value {
    let admin = Admin::new(&ClientConfig::new(&a.bootstrap));
    let t0 = Instant::now();
    let mut child = spawn_connector(a, &[]);
    let (mut started, mut first, mut written, mut acked) = (None, None, None, None);
    let deadline = t0 + Duration::from_secs(900);
    let mut bytes = 0;
    while written.is_none() || acked.is_none() {
        check_alive(&mut child, &a.log);
        assert!(Instant::now() < deadline, "the copy took over 900 s");
        if started.is_none() || written.is_none() {
            let log = std::fs::read_to_string(&a.log).unwrap_or_default();
            if started.is_none() && log.contains("initial copy started") {
                started = Some(t0.elapsed());
            }
            if written.is_none() && log.contains("initial copy written") {
                written = Some(t0.elapsed());
            }
        }
        if let Some((hw, b)) = topic_end(&admin, &topic(a)).await {
            if first.is_none() && hw > 0 {
                first = Some(t0.elapsed());
            }
            if acked.is_none() && hw >= a.rows {
                acked = Some(t0.elapsed());
                bytes = b;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_connector(&mut child);
    let acked = acked.expect("set above");
    json!({
        "rows": a.rows,
        "partitions": a.partitions,
        "to_copy_started_ms": started.map(ms),
        "to_first_record_ms": first.map(ms),
        "to_log_written_ms": written.map(ms),
        "to_hw_all_ms": ms(acked),
        "rows_per_sec": (a.rows as f64 / acked.as_secs_f64()).round(),
        "topic_bytes_at_hw": bytes,
    })
}

async fn stream(a: &Args) -> Value {
    let admin = Admin::new(&ClientConfig::new(&a.bootstrap));
    let client = pg(&a.dsn).await;
    if let Some(s) = &a.sync_commit {
        client
            .batch_execute(&format!("SET synchronous_commit = {s}"))
            .await
            .expect("SET synchronous_commit");
    }
    let sync: String = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .expect("synchronous_commit")
        .get(0);
    let (before, _) = topic_end(&admin, &topic(a))
        .await
        .expect("the topic exists (run snapshot first)");
    // One DO block, committing every txn_rows updates: Postgres's own fastest apply.
    let body = format!(
        "DO $$ BEGIN FOR i IN 0..{last} LOOP \
           UPDATE {t} SET version = version + 1 WHERE id = (i::bigint * 7919) % {rows} + 1; \
           IF (i + 1) % {k} = 0 THEN COMMIT; END IF; \
         END LOOP; END $$",
        last = a.changes - 1,
        t = a.table,
        rows = a.rows,
        k = a.txn_rows,
    );
    let applied = Instant::now();
    client.batch_execute(&body).await.expect("apply the burst");
    let pg_apply = applied.elapsed();
    eprintln!(
        "cdc_bench: postgres applied {} updates ({} per transaction, synchronous_commit={sync}) in {:.2} s",
        a.changes,
        a.txn_rows,
        pg_apply.as_secs_f64()
    );
    let t0 = Instant::now();
    // No heartbeats: every record the topic gains is one of the burst's changes.
    let mut child = spawn_connector(a, &["--heartbeat-ms", "3600000"]);
    let want = before + a.changes;
    let mut first = None;
    let done = loop {
        check_alive(&mut child, &a.log);
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "streaming took over 900 s"
        );
        if let Some((hw, _)) = topic_end(&admin, &topic(a)).await {
            if first.is_none() && hw > before {
                first = Some(t0.elapsed());
            }
            if hw >= want {
                break t0.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (settled, _) = topic_end(&admin, &topic(a)).await.unwrap_or((want, 0));
    stop_connector(&mut child);
    let first = first.unwrap_or(done);
    let streamed = done.saturating_sub(first);
    json!({
        "changes": a.changes,
        "txn_rows": a.txn_rows,
        "transactions": a.changes.div_ceil(a.txn_rows),
        "synchronous_commit": sync,
        "pg_apply_ms": ms(pg_apply),
        "pg_changes_per_sec": (a.changes as f64 / pg_apply.as_secs_f64()).round(),
        "to_first_change_ms": ms(first),
        "to_all_ms": ms(done),
        "changes_per_sec_from_start": (a.changes as f64 / done.as_secs_f64()).round(),
        "changes_per_sec_first_to_last": if streamed.is_zero() { Value::Null } else {
            json!((a.changes as f64 / streamed.as_secs_f64()).round())
        },
        "records_beyond_the_burst": settled.saturating_sub(want),
    })
}

/// Clock readings in ns since `base`, one slot per update; 0 = not yet.
struct Clocks(Vec<AtomicU64>);

impl Clocks {
    fn new(n: usize) -> Clocks {
        Clocks((0..n).map(|_| AtomicU64::new(0)).collect())
    }
    /// Keeps the first reading.
    fn mark(&self, i: usize, base: Instant) {
        if let Some(slot) = self.0.get(i) {
            let ns = base.elapsed().as_nanos() as u64 + 1;
            let _ = slot.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

/// A histogram of microseconds as milliseconds (two decimals).
fn quantiles_ms(h: &Histogram<u64>) -> Value {
    let q = |us: u64| (us as f64 / 10.0).round() / 100.0;
    json!({
        "count": h.len(),
        "p50_ms": q(h.value_at_quantile(0.5)), "p99_ms": q(h.value_at_quantile(0.99)),
        "p999_ms": q(h.value_at_quantile(0.999)), "max_ms": q(h.max()),
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// One `wait_for_source` sample: commit an update to row `id`, read the WAL position,
/// wait until the set shows it. Microseconds from the commit's return.
async fn wait_sample(client: &tokio_postgres::Client, set: &TableSet, table: &str, id: i64) -> u64 {
    client
        .execute(
            &format!("UPDATE {table} SET version = -1 WHERE id = $1"),
            &[&id],
        )
        .await
        .expect("sampler update");
    let committed = Instant::now();
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("pg_current_wal_lsn")
        .get(0);
    let request: PosRequest = lsn.parse().expect("an LSN");
    set.wait_for_source(&request, Duration::from_secs(30))
        .await
        .expect("wait_for_source");
    committed.elapsed().as_micros() as u64
}

async fn latency(a: &Args) -> Value {
    let topic = topic(a);
    let client = ClientConfig::new(&a.bootstrap);
    let opened = Instant::now();
    let mut sets = Vec::new();
    for _ in 0..a.readers {
        let set = TableSet::open(
            &client,
            std::slice::from_ref(&topic),
            TableConfig::default(),
        )
        .await
        .expect("open a TableSet");
        sets.push(set);
    }
    for s in &sets {
        s.ready().await.expect("TableSet ready");
    }
    let ready = opened.elapsed();
    eprintln!(
        "cdc_bench: {} TableSets ready in {:.2} s",
        a.readers,
        ready.as_secs_f64()
    );
    let total = (a.tps * a.seconds) as usize;
    let base = Instant::now();
    let commits = Arc::new(Clocks::new(total));
    let visible: Vec<Arc<Clocks>> = (0..a.readers)
        .map(|_| Arc::new(Clocks::new(total)))
        .collect();
    let lagged = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for (set, seen) in sets.iter().zip(&visible) {
        let mut rx = set
            .table(&topic)
            .expect("the set follows the topic")
            .subscribe();
        let (seen, lagged) = (seen.clone(), lagged.clone());
        subscribers.push(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(cs) => {
                        for c in &cs.changes {
                            let Some(new) = &c.new else { continue };
                            let Ok(v) = serde_json::from_slice::<Value>(new) else {
                                continue;
                            };
                            let version = v["after"]["version"].as_i64().unwrap_or(-1);
                            if version >= 2 {
                                seen.mark((version - 2) as usize, base);
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Writers: update i is due at base + i / tps; writer k takes i ≡ k (mod writers).
    let writer_rows = a.rows.saturating_sub(100).max(1) as i64;
    let mut writers = Vec::new();
    for k in 0..a.writers {
        let (dsn, table, commits) = (a.dsn.clone(), a.table.clone(), commits.clone());
        let (tps, step) = (a.tps, a.writers);
        writers.push(tokio::spawn(async move {
            let client = pg(&dsn).await;
            let stmt = client
                .prepare(&format!("UPDATE {table} SET version = $1 WHERE id = $2"))
                .await
                .expect("prepare");
            let mut h = histogram();
            let start = tokio::time::Instant::from_std(base);
            for i in (k..total).step_by(step) {
                tokio::time::sleep_until(
                    start + Duration::from_nanos(i as u64 * 1_000_000_000 / tps),
                )
                .await;
                let id = (i as i64) % writer_rows + 1;
                let version = (i + 2) as i32;
                let sent = Instant::now();
                client
                    .execute(&stmt, &[&version, &id])
                    .await
                    .expect("update");
                commits.mark(i, base);
                h.record(sent.elapsed().as_micros().max(1) as u64)
                    .expect("record");
            }
            h
        }));
    }
    // The wait_for_source sampler under load, on rows the writers leave alone.
    let sampler = {
        let (dsn, set, table) = (a.dsn.clone(), sets[0].clone(), a.table.clone());
        let (rows, seconds) = (a.rows as i64, a.seconds);
        tokio::spawn(async move {
            let client = pg(&dsn).await;
            let mut h = histogram();
            let mut n = 0i64;
            while base.elapsed() < Duration::from_secs(seconds) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let id = rows - n % 100.min(rows);
                h.record(wait_sample(&client, &set, &table, id).await.max(1))
                    .expect("record");
                n += 1;
            }
            h
        })
    };
    let mut commit_h = histogram();
    for w in writers {
        commit_h.add(w.await.expect("writer")).expect("merge");
    }
    let wrote = base.elapsed();
    let wait_loaded = sampler.await.expect("sampler");
    // Let every reader catch up with the last commits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && visible.iter().any(|v| v.get(total - 1) == 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Idle: the same samples with nothing else committing.
    let mut wait_idle = histogram();
    {
        let c = pg(&a.dsn).await;
        for n in 0..100i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let id = a.rows as i64 - n % 100.min(a.rows as i64);
            wait_idle
                .record(wait_sample(&c, &sets[0], &a.table, id).await.max(1))
                .expect("record");
        }
    }
    for s in subscribers {
        s.abort();
    }
    let mut all = histogram();
    let mut per_reader = Vec::new();
    let (mut missing, mut before_commit_return) = (0u64, 0u64);
    for v in &visible {
        let mut h = histogram();
        for i in 0..total {
            let (c, s) = (commits.get(i), v.get(i));
            if c == 0 || s == 0 {
                missing += 1;
                continue;
            }
            if s < c {
                before_commit_return += 1;
            }
            h.record((s.saturating_sub(c) / 1000).max(1))
                .expect("record");
        }
        all.add(&h).expect("merge");
        per_reader.push(quantiles_ms(&h));
    }
    for s in sets {
        s.close();
    }
    json!({
        "table_rows": a.rows,
        "target_tps": a.tps,
        "achieved_tps": (total as f64 / wrote.as_secs_f64()).round(),
        "seconds": ms(wrote) / 1000.0,
        "writers": a.writers,
        "readers": a.readers,
        "tablesets_ready_ms": ms(ready),
        "commit_ms": quantiles_ms(&commit_h),
        "visible_ms_all_readers": quantiles_ms(&all),
        "visible_ms_per_reader": per_reader,
        "not_seen": missing,
        "visible_before_commit_returned": before_commit_return,
        "subscriber_lagged_change_sets": lagged.load(Ordering::Relaxed),
        "wait_for_source_ms_loaded": quantiles_ms(&wait_loaded),
        "wait_for_source_ms_idle": quantiles_ms(&wait_idle),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cdc_bench: {e}");
            std::process::exit(2);
        }
    };
    let out = match a.cmd {
        Cmd::Snapshot => snapshot(&a).await,
        Cmd::Stream => stream(&a).await,
        Cmd::Latency => latency(&a).await,
    };
    println!("{out}");
}
