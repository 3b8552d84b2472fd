//! `sluice cdc postgres` on the inputs and states the basic tests do not script, against
//! a real Postgres 15 and a real `sluice dev`:
//!
//! - a partitioned table (`PARTITION BY LIST`, two partitions) is copied and streamed
//!   under its own name, an UPDATE moving a row between partitions included; a
//!   publication without `publish_via_partition_root` is refused with the `ALTER
//!   PUBLICATION` to run; a table joining the publication mid-run is not skipped in
//!   silence;
//! - a second connector started during the first's initial copy is refused at once (the
//!   advisory-lock fence), the first finishes, and its topic equals `SELECT *`; a fence
//!   session terminated mid-run ends the run, which restarts on a new one;
//! - states a restart cannot repair end the connector with exit 1 and one line naming
//!   the fix: an invalid slot name, a slot invalidated by `max_slot_wal_keep_size`, a
//!   `REPLICA IDENTITY USING INDEX` without the key; and the server's own message is
//!   shown (not tokio-postgres' bare "db error");
//! - a copy of every table after the slot was lost, killed -9 midway and started again,
//!   leaves no row deleted meanwhile in any topic (the copy-pending markers).

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::db::Postgres;
use common::versions::versioned_rows;
use common::{runtime, wait_for, Dev, BIN};
use serde_json::Value;
use sluice_client::{ClientConfig, PosRequest, TableConfig, TableSet};

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
            .args(["cdc", "postgres", "--bootstrap", bootstrap])
            .args(["--dsn", dsn, "--tables", tables])
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

    /// The exit status within `limit`, failing the test (with the log) otherwise.
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

    /// Ctrl-C, and the exit status.
    fn stop(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.exits_within(Duration::from_secs(20))
    }

    /// kill -9, and waits for the exit.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last line of the log: the `error:` line of a connector that gave up.
    fn last_line(&self) -> String {
        self.log().trim().lines().last().unwrap_or("").to_string()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_set(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) -> TableSet {
    let set = rt
        .block_on(TableSet::open(
            &ClientConfig::new(bootstrap),
            &[topic.to_string()],
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

/// The Table's rows once it has applied everything committed so far: the envelope's
/// `after` by the key's `id`.
fn table_rows(
    rt: &tokio::runtime::Runtime,
    set: &TableSet,
    pg: &Postgres,
    c: &Connector,
) -> BTreeMap<i64, Value> {
    rt.block_on(set.wait_for_source(&current_lsn(pg), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    set.snapshot_all()
        .remove(0)
        .rows
        .iter()
        .map(|(k, v)| {
            let key: Value = serde_json::from_slice(k).unwrap();
            let value: Value = serde_json::from_slice(v).unwrap();
            (key["id"].as_i64().unwrap(), value["after"].clone())
        })
        .collect()
}

/// `SELECT id, region, payload FROM events` as the connector writes it.
fn select_events(pg: &Postgres) -> BTreeMap<i64, Value> {
    pg.psql("app", "SELECT id, region, payload FROM events ORDER BY id")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let id: i64 = f[0].parse().unwrap();
            let row = serde_json::json!({"id": id, "region": f[1], "payload": f[2]});
            (id, row)
        })
        .collect()
}

#[test]
fn a_partitioned_table_is_copied_and_streamed_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE events (id bigint, region text, payload text NOT NULL, \
           PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
         CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
         INSERT INTO events SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 'p' || i
           FROM generate_series(1, 100) i;
         ANALYZE events_eu, events_us; -- as autovacuum does: never the partitioned table
         CREATE PUBLICATION handmade FOR TABLE events;",
    );
    let dev = Dev::start(dir.path());

    // A publication made by hand that publishes the rows under the partitions' names:
    // the connector would never see a change of `events`.
    let hand = [
        "--topic-prefix",
        "hand",
        "--publication",
        "handmade",
        "--slot",
        "hand",
    ];
    let start = |args: &[&str]| {
        Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.events", args)
    };
    let mut refused = start(&hand);
    let status = refused.exits_within(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", refused.log());
    let line = refused.last_line();
    assert!(
        line.starts_with("error:")
            && line
                .contains("ALTER PUBLICATION \"handmade\" SET (publish_via_partition_root = true)"),
        "{line}"
    );
    // The fix the line names works.
    pg.psql(
        "app",
        "ALTER PUBLICATION handmade SET (publish_via_partition_root = true)",
    );
    let mut fixed = start(&hand);
    wait_for(
        "the fixed connector's copy",
        Duration::from_secs(60),
        || fixed.log().contains("initial copy written").then_some(()),
    );
    assert!(fixed.stop().success(), "{}", fixed.log());

    // The connector's own publication.
    let c = start(&["--topic-prefix", "cdc"]);
    wait_for("the copy written", Duration::from_secs(60), || {
        c.log().contains("initial copy written").then_some(())
    });
    assert!(
        c.log().contains("expected_rows=100"),
        "the copy's progress counts the partitions' rows:\n{}",
        c.log()
    );
    let rt = runtime();
    let set = open_set(&rt, &dev.addr, "cdc.public.events");
    assert_eq!(
        table_rows(&rt, &set, &pg, &c),
        select_events(&pg),
        "after the copy"
    );
    assert_eq!(set.snapshot_all()[0].rows.len(), 100);

    // Streaming: inserts into both partitions, an update in place, an update moving a
    // row from one partition to the other (a delete and an insert in Postgres, a key
    // change here: the old key's record is tombstoned), a delete.
    pg.psql(
        "app",
        "BEGIN;
         INSERT INTO events VALUES (101, 'eu', 'new eu'), (102, 'us', 'new us');
         UPDATE events SET payload = 'changed' WHERE id = 3;
         UPDATE events SET region = 'us', payload = 'moved' WHERE id = 4;
         DELETE FROM events WHERE id = 5;
         COMMIT;",
    );
    assert_eq!(
        pg.psql("app", "SELECT tableoid::regclass FROM events WHERE id = 4"),
        "events_us",
        "the row moved partitions"
    );
    let rows = table_rows(&rt, &set, &pg, &c);
    assert_eq!(rows, select_events(&pg), "after streaming");
    assert_eq!(rows[&4]["region"], "us");
    assert_eq!(rows[&3]["payload"], "changed");
    assert!(!rows.contains_key(&5));
    assert_eq!(
        set.snapshot_all()[0].rows.len(),
        101,
        "no ghost of the moved row's old key"
    );

    // A table added to the publication while the connector runs: its change is not
    // skipped by name in silence; the run restarts, reads the publication again, and
    // from then on skips that table knowingly. The change to `events` in the same
    // transaction arrives.
    pg.psql(
        "app",
        "CREATE TABLE other (id int PRIMARY KEY);
         ALTER PUBLICATION sluice_cdc ADD TABLE other;
         BEGIN;
         INSERT INTO other VALUES (1);
         INSERT INTO events VALUES (103, 'eu', 'beside other');
         COMMIT;",
    );
    let rows = table_rows(&rt, &set, &pg, &c);
    assert_eq!(
        rows,
        select_events(&pg),
        "after a table joined the publication"
    );
    let log = c.log();
    assert!(
        log.contains("public.other")
            && log.contains("was not published when the connector started"),
        "{log}"
    );
    assert!(
        log.contains("the publication also publishes tables that are not captured"),
        "{log}"
    );
    set.close();
    let mut c = c;
    assert!(c.stop().success(), "{}", c.log());
}

/// `SELECT id, name FROM users` as the connector writes it.
fn select_users(pg: &Postgres) -> BTreeMap<i64, Value> {
    pg.psql("app", "SELECT id, name FROM users ORDER BY id")
        .lines()
        .map(|l| {
            let (id, name) = l.split_once('|').unwrap();
            let id: i64 = id.parse().unwrap();
            (id, serde_json::json!({"id": id, "name": name}))
        })
        .collect()
}

/// Rows enough that the initial copy lasts several seconds here.
const LONG_COPY_ROWS: i64 = 100_000;

#[test]
fn a_second_connector_during_the_initial_copy_is_refused_and_the_first_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
             INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, {LONG_COPY_ROWS}) i;"
        ),
    );
    let dev = Dev::start(dir.path());
    let args = ["--topic-prefix", "cdc"];
    let first = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.users", &args);
    wait_for(
        "the first connector's copy to start",
        Duration::from_secs(60),
        || first.log().contains("initial copy started").then_some(()),
    );
    // Between CREATE_REPLICATION_SLOT and START_REPLICATION the slot is inactive: only
    // the fence stops this one from dropping it and copying beside the first.
    let started = Instant::now();
    let mut second = Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), "public.users", &args);
    let status = second.exits_within(Duration::from_secs(30));
    let refused_after = started.elapsed();
    let copy_written = first.log().contains("initial copy written");
    assert_eq!(status.code(), Some(1), "{}", second.log());
    let line = second.last_line();
    assert!(
        line.starts_with("error:") && line.contains("another connector") && line.contains("in use"),
        "{line}"
    );
    assert!(
        !second.log().contains("restarting in"),
        "refused, not retried:\n{}",
        second.log()
    );
    assert!(
        !copy_written,
        "precondition: the second connector must meet the first's copy (raise \
         LONG_COPY_ROWS); first:\n{}",
        first.log()
    );
    wait_for(
        "the first connector's copy",
        Duration::from_secs(180),
        || first.log().contains("initial copy written").then_some(()),
    );
    assert!(
        !first.log().contains("connector failed"),
        "the first connector ran undisturbed:\n{}",
        first.log()
    );
    pg.psql("app", "UPDATE users SET name = 'after' WHERE id = 7");
    let rt = runtime();
    let set = open_set(&rt, &dev.addr, "cdc.public.users");
    let rows = table_rows(&rt, &set, &pg, &first);
    assert_eq!(rows.len() as i64, LONG_COPY_ROWS);
    assert!(rows == select_users(&pg), "the topic equals SELECT *");
    eprintln!(
        "second connector refused {refused_after:?} after its start, during a copy of \
         {LONG_COPY_ROWS} rows"
    );

    // The fence session is watched for the whole run: when it goes, the run ends and
    // restarts, taking the lock again on a new session, and streaming goes on.
    let fence_pid = || {
        pg.psql(
            "app",
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'sluice cdc fence %'",
        )
    };
    let old = fence_pid();
    assert!(
        !old.is_empty() && !old.contains('\n'),
        "one fence session: {old:?}"
    );
    pg.psql("app", &format!("SELECT pg_terminate_backend({old})"));
    wait_for("the run to notice", Duration::from_secs(30), || {
        first
            .log()
            .contains("the fence session of slot sluice_cdc was lost")
            .then_some(())
    });
    wait_for("a new fence session", Duration::from_secs(30), || {
        let now = fence_pid();
        (!now.is_empty() && now != old).then_some(())
    });
    pg.psql(
        "app",
        "UPDATE users SET name = 'after the fence' WHERE id = 8",
    );
    let rows = table_rows(&rt, &set, &pg, &first);
    assert!(rows == select_users(&pg), "streaming goes on");
    set.close();
    let mut first = first;
    assert!(first.stop().success(), "{}", first.log());
}

/// The connector's `error:` line once it exits 1 (within `limit`: a state retried forever
/// fails the test).
fn exits_1(mut c: Connector, limit: Duration) -> String {
    let status = c.exits_within(limit);
    assert_eq!(status.code(), Some(1), "{}", c.log());
    assert!(
        !c.log().contains("restarting in"),
        "refused, not retried:\n{}",
        c.log()
    );
    let line = c.last_line();
    assert!(line.starts_with("error:"), "{line}");
    line
}

#[test]
fn states_a_restart_cannot_repair_exit_1_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 10) i;
         CREATE TABLE mails (id bigint PRIMARY KEY, mail text NOT NULL);
         CREATE UNIQUE INDEX mails_mail ON mails (mail);
         ALTER TABLE mails REPLICA IDENTITY USING INDEX mails_mail;",
    );
    let dev = Dev::start(dir.path());
    let start = |dsn: &str, tables: &str, prefix: &str| {
        Connector::start(
            dir.path(),
            &dev.addr,
            dsn,
            tables,
            &["--topic-prefix", prefix, "--heartbeat-ms", "50"],
        )
    };
    let limit = Duration::from_secs(30);

    // The server's own words, not tokio-postgres' "db error".
    let line = exits_1(start(&pg.dsn("nope"), "public.users", "cdc"), limit);
    assert!(line.contains("database \"nope\" does not exist"), "{line}");

    // The default slot name follows the prefix; Postgres refuses upper case.
    let line = exits_1(start(&pg.dsn("app"), "public.users", "CDC"), limit);
    assert!(
        line.contains("\"sluice_CDC\" is invalid") && line.contains("--slot"),
        "{line}"
    );

    // Deletes would carry `mail`, not the key `id`.
    let line = exits_1(start(&pg.dsn("app"), "public.mails", "cdc"), limit);
    assert!(
        line.contains("REPLICA IDENTITY USING INDEX \"mails_mail\"")
            && line.contains("REPLICA IDENTITY DEFAULT"),
        "{line}"
    );

    // A delete written while the replica identity lacked the key (and then set back):
    // replaying it can never give a key. Its own prefix and slot, so the rest of the
    // test does not meet it.
    pg.psql(
        "app",
        "CREATE TABLE notes (id bigint PRIMARY KEY, title text NOT NULL);
         INSERT INTO notes VALUES (1, 'a'), (2, 'b');",
    );
    let mut c = start(&pg.dsn("app"), "public.notes", "notes");
    wait_for("the copy written", limit, || {
        c.log().contains("initial copy written").then_some(())
    });
    assert!(c.stop().success(), "{}", c.log());
    pg.psql(
        "app",
        "CREATE UNIQUE INDEX notes_title ON notes (title);
         ALTER TABLE notes REPLICA IDENTITY USING INDEX notes_title;
         DELETE FROM notes WHERE id = 2;
         ALTER TABLE notes REPLICA IDENTITY DEFAULT;",
    );
    let line = exits_1(start(&pg.dsn("app"), "public.notes", "notes"), limit);
    assert!(
        line.contains("carries no primary-key column id")
            && line.contains("pg_drop_replication_slot"),
        "{line}"
    );

    // A slot invalidated while the connector was away (max_slot_wal_keep_size).
    let mut c = start(&pg.dsn("app"), "public.users", "cdc");
    wait_for("the copy written", limit, || {
        c.log().contains("initial copy written").then_some(())
    });
    assert!(c.stop().success(), "{}", c.log());
    pg.psql("app", "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
    pg.psql("app", "SELECT pg_reload_conf()");
    wait_for(
        "the slot to be invalidated",
        Duration::from_secs(60),
        || {
            pg.psql(
                "app",
                "INSERT INTO users VALUES (1000, 'x') ON CONFLICT (id) DO UPDATE SET name = 'y'",
            );
            pg.psql("app", "SELECT pg_switch_wal()");
            pg.psql("app", "CHECKPOINT");
            let status = pg.psql(
                "app",
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'sluice_cdc'",
            );
            (status == "lost").then_some(())
        },
    );
    let line = exits_1(start(&pg.dsn("app"), "public.users", "cdc"), limit);
    assert!(
        line.contains("invalidated") && line.contains("pg_drop_replication_slot('sluice_cdc')"),
        "{line}"
    );
    // The fix the line names works: the tables are copied again.
    pg.psql("app", "SELECT pg_drop_replication_slot('sluice_cdc')");
    pg.psql("app", "ALTER SYSTEM RESET max_slot_wal_keep_size");
    pg.psql("app", "SELECT pg_reload_conf()");
    let c = start(&pg.dsn("app"), "public.users", "cdc");
    let rt = runtime();
    let set = open_set(&rt, &dev.addr, "cdc.public.users");
    let rows = table_rows(&rt, &set, &pg, &c);
    assert_eq!(rows, select_users(&pg));
    set.close();
}

/// Rows of `big`, copied before `small` (tables are copied in name order): enough that a
/// copy of both is still in `big` when the first of it is in `big`'s topic.
const RECOPY_BIG_ROWS: i64 = 30_000;

/// Records in a topic now: the sum of its partitions' high watermarks.
fn records_in(bootstrap: &str, topic: &str) -> u64 {
    runtime().block_on(async {
        sluice_client::Admin::new(&ClientConfig::new(bootstrap))
            .describe_topic(topic)
            .await
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.high_watermark.unwrap_or(0))
            .sum()
    })
}

/// `SELECT id, name, version FROM table` as the connector writes each row's `after`.
fn select_versioned(pg: &Postgres, table: &str) -> BTreeMap<i64, Value> {
    versioned_rows(
        &pg.psql("app", &format!("SELECT id, name, version FROM {table}")),
        '|',
    )
}

/// `sluice table dump TOPIC`: each live row's `after` by its `id`.
fn dump(dev: &Dev, topic: &str) -> BTreeMap<i64, Value> {
    dev.ok(&["table", "dump", topic, "--output", "json"], "")
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            let value: Value = serde_json::from_str(row["value"].as_str().unwrap()).unwrap();
            (
                value["after"]["id"].as_i64().unwrap(),
                value["after"].clone(),
            )
        })
        .collect()
}

/// The copy-pending markers through real processes: the slot is lost while rows are
/// deleted, the restart copies both tables again and is killed -9 while `big` is being
/// copied and before anything of `small`'s copy is written, more rows are deleted, and
/// a restart copies again. `small`'s topic then ends with its old rows and the markers
/// alone: without them it would look finished, the restart would stream it on from the
/// cut run's slot, and the rows deleted while no slot existed would stay in it for good.
/// Every topic ends equal to `SELECT *`, in a Table and in `sluice table dump`.
#[test]
fn a_recopy_killed_midway_leaves_no_deleted_row_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    for (t, rows) in [("big", RECOPY_BIG_ROWS), ("small", 500)] {
        pg.psql(
            "app",
            &format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, name text NOT NULL, version int NOT NULL);
                 INSERT INTO {t} SELECT g, '{t}-' || g, 1 FROM generate_series(1, {rows}) g;"
            ),
        );
    }
    let dev = Dev::start(dir.path());
    let (tables, args) = (
        "public.big,public.small",
        ["--topic-prefix", "cdc", "--partitions", "2"],
    );
    let topics = ["cdc.public.big", "cdc.public.small"];
    let start = || Connector::start(dir.path(), &dev.addr, &pg.dsn("app"), tables, &args);
    let written = |c: &Connector| {
        let log = c.log();
        assert!(!log.contains("error:"), "the connector gave up:\n{log}");
        log.contains("initial copy written").then_some(())
    };
    let mut c = start();
    wait_for("the copy written", Duration::from_secs(60), || written(&c));
    pg.psql("app", "UPDATE small SET version = 2 WHERE id <= 50");
    let rt = runtime();
    for topic in topics {
        let set = open_set(&rt, &dev.addr, topic);
        rt.block_on(set.wait_for_source(&current_lsn(&pg), Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    }
    assert!(c.stop().success(), "{}", c.log());

    // The slot is lost while rows are deleted (and others change).
    pg.psql("app", "SELECT pg_drop_replication_slot('sluice_cdc')");
    pg.psql(
        "app",
        "DELETE FROM small WHERE id BETWEEN 1 AND 20 OR id IN (100, 499);
         DELETE FROM big WHERE id IN (2, 7000, 29999);
         UPDATE small SET version = 3 WHERE id BETWEEN 40 AND 60;
         INSERT INTO small VALUES (9000, 'new', 1);",
    );
    let before: Vec<u64> = topics.iter().map(|t| records_in(&dev.addr, t)).collect();
    let mut c = start();
    // Killed once some of big's new copy, not all of it, is in its topic: beyond the
    // copy-pending markers (one per partition) written first.
    let at = wait_for(
        "big's new copy in its topic",
        Duration::from_secs(60),
        || {
            let n = records_in(&dev.addr, topics[0]);
            (n > before[0] + 2).then_some(n - before[0])
        },
    );
    c.kill();
    let log = c.log();
    assert!(
        log.contains("the tables are copied again") && !log.contains("initial copy written"),
        "precondition: the kill came during the re-copy (raise RECOPY_BIG_ROWS):\n{log}"
    );
    // Its markers (one per partition) at most: small's copy, one chunk of its ~475 rows,
    // would be far more.
    let small_after = records_in(&dev.addr, topics[1]);
    assert!(
        small_after <= before[1] + 2,
        "precondition: small's topic holds nothing of the new copy ({} records more; raise \
         RECOPY_BIG_ROWS)\n{log}",
        small_after - before[1]
    );
    // Deleted while the connector is away: rows of the cut copy and rows it never read.
    pg.psql(
        "app",
        "DELETE FROM big WHERE id BETWEEN 3 AND 6 OR id = 20000;
         DELETE FROM small WHERE id BETWEEN 21 AND 25;
         UPDATE big SET version = 2 WHERE id BETWEEN 10 AND 12;",
    );
    let c = start();
    wait_for("the copy written again", Duration::from_secs(60), || {
        written(&c)
    });
    pg.psql(
        "app",
        "DELETE FROM small WHERE id = 26; UPDATE big SET version = 3 WHERE id = 10",
    );
    for (topic, table) in topics.iter().zip(["big", "small"]) {
        let set = open_set(&rt, &dev.addr, topic);
        let got = table_rows(&rt, &set, &pg, &c);
        let want = select_versioned(&pg, table);
        let differ: Vec<i64> = want
            .keys()
            .chain(got.keys())
            .filter(|id| got.get(id) != want.get(id))
            .copied()
            .collect();
        assert!(
            differ.is_empty(),
            "{topic}: {} keys differ from SELECT * (first {:?}: topic {:?}, table {:?})\n{}",
            differ.len(),
            differ[0],
            got.get(&differ[0]),
            want.get(&differ[0]),
            c.log()
        );
        assert_eq!(dump(&dev, topic), want, "{topic}: sluice table dump");
    }
    eprintln!("re-copy killed after {at} records of big's topic; no deleted row survived");
}

/// Rows of `wide` in the split-copy test: about 2,300 heap blocks, over the connector's
/// 1,024-block threshold for splitting a table across connections.
const SPLIT_ROWS: i64 = 150_000;

/// Every row's `after` by its `id`, once the Table applied everything committed so far.
fn after_by_id(
    rt: &tokio::runtime::Runtime,
    set: &TableSet,
    pg: &Postgres,
    c: &Connector,
) -> BTreeMap<i64, Value> {
    rt.block_on(set.wait_for_source(&current_lsn(pg), Duration::from_secs(120)))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    set.snapshot_all()
        .remove(0)
        .rows
        .iter()
        .map(|(_, v)| {
            let value: Value = serde_json::from_slice(v).unwrap();
            (
                value["after"]["id"].as_i64().unwrap(),
                value["after"].clone(),
            )
        })
        .collect()
}

/// The initial copy of a table large enough to be split across connections
/// (`--copy-workers 4`, ctid ranges under the slot's exported snapshot), with rows
/// deleted before the copy (holes in the blocks), values that need COPY's escapes
/// (tabs, newlines, backslashes, `\N` as text, NULLs, UTF-8, bytea, timestamptz,
/// numeric, jsonb, floats) and changes committed while the copy runs: the topic equals
/// `SELECT *` — every row once, none missed or doubled at the consistent point — and
/// equals, value for value, the topic of a connector that copied the same table over one
/// connection (`--copy-workers 1`, pg_walstream's reader).
#[test]
fn a_table_copied_over_several_connections_equals_select_star() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE wide (id bigint PRIMARY KEY, t text, n numeric, f float8,
                 ts timestamptz, b bytea, j jsonb, nul text);
             INSERT INTO wide SELECT i,
                 CASE i % 5 WHEN 0 THEN E'tab\\there' WHEN 1 THEN E'new\\nline\\r'
                     WHEN 2 THEN E'back\\\\slash \\\\N' WHEN 3 THEN 'ünï ✓ ' || md5(i::text)
                     ELSE 'plain ' || lpad(i::text, 40, '0') END,
                 i * 1.25, i * 0.5, timestamptz '2024-05-01 12:00:00.25+02' + i * interval '1 s',
                 decode(md5(i::text), 'hex'), jsonb_build_object('k', i, 's', E'q\"\\t'),
                 CASE WHEN i % 3 = 0 THEN NULL ELSE '\\N' END
             FROM generate_series(1, {SPLIT_ROWS}) i;
             DELETE FROM wide WHERE id % 7 = 0;"
        ),
    );
    let blocks: i64 = pg
        .psql("app", "SELECT pg_relation_size('wide') / 8192")
        .parse()
        .unwrap();
    assert!(
        blocks > 1024 * 2,
        "precondition: a table worth splitting ({blocks} blocks)"
    );
    let dev = Dev::start(dir.path());
    let split = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.wide",
        &["--topic-prefix", "par", "--copy-workers", "4"],
    );
    wait_for("the split copy to start", Duration::from_secs(60), || {
        split.log().contains("initial copy started").then_some(())
    });
    // After the slot's consistent point: streamed, not copied.
    pg.psql(
        "app",
        "UPDATE wide SET t = 'changed ' || id, nul = NULL WHERE id % 1000 = 1;
         DELETE FROM wide WHERE id % 1000 = 2;
         INSERT INTO wide (id, t) SELECT g + 1000000, E'new\\tone' FROM generate_series(1, 500) g;",
    );
    let one = Connector::start(
        dir.path(),
        &dev.addr,
        &pg.dsn("app"),
        "public.wide",
        &["--topic-prefix", "one", "--copy-workers", "1"],
    );
    for c in [&split, &one] {
        wait_for("the copy written", Duration::from_secs(300), || {
            c.log().contains("initial copy written").then_some(())
        });
    }
    let log = split.log();
    assert!(
        log.contains("copying a large table over several connections") && log.contains("workers=4"),
        "the table was split:\n{log}"
    );
    assert!(
        !one.log().contains("over several connections"),
        "--copy-workers 1 does not split:\n{}",
        one.log()
    );
    // A change after both copies, streamed by both.
    pg.psql("app", "UPDATE wide SET t = E'late\\\\ \\t' WHERE id = 3");
    let rt = runtime();
    let set = open_set(&rt, &dev.addr, "par.public.wide");
    let rows = after_by_id(&rt, &set, &pg, &split);
    let want: BTreeMap<i64, String> = pg
        .psql("app", "SELECT id, replace(replace(coalesce(t, '<null>'), E'\\n', '<nl>'), E'\\r', '<cr>') FROM wide")
        .lines()
        .map(|l| {
            let (id, t) = l.split_once('|').unwrap();
            (id.parse().unwrap(), t.to_string())
        })
        .collect();
    let got: BTreeMap<i64, String> = rows
        .iter()
        .map(|(id, after)| {
            let t = after["t"].as_str().unwrap_or("<null>");
            (*id, t.replace('\n', "<nl>").replace('\r', "<cr>"))
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one row per row of the table");
    assert!(
        got == want,
        "the split copy plus the stream equals SELECT *"
    );
    let other = open_set(&rt, &dev.addr, "one.public.wide");
    let single = after_by_id(&rt, &other, &pg, &one);
    assert_eq!(single.len(), rows.len());
    for (id, after) in &rows {
        assert_eq!(
            Some(after),
            single.get(id),
            "row {id}: the same value over either path"
        );
    }
    assert_eq!(rows[&5]["t"], "tab\there");
    assert_eq!(rows[&12]["t"], "back\\slash \\N");
    assert_eq!(rows[&4]["nul"], "\\N");
    assert!(rows[&6]["nul"].is_null());
    set.close();
    other.close();
    let (mut split, mut one) = (split, one);
    assert!(split.stop().success(), "{}", split.log());
    assert!(one.stop().success(), "{}", one.log());
}
