//! The fetch loops never wait for a partition's lock on an async worker. A follower
//! append whose write waits for a slow disk holds its partition's lock for as long as
//! the disk takes; a worker waiting for that lock stops every task queued on it,
//! heartbeats included, and a broker with both workers stopped so is fenced (seen in the
//! fault campaign's slow-disk fault: issue 18, docs/storage.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::topic_config::LogConfig;
use sluice_proto::{BrokerId, LeaderEpoch, TopicPartition};

use crate::replica::Role;
use crate::server::{Broker, BrokerConfig};

#[test]
fn the_fetch_loops_keep_the_async_worker_free_while_a_partition_lock_is_held() {
    let d = tempfile::tempdir().unwrap();
    let config = BrokerConfig::new(1, "127.0.0.1:1".into(), Vec::new(), d.path().to_path_buf());
    let broker = Broker::open(config).unwrap();
    let shared = Arc::clone(&broker.shared);
    let tp = TopicPartition::new("slow", 0);
    let role = Role {
        leader: Some(BrokerId(2)),
        leader_epoch: LeaderEpoch(0),
        replicas: vec![BrokerId(1), BrokerId(2)],
        isr: vec![BrokerId(1), BrokerId(2)],
        partition_epoch: 0,
    };
    let defaults = LogConfig::clone(&shared.config.log_defaults);
    shared
        .replicas
        .apply_role(&tp, role, defaults, None)
        .unwrap();

    // A blocking thread holds the partition's lock for 2 s, as a follower append does
    // while its write waits for a slow disk.
    let part = shared.replicas.partition(&tp).unwrap();
    let (held_tx, held) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _locked = part.replica.lock();
        held_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(2));
    });
    held.recv().unwrap();

    // One async worker: a task beside the fetch loops must go on running.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ticks, took) = rt.block_on(async {
        let fetching = tokio::spawn(super::replicate(shared.clone()));
        let started = Instant::now();
        let mut ticks = 0;
        while started.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ticks += 1;
        }
        fetching.abort();
        (ticks, started.elapsed())
    });
    holder.join().unwrap();
    assert!(
        ticks >= 10,
        "the async worker ran {ticks} ticks of 50 ms in {took:?}: a fetch loop waited on it \
         for the partition lock"
    );
}
