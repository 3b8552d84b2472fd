//! Kafka's partition reassignment APIs through the listener of a three-process cluster
//! (as `kafka-reassign-partitions` and the AdminClient send them): a move listed while
//! its new replica cannot catch up (the broker is stopped with SIGSTOP), cancelled back
//! to where it started, then a move that completes, with the records where they belong.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{self, replica_records, signal, start_with_kafka, state};
use common::kafka_raw::Conn;
use common::wait_for;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// (partition, replicas, adding, removing) of every reassignment in progress.
type Listed = Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)>;

fn list(c: &mut Conn) -> Listed {
    let r = c.send(
        &ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(None),
        0,
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

/// Moves `mv`-0 to `replicas` (`None`: cancels); the partition's error code.
fn alter(c: &mut Conn, version: i16, replicas: Option<Vec<i32>>) -> i16 {
    let r = c.send(
        &AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("mv")))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(0)
                    .with_replicas(
                        replicas.map(|r| r.into_iter().map(BrokerId).collect()),
                    )])]),
        version,
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    let p = &r.responses[0].partitions[0];
    if p.error_code != 0 {
        eprintln!("AlterPartitionReassignments: {p:?}");
    }
    p.error_code
}

#[test]
fn kafka_reassignments_are_listed_cancelled_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, kafka) = start_with_kafka(dir.path(), 3);
    let (rt, config, admin) = c.client();
    rt.block_on(admin.create_topic("mv", 1, 1, BTreeMap::new()))
        .unwrap();
    let first = wait_for("mv led", Duration::from_secs(30), || {
        state(&rt, &admin, "mv")?.0
    });
    let acked = cluster::produce_numbered(&rt, &config, "mv", 0, 200);
    assert_eq!(acked.len(), 200);
    let other = (1..=3u32).find(|b| *b != first).unwrap();
    let mut conn = Conn::open(&kafka[0]);
    assert_eq!(list(&mut conn), Listed::new(), "nothing moves yet");
    assert_eq!(alter(&mut conn, 0, None), 85, "NO_REASSIGNMENT_IN_PROGRESS");

    // The new replica's broker is stopped: the move waits for it, and is listed.
    let stopped = c.brokers[other as usize - 1].1.as_ref().unwrap();
    signal(stopped, libc::SIGSTOP);
    let (f, o) = (first as i32, other as i32);
    assert_eq!(alter(&mut conn, 1, Some(vec![f, o])), 0);
    assert_eq!(
        list(&mut conn),
        vec![("mv".to_string(), 0, vec![f, o], vec![o], vec![])]
    );
    // Cancelled: back to the one replica it had, at once.
    assert_eq!(alter(&mut conn, 0, None), 0);
    assert_eq!(list(&mut conn), Listed::new());
    let stopped = c.brokers[other as usize - 1].1.as_ref().unwrap();
    signal(stopped, libc::SIGCONT);

    // Moved for good: the other broker catches up, leads, and the first one's copy goes.
    // Stopped past its session it was fenced: refused (a dead broker) until it is back.
    wait_for("the stopped broker back", Duration::from_secs(30), || {
        (alter(&mut conn, 0, Some(vec![o])) == 0).then_some(())
    });
    wait_for("the move completed", Duration::from_secs(60), || {
        list(&mut conn).is_empty().then_some(())
    });
    wait_for("the new replica leads", Duration::from_secs(30), || {
        let (leader, isr, hw, _) = state(&rt, &admin, "mv")?;
        (leader == Some(other) && isr == vec![other] && hw == Some(200)).then_some(())
    });
    let records: BTreeMap<u64, String> = replica_records(dir.path(), other as usize, "mv")
        .into_iter()
        .collect();
    assert_eq!(
        records, acked,
        "the moved copy holds every acknowledged record"
    );
    c.stop_all();
}
