//! `--value-format row` end to end (docs/cdc.md, "Value format"), through the real
//! `sluice` binary against a real Postgres 15 and a real MariaDB:
//!
//! - after the copy and after inserts, updates, deletes, a transaction over two tables
//!   and a `TRUNCATE`, a running Table and one opened afterwards hold exactly
//!   `SELECT *` (each row the JSON object of its columns), read as stored and with
//!   `row_images` — and so does a Table with `row_images` over the same tables
//!   captured in the envelope format (Postgres), and `table dump --row-images` of them;
//! - `sluice consume` shows the bare rows: every value is a row object (no `before`,
//!   `op`, `source`), a delete is a tombstone with no record before it, every record
//!   carries `sluice.format: row` and the truncate marker its own small value;
//! - a restart with `--value-format envelope` over the row topics is refused with one
//!   line naming the flag, and writes nothing.
//!
//! `bytes_per_row_in_a_table_for_both_formats` (ignored; run by hand) measures what
//! docs/performance.md reports.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cdc::{consumed, open_set, refused, Connector};
use common::db::{MariaDb, Postgres};
use common::{runtime, wait_for, Dev};
use serde_json::Value;
use sluice_client::{PosRequest, TableConfig, TableSet};

const WAIT: Duration = Duration::from_secs(60);

/// Every table of the set as id → row (the value as JSON), from one consistent
/// snapshot.
fn rows_in(set: &TableSet) -> Vec<BTreeMap<i64, Value>> {
    set.snapshot_all()
        .into_iter()
        .map(|s| {
            s.rows
                .iter()
                .map(|(k, v)| {
                    let key: Value = serde_json::from_slice(k).expect("a JSON key");
                    let row: Value = serde_json::from_slice(v).expect("a JSON value");
                    (key["id"].as_i64().expect("an id"), row)
                })
                .collect()
        })
        .collect()
}

/// Rows of `SELECT` as id → JSON object, one JSON document a line of `text`.
fn rows_of(text: &str) -> BTreeMap<i64, Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON row");
            (v["id"].as_i64().expect("an id"), v)
        })
        .collect()
}

fn header<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"]
        .as_array()?
        .iter()
        .find(|h| h["key"] == name)
        .and_then(|h| h["value"].as_str())
}

/// What `sluice consume` shows of a row-format topic: bare rows whose columns are
/// `columns`, tombstones for deletes (`deleted`: ids deleted once each, with no record
/// before the tombstone in their transaction), the truncate marker's own value; every
/// record marked `sluice.format: row`.
fn check_consumed(dev: &Dev, topic: &str, columns: &[&str], deleted: &[i64], truncated: bool) {
    let records = consumed(dev, topic);
    assert!(!records.is_empty(), "{topic}: nothing consumed");
    let mut tombstones: BTreeMap<i64, usize> = BTreeMap::new();
    let mut markers = 0;
    for r in &records {
        assert_eq!(header(r, "sluice.format"), Some("row"), "{topic}: {r}");
        let key = r["key"].as_str().expect("a key");
        if key == "__sluice_truncate" {
            markers += 1;
            let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            assert_eq!(v["truncate"], true, "{r}");
            continue;
        }
        let id = serde_json::from_str::<Value>(key).unwrap()["id"]
            .as_i64()
            .expect("an id key");
        match r["value"].as_str() {
            None => *tombstones.entry(id).or_default() += 1,
            Some(v) => {
                let row: Value = serde_json::from_str(v).expect("a JSON row");
                let mut names: Vec<&str> = row
                    .as_object()
                    .expect("a row object")
                    .keys()
                    .map(|k| k.as_str())
                    .collect();
                names.sort_unstable();
                let mut want = columns.to_vec();
                want.sort_unstable();
                assert_eq!(names, want, "{topic}: not a bare row: {v}");
            }
        }
    }
    for id in deleted {
        assert_eq!(tombstones.get(id), Some(&1), "{topic}: tombstones of {id}");
    }
    assert_eq!(markers > 0, truncated, "{topic}: truncate markers");
}

/// Postgres: rows through Tables and `consume`; a restart in the other format refused.
#[test]
fn pg_row_format_tables_and_consume_hold_the_bare_rows() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text, score int NOT NULL);
         CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, note text);
         INSERT INTO users SELECT g, 'user-' || g, g % 7 FROM generate_series(1, 200) g;
         UPDATE users SET name = NULL WHERE id = 5;
         INSERT INTO orders SELECT g, g % 200 + 1, 'n' || g FROM generate_series(1, 100) g;",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = pg.dsn("app");
    let args = |format: &'static str| -> Vec<String> {
        [
            "cdc",
            "postgres",
            "--bootstrap",
            &dev.addr,
            "--dsn",
            &dsn,
            "--tables",
            "public.users,public.orders",
            "--topic-prefix",
            "cdc",
            "--partitions",
            "2",
            "--value-format",
            format,
        ]
        .map(String::from)
        .to_vec()
    };
    let row_args = args("row");
    let row_args: Vec<&str> = row_args.iter().map(String::as_str).collect();
    let connector = Connector::start(dir.path(), &row_args);
    // The same tables in the envelope format, read as row images: what an application
    // sees does not depend on the format.
    let mut env_args = args("envelope");
    let prefix = env_args.iter().position(|a| a == "--topic-prefix").unwrap() + 1;
    env_args[prefix] = "env".into();
    let env_args: Vec<&str> = env_args.iter().map(String::as_str).collect();
    let envelopes = Connector::start_logged(dir.path(), "envelope.log", &env_args);
    let env_topics = vec![
        "env.public.users".to_string(),
        "env.public.orders".to_string(),
    ];
    let topics = vec![
        "cdc.public.users".to_string(),
        "cdc.public.orders".to_string(),
    ];
    let lsn = || -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    let open = |row_images: bool| {
        let config = TableConfig {
            row_images,
            ..TableConfig::default()
        };
        open_set(&rt, &dev.addr, &topics, config)
    };
    let running = wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then(|| open(false))
    });
    let images = open(true);
    let env_images = wait_for("the envelope copy", WAIT, || {
        envelopes.log().contains("initial copy written").then(|| {
            let config = TableConfig {
                row_images: true,
                ..TableConfig::default()
            };
            open_set(&rt, &dev.addr, &env_topics, config)
        })
    });
    let check = |what: &str, set: &TableSet| {
        rt.block_on(set.wait_for_source(&lsn(), WAIT))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", connector.log()));
        let want = vec![
            rows_of(&pg.psql("app", "SELECT row_to_json(t) FROM users t")),
            rows_of(&pg.psql("app", "SELECT row_to_json(t) FROM orders t")),
        ];
        assert_eq!(
            rows_in(set),
            want,
            "{what}: the Table differs from SELECT *"
        );
    };
    check("after the copy", &running);
    check("after the copy, row images", &images);
    check("after the copy, envelopes as row images", &env_images);

    pg.psql(
        "app",
        "INSERT INTO users VALUES (1000, 'new', 1), (1001, NULL, 2);
         UPDATE users SET score = score + 10, name = 'renamed' WHERE id <= 20;
         DELETE FROM users WHERE id IN (30, 31, 1001);
         BEGIN;
           UPDATE users SET score = -1 WHERE id = 1;
           INSERT INTO orders VALUES (500, 1, 'in a transaction');
           DELETE FROM orders WHERE id = 7;
           UPDATE orders SET note = NULL WHERE id = 8;
         COMMIT;
         UPDATE users SET id = 2000 WHERE id = 40;",
    );
    check(
        "after inserts, updates, deletes and a transaction",
        &running,
    );
    check("the same, row images", &images);
    check("the same, envelopes as row images", &env_images);
    pg.psql(
        "app",
        "BEGIN; INSERT INTO orders VALUES (600, 2, 'gone'); TRUNCATE orders;
         INSERT INTO orders VALUES (700, 3, 'after'); COMMIT;",
    );
    check("after TRUNCATE", &running);
    check("after TRUNCATE, row images", &images);
    check("after TRUNCATE, envelopes as row images", &env_images);
    assert_eq!(
        rows_in(&running)[1].keys().copied().collect::<Vec<_>>(),
        [700]
    );
    let late = open(false);
    check("a Table opened afterwards", &late);

    check_consumed(
        &dev,
        "cdc.public.users",
        &["id", "name", "score"],
        &[30, 31, 1001, 40],
        false,
    );
    check_consumed(
        &dev,
        "cdc.public.orders",
        &["id", "user_id", "note"],
        &[7],
        true,
    );

    // `table dump --row-images` of the envelope topic prints the rows; without the
    // flag, the envelopes.
    let dumped = |args: &[&str]| -> BTreeMap<i64, Value> {
        dev.ok(args, "")
            .lines()
            .map(|l| {
                let r: Value = serde_json::from_str(l).unwrap();
                let key: Value = serde_json::from_str(r["key"].as_str().unwrap()).unwrap();
                let value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
                (key["id"].as_i64().unwrap(), value)
            })
            .collect()
    };
    let dump = ["table", "dump", "env.public.users", "--output", "json"];
    let users = rows_of(&pg.psql("app", "SELECT row_to_json(t) FROM users t"));
    assert_eq!(dumped(&[&dump[..], &["--row-images"]].concat()), users);
    let envelopes = dumped(&dump);
    assert_eq!(envelopes[&1]["after"], users[&1], "{}", envelopes[&1]);

    // The other format over these topics: refused, one line naming the way out.
    drop(connector);
    let other = args("envelope");
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let line = refused(&other);
    assert!(
        line.contains("holds --value-format row records")
            && line.contains("restart it with --value-format row"),
        "{line}"
    );
}

/// MariaDB: the same through the binlog.
#[test]
fn mariadb_row_format_tables_and_consume_hold_the_bare_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    db.create_db("shop");
    db.sql(
        "shop",
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64), score INT NOT NULL);
         CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, note VARCHAR(64));
         INSERT INTO users SELECT seq, CONCAT('user-', seq), seq % 7 FROM seq_1_to_200;
         INSERT INTO orders SELECT seq, seq % 200 + 1, CONCAT('n', seq) FROM seq_1_to_100;",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = db.dsn("shop");
    let args = |format: &'static str| -> Vec<String> {
        [
            "cdc",
            "mysql",
            "--bootstrap",
            &dev.addr,
            "--dsn",
            &dsn,
            "--tables",
            "shop.users,shop.orders",
            "--server-id",
            "4545",
            "--topic-prefix",
            "my",
            "--partitions",
            "2",
            "--heartbeat-ms",
            "100",
            "--value-format",
            format,
        ]
        .map(String::from)
        .to_vec()
    };
    let row_args = args("row");
    let row_args: Vec<&str> = row_args.iter().map(String::as_str).collect();
    let connector = Connector::start(dir.path(), &row_args);
    let topics = vec!["my.shop.users".to_string(), "my.shop.orders".to_string()];
    let gtid = || -> PosRequest {
        db.sql("", "SELECT @@GLOBAL.gtid_binlog_pos")
            .parse()
            .unwrap()
    };
    let open = |row_images: bool| {
        let config = TableConfig {
            row_images,
            ..TableConfig::default()
        };
        open_set(&rt, &dev.addr, &topics, config)
    };
    let running = wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then(|| open(false))
    });
    let images = open(true);
    let check = |what: &str, set: &TableSet| {
        rt.block_on(set.wait_for_source(&gtid(), WAIT))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", connector.log()));
        let want = vec![
            rows_of(&db.sql(
                "shop",
                "SELECT JSON_OBJECT('id', id, 'name', name, 'score', score) FROM users",
            )),
            rows_of(&db.sql(
                "shop",
                "SELECT JSON_OBJECT('id', id, 'user_id', user_id, 'note', note) FROM orders",
            )),
        ];
        assert_eq!(
            rows_in(set),
            want,
            "{what}: the Table differs from SELECT *"
        );
    };
    check("after the copy", &running);
    check("after the copy, row images", &images);
    db.sql(
        "shop",
        "INSERT INTO users VALUES (1000, 'new', 1), (1001, NULL, 2);
         UPDATE users SET score = score + 10, name = 'renamed' WHERE id <= 20;
         DELETE FROM users WHERE id IN (30, 31, 1001);
         START TRANSACTION;
           UPDATE users SET score = -1 WHERE id = 1;
           INSERT INTO orders VALUES (500, 1, 'in a transaction');
           DELETE FROM orders WHERE id = 7;
           UPDATE orders SET note = NULL WHERE id = 8;
         COMMIT;
         UPDATE users SET id = 2000 WHERE id = 40;",
    );
    check(
        "after inserts, updates, deletes and a transaction",
        &running,
    );
    check("the same, row images", &images);
    db.sql(
        "shop",
        "TRUNCATE TABLE orders; INSERT INTO orders VALUES (700, 3, 'after');",
    );
    check("after TRUNCATE", &running);
    check("after TRUNCATE, row images", &images);
    assert_eq!(
        rows_in(&running)[1].keys().copied().collect::<Vec<_>>(),
        [700]
    );
    let late = open(false);
    check("a Table opened afterwards", &late);

    check_consumed(
        &dev,
        "my.shop.users",
        &["id", "name", "score"],
        &[30, 31, 1001, 40],
        false,
    );
    check_consumed(
        &dev,
        "my.shop.orders",
        &["id", "user_id", "note"],
        &[7],
        true,
    );

    drop(connector);
    let env_args = args("envelope");
    let env_args: Vec<&str> = env_args.iter().map(String::as_str).collect();
    let line = refused(&env_args);
    assert!(
        line.contains("holds --value-format row records")
            && line.contains("restart it with --value-format row"),
        "{line}"
    );
}

/// Bytes per row of 100,000 rows of about 100 B, in each format: the topic's log
/// bytes on disk (one replica) and what a Table holds (`stats()`), as stored and as
/// row images. Run by hand: `cargo nextest run --run-ignored only -E
/// 'test(bytes_per_row)'`; docs/performance.md has the numbers.
#[test]
#[ignore]
fn bytes_per_row_in_a_table_for_both_formats() {
    const ROWS: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    // ~100 B as a row object: {"id":12345,"name":"user-12345","email":"...","score":N,"city":"..."}
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                                 score int NOT NULL, city text NOT NULL);
             INSERT INTO users SELECT g, 'user-' || g, 'user' || g || '@example.com',
                                      g % 1000, 'city-' || (g % 97) FROM generate_series(1, {ROWS}) g;"
        ),
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let dsn = pg.dsn("app");
    let mut connectors = Vec::new();
    for format in ["envelope", "row"] {
        let args = [
            "cdc",
            "postgres",
            "--bootstrap",
            &dev.addr,
            "--dsn",
            &dsn,
            "--tables",
            "public.users",
            "--topic-prefix",
            format,
            "--replication-factor",
            "1",
            "--value-format",
            format,
        ];
        connectors.push(Connector::start_logged(
            dir.path(),
            &format!("{format}.log"),
            &args,
        ));
    }
    for c in &connectors {
        wait_for("the copy", Duration::from_secs(300), || {
            c.log().contains("initial copy written").then_some(())
        });
    }
    let raw_row: usize = pg
        .psql(
            "app",
            "SELECT sum(length(row_to_json(t)::text)) FROM users t",
        )
        .parse()
        .unwrap();
    println!(
        "rows: {ROWS}, row as compact JSON (row_to_json): {:.1} B",
        raw_row as f64 / ROWS as f64
    );
    for (format, row_images) in [("envelope", false), ("envelope", true), ("row", false)] {
        let topic = format!("{format}.public.users");
        let log_bytes: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .flat_map(|broker| std::fs::read_dir(broker.path()).into_iter().flatten())
            .flatten()
            .filter(|d| {
                d.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{topic}-"))
            })
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
            .map(|f| f.metadata().unwrap().len())
            .sum();
        let started = Instant::now();
        let set = open_set(
            &rt,
            &dev.addr,
            std::slice::from_ref(&topic),
            TableConfig {
                row_images,
                ..TableConfig::default()
            },
        );
        let s = set.table(&topic).unwrap().stats();
        assert_eq!(s.rows, ROWS as usize);
        println!(
            "{format:8} row_images={row_images:5}: topic {:.1} B/row on disk; Table: value {:.1} B, \
             key {:.1} B, memory {:.1} B/row ({} bytes), bootstrap {} ms",
            log_bytes as f64 / ROWS as f64,
            s.value_bytes as f64 / ROWS as f64,
            s.key_bytes as f64 / ROWS as f64,
            s.bytes_per_row,
            s.memory_bytes,
            started.elapsed().as_millis()
        );
    }
}
