//! `sluice cdc mysql` against a private MariaDB and a real `sluice dev`, for what a
//! connector meets outside the happy path:
//!
//! - the fence (`GET_LOCK`) is held through a copy longer than the server's
//!   `wait_timeout` (its connection is pinged, not left idle to be closed), and the
//!   copy is not interrupted;
//! - a resume position in a purged binlog file ends the connector with exit 1 and one
//!   line naming the fix, instead of retrying forever (also when a table was added to
//!   `--tables`, which would otherwise be copied alone);
//! - across `RESET MASTER` (GTIDs on) every change arrives exactly once — the GTID state
//!   carried over, whether the connector was stopped or streaming (its binlog files
//!   then start again at a lower index) — or, when the server cannot place the topics'
//!   position (the binlog reset without its state, another server, a GTID domain the
//!   server lacks), the connector exits 1 naming `--snapshot initial` and writes
//!   nothing: never a silent skip;
//! - failover to a replica resumes by GTID, and a replica that lacks changes the topics
//!   hold is refused the same way.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::db::MariaDb;
use common::{runtime, wait_for, Dev, BIN};
use serde_json::Value;
use sluice_client::{Admin, ClientConfig, Consumer, ConsumerConfig, Seek};
use sluice_proto::TopicPartition;

/// A running `sluice cdc mysql`; its stderr goes to a file in the test's directory.
struct Connector {
    child: Child,
    log: std::path::PathBuf,
}

impl Connector {
    fn start(dir: &Path, dev: &Dev, db: &MariaDb, tables: &str, prefix: &str) -> Connector {
        Connector::start_with(dir, dev, &db.dsn("shop"), tables, prefix, &[])
    }

    fn start_with(
        dir: &Path,
        dev: &Dev,
        dsn: &str,
        tables: &str,
        prefix: &str,
        extra: &[&str],
    ) -> Connector {
        let log = dir.join(format!(
            "connector-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(BIN)
            .args(["cdc", "mysql", "--dsn", dsn, "--tables", tables])
            .args(["--server-id", "4242", "--topic-prefix", prefix])
            .args(["--heartbeat-ms", "100"])
            .args(extra)
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

    fn exits_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the connector still runs after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics with the log if the connector has exited.
    fn assert_running(&mut self) {
        if let Some(s) = self.child.try_wait().unwrap() {
            panic!("the connector exited ({s}):\n{}", self.log());
        }
    }

    /// The connector exits 1 by itself, its last line an error saying `why` and naming
    /// `--snapshot initial`, without a retry. Returns that line.
    fn refused(&mut self, why: &str) -> String {
        let status = self.exits_within(Duration::from_secs(30));
        let log = self.log();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(
            !log.contains("restarting in"),
            "refused, not retried:\n{log}"
        );
        let line = log.trim().lines().last().unwrap().to_string();
        assert!(
            line.starts_with("error:")
                && line.contains(why)
                && line.contains("--snapshot initial")
                && line.contains("sluice topic delete"),
            "{line}"
        );
        line
    }

    /// SIGSTOP (`false`) or SIGCONT (`true`).
    fn run(&self, on: bool) {
        let sig = if on { libc::SIGCONT } else { libc::SIGSTOP };
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn stop(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.exits_within(Duration::from_secs(20))
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server closes a connection idle this long (seconds).
const WAIT_TIMEOUT_S: u64 = 1;

/// Rows enough that the copy outlasts `WAIT_TIMEOUT_S` here.
const LONG_COPY_ROWS: u32 = 300_000;

#[test]
fn the_fence_is_held_through_a_copy_longer_than_wait_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start_with(&[&format!("--wait-timeout={WAIT_TIMEOUT_S}")]);
    db.create_db("shop");
    db.sql(
        "shop",
        &format!(
            "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL); \
             INSERT INTO t SELECT seq, CONCAT('name ', seq) FROM seq_1_to_{LONG_COPY_ROWS}"
        ),
    );
    let dev = Dev::start(dir.path());
    let mut c = Connector::start(dir.path(), &dev, &db, "shop.t", "fenced");
    wait_for("the copy to start", Duration::from_secs(60), || {
        c.log().contains("initial copy started").then_some(())
    });
    let started = Instant::now();
    // Polled through the whole copy: an idle fence connection is closed by the server
    // after wait_timeout, and the lock goes with it (a second connector could then copy
    // beside this one).
    let mut polls = 0;
    let copy = wait_for("the copy to be written", Duration::from_secs(180), || {
        let holder = db.sql("", "SELECT IS_USED_LOCK('sluice_cdc.fenced')");
        assert_ne!(
            holder,
            "NULL",
            "the fence was lost {:?} into the copy:\n{}",
            started.elapsed(),
            c.log()
        );
        polls += 1;
        c.log()
            .contains("initial copy written")
            .then(|| started.elapsed())
    });
    assert!(
        copy > Duration::from_secs(WAIT_TIMEOUT_S + 1),
        "precondition: the copy ({copy:?}) must outlast wait_timeout (raise LONG_COPY_ROWS)"
    );
    // And held while streaming, with no restart in between.
    let after = Instant::now();
    wait_for(
        "streaming past wait_timeout",
        Duration::from_secs(30),
        || {
            assert_ne!(
                db.sql("", "SELECT IS_USED_LOCK('sluice_cdc.fenced')"),
                "NULL"
            );
            (after.elapsed() > Duration::from_secs(WAIT_TIMEOUT_S + 1)).then_some(())
        },
    );
    assert!(
        !c.log().contains("connector failed"),
        "the run was not interrupted:\n{}",
        c.log()
    );
    eprintln!("copy of {LONG_COPY_ROWS} rows took {copy:?}; the fence was held at {polls} polls");
    assert!(c.stop().success(), "{}", c.log());
}

#[test]
fn a_resume_position_in_a_purged_binlog_exits_1_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    db.create_db("shop");
    db.sql(
        "shop",
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL); \
         INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    );
    let dev = Dev::start(dir.path());
    let mut c = Connector::start(dir.path(), &dev, &db, "shop.t", "purged");
    wait_for("the copy written", Duration::from_secs(60), || {
        c.log().contains("initial copy written").then_some(())
    });
    assert!(c.stop().success(), "{}", c.log());
    // While the connector is away, the file it would resume from goes.
    db.sql("shop", "INSERT INTO t VALUES (3, 'c'); FLUSH BINARY LOGS");
    db.sql("shop", "INSERT INTO t VALUES (4, 'd'); FLUSH BINARY LOGS");
    let (current, _) = db
        .sql("", "SHOW MASTER STATUS")
        .split_once('\t')
        .map(|(f, rest)| (f.to_string(), rest.to_string()))
        .unwrap();
    // MariaDB keeps a file a replica connection still reads: purge until it is gone
    // (the stopped connector's dump thread may take a moment to end).
    wait_for(
        "the old binlog files purged",
        Duration::from_secs(30),
        || {
            let out = db.sql(
                "",
                &format!("PURGE BINARY LOGS TO '{current}'; SHOW BINARY LOGS"),
            );
            (out.lines().count() == 1).then_some(())
        },
    );

    let mut c = Connector::start(dir.path(), &dev, &db, "shop.t", "purged");
    let status = c.exits_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", c.log());
    assert!(
        !c.log().contains("restarting in"),
        "refused, not retried:\n{}",
        c.log()
    );
    let log = c.log();
    let line = log.trim().lines().last().unwrap();
    assert!(
        line.starts_with("error:")
            && line.contains("no longer has")
            && line.contains("sluice topic delete"),
        "{line}"
    );

    // A table added meanwhile is copied alone only after the other table's position is
    // placed: refused the same way (not turned into a copy of every table), writing
    // nothing to either topic.
    db.sql(
        "shop",
        "CREATE TABLE u (id INT PRIMARY KEY); INSERT INTO u VALUES (1)",
    );
    let written = topic_end(&dev, "purged.shop.t");
    let mut c = Connector::start(dir.path(), &dev, &db, "shop.t,shop.u", "purged");
    c.refused("no longer has");
    assert_eq!(topic_end(&dev, "purged.shop.t"), written, "{}", c.log());
    assert_eq!(topic_end(&dev, "purged.shop.u"), 0, "{}", c.log());
}

/// Rows of the counter table; every update adds 1 to one row's `v`.
const ROWS: u32 = 6;
/// Partitions of the counter topic: a restart resumes from the oldest partition's last
/// position and must place the newest too.
const COUNTER_ARGS: [&str; 4] = [
    "--partitions",
    "2",
    "--topic-config",
    "min.cleanable.dirty.ratio=0.99",
];

fn counters(db: &MariaDb) {
    db.create_db("shop");
    db.sql(
        "shop",
        &format!(
            "CREATE TABLE c (id INT PRIMARY KEY, v INT NOT NULL); \
             INSERT INTO c SELECT seq, 0 FROM seq_1_to_{ROWS}"
        ),
    );
}

/// `n` single-row update transactions, round robin over the rows.
fn bump(db: &MariaDb, n: u32) {
    let script: String = (0..n)
        .map(|i| format!("UPDATE c SET v = v + 1 WHERE id = {}; ", i % ROWS + 1))
        .collect();
    db.sql("shop", &script);
}

fn db_versions(db: &MariaDb) -> BTreeMap<i64, i64> {
    db.sql("shop", "SELECT id, v FROM c")
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// What a topic of the counter table holds.
struct Read {
    /// Every `after.v` of each row, in offset order (a row's key keeps its partition).
    versions: BTreeMap<i64, Vec<i64>>,
    /// Each partition's last record: whether it is a heartbeat, and its `sluice.pos`.
    last: BTreeMap<u32, (bool, String)>,
}

impl Read {
    /// Every partition ends with a heartbeat at one position: the connector wrote all it
    /// read, and a restart resumes from that point.
    fn settled(&self) -> bool {
        let mut last = self.last.values();
        let first = last.next();
        first.is_some_and(|(hb, pos)| *hb && last.all(|(h, p)| *h && p == pos))
    }
}

/// The whole topic, read from the beginning to its end.
fn read_topic(dev: &Dev, topic: &str) -> Read {
    runtime().block_on(async {
        let client = ClientConfig::new(&dev.addr);
        let empty = Read {
            versions: BTreeMap::new(),
            last: BTreeMap::new(),
        };
        let Ok(d) = Admin::new(&client).describe_topic(topic).await else {
            return empty; // not created yet
        };
        let mut ends: HashMap<u32, u64> = d
            .partitions
            .iter()
            .map(|p| (p.partition, p.high_watermark.unwrap_or(0)))
            .filter(|(_, hw)| *hw > 0)
            .collect();
        let mut consumer = Consumer::new(&client, ConsumerConfig::default());
        let tps: Vec<TopicPartition> = d
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect();
        consumer.assign(tps.clone());
        for tp in &tps {
            consumer.seek(tp, Seek::Earliest);
        }
        let mut out = empty;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ends.is_empty() {
            assert!(Instant::now() < deadline, "{topic}: not read to its end");
            for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
                let Some(end) = ends.get(&r.partition).copied() else {
                    continue; // written after this read began
                };
                if r.offset + 1 >= end {
                    ends.remove(&r.partition);
                }
                let header = |k: &str| r.headers.iter().find(|h| h.key == k);
                let pos = header("sluice.pos")
                    .and_then(|h| h.value.as_ref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let heartbeat = header("sluice.heartbeat").is_some();
                out.last.insert(r.partition, (heartbeat, pos));
                let Some(value) = r.value else { continue };
                let v: Value = serde_json::from_slice(&value).unwrap();
                let after = &v["after"];
                if heartbeat || after.is_null() {
                    continue;
                }
                out.versions
                    .entry(after["id"].as_i64().unwrap())
                    .or_default()
                    .push(after["v"].as_i64().unwrap());
            }
        }
        out
    })
}

/// Records in `topic`: the sum of its partitions' high watermarks.
fn topic_end(dev: &Dev, topic: &str) -> u64 {
    runtime().block_on(async {
        let d = Admin::new(&ClientConfig::new(&dev.addr))
            .describe_topic(topic)
            .await
            .unwrap();
        d.partitions
            .iter()
            .map(|p| p.high_watermark.unwrap_or(0))
            .sum()
    })
}

/// Waits until the topic holds every row's current version (and the connector has
/// settled: [`Read::settled`]), then checks that it holds each version of each row
/// exactly once, in order (0, 1, 2, …): no change skipped or repeated. Fails at once if
/// the connector exits.
fn every_change_once(c: &mut Connector, dev: &Dev, db: &MariaDb, topic: &str) -> usize {
    let want = db_versions(db);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        c.assert_running();
        let read = read_topic(dev, topic);
        let all = want
            .iter()
            .all(|(id, v)| read.versions.get(id).and_then(|s| s.last()) == Some(v));
        if all && read.settled() {
            break read.versions;
        }
        assert!(
            Instant::now() < deadline,
            "the topic does not hold every change after 30 s: want {want:?}, versions {:?}, \
             last records {:?}\n{}",
            read.versions,
            read.last,
            c.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut records = 0;
    for (id, v) in &want {
        let all: Vec<i64> = (0..=*v).collect();
        assert_eq!(got[id], all, "versions of row {id}:\n{}", c.log());
        records += all.len();
    }
    records
}

fn binlog_file(db: &MariaDb) -> String {
    let status = db.sql("", "SHOW MASTER STATUS");
    status.split('\t').next().unwrap().to_string()
}

/// The DBA's way to reset the binlog and keep GTIDs going: the state is carried over,
/// the files start again at mysql-bin.000001.
const RESET_KEEPING_GTIDS: &str = "SET @s = @@GLOBAL.gtid_binlog_pos; RESET MASTER; \
     SET GLOBAL gtid_binlog_state = @s";

#[test]
fn reset_master_keeping_the_gtid_state_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    counters(&db);
    let dev = Dev::start(dir.path());
    let (topic, dsn) = ("kept.shop.c", db.dsn("shop"));
    let start = || Connector::start_with(dir.path(), &dev, &dsn, "shop.c", "kept", &COUNTER_ARGS);
    let mut c = start();
    every_change_once(&mut c, &dev, &db, topic); // the copy first: every version 0
                                                 // The topics' positions end up in mysql-bin.000003.
    bump(&db, 20);
    db.sql("", "FLUSH BINARY LOGS");
    bump(&db, 20);
    db.sql("", "FLUSH BINARY LOGS");
    bump(&db, 20);
    assert_eq!(binlog_file(&db), "mysql-bin.000003");
    every_change_once(&mut c, &dev, &db, topic);

    // 1. Under a streaming connector: the binlog it reads goes, its GTIDs go on in
    // mysql-bin.000001, below every file the topics' positions name. The connector is
    // paused across the two statements: looking between them, it would find a server
    // with no GTID state and exit 1 with the line of the other test (also allowed).
    c.run(false);
    db.sql("", RESET_KEEPING_GTIDS);
    c.run(true);
    assert_eq!(binlog_file(&db), "mysql-bin.000001");
    bump(&db, 30);
    every_change_once(&mut c, &dev, &db, topic);

    // 2. With the connector stopped, and its positions in a file of the very name the
    // reset binlog starts with again (by file:offset, a meaningless point in it).
    assert!(c.stop().success(), "{}", c.log());
    db.sql("", RESET_KEEPING_GTIDS);
    bump(&db, 30);
    assert_eq!(binlog_file(&db), "mysql-bin.000001");
    let mut c = start();
    every_change_once(&mut c, &dev, &db, topic);

    // 3. Under a connector that has read nothing since it started (the server accepted
    // its start, then lost the binlog it reads).
    assert!(c.stop().success(), "{}", c.log());
    let mut c = start();
    wait_for("the restart to stream", Duration::from_secs(30), || {
        c.assert_running();
        c.log().contains("streaming the binlog").then_some(())
    });
    c.run(false);
    db.sql("", RESET_KEEPING_GTIDS);
    c.run(true);
    bump(&db, 10);
    let records = every_change_once(&mut c, &dev, &db, topic);
    eprintln!("three RESET MASTERs: {records} versions of {ROWS} rows, each once, in order");
    for l in c.log().lines().filter(|l| l.contains("connector failed")) {
        eprintln!("the idle connector after the reset: {l}");
    }
    assert!(c.stop().success(), "{}", c.log());

    // 4. Changes between the stop and the reset went with the old binlog: refused.
    bump(&db, 5);
    db.sql("", RESET_KEEPING_GTIDS);
    bump(&db, 5);
    let written = topic_end(&dev, topic);
    let line = start().refused("no longer has");
    eprintln!("refused: {line}");
    assert_eq!(
        topic_end(&dev, topic),
        written,
        "a refused start writes nothing"
    );
}

#[test]
fn a_binlog_reset_without_its_gtid_state_exits_1_naming_snapshot_initial() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    counters(&db);
    let dev = Dev::start(dir.path());
    let (topic, dsn) = ("lost.shop.c", db.dsn("shop"));
    let start = |extra: &[&str]| {
        let args: Vec<&str> = COUNTER_ARGS
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect();
        Connector::start_with(dir.path(), &dev, &dsn, "shop.c", "lost", &args)
    };
    let mut c = start(&[]);
    every_change_once(&mut c, &dev, &db, topic); // the copy first: every version 0
    bump(&db, 20);
    db.sql("", "FLUSH BINARY LOGS");
    bump(&db, 20);
    db.sql("", "FLUSH BINARY LOGS");
    bump(&db, 20);
    every_change_once(&mut c, &dev, &db, topic);
    assert!(c.stop().success(), "{}", c.log());
    bump(&db, 5); // lost with the reset binlog: no restart can stream them
    let written = topic_end(&dev, topic);

    // The binlog reset, nothing since: the server has no GTID state at all.
    db.sql("", "RESET MASTER");
    let line = start(&[]).refused("cannot place");
    eprintln!("refused: {line}");
    // New changes, GTIDs from 0-1-1 again: the topics' GTIDs are not in its binlog.
    bump(&db, 5);
    start(&[]).refused("cannot place");
    // Files back at the index the topics' positions name (by file:offset, a
    // meaningless point in a file of the same name).
    db.sql("", "FLUSH BINARY LOGS");
    bump(&db, 5);
    db.sql("", "FLUSH BINARY LOGS");
    bump(&db, 5);
    assert_eq!(binlog_file(&db), "mysql-bin.000003");
    start(&[]).refused("cannot place");
    assert_eq!(
        topic_end(&dev, topic),
        written,
        "a refused start writes nothing"
    );

    // The fix the line names: new topics, copied anew.
    dev.ok(&["topic", "delete", topic], "");
    let mut c = start(&["--snapshot", "initial"]);
    let want = db_versions(&db);
    wait_for("the copy of every row", Duration::from_secs(30), || {
        c.assert_running();
        let got = read_topic(&dev, topic).versions;
        let copied: BTreeMap<i64, i64> = got
            .iter()
            .filter_map(|(id, vs)| Some((*id, *vs.last()?)))
            .collect();
        (copied == want).then_some(())
    });
    assert!(c.stop().success(), "{}", c.log());
}

#[test]
fn a_server_that_does_not_hold_the_topics_position_exits_1_naming_snapshot_initial() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    counters(&db);
    let dev = Dev::start(dir.path());
    let topic = "moved.shop.c";
    let mut c = Connector::start_with(
        dir.path(),
        &dev,
        &db.dsn("shop"),
        "shop.c",
        "moved",
        &COUNTER_ARGS,
    );
    every_change_once(&mut c, &dev, &db, topic); // the copy first: every version 0
    bump(&db, 40);
    every_change_once(&mut c, &dev, &db, topic);
    assert!(c.stop().success(), "{}", c.log());
    let written = topic_end(&dev, topic);

    // Another server with the same table and binlog file names, writing GTID domain 7:
    // domain 0, which the topics' positions are in, is not in its binlog.
    let other = MariaDb::start_with(&["--gtid-domain-id=7"]);
    counters(&other);
    bump(&other, 5);
    let start = || {
        Connector::start_with(
            dir.path(),
            &dev,
            &other.dsn("shop"),
            "shop.c",
            "moved",
            &COUNTER_ARGS,
        )
    };
    let line = start().refused("cannot place");
    assert!(line.contains("domain 0"), "{line}");
    // Now writing domain 0 too (server_id 1, as the first server's), but not the
    // GTIDs the topics hold.
    other.sql("", "SET GLOBAL gtid_domain_id = 0");
    bump(&other, 5);
    let line = start().refused("cannot place");
    eprintln!("refused: {line}");
    assert_eq!(
        topic_end(&dev, topic),
        written,
        "a refused start writes nothing"
    );
}

/// `replica` replicates `primary` by GTID from the primary's current state.
fn replicate(replica: &MariaDb, primary: &MariaDb) {
    let pos = primary.sql("", "SELECT @@GLOBAL.gtid_binlog_pos");
    replica.sql(
        "",
        &format!(
            "SET GLOBAL gtid_slave_pos = '{pos}'; \
             CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = 'root', MASTER_PASSWORD = '{}', MASTER_USE_GTID = slave_pos; \
             START SLAVE",
            primary.port(),
            MariaDb::PASSWORD
        ),
    );
}

/// Waits until `replica` has applied everything `primary` has written.
fn caught_up(replica: &MariaDb, primary: &MariaDb) {
    let want = primary.sql("", "SELECT @@GLOBAL.gtid_binlog_pos");
    wait_for("the replica to catch up", Duration::from_secs(30), || {
        (replica.sql("", "SELECT @@GLOBAL.gtid_slave_pos") == want).then_some(())
    });
}

#[test]
fn failover_to_a_replica_resumes_by_gtid_unless_it_lacks_the_topics_changes() {
    let dir = tempfile::tempdir().unwrap();
    let primary = MariaDb::start();
    // server_id 2: its own transactions are 0-2-N, after the primary's 0-1-N.
    let replica = MariaDb::start_with(&["--server-id=2", "--log-slave-updates"]);
    replicate(&replica, &primary);
    counters(&primary);
    let dev = Dev::start(dir.path());
    let topic = "fo.shop.c";
    let start = |db: &MariaDb| {
        Connector::start_with(
            dir.path(),
            &dev,
            &db.dsn("shop"),
            "shop.c",
            "fo",
            &COUNTER_ARGS,
        )
    };
    let mut c = start(&primary);
    every_change_once(&mut c, &dev, &primary, topic);
    bump(&primary, 30);
    every_change_once(&mut c, &dev, &primary, topic);

    // The replica falls behind: the topics hold changes it does not have. Failing over
    // to it would lose them, and its own next transactions would reuse their sequence
    // numbers: refused.
    caught_up(&replica, &primary);
    replica.sql("", "STOP SLAVE");
    bump(&primary, 10);
    every_change_once(&mut c, &dev, &primary, topic);
    assert!(c.stop().success(), "{}", c.log());
    let written = topic_end(&dev, topic);
    let line = start(&replica).refused("cannot place");
    eprintln!("refused: {line}");
    assert_eq!(
        topic_end(&dev, topic),
        written,
        "a refused start writes nothing"
    );

    // Caught up, then promoted: the connector resumes on it by GTID and takes its own
    // changes (another server id, same domain) in order.
    replica.sql("", "START SLAVE");
    caught_up(&replica, &primary);
    replica.sql("", "STOP SLAVE; RESET SLAVE ALL");
    bump(&replica, 30);
    let mut c = start(&replica);
    let records = every_change_once(&mut c, &dev, &replica, topic);
    eprintln!("failover: {records} versions of {ROWS} rows, each once, in order");
    assert!(c.stop().success(), "{}", c.log());
}
