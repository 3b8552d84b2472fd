//! Large transactions (docs/cdc.md, "Large transactions"), through the real `sluice`
//! binary against a real Postgres 15 and a real MariaDB:
//!
//! - a transaction far larger than `--txn-memory-bytes` is spilled while received and
//!   written in parts; a Table reading throughout sees it either not at all or whole —
//!   across two tables — and ends equal to what was written; the connector's peak RSS
//!   does not grow with the transaction's size (one three times larger costs no more);
//! - a connector killed with kill -9 between the parts of one (some of its records in
//!   the topics, its end records not) and restarted writes the rest: every record of
//!   the transaction is in its partition exactly once, in order, and the Tables hold it;
//! - a transaction spilled while read from MariaDB's binlog is seen whole or not at all.
//!
//! `LARGE_TXN_ROWS` sets the first Postgres transaction's rows (default 50,000, ~1.3 KiB
//! records; the second is three times that), `LARGE_TXN_MEMORY_BYTES` the connector's
//! `--txn-memory-bytes` (default 4 MiB) — docs/performance.md's measurement.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::cdc::{consumed, open_set, Connector};
use common::db::{MariaDb, Postgres};
use common::{runtime, wait_for, Dev};
use serde_json::Value;
use sluice_client::{Admin, ClientConfig, PosRequest, TableConfig};

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

/// What a reader may see of the two transactions: nothing, the first whole, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Nothing,
    First,
    Both,
}

fn classify(snap: &[sluice_client::TableSnapshot], first: i64, rows: i64, others: i64) -> Seen {
    let (big, other) = (gens(&snap[0].rows), gens(&snap[1].rows));
    if big.is_empty() && other.is_empty() {
        return Seen::Nothing;
    }
    let first_whole = (1..=first).all(|id| big.get(&id) == Some(&2));
    let other_at = |g| other.len() as i64 == others && other.values().all(|&x| x == g);
    if big.len() as i64 == first && first_whole && other_at(2) {
        return Seen::First;
    }
    let second_whole = (first + 1..=rows).all(|id| big.get(&id) == Some(&3));
    if big.len() as i64 == rows && first_whole && second_whole && other_at(3) {
        return Seen::Both;
    }
    panic!(
        "a snapshot saw part of a transaction: {} rows of big, {} of other",
        big.len(),
        other.len()
    );
}

#[test]
fn pg_a_transaction_larger_than_memory_is_spilled_and_applied_whole() {
    // Two transactions, the second three times the first: spilled, the connector's
    // peak memory does not grow with a transaction's size.
    let first: i64 = std::env::var("LARGE_TXN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rows = first * 4;
    let others = 50i64;
    let dir = tempfile::tempdir().unwrap();
    // Writing the parts takes longer than this, and the stream is not read meanwhile:
    // the connector's status updates keep the walsender from ending the connection
    // (without them it restarted again and again).
    let pg = Postgres::start_configured(|data| {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        writeln!(conf, "wal_sender_timeout = 5s").unwrap();
    });
    pg.create_db("app");
    // Rows made before the connector exists are not captured (--snapshot never): the
    // topics start empty and the large transactions fill them.
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
    let memory_limit =
        std::env::var("LARGE_TXN_MEMORY_BYTES").unwrap_or_else(|_| "4194304".to_string());
    let args = connector_args(
        &dev,
        &dsn,
        &[
            "--snapshot",
            "never",
            "--txn-memory-bytes",
            &memory_limit,
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

    // A reader checks a snapshot every 20 ms while the transactions are written and
    // applied (paced: a snapshot of 200,000 rows copies them all).
    let done = AtomicBool::new(false);
    let checks = AtomicUsize::new(0);
    let mut grew = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Seen::Nothing;
            while !done.load(Ordering::Relaxed) {
                let seen = classify(&set.snapshot_all(), first, rows, others);
                assert!(
                    seen >= last,
                    "a snapshot went back from {last:?} to {seen:?}"
                );
                last = seen;
                checks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let run = |sql: &str| {
            let before = memory(pid, "VmRSS");
            reset_peak(pid);
            pg.psql("app", sql);
            let r = rt.block_on(set.wait_for_source(&lsn(), WAIT));
            r.unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
            memory(pid, "VmHWM").saturating_sub(before)
        };
        grew.push(run(&format!(
            "BEGIN; UPDATE other SET gen = 2 WHERE id <= 25; UPDATE big SET gen = 2 WHERE id <= {first};
             UPDATE other SET gen = 2 WHERE id > 25; COMMIT;"
        )));
        grew.push(run(&format!(
            "BEGIN; UPDATE other SET gen = 3 WHERE id <= 25; UPDATE big SET gen = 3 WHERE id > {first};
             UPDATE other SET gen = 3 WHERE id > 25; COMMIT;"
        )));
        done.store(true, Ordering::Relaxed);
    });
    let snap = set.snapshot_all();
    assert_eq!(classify(&snap, first, rows, others), Seen::Both);
    let bytes = |range: std::ops::RangeInclusive<i64>| -> usize {
        snap[0]
            .rows
            .iter()
            .filter(|(k, _)| {
                let key: Value = serde_json::from_slice(k).unwrap();
                range.contains(&key["id"].as_i64().unwrap())
            })
            .map(|(k, v)| k.len() + v.len())
            .sum()
    };
    let (bytes_1, bytes_2) = (bytes(1..=first), bytes(first + 1..=rows));
    eprintln!(
        "--txn-memory-bytes {memory_limit}: a transaction of {first} rows ({} MB of records): \
         connector peak RSS +{} MB; of {} rows ({} MB): +{} MB; {} reader snapshots checked",
        bytes_1 / 1_000_000,
        grew[0] / 1_000_000,
        rows - first,
        bytes_2 / 1_000_000,
        grew[1] / 1_000_000,
        checks.load(Ordering::Relaxed),
    );
    let log = connector.log();
    for line in log.lines().filter(|l| l.contains("a large transaction")) {
        eprintln!("{line}");
    }
    assert!(
        !log.contains("connector failed"),
        "the connector restarted:\n{log}"
    );
    assert!(
        log.contains("a large transaction spills to a temporary file")
            && log.contains("a large transaction goes to Sluice in parts"),
        "the transactions were not spilled:\n{log}"
    );
    // Held whole, the second took about three times what the first did (decoded rows,
    // about twice a transaction's size): spilled, about the same — what the producer's
    // buffer and one part hold.
    assert!(
        grew[1] < grew[0] * 3 / 2 + (16 << 20),
        "the connector's peak RSS grew with the transaction's size: +{} B for {bytes_1} B, +{} B \
         for {bytes_2} B",
        grew[0],
        grew[1]
    );
    assert_eq!(
        std::fs::read_dir(&spill_dir).unwrap().count(),
        0,
        "the spill file has no name"
    );
}

/// A record's key and headers.
type Rec = (Option<String>, HashMap<String, String>);

/// Every record of `topic` (heartbeats hidden): key and headers, by partition.
fn records_of(dev: &Dev, topic: &str) -> Vec<Vec<Rec>> {
    let mut parts: Vec<Vec<_>> = vec![Vec::new(); 3];
    for r in consumed(dev, topic) {
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
    let admin = Admin::new(&ClientConfig::new(&dev.addr));
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
    // Cut it once its parts are being written and some of its records are in the topic
    // (more than the few heartbeats written before it), well before all are.
    let at_kill = wait_for("the first records of the transaction", WAIT, || {
        let n = end("cdc.public.big") - start;
        let parts = connector
            .log()
            .contains("a large transaction goes to Sluice in parts");
        (parts && n > 1000).then_some(n)
    });
    connector.kill9();
    let after_kill = end("cdc.public.big") - start;
    assert!(
        after_kill < rows as u64,
        "the kill landed after the whole transaction ({after_kill} of {rows} records; {at_kill} \
         when seen)"
    );
    let connector = Connector::start(dir.path(), &args);
    rt.block_on(set.wait_for_source(&lsn(), WAIT))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    // Each partition holds the transaction's records once, ordinals increasing, and
    // its last record of the transaction carries the end list.
    let mut seen = 0;
    for topic in &topics {
        for (p, records) in records_of(&dev, topic).iter().enumerate() {
            let txn: Vec<&Rec> = records
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

/// MariaDB: a transaction spilled while read from the binlog and written in parts is
/// seen by a reader either not at all or whole, across two tables.
#[test]
fn mariadb_a_transaction_larger_than_memory_is_spilled_and_applied_whole() {
    let rows = 40_000i64;
    let db = MariaDb::start();
    db.create_db("shop");
    db.sql(
        "shop",
        &format!(
            "CREATE TABLE big (id INT PRIMARY KEY, gen INT NOT NULL, pad VARCHAR(200) NOT NULL); \
             CREATE TABLE other (id INT PRIMARY KEY, gen INT NOT NULL); \
             INSERT INTO big SELECT seq, 1, REPEAT(MD5(seq), 4) FROM seq_1_to_{rows}; \
             INSERT INTO other SELECT seq, 1 FROM seq_1_to_10"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = db.dsn("shop");
    let connector = Connector::start(
        dir.path(),
        &[
            "cdc",
            "mysql",
            "--bootstrap",
            &dev.addr,
            "--dsn",
            &dsn,
            "--tables",
            "shop.big,shop.other",
            "--server-id",
            "4243",
            "--topic-prefix",
            "my",
            "--partitions",
            "3",
            "--txn-memory-bytes",
            "65536",
        ],
    );
    wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let topics = vec!["my.shop.big".to_string(), "my.shop.other".to_string()];
    let set = open_set(&rt, &dev.addr, &topics, TableConfig::default());
    let gtid = || -> PosRequest { db.sql("", "SELECT @@gtid_binlog_pos").parse().unwrap() };
    rt.block_on(set.wait_for_source(&gtid(), WAIT)).unwrap();
    let done = AtomicBool::new(false);
    let checks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let snap = set.snapshot_all();
                let (big, other) = (gens(&snap[0].rows), gens(&snap[1].rows));
                assert_eq!((big.len() as i64, other.len()), (rows, 10));
                let g = big.values().next().copied();
                assert!(
                    big.values().chain(other.values()).all(|&x| Some(x) == g),
                    "a snapshot saw part of the transaction"
                );
                checks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        db.sql(
            "shop",
            "START TRANSACTION; UPDATE other SET gen = 2 WHERE id <= 5; UPDATE big SET gen = 2; \
             UPDATE other SET gen = 2 WHERE id > 5; COMMIT",
        );
        let r = rt.block_on(set.wait_for_source(&gtid(), WAIT));
        done.store(true, Ordering::Relaxed);
        r.unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    });
    let snap = set.snapshot_all();
    assert!(gens(&snap[0].rows).values().all(|&g| g == 2));
    assert!(gens(&snap[1].rows).values().all(|&g| g == 2));
    let log = connector.log();
    assert!(
        log.contains("a large transaction goes to Sluice in parts"),
        "not spilled:\n{log}"
    );
    eprintln!(
        "{} reader snapshots checked",
        checks.load(Ordering::Relaxed)
    );
}
