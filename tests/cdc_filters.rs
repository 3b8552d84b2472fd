//! Choosing tables and columns (docs/cdc.md, "Choosing tables and columns"), through the
//! real `sluice` binary against a real Postgres 15 and a real MariaDB:
//!
//! - `--tables` patterns bring every table they match and `--exclude-tables` takes some
//!   out: only the chosen tables get topics, in both sources;
//! - `--exclude-columns` leaves columns out of the copy's rows and of streamed `before`
//!   and `after` images (the key keeps its columns);
//! - a table created later that matches a pattern is captured by the next run (a
//!   restart), copied on its own while the others stream on;
//! - a pattern that matches nothing stops the connector with one line and exit 1.

mod common;

use std::time::Duration;

use common::cdc::{consumed, refused, Connector};
use common::db::{MariaDb, Postgres};
use common::{wait_for, Dev};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The topics `sluice topic list` shows under `prefix.`.
fn topics(dev: &Dev, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = dev
        .ok(&["topic", "list"], "")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.starts_with(&format!("{prefix}.")))
        .map(String::from)
        .collect();
    out.sort();
    out
}

/// Every row record of `topic` (heartbeats and markers hidden by `consume`, tombstones
/// left out): (key, envelope).
fn envelopes(dev: &Dev, topic: &str) -> Vec<(Value, Value)> {
    consumed(dev, topic)
        .into_iter()
        .filter_map(|r| {
            let key: Value = serde_json::from_str(r["key"].as_str()?).ok()?;
            let value: Value = serde_json::from_str(r["value"].as_str()?).ok()?;
            Some((key, value))
        })
        .collect()
}

/// The column names of a row image (`null` → none).
fn columns(image: &Value) -> Vec<String> {
    let mut names: Vec<String> = image
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pg_patterns_choose_tables_and_excluded_columns_never_leave_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, item text, secret text);
         CREATE TABLE order_items (id bigint PRIMARY KEY, order_id bigint, secret text);
         CREATE TABLE order_audit (id bigint PRIMARY KEY, note text);
         CREATE TABLE users (id bigint PRIMARY KEY, name text, secret text);
         CREATE SCHEMA audit;
         CREATE TABLE audit.orders (id bigint PRIMARY KEY);
         INSERT INTO orders SELECT g, 'item' || g, 's' || g FROM generate_series(1, 50) g;
         INSERT INTO order_items SELECT g, g % 50 + 1, 's' || g FROM generate_series(1, 80) g;
         INSERT INTO order_audit VALUES (1, 'a');
         INSERT INTO users VALUES (1, 'u', 's');
         INSERT INTO audit.orders VALUES (1);",
    );
    let dev = Dev::start(dir.path());
    let dsn = pg.dsn("app");
    let args = [
        "cdc",
        "postgres",
        "--bootstrap",
        &dev.addr,
        "--dsn",
        &dsn,
        "--tables",
        "public.order*",
        "--exclude-tables",
        "*.*_audit",
        "--exclude-columns",
        "public.*.secret",
        "--topic-prefix",
        "cdc",
        "--heartbeat-ms",
        "100",
    ];
    let mut connector = Connector::start(dir.path(), &args);
    wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    assert_eq!(
        topics(&dev, "cdc"),
        ["cdc.public.order_items", "cdc.public.orders"],
        "only the tables matched and not excluded"
    );
    pg.psql(
        "app",
        "UPDATE orders SET secret = 'changed', item = 'new' WHERE id = 7;
         DELETE FROM order_items WHERE id = 3;",
    );
    let orders = wait_for("the update streamed", WAIT, || {
        let e = envelopes(&dev, "cdc.public.orders");
        e.iter().any(|(_, v)| v["op"] == "u").then_some(e)
    });
    assert_eq!(orders.iter().filter(|(_, v)| v["op"] == "r").count(), 50);
    for (key, v) in &orders {
        assert_eq!(columns(key), ["id"], "{key}");
        assert_eq!(columns(&v["after"]), ["id", "item"], "{v}");
        if v["op"] == "u" {
            assert_eq!(v["after"]["item"], "new", "{v}");
        }
        assert!(
            v["before"].is_null() || columns(&v["before"]) == ["id", "item"],
            "{v}"
        );
    }
    let items = wait_for("the delete streamed", WAIT, || {
        let e = envelopes(&dev, "cdc.public.order_items");
        e.iter().any(|(_, v)| v["op"] == "d").then_some(e)
    });
    for (_, v) in &items {
        if v["op"] == "d" {
            // What the replica identity gives (the key, by default), less `secret`.
            assert!(!columns(&v["before"]).contains(&"secret".into()), "{v}");
        } else {
            assert_eq!(columns(&v["after"]), ["id", "order_id"], "{v}");
        }
    }

    // A table made while the connector runs, matching the pattern: the next run takes it
    // (copied alone; the others stream on without a second copy).
    pg.psql(
        "app",
        "CREATE TABLE order_notes (id bigint PRIMARY KEY, note text, secret text);
         INSERT INTO order_notes SELECT g, 'n' || g, 's' || g FROM generate_series(1, 30) g;",
    );
    connector.kill9();
    let connector = Connector::start(dir.path(), &args);
    let notes = wait_for("the new table copied", WAIT, || {
        let e = if topics(&dev, "cdc").contains(&"cdc.public.order_notes".to_string()) {
            envelopes(&dev, "cdc.public.order_notes")
        } else {
            Vec::new()
        };
        (e.len() == 30).then_some(e)
    });
    for (_, v) in &notes {
        assert_eq!(columns(&v["after"]), ["id", "note"], "{v}");
    }
    pg.psql("app", "UPDATE orders SET item = 'again' WHERE id = 8;");
    let orders = wait_for("streaming on", WAIT, || {
        let e = envelopes(&dev, "cdc.public.orders");
        e.iter()
            .any(|(_, v)| v["after"]["item"] == "again")
            .then_some(e)
    });
    assert_eq!(
        orders.iter().filter(|(_, v)| v["op"] == "r").count(),
        50,
        "orders was not copied again"
    );
    drop(connector);

    // Runs with these extra flags (after the DSN) must be refused.
    let refused_with = |extra: &[&str]| {
        let mut args = vec!["cdc", "postgres", "--bootstrap", &dev.addr, "--dsn", &dsn];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--topic-prefix", "other"]);
        refused(&args)
    };
    let line = refused_with(&["--tables", "public.invoice*"]);
    assert!(
        line.contains("--tables public.invoice*: no table matches"),
        "{line}"
    );
    let line = refused_with(&[
        "--tables",
        "public.users",
        "--exclude-columns",
        "users.secret",
    ]);
    assert!(line.contains("give schema.table.column"), "{line}");
    assert!(
        topics(&dev, "other").is_empty(),
        "a refused run made topics"
    );
}

#[test]
fn mariadb_patterns_choose_tables_and_excluded_columns_never_leave_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    db.create_db("shop");
    db.sql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, item text, secret text);
         CREATE TABLE order_items (id bigint PRIMARY KEY, secret text);
         CREATE TABLE users (id bigint PRIMARY KEY, secret text);
         INSERT INTO orders VALUES (1, 'a', 's1'), (2, 'b', 's2');
         INSERT INTO order_items VALUES (1, 's');
         INSERT INTO users VALUES (1, 's');",
    );
    let dev = Dev::start(dir.path());
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
            "shop.order*",
            "--exclude-tables",
            "shop.order_items",
            "--exclude-columns",
            "shop.orders.secret",
            "--server-id",
            "4546",
            "--topic-prefix",
            "my",
            "--heartbeat-ms",
            "100",
        ],
    );
    wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then_some(())
    });
    assert_eq!(topics(&dev, "my"), ["my.shop.orders"]);
    db.sql(
        "shop",
        "UPDATE orders SET secret = 'x', item = 'c' WHERE id = 2;",
    );
    let orders = wait_for("the update streamed", WAIT, || {
        let e = envelopes(&dev, "my.shop.orders");
        e.iter().any(|(_, v)| v["op"] == "u").then_some(e)
    });
    assert_eq!(orders.len(), 3, "two copied rows and the update");
    for (_, v) in &orders {
        assert_eq!(columns(&v["after"]), ["id", "item"], "{v}");
        assert!(
            v["before"].is_null() || columns(&v["before"]) == ["id", "item"],
            "{v}"
        );
    }
}
