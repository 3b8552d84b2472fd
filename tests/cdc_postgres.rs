//! `sluice cdc postgres` against a real Postgres 15 (started by the test as the
//! `postgres` user) and a real `sluice dev`:
//!
//! - the initial copy runs while writers update rows (the snapshot → stream handoff),
//!   then inserts, updates, deletes and primary-key changes stream; a Table equals
//!   `SELECT *` at the end, and `wait_for_source(pg_current_wal_lsn())` after a commit
//!   returns only once that commit is visible — also for a write to a table that is not
//!   captured;
//! - the bank invariant: transfers between accounts (over three partitions) inside
//!   transactions; every one of thousands of snapshots a TableSet gives during the run
//!   sums to the constant;
//! - restarts: the connector is killed -9 during the copy and during streaming, the
//!   database is restarted; every key's version column then appears in the topic's
//!   records exactly once per update, in order (0 lost, 0 duplicated, 0 reordered).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::Postgres;
use common::versions::{check_versions, versioned_rows};
use common::{poll_until, runtime, wait_for, Dev, BIN};
use serde_json::Value;
use sluice_client::{
    ClientConfig, Consumer, ConsumerConfig, OffsetReset, PosRequest, Seek, TableConfig, TableSet,
};
use sluice_proto::TopicPartition;

/// A running `sluice cdc postgres`; its stderr goes to a file in the test's directory.
struct Connector {
    child: Child,
    log: std::path::PathBuf,
}

impl Connector {
    fn start(dir: &Path, bootstrap: &str, dsn: &str, tables: &str, extra: &[&str]) -> Connector {
        let log = dir.join(format!(
            "connector-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(BIN)
            .args([
                "cdc",
                "postgres",
                "--bootstrap",
                bootstrap,
                "--dsn",
                dsn,
                "--tables",
                tables,
                "--topic-prefix",
                "cdc",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Connector { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ctrl-C, and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "connector did not stop on Ctrl-C:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The rows of a table snapshot, keyed by the key's `id`, value = the envelope's `after`.
fn rows_by_id(rows: &[(bytes::Bytes, bytes::Bytes)]) -> BTreeMap<i64, Value> {
    rows.iter()
        .map(|(k, v)| {
            let key: Value = serde_json::from_slice(k).expect("a JSON key");
            let value: Value = serde_json::from_slice(v).expect("a JSON value");
            (key["id"].as_i64().expect("an id"), value["after"].clone())
        })
        .collect()
}

/// `SELECT *` as the connector would write it (id, name, version).
fn select_users(pg: &Postgres) -> BTreeMap<i64, Value> {
    pg.psql("app", "SELECT id, name, version FROM users ORDER BY id")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.split('|');
            let id: i64 = it.next().unwrap().parse().unwrap();
            let name = it.next().unwrap().to_string();
            let version: i64 = it.next().unwrap().parse().unwrap();
            (
                id,
                serde_json::json!({"id": id, "name": name, "version": version}),
            )
        })
        .collect()
}

/// Runs `script` through psql on stdin from a thread of its own (the harness's `psql`
/// needs `&Postgres`): (success, stderr).
fn psql_on(port: u16, script: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "app",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `n` updates from `from` on, each bumping one row's version (rows 1..=rows).
fn updates_script(from: i64, n: i64, rows: i64) -> String {
    let mut script = String::new();
    for i in from..from + n {
        let id = 1 + (i * 7919) % rows;
        script.push_str(&format!(
            "UPDATE users SET version = version + 1, name = 'u{i}' WHERE id = {id};\n"
        ));
    }
    script
}

/// `n` transfers between accounts 1..=accounts, each one transaction over three rows
/// (so, over several partitions) that keeps the total.
fn transfers_script(n: i64, accounts: i64) -> String {
    let mut script = String::new();
    for i in 0..n {
        let (a, b, c) = (
            1 + (i * 31) % accounts,
            1 + (i * 17 + 5) % accounts,
            1 + (i * 7 + 11) % accounts,
        );
        script.push_str(&format!(
            "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = {a};
             UPDATE accounts SET balance = balance + 7 WHERE id = {b};
             UPDATE accounts SET balance = balance + 3 WHERE id = {c}; COMMIT;\n"
        ));
    }
    script
}

/// The sum of `balance` over a snapshot of the accounts table.
fn balances(rows: &[(bytes::Bytes, bytes::Bytes)]) -> i64 {
    rows.iter()
        .map(|(_, v)| {
            let v: Value = serde_json::from_slice(v).unwrap();
            v["after"]["balance"].as_i64().unwrap()
        })
        .sum()
}

fn open_set(rt: &tokio::runtime::Runtime, bootstrap: &str, topics: &[&str]) -> TableSet {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let set = rt
        .block_on(TableSet::open(
            &ClientConfig::new(bootstrap),
            &topics,
            TableConfig::default(),
        ))
        .unwrap();
    rt.block_on(set.ready()).unwrap();
    set
}

fn current_lsn(pg: &Postgres) -> PosRequest {
    pg.psql("app", "SELECT pg_current_wal_lsn()")
        .parse()
        .unwrap()
}

#[test]
fn copy_then_stream_with_concurrent_writers_ends_equal_to_select() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
         INSERT INTO users SELECT g, 'user-' || g, 1 FROM generate_series(1, 100000) g;
         CREATE TABLE other (id int PRIMARY KEY, x int);",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    // Three clients write while the copy runs and after it: random transactions of
    // updates, deletes, inserts and primary-key changes (ids 1000..100000 and new ones
    // from 200000 on, so the statements below keep their rows). Each change is either in
    // the copy or streamed after it, never both, never neither.
    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (port, stop, updates) = (pg.port(), stop.clone(), updates.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w + 1) | 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut script = String::from("BEGIN;\n");
                    for _ in 0..1 + next() % 3 {
                        let id = 1000 + next() % 99000;
                        let fresh = 200_000 + w * 10_000_000 + i;
                        script.push_str(&match next() % 10 {
                            0 => format!("DELETE FROM users WHERE id = {id};\n"),
                            1 => format!("INSERT INTO users VALUES ({fresh}, 'n{fresh}', 1);\n"),
                            2 => format!(
                                "UPDATE users SET id = {fresh}, version = version + 1 WHERE id = {id};\n"
                            ),
                            _ => format!(
                                "UPDATE users SET version = version + 1, name = 'w{w}.{i}' WHERE id = {id};\n"
                            ),
                        });
                        i += 1;
                    }
                    script.push_str("COMMIT;\n");
                    let (ok, err) = psql_on(port, &script);
                    assert!(ok, "{err}");
                    updates.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_for("a few updates", Duration::from_secs(20), || {
        (updates.load(Ordering::Relaxed) >= 5).then_some(())
    });
    let mut connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.users",
        &["--partitions", "2"],
    );
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    // Counted from the copy's end: under a loaded machine (each transaction is a psql
    // process) most of a fixed total could fall inside the copy.
    let at_copy = updates.load(Ordering::Relaxed);
    wait_for(
        "more updates after the copy",
        Duration::from_secs(60),
        || (updates.load(Ordering::Relaxed) >= at_copy + 150).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // Inserts, deletes, a primary-key change, in one transaction and alone.
    pg.psql(
        "app",
        "BEGIN;
         INSERT INTO users VALUES (150001, 'new', 1), (150002, 'newer', 1);
         DELETE FROM users WHERE id BETWEEN 100 AND 199;
         UPDATE users SET id = 150500, version = version + 1 WHERE id = 500;
         COMMIT;
         UPDATE users SET name = 'solo', version = version + 1 WHERE id = 150001;",
    );
    // Three readers, as three application processes would hold; each equals SELECT *.
    let sets: Vec<TableSet> = (0..3)
        .map(|_| open_set(&rt, &dev.addr, &["cdc.public.users"]))
        .collect();
    let lsn = current_lsn(&pg);
    let want = select_users(&pg);
    let mut got = BTreeMap::new();
    for set in &sets {
        rt.block_on(set.wait_for_source(&lsn, Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
        got = rows_by_id(&set.snapshot_all().remove(0).rows);
        assert_eq!(got.len(), want.len());
        for (id, row) in &want {
            assert_eq!(got.get(id), Some(row), "row {id}");
        }
    }
    let set = &sets[0];
    assert!(!got.contains_key(&150) && !got.contains_key(&500) && got.contains_key(&150500));

    // Read-your-writes for a write to a table nobody captures: a heartbeat carries it.
    pg.psql("app", "INSERT INTO other VALUES (1, 1)");
    let lsn = current_lsn(&pg);
    let began = Instant::now();
    rt.block_on(set.wait_for_source(&lsn, Duration::from_secs(10)))
        .unwrap();
    eprintln!("wait_for after an uncaptured write: {:?}", began.elapsed());

    // The envelope: Debezium's shape, a delete followed by a tombstone.
    let records = read_all(&rt, &dev.addr, "cdc.public.users", 2);
    let deletes: Vec<&(Option<Vec<u8>>, Option<Value>)> = records
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| v["op"] == "d"))
        .collect();
    assert!(
        deletes.len() >= 101,
        "100 deletes and the old key of the key change"
    );
    let d = deletes[0].1.as_ref().unwrap();
    assert_eq!(d["source"]["connector"], "postgresql");
    assert_eq!(d["source"]["table"], "users");
    assert!(d["source"]["lsn"].is_u64() && d["source"]["txId"].is_string());
    assert!(d["after"].is_null() && d["before"]["id"].is_i64());
    let tombstones = records.iter().filter(|(_, v)| v.is_none()).count();
    assert_eq!(tombstones, deletes.len(), "every delete has its tombstone");

    assert!(connector.stop().success(), "{}", connector.log());
    for s in sets {
        s.close();
    }
}

/// `read_all`'s records as `check_versions` takes them.
fn changes(
    records: &[(Option<Vec<u8>>, Option<Value>)],
) -> impl Iterator<Item = (&[u8], Option<&Value>)> {
    records
        .iter()
        .map(|(k, v)| (k.as_deref().unwrap_or_default(), v.as_ref()))
}

/// Every record of a topic from the beginning: (key, value as JSON or None).
fn read_all(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
    partitions: u32,
) -> Vec<(Option<Vec<u8>>, Option<Value>)> {
    rt.block_on(async {
        let client = ClientConfig::new(bootstrap);
        let admin = sluice_client::Admin::new(&client);
        let d = admin.describe_topic(topic).await.unwrap();
        let ends: HashMap<u32, u64> = d
            .partitions
            .iter()
            .map(|p| (p.partition, p.high_watermark.unwrap_or(0)))
            .collect();
        let mut consumer = Consumer::new(
            &client,
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        );
        let tps: Vec<TopicPartition> = (0..partitions)
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        consumer.assign(tps.clone());
        for tp in &tps {
            consumer.seek(tp, Seek::Earliest);
        }
        let mut out = Vec::new();
        let mut done: HashMap<u32, bool> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < partitions as usize {
            for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                if r.offset + 1 >= ends[&r.partition] {
                    done.insert(r.partition, true);
                }
                let heartbeat = r.headers.iter().any(|h| h.key == "sluice.heartbeat");
                if !heartbeat {
                    out.push((
                        r.key.map(|k| k.to_vec()),
                        r.value.map(|v| serde_json::from_slice(&v).unwrap()),
                    ));
                }
            }
            for (p, end) in &ends {
                if *end == 0 {
                    done.insert(*p, true);
                }
            }
            assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
        }
        out
    })
}

#[test]
fn the_bank_total_holds_in_every_snapshot_while_transfers_stream() {
    const ACCOUNTS: i64 = 200;
    const TOTAL: i64 = ACCOUNTS * 1000;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let mut connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.accounts",
        &["--partitions", "3"],
    );
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    // Three readers, as three application processes would hold.
    let sets: Vec<TableSet> = (0..3)
        .map(|_| open_set(&rt, &dev.addr, &["cdc.public.accounts"]))
        .collect();
    // Transfers: several accounts per transaction, so one spans partitions.
    let stop = Arc::new(AtomicBool::new(false));
    let transfers = {
        let (port, stop) = (pg.port(), stop.clone());
        std::thread::spawn(move || {
            let script = transfers_script(400, ACCOUNTS);
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) && rounds < 5 {
                let (ok, err) = psql_on(port, &script);
                assert!(ok, "{err}");
                rounds += 1;
            }
        })
    };
    let mut reads = 0u64;
    let mut distinct = std::collections::HashSet::new();
    while !transfers.is_finished() || reads < 3000 {
        let snap = sets[reads as usize % 3].snapshot_all().remove(0);
        let total = balances(&snap.rows);
        assert_eq!(
            total, TOTAL,
            "snapshot {reads} at {:?} sums to {total}",
            snap.source_position
        );
        distinct.insert(format!("{:?}", snap.position));
        reads += 1;
    }
    transfers.join().unwrap();
    let lsn = current_lsn(&pg);
    for set in &sets {
        rt.block_on(set.wait_for_source(&lsn, Duration::from_secs(30)))
            .unwrap();
    }
    let rows: Vec<_> = sets
        .iter()
        .map(|s| rows_by_id(&s.snapshot_all().remove(0).rows))
        .collect();
    assert!(
        rows.iter().all(|r| r == &rows[0]),
        "the three readers converge"
    );
    let final_sum: i64 = pg
        .psql("app", "SELECT sum(balance) FROM accounts")
        .parse()
        .unwrap();
    assert_eq!(final_sum, TOTAL);
    eprintln!(
        "{reads} snapshots, {} distinct positions, all summing to {TOTAL}",
        distinct.len()
    );
    assert!(distinct.len() > 10, "the snapshots saw the table move");
    assert!(connector.stop().success(), "{}", connector.log());
}

#[test]
fn kill9_of_the_connector_and_a_database_restart_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
         INSERT INTO users SELECT g, 'user-' || g, 1 FROM generate_series(1, 30000) g;",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let args = [
        "--partitions",
        "2",
        "--topic-config",
        "min.compaction.lag.ms=3600000",
    ];
    let start =
        |dir: &Path| Connector::start(dir, &dev.addr, &pg.dsn("app"), "public.users", &args);
    // Killed during the copy: the next run copies again at a new point.
    let mut connector = start(dir.path());
    wait_for("the copy under way", Duration::from_secs(60), || {
        let d = rt
            .block_on(
                sluice_client::Admin::new(&ClientConfig::new(&dev.addr))
                    .describe_topic("cdc.public.users"),
            )
            .ok()?;
        (d.partitions
            .iter()
            .map(|p| p.high_watermark.unwrap_or(0))
            .sum::<u64>()
            > 1000)
            .then_some(())
    });
    connector.kill9();
    let mut connector = start(dir.path());
    // Streaming updates: every update bumps the row's version by one.
    let run_updates = |pg: &Postgres, from: i64, n: i64| {
        pg.psql("app", &updates_script(from, n, 30000));
    };
    run_updates(&pg, 0, 300);
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    // Killed -9 in the middle of a burst of updates, with records written that the
    // slot was not yet confirmed for: they are streamed again and must be skipped.
    let burst = |from: i64| {
        let port = pg.port();
        std::thread::spawn(move || {
            // A burst may meet the database restart below: its unfinished statements fail.
            psql_on(port, &updates_script(from, 3000, 30000)).1
        })
    };
    let changes = |c: &Connector| c.log().matches("streaming").count();
    let b = burst(300);
    let topic_end = || {
        rt.block_on(
            sluice_client::Admin::new(&ClientConfig::new(&dev.addr))
                .describe_topic("cdc.public.users"),
        )
        .map(|d| {
            d.partitions
                .iter()
                .map(|p| p.high_watermark.unwrap_or(0))
                .sum::<u64>()
        })
        .unwrap_or(0)
    };
    let before = topic_end();
    wait_for("the burst streaming", Duration::from_secs(30), || {
        (topic_end() > before + 500).then_some(())
    });
    connector.kill9();
    let _ = changes(&connector);
    b.join().unwrap();
    let mut connector = start(dir.path());
    let b = burst(3300);
    let before = topic_end();
    wait_for("the next burst streaming", Duration::from_secs(30), || {
        (topic_end() > before + 500).then_some(())
    });
    // The database restarts under the connector, which reconnects by itself.
    pg.restart();
    let _ = b.join().unwrap();
    run_updates(&pg, 6300, 300);
    wait_for("the connector reconnected", Duration::from_secs(30), || {
        connector.log().contains("restarting in").then_some(())
    });
    let set = open_set(&rt, &dev.addr, &["cdc.public.users"]);
    let lsn = current_lsn(&pg);
    rt.block_on(set.wait_for_source(&lsn, Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let got = rows_by_id(&set.snapshot_all().remove(0).rows);
    assert_eq!(got, select_users(&pg));
    // Per key: the versions the topic holds after the last copy are consecutive.
    let records = read_all(&rt, &dev.addr, "cdc.public.users", 2);
    let mut last_copy: HashMap<i64, i64> = HashMap::new();
    let mut streamed: HashMap<i64, Vec<i64>> = HashMap::new();
    for (_, v) in records.iter().filter_map(|(k, v)| Some((k, v.as_ref()?))) {
        let id = v["after"]["id"]
            .as_i64()
            .or(v["before"]["id"].as_i64())
            .unwrap();
        let version = v["after"]["version"].as_i64();
        match (v["op"].as_str().unwrap(), version) {
            ("r", Some(ver)) => {
                last_copy.insert(id, ver);
                streamed.remove(&id);
            }
            (_, Some(ver)) => streamed.entry(id).or_default().push(ver),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for (id, versions) in &streamed {
        let mut expect = last_copy.get(id).copied().unwrap_or(0) + 1;
        for &v in versions {
            if v != expect {
                problems.push(format!(
                    "key {id}: versions {versions:?} after copy {:?}",
                    last_copy.get(id)
                ));
                break;
            }
            expect += 1;
        }
        let final_version = got[id]["version"].as_i64().unwrap();
        if expect - 1 != final_version {
            problems.push(format!(
                "key {id}: topic ends at version {} but the row is at {final_version}",
                expect - 1
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    eprintln!(
        "{} keys updated, every version exactly once in order",
        streamed.len()
    );
    assert!(connector.stop().success(), "{}", connector.log());
}

#[test]
fn an_unchanged_toasted_value_is_carried_and_without_full_identity_the_connector_stops() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, n int NOT NULL);
         ALTER TABLE docs REPLICA IDENTITY FULL;
         CREATE TABLE plain (id int PRIMARY KEY, body text NOT NULL, n int NOT NULL);",
    );
    let big = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3000))";
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let mut connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.docs,public.plain",
        &[],
    );
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    pg.psql("app", &format!("INSERT INTO docs VALUES (1, {big}, 0)"));
    pg.psql("app", "UPDATE docs SET n = 1 WHERE id = 1");
    let body = pg.psql("app", "SELECT body FROM docs WHERE id = 1");
    assert!(body.len() > 90_000);
    let set = open_set(&rt, &dev.addr, &["cdc.public.docs"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let rows = set.snapshot_all().remove(0).rows;
    let after = &rows_by_id(&rows)[&1];
    assert_eq!(after["n"], 1);
    assert_eq!(
        after["body"].as_str(),
        Some(body.as_str()),
        "the unchanged value is carried"
    );
    // A column added while streaming is carried (the new relation arrives first).
    pg.psql(
        "app",
        "ALTER TABLE docs ADD COLUMN tag text; UPDATE docs SET tag = 'x', n = 2 WHERE id = 1",
    );
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let rows = set.snapshot_all().remove(0).rows;
    let after = &rows_by_id(&rows)[&1];
    assert_eq!(after["tag"], "x");
    assert_eq!(after["n"], 2);
    assert_eq!(after["body"].as_str(), Some(body.as_str()));
    // Without REPLICA IDENTITY FULL the value cannot be known: the connector stops
    // with the fix, rather than write a row without it.
    pg.psql("app", &format!("INSERT INTO plain VALUES (1, {big}, 0)"));
    pg.psql("app", "UPDATE plain SET n = 1 WHERE id = 1");
    let status = wait_for("the connector to stop", Duration::from_secs(30), || {
        connector.child.try_wait().unwrap()
    });
    assert!(!status.success());
    let log = connector.log();
    assert!(log.contains("REPLICA IDENTITY FULL"), "{log}");
    set.close();
}

/// The partition leader is killed -9 while a burst streams (RF 3, min.insync.replicas 2):
/// the producer's retries go to the new leader without duplicating, and every key's
/// versions still appear exactly once, in order. (In the `cluster` test group.)
#[test]
fn cluster_kill9_of_the_partition_leader_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
         INSERT INTO users SELECT g, 'user-' || g, 1 FROM generate_series(1, 5000) g;",
    );
    let mut cluster = common::cluster::Cluster::start(dir.path(), 3);
    let (rt, _config, admin) = cluster.client();
    let bootstrap = cluster.bootstrap();
    let connector = Connector::start(
        dir.path(),
        &bootstrap,
        &pg.dsn("app"),
        "public.users",
        &["--topic-config", "min.compaction.lag.ms=3600000"],
    );
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let d = rt
        .block_on(admin.describe_topic("cdc.public.users"))
        .unwrap();
    assert_eq!(d.partitions[0].replicas.len(), 3);
    let leader = d.partitions[0].leader.unwrap() as usize;
    let port = pg.port();
    let burst = std::thread::spawn(move || {
        let (ok, err) = psql_on(port, &updates_script(0, 4000, 5000));
        assert!(ok, "{err}");
    });
    let end = || {
        rt.block_on(admin.describe_topic("cdc.public.users"))
            .ok()
            .and_then(|d| d.partitions[0].high_watermark)
            .unwrap_or(0)
    };
    let before = end();
    wait_for("the burst streaming", Duration::from_secs(30), || {
        (end() > before + 500).then_some(())
    });
    cluster.kill9(leader - 1);
    burst.join().unwrap();
    let set = open_set(&rt, &bootstrap, &["cdc.public.users"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let got = rows_by_id(&set.snapshot_all().remove(0).rows);
    assert_eq!(got, select_users(&pg));
    let records = read_all(&rt, &bootstrap, "cdc.public.users", 1);
    let mut versions: HashMap<i64, Vec<i64>> = HashMap::new();
    for v in records.iter().filter_map(|(_, v)| v.as_ref()) {
        if let Some(ver) = v["after"]["version"].as_i64() {
            versions
                .entry(v["after"]["id"].as_i64().unwrap())
                .or_default()
                .push(ver);
        }
    }
    for (id, vs) in &versions {
        let want: Vec<i64> = (1..=got[id]["version"].as_i64().unwrap()).collect();
        assert_eq!(vs, &want, "key {id}");
    }
    eprintln!(
        "leader {leader} killed mid-burst; {} keys, every version once",
        versions.len()
    );
    set.close();
}

/// Values of the documented types, through the copy and through the stream, as JSON; and
/// a second connector for the same slot is refused while the first runs.
#[test]
fn types_map_as_documented_in_the_copy_and_the_stream_and_a_second_connector_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    let row = |id: i32| {
        format!(
            "({id}, 9223372036854775807, 12.50, 'NaN', 'Infinity', 1.5, true, '\\x00ff10', \
             'text ✓', '{{\"a\": [1, 2]}}', '1970-01-01 00:00:01.5', \
             '2024-05-01 12:00:00.25+02', '1970-01-11', NULL)"
        )
    };
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, big bigint, num numeric, nan numeric, \
             inf numeric, f float8, b boolean, bin bytea, txt text, doc jsonb, ts timestamp, \
             tstz timestamptz, d date, nothing text);
             INSERT INTO t VALUES {};",
            row(1)
        ),
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    // Setup errors end the connector in one line, and before any topic is created.
    let refused = |prefix: &str, tables: &str| {
        let out = common::run_cli(
            &dev.addr,
            &[
                "cdc",
                "postgres",
                "--dsn",
                &pg.dsn("app"),
                "--tables",
                tables,
                "--topic-prefix",
                prefix,
            ],
            "",
        );
        assert!(!out.status.success(), "{prefix} {tables}");
        common::stderr(&out)
    };
    let err = refused("cdc", "public.missing");
    assert!(err.contains("public.missing does not exist"), "{err}");
    assert!(
        !dev.ok(&["topic", "list"], "").contains("missing"),
        "no topic for a refused table"
    );
    // A topic holding records the connector did not write is refused, not retried.
    dev.ok(
        &[
            "topic",
            "create",
            "foreign.public.t",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
            "--config",
            "cleanup.policy=compact",
        ],
        "",
    );
    dev.ok(
        &["produce", "foreign.public.t", "--key-separator", ":"],
        "k:v\n",
    );
    let err = refused("foreign", "public.t");
    assert!(err.contains("--topic-prefix"), "{err}");
    let mut connector = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.t", &[]);
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    pg.psql("app", &format!("INSERT INTO t VALUES {}", row(2)));
    let set = open_set(&rt, &dev.addr, &["cdc.public.t"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let rows = rows_by_id(&set.snapshot_all().remove(0).rows);
    let want = |id: i64| {
        serde_json::json!({
            "id": id, "big": i64::MAX, "num": "12.50", "nan": "NaN", "inf": "Infinity",
            "f": 1.5, "b": true, "bin": "AP8Q", "txt": "text ✓", "doc": "{\"a\": [1, 2]}",
            "ts": 1_500_000, "tstz": "2024-05-01T10:00:00.250000Z", "d": 10, "nothing": null
        })
    };
    assert_eq!(rows[&1], want(1), "through the copy");
    assert_eq!(rows[&2], want(2), "through the stream");

    // The slot serves one walsender: a second connector is refused, not interleaved.
    let mut second = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.t", &[]);
    let status = wait_for(
        "the second connector to give up",
        Duration::from_secs(30),
        || second.child.try_wait().unwrap(),
    );
    assert!(!status.success());
    assert!(second.log().contains("in use"), "{}", second.log());
    assert!(connector.stop().success(), "{}", connector.log());
    set.close();
}

/// `body` of docs row `id` as the tests write it: `len` copies of one letter.
fn doc_body(id: i64, len: usize) -> String {
    std::iter::repeat_n((b'a' + (id % 26) as u8) as char, len).collect()
}

/// (id, body length, body intact) per row of a `docs` Table.
fn docs_in(set: &TableSet) -> BTreeMap<i64, (usize, bool)> {
    rows_by_id(&set.snapshot_all().remove(0).rows)
        .into_iter()
        .map(|(id, after)| {
            let body = after["body"].as_str().unwrap_or_default().to_string();
            let intact = body == doc_body(id, body.len());
            (id, (body.len(), intact))
        })
        .collect()
}

/// Multi-megabyte values are ordinary in Postgres (`text`, `jsonb`, `bytea`): a 2.2 MB
/// row and a 4.4 MB update envelope (before and after, REPLICA IDENTITY FULL) arrive,
/// in order with the rows after them, also across a kill -9 of the connector; a row over
/// `--max-record-bytes` stops the connector (exit 1, naming table, key and setting)
/// instead of being skipped, and arrives once the limit is raised.
#[test]
fn multi_megabyte_rows_arrive_in_order_and_a_row_over_the_limit_stops_the_connector() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL);
         ALTER TABLE docs REPLICA IDENTITY FULL;
         INSERT INTO docs VALUES (1, 'b');",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let insert = |id: i64, len: usize| {
        pg.psql(
            "app",
            &format!(
                "INSERT INTO docs VALUES ({id}, repeat('{}', {len}))",
                doc_body(id, 1)
            ),
        );
    };
    // Made beforehand with the broker's default max.message.bytes (1 MiB), as by an
    // older connector or by hand: the connector must raise it.
    dev.ok(
        &["topic", "create", "cdc.public.docs", "--partitions", "1"],
        "",
    );
    let mut connector = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.docs", &[]);
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    assert!(
        connector.log().contains("raised max.message.bytes"),
        "{}",
        connector.log()
    );
    insert(2, 2_200_000);
    insert(3, 17);
    pg.psql(
        "app",
        &format!(
            "UPDATE docs SET body = repeat('{}', 2200001) WHERE id = 2",
            doc_body(2, 1)
        ),
    );
    let set = open_set(&rt, &dev.addr, &["cdc.public.docs"]);
    let topic_end = || {
        rt.block_on(
            sluice_client::Admin::new(&ClientConfig::new(&dev.addr))
                .describe_topic("cdc.public.docs"),
        )
        .map(|d| format!("{:?}", d.partitions[0]))
        .unwrap_or_default()
    };
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\ntopic: {}\nslot: {}\npostgres: {}\n{}", topic_end(), pg.psql("app", "SELECT slot_name, active, restart_lsn, confirmed_flush_lsn FROM pg_replication_slots"), pg.log(), connector.log()));
    let want = BTreeMap::from([(1, (1, true)), (2, (2_200_001, true)), (3, (17, true))]);
    assert_eq!(docs_in(&set), want, "{}", connector.log());

    // Killed -9 right after a big row was handed over; the next run resumes.
    insert(4, 3_000_000);
    connector.kill9();
    insert(5, 5);
    let mut connector = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.docs", &[]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let mut want = want;
    want.insert(4, (3_000_000, true));
    want.insert(5, (5, true));
    assert_eq!(docs_in(&set), want, "{}", connector.log());
    assert!(connector.stop().success(), "{}", connector.log());

    // Over the limit: the connector stops with a setup error and writes nothing after it.
    let small = ["--max-record-bytes", "1000000"];
    let mut connector =
        Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.docs", &small);
    insert(6, 1_500_000);
    insert(7, 7);
    let status = poll_until(Duration::from_secs(60), || {
        connector.child.try_wait().unwrap()
    })
    .unwrap_or_else(|| {
        panic!(
            "the connector did not stop within 60 s\n{}\npostgres: {}",
            connector.log(),
            pg.log()
        )
    });
    let log = connector.log();
    assert_eq!(status.code(), Some(1), "{log}");
    for want in ["public.docs", r#"{"id":6}"#, "--max-record-bytes=1000000"] {
        assert!(log.contains(want), "the error names {want}: {log}");
    }
    assert!(!log.contains("restarting in"), "not retried: {log}");
    // Nothing after row 6 was written either, so nothing hides it: with the default
    // limit the next run writes 6 and then 7.
    let connector = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.docs", &[]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    want.insert(6, (1_500_000, true));
    want.insert(7, (7, true));
    assert_eq!(docs_in(&set), want, "{}", connector.log());
    let ids: Vec<i64> = read_all(&rt, &dev.addr, "cdc.public.docs", 1)
        .into_iter()
        .filter_map(|(_, v)| v?["after"]["id"].as_i64())
        .collect();
    assert_eq!(
        ids,
        vec![1, 2, 3, 2, 4, 5, 6, 7],
        "each change once, in commit order"
    );
}

/// A lost slot forces a new copy; rows deleted while no slot recorded it must not
/// outlive it: the copy tombstones every key the topic held that it did not write.
#[test]
fn a_copy_after_the_slot_was_lost_tombstones_rows_deleted_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
         INSERT INTO users SELECT g, 'user-' || g, 1 FROM generate_series(1, 2000) g;",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let args = ["--partitions", "3"];
    let mut connector =
        Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.users", &args);
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    pg.psql(
        "app",
        "DELETE FROM users WHERE id = 1; UPDATE users SET version = 2 WHERE id = 2;",
    );
    let set = open_set(&rt, &dev.addr, &["cdc.public.users"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    assert_eq!(
        rows_by_id(&set.snapshot_all().remove(0).rows),
        select_users(&pg)
    );
    assert!(connector.stop().success(), "{}", connector.log());
    drop(set);

    // The slot is lost (max_slot_wal_keep_size, a DBA, a failover) while rows change.
    pg.psql("app", "SELECT pg_drop_replication_slot('sluice_cdc')");
    pg.psql(
        "app",
        "DELETE FROM users WHERE id IN (3, 500, 1999);
         DELETE FROM users WHERE id BETWEEN 1000 AND 1099;
         INSERT INTO users VALUES (5000, 'new', 1);
         UPDATE users SET version = 3 WHERE id = 2;",
    );
    let connector = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.users", &args);
    wait_for("the new copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    assert!(
        connector.log().contains("tombstones=103"),
        "{}",
        connector.log()
    );
    let set = open_set(&rt, &dev.addr, &["cdc.public.users"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let got = rows_by_id(&set.snapshot_all().remove(0).rows);
    for gone in [1, 3, 500, 1999, 1000, 1050, 1099] {
        assert!(
            !got.contains_key(&gone),
            "row {gone} was deleted but is in the Table"
        );
    }
    assert_eq!(got, select_users(&pg));
}

/// The bank invariant under partial failure on a real cluster: transfers (each one
/// transaction over several accounts, so over both partitions) stream while a follower
/// of one partition is paused for 5 s and the connector is killed -9 and restarted
/// mid-stream. Every whole-table snapshot a Table gives in the meantime sums to the
/// constant: no reader ever sees part of a transfer, however late its other piece.
#[test]
fn cluster_the_bank_total_holds_while_the_connector_is_killed_and_a_follower_stalls() {
    const ACCOUNTS: i64 = 200;
    const TOTAL: i64 = ACCOUNTS * 1000;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    );
    let cluster = common::cluster::Cluster::start(dir.path(), 3);
    let (rt, _config, admin) = cluster.client();
    let bootstrap = cluster.bootstrap();
    let args = ["--partitions", "2", "--replication-factor", "2"];
    let start =
        |dir: &Path| Connector::start(dir, &bootstrap, &pg.dsn("app"), "public.accounts", &args);
    let mut connector = start(dir.path());
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let d = rt
        .block_on(admin.describe_topic("cdc.public.accounts"))
        .unwrap();
    // A broker that follows a partition and leads none (else any follower).
    let leaders: Vec<u32> = d.partitions.iter().filter_map(|p| p.leader).collect();
    let followers: Vec<u32> = d
        .partitions
        .iter()
        .flat_map(|p| p.replicas.iter().copied().filter(|r| Some(*r) != p.leader))
        .collect();
    let paused = *followers
        .iter()
        .find(|f| !leaders.contains(f))
        .unwrap_or(&followers[0]) as usize;
    let set = open_set(&rt, &bootstrap, &["cdc.public.accounts"]);
    let sum = |set: &TableSet| -> (i64, String) {
        let snap = set.snapshot_all().remove(0);
        (balances(&snap.rows), format!("{:?}", snap.source_position))
    };
    let transfers = {
        let port = pg.port();
        std::thread::spawn(move || {
            let script = transfers_script(600, ACCOUNTS);
            for _ in 0..4 {
                let (ok, err) = psql_on(port, &script);
                assert!(ok, "{err}");
            }
        })
    };
    let mut reads = 0u64;
    let mut check = |set: &TableSet| {
        let (total, at) = sum(set);
        assert_eq!(total, TOTAL, "snapshot {reads} at {at} sums to {total}");
        reads += 1;
    };
    // Faults, while the reader keeps checking between steps.
    let until =
        |what: &str, limit: Duration, done: &mut dyn FnMut() -> bool, check: &mut dyn FnMut()| {
            let deadline = Instant::now() + limit;
            while !done() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                check();
            }
        };
    let child = cluster.brokers[paused - 1].1.as_ref().unwrap();
    common::cluster::signal(child, libc::SIGSTOP);
    let paused_at = Instant::now();
    until(
        "5 s of pause",
        Duration::from_secs(30),
        &mut || paused_at.elapsed() >= Duration::from_secs(5),
        &mut || check(&set),
    );
    common::cluster::signal(child, libc::SIGCONT);
    connector.kill9();
    let killed_at = Instant::now();
    until(
        "1 s without a connector",
        Duration::from_secs(30),
        &mut || killed_at.elapsed() >= Duration::from_secs(1),
        &mut || check(&set),
    );
    let connector = start(dir.path());
    until(
        "the transfers",
        Duration::from_secs(120),
        &mut || transfers.is_finished(),
        &mut || check(&set),
    );
    transfers.join().unwrap();
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    check(&set);
    let final_sum: i64 = pg
        .psql("app", "SELECT sum(balance) FROM accounts")
        .parse()
        .unwrap();
    assert_eq!(final_sum, TOTAL);
    let got = rows_by_id(&set.snapshot_all().remove(0).rows);
    let want: BTreeMap<i64, Value> = pg
        .psql("app", "SELECT id, balance FROM accounts ORDER BY id")
        .lines()
        .map(|l| {
            let (id, balance) = l.split_once('|').unwrap();
            let id: i64 = id.parse().unwrap();
            let balance: i64 = balance.parse().unwrap();
            (id, serde_json::json!({"id": id, "balance": balance}))
        })
        .collect();
    assert_eq!(got, want);
    eprintln!("{reads} snapshots with broker {paused} paused 5 s and the connector killed -9, all summing to {TOTAL}");
    set.close();
}

/// `SELECT id, name, version FROM table` as the connector writes it.
fn select_versioned(pg: &Postgres, table: &str) -> BTreeMap<i64, Value> {
    versioned_rows(
        &pg.psql("app", &format!("SELECT id, name, version FROM {table}")),
        '|',
    )
}

/// Writes to users, orders and items (rows 1..=rows each): version bumps, some in one
/// transaction over users and items, inserts of new items (ids from 100000) and
/// deletes of items. Statement `i` of batch `batch`.
fn three_table_batch(batch: i64, n: i64, rows: i64) -> String {
    let mut script = String::new();
    for i in batch * n..(batch + 1) * n {
        let id = 1 + (i * 7919) % rows;
        let bump = |t: &str| {
            format!("UPDATE {t} SET version = version + 1, name = '{t}{i}' WHERE id = {id};\n")
        };
        match i % 5 {
            0 => script.push_str(&bump("users")),
            1 => script.push_str(&bump("orders")),
            2 => script.push_str(&bump("items")),
            3 => script.push_str(&format!(
                "BEGIN;\n{}{}COMMIT;\n",
                bump("users"),
                bump("items")
            )),
            _ if i % 10 == 4 => script.push_str(&format!(
                "INSERT INTO items VALUES ({}, 'new{i}', 1);\n",
                100_000 + i
            )),
            _ => script.push_str(&format!(
                "DELETE FROM items WHERE id = {};\n",
                rows - i % rows
            )),
        }
    }
    script
}

/// A table added to `--tables` of a connector whose topics hold a finished copy is
/// copied on its own (a snapshot of that table at a temporary slot's consistent point),
/// while the tables already captured go on streaming from the slot: their topics get
/// no second copy, and nothing written while the connector was stopped or during the
/// new copy — to any of the three tables, in transactions over an old and the new one
/// too — is lost or written twice.
#[test]
fn a_table_added_to_tables_is_copied_alone_while_the_others_stream_on() {
    const ROWS: i64 = 3000;
    // The new table is larger, so that writes land while it is copied.
    const ITEMS: i64 = 20000;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    for t in ["users", "orders"] {
        pg.psql(
            "app",
            &format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
                 INSERT INTO {t} SELECT g, '{t}-' || g, 1 FROM generate_series(1, {ROWS}) g;"
            ),
        );
    }
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let args = ["--partitions", "2"];
    let mut connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.users,public.orders",
        &args,
    );
    wait_for("the copy written", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    pg.psql(
        "app",
        "UPDATE users SET version = version + 1 WHERE id <= 10;
         UPDATE orders SET version = version + 1 WHERE id <= 10;",
    );
    let set = open_set(&rt, &dev.addr, &["cdc.public.users", "cdc.public.orders"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    drop(set);
    assert!(connector.stop().success(), "{}", connector.log());

    // Stopped: the old tables change, and a third table comes with rows.
    pg.psql(
        "app",
        &format!(
            "UPDATE users SET version = version + 1 WHERE id BETWEEN 5 AND 20;
             UPDATE orders SET version = version + 1 WHERE id BETWEEN 5 AND 20;
             CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
             INSERT INTO items SELECT g, 'items-' || g, 1 FROM generate_series(1, {ITEMS}) g;"
        ),
    );
    // Writes to all three go on while the connector starts and copies the new table,
    // and a little after.
    let copying = Arc::new(AtomicBool::new(false));
    let copied = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let writer = {
        let (port, copying, copied, during) =
            (pg.port(), copying.clone(), copied.clone(), during.clone());
        std::thread::spawn(move || {
            let mut after = 0;
            for batch in 0.. {
                let started = copying.load(Ordering::Relaxed) && !copied.load(Ordering::Relaxed);
                let (ok, err) = psql_on(port, &three_table_batch(batch, 50, ROWS));
                assert!(ok, "{err}");
                if started && !copied.load(Ordering::Relaxed) {
                    during.fetch_add(1, Ordering::Relaxed);
                }
                if copied.load(Ordering::Relaxed) {
                    after += 1;
                    if after == 3 {
                        return batch + 1;
                    }
                }
                assert!(batch < 2000, "the copy did not finish");
            }
            unreachable!()
        })
    };
    let mut connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.users,public.orders,public.items",
        &args,
    );
    wait_for("a copy started", Duration::from_secs(60), || {
        let log = connector.log();
        (log.contains("copy of tables added to --tables started")
            || log.contains("initial copy started"))
        .then_some(())
    });
    copying.store(true, Ordering::Relaxed);
    wait_for("the new table copied", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    copied.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();

    let topics = ["cdc.public.users", "cdc.public.orders", "cdc.public.items"];
    let set = open_set(&rt, &dev.addr, &topics);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let snapshots = set.snapshot_all();
    let mut problems = Vec::new();
    for (i, (topic, table)) in topics.iter().zip(["users", "orders", "items"]).enumerate() {
        let want = select_versioned(&pg, table);
        let got = rows_by_id(&snapshots[i].rows);
        assert_eq!(got.len(), want.len(), "{topic}: rows");
        assert_eq!(got, want, "{topic} differs from SELECT *");
        let records = read_all(&rt, &dev.addr, topic, 2);
        let (mut p, copy_records) = check_versions(changes(&records), &want);
        if table != "items" {
            assert_eq!(
                copy_records, ROWS as usize,
                "{topic}: copied again (each row once in the first copy only)"
            );
        }
        eprintln!("{topic}: {} rows, {copy_records} copy records", want.len());
        problems.append(&mut p);
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    eprintln!(
        "{batches} batches of 50 writes, {} of them wholly during the copy; every version \
         once, in order",
        during.load(Ordering::Relaxed)
    );
    drop(set);
    assert!(connector.stop().success(), "{}", connector.log());

    // orders is left out of --tables for a run, changes meanwhile (rows deleted too),
    // and comes back: copied again on its own, not streamed on past what it missed.
    let mut connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.users,public.items",
        &args,
    );
    wait_for("streaming", Duration::from_secs(60), || {
        connector.log().contains("streaming slot=").then_some(())
    });
    pg.psql(
        "app",
        "UPDATE orders SET version = version + 1 WHERE id BETWEEN 100 AND 150;
         DELETE FROM orders WHERE id BETWEEN 200 AND 210;
         INSERT INTO orders VALUES (50000, 'late', 1);
         UPDATE users SET version = version + 1 WHERE id BETWEEN 100 AND 110;",
    );
    let set = open_set(&rt, &dev.addr, &["cdc.public.users"]);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    drop(set);
    assert!(connector.stop().success(), "{}", connector.log());
    pg.psql(
        "app",
        "UPDATE orders SET version = version + 1 WHERE id BETWEEN 140 AND 160;",
    );
    let connector = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.users,public.orders,public.items",
        &args,
    );
    wait_for("streaming", Duration::from_secs(60), || {
        connector.log().contains("streaming slot=").then_some(())
    });
    let set = open_set(&rt, &dev.addr, &topics);
    rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", connector.log()));
    let snapshots = set.snapshot_all();
    for (i, (topic, table)) in topics.iter().zip(["users", "orders", "items"]).enumerate() {
        let want = select_versioned(&pg, table);
        let got = rows_by_id(&snapshots[i].rows);
        let mut ids: Vec<&i64> = got.keys().chain(want.keys()).collect();
        ids.sort();
        ids.dedup();
        let differ: Vec<String> = ids
            .into_iter()
            .filter(|id| got.get(id) != want.get(id))
            .map(|id| format!("{id}: topic {:?}, table {:?}", got.get(id), want.get(id)))
            .collect();
        assert!(
            differ.is_empty(),
            "{topic} differs from SELECT * after orders came back in {} rows: {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        );
        let records = read_all(&rt, &dev.addr, topic, 2);
        let (p, copy_records) = check_versions(changes(&records), &want);
        assert!(p.is_empty(), "{topic}: {p:?}");
        if table == "users" {
            assert_eq!(copy_records, ROWS as usize, "{topic}: copied again");
        }
        if table == "orders" {
            assert!(
                copy_records > ROWS as usize,
                "{topic} was not copied again after it came back"
            );
        }
    }
}
