//! Topic identity (KIP-516) through the replica manager: a role for a topic id other
//! than the one a log records replaces that log whatever the epochs; logs of topics the
//! controller no longer knows go when the first metadata arrives.

use std::collections::HashMap;

use sluice_proto::{BatchBuilder, BrokerId, Compression, LeaderEpoch, TopicPartition};

use super::{ReplicaManager, Role};
use crate::log::{LogConfig, LogManager, TopicId};

fn id(s: &str) -> TopicId {
    TopicId::parse(s).unwrap()
}

fn leader_role(epoch: u32, partition_epoch: i32) -> Role {
    Role {
        leader: Some(BrokerId(1)),
        leader_epoch: LeaderEpoch(epoch),
        replicas: vec![BrokerId(1)],
        isr: vec![BrokerId(1)],
        partition_epoch,
    }
}

fn write_three(rm: &ReplicaManager, tp: &TopicPartition, epoch: u32) {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..3 {
        b.append(0, Some(b"k"), Some(format!("old-{i}").as_bytes()), &[]);
    }
    let log = &rm.partition(tp).unwrap().log;
    log.append_as_leader(&b.build().unwrap(), epoch, 0).unwrap();
}

#[test]
fn a_role_for_a_new_topic_id_replaces_the_old_log_whatever_its_epoch() {
    let d = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 0);
    let (old, new) = (id("0000aaaa"), id("0000bbbb"));
    {
        let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        let rm = ReplicaManager::new(1, logs);
        rm.apply_role(&tp, leader_role(5, 7), LogConfig::default(), Some(&old))
            .unwrap();
        write_three(&rm, &tp, 5);
        // The same topic at a lower epoch is a stale state: ignored, the log kept.
        rm.apply_role(&tp, leader_role(0, 0), LogConfig::default(), Some(&old))
            .unwrap();
        let p = rm.partition(&tp).unwrap();
        assert_eq!(p.role().leader_epoch, LeaderEpoch(5));
        assert_eq!(p.log.log_end_offset(), 3);

        // A new topic of the same name, at epoch 0: a new partition, not a stale one.
        rm.apply_role(&tp, leader_role(0, 0), LogConfig::default(), Some(&new))
            .unwrap();
        let p = rm.partition(&tp).unwrap();
        assert_eq!(p.role().leader_epoch, LeaderEpoch(0));
        assert_eq!(
            p.log.log_end_offset(),
            0,
            "the old topic's records are gone"
        );
        assert!(p.log.epoch_entries().iter().all(|e| e.epoch == 0));
        assert_eq!(p.log.topic_id(), Some(new.clone()));
    }
    // Not open in this process: a restart meets the new identity on disk.
    let (logs, failed) = LogManager::open(d.path(), LogConfig::default()).unwrap();
    assert!(failed.is_empty());
    let log = logs.get(&tp).unwrap();
    assert_eq!((log.topic_id(), log.log_end_offset()), (Some(new), 0));
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("deleted"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_log_found_at_start_with_another_topic_id_is_replaced_by_the_first_role() {
    let d = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 1);
    {
        let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        let rm = ReplicaManager::new(1, logs);
        rm.apply_role(
            &tp,
            leader_role(3, 3),
            LogConfig::default(),
            Some(&id("aa")),
        )
        .unwrap();
        write_three(&rm, &tp, 3);
    }
    let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
    let rm = ReplicaManager::new(1, logs);
    rm.apply_role(
        &tp,
        leader_role(0, 0),
        LogConfig::default(),
        Some(&id("bb")),
    )
    .unwrap();
    let p = rm.partition(&tp).unwrap();
    assert_eq!(p.log.log_end_offset(), 0);
    assert_eq!(p.log.topic_id(), Some(id("bb")));
}

#[test]
fn logs_of_topics_the_controller_no_longer_knows_go_once_metadata_arrives() {
    let d = tempfile::tempdir().unwrap();
    let tp = |t: &str| TopicPartition::new(t, 0);
    {
        let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        let c = LogConfig::default();
        logs.get_or_create_for(&tp("gone"), c.clone(), Some(&id("g1")))
            .unwrap();
        logs.get_or_create_for(&tp("renewed"), c.clone(), Some(&id("r1")))
            .unwrap();
        logs.get_or_create_for(&tp("kept"), c.clone(), Some(&id("k1")))
            .unwrap();
        logs.get_or_create(&tp("legacy"), c).unwrap();
        logs.shutdown().unwrap();
    }
    let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
    let rm = ReplicaManager::new(1, logs);
    let known: HashMap<String, Option<TopicId>> = [
        ("renewed", Some(id("r2"))),
        ("kept", Some(id("k1"))),
        ("legacy", Some(id("l1"))),
    ]
    .into_iter()
    .map(|(n, i)| (n.to_string(), i))
    .collect();
    assert!(!rm.strays_checked());
    assert_eq!(rm.delete_stray_logs(&known).unwrap(), 2);
    assert!(rm.strays_checked());
    let mut left: Vec<String> = rm
        .logs()
        .all()
        .iter()
        .map(|l| l.topic_partition().topic.clone())
        .collect();
    left.sort();
    assert_eq!(left, vec!["kept", "legacy"]);
    let mut dirs: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.contains("checkpoint"))
        .collect();
    dirs.sort();
    assert_eq!(dirs, vec!["kept-0", "legacy-0"]);
    // Once per process: later metadata is no reason to look again.
    assert_eq!(rm.delete_stray_logs(&HashMap::new()).unwrap(), 0);
    assert_eq!(rm.logs().all().len(), 2);
}

#[test]
fn a_replica_hosted_without_an_id_records_the_first_one_it_is_sent_and_keeps_its_data() {
    let d = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 0);
    let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
    let rm = ReplicaManager::new(1, logs);
    rm.apply_role(&tp, leader_role(1, 1), LogConfig::default(), None)
        .unwrap();
    write_three(&rm, &tp, 1);
    assert_eq!(rm.partition(&tp).unwrap().log.topic_id(), None);
    rm.apply_role(
        &tp,
        leader_role(1, 2),
        LogConfig::default(),
        Some(&id("cc")),
    )
    .unwrap();
    let p = rm.partition(&tp).unwrap();
    assert_eq!(
        (p.log.topic_id(), p.log.log_end_offset()),
        (Some(id("cc")), 3)
    );
    assert_eq!(p.role().partition_epoch, 2);
}
