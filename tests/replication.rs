//! Replication and failover with separate processes: one `sluice controller` and three
//! `sluice broker`s on loopback. A producer writes numbered records with acks=all
//! (min.insync.replicas=2) while the test kill -9s the partition leader, restarts it,
//! and repeats; afterwards every acknowledged record is at the offset it was
//! acknowledged with, and all replicas hold identical records.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_port, wait_for, BIN};
use sluice_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::batch::Batches;

struct Cluster {
    dir: PathBuf,
    /// (id, address, process); all share one store.
    controllers: Vec<(u32, String, Option<Child>)>,
    /// Each controller's Prometheus endpoint (loopback clusters only).
    controller_metrics: Vec<Option<String>>,
    store: String,
    controller_addr: String,
    brokers: Vec<(String, Option<Child>)>,
    /// Per broker: a command prefix to start it with (empty: none).
    broker_prefix: Vec<Vec<String>>,
    /// Per broker: extra arguments.
    broker_args: Vec<Vec<String>>,
}

impl Cluster {
    fn start(dir: &Path, brokers: usize) -> Cluster {
        Cluster::start_with(dir, brokers, 1)
    }

    /// `controllers` controllers sharing an embedded store in `dir`.
    fn start_with(dir: &Path, brokers: usize, controllers: usize) -> Cluster {
        let store = format!("embedded:{}", dir.join("controller").display());
        Cluster::start_with_store(dir, brokers, controllers, &store)
    }

    fn start_with_store(dir: &Path, brokers: usize, controllers: usize, store: &str) -> Cluster {
        let local = || format!("127.0.0.1:{}", free_port());
        let controllers = (0..controllers).map(|_| local()).collect();
        let brokers = (0..brokers)
            .map(|_| (local(), Vec::new(), Vec::new()))
            .collect();
        Cluster::start_custom(dir, controllers, brokers, store)
    }

    /// Controllers at `controllers` (ids 100, 101, …) sharing `store`, and brokers 1, 2, …
    /// as (address, command prefix such as `ip netns exec NS`, extra arguments).
    fn start_custom(
        dir: &Path,
        controllers: Vec<String>,
        brokers: Vec<(String, Vec<String>, Vec<String>)>,
        store: &str,
    ) -> Cluster {
        let loopback = controllers.iter().all(|a| a.starts_with("127.0.0.1:"));
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            controller_metrics: controllers
                .iter()
                .map(|_| loopback.then(|| format!("127.0.0.1:{}", free_port())))
                .collect(),
            controller_addr: controllers.join(","),
            controllers: controllers
                .into_iter()
                .enumerate()
                .map(|(i, addr)| (100 + i as u32, addr, None))
                .collect(),
            store: store.to_string(),
            broker_prefix: brokers.iter().map(|b| b.1.clone()).collect(),
            broker_args: brokers.iter().map(|b| b.2.clone()).collect(),
            brokers: brokers.into_iter().map(|b| (b.0, None)).collect(),
        };
        for i in 0..c.controllers.len() {
            c.start_controller(i);
        }
        for i in 0..c.brokers.len() {
            c.start_broker(i);
        }
        c
    }

    fn start_broker(&mut self, i: usize) {
        let mut command = match self.broker_prefix[i].split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        command
            .args([
                "broker",
                "--id",
                &(i + 1).to_string(),
                "--listen",
                &self.brokers[i].0,
                "--controller",
                &self.controller_addr,
            ])
            .args(["--replica-lag-time-max-ms", "3000"])
            .arg("--data-dir")
            .arg(self.dir.join(format!("broker-{}", i + 1)))
            .args(&self.broker_args[i]);
        self.brokers[i].1 = Some(spawn_quiet(command));
    }

    fn start_controller(&mut self, i: usize) {
        let (id, addr, _) = &self.controllers[i];
        let mut command = Command::new(BIN);
        command
            .args(["controller", "--id", &id.to_string(), "--listen", addr])
            .args(["--session-timeout-ms", "2000", "--lease-ttl-ms", "2000"])
            .args(["--store", &self.store]);
        if let Some(m) = &self.controller_metrics[i] {
            command.args(["--metrics", m]);
        }
        self.controllers[i].2 = Some(spawn_quiet(command));
    }

    /// Index (into `controllers`) of the controller the brokers report as active.
    fn active_controller(&self, rt: &tokio::runtime::Runtime, admin: &Admin) -> usize {
        let d = rt.block_on(admin.describe_cluster()).unwrap();
        self.controllers
            .iter()
            .position(|c| c.0 as i32 == d.controller_id)
            .expect("the active controller is one of ours")
    }

    fn kill9_controller(&mut self, i: usize) {
        if let Some(mut c) = self.controllers[i].2.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.brokers[i].1.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A runtime and clients for this cluster, once every broker is alive.
    fn client(&self) -> (tokio::runtime::Runtime, ClientConfig, Admin) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = ClientConfig::new(&self.bootstrap());
        let admin = Admin::new(&config);
        let n = self.brokers.len();
        wait_for("every broker alive", Duration::from_secs(60), || {
            rt.block_on(admin.describe_cluster())
                .ok()
                .filter(|c| c.brokers.iter().filter(|b| b.alive).count() == n)
        });
        (rt, config, admin)
    }

    fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.0.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn stop_all(&mut self) {
        for b in &mut self.brokers {
            if let Some(mut c) = b.1.take() {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                c.wait().unwrap();
            }
        }
    }
}

/// Starts a server process with stdout discarded and `RUST_LOG` from `TEST_LOG`
/// (default `warn`).
fn spawn_quiet(mut command: Command) -> Child {
    command
        .env(
            "RUST_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for b in &mut self.brokers {
            if let Some(c) = b.1.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for c in &mut self.controllers {
            if let Some(p) = c.2.as_mut() {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
    }
}

/// (leader, isr, high watermark, log end) of one partition.
type PartitionView = (Option<u32>, Vec<u32>, Option<u64>, Option<u64>);

/// (leader, isr, high watermark, log end) of partition 0, from the controller's view.
fn state(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str) -> Option<PartitionView> {
    let d = rt.block_on(admin.describe_topic(topic)).ok()?;
    let p = d.partitions.into_iter().next()?;
    Some((p.leader, p.isr, p.high_watermark, p.log_end_offset))
}

/// (offset, value) of every record in one broker's copy of `topic-0`.
fn replica_records(dir: &Path, broker: usize, topic: &str) -> Vec<(u64, String)> {
    let pdir = dir
        .join(format!("broker-{broker}"))
        .join(format!("{topic}-0"));
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for l in logs {
        for b in Batches::new(Bytes::from(std::fs::read(l).unwrap())) {
            let b = b.unwrap();
            for r in b.records().unwrap() {
                out.push((
                    b.base_offset() as u64 + r.offset_delta as u64,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
    }
    out
}

/// Waits until every replica of `topic`-0 is in the ISR and caught up, stops the
/// brokers, and checks that the three copies are identical and hold every acknowledged
/// record at its acknowledged offset.
fn converge_stop_and_check(
    rt: &tokio::runtime::Runtime,
    admin: &Admin,
    cluster: &mut Cluster,
    topic: &str,
    acked: &BTreeMap<u64, String>,
) {
    wait_for("replicas to converge", Duration::from_secs(60), || {
        state(rt, admin, topic).filter(|s| s.1.len() == 3 && s.2.is_some() && s.2 == s.3)
    });
    cluster.stop_all();
    let copies: Vec<Vec<(u64, String)>> = (1..=3)
        .map(|b| replica_records(&cluster.dir, b, topic))
        .collect();
    for c in &copies[1..] {
        assert_eq!(c, &copies[0], "replicas hold identical records");
    }
    let stored: BTreeMap<u64, String> = copies[0].iter().cloned().collect();
    for (offset, value) in acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acknowledged offset {offset} lost or changed"
        );
    }
}

/// Creates `topic`: one partition, three replicas, `min.insync.replicas=2`.
fn create_replicated(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str) {
    let mut configs = BTreeMap::new();
    configs.insert("min.insync.replicas".to_string(), "2".to_string());
    rt.block_on(admin.create_topic(topic, 1, 3, configs))
        .unwrap();
}

/// Creates `topic` (one partition, three replicas) as soon as a controller commits
/// it: the next metadata change after a controller failover.
fn create_when_possible(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str) {
    wait_for(
        &format!("a controller to create {topic}"),
        Duration::from_secs(30),
        || {
            rt.block_on(admin.create_topic(topic, 1, 3, BTreeMap::new()))
                .ok()
        },
    );
}

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

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn produce_numbered(
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    topic: &str,
    from: u64,
    n: u64,
) -> BTreeMap<u64, String> {
    rt.block_on(async {
        // A stopped leader keeps its TCP connections open: the request timeout is how a
        // client notices and moves on to the new leader.
        let pconfig = ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(1),
            request_timeout: Duration::from_secs(3),
            delivery_timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let producer = Producer::new(config, pconfig).await.unwrap();
        let mut futures = Vec::new();
        for i in from..from + n {
            let value = format!("s{i}");
            futures.push((
                value.clone(),
                producer
                    .send(ProducerRecord {
                        partition: Some(0),
                        ..ProducerRecord::new(topic, None::<String>, value)
                    })
                    .await
                    .unwrap(),
            ));
        }
        let mut acked = BTreeMap::new();
        for (value, f) in futures {
            let meta = f
                .await
                .expect("acks=all write with two of three replicas alive");
            acked.insert(meta.offset.unwrap(), value);
        }
        acked
    })
}

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
