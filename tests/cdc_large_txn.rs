//! Large transactions (docs/cdc.md, "Large transactions"), through the real `sluice`
//! binary against a real Postgres 15:
//!
//! - a transaction far larger than `--txn-memory-bytes` is spilled while received and
//!   written in parts; a Table reading throughout sees it either not at all or whole —
//!   across two tables — and ends equal to `SELECT *`; the connector's peak RSS grows
//!   by well under the transaction's size (it used to hold it whole, twice);
//! - a connector killed with kill -9 between the parts of one (some of its records in
//!   the topics, its end records not) and restarted writes the rest: every record of
//!   the transaction is in its partition exactly once, in order, and the Tables equal
//!   `SELECT *`.
//!
//! `LARGE_TXN_ROWS` sets the first test's row count (default 120,000, ~1 KiB each).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::cdc::{open_set, Connector};
use common::db::Postgres;
use common::{runtime, wait_for, Dev};
use serde_json::Value;
use sluice_client::{Admin, ClientConfig, PosRequest, TableConfig, TableSet};

const WAIT: Duration = Duration::from_secs(120);

/// `VmHWM` / `VmRSS` of a process, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the process's peak RSS to its current RSS (Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// id → `gen` of each row of a snapshot of one table.
fn gens(rows: &[(bytes::Bytes, bytes::Bytes)]) -> BTreeMap<i64, i64> {
    rows.iter()
        .map(|(k, v)| {
            let key: Value = serde_json::from_slice(k).expect("a JSON key");
            let v: Value = serde_json::from_slice(v).expect("a JSON value");
            let after = &v["after"];
            (key["id"].as_i64().unwrap(), after["gen"].as_i64().unwrap())
        })
        .collect()
}

fn connector_args<'a>(dev: &'a Dev, dsn: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "cdc",
        "postgres",
        "--bootstrap",
        &dev.addr,
        "--dsn",
        dsn,
        "--tables",
        "public.big,public.other",
        "--topic-prefix",
        "cdc",
        "--partitions",
        "3",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn pg_a_transaction_larger_than_memory_is_spilled_and_applied_whole() {
    let rows: i64 = std::env::var("LARGE_TXN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_000);
    let others = 50i64;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    // Rows made before the connector exists are not captured (--snapshot never): the
    // topics start empty and the one large transaction fills them.
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, gen int NOT NULL, pad text NOT NULL);
             CREATE TABLE other (id bigint PRIMARY KEY, gen int NOT NULL);
             INSERT INTO big SELECT g, 1, repeat(md5(g::text), 30) FROM generate_series(1, {rows}) g;
             INSERT INTO other SELECT g, 1 FROM generate_series(1, {others}) g;"
        ),
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = pg.dsn("app");
    let spill_dir = dir.path().join("spill");
    std::fs::create_dir(&spill_dir).unwrap();
    let spill = spill_dir.to_str().unwrap();
    let args = connector_args(
        &dev,
        &dsn,
        &[
            "--snapshot",
            "never",
            "--txn-memory-bytes",
            "4194304",
            "--spill-dir",
            spill,
        ],
    );
    let connector = Connector::start(dir.path(), &args);
    let topics = vec!["cdc.public.big".to_string(), "cdc.public.other".to_string()];
    wait_for("the connector streaming", WAIT, || {
        connector.log().contains("streaming").then_some(())
    });
    let set = open_set(&rt, &dev.addr, &topics, TableConfig::default());
    let lsn = || -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    rt.block_on(set.wait_for_source(&lsn(), WAIT)).unwrap();
    let pid = connector.pid();
    let rss_before = memory(pid, "VmRSS");
    reset_peak(pid);

    // A reader checks every snapshot it can take while the transaction is written and
    // applied: both tables empty, or both whole at generation 2.
    let done = AtomicBool::new(false);
    let (empty, whole) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let snap = set.snapshot_all();
                let (big, other) = (gens(&snap[0].rows), gens(&snap[1].rows));
                if big.is_empty() && other.is_empty() {
                    empty.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                assert_eq!(
                    (big.len() as i64, other.len() as i64),
                    (rows, others),
                    "a snapshot saw part of the transaction"
                );
                assert!(
                    big.values().chain(other.values()).all(|&g| g == 2),
                    "a snapshot saw rows of another generation"
                );
                whole.fetch_add(1, Ordering::Relaxed);
            }
        });
        pg.psql(
            "app",
            "BEGIN; UPDATE other SET gen = 2 WHERE id <= 25; UPDATE big SET gen = 2;
             UPDATE other SET gen = 2 WHERE id > 25; COMMIT;",
        );
        let r = rt.block_on(set.wait_for_source(&lsn(), WAIT));
        done.store(true, Ordering::Relaxed);
        r.unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    });
    let peak = memory(pid, "VmHWM");
    let log = connector.log();
    assert!(
        log.contains("a large transaction spills to a temporary file")
            && log.contains("a large transaction goes to Sluice in parts"),
        "the transaction was not spilled:\n{log}"
    );
    let snap = set.snapshot_all();
    let (big, other) = (gens(&snap[0].rows), gens(&snap[1].rows));
    assert_eq!(big.len() as i64, rows);
    assert_eq!(other.len() as i64, others);
    assert!(big.values().chain(other.values()).all(|&g| g == 2));
    // The transaction's size as written: its records' values in the Table.
    let bytes: usize = snap
        .iter()
        .flat_map(|s| s.rows.iter())
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let grew = peak.saturating_sub(rss_before);
    eprintln!(
        "{rows} rows, {} MB of records in one transaction; connector RSS {} MB before, peak {} MB \
         (+{} MB); reader snapshots: {} before, {} after",
        bytes / 1_000_000,
        rss_before / 1_000_000,
        peak / 1_000_000,
        grew / 1_000_000,
        empty.load(Ordering::Relaxed),
        whole.load(Ordering::Relaxed),
    );
    assert!(
        empty.load(Ordering::Relaxed) > 0,
        "the reader took no snapshot before the transaction landed"
    );
    // Held whole it took about twice its size (decoded rows, then encoded records).
    assert!(
        (grew as usize) < bytes / 2,
        "the connector's peak RSS grew by {grew} B for a transaction of {bytes} B"
    );
    assert_eq!(
        std::fs::read_dir(&spill_dir).unwrap().count(),
        0,
        "the spill file has no name"
    );
}

/// Every record of `topic` (heartbeats hidden): key and headers, by partition.
fn records_of(dev: &Dev, topic: &str) -> Vec<Vec<(Option<String>, HashMap<String, String>)>> {
    let out = dev.ok(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--output",
            "json",
        ],
        "",
    );
    let mut parts: Vec<Vec<_>> = vec![Vec::new(); 3];
    for line in out.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let headers = r["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h["key"].as_str().unwrap().to_string(),
                            h["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let p = r["partition"].as_u64().unwrap() as usize;
        parts[p].push((r["key"].as_str().map(String::from), headers));
    }
    parts
}

#[test]
fn pg_a_kill_between_the_parts_of_a_transaction_writes_each_record_once() {
    let rows = 60_000i64;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, gen int NOT NULL, pad text NOT NULL);
             CREATE TABLE other (id bigint PRIMARY KEY, gen int NOT NULL);
             INSERT INTO big SELECT g, 1, md5(g::text) FROM generate_series(1, {rows}) g;
             INSERT INTO other SELECT g, 1 FROM generate_series(1, 10) g;"
        ),
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = pg.dsn("app");
    // Parts of 16 KiB: hundreds of them.
    let args = connector_args(&dev, &dsn, &["--txn-memory-bytes", "65536"]);
    let mut connector = Connector::start(dir.path(), &args);
    let topics = vec!["cdc.public.big".to_string(), "cdc.public.other".to_string()];
    wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let admin = rt
        .block_on(Admin::connect(&ClientConfig::new(&dev.addr)))
        .unwrap();
    let end = |topic: &str| -> u64 {
        rt.block_on(admin.describe_topic(topic))
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.high_watermark.unwrap_or(0))
            .sum()
    };
    let lsn = || -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    let set = open_set(&rt, &dev.addr, &topics, TableConfig::default());
    rt.block_on(set.wait_for_source(&lsn(), WAIT)).unwrap();
    let start = end("cdc.public.big");
    pg.psql(
        "app",
        "BEGIN; UPDATE other SET gen = 2; UPDATE big SET gen = 2; COMMIT;",
    );
    // Cut it once some of its records are in the topic, and well before all are.
    let at_kill = wait_for("the first records of the transaction", WAIT, || {
        let n = end("cdc.public.big") - start;
        (n > 0).then_some(n)
    });
    connector.kill9();
    let after_kill = end("cdc.public.big") - start;
    assert!(
        after_kill < rows as u64,
        "the kill landed after the whole transaction ({after_kill} of {rows} records; {at_kill} \
         when seen)"
    );
    assert!(connector
        .log()
        .contains("a large transaction goes to Sluice in parts"));
    let connector = Connector::start(dir.path(), &args);
    rt.block_on(set.wait_for_source(&lsn(), WAIT))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    // Each partition holds the transaction's records once, ordinals increasing, and
    // its last record of the transaction carries the end list.
    let mut seen = 0;
    for topic in &topics {
        for (p, records) in records_of(&dev, topic).iter().enumerate() {
            let txn: Vec<&(Option<String>, HashMap<String, String>)> = records
                .iter()
                .filter(|(_, h)| h.contains_key("sluice.txn") && !h.contains_key("sluice.snapshot"))
                .collect();
            let ordinals: Vec<u64> = txn
                .iter()
                .map(|(_, h)| {
                    h["sluice.pos"]
                        .rsplit_once('#')
                        .and_then(|(_, o)| o.parse().ok())
                        .unwrap()
                })
                .collect();
            assert!(
                ordinals.windows(2).all(|w| w[0] < w[1]),
                "{topic}/{p}: a record of the transaction twice or out of order"
            );
            let ends: Vec<usize> = txn
                .iter()
                .enumerate()
                .filter(|(_, (_, h))| h.contains_key("sluice.txn.end"))
                .map(|(i, _)| i)
                .collect();
            if !txn.is_empty() {
                assert_eq!(ends, vec![txn.len() - 1], "{topic}/{p}: the end record");
            }
            seen += txn.len();
        }
    }
    assert_eq!(
        seen as i64,
        rows + 10,
        "records of the transaction in the topics"
    );
    let snap = set.snapshot_all();
    assert!(gens(&snap[0].rows).values().all(|&g| g == 2));
    assert_eq!(gens(&snap[0].rows).len() as i64, rows);
    assert!(gens(&snap[1].rows).values().all(|&g| g == 2));
}
