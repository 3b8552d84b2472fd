//! The Table library across a leader failure: three `sluice broker` processes, the
//! partition's leader killed with SIGKILL while a table follows it. The table's fetch
//! task must refresh metadata, find the new leader and go on, with no write lost or
//! applied twice out of order.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::{create_replicated, state, Cluster};
use common::wait_for;
use sluice_client::{Producer, ProducerConfig, ProducerRecord, RawTable, TableConfig};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_table_follows_the_partition_to_its_new_leader_after_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "fo");
    let leader = wait_for("a leader", WAIT, || state(&rt, &admin, "fo")?.0);

    let table = rt.block_on(async {
        let t = RawTable::open(&config, "fo", TableConfig::default())
            .await
            .unwrap();
        t.ready().await.unwrap();
        t
    });
    let producer = rt
        .block_on(Producer::new(&config, ProducerConfig::default()))
        .unwrap();
    let mut model = HashMap::new();
    let mut write = |round: &str| {
        rt.block_on(async {
            let mut last = None;
            for i in 0..200 {
                let (k, v) = (format!("k{}", i % 50), format!("{round}-{i}"));
                model.insert(k.clone(), v.clone());
                let r = ProducerRecord::new("fo", Some(Bytes::from(k)), Bytes::from(v));
                let m = producer.send(r).await.unwrap().await.unwrap();
                last = Some((m.partition, m.offset.unwrap()));
            }
            table.wait_for(&[last.unwrap()], WAIT).await.unwrap();
        })
    };
    write("before");
    cluster.kill9(leader as usize - 1);
    let new_leader = wait_for("a new leader", WAIT, || {
        state(&rt, &admin, "fo")?.0.filter(|&l| l != leader)
    });
    assert_ne!(new_leader, leader);
    write("after");
    let rows: HashMap<String, String> = table
        .snapshot()
        .rows
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, model);
    assert!(table.is_ready());
}
