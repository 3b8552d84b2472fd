//! Incremental snapshots (`sluice cdc snapshot`, docs/cdc.md "Re-copying a table"),
//! through the real `sluice` binary against a real Postgres 15, read by real Tables:
//!
//! - a table copied again in chunks while transfers between its rows keep committing:
//!   a Table that reads all the while never sees the rows' sum change (a chunk row
//!   older than a change the stream already carried would change it), rows the topic
//!   held that the table no longer had (deleted while the table was out of the
//!   publication, so the connector never saw it) get tombstones, and the end state is
//!   `SELECT *`; the other table is not copied again;
//! - a pass cut by kill -9 resumes after its last finished chunk (the chunk records
//!   written over both runs stay far below two copies of the table) and still
//!   tombstones the rows the table lost.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cdc::Connector;
use common::db::Postgres;
use common::{runtime, wait_for, Dev, BIN};
use sluice_client::{ClientConfig, PosRequest, TableConfig, TableSet};

const WAIT: Duration = Duration::from_secs(90);
/// Accounts, and what each starts with: transfers keep the sum.
const ACCOUNTS: i64 = 6000;
const START: i64 = 100;

fn open_set(rt: &tokio::runtime::Runtime, bootstrap: &str, topics: &[String]) -> TableSet {
    common::cdc::open_set(rt, bootstrap, topics, TableConfig::default())
}

/// id → balance of every account row a snapshot of the set's first table holds.
fn balances(set: &TableSet) -> BTreeMap<i64, i64> {
    let snap = set.snapshot_all().into_iter().next().expect("one table");
    snap.rows
        .iter()
        .map(|(k, v)| {
            (
                number_after(k, b"\"id\":"),
                number_after(v, b"\"balance\":"),
            )
        })
        .collect()
}

/// The integer after the first `field` in a JSON text (a full parse of 6,000 values
/// per read would leave the reader too few reads during a pass in a debug build).
/// An envelope's `before` is null here (no REPLICA IDENTITY FULL), so its first
/// `"balance":` is the row's, as in a row-format value.
fn number_after(json: &[u8], field: &[u8]) -> i64 {
    let at = json
        .windows(field.len())
        .position(|w| w == field)
        .unwrap_or_else(|| {
            panic!(
                "no {} in {}",
                String::from_utf8_lossy(field),
                String::from_utf8_lossy(json)
            )
        });
    let rest = &json[at + field.len()..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).unwrap().parse().unwrap()
}

fn pg_balances(pg: &Postgres) -> BTreeMap<i64, i64> {
    pg.psql("app", "SELECT id, balance FROM accounts")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (id, b) = l.split_once('|').expect("id|balance");
            (id.trim().parse().unwrap(), b.trim().parse().unwrap())
        })
        .collect()
}

/// A database with `accounts` (balances summing to ACCOUNTS × START) and `other`.
fn database() -> Postgres {
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, note text);
             CREATE TABLE other (id bigint PRIMARY KEY, v text);
             INSERT INTO accounts SELECT g, {START}, repeat('x', 40) FROM generate_series(1, {ACCOUNTS}) g;
             INSERT INTO other SELECT g, 'o' || g FROM generate_series(1, 100) g;"
        ),
    );
    pg
}

/// Rows the connector never hears of: deleted while `accounts` is out of the
/// publication (pgoutput decodes with the publication as it was at each change), their
/// balance moved to account 1 in a transaction it does see, so the sum holds.
fn make_ghosts(pg: &Postgres, ids: std::ops::RangeInclusive<i64>) -> i64 {
    let n = ids.clone().count() as i64;
    pg.psql(
        "app",
        &format!(
            "ALTER PUBLICATION sluice_cdc DROP TABLE accounts;
             DELETE FROM accounts WHERE id BETWEEN {} AND {};
             ALTER PUBLICATION sluice_cdc ADD TABLE accounts;
             UPDATE accounts SET balance = balance + {} WHERE id = 1;",
            ids.start(),
            ids.end(),
            n * START
        ),
    );
    n
}

/// Transfers between random accounts, one transaction each, until told to stop.
fn transfers(dsn: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut n = 0u64;
            let mut x = 0x9e3779b97f4a7c15u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Accounts in the ghost range are gone: pick among the others.
                let a = 2 + (x % 4000) as i64;
                let b = 2 + ((x >> 20) % 4000) as i64;
                let amount = (x >> 40) as i64 % 7 + 1;
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         UPDATE accounts SET balance = balance - {amount} WHERE id = {a};
                         UPDATE accounts SET balance = balance + {amount} WHERE id = {b};
                         COMMIT;"
                    ))
                    .await
                    .unwrap();
                n += 1;
                // Pacing: unpaced, the writer can outrun a debug-build connector, whose
                // stream then lags ever further and every chunk waits behind the lag
                // (a run took 169 s).
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            n
        })
    })
}

fn progress(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
) -> Option<sluice_cdc::incremental::Progress> {
    rt.block_on(sluice_cdc::incremental::read_progress(
        &ClientConfig::new(bootstrap),
        "cdc",
    ))
    .unwrap()
    .remove("public.accounts")
}

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn connector_args<'a>(dev: &'a Dev, dsn: &'a str, chunk: &'a str, format: &'a str) -> Vec<&'a str> {
    vec![
        "cdc",
        "postgres",
        "--bootstrap",
        &dev.addr,
        "--dsn",
        dsn,
        "--tables",
        "public.accounts,public.other",
        "--topic-prefix",
        "cdc",
        "--partitions",
        "3",
        "--snapshot-chunk-rows",
        chunk,
        "--value-format",
        format,
    ]
}

/// `sluice cdc snapshot` for accounts; returns its stdout.
fn ask(dev: &Dev, dsn: &str, wait_ms: u64) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "cdc",
            "snapshot",
            "--bootstrap",
            &dev.addr,
            "--dsn",
            dsn,
            "--topic-prefix",
            "cdc",
            "--table",
            "public.accounts",
            "--wait-ms",
            &wait_ms.to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cdc snapshot failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_table_copied_again_in_chunks_while_it_streams_is_never_torn_and_loses_its_ghosts() {
    let dir = tempfile::tempdir().unwrap();
    let pg = database();
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = pg.dsn("app");
    let connector = Connector::start(dir.path(), &connector_args(&dev, &dsn, "100", "envelope"));
    let topics = vec![
        "cdc.public.accounts".to_string(),
        "cdc.public.other".to_string(),
    ];
    wait_for("the initial copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let set = open_set(&rt, &dev.addr, &topics);
    let lsn = || -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    let ghosts = make_ghosts(&pg, 5001..=5040);
    rt.block_on(set.wait_for_source(&lsn(), WAIT)).unwrap();
    let before = balances(&set);
    assert_eq!(
        before.len() as i64,
        ACCOUNTS,
        "the ghosts are still in the Table"
    );
    let total = ACCOUNTS * START;
    // Transfers commit all through the pass; a reader checks every snapshot's sum.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = transfers(dsn.clone(), stop.clone());
    let torn = Arc::new(AtomicBool::new(false));
    let reads = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let b = balances(&set);
                let sum: i64 = b.values().sum();
                // Ghost rows leave with tombstones (their balance was moved to
                // account 1 already), so the sum of what is held only ever shrinks
                // by whole ghosts.
                let ghosts_held = b.keys().filter(|id| (5001..=5040).contains(*id)).count() as i64;
                if sum != total + ghosts_held * START {
                    eprintln!("torn read: sum {sum}, {ghosts_held} ghosts held");
                    torn.store(true, Ordering::Relaxed);
                }
                reads += 1;
                // Pacing, not waiting: back to back, snapshots (every shard's read
                // lock) starve the Table's applier of its write locks.
                std::thread::sleep(Duration::from_millis(5));
            }
            reads
        });
        // Set however this closure ends: a failed `ask` must not leave the scope
        // waiting for a reader that never stops.
        let stopper = StopOnDrop(&stop);
        let out = ask(&dev, &dsn, 90_000);
        assert!(out.contains("public.accounts: copied"), "{out}");
        drop(stopper);
        reader.join().unwrap()
    });
    let committed = writer.join().unwrap();
    assert!(
        !torn.load(Ordering::Relaxed),
        "a Table read saw a torn state"
    );
    assert!(
        committed > 20,
        "only {committed} transfers ran during the pass"
    );
    assert!(reads > 5, "only {reads} reads during the pass");

    let p = progress(&rt, &dev.addr).expect("progress recorded");
    assert_eq!(p.state, sluice_cdc::incremental::PassState::Done);
    assert_eq!(p.tombstones as i64, ghosts, "{p:?}");
    rt.block_on(set.wait_for_source(&lsn(), WAIT)).unwrap();
    assert_eq!(balances(&set), pg_balances(&pg));
    // The other table was not copied again.
    assert_eq!(
        pass_records(&rt, &dev.addr, "cdc.public.other", "snapshot-"),
        0
    );
    // A Table opened now bootstraps to the same rows.
    let fresh = open_set(&rt, &dev.addr, &topics);
    rt.block_on(fresh.wait_for_source(&lsn(), WAIT)).unwrap();
    assert_eq!(balances(&fresh), pg_balances(&pg));
    eprintln!(
        "pass: {} rows, {} tombstones; {committed} transfers and {reads} checked reads meanwhile",
        p.rows, p.tombstones
    );
}

#[test]
fn a_pass_cut_by_kill9_resumes_after_its_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let pg = database();
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = pg.dsn("app");
    // Row format here (envelopes above): the chunk and tombstone records in both.
    let mut connector = Connector::start(dir.path(), &connector_args(&dev, &dsn, "100", "row"));
    wait_for("the initial copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let ghosts = make_ghosts(&pg, 5001..=5010);
    // Asked while it runs; killed once a few chunks are recorded.
    let out = ask(&dev, &dsn, 0);
    assert!(out.contains("asked for a copy of public.accounts"), "{out}");
    let cut = wait_for("a few chunks of the pass", WAIT, || {
        progress(&rt, &dev.addr).filter(|p| p.rows >= 1000)
    });
    connector.kill9();
    assert_eq!(
        cut.state,
        sluice_cdc::incremental::PassState::Copying,
        "{cut:?}"
    );
    let cut = progress(&rt, &dev.addr).unwrap();
    assert!(cut.after.is_some());
    let before_restart = pass_records(
        &rt,
        &dev.addr,
        "cdc.public.accounts",
        &format!("snapshot-{}@", cut.id),
    );
    eprintln!("cut at {cut:?}; {before_restart} records of the pass in the topic");
    // `cdc status` shows the pass where it was cut.
    let out = std::process::Command::new(BIN)
        .args([
            "cdc",
            "status",
            "--bootstrap",
            &dev.addr,
            "--topic-prefix",
            "cdc",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let accounts = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.accounts")
        .expect("accounts in cdc status");
    assert_eq!(accounts["state"], "recopying", "{doc}");
    assert_eq!(accounts["recopy"]["rows"], cut.rows, "{doc}");
    assert!(
        doc["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["table"].as_str().unwrap().starts_with("__")),
        "{doc}"
    );
    pg.psql("app", "UPDATE accounts SET balance = balance + 1 WHERE id = 2; UPDATE accounts SET balance = balance - 1 WHERE id = 3;");
    let connector = Connector::start(dir.path(), &connector_args(&dev, &dsn, "100", "row"));
    let done = wait_for("the resumed pass to finish", WAIT, || {
        progress(&rt, &dev.addr).filter(|p| p.state == sluice_cdc::incremental::PassState::Done)
    });
    assert!(
        connector
            .log()
            .contains("resuming an incremental snapshot cut short"),
        "{}",
        connector.log()
    );
    assert_eq!(done.id, cut.id);
    assert_eq!(done.tombstones as i64, ghosts, "{done:?}");
    // Resumed, not started over: the pass's records over both runs are one copy of
    // the table and at most the chunk or two the cut run wrote past its last progress
    // record (started over, they would be the 1,000+ rows of the cut run more).
    let rows_left = (ACCOUNTS - ghosts) as u64;
    let written = pass_records(
        &rt,
        &dev.addr,
        "cdc.public.accounts",
        &format!("snapshot-{}@", done.id),
    );
    // What the cut run wrote past its last progress record (the kill lands a few
    // chunks after the test saw 1,000 rows) is written again, plus one chunk.
    let unrecorded = before_restart.saturating_sub(cut.rows);
    assert!(
        written >= rows_left && written <= rows_left + unrecorded + 100,
        "{written} records of the pass for a table of {rows_left} rows ({unrecorded} \
         written past the progress record at the cut): the pass started over"
    );
    let set = open_set(
        &rt,
        &dev.addr,
        &[
            "cdc.public.accounts".to_string(),
            "cdc.public.other".to_string(),
        ],
    );
    let lsn: PosRequest = pg
        .psql("app", "SELECT pg_current_wal_lsn()")
        .parse()
        .unwrap();
    rt.block_on(set.wait_for_source(&lsn, WAIT)).unwrap();
    assert_eq!(balances(&set), pg_balances(&pg));
}

/// Records of `topic` whose `sluice.txn` starts with `txn`.
fn pass_records(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str, txn: &str) -> u64 {
    use sluice_client::{Consumer, ConsumerConfig, Seek};
    use sluice_proto::TopicPartition;
    rt.block_on(async {
        let client = ClientConfig::new(bootstrap);
        let d = sluice_client::Admin::new(&client)
            .describe_topic(topic)
            .await
            .unwrap();
        let mut n = 0;
        for p in d.partitions {
            let hw = p.high_watermark.unwrap_or(0);
            let tp = TopicPartition::new(topic, p.partition);
            let mut consumer = Consumer::new(&client, ConsumerConfig::default());
            consumer.assign(vec![tp.clone()]);
            consumer.seek(&tp, Seek::Earliest);
            let deadline = Instant::now() + WAIT;
            while consumer.position(&tp).unwrap_or(0) < hw {
                assert!(Instant::now() < deadline, "reading {tp} took too long");
                for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
                    let ours = r.headers.iter().any(|h| {
                        h.key == "sluice.txn"
                            && h.value
                                .as_deref()
                                .is_some_and(|v| v.starts_with(txn.as_bytes()))
                    });
                    if r.offset < hw && ours {
                        n += 1;
                    }
                }
            }
        }
        n
    })
}
