//! `sluice cdc mysql` when `--tables` changes, against a private MariaDB and a real
//! `sluice dev`:
//!
//! - a table added to `--tables` of a connector whose topics hold a finished copy is
//!   copied on its own, at a consistent snapshot of its own, while the tables already
//!   captured go on from where their topics end: their topics get no second copy, and no
//!   change — to any table, in transactions over an old and the new one too, committed
//!   while the connector was stopped or during the copy — is lost or written twice;
//! - a connector killed -9 in the middle of that copy copies the table again at its
//!   restart, still alone;
//! - a table left out of `--tables` for a while and then added back is copied again on
//!   its own, and rows deleted meanwhile are gone from its topic.
//!
//! Every topic ends equal to `SELECT *`.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::db::MariaDb;
use common::versions::{check_versions, versioned_rows};
use common::{runtime, wait_for, Dev, BIN};
use serde_json::Value;
use sluice_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, PosRequest, Seek, TableConfig, TableSet,
};
use sluice_proto::TopicPartition;

/// A running `sluice cdc mysql`; its stderr goes to a file in the test's directory.
struct Connector {
    child: Child,
    log: std::path::PathBuf,
}

impl Connector {
    fn start(dir: &Path, dev: &Dev, db: &MariaDb, tables: &str) -> Connector {
        let log = dir.join(format!(
            "connector-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(BIN)
            .args(["cdc", "mysql", "--dsn", &db.dsn("shop"), "--tables", tables])
            .args(["--server-id", "4242", "--topic-prefix", PREFIX])
            .args(["--heartbeat-ms", "100", "--partitions", "2"])
            .env("SLUICE_BOOTSTRAP", &dev.addr)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn sluice cdc mysql");
        Connector { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `what` in the log; fails at once (with the log) if the connector exits.
    fn wait_log(&mut self, what: &str) {
        wait_for(what, Duration::from_secs(60), || {
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!("the connector exited ({s}):\n{}", self.log());
            }
            self.log().contains(what).then_some(())
        });
    }

    fn stop(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        wait_for("the connector to stop", Duration::from_secs(20), || {
            self.child.try_wait().unwrap()
        })
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill9();
    }
}

const PREFIX: &str = "grow";
const A: &str = "grow.shop.a";
const B: &str = "grow.shop.b";
/// Rows of `a`, captured from the start.
const A_ROWS: i64 = 2000;
/// Rows of `b`, added later: enough that its copy is still being written when the
/// first of it is in the topic (the kill lands there) and writes land during it.
const B_ROWS: i64 = 30_000;
/// Keys of rows `b` gains while the test runs start here.
const NEW_IDS: i64 = 1_000_000;
/// The log line of a copy's end (the runner's, for both kinds of copy).
const COPY_WRITTEN: &str = "initial copy written";
const ADDED_COPY: &str = "copy of tables added to --tables started";

/// Writes to `a` and `b` (rows 1..=rows of each): version bumps, some in one transaction
/// over both tables, inserts of new rows of `b` and deletes of rows of `b`.
/// Statements `batch * n .. (batch + 1) * n`.
fn two_table_batch(batch: i64, n: i64, rows: i64) -> String {
    let mut script = String::new();
    for i in batch * n..(batch + 1) * n {
        let id = 1 + (i * 7919) % rows;
        let bump = |t: &str| {
            format!("UPDATE {t} SET version = version + 1, name = '{t}{i}' WHERE id = {id}; ")
        };
        match i % 5 {
            0 => script.push_str(&bump("a")),
            1 | 2 => script.push_str(&bump("b")),
            3 => script.push_str(&format!(
                "START TRANSACTION; {}{}COMMIT; ",
                bump("a"),
                bump("b")
            )),
            _ if i % 10 == 4 => script.push_str(&format!(
                "INSERT INTO b VALUES ({}, 'new{i}', 1); ",
                NEW_IDS + i
            )),
            _ => script.push_str(&format!("DELETE FROM b WHERE id = {}; ", rows - i % rows)),
        }
    }
    script
}

/// One record of a topic: its key, its value as JSON (`None`: a tombstone, or a
/// heartbeat) and whether it is a heartbeat.
struct Rec {
    key: Vec<u8>,
    value: Option<Value>,
    heartbeat: bool,
}

/// Every record of a topic from its start to its high watermark, in offset order per
/// partition (partitions one after another).
fn read_all(dev: &Dev, topic: &str) -> Vec<Rec> {
    runtime().block_on(async {
        let client = ClientConfig::new(&dev.addr);
        let d = Admin::new(&client).describe_topic(topic).await.unwrap();
        let mut out = Vec::new();
        for p in &d.partitions {
            let end = p.high_watermark.unwrap_or(0);
            if end == 0 {
                continue;
            }
            let tp = TopicPartition::new(topic, p.partition);
            let mut consumer = Consumer::new(&client, ConsumerConfig::default());
            consumer.assign(vec![tp.clone()]);
            consumer.seek(&tp, Seek::Earliest);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut at = 0;
            while at < end {
                assert!(Instant::now() < deadline, "{tp}: not read to its end");
                for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
                    if r.offset >= end {
                        continue;
                    }
                    at = r.offset + 1;
                    let heartbeat = r.headers.iter().any(|h| h.key == "sluice.heartbeat");
                    let value = match (&r.value, heartbeat) {
                        (Some(v), false) => Some(serde_json::from_slice(v).unwrap()),
                        _ => None,
                    };
                    out.push(Rec {
                        key: r.key.map(|k| k.to_vec()).unwrap_or_default(),
                        value,
                        heartbeat,
                    });
                }
            }
        }
        out
    })
}

/// Records in a topic now (the sum of its partitions' high watermarks); 0 before the
/// connector created it.
fn records_in(dev: &Dev, topic: &str) -> u64 {
    runtime().block_on(async {
        match Admin::new(&ClientConfig::new(&dev.addr))
            .describe_topic(topic)
            .await
        {
            Ok(d) => d
                .partitions
                .iter()
                .map(|p| p.high_watermark.unwrap_or(0))
                .sum(),
            Err(_) => 0,
        }
    })
}

/// `SELECT id, name, version` as the connector writes each row's `after`.
fn select(db: &MariaDb, table: &str) -> BTreeMap<i64, Value> {
    versioned_rows(
        &db.sql("shop", &format!("SELECT id, name, version FROM {table}")),
        '\t',
    )
}

/// A TableSet over `topics` (opened once they exist) has reached the server's GTID
/// state, and each topic's rows equal the table's.
fn tables_equal_select(dev: &Dev, db: &MariaDb, c: &Connector, topics: &[&str]) {
    let rt = runtime();
    let client = ClientConfig::new(&dev.addr);
    let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let config = TableConfig {
        fetch_max_wait: Duration::from_millis(50),
        ..TableConfig::default()
    };
    rt.block_on(async {
        let set = TableSet::open(&client, &names, config).await.unwrap();
        set.ready().await.unwrap();
        let now: PosRequest = db.sql("", "SELECT @@gtid_binlog_pos").parse().unwrap();
        set.wait_for_source(&now, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
        for (topic, snap) in names.iter().zip(set.snapshot_all()) {
            let table = topic.rsplit('.').next().unwrap();
            let got: BTreeMap<i64, Value> = snap
                .rows
                .iter()
                .map(|(_, v)| {
                    let v: Value = serde_json::from_slice(v).unwrap();
                    (v["after"]["id"].as_i64().unwrap(), v["after"].clone())
                })
                .collect();
            let want = select(db, table);
            let differ: Vec<i64> = want
                .keys()
                .chain(got.keys())
                .filter(|id| got.get(id) != want.get(id))
                .copied()
                .collect();
            assert!(
                differ.is_empty(),
                "{topic}: {} keys differ from SELECT * (first: {:?}: topic {:?}, table {:?})",
                differ.len(),
                differ[0],
                got.get(&differ[0]),
                want.get(&differ[0])
            );
        }
        set.close();
    });
}

/// Checks both topics' records (see [`check`]); returns their copy-record counts.
fn check_topics(dev: &Dev, db: &MariaDb, c: &Connector) -> (usize, usize) {
    let mut copies = Vec::new();
    for (topic, table) in [(A, "a"), (B, "b")] {
        let records = read_all(dev, topic);
        let changes = records
            .iter()
            .filter(|r| !r.heartbeat)
            .map(|r| (r.key.as_slice(), r.value.as_ref()));
        let (problems, copied) = check_versions(changes, &select(db, table));
        assert!(
            problems.is_empty(),
            "{topic}: {} problems: {:?}\n{}",
            problems.len(),
            &problems[..problems.len().min(10)],
            c.log()
        );
        copies.push(copied);
    }
    (copies[0], copies[1])
}

/// Sets its flag when dropped (also while a panic unwinds).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_table_added_to_tables_is_copied_alone_while_the_others_stream_on() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    db.create_db("shop");
    let create = |t: &str, rows: i64| {
        format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, \
             version INT NOT NULL); \
             INSERT INTO {t} SELECT seq, CONCAT('{t}-', seq), 1 FROM seq_1_to_{rows}; "
        )
    };
    db.sql("shop", &create("a", A_ROWS));
    let dev = Dev::start(dir.path());
    let mut c = Connector::start(dir.path(), &dev, &db, "shop.a");
    c.wait_log(COPY_WRITTEN);
    db.sql("shop", "UPDATE a SET version = version + 1 WHERE id <= 10");
    tables_equal_select(&dev, &db, &c, &[A]);
    assert!(c.stop().success(), "{}", c.log());

    // Stopped: `a` changes, and `b` comes with rows.
    db.sql(
        "shop",
        &format!(
            "UPDATE a SET version = version + 1 WHERE id BETWEEN 5 AND 20; {}",
            create("b", B_ROWS)
        ),
    );
    // Writes to both go on while the connector starts, copies `b`, is killed in the
    // middle of that copy, starts again and copies `b` again — and a little after.
    let copied = AtomicBool::new(false);
    let batches = AtomicU64::new(0);
    let (kill_at, c) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut after = 0;
            for batch in 0.. {
                db.sql("shop", &two_table_batch(batch, 20, B_ROWS));
                batches.fetch_add(1, Ordering::Relaxed);
                if copied.load(Ordering::Relaxed) {
                    after += 1;
                    if after == 3 {
                        return;
                    }
                }
                assert!(batch < 5000, "the copy did not finish");
            }
        });
        // A failure here ends the writer too (after its few batches).
        let _ends_writer = SetOnDrop(&copied);
        let mut c = Connector::start(dir.path(), &dev, &db, "shop.a,shop.b");
        // Killed once some of b's copy, not all of it, is in the topic.
        let kill_at = wait_for(
            "b's copy to reach its topic",
            Duration::from_secs(60),
            || {
                let n = records_in(&dev, B);
                (n > 0).then_some(n)
            },
        );
        c.kill9();
        let log = c.log();
        assert!(
            !log.contains(COPY_WRITTEN),
            "precondition: the kill came after b's copy (raise B_ROWS):\n{log}"
        );
        let mut c = Connector::start(dir.path(), &dev, &db, "shop.a,shop.b");
        c.wait_log(COPY_WRITTEN);
        copied.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        (kill_at, c)
    });
    let mut c = c;
    tables_equal_select(&dev, &db, &c, &[A, B]);
    let (a_copies, b_copies) = check_topics(&dev, &db, &c);
    assert_eq!(
        a_copies, A_ROWS as usize,
        "{A} was copied again (its rows once, in the first copy only)"
    );
    assert!(
        c.log().contains(ADDED_COPY),
        "b was copied on its own:\n{}",
        c.log()
    );
    eprintln!(
        "b's copy killed at {kill_at} records, copied again: {b_copies} copy records in {B}; \
         {} batches of 20 writes; every version once, in order",
        batches.load(Ordering::Relaxed)
    );
    assert!(c.stop().success(), "{}", c.log());

    // `b` is left out of --tables for a run, changes meanwhile (rows deleted too), and
    // comes back: copied again on its own, not streamed on past what it missed.
    let mut c = Connector::start(dir.path(), &dev, &db, "shop.a");
    c.wait_log("streaming the binlog");
    db.sql(
        "shop",
        &format!(
            "UPDATE b SET version = version + 1 WHERE id BETWEEN 100 AND 150; \
             DELETE FROM b WHERE id BETWEEN 200 AND 210; \
             INSERT INTO b VALUES ({NEW_IDS}, 'late', 1); \
             UPDATE a SET version = version + 1 WHERE id BETWEEN 100 AND 110"
        ),
    );
    tables_equal_select(&dev, &db, &c, &[A]);
    assert!(c.stop().success(), "{}", c.log());
    db.sql(
        "shop",
        "UPDATE b SET version = version + 1 WHERE id BETWEEN 140 AND 160; \
         DELETE FROM b WHERE id BETWEEN 300 AND 305",
    );
    let mut c = Connector::start(dir.path(), &dev, &db, "shop.a,shop.b");
    c.wait_log(COPY_WRITTEN);
    db.sql("shop", "UPDATE b SET version = version + 1 WHERE id <= 3");
    tables_equal_select(&dev, &db, &c, &[A, B]);
    let (a_again, b_again) = check_topics(&dev, &db, &c);
    assert_eq!(a_again, A_ROWS as usize, "{A} was copied again");
    assert!(
        b_again > b_copies,
        "{B} was not copied again after it came back ({b_again} copy records)"
    );
    assert!(c.stop().success(), "{}", c.log());
    eprintln!(
        "b back in --tables: {} copy records in {B}; test took {:?}",
        b_again,
        started.elapsed()
    );
}
