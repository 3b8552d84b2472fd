//! `sluice cdc mysql` against a private MariaDB and a real `sluice dev`, for what a
//! connector meets outside the happy path:
//!
//! - the fence (`GET_LOCK`) is held through a copy longer than the server's
//!   `wait_timeout` (its connection is pinged, not left idle to be closed), and the
//!   copy is not interrupted;
//! - a resume position in a purged binlog file ends the connector with exit 1 and one
//!   line naming the fix, instead of retrying forever.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::db::MariaDb;
use common::{wait_for, Dev, BIN};

/// A running `sluice cdc mysql`; its stderr goes to a file in the test's directory.
struct Connector {
    child: Child,
    log: std::path::PathBuf,
}

impl Connector {
    fn start(dir: &Path, dev: &Dev, db: &MariaDb, tables: &str, prefix: &str) -> Connector {
        let log = dir.join(format!(
            "connector-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(BIN)
            .args(["cdc", "mysql", "--dsn", &db.dsn("shop"), "--tables", tables])
            .args(["--server-id", "4242", "--topic-prefix", prefix])
            .args(["--heartbeat-ms", "100"])
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
}
