//! `TRUNCATE` carried end to end (docs/cdc.md, "TRUNCATE"), through the real `sluice`
//! binary against a real Postgres 15 and a real MariaDB, read by real Tables:
//!
//! - a Table that was running and a Table opened afterwards both show a truncated table
//!   empty — for a multi-table `TRUNCATE a, b`, for a partitioned table, and with rows
//!   inserted after the `TRUNCATE` in the same transaction present (and rows inserted
//!   before it gone);
//! - after the cleaner compacted the topics and dropped the tombstones
//!   (`delete.retention.ms` 500 ms), no record of a truncated row is left in them and a
//!   Table bootstrapping then sees the same rows as `SELECT *`;
//! - MariaDB's `TRUNCATE TABLE` (a statement in the binlog, not row events) likewise.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::cdc::Connector;
use common::db::{MariaDb, Postgres};
use common::{runtime, wait_for, Dev};
use serde_json::Value;
use sluice_client::{
    ClientConfig, Consumer, ConsumerConfig, OffsetReset, PosRequest, Seek, TableConfig, TableSet,
};
use sluice_proto::TopicPartition;

const WAIT: Duration = Duration::from_secs(60);

/// Topic configs that let the cleaner compact the connector's topics within seconds and
/// drop tombstones half a second after.
const COMPACT_FAST: [&str; 8] = [
    "--topic-config",
    "segment.bytes=2048",
    "--topic-config",
    "min.cleanable.dirty.ratio=0.01",
    "--topic-config",
    "delete.retention.ms=500",
    "--partitions",
    "3",
];

fn open_set(rt: &tokio::runtime::Runtime, bootstrap: &str, topics: &[String]) -> TableSet {
    common::cdc::open_set(rt, bootstrap, topics, TableConfig::default())
}

/// The ids of every row of every table of the set, one set per topic, in a single
/// consistent snapshot.
fn ids_in(set: &TableSet) -> Vec<BTreeSet<i64>> {
    set.snapshot_all()
        .into_iter()
        .map(|s| {
            s.rows
                .iter()
                .map(|(k, _)| {
                    let key: Value = serde_json::from_slice(k).expect("a JSON key");
                    key["id"].as_i64().expect("an id")
                })
                .collect()
        })
        .collect()
}

fn pg_ids(pg: &Postgres, table: &str) -> BTreeSet<i64> {
    pg.psql("app", &format!("SELECT id FROM {table}"))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn my_ids(db: &MariaDb, table: &str) -> BTreeSet<i64> {
    db.sql("shop", &format!("SELECT id FROM {table}"))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Every record of a topic from its log start: (key, whether a row), heartbeats left
/// out.
fn read_all(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) -> Vec<(Vec<u8>, bool)> {
    rt.block_on(async {
        let client = ClientConfig::new(bootstrap);
        let d = sluice_client::Admin::new(&client)
            .describe_topic(topic)
            .await
            .unwrap();
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
        let tps: Vec<TopicPartition> = ends
            .keys()
            .map(|&p| TopicPartition::new(topic, p))
            .collect();
        consumer.assign(tps.clone());
        for tp in &tps {
            consumer.seek(tp, Seek::Earliest);
        }
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let done = tps
                .iter()
                .all(|tp| consumer.position(tp).unwrap_or(0) >= ends[&tp.partition]);
            if done {
                return out;
            }
            for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
                if r.offset >= ends[&r.partition]
                    || r.headers.iter().any(|h| h.key == "sluice.heartbeat")
                {
                    continue;
                }
                out.push((r.key.unwrap_or_default().to_vec(), r.value.is_some()));
            }
            assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
        }
    })
}

/// `{"id":N}` keys of a topic's records, heartbeats and truncate markers left out.
fn ids_recorded(records: &[(Vec<u8>, bool)]) -> BTreeSet<i64> {
    records
        .iter()
        .filter_map(|(k, _)| serde_json::from_slice::<Value>(k).ok())
        .filter_map(|k| k["id"].as_i64())
        .collect()
}

/// Waits until compaction left no record of `gone` (rows and their tombstones) in
/// `topic`, and checks the truncate marker is still there.
fn wait_compacted_away(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
    gone: &BTreeSet<i64>,
) {
    wait_for(
        &format!("compaction of {topic} to drop every truncated row and tombstone"),
        WAIT,
        || {
            let records = read_all(rt, bootstrap, topic);
            let left: BTreeSet<i64> = ids_recorded(&records).intersection(gone).copied().collect();
            let markers = records
                .iter()
                .filter(|(k, _)| k == b"__sluice_truncate")
                .count();
            (left.is_empty() && markers > 0).then_some(())
        },
    );
}

/// Postgres: a running Table and one opened after each step see what `SELECT` sees;
/// multi-table, in-transaction and partitioned `TRUNCATE`; then compaction.
#[test]
fn pg_truncate_empties_every_table_and_stays_empty_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL);
         CREATE TABLE kept (id bigint PRIMARY KEY);
         CREATE TABLE events (id bigint NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (1000);
         CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (1000) TO (100000);
         INSERT INTO users SELECT g, 'user-' || g FROM generate_series(1, 300) g;
         INSERT INTO orders SELECT g, g % 300 FROM generate_series(1, 200) g;
         INSERT INTO kept SELECT g FROM generate_series(1, 50) g;
         INSERT INTO events SELECT g * 7 FROM generate_series(1, 400) g;",
    );
    let dev = Dev::start_with(dir.path(), &["--log-cleaner-backoff-ms", "100"]);
    let rt = runtime();
    let dsn = pg.dsn("app");
    let mut args = vec![
        "cdc",
        "postgres",
        "--bootstrap",
        &dev.addr,
        "--dsn",
        &dsn,
        "--tables",
        "public.users,public.orders,public.kept,public.events",
        "--topic-prefix",
        "cdc",
    ];
    args.extend(COMPACT_FAST);
    let connector = Connector::start(dir.path(), &args);
    let tables = ["users", "orders", "kept", "events"];
    let topics: Vec<String> = tables.iter().map(|t| format!("cdc.public.{t}")).collect();
    let lsn = || -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    let running = wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then(|| open_set(&rt, &dev.addr, &topics))
    });
    let check = |what: &str, set: &TableSet| {
        rt.block_on(set.wait_for_source(&lsn(), WAIT))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", connector.log()));
        let want: Vec<BTreeSet<i64>> = tables.iter().map(|t| pg_ids(&pg, t)).collect();
        assert_eq!(ids_in(set), want, "{what}: the Table differs from SELECT");
    };
    check("after the copy", &running);
    let old_users = pg_ids(&pg, "users");
    let old_orders = pg_ids(&pg, "orders");
    let old_events = pg_ids(&pg, "events");

    // Two tables in one statement (CASCADE and RESTART IDENTITY are options only).
    pg.psql("app", "TRUNCATE users, orders RESTART IDENTITY CASCADE");
    check("TRUNCATE users, orders: running Table", &running);
    assert!(ids_in(&running)[0].is_empty() && ids_in(&running)[1].is_empty());
    assert_eq!(ids_in(&running)[2].len(), 50, "kept was not truncated");

    // Inside a transaction: rows before it go, rows after it stay.
    pg.psql(
        "app",
        "BEGIN; INSERT INTO users VALUES (1000, 'before'), (1001, 'before');
         UPDATE kept SET id = id WHERE id = 1;
         TRUNCATE users; INSERT INTO users VALUES (1001, 'after'), (7, 'after'); COMMIT;",
    );
    check("TRUNCATE inside a transaction: running Table", &running);
    assert_eq!(ids_in(&running)[0], BTreeSet::from([7, 1001]));

    // A partitioned table, published through its root; then a row after it.
    pg.psql(
        "app",
        "TRUNCATE events; INSERT INTO events VALUES (5), (5000);",
    );
    check("TRUNCATE of a partitioned table: running Table", &running);
    assert_eq!(ids_in(&running)[3], BTreeSet::from([5, 5000]));

    let late = open_set(&rt, &dev.addr, &topics);
    check("a Table opened after the TRUNCATEs", &late);
    drop(late);

    // Compaction: the truncated rows and then their tombstones go; the markers stay.
    for (topic, gone) in [
        (&topics[0], &old_users),
        (&topics[1], &old_orders),
        (&topics[3], &old_events),
    ] {
        let gone: BTreeSet<i64> = gone.difference(&BTreeSet::from([7, 5])).copied().collect();
        wait_compacted_away(&rt, &dev.addr, topic, &gone);
    }
    let after = open_set(&rt, &dev.addr, &topics);
    check("a Table opened after compaction", &after);
    check("the running Table after compaction", &running);
    assert!(
        connector
            .log()
            .contains("TRUNCATE: the topic's keys get tombstones"),
        "{}",
        connector.log()
    );
}

/// MariaDB logs `TRUNCATE TABLE` as a statement: carried the same way.
#[test]
fn mariadb_truncate_empties_every_table_and_stays_empty_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    db.create_db("shop");
    db.sql(
        "shop",
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL);
         CREATE TABLE kept (id BIGINT PRIMARY KEY);
         INSERT INTO users SELECT seq, CONCAT('user-', seq) FROM seq_1_to_300;
         INSERT INTO kept SELECT seq FROM seq_1_to_40;",
    );
    let dev = Dev::start_with(dir.path(), &["--log-cleaner-backoff-ms", "100"]);
    let rt = runtime();
    let dsn = db.dsn("shop");
    let mut args = vec![
        "cdc",
        "mysql",
        "--bootstrap",
        &dev.addr,
        "--dsn",
        &dsn,
        "--tables",
        "shop.users,shop.kept",
        "--server-id",
        "4343",
        "--topic-prefix",
        "my",
        "--heartbeat-ms",
        "100",
    ];
    args.extend(COMPACT_FAST);
    let connector = Connector::start(dir.path(), &args);
    let topics = vec!["my.shop.users".to_string(), "my.shop.kept".to_string()];
    let gtid = || -> PosRequest {
        db.sql("", "SELECT @@GLOBAL.gtid_binlog_pos")
            .parse()
            .unwrap()
    };
    let running = wait_for("the copy", WAIT, || {
        connector
            .log()
            .contains("initial copy written")
            .then(|| open_set(&rt, &dev.addr, &topics))
    });
    let check = |what: &str, set: &TableSet| {
        rt.block_on(set.wait_for_source(&gtid(), WAIT))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", connector.log()));
        let want = vec![my_ids(&db, "users"), my_ids(&db, "kept")];
        assert_eq!(ids_in(set), want, "{what}: the Table differs from SELECT");
    };
    check("after the copy", &running);
    let old_users = my_ids(&db, "users");
    db.sql(
        "shop",
        "DELETE FROM users WHERE id = 3; TRUNCATE TABLE users;",
    );
    check("TRUNCATE TABLE: running Table", &running);
    assert!(ids_in(&running)[0].is_empty());
    db.sql(
        "shop",
        "INSERT INTO users VALUES (9, 'after'), (500, 'after');",
    );
    check("rows after the TRUNCATE", &running);
    assert_eq!(ids_in(&running)[0], BTreeSet::from([9, 500]));
    let late = open_set(&rt, &dev.addr, &topics);
    check("a Table opened after the TRUNCATE", &late);
    drop(late);
    let gone: BTreeSet<i64> = old_users
        .difference(&BTreeSet::from([9]))
        .copied()
        .collect();
    wait_compacted_away(&rt, &dev.addr, &topics[0], &gone);
    let after = open_set(&rt, &dev.addr, &topics);
    check("a Table opened after compaction", &after);
}
