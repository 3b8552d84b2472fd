//! The throwaway database servers of `tests/common/db.rs` themselves: each starts with
//! the settings CDC needs, round-trips a table, and keeps its data across a clean
//! restart and across kill -9 then restart, on the same port.

mod common;

use common::db::{MariaDb, Postgres};

#[test]
fn postgres_starts_logical_and_keeps_data_across_restarts() {
    let mut pg = Postgres::start();
    assert_eq!(pg.psql("postgres", "SHOW wal_level"), "logical");
    assert_eq!(pg.psql("postgres", "SHOW max_replication_slots"), "20");
    pg.create_db("shop");
    assert_eq!(
        pg.dsn("shop"),
        format!("postgres://postgres@127.0.0.1:{}/shop", pg.port())
    );
    pg.psql(
        "shop",
        "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO item VALUES (1, 'ünïcode'), (2, 'b')",
    );
    let rows = "1|ünïcode\n2|b";
    assert_eq!(pg.psql("shop", "SELECT * FROM item ORDER BY id"), rows);

    let port = pg.port();
    pg.restart();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("shop", "SELECT * FROM item ORDER BY id"), rows);

    pg.psql("shop", "INSERT INTO item VALUES (3, 'c')");
    pg.kill9();
    pg.restart();
    // Every acknowledged commit survives kill -9 (WAL is written at commit, not synced).
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM item"), "3");
    assert_eq!(pg.psql("postgres", "SHOW wal_level"), "logical");
}

#[test]
fn mariadb_starts_with_row_binlog_and_keeps_data_across_restarts() {
    let mut db = MariaDb::start();
    assert_eq!(
        db.sql(
            "",
            "SELECT @@binlog_format, @@log_bin, @@binlog_row_image, @@server_id"
        ),
        "ROW\t1\tFULL\t1"
    );
    db.create_db("shop");
    assert_eq!(
        db.dsn("shop"),
        format!("mysql://root:sluice@127.0.0.1:{}/shop", db.port())
    );
    db.sql(
        "shop",
        "CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL); \
         INSERT INTO item VALUES (1, 'a'), (2, 'b')",
    );
    let rows = "1\ta\n2\tb";
    assert_eq!(db.sql("shop", "SELECT * FROM item ORDER BY id"), rows);

    let port = db.port();
    db.restart();
    assert_eq!(db.port(), port);
    assert_eq!(db.sql("shop", "SELECT * FROM item ORDER BY id"), rows);

    db.sql("shop", "INSERT INTO item VALUES (3, 'c')");
    db.kill9();
    db.restart();
    // Every acknowledged commit survives kill -9 (the redo log and binlog are written
    // at commit, only their fsync is skipped).
    assert_eq!(db.sql("shop", "SELECT count(*) FROM item"), "3");
    assert_eq!(db.sql("", "SELECT @@binlog_format"), "ROW");
}

#[test]
fn mariadb_start_with_overrides_the_binlog_format() {
    let mut db = MariaDb::start_with(&["--binlog-format=MIXED"]);
    assert_eq!(db.sql("", "SELECT @@binlog_format"), "MIXED");
    db.restart();
    assert_eq!(db.sql("", "SELECT @@binlog_format"), "MIXED");
}
