//! The connector embedded in a Rust program (`sluice_cdc::connector::Connector`, no
//! `sluice cdc` process), against a real Postgres 15 and a `sluice dev`: it copies and
//! streams into a Table; when Postgres is killed (kill -9) its restart policy keeps
//! retrying with backoff (the failures counted in its stats), and once Postgres is back
//! it streams on with nothing lost or doubled; `Stop::cancel` ends `run` cleanly with the
//! position it confirmed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::db::Postgres;
use common::{runtime, wait_for, Dev};
use sluice_cdc::connector::{Connector, RestartPolicy, Source, Stop};
use sluice_cdc::envelope::{SourceInfo, ValueFormat};
use sluice_cdc::postgres::{PgSourceConfig, SnapshotMode};
use sluice_cdc::sink::SinkConfig;
use sluice_cdc::TableId;
use sluice_client::{ClientConfig, PosRequest, TableConfig};

const WAIT: Duration = Duration::from_secs(60);

fn ids(set: &sluice_client::TableSet) -> BTreeSet<i64> {
    let snap = set.snapshot_all().into_iter().next().expect("one table");
    snap.rows
        .iter()
        .map(|(k, _)| {
            let key: serde_json::Value = serde_json::from_slice(k).expect("a JSON key");
            key["id"].as_i64().expect("an id")
        })
        .collect()
}

#[test]
fn an_embedded_connector_restarts_through_a_database_crash_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 200) g;",
    );
    let dev = Dev::start(dir.path());
    let rt = runtime();
    let table = TableId::parse("public.items").unwrap();
    let source = Source::Postgres(PgSourceConfig {
        dsn: pg.dsn("app"),
        tables: vec![table.clone()],
        exclude_tables: Vec::new(),
        slot: "sluice_lib".into(),
        publication: "sluice_lib".into(),
        snapshot: SnapshotMode::Initial,
        heartbeat: Duration::from_millis(200),
        snapshot_chunk_rows: 500,
        copy_workers: sluice_cdc::postgres::COPY_WORKERS_DEFAULT,
        spill: Default::default(),
    });
    let sink = SinkConfig {
        bootstrap: dev.addr.clone(),
        topic_prefix: "lib".into(),
        partitions: 2,
        replication_factor: None,
        topic_configs: Default::default(),
        max_record_bytes: sluice_cdc::sink::DEFAULT_MAX_RECORD_BYTES,
        heartbeat_idle: Duration::from_millis(200),
        value_format: ValueFormat::Envelope,
        exclude_columns: Default::default(),
    };
    let info = SourceInfo {
        connector: "postgresql",
        name: "lib".into(),
        db: "app".into(),
    };
    let restarts = Arc::new(AtomicU64::new(0));
    let counted = restarts.clone();
    let connector = Arc::new(
        Connector::new(source, sink, info)
            .with_restart_policy(RestartPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
            })
            .on_restart(Arc::new(move |_, _| {
                counted.fetch_add(1, Ordering::Relaxed);
            })),
    );
    rt.block_on(connector.check()).unwrap();
    let stop = Stop::new();
    let running = {
        let (connector, stop) = (connector.clone(), stop.clone());
        rt.spawn(async move { connector.run(&stop).await })
    };
    // Once the connector made the topic.
    let set = wait_for("the connector's topic", WAIT, || {
        rt.block_on(sluice_client::TableSet::open(
            &ClientConfig::new(&dev.addr),
            &["lib.public.items".to_string()],
            TableConfig::default(),
        ))
        .ok()
    });
    let lsn = |pg: &Postgres| -> PosRequest {
        pg.psql("app", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap()
    };
    wait_for("the copy in the Table", WAIT, || {
        (ids(&set).len() == 200).then_some(())
    });
    pg.psql(
        "app",
        "INSERT INTO items SELECT g, 'w' FROM generate_series(201, 250) g;",
    );
    rt.block_on(set.wait_for_source(&lsn(&pg), WAIT)).unwrap();
    assert_eq!(ids(&set), (1..=250).collect());

    // The database dies: the connector keeps restarting, without giving up.
    pg.kill9();
    wait_for("restarts while the database is down", WAIT, || {
        (restarts.load(Ordering::Relaxed) >= 3).then_some(())
    });
    assert!(
        !running.is_finished(),
        "run gave up while the database was down"
    );
    pg.restart();
    pg.psql(
        "app",
        "DELETE FROM items WHERE id <= 10; INSERT INTO items SELECT g, 'x' FROM generate_series(251, 300) g;",
    );
    rt.block_on(set.wait_for_source(&lsn(&pg), WAIT)).unwrap();
    assert_eq!(ids(&set), (11..=300).collect());

    stop.cancel();
    let confirmed = rt
        .block_on(async { tokio::time::timeout(WAIT, running).await })
        .expect("run ends after stop")
        .unwrap()
        .expect("a clean stop");
    assert!(
        confirmed.is_some(),
        "a clean stop reports its confirmed position"
    );
    assert_eq!(
        connector.stats().health.phase(),
        sluice_cdc::health::Phase::Stopped
    );
}
