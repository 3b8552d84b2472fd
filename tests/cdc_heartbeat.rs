//! Heartbeats only to idle partitions (docs/cdc.md, "Heartbeats"), through the real
//! `sluice cdc postgres` against a real Postgres 15 and `sluice dev`: ten captured
//! tables of four partitions each, a steady stream of small transactions on one of
//! them; the other nine tables' 36 partitions get at most about one heartbeat per
//! partition per `--heartbeat-ms`, and a Table of an idle table still answers
//! `wait_for_source(pg_current_wal_lsn())` within about that interval, under the load
//! and after it. Prints the heartbeat records per second it measured.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::db::Postgres;
use common::{runtime, wait_for, Dev, BIN};
use sluice_client::{Admin, ClientConfig, PosRequest, TableConfig, TableSet};

const TABLES: usize = 10;
const PARTITIONS: u64 = 4;
const HEARTBEAT_MS: u64 = 200;
const UPDATES: u64 = 1500;

struct Connector {
    child: Child,
    log: std::path::PathBuf,
}

impl Connector {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the high watermarks of a topic's partitions.
fn records_in(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) -> u64 {
    rt.block_on(async {
        Admin::new(&ClientConfig::new(bootstrap))
            .describe_topic(topic)
            .await
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.high_watermark.unwrap_or(0))
            .sum()
    })
}

/// `script` through psql on stdin (for a thread of its own).
fn psql_script(port: u16, script: &str) {
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn busy_table_leaves_idle_partitions_about_one_heartbeat_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    let mut ddl = String::new();
    for t in 0..TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE t{t} (id bigint PRIMARY KEY, v int NOT NULL);
             INSERT INTO t{t} SELECT g, 0 FROM generate_series(1, 20) g;"
        ));
    }
    pg.psql("app", &ddl);
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let tables: Vec<String> = (0..TABLES).map(|t| format!("public.t{t}")).collect();
    let topics: Vec<String> = (0..TABLES).map(|t| format!("hb.public.t{t}")).collect();
    let log = dir.path().join("connector.log");
    let child = Command::new(BIN)
        .args([
            "cdc",
            "postgres",
            "--bootstrap",
            &dev.addr,
            "--dsn",
            &pg.dsn("app"),
        ])
        .args(["--tables", &tables.join(","), "--topic-prefix", "hb"])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let connector = Connector { child, log };
    wait_for("the copy", Duration::from_secs(60), || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    let lsn = || -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    let idle_table = rt
        .block_on(TableSet::open(
            &ClientConfig::new(&dev.addr),
            &topics[5..6],
            TableConfig::default(),
        ))
        .unwrap();
    rt.block_on(idle_table.ready()).unwrap();
    rt.block_on(idle_table.wait_for_source(&lsn(), Duration::from_secs(30)))
        .unwrap();

    // A steady stream of one-row transactions on t0, while an idle table's Table is
    // asked for the latest commit's position now and then.
    let before: Vec<u64> = topics
        .iter()
        .map(|t| records_in(&rt, &dev.addr, t))
        .collect();
    let mut script = String::new();
    for i in 0..UPDATES {
        script.push_str(&format!(
            "UPDATE t0 SET v = v + 1 WHERE id = {};\nSELECT pg_sleep(0.002);\n",
            i % 20 + 1
        ));
    }
    let port = pg.port();
    let started = Instant::now();
    let load = std::thread::spawn(move || psql_script(port, &script));
    let mut waits = Vec::new();
    while !load.is_finished() {
        let at = lsn();
        let asked = Instant::now();
        rt.block_on(idle_table.wait_for_source(&at, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("wait_for_source under load: {e}\n{}", connector.log()));
        waits.push(asked.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    load.join().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let after: Vec<u64> = topics
        .iter()
        .map(|t| records_in(&rt, &dev.addr, t))
        .collect();
    let written: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Every update is one record in t0's topic; everything else is a heartbeat.
    let busy_heartbeats = written[0].saturating_sub(UPDATES);
    let idle_heartbeats: u64 = written[1..].iter().sum();
    let idle_partitions = (TABLES as u64 - 1) * PARTITIONS;
    let intervals = secs * 1000.0 / HEARTBEAT_MS as f64;
    let per_partition_interval = idle_heartbeats as f64 / idle_partitions as f64 / intervals;
    eprintln!(
        "heartbeats: {UPDATES} transactions on t0 in {secs:.1} s ({:.0}/s); heartbeat records \
         {:.0}/s in all ({:.0}/s on the 9 idle tables, {:.0}/s on t0); {per_partition_interval:.2} \
         per idle partition per {HEARTBEAT_MS} ms; wait_for_source on an idle table: max {:?} \
         over {} asks",
        UPDATES as f64 / secs,
        (busy_heartbeats + idle_heartbeats) as f64 / secs,
        idle_heartbeats as f64 / secs,
        busy_heartbeats as f64 / secs,
        waits.iter().max().unwrap(),
        waits.len(),
    );
    assert!(
        per_partition_interval <= 1.5,
        "{per_partition_interval:.2} heartbeats per idle partition per interval (want about 1)"
    );
    let max_wait = *waits.iter().max().unwrap();
    assert!(
        max_wait < Duration::from_millis(5 * HEARTBEAT_MS),
        "wait_for_source on an idle table took {max_wait:?} under load"
    );

    // Idle source: a commit to t0, then the idle table reaches it within about an interval.
    pg.psql("app", "UPDATE t0 SET v = v + 1 WHERE id = 1");
    let at = lsn();
    let asked = Instant::now();
    rt.block_on(idle_table.wait_for_source(&at, Duration::from_secs(10)))
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(5 * HEARTBEAT_MS),
        "wait_for_source on an idle table took {:?} with the source idle",
        asked.elapsed()
    );
}
