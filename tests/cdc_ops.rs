//! Operating CDC connectors through the real binary, against a real Postgres 15 and
//! MariaDB and a real `sluice dev` (docs/cdc.md, Operations):
//!
//! - `sluice cdc status` before a copy, during one (the connector paused with SIGSTOP
//!   mid-copy: rows copied so far of the estimate), while streaming, after the connector
//!   stopped (the lag in bytes grows as the database moves on) and after it restarted
//!   (the lag shrinks);
//! - `sluice cdc drop` refused while a connector runs — also during its copy, when the
//!   slot is inactive and only the fence shows it — then removing the slot and the
//!   publication, and fine a second time;
//! - `/healthz` beside `/metrics`: 200 while streaming, 503 once the database is gone,
//!   200 again after it is back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::db::{MariaDb, Postgres};
use common::{free_port, http_get, json, poll_until, wait_for, Dev, BIN};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A running `sluice cdc postgres|mysql` with `/metrics` on its own port; its stderr
/// goes to a file, shown when a wait fails.
struct Connector {
    child: Child,
    log: PathBuf,
    metrics: String,
}

impl Connector {
    fn start(
        dir: &Path,
        dev: &Dev,
        kind: &str,
        dsn: &str,
        tables: &str,
        extra: &[&str],
    ) -> Connector {
        let log = dir.join(format!("connector-{}.log", unique()));
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .args(["cdc", kind, "--tables", tables, "--topic-prefix", "ops"])
            .args(["--metrics", &metrics, "--heartbeat-ms", "100"])
            .args(extra)
            .env("SLUICE_BOOTSTRAP", &dev.addr)
            // The DSN from the environment, as an operator would keep it out of `ps`.
            .env("SLUICE_CDC_DSN", dsn)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sluice cdc");
        Connector {
            child,
            log,
            metrics,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Ctrl-C, and waits for the exit.
    fn stop(&mut self) {
        self.stop_with(libc::SIGINT);
    }

    /// `sig`, and the exit status.
    fn stop_with(&mut self, sig: i32) -> std::process::ExitStatus {
        self.signal(sig);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit on {sig}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (HTTP status, JSON body) of `/healthz`, `None` while nothing answers.
    fn healthz(&self) -> Option<(u16, Value)> {
        let answer = http_get(&self.metrics, "/healthz")?;
        let status: u16 = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split("\r\n\r\n").nth(1)?;
        Some((status, serde_json::from_str(body).ok()?))
    }

    /// A counter or gauge of `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        common::metric(&http_get(&self.metrics, "/metrics")?, name)
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `sluice cdc ARGS --topic-prefix ops` against `dev`, the DSN (if any) from the
/// environment.
fn cdc(dev: &Dev, dsn: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("cdc")
        .args(args)
        .args(["--topic-prefix", "ops"])
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .env_remove("SLUICE_CDC_DSN")
        .stdin(Stdio::null());
    if let Some(dsn) = dsn {
        cmd.env("SLUICE_CDC_DSN", dsn);
    }
    cmd.output().expect("spawn sluice cdc")
}

/// `cdc status --output json`.
fn status(dev: &Dev, dsn: Option<&str>) -> Value {
    let out = cdc(dev, dsn, &["status", "--output", "json"]);
    assert!(
        out.status.success(),
        "cdc status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(String::from_utf8_lossy(&out.stdout).trim())
}

/// The status line of `table` (`schema.table`).
fn table<'a>(status: &'a Value, table: &str) -> &'a Value {
    status["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["table"] == table))
        .unwrap_or_else(|| panic!("no {table} in {status:#}"))
}

fn pg_slot_count(pg: &Postgres) -> usize {
    pg.psql(
        "app",
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_ops'",
    )
    .parse()
    .unwrap()
}

fn pg_publication_count(pg: &Postgres) -> usize {
    pg.psql(
        "app",
        "SELECT count(*) FROM pg_publication WHERE pubname = 'sluice_ops'",
    )
    .parse()
    .unwrap()
}

#[test]
fn status_shows_the_copy_streaming_and_a_lag_that_grows_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    // Large enough that the debug build's copy takes a while; ANALYZE gives the estimate.
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO users SELECT g, 'user-' || g FROM generate_series(1, 200000) g;
         CREATE TABLE orders (id bigint PRIMARY KEY, total int);
         INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g;
         ANALYZE users; ANALYZE orders;",
    );
    let dsn = pg.dsn("app");
    let dev = Dev::start(dir.path());

    // Before: no topics, no slot, nobody running.
    let before = status(&dev, Some(&dsn));
    assert_eq!(before["tables"], serde_json::json!([]), "{before:#}");
    assert_eq!(before["source"], "postgres");
    assert_eq!(before["slot"]["exists"], false, "{before:#}");
    assert_eq!(before["connector"]["running"], false, "{before:#}");

    let mut c = Connector::start(
        dir.path(),
        &dev,
        "postgres",
        &dsn,
        "public.users,public.orders",
        &["--partitions", "2"],
    );
    // Paused mid-copy: the topics hold part of the rows, the fence is held.
    poll_until(WAIT, || {
        (c.metric("sluice_cdc_snapshot_rows_total").unwrap_or(0.0) > 0.0).then_some(())
    })
    .unwrap_or_else(|| panic!("no copy started:\n{}", c.log()));
    // Stepped until some of the rows it handed to its producer reached the topic (a
    // process stopped at once may have sent none yet).
    let during = wait_for("copy records in the topic", WAIT, || {
        c.signal(libc::SIGSTOP);
        let s = status(&dev, Some(&dsn));
        if table(&s, "public.users")["copy"]["rows"].as_u64() > Some(0) {
            return Some(s);
        }
        c.signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(5));
        None
    });
    let users = table(&during, "public.users");
    assert_eq!(users["state"], "copying", "{during:#}");
    assert_eq!(users["copy"]["done"], false);
    let copied = users["copy"]["rows"].as_u64().unwrap();
    assert!(copied < 200_000, "the copy was caught finished: {during:#}");
    let expected = users["copy"]["expected_rows"].as_u64().unwrap();
    assert!((150_000..=250_000).contains(&expected), "{during:#}");
    assert_eq!(during["connector"]["running"], true, "{during:#}");
    // The slot exists but is inactive during the copy: only the fence shows a connector
    // runs, and `cdc drop` is refused by it.
    assert_eq!(during["slot"]["active"], false, "{during:#}");
    let refused = cdc(&dev, Some(&dsn), &["drop"]);
    assert!(!refused.status.success());
    let line = common::one_line_error(&refused);
    assert!(
        line.contains("is running") && line.contains("stop it first"),
        "{line}"
    );
    assert_eq!(pg_slot_count(&pg), 1);
    // The table view prints the progress too.
    let text = cdc(&dev, Some(&dsn), &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("copying") && text.contains(&format!("{copied}/~{expected} rows")),
        "{text}"
    );
    c.signal(libc::SIGCONT);

    // Streaming: both tables' copies done, the slot active, a small lag.
    let streaming = wait_for("both tables streaming", Duration::from_secs(60), || {
        let s = status(&dev, Some(&dsn));
        let ok = ["public.users", "public.orders"]
            .iter()
            .all(|t| table(&s, t)["state"] == "streaming")
            && s["slot"]["active"] == true;
        ok.then_some(s)
    });
    assert_eq!(table(&streaming, "public.users")["copy"]["done"], true);
    assert!(
        table(&streaming, "public.users")["lag_seconds"]
            .as_f64()
            .unwrap()
            < 10.0
    );
    assert_eq!(streaming["connector"]["running"], true);
    // Without a DSN: what the topics say, nothing of the database.
    let topics_only = status(&dev, None);
    assert_eq!(table(&topics_only, "public.orders")["state"], "streaming");
    assert!(topics_only["connector"].is_null() && topics_only["slot"].is_null());
    assert!(table(&topics_only, "public.orders")["position"]
        .as_str()
        .unwrap()
        .contains('/'));

    // Stopped: the database moves on, the topics do not, the lag grows.
    c.stop();
    let stopped = wait_for("the slot inactive", WAIT, || {
        let s = status(&dev, Some(&dsn));
        (s["slot"]["active"] == false && s["connector"]["running"] == false).then_some(s)
    });
    assert_eq!(
        table(&stopped, "public.orders")["state"],
        "stopped",
        "{stopped:#}"
    );
    let lag = |s: &Value| table(s, "public.orders")["lag_bytes"].as_u64().unwrap();
    let lag_stopped = lag(&stopped);
    pg.psql(
        "app",
        "UPDATE orders SET total = total + 1; UPDATE users SET name = name || '!' WHERE id <= 5000;",
    );
    let grown = status(&dev, Some(&dsn));
    assert!(
        lag(&grown) > lag_stopped + 100_000,
        "{} -> {}",
        lag_stopped,
        lag(&grown)
    );
    assert!(
        grown["slot"]["lag_bytes"].as_u64().unwrap() > 100_000,
        "{grown:#}"
    );
    assert!(
        table(&grown, "public.orders")["lag_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // Restarted: it catches up and the lag shrinks again.
    let c = Connector::start(
        dir.path(),
        &dev,
        "postgres",
        &dsn,
        "public.users,public.orders",
        &[],
    );
    let caught_up = poll_until(WAIT, || {
        let s = status(&dev, Some(&dsn));
        (lag(&s) < lag(&grown) / 10 && table(&s, "public.orders")["state"] == "streaming")
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("the lag did not shrink:\n{}", c.log()));
    assert_eq!(caught_up["slot"]["active"], true, "{caught_up:#}");
}

#[test]
fn drop_is_refused_while_a_connector_runs_then_removes_the_slot_and_publication() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let dsn = pg.dsn("app");
    let dev = Dev::start(dir.path());
    let mut c = Connector::start(dir.path(), &dev, "postgres", &dsn, "public.t", &[]);
    poll_until(WAIT, || {
        let s = status(&dev, Some(&dsn));
        (s["slot"]["active"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("not streaming:\n{}", c.log()));

    // Running: refused in one line, nothing dropped.
    let refused = cdc(&dev, Some(&dsn), &["drop"]);
    assert!(!refused.status.success());
    let line = common::one_line_error(&refused);
    assert!(
        line.contains("sluice_ops") && line.contains("stop it first"),
        "{line}"
    );
    assert_eq!((pg_slot_count(&pg), pg_publication_count(&pg)), (1, 1));

    // Stopped the way an orchestrator stops it (SIGTERM): a clean exit that confirms
    // what was acknowledged. Then the slot and the publication go (the DSN from a file).
    let exit = c.stop_with(libc::SIGTERM);
    assert!(exit.success(), "{exit}:\n{}", c.log());
    assert!(c.log().contains("stopping (SIGTERM)"), "{}", c.log());
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, format!("{dsn}\n")).unwrap();
    let dropped = cdc(
        &dev,
        None,
        &[
            "drop",
            "--dsn-file",
            dsn_file.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert!(dropped.status.success(), "{}", common::stderr(&dropped));
    let doc = json(String::from_utf8_lossy(&dropped.stdout).trim());
    assert_eq!(doc["dropped"].as_array().unwrap().len(), 2, "{doc:#}");
    assert_eq!((pg_slot_count(&pg), pg_publication_count(&pg)), (0, 0));
    let s = status(&dev, Some(&dsn));
    assert_eq!(s["slot"]["exists"], false);
    assert_eq!(s["publication"]["exists"], false);

    // Twice is fine.
    let again = cdc(&dev, Some(&dsn), &["drop"]);
    assert!(again.status.success(), "{}", common::stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to drop"));
}

#[test]
fn healthz_is_200_while_streaming_and_503_while_the_database_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let dev = Dev::start(dir.path());
    let c = Connector::start(
        dir.path(),
        &dev,
        "postgres",
        &pg.dsn("app"),
        "public.t",
        &[],
    );
    let healthy = |c: &Connector| {
        poll_until(WAIT, || c.healthz().filter(|(code, _)| *code == 200))
            .unwrap_or_else(|| panic!("/healthz not 200: {:?}\n{}", c.healthz(), c.log()))
    };
    let (_, body) = healthy(&c);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["state"], "streaming");
    // `/metrics` is served beside it (the slot's lag, published by the heartbeat task).
    poll_until(WAIT, || c.metric("sluice_cdc_lag_bytes"))
        .unwrap_or_else(|| panic!("no sluice_cdc_lag_bytes in /metrics:\n{}", c.log()));

    pg.kill9();
    let (_, body) = poll_until(WAIT, || c.healthz().filter(|(code, _)| *code == 503))
        .unwrap_or_else(|| panic!("/healthz not 503: {:?}\n{}", c.healthz(), c.log()));
    assert_eq!(body["status"], "unhealthy", "{body:#}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body:#}"
    );

    pg.restart();
    let (_, body) = healthy(&c);
    assert!(body["restarts"].as_u64().unwrap() >= 1, "{body:#}");
}

#[test]
fn mariadb_status_lag_drop_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = MariaDb::start();
    db.create_db("shop");
    db.sql(
        "shop",
        "CREATE TABLE item (id INT PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO item SELECT seq, 0 FROM seq_1_to_100",
    );
    let dsn = db.dsn("shop");
    let dev = Dev::start(dir.path());
    let mut c = Connector::start(
        dir.path(),
        &dev,
        "mysql",
        &dsn,
        "shop.item",
        &["--server-id", "4343"],
    );
    let streaming = poll_until(WAIT, || {
        let s = status(&dev, Some(&dsn));
        let t = s["tables"].as_array()?.first()?.clone();
        (t["state"] == "streaming").then_some(s)
    })
    .unwrap_or_else(|| panic!("not streaming:\n{}", c.log()));
    assert_eq!(streaming["source"], "mysql");
    assert_eq!(streaming["connector"]["running"], true, "{streaming:#}");
    assert_eq!(table(&streaming, "shop.item")["copy"]["done"], true);
    let (code, _) = poll_until(WAIT, || c.healthz().filter(|(code, _)| *code == 200))
        .unwrap_or_else(|| panic!("/healthz: {:?}", c.healthz()));
    assert_eq!(code, 200);
    // A change streams through: no lag left.
    db.sql("shop", "UPDATE item SET v = 1 WHERE id = 1");
    poll_until(WAIT, || {
        let s = status(&dev, Some(&dsn));
        (table(&s, "shop.item")["lag_bytes"] == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("lag never 0: {:#}", status(&dev, Some(&dsn))));

    let refused = cdc(&dev, Some(&dsn), &["drop"]);
    assert!(!refused.status.success());
    assert!(common::one_line_error(&refused).contains("is running"));

    // The server goes away: 503; back: 200.
    db.kill9();
    poll_until(WAIT, || c.healthz().filter(|(code, _)| *code == 503))
        .unwrap_or_else(|| panic!("/healthz not 503: {:?}\n{}", c.healthz(), c.log()));
    db.restart();
    poll_until(WAIT, || c.healthz().filter(|(code, _)| *code == 200))
        .unwrap_or_else(|| panic!("/healthz not 200 again: {:?}\n{}", c.healthz(), c.log()));

    // Stopped: the binlog moves on, the lag grows; drop has nothing to remove, twice.
    c.stop();
    db.sql("shop", "UPDATE item SET v = v + 1");
    let s = status(&dev, Some(&dsn));
    assert_eq!(table(&s, "shop.item")["state"], "stopped", "{s:#}");
    assert!(
        table(&s, "shop.item")["lag_bytes"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    for _ in 0..2 {
        let out = cdc(&dev, Some(&dsn), &["drop"]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to drop"));
    }
}
