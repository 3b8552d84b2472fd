//! `flush.messages` on a follower: what it appends from its leader is flushed before
//! `apply_fetched` returns, so the log end its next fetch reports is durable.

use bytes::{Bytes, BytesMut};
use sluice_proto::{BatchBuilder, BrokerId, Compression, LeaderEpoch, Offset, TopicPartition};

use crate::log::{LogConfig, LogManager};
use crate::replica::{FollowerFetched, ReplicaManager, Role, ToFetch};

fn follower_role() -> Role {
    Role {
        leader: Some(BrokerId(1)),
        leader_epoch: LeaderEpoch(3),
        replicas: vec![BrokerId(1), BrokerId(2)],
        isr: vec![BrokerId(1), BrokerId(2)],
        partition_epoch: 0,
    }
}

/// Two one-record batches as a leader would send them, stamped at offsets 0 and 1.
fn leader_batches() -> Bytes {
    let mut out = BytesMut::new();
    for offset in 0..2 {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(0, None, Some(b"v"), &[]);
        let mut buf = BytesMut::from(&b.build().unwrap().into_bytes()[..]);
        sluice_proto::batch::stamp(&mut buf, offset, 3);
        out.extend_from_slice(&buf);
    }
    out.freeze()
}

fn fetch_once(flush_messages: Option<u64>) -> (u64, u64) {
    let d = tempfile::tempdir().unwrap();
    let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
    let rm = ReplicaManager::new(2, logs);
    let tp = TopicPartition::new("t", 0);
    let config = LogConfig {
        flush_messages,
        ..LogConfig::default()
    };
    rm.apply_role(&tp, follower_role(), config, None).unwrap();
    let sent = rm.followed().remove(&1).unwrap().remove(0);
    assert_eq!(sent.fetch_offset, Offset(0));
    let answer = FollowerFetched {
        records: leader_batches(),
        high_watermark: 0,
        log_start_offset: 0,
        log_end_offset: 2,
        diverging: None,
    };
    rm.apply_fetched(&ToFetch { ..sent }, Ok(answer)).unwrap();
    let log = &rm.partition(&tp).unwrap().log;
    (log.log_end_offset(), log.flushed_offset())
}

#[test]
fn a_follower_with_flush_messages_1_flushes_what_it_appended_before_fetching_again() {
    assert_eq!(fetch_once(Some(1)), (2, 2), "appended and flushed");
    assert_eq!(
        fetch_once(None),
        (2, 0),
        "without flush.messages the follower leaves flushing to the OS"
    );
}
