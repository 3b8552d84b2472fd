//! Controller failover with separate processes: embedded and etcd lease stores, the
//! active controller killed (also mid-way through topic creations) or stopped past its
//! lease, a store that cannot be written, an etcd member lost. Afterwards metadata is
//! intact, nothing acknowledged is lost, and a deposed controller changes nothing.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::wait_for;
use sluice_client::Admin;

#[test]
fn controller_failover_and_a_stopped_leader_that_wakes_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(dir.path(), 3, 2);
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "fo");
    let mut acked = produce_numbered(&rt, &config, "fo", 0, 500);

    // kill -9 the active controller: the standby takes the lease and serves metadata changes.
    let before = rt.block_on(admin.describe_cluster()).unwrap();
    let active = cluster.active_controller(&rt, &admin);
    // Topic creations go on, one after another, while it dies: some complete before,
    // one is in flight, the rest go to the new controller.
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creations = {
        let (config, created) = (config.clone(), created.clone());
        rt.spawn(async move {
            let admin = Admin::new(&config);
            let mut outcomes = Vec::new();
            let started = Instant::now();
            for i in 0..16 {
                let name = format!("burst-{i}");
                let ok = admin
                    .create_topic(&name, 4, 3, BTreeMap::new())
                    .await
                    .is_ok();
                if ok {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                outcomes.push((name, ok));
            }
            eprintln!("16 creations took {:?}", started.elapsed());
            outcomes
        })
    };
    wait_for("some creations done", Duration::from_secs(30), || {
        (created.load(Ordering::Relaxed) >= 3).then_some(())
    });
    let killed_at = Instant::now();
    cluster.kill9_controller(active);
    create_when_possible(&rt, &admin, "after-failover");
    eprintln!(
        "kill -9 of the active controller to the next committed metadata change: {:?}",
        killed_at.elapsed()
    );
    let after = rt.block_on(admin.describe_cluster()).unwrap();
    assert!(
        after.controller_epoch > before.controller_epoch,
        "a new controller epoch"
    );
    assert_ne!(after.controller_id, before.controller_id);
    // The new controller says so on its metrics endpoint (Kafka's ActiveControllerCount).
    let now_active = cluster.active_controller(&rt, &admin);
    let scrape = |name: &str| {
        let addr = cluster.controller_metrics[now_active].as_ref().unwrap();
        common::http_get(addr, "/metrics").and_then(|m| common::metric(&m, name))
    };
    wait_for(
        "the new controller's gauges",
        Duration::from_secs(10),
        || {
            (scrape("sluice_controller_active") == Some(1.0)
                && scrape("sluice_controller_epoch") == Some(after.controller_epoch as f64)
                && scrape("sluice_offline_partitions") == Some(0.0))
            .then_some(())
        },
    );
    // A creation reported done survived; every topic that exists is whole, and each of
    // its partitions gets a leader.
    let outcomes: Vec<(String, bool)> = rt.block_on(creations).unwrap();
    let topics = rt.block_on(admin.list_topics()).unwrap();
    for (name, created) in &outcomes {
        assert!(
            !created || topics.contains(name),
            "{name} was acknowledged, then lost"
        );
        if topics.contains(name) {
            wait_for(
                &format!("{name} fully led"),
                Duration::from_secs(30),
                || {
                    rt.block_on(admin.describe_topic(name)).ok().filter(|d| {
                        d.partitions.len() == 4
                            && d.partitions
                                .iter()
                                .all(|p| p.leader.is_some() && p.replicas.len() == 3)
                    })
                },
            );
        }
    }
    eprintln!(
        "{} of {} creations around the kill were acknowledged; {} topics exist",
        outcomes.iter().filter(|o| o.1).count(),
        outcomes.len(),
        outcomes.iter().filter(|o| topics.contains(&o.0)).count()
    );
    let fo = rt.block_on(admin.describe_topic("fo")).unwrap();
    assert_eq!(fo.partitions[0].replicas.len(), 3, "metadata intact");
    assert!(
        fo.partitions[0].leader.is_some(),
        "no partition without a leader while ISR members live"
    );

    // SIGSTOP the leader past the session timeout; writes continue through a new leader.
    let (old_leader, _, _, _) = state(&rt, &admin, "fo").unwrap();
    let old_leader = old_leader.unwrap();
    signal(
        cluster.brokers[old_leader as usize - 1].1.as_ref().unwrap(),
        libc::SIGSTOP,
    );
    wait_for(
        "a new leader while the old one is stopped",
        Duration::from_secs(30),
        || state(&rt, &admin, "fo").filter(|s| s.0.is_some_and(|l| l != old_leader)),
    );
    acked.extend(produce_numbered(&rt, &config, "fo", 500, 500));
    signal(
        cluster.brokers[old_leader as usize - 1].1.as_ref().unwrap(),
        libc::SIGCONT,
    );
    // It steps down, truncates what only it had, and rejoins the ISR.
    wait_for(
        "the woken broker back in the ISR",
        Duration::from_secs(60),
        || {
            state(&rt, &admin, "fo")
                .filter(|s| s.1.contains(&old_leader) && s.1.len() == 3 && s.2 == s.3)
        },
    );
    acked.extend(produce_numbered(&rt, &config, "fo", 1000, 100));
    converge_stop_and_check(&rt, &admin, &mut cluster, "fo", &acked);
}

/// Three controllers electing through a real etcd: kill -9 of the active one, then
/// SIGSTOP of the next past its lease TTL. A third takes over; the stopped one, woken,
/// refuses to act, and the metadata in etcd is what the third wrote.
#[cfg(feature = "etcd")]
#[test]
fn etcd_controller_failover_and_a_stopped_controller_that_wakes_up() {
    use sluice_proto::error::ErrorCode;
    use sluice_proto::v1::{admin_client::AdminClient, CreateTopicRequest};

    let etcd = common::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with_store(dir.path(), 3, 3, &etcd.store_spec());
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "fo");
    let mut acked = produce_numbered(&rt, &config, "fo", 0, 300);

    // kill -9 of the active controller.
    let first = rt.block_on(admin.describe_cluster()).unwrap();
    let killed = cluster.active_controller(&rt, &admin);
    let killed_at = Instant::now();
    cluster.kill9_controller(killed);
    create_when_possible(&rt, &admin, "after-kill");
    eprintln!(
        "kill -9 of the active etcd controller to the next committed metadata change: {:?} (lease TTL 2 s)",
        killed_at.elapsed()
    );
    let second = rt.block_on(admin.describe_cluster()).unwrap();
    assert!(second.controller_epoch > first.controller_epoch);
    assert_ne!(second.controller_id, first.controller_id);
    cluster.start_controller(killed);

    // SIGSTOP of the new active controller, past its lease TTL.
    let stopped = cluster.active_controller(&rt, &admin);
    signal(
        cluster.controllers[stopped].2.as_ref().unwrap(),
        libc::SIGSTOP,
    );
    let stopped_at = Instant::now();
    let third = wait_for(
        "another controller to take over from the stopped one",
        Duration::from_secs(30),
        || {
            rt.block_on(admin.describe_cluster()).ok().filter(|d| {
                d.controller_id != second.controller_id
                    && d.controller_epoch > second.controller_epoch
            })
        },
    );
    create_when_possible(&rt, &admin, "during-stop");
    eprintln!(
        "SIGSTOP of the active etcd controller to the next committed metadata change: {:?}",
        stopped_at.elapsed()
    );
    acked.extend(produce_numbered(&rt, &config, "fo", 300, 300));

    signal(
        cluster.controllers[stopped].2.as_ref().unwrap(),
        libc::SIGCONT,
    );
    let addr = format!("http://{}", cluster.controllers[stopped].1);
    let mut direct = rt.block_on(AdminClient::connect(addr)).unwrap();
    wait_for(
        "the woken controller to answer NOT_CONTROLLER",
        Duration::from_secs(30),
        || {
            let r = rt
                .block_on(direct.create_topic(CreateTopicRequest {
                    name: "from-the-deposed".into(),
                    partitions: 1,
                    replication_factor: 1,
                    configs: Default::default(),
                    assignments: Vec::new(),
                    validate_only: false,
                }))
                .ok()?
                .into_inner();
            let result = r.result.unwrap_or_default();
            assert_ne!(result.error_code, 0, "a deposed controller created a topic");
            (result.error_code == ErrorCode::NotController.code()).then_some(())
        },
    );
    let now = rt.block_on(admin.describe_cluster()).unwrap();
    assert_eq!(
        (now.controller_id, now.controller_epoch),
        (third.controller_id, third.controller_epoch),
        "the woken controller did not take over"
    );
    assert!(now.brokers.iter().all(|b| b.alive), "nobody was fenced");

    // What is in etcd is the third controller's metadata: a controller elected after
    // killing it reads it back.
    let third_idx = cluster.active_controller(&rt, &admin);
    cluster.kill9_controller(third_idx);
    create_when_possible(&rt, &admin, "after-wake");
    let topics = rt.block_on(admin.list_topics()).unwrap();
    for t in ["fo", "after-kill", "during-stop", "after-wake"] {
        assert!(topics.iter().any(|x| x == t), "{t} missing from {topics:?}");
    }
    assert!(!topics.iter().any(|x| x == "from-the-deposed"));
    acked.extend(produce_numbered(&rt, &config, "fo", 600, 100));
    converge_stop_and_check(&rt, &admin, &mut cluster, "fo", &acked);
}

/// The controller cannot write its store (the directory made immutable, as a full or
/// read-only disk would): the change is refused, the controller ends its term instead
/// of keeping a change it could not store, and once the store is writable again a new
/// term serves exactly what was stored.
#[test]
fn a_failed_metadata_write_is_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, _config, admin) = cluster.client();
    create_replicated(&rt, &admin, "before");
    let epoch = rt
        .block_on(admin.describe_cluster())
        .unwrap()
        .controller_epoch;
    let store = dir.path().join("controller");
    let chattr = |flag: &str| {
        let ok = Command::new("chattr")
            .arg(flag)
            .arg(&store)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chattr {flag} failed (needs root and e2fsprogs)");
    };
    chattr("+i");
    let refused = rt.block_on(admin.create_topic("during", 1, 3, BTreeMap::new()));
    chattr("-i");
    let e = refused.expect_err("a topic the store could not hold was created");
    assert!(e.to_string().contains("metadata store write failed"), "{e}");
    create_when_possible(&rt, &admin, "after");
    let topics = rt.block_on(admin.list_topics()).unwrap();
    assert!(topics.contains(&"before".to_string()) && topics.contains(&"after".to_string()));
    assert!(
        !topics.contains(&"during".to_string()),
        "the refused change was kept: {topics:?}"
    );
    let now = rt.block_on(admin.describe_cluster()).unwrap();
    assert!(now.controller_epoch > epoch, "a new term began");
    assert!(now.brokers.iter().all(|b| b.alive));
    cluster.stop_all();
}

/// Controllers on a three-member etcd cluster keep working when one etcd member dies
/// (kill -9): the store spec names every member, and the client moves to the others.
#[cfg(feature = "etcd")]
#[test]
fn etcd_store_survives_the_loss_of_one_etcd_member() {
    let mut etcd = common::Etcd::start_members(3);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with_store(dir.path(), 3, 2, &etcd.store_spec());
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, "fo");
    let mut acked = produce_numbered(&rt, &config, "fo", 0, 300);
    // The hard case: the member that is etcd's raft leader.
    let leader = etcd.raft_leader().expect("etcd reports a raft leader");
    let killed_at = Instant::now();
    etcd.kill9(leader);
    create_when_possible(&rt, &admin, "after-etcd-member-loss");
    eprintln!(
        "kill -9 of the etcd raft leader to the next committed metadata change: {:?}",
        killed_at.elapsed()
    );
    acked.extend(produce_numbered(&rt, &config, "fo", 300, 300));
    let d = rt.block_on(admin.describe_cluster()).unwrap();
    assert!(d.brokers.iter().all(|b| b.alive), "no broker fenced");
    converge_stop_and_check(&rt, &admin, &mut cluster, "fo", &acked);
}

/// A group commits while only one of three brokers is up, so the coordinator creates
/// `__consumer_offsets` with one replica; once the others join, the controller grows it
/// to three (Kafka would leave it at one for good), and the commits survive a kill -9 of
/// the broker that first held them.
#[test]
fn the_offsets_topic_grows_to_three_replicas_as_brokers_join_and_keeps_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, _config, admin) = cluster.client();
    cluster.kill9(1);
    cluster.kill9(2);
    wait_for("brokers 2 and 3 fenced", Duration::from_secs(30), || {
        rt.block_on(admin.describe_cluster())
            .ok()
            .filter(|c| c.brokers.iter().filter(|b| b.alive).count() == 1)
    });
    let bootstrap = cluster.bootstrap();
    let cli = |args: &[&str], stdin: &str| {
        let out = common::run_cli(&bootstrap, args, stdin);
        assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    cli(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
        "",
    );
    let lines: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    cli(&["produce", "t", "--key-separator", ":"], &lines);
    cli(
        &["group", "reset-offsets", "g", "--topic", "t", "--to-latest"],
        "",
    );
    // Partition -> committed offset, when `group describe` answers with all of them.
    let committed = || -> Option<BTreeMap<u64, u64>> {
        let out = common::run_cli(
            &bootstrap,
            &["group", "describe", "g", "--output", "json"],
            "",
        );
        if !out.status.success() {
            return None;
        }
        let d = common::json(&String::from_utf8(out.stdout).unwrap());
        d["partitions"]
            .as_array()?
            .iter()
            .map(|p| Some((p["partition"].as_u64()?, p["committed_offset"].as_u64()?)))
            .collect()
    };
    let before = committed().expect("the group's commits");
    assert_eq!(before.values().sum::<u64>(), 30, "{before:?}");
    let offsets = rt
        .block_on(admin.describe_topic("__consumer_offsets"))
        .unwrap();
    assert!(
        offsets.partitions.iter().all(|p| p.replicas == [1]),
        "created while one broker was live: {:?}",
        offsets.partitions
    );

    cluster.start_broker(1);
    cluster.start_broker(2);
    wait_for(
        "every __consumer_offsets partition on three in-sync replicas",
        Duration::from_secs(90),
        || {
            let d = rt
                .block_on(admin.describe_topic("__consumer_offsets"))
                .ok()?;
            d.partitions
                .iter()
                .all(|p| p.replicas.len() == 3 && p.isr.len() == 3)
                .then_some(())
        },
    );
    cluster.kill9(0);
    let after = wait_for(
        "the group's commits from a surviving coordinator",
        Duration::from_secs(30),
        committed,
    );
    assert_eq!(after, before);
    cluster.stop_all();
}
