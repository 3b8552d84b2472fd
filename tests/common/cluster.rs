//! A multi-process cluster for the fault tests: `sluice controller`s (embedded or etcd
//! store) and `sluice broker`s started as separate processes, optionally inside a
//! network namespace, plus the checks those tests share (partition state, a broker's
//! copy of a partition read from its files, numbered acks=all production, convergence).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::batch::Batches;

use super::{free_port, wait_for, BIN};

/// Every test broker's `--replica-lag-time-max-ms`: a follower this far behind leaves
/// the ISR.
pub const REPLICA_LAG_TIME_MAX: Duration = Duration::from_secs(3);

pub struct Cluster {
    pub dir: PathBuf,
    /// (id, address, process); all share one store.
    pub controllers: Vec<(u32, String, Option<Child>)>,
    /// Each controller's Prometheus endpoint (loopback clusters only).
    pub controller_metrics: Vec<Option<String>>,
    pub store: String,
    pub controller_addr: String,
    pub brokers: Vec<(String, Option<Child>)>,
    /// Per broker: a command prefix to start it with (empty: none).
    pub broker_prefix: Vec<Vec<String>>,
    /// Per broker: extra arguments.
    pub broker_args: Vec<Vec<String>>,
    /// Extra arguments for every controller (after the defaults, so they win).
    pub controller_args: Vec<String>,
}

impl Cluster {
    pub fn start(dir: &Path, brokers: usize) -> Cluster {
        Cluster::start_with(dir, brokers, 1)
    }

    /// `controllers` controllers sharing an embedded store in `dir`.
    pub fn start_with(dir: &Path, brokers: usize, controllers: usize) -> Cluster {
        let store = format!("embedded:{}", dir.join("controller").display());
        Cluster::start_with_store(dir, brokers, controllers, &store)
    }

    pub fn start_with_store(
        dir: &Path,
        brokers: usize,
        controllers: usize,
        store: &str,
    ) -> Cluster {
        let local = || format!("127.0.0.1:{}", free_port());
        let controllers = (0..controllers).map(|_| local()).collect();
        let brokers = (0..brokers)
            .map(|_| (local(), Vec::new(), Vec::new()))
            .collect();
        Cluster::start_custom(dir, controllers, brokers, store)
    }

    /// One embedded-store controller started with `controller_args` (e.g. a longer
    /// `--session-timeout-ms`), and `brokers` brokers.
    pub fn start_with_controller_args(
        dir: &Path,
        brokers: usize,
        controller_args: &[&str],
    ) -> Cluster {
        let local = || format!("127.0.0.1:{}", free_port());
        let store = format!("embedded:{}", dir.join("controller").display());
        let brokers = (0..brokers)
            .map(|_| (local(), Vec::new(), Vec::new()))
            .collect();
        let args = controller_args.iter().map(|a| a.to_string()).collect();
        Cluster::launch(dir, vec![local()], brokers, &store, args)
    }

    /// Controllers at `controllers` (ids 100, 101, …) sharing `store`, and brokers 1, 2, …
    /// as (address, command prefix such as `ip netns exec NS`, extra arguments).
    pub fn start_custom(
        dir: &Path,
        controllers: Vec<String>,
        brokers: Vec<(String, Vec<String>, Vec<String>)>,
        store: &str,
    ) -> Cluster {
        Cluster::launch(dir, controllers, brokers, store, Vec::new())
    }

    fn launch(
        dir: &Path,
        controllers: Vec<String>,
        brokers: Vec<(String, Vec<String>, Vec<String>)>,
        store: &str,
        controller_args: Vec<String>,
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
            controller_args,
        };
        for i in 0..c.controllers.len() {
            c.start_controller(i);
        }
        for i in 0..c.brokers.len() {
            c.start_broker(i);
        }
        c
    }

    pub fn start_broker(&mut self, i: usize) {
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
            .args([
                "--replica-lag-time-max-ms",
                &REPLICA_LAG_TIME_MAX.as_millis().to_string(),
            ])
            .arg("--data-dir")
            .arg(self.dir.join(format!("broker-{}", i + 1)))
            .args(&self.broker_args[i]);
        self.brokers[i].1 = Some(spawn_quiet(command));
    }

    pub fn start_controller(&mut self, i: usize) {
        let (id, addr, _) = &self.controllers[i];
        let mut command = Command::new(BIN);
        command
            .args(["controller", "--id", &id.to_string(), "--listen", addr])
            .args(["--store", &self.store]);
        // Defaults, unless `controller_args` sets them (clap takes a flag once).
        for (flag, value) in [("--session-timeout-ms", "2000"), ("--lease-ttl-ms", "2000")] {
            if !self.controller_args.iter().any(|a| a == flag) {
                command.args([flag, value]);
            }
        }
        command.args(&self.controller_args);
        if let Some(m) = &self.controller_metrics[i] {
            command.args(["--metrics", m]);
        }
        self.controllers[i].2 = Some(spawn_quiet(command));
    }

    /// Index (into `controllers`) of the controller the brokers report as active.
    pub fn active_controller(&self, rt: &tokio::runtime::Runtime, admin: &Admin) -> usize {
        let d = rt.block_on(admin.describe_cluster()).unwrap();
        self.controllers
            .iter()
            .position(|c| c.0 as i32 == d.controller_id)
            .expect("the active controller is one of ours")
    }

    pub fn kill9_controller(&mut self, i: usize) {
        if let Some(mut c) = self.controllers[i].2.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.brokers[i].1.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A runtime and clients for this cluster, once every broker is alive.
    pub fn client(&self) -> (tokio::runtime::Runtime, ClientConfig, Admin) {
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

    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.0.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn stop_all(&mut self) {
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
pub fn spawn_quiet(mut command: Command) -> Child {
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
pub type PartitionView = (Option<u32>, Vec<u32>, Option<u64>, Option<u64>);

/// (leader, isr, high watermark, log end) of partition 0, from the controller's view.
pub fn state(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str) -> Option<PartitionView> {
    let d = rt.block_on(admin.describe_topic(topic)).ok()?;
    let p = d.partitions.into_iter().next()?;
    Some((p.leader, p.isr, p.high_watermark, p.log_end_offset))
}

/// (offset, value) of every record in one broker's copy of `topic-0`.
pub fn replica_records(dir: &Path, broker: usize, topic: &str) -> Vec<(u64, String)> {
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
pub fn converge_stop_and_check(
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
pub fn create_replicated(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str) {
    let mut configs = BTreeMap::new();
    configs.insert("min.insync.replicas".to_string(), "2".to_string());
    rt.block_on(admin.create_topic(topic, 1, 3, configs))
        .unwrap();
}

/// Creates `topic` (one partition, three replicas) as soon as a controller commits
/// it: the next metadata change after a controller failover.
pub fn create_when_possible(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str) {
    wait_for(
        &format!("a controller to create {topic}"),
        Duration::from_secs(30),
        || {
            rt.block_on(admin.create_topic(topic, 1, 3, BTreeMap::new()))
                .ok()
        },
    );
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

pub fn produce_numbered(
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

// ---------------------------------------------------------------------------------
// Helpers for the acks=all and fault-campaign tests (tests/acks_all.rs, tests/faults.rs):
// several partitions, long-running producers that remember what was acknowledged, and
// an exactly-once check against a consumer's or a replica's copy of a partition.

/// Every partition of `topic` as the controller (and each leader) reports it.
pub fn partitions(
    rt: &tokio::runtime::Runtime,
    admin: &Admin,
    topic: &str,
) -> Option<Vec<sluice_client::PartitionDescription>> {
    rt.block_on(admin.describe_topic(topic))
        .ok()
        .map(|d| d.partitions)
}

/// Every partition of `topic` led, with all `replicas` in its ISR and HW == LEO.
pub fn all_in_sync(
    rt: &tokio::runtime::Runtime,
    admin: &Admin,
    topic: &str,
    replicas: usize,
) -> Option<Vec<sluice_client::PartitionDescription>> {
    partitions(rt, admin, topic).filter(|ps| {
        !ps.is_empty()
            && ps.iter().all(|p| {
                p.leader.is_some()
                    && p.isr.len() == replicas
                    && p.high_watermark.is_some()
                    && p.high_watermark == p.log_end_offset
            })
    })
}

/// (offset, value) of every record in one broker's copy of `topic`-`partition`, read
/// from its files (stop the broker first).
pub fn replica_partition_records(
    dir: &Path,
    broker: usize,
    topic: &str,
    partition: u32,
) -> Vec<(u64, String)> {
    let pdir = dir
        .join(format!("broker-{broker}"))
        .join(format!("{topic}-{partition}"));
    let mut logs: Vec<PathBuf> = match std::fs::read_dir(&pdir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect(),
        Err(_) => return Vec::new(),
    };
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

/// (offset, value) of `topic`-`partition` from the beginning up to (not including)
/// `end`, read by a consumer; fails the test if that takes longer than `limit`.
pub fn consume_partition(
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    topic: &str,
    partition: u32,
    end: u64,
    limit: Duration,
) -> Vec<(u64, String)> {
    use sluice_client::{Consumer, ConsumerConfig, OffsetReset};
    rt.block_on(async {
        let mut c = Consumer::new(
            config,
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..Default::default()
            },
        );
        c.assign(vec![sluice_proto::TopicPartition::new(topic, partition)]);
        let deadline = std::time::Instant::now() + limit;
        let mut out: Vec<(u64, String)> = Vec::new();
        while out.last().map_or(0, |r| r.0 + 1) < end {
            assert!(
                std::time::Instant::now() < deadline,
                "a consumer of {topic}-{partition} read {} records, up to offset {:?}, not up to {end} within {limit:?}",
                out.len(),
                out.last().map(|r| r.0)
            );
            if let Ok(records) = c.poll(Duration::from_millis(200)).await {
                for r in records {
                    let v = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                    out.push((r.offset, v.unwrap_or_default()));
                }
            }
        }
        out.retain(|r| r.0 < end);
        out
    })
}

/// What one [`Load`] producer was told: acknowledged records by (partition, offset),
/// and the records that failed with the error the client surfaced.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub acked: BTreeMap<(u32, u64), String>,
    pub failed: Vec<(String, String)>,
}

/// A background acks=all (idempotent) producer writing `{prefix}{n}` for n = 0, 1, …,
/// record n to partition `n % partitions`, with at most `window` records unsettled and,
/// when paced, at most `per_sec` records a second.
pub struct Load {
    pub prefix: String,
    pub outcomes: std::sync::Arc<std::sync::Mutex<Outcomes>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(
        rt: &tokio::runtime::Runtime,
        config: &ClientConfig,
        topic: &str,
        prefix: &str,
        partitions: u32,
        window: usize,
    ) -> Load {
        Load::start_paced(rt, config, topic, prefix, partitions, window, None)
    }

    pub fn start_paced(
        rt: &tokio::runtime::Runtime,
        config: &ClientConfig,
        topic: &str,
        prefix: &str,
        partitions: u32,
        window: usize,
        per_sec: Option<u32>,
    ) -> Load {
        use std::sync::atomic::Ordering;
        let outcomes: std::sync::Arc<std::sync::Mutex<Outcomes>> = Default::default();
        let stop: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let task = {
            let (config, outcomes, stop) = (config.clone(), outcomes.clone(), stop.clone());
            let (topic, prefix) = (topic.to_string(), prefix.to_string());
            rt.spawn(async move {
                // A paused leader keeps its TCP connections open: the request timeout is
                // how the client notices and moves on to the new leader.
                let pconfig = ProducerConfig {
                    acks: Acks::All,
                    linger: Duration::from_millis(2),
                    request_timeout: Duration::from_secs(5),
                    delivery_timeout: Duration::from_secs(90),
                    ..Default::default()
                };
                let producer = Producer::new(&config, pconfig).await.unwrap();
                let settle = |value: String,
                              partition: u32,
                              r: Result<sluice_client::RecordMetadata, sluice_client::Error>| {
                    let mut o = outcomes.lock().unwrap();
                    match r {
                        Ok(meta) => {
                            o.acked.insert((partition, meta.offset.unwrap()), value);
                        }
                        Err(e) => o.failed.push((value, format!("{e:?}"))),
                    }
                };
                let mut pending = std::collections::VecDeque::new();
                let mut n = 0u64;
                let began = tokio::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rate) = per_sec {
                        let due = began + Duration::from_secs_f64(n as f64 / f64::from(rate));
                        tokio::time::sleep_until(due).await;
                    }
                    let value = format!("{prefix}{n}");
                    let partition = (n % u64::from(partitions)) as u32;
                    n += 1;
                    let f = producer
                        .send(ProducerRecord {
                            partition: Some(partition),
                            ..ProducerRecord::new(topic.as_str(), None::<String>, value.clone())
                        })
                        .await
                        .unwrap();
                    pending.push_back((value, partition, f));
                    while pending.len() > window {
                        let (value, partition, f) = pending.pop_front().unwrap();
                        settle(value, partition, f.await);
                    }
                }
                for (value, partition, f) in pending {
                    settle(value, partition, f.await);
                }
            })
        };
        Load {
            prefix: prefix.to_string(),
            outcomes,
            stop,
            task,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.outcomes.lock().unwrap().acked.len()
    }

    /// Stops sending, waits until every record sent has settled, and returns the outcomes.
    pub fn finish(self, rt: &tokio::runtime::Runtime) -> Outcomes {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(self.task).unwrap();
        let o = self.outcomes.lock().unwrap().clone();
        o
    }
}

/// Checks one copy of a partition (`records`, from a consumer or a replica's files)
/// against what producers were told: every acknowledged record is at its acknowledged
/// offset and nowhere else; no value appears twice (the producers are idempotent); and
/// each producer's acknowledged records are in the order it sent them. `acked` is a
/// list, not a map, so that one offset acknowledged for two records shows up. Returns
/// every violation found (empty: all good).
pub fn exactly_once_violations(
    what: &str,
    records: &[(u64, String)],
    acked: &[(u64, String)],
    prefixes: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut at: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut by_offset: BTreeMap<u64, &str> = BTreeMap::new();
    for (offset, value) in records {
        at.entry(value.as_str()).or_default().push(*offset);
        if by_offset.insert(*offset, value.as_str()).is_some() {
            problems.push(format!("{what}: offset {offset} appears twice"));
        }
    }
    for (value, offsets) in &at {
        if offsets.len() > 1 {
            problems.push(format!(
                "{what}: {value} appears {} times, at offsets {offsets:?}",
                offsets.len()
            ));
        }
    }
    let mut lost = Vec::new();
    for (offset, value) in acked {
        match at.get(value.as_str()) {
            None => lost.push(format!("{value}@{offset}")),
            Some(offsets) if !offsets.contains(offset) => problems.push(format!(
                "{what}: {value} acknowledged at offset {offset} but stored at {offsets:?}"
            )),
            Some(_) => {}
        }
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{what}: {} acknowledged records missing (first: {:?})",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    for prefix in prefixes {
        let mut mine: Vec<(u64, u64)> = acked
            .iter()
            .filter_map(|(o, v)| Some((v.strip_prefix(prefix)?.parse::<u64>().ok()?, *o)))
            .collect();
        mine.sort();
        if let Some(w) = mine.windows(2).find(|w| w[0].1 >= w[1].1) {
            problems.push(format!(
                "{what}: producer {prefix} out of order: {prefix}{} at offset {} but {prefix}{} at offset {}",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
    }
    problems
}

/// One embedded-store controller and `brokers` brokers, each also serving the Kafka
/// protocol on a loopback port of its own (`--kafka-listen`); the cluster and each
/// broker's Kafka address, in broker order. A restarted broker gets its port back.
pub fn start_with_kafka(dir: &Path, brokers: usize) -> (Cluster, Vec<String>) {
    let local = || format!("127.0.0.1:{}", free_port());
    let kafka: Vec<String> = (0..brokers).map(|_| local()).collect();
    let store = format!("embedded:{}", dir.join("controller").display());
    let specs = kafka
        .iter()
        .map(|k| {
            (
                local(),
                Vec::new(),
                vec!["--kafka-listen".to_string(), k.clone()],
            )
        })
        .collect();
    let cluster = Cluster::start_custom(dir, vec![local()], specs, &store);
    (cluster, kafka)
}

/// While a producer writes to `topic`-0: waits until the high watermark reaches `before`,
/// kills the partition's leader with kill -9, waits until another broker leads and
/// `after` more records are in, restarts the killed broker and waits until it is back in
/// the ISR. Returns the killed broker's id.
pub fn kill9_leader_midstream(
    c: &mut Cluster,
    rt: &tokio::runtime::Runtime,
    admin: &Admin,
    topic: &str,
    before: u64,
    after: u64,
) -> u32 {
    let (leader, at_kill) = wait_for(
        &format!("the producer to write {before} records"),
        Duration::from_secs(30),
        || {
            state(rt, admin, topic)
                .filter(|s| s.0.is_some() && s.2.is_some_and(|h| h >= before))
                .map(|s| (s.0.unwrap(), s.2.unwrap()))
        },
    );
    c.kill9(leader as usize - 1);
    let killed = std::time::Instant::now();
    // Another leader takes over and the producer goes on through it.
    let new_leader = wait_for(
        &format!("a new leader and {after} more records"),
        Duration::from_secs(30),
        || {
            state(rt, admin, topic)
                .filter(|s| {
                    s.0.is_some_and(|l| l != leader) && s.2.is_some_and(|h| h >= at_kill + after)
                })
                .and_then(|s| s.0)
        },
    );
    eprintln!(
        "leader {leader} killed at HW {at_kill}; broker {new_leader} leads, {after} more records in after {:?}",
        killed.elapsed()
    );
    c.start_broker(leader as usize - 1);
    wait_for(
        "the restarted broker back in the ISR",
        Duration::from_secs(30),
        || state(rt, admin, topic).filter(|s| s.1.len() == 3),
    );
    leader
}

/// The checks after a Kafka client's leader-kill run ([`kill9_leader_midstream`]) of
/// `topic`-0: `answer` is the producer's (`sent`, `acked` as [sequence, offset] pairs,
/// `failed`); every record sent was acknowledged and each acknowledged one is in the log
/// once, in order; `stop_consumer` stops the client's own consumer, which read through
/// the failover, and returns what it saw (`errors`, `end`, `records` as [offset, value])
/// and its log: it read the same log, each offset once from 0. Then the replicas
/// converge and hold exactly the acknowledged records.
#[allow(clippy::too_many_arguments)]
pub fn check_leader_kill_run(
    client: &str,
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    admin: &Admin,
    c: &mut Cluster,
    topic: &str,
    answer: &serde_json::Value,
    stop_consumer: impl FnOnce() -> (serde_json::Value, String),
) {
    assert_eq!(
        answer["failed"],
        serde_json::json!([]),
        "{client}: {}",
        answer["failed"]
    );
    let acked: Vec<(u64, String)> = answer["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[1].as_u64().unwrap(), format!("s{}", a[0])))
        .collect();
    assert_eq!(
        acked.len() as u64,
        answer["sent"].as_u64().unwrap(),
        "{client}: every record sent was acknowledged"
    );
    assert!(acked.len() > 4000, "{client}: {} acknowledged", acked.len());
    let end = acked.iter().map(|a| a.0 + 1).max().unwrap();
    let read = consume_partition(rt, config, topic, 0, end, Duration::from_secs(30));
    let problems = exactly_once_violations("a consumer's copy", &read, &acked, &["s"]);
    assert!(problems.is_empty(), "{client}: {problems:#?}");
    let (seen, log) = stop_consumer();
    assert_eq!(seen["errors"], serde_json::json!([]), "{log}");
    assert_eq!(seen["end"], end, "{log}");
    let client_read: Vec<(u64, String)> = seen["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect();
    assert!(
        client_read.iter().enumerate().all(|(i, r)| r.0 == i as u64),
        "{client}'s consumer read each offset once, in order, from 0 (read {})",
        client_read.len()
    );
    assert_eq!(client_read, read, "{client}'s consumer's copy is sluice's");
    let acked_map: BTreeMap<u64, String> = acked.into_iter().collect();
    converge_stop_and_check(rt, admin, c, topic, &acked_map);
}
