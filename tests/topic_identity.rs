//! Topic identity on disk (KIP-516) through the real binaries: a broker that was down
//! while its topic was deleted must not serve that topic's records when a topic of the
//! same name is created after it came back.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{all_in_sync, consume_partition, partitions, Cluster};
use common::{http_get, metric, wait_for};
use sluice_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};

const PARTITIONS: u32 = 3;
/// The killed broker: index 2 in the cluster, id 3.
const DOWN: usize = 2;

/// `n` acks=all records with values `{prefix}-{i}`, round-robin over the partitions.
fn produce(rt: &tokio::runtime::Runtime, config: &ClientConfig, topic: &str, prefix: &str, n: u32) {
    rt.block_on(async {
        let producer = Producer::new(
            config,
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut pending = Vec::new();
        for i in 0..n {
            let record = ProducerRecord {
                partition: Some(i % PARTITIONS),
                ..ProducerRecord::new(topic, None::<String>, format!("{prefix}-{i}"))
            };
            pending.push(producer.send(record).await.unwrap());
        }
        for f in pending {
            f.await.unwrap();
        }
        producer.close().await;
    });
}

/// Partitions of `topic` that broker `id` holds a replica of, each with its replicas.
fn held_by(
    rt: &tokio::runtime::Runtime,
    admin: &Admin,
    topic: &str,
    id: u32,
) -> BTreeMap<u32, Vec<u32>> {
    partitions(rt, admin, topic)
        .unwrap()
        .into_iter()
        .filter(|p| p.replicas.contains(&id))
        .map(|p| (p.partition, p.replicas))
        .collect()
}

fn create(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str, rf: u32) {
    rt.block_on(admin.create_topic(topic, PARTITIONS, rf, BTreeMap::new()))
        .unwrap();
    wait_for(
        &format!("{topic} led and in sync"),
        Duration::from_secs(30),
        || all_in_sync(rt, admin, topic, rf as usize).filter(|ps| ps.len() == PARTITIONS as usize),
    );
}

/// Issue 18, as an operator saw it: a controller and three brokers as processes; topics
/// `one` (RF 1) and `two` (RF 2), 3 partitions each, get 3,000 records `old-N`; broker
/// 3 is killed; both topics are deleted; broker 3 comes back; both are created again,
/// placed as before (broker 3 holds partitions it held before, and leads one of `two`'s
/// as its first replica: the case where the old copy would lead at epoch 0 and its
/// empty followers would copy it), and get 300 records `new-N`. A consumer from the
/// beginning of every partition reads exactly the 300 new records, never an old one.
#[test]
fn cluster_a_recreated_topic_never_serves_the_deleted_ones_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, config, admin) = cluster.client();
    let topics = [("one", 1u32), ("two", 2u32)];
    let down_id = DOWN as u32 + 1;
    let mut before = BTreeMap::new();
    for (topic, rf) in topics {
        create(&rt, &admin, topic, rf);
        produce(&rt, &config, topic, "old", 3_000);
        before.insert(topic, held_by(&rt, &admin, topic, down_id));
    }

    cluster.kill9(DOWN);
    for (topic, _) in topics {
        rt.block_on(admin.delete_topic(topic)).unwrap();
    }
    // Deleted for the metadata, but pending in the controller while a replica is down.
    let metrics = cluster.controller_metrics[0]
        .clone()
        .expect("loopback metrics");
    let pending = || {
        http_get(&metrics, "/metrics")
            .and_then(|m| metric(&m, "sluice_controller_pending_deletions"))
    };
    wait_for("both deletions pending", Duration::from_secs(10), || {
        (pending() == Some(2.0)).then_some(())
    });
    cluster.start_broker(DOWN);
    wait_for("broker 3 alive again", Duration::from_secs(30), || {
        rt.block_on(admin.describe_cluster())
            .ok()
            .filter(|c| c.brokers.iter().filter(|b| b.alive).count() == 3)
    });
    // Back, it deletes its copies and says so: the deletions complete.
    wait_for("no deletion pending", Duration::from_secs(30), || {
        (pending() == Some(0.0)).then_some(())
    });
    let left: Vec<String> = std::fs::read_dir(dir.path().join(format!("broker-{down_id}")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("one-") || n.starts_with("two-"))
        .collect();
    assert!(
        left.is_empty(),
        "deletion confirmed, yet broker 3 holds {left:?}"
    );

    for (topic, rf) in topics {
        create(&rt, &admin, topic, rf);
        let now = held_by(&rt, &admin, topic, down_id);
        // The test means something only if broker 3 meets its old directories.
        assert!(
            now.keys().any(|p| before[topic].contains_key(p)),
            "{topic}: broker 3 holds {now:?} now, {:?} before: the placement changed",
            before[topic]
        );
        if rf == 2 {
            assert!(
                now.values().any(|r| r[0] == down_id),
                "{topic}: broker 3 is no partition's first replica: {now:?}"
            );
        }
        produce(&rt, &config, topic, "new", 300);
    }

    for (topic, _) in topics {
        let ps = wait_for(
            &format!("{topic}: every partition's HW at its LEO"),
            Duration::from_secs(30),
            || {
                partitions(&rt, &admin, topic).filter(|ps| {
                    ps.iter()
                        .all(|p| p.high_watermark.is_some() && p.high_watermark == p.log_end_offset)
                })
            },
        );
        let mut read = Vec::new();
        for p in ps {
            let end = p.high_watermark.unwrap();
            read.extend(consume_partition(
                &rt,
                &config,
                topic,
                p.partition,
                end,
                Duration::from_secs(30),
            ));
        }
        let old: Vec<_> = read.iter().filter(|r| !r.1.starts_with("new-")).collect();
        assert!(
            old.is_empty(),
            "{topic}: consumers of the new topic read {} records of the deleted one, e.g. {:?}",
            old.len(),
            old.iter().take(3).collect::<Vec<_>>()
        );
        let mut values: Vec<&str> = read.iter().map(|r| r.1.as_str()).collect();
        values.sort_unstable();
        let mut want: Vec<String> = (0..300).map(|i| format!("new-{i}")).collect();
        want.sort_unstable();
        assert_eq!(values, want, "{topic}: exactly the new records, once each");
    }
    cluster.stop_all();
}
