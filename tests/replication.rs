//! Replication with separate processes (`common::cluster`): a producer writes numbered
//! records with acks=all (min.insync.replicas=2) while the test kill -9s the partition
//! leader (and, with several controllers, the active controller), cuts a broker off
//! from its peers, or moves a partition; afterwards every acknowledged record is at the
//! offset it was acknowledged with, and all replicas hold identical records.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::wait_for;
use sluice_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};

#[test]
fn acknowledged_writes_survive_repeated_leader_kills() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    repeated_leader_kills(cluster, dir.path());
}

/// The same with two controllers sharing an embedded store; every other round also
/// kill -9s the active controller just before the leader.
#[test]
fn acknowledged_writes_survive_leader_and_controller_kills_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(dir.path(), 3, 2);
    repeated_leader_kills(cluster, dir.path());
}

/// The same with three controllers electing through a real etcd.
#[cfg(feature = "etcd")]
#[test]
fn acknowledged_writes_survive_leader_and_controller_kills_etcd() {
    let etcd = common::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with_store(dir.path(), 3, 3, &etcd.store_spec());
    repeated_leader_kills(cluster, dir.path());
}

fn repeated_leader_kills(mut cluster: Cluster, dir: &Path) {
    const ROUNDS: usize = 20;
    let several_controllers = cluster.controllers.len() > 1;
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "ha");

    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (config, acked, stop) = (config.clone(), acked.clone(), stop.clone());
        rt.spawn(async move {
            let pconfig = ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                delivery_timeout: Duration::from_secs(60),
                ..Default::default()
            };
            let producer = Producer::new(&config, pconfig).await.unwrap();
            let mut i = 0u64;
            let mut pending = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                let value = format!("n{i}");
                let f = producer
                    .send(ProducerRecord {
                        partition: Some(0),
                        ..ProducerRecord::new("ha", None::<String>, value.clone())
                    })
                    .await
                    .unwrap();
                pending.push_back((value, f));
                i += 1;
                // Keep a bounded window so the test's pace follows the cluster's.
                while pending.len() > 200 {
                    let (value, f) = pending.pop_front().unwrap();
                    if let Ok(meta) = f.await {
                        acked.lock().unwrap().insert(meta.offset.unwrap(), value);
                    }
                }
            }
            for (value, f) in pending {
                if let Ok(meta) = f.await {
                    acked.lock().unwrap().insert(meta.offset.unwrap(), value);
                }
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    let mut rng_state = 0x2545F4914F6CDD1Du64;
    let (mut recoveries, mut both) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (leader, isr, _, _) =
            wait_for("a leader with a full ISR", Duration::from_secs(60), || {
                state(&rt, &admin, "ha").filter(|s| s.0.is_some() && s.1.len() == 3)
            });
        let leader = leader.unwrap();
        // Random timing: kill after a random number of further acknowledgements.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let more = 1 + (rng_state % 400) as usize;
        let target = acked_count() + more;
        wait_for("more acknowledged writes", Duration::from_secs(60), || {
            (acked_count() >= target).then_some(())
        });
        let with_controller = several_controllers && round % 2 == 1;
        let controller = cluster.active_controller(&rt, &admin);
        let killed_at = Instant::now();
        if with_controller {
            cluster.kill9_controller(controller);
        }
        cluster.kill9(leader as usize - 1);
        let before = acked_count();
        wait_for("a new leader", Duration::from_secs(30), || {
            state(&rt, &admin, "ha").filter(|s| s.0.is_some_and(|l| l != leader))
        });
        wait_for(
            "writes acknowledged by the new leader",
            Duration::from_secs(30),
            || (acked_count() > before + 10).then_some(()),
        );
        if with_controller {
            both.push(killed_at.elapsed());
            cluster.start_controller(controller);
        } else {
            recoveries.push(killed_at.elapsed());
        }
        cluster.start_broker(leader as usize - 1);
        eprintln!("round {round}: killed leader {leader} (isr was {isr:?}){}, acks resumed after {:?}, {} acked so far", if with_controller { " and the active controller" } else { "" }, killed_at.elapsed(), acked_count());
    }
    let summary = |what: &str, mut times: Vec<Duration>| {
        if !times.is_empty() {
            times.sort();
            eprintln!(
                "{what} to acks=all writes resuming ({} rounds, store {}): median {:?}, max {:?} (session timeout 2 s, lease TTL 2 s)",
                times.len(),
                cluster.store.split(':').next().unwrap_or_default(),
                times[times.len() / 2],
                times[times.len() - 1]
            );
        }
    };
    summary("kill -9 of the leader", recoveries);
    summary("kill -9 of the leader and the active controller", both);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(producing).unwrap();
    let promised = acked.lock().unwrap().clone();
    // Let every replica catch up: full ISR and HW == LEO.
    wait_for("replicas to converge", Duration::from_secs(60), || {
        state(&rt, &admin, "ha").filter(|s| s.1.len() == 3 && s.2.is_some() && s.2 == s.3)
    });
    cluster.stop_all();

    let copies: Vec<Vec<(u64, String)>> = (1..=3).map(|b| replica_records(dir, b, "ha")).collect();
    let leo = copies
        .iter()
        .map(|c| c.last().map_or(0, |r| r.0 + 1))
        .min()
        .unwrap();
    for (b, c) in copies.iter().enumerate() {
        let prefix: Vec<_> = c.iter().filter(|r| r.0 < leo).cloned().collect();
        let first: Vec<_> = copies[0].iter().filter(|r| r.0 < leo).cloned().collect();
        assert_eq!(
            prefix,
            first,
            "broker {} differs from broker 1 below offset {leo}",
            b + 1
        );
    }
    let stored: BTreeMap<u64, String> = copies[0].iter().cloned().collect();
    assert!(promised.len() > ROUNDS * 10);
    for (offset, value) in &promised {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acknowledged offset {offset} lost or changed"
        );
    }
    // The idempotent producer (on by default with acks=all) means retries across the
    // failovers neither duplicated nor reordered anything: record numbers strictly
    // increase along the log.
    let numbers: Vec<u64> = stored.values().map(|v| v[1..].parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "a record was duplicated or reordered"
    );
    eprintln!(
        "{} acknowledged, {} stored, none duplicated or reordered",
        promised.len(),
        stored.len()
    );
}

#[test]
fn controlled_shutdown_moves_leadership_and_preferred_election_moves_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, config, admin) = cluster.client();
    rt.block_on(admin.create_topic("cs", 3, 3, BTreeMap::new()))
        .unwrap();
    let leaders = |rt: &tokio::runtime::Runtime| -> Vec<Option<u32>> {
        rt.block_on(admin.describe_topic("cs"))
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect()
    };
    let all_in_sync = |rt: &tokio::runtime::Runtime| {
        rt.block_on(admin.describe_topic("cs"))
            .ok()
            .filter(|d| d.partitions.iter().all(|p| p.isr.len() == 3))
    };
    wait_for("full ISRs", Duration::from_secs(30), || all_in_sync(&rt));
    assert_eq!(leaders(&rt), vec![Some(1), Some(2), Some(3)]);

    // SIGTERM broker 1: before it stops, its partition is led by another in-sync replica.
    let b1 = cluster.brokers[0].1.take().unwrap();
    signal(&b1, libc::SIGTERM);
    let mut b1 = b1;
    let status = b1.wait().unwrap();
    assert!(status.success(), "broker 1 stopped cleanly: {status}");
    let after = leaders(&rt);
    assert!(
        after[0].is_some_and(|l| l != 1),
        "leadership moved off the stopping broker: {after:?}"
    );
    // Writes keep succeeding with acks=all (min.insync.replicas defaults to 1 here).
    let acked = produce_numbered(&rt, &config, "cs", 0, 200);
    assert_eq!(acked.len(), 200);

    // Back, in sync, then a preferred election returns partition 0 to broker 1.
    cluster.start_broker(0);
    wait_for(
        "broker 1 back in every ISR",
        Duration::from_secs(60),
        || all_in_sync(&rt),
    );
    let changed = wait_for("a preferred election", Duration::from_secs(30), || {
        rt.block_on(admin.elect_leaders(Some("cs")))
            .ok()
            .filter(|&n| n > 0 || leaders(&rt)[0] == Some(1))
    });
    assert!(changed <= 3);
    assert_eq!(leaders(&rt), vec![Some(1), Some(2), Some(3)]);
}

/// A real network partition: broker 3 runs in its own network namespace, and a
/// blackhole route there cuts it off from brokers 1 and 2 while the controller and
/// clients still reach it. It leaves the ISR, acks=all (min.insync.replicas=2) carries
/// on with two replicas, and once healed it catches up and rejoins.
#[test]
fn a_broker_cut_off_from_its_peers_leaves_the_isr_and_rejoins_when_healed() {
    let net = common::Netns::create();
    let metrics_addr = |host: u8| format!("{}:9393", net.addr(host));
    let metrics_at = |host: u8| vec!["--metrics".to_string(), metrics_addr(host)];
    let dir = tempfile::tempdir().unwrap();
    // Every address is private to this test (its own IPs), so fixed ports are free.
    let mut cluster = Cluster::start_custom(
        dir.path(),
        vec![format!("{}:9390", net.addr(1))],
        vec![
            (format!("{}:9392", net.addr(11)), Vec::new(), metrics_at(11)),
            (format!("{}:9392", net.addr(12)), Vec::new(), metrics_at(12)),
            (
                format!("{}:9392", net.addr(2)),
                net.exec_prefix(),
                Vec::new(),
            ),
        ],
        &format!("embedded:{}", dir.path().join("controller").display()),
    );
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "cut");
    // Broker 3 must be a follower: its peers reach it through the root side's primary
    // address, which the cut leaves open, so only its own fetches are cut.
    if state(&rt, &admin, "cut").and_then(|s| s.0) == Some(3) {
        rt.block_on(admin.reassign_partition("cut", 0, vec![1, 2, 3]))
            .unwrap();
        rt.block_on(admin.elect_leaders(Some("cut"))).unwrap();
    }
    wait_for(
        "a leader other than broker 3 with a full ISR",
        Duration::from_secs(30),
        || state(&rt, &admin, "cut").filter(|s| s.0.is_some_and(|l| l != 3) && s.1.len() == 3),
    );
    let mut acked = produce_numbered(&rt, &config, "cut", 0, 500);

    let cut_at = Instant::now();
    net.cut(&[11, 12]);
    // Writes go on meanwhile: they wait for broker 3 until it leaves the ISR.
    let writer = {
        let config = config.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            produce_numbered(&rt, &config, "cut", 500, 500)
        })
    };
    wait_for("broker 3 out of the ISR", Duration::from_secs(30), || {
        state(&rt, &admin, "cut").filter(|s| s.1.len() == 2 && !s.1.contains(&3))
    });
    eprintln!(
        "cut to broker 3 leaving the ISR: {:?} (replica.lag.time.max.ms 3000)",
        cut_at.elapsed()
    );
    // The leader reports it, as Kafka's UnderReplicatedPartitions and IsrShrinksPerSec do.
    let leader = state(&rt, &admin, "cut").and_then(|s| s.0).unwrap();
    let leader_metrics = metrics_addr(if leader == 1 { 11 } else { 12 });
    let scrape = |name: &str| {
        common::http_get(&leader_metrics, "/metrics").and_then(|m| common::metric(&m, name))
    };
    wait_for(
        "the leader to count an under-replicated partition",
        Duration::from_secs(10),
        || (scrape("sluice_under_replicated_partitions") == Some(1.0)).then_some(()),
    );
    assert!(scrape("sluice_isr_shrinks_total").unwrap_or(0.0) >= 1.0);
    acked.extend(writer.join().unwrap());
    acked.extend(produce_numbered(&rt, &config, "cut", 1000, 500));
    // Cut off from its peers, not from the controller or clients: still alive, and it
    // answers a client that only knows its address.
    let d = rt.block_on(admin.describe_cluster()).unwrap();
    assert!(d.brokers.iter().all(|b| b.alive), "broker 3 was fenced");
    let only3 = Admin::new(&ClientConfig::new(&cluster.brokers[2].0));
    let seen = rt.block_on(only3.describe_cluster()).unwrap();
    assert_eq!(seen.brokers.len(), 3);

    let healed_at = Instant::now();
    net.heal(&[11, 12]);
    wait_for(
        "broker 3 back in the ISR, caught up",
        Duration::from_secs(60),
        || state(&rt, &admin, "cut").filter(|s| s.1.len() == 3 && s.2.is_some() && s.2 == s.3),
    );
    eprintln!(
        "heal to broker 3 back in the ISR and caught up: {:?}",
        healed_at.elapsed()
    );
    wait_for(
        "no under-replicated partition on the leader",
        Duration::from_secs(10),
        || (scrape("sluice_under_replicated_partitions") == Some(0.0)).then_some(()),
    );
    assert!(scrape("sluice_isr_expands_total").unwrap_or(0.0) >= 1.0);
    acked.extend(produce_numbered(&rt, &config, "cut", 1500, 100));
    assert_eq!(acked.len(), 1600);
    converge_stop_and_check(&rt, &admin, &mut cluster, "cut", &acked);
}

/// Reassignment and added partitions under load: a producer (acks=all) and a consumer
/// keep running while a partition moves from [a, b, c] to [d, b, c] (leadership
/// switches to d) and the topic grows to three partitions. No write fails, the consumer
/// sees every record once in order, and the old replica's files are deleted.
#[test]
fn reassignment_and_new_partitions_while_writing_and_reading() {
    use sluice_client::{Consumer, ConsumerConfig, OffsetReset};
    use sluice_proto::TopicPartition;

    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 4);
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "mv");
    let old = rt.block_on(admin.describe_topic("mv")).unwrap().partitions[0]
        .replicas
        .clone();
    let spare = (1..=4).find(|b| !old.contains(b)).unwrap();
    let target = vec![spare, old[1], old[2]];

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (config, acked, stop, failures) = (
            config.clone(),
            acked.clone(),
            stop.clone(),
            failures.clone(),
        );
        rt.spawn(async move {
            let pconfig = ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                ..Default::default()
            };
            let producer = Producer::new(&config, pconfig).await.unwrap();
            let mut pending = std::collections::VecDeque::new();
            let mut i = 0u64;
            let settle = |value: String, r: Result<sluice_client::RecordMetadata, _>| match r {
                Ok(meta) => acked.lock().unwrap().push((meta.offset.unwrap(), value)),
                Err(e) => {
                    eprintln!("write failed: {e}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let value = format!("n{i}");
                i += 1;
                let f = producer
                    .send(ProducerRecord {
                        partition: Some(0),
                        ..ProducerRecord::new("mv", None::<String>, value.clone())
                    })
                    .await
                    .unwrap();
                pending.push_back((value, f));
                while pending.len() > 100 {
                    let (value, f) = pending.pop_front().unwrap();
                    settle(value, f.await);
                }
            }
            for (value, f) in pending {
                settle(value, f.await);
            }
        })
    };
    let read: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    // The reader runs until it has read up to this offset (set once writing stops).
    let read_until = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let reader = {
        let (config, read, read_until) = (config.clone(), read.clone(), read_until.clone());
        rt.spawn(async move {
            let mut c = Consumer::new(
                &config,
                ConsumerConfig {
                    auto_offset_reset: OffsetReset::Earliest,
                    ..Default::default()
                },
            );
            c.assign(vec![TopicPartition::new("mv", 0)]);
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                let until = read_until.load(Ordering::Relaxed);
                let last = read.lock().unwrap().last().map(|r| r.0);
                if last.is_some_and(|l| l >= until) || Instant::now() > deadline {
                    return;
                }
                if let Ok(records) = c.poll(Duration::from_millis(200)).await {
                    let mut read = read.lock().unwrap();
                    for r in records {
                        let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                        read.push((r.offset, v));
                    }
                }
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    wait_for("writes before the move", Duration::from_secs(60), || {
        (acked_count() >= 2000).then_some(())
    });
    rt.block_on(admin.reassign_partition("mv", 0, target.clone()))
        .unwrap();
    let moved = wait_for(
        "the reassignment to complete",
        Duration::from_secs(60),
        || {
            rt.block_on(admin.describe_topic("mv")).ok().filter(|d| {
                let p = &d.partitions[0];
                p.replicas == target && p.isr.len() == 3 && p.leader == Some(spare)
            })
        },
    );
    assert_eq!(
        moved.partitions[0].leader,
        Some(spare),
        "leadership switched"
    );
    rt.block_on(admin.create_partitions("mv", 3)).unwrap();
    wait_for("three partitions, all led", Duration::from_secs(30), || {
        rt.block_on(admin.describe_topic("mv"))
            .ok()
            .filter(|d| d.partitions.len() == 3 && d.partitions.iter().all(|p| p.leader.is_some()))
    });
    let target_count = acked_count() + 2000;
    wait_for("writes after the move", Duration::from_secs(60), || {
        (acked_count() >= target_count).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).unwrap();
    let acked = acked.lock().unwrap().clone();
    let last = acked.iter().map(|a| a.0).max().unwrap();
    read_until.store(last, Ordering::Relaxed);
    rt.block_on(reader).unwrap();

    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a write failed during the move"
    );
    let read = read.lock().unwrap().clone();
    let offsets: Vec<u64> = read.iter().map(|r| r.0).collect();
    assert_eq!(
        offsets,
        (0..=last).collect::<Vec<_>>(),
        "the consumer saw every offset once, in order"
    );
    let by_offset: BTreeMap<u64, String> = read.into_iter().collect();
    for (offset, value) in &acked {
        assert_eq!(
            by_offset.get(offset),
            Some(value),
            "acknowledged offset {offset}"
        );
    }
    let removed = dir.path().join(format!("broker-{}", old[0])).join("mv-0");
    wait_for(
        "the old replica's files to be deleted",
        Duration::from_secs(30),
        || (!removed.exists()).then_some(()),
    );
    eprintln!(
        "{} records written and read while moving mv-0 from {old:?} to {target:?} and adding partitions",
        acked.len()
    );
}

/// A follower that stops fetching (SIGSTOP; the controller's session timeout is long, so
/// only its leaders' ISR changes remove it) while it follows 32 partitions: every ISR it
/// is in shrinks within `replica.lag.time.max.ms` (3 s here) plus a small bound — one
/// batched AlterPartitions per leader, answered once stored — not one partition at a
/// time, each waiting for pushes to the stopped broker.
#[test]
fn cluster_a_stalled_follower_leaves_every_isr_within_the_lag_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        Cluster::start_with_controller_args(dir.path(), 3, &["--session-timeout-ms", "60000"]);
    let (rt, _config, admin) = cluster.client();
    rt.block_on(admin.create_topic("many", 48, 2, BTreeMap::new()))
        .unwrap();
    wait_for("every partition in sync", Duration::from_secs(60), || {
        all_in_sync(&rt, &admin, "many", 2)
    });
    let followed_by_3 = |ps: &[sluice_client::PartitionDescription]| {
        ps.iter()
            .filter(|p| p.leader != Some(3) && p.isr.contains(&3))
            .count()
    };
    let before = followed_by_3(&partitions(&rt, &admin, "many").unwrap());
    assert!(before >= 16, "broker 3 follows {before} partitions");
    // The controller's view through broker 1 (a client's `any` may try the stopped
    // broker first and wait out its timeout, which would be measured instead).
    let via_1 = format!("http://{}", cluster.brokers[0].0);
    let controller_isrs = || {
        rt.block_on(async {
            let mut c = sluice_proto::v1::admin_client::AdminClient::connect(via_1.clone())
                .await
                .ok()?;
            let md = c
                .describe_topics(sluice_proto::v1::MetadataRequest {
                    topics: vec!["many".into()],
                })
                .await
                .ok()?
                .into_inner();
            let t = md.topics.into_iter().next()?;
            Some(
                t.partitions
                    .into_iter()
                    .filter(|p| p.leader != 3 && p.isr.contains(&3))
                    .count(),
            )
        })
    };
    signal(cluster.brokers[2].1.as_ref().unwrap(), libc::SIGSTOP);
    let stopped = Instant::now();
    wait_for(
        "broker 3 out of every ISR it follows in",
        Duration::from_secs(60),
        || controller_isrs().filter(|n| *n == 0),
    );
    let took = stopped.elapsed();
    eprintln!("{before} ISRs shrank {took:?} after the follower stopped (lag max 3 s)");
    assert!(
        took < Duration::from_secs(8),
        "{before} ISRs took {took:?} to shrink: more than the 3 s lag plus one proposal interval and a round trip"
    );
    signal(cluster.brokers[2].1.as_ref().unwrap(), libc::SIGCONT);
    wait_for(
        "broker 3 back in every ISR",
        Duration::from_secs(60),
        || all_in_sync(&rt, &admin, "many", 2),
    );
    cluster.stop_all();
}
