//! Consumer-group costs on a real three-broker cluster, each figure printed on one
//! labelled line with its durability settings beside it.
//!
//! Starts `sluice dev --brokers 3` (the release binary: first argument, else
//! `SLUICE_BIN`, else `target/release/sluice`) on loopback ports in a temp dir, and stops
//! it (SIGTERM, then SIGKILL after 20 s) and every member process it started, also when
//! a step panics (the guards' `Drop`s run while unwinding).
//!
//! 1. Commit throughput at the coordinator. One member per group (a `Consumer`
//!    subscribed to the 12-partition topic, so it owns all 12) gives its member id and
//!    epoch; the loop then calls `Groups.CommitOffsets` directly with 12 partitions'
//!    offsets, advanced every call (the client's `commit` skips unchanged offsets, so
//!    it cannot commit in a tight loop without consuming). 1 group committing
//!    synchronously, then 16 groups at once. Baseline in the same run, alternating with
//!    it: `Broker.Produce` of one single-record batch per request, acks=all, to a topic
//!    with the partition count and replication factor of `__consumer_offsets`, task i
//!    writing the partition group i maps to, so both sides contend for the same
//!    partitions. Ratio: commits/s ÷ produces/s.
//! 2. Join rebalance: three in-process members stable, a fourth subscribes; the time
//!    until `Admin::describe_group` says "stable" with 4 members owning 12 partitions.
//!    A fresh group per repeat; default session timeout (heartbeat interval 5 s) and
//!    1000 ms (interval 333 ms). Repeat i of n starts the fourth (i-1)/n of a heartbeat
//!    interval after the three were stable, so the repeats cover the heartbeat phase.
//! 3. Failover: a producer writes ~500 records/s (acks=all) round-robin to the 12
//!    partitions; three `sluice consume --group` processes print `%p %o %T`; one is
//!    killed with SIGKILL; the time until a survivor prints a record of a partition the
//!    killed member owned (its last `owns [..]` line on stderr). Lines are timestamped
//!    as this program reads them from the members' pipes.
//!
//! Run: `scripts/group-bench.sh`. Env: `SLUICE_BENCH_SECS` (per throughput figure,
//! default 4), `SLUICE_BENCH_ROUNDS` (commit/produce alternations, default 2),
//! `SLUICE_BENCH_JOIN_REPEATS` (3), `SLUICE_BENCH_FAILOVER_REPEATS` (3, with 1 s),
//! `SLUICE_BENCH_SKIP` (comma list of commit, join, failover, failover-default).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use sluice_broker::server::{partition_for, OFFSETS_TOPIC};
use sluice_client::{
    Acks, Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, GroupOptions, Producer,
    ProducerConfig, ProducerRecord, Subscription,
};
use sluice_proto::v1::{self, groups_client::GroupsClient};
use sluice_proto::{BatchBuilder, Compression};
use tokio::runtime::Runtime;

/// The topic members subscribe to.
const TOPIC: &str = "events";
const PARTITIONS: u32 = 12;
/// Groups committing at once in the concurrent figure.
const CONCURRENT: usize = 16;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn skipped(step: &str) -> bool {
    std::env::var("SLUICE_BENCH_SKIP").is_ok_and(|s| s.split(',').any(|x| x.trim() == step))
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Polls `f` every 10 ms until it returns `Some`; `None` after `limit`.
fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
fn stop_child(c: &mut Child, grace: Duration) {
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    if poll_until(grace, || c.try_wait().ok().flatten()).is_none() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The `sluice dev --brokers 3` this program runs; stopped on drop.
struct Dev {
    child: Child,
    brokers: Vec<String>,
}

impl Dev {
    fn start(bin: &Path, dir: &Path) -> Dev {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(bin)
            .args(["dev", "--brokers", "3", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut dev = Dev {
            child,
            brokers: Vec::new(),
        };
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("sluice dev reports ready within 60 s");
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() == 3 && words[0] == "broker" {
                dev.brokers.push(words[2].to_string());
            }
            if line.starts_with("ready") {
                return dev;
            }
        }
    }

    fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(20));
    }
}

/// What `__consumer_offsets` is made of, for the durability column.
struct Durability {
    partitions: u32,
    replication_factor: usize,
    min_insync: String,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[acks=all, {OFFSETS_TOPIC} RF={} min.insync.replicas={} partitions={}, fsync=broker default (flush.messages/flush.ms unset: no fsync before the ack)]",
            self.replication_factor, self.min_insync, self.partitions
        )
    }
}

/// A member whose identity the commit loop borrows; its heartbeat task keeps it alive.
struct Committer {
    group: String,
    member_id: String,
    epoch: i32,
    /// The coordinator's address.
    coordinator: String,
    _consumer: Consumer,
}

async fn join_alone(config: &ClientConfig, group: String) -> (String, Consumer) {
    let mut c = Consumer::new(config, ConsumerConfig::default());
    c.subscribe(
        GroupOptions {
            auto_commit_interval: None,
            ..GroupOptions::new(group.clone())
        },
        Subscription::Topics(vec![TOPIC.into()]),
    )
    .expect("subscribe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while c.assignment().len() != PARTITIONS as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group}: a lone member owns every partition within 60 s"
        );
        let _ = c.poll(Duration::from_millis(50)).await;
    }
    (group, c)
}

async fn find_coordinator(cluster: &Cluster, any: &str, group: &str) -> String {
    let mut client = GroupsClient::new(cluster.channel(any).unwrap());
    for _ in 0..300 {
        let r = client
            .find_coordinator(v1::FindCoordinatorRequest {
                group_id: group.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.error_code == 0 {
            return r.addr;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no coordinator for {group}");
}

/// `CONCURRENT` groups of one member each, every member owning the 12 partitions.
async fn committers(config: &ClientConfig, cluster: &Cluster, any: &str) -> Vec<Committer> {
    let joins: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let config = config.clone();
            tokio::spawn(async move { join_alone(&config, format!("commit-bench-{i}")).await })
        })
        .collect();
    let mut out = Vec::new();
    for j in joins {
        let (group, consumer) = j.await.unwrap();
        let (member_id, epoch) = consumer.member().expect("joined");
        let coordinator = find_coordinator(cluster, any, &group).await;
        out.push(Committer {
            group,
            member_id,
            epoch,
            coordinator,
            _consumer: consumer,
        });
    }
    out
}

/// Ops done, wall time, latencies (µs) of a timed loop.
struct Run {
    ops: u64,
    took: Duration,
    latency: Histogram<u64>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.took.as_secs_f64()
    }

    fn describe(&self) -> String {
        format!(
            "{:.0}/s ({} in {:.2} s), latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            self.per_sec(),
            self.ops,
            self.took.as_secs_f64(),
            self.latency.value_at_quantile(0.5) as f64 / 1e3,
            self.latency.value_at_quantile(0.99) as f64 / 1e3,
            self.latency.max() as f64 / 1e3
        )
    }
}

/// Runs `op` in `lanes` concurrent loops, each calling it one at a time: a warm-up
/// second, then `secs` measured.
async fn timed<F, Fut>(lanes: usize, secs: f64, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let warm_until = tokio::time::Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut n = 0u64;
                let mut i = 0u64;
                loop {
                    let start = tokio::time::Instant::now();
                    if start >= end {
                        break;
                    }
                    op(lane, i).await;
                    i += 1;
                    if start >= warm_until {
                        n += 1;
                        h.record(start.elapsed().as_micros() as u64).unwrap();
                    }
                }
                (n, h)
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut ops = 0;
    for t in tasks {
        let (n, h) = t.await.unwrap();
        ops += n;
        latency.add(h).unwrap();
    }
    Run {
        ops,
        // Ops that began before `end` finish after it; they are counted, so the wall
        // time ends when the last of them does.
        took: tokio::time::Instant::now() - warm_until,
        latency,
    }
}

/// Requests go over the client library's channels (one HTTP/2 connection per broker,
/// the library's settings), so both sides pay what a client would.
async fn commit_run(
    committers: Arc<Vec<Committer>>,
    cluster: Cluster,
    lanes: usize,
    secs: f64,
) -> Run {
    timed(lanes, secs, move |lane, i| {
        let c = &committers[lane];
        let req = v1::CommitOffsetsRequest {
            group_id: c.group.clone(),
            member_id: c.member_id.clone(),
            member_epoch: c.epoch,
            partitions: (0..PARTITIONS)
                .map(|p| v1::OffsetCommitPartition {
                    topic: TOPIC.into(),
                    partition: p,
                    offset: i as i64 + 1,
                    metadata: String::new(),
                    leader_epoch: None,
                })
                .collect(),
        };
        let mut client = GroupsClient::new(cluster.channel(&c.coordinator).unwrap());
        async move {
            let r = client.commit_offsets(req).await.unwrap().into_inner();
            assert_eq!(r.error_code, 0, "commit refused: {}", r.error_message);
        }
    })
    .await
}

/// `targets`: (partition, its leader's address) per lane.
async fn produce_run(
    targets: Arc<Vec<(u32, String)>>,
    cluster: Cluster,
    topic: String,
    lanes: usize,
    secs: f64,
) -> Run {
    let value = vec![b'x'; 100];
    timed(lanes, secs, move |lane, _| {
        let (partition, addr) = &targets[lane];
        let mut b = BatchBuilder::new(Compression::None);
        b.append(wall_ms(), None, Some(&value), &[]);
        let req = v1::ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            partitions: vec![v1::ProducePartition {
                topic: topic.clone(),
                partition: *partition,
                records: b.build().unwrap().into_bytes(),
                topic_id: String::new(),
            }],
        };
        let mut client = cluster.broker_client(addr).unwrap();
        async move {
            let r = client.produce(req).await.unwrap().into_inner();
            let p = &r.partitions[0];
            assert_eq!(p.error_code, 0, "produce refused: {}", p.error_message);
        }
    })
    .await
}

/// Figure 1: coordinator commits against acks=all single-record produces.
fn commits(rt: &Runtime, dev: &Dev, admin: &Admin, config: &ClientConfig) {
    let secs: f64 = env_or("SLUICE_BENCH_SECS", 4.0);
    let rounds: usize = env_or("SLUICE_BENCH_ROUNDS", 2);
    let cluster = Cluster::new(config);
    let committers = Arc::new(rt.block_on(committers(config, &cluster, &dev.brokers[0])));
    let offsets = rt.block_on(admin.describe_topic(OFFSETS_TOPIC)).unwrap();
    let d = Durability {
        partitions: offsets.partitions.len() as u32,
        replication_factor: offsets.partitions[0].replicas.len(),
        min_insync: offsets
            .configs
            .get("min.insync.replicas")
            .cloned()
            .unwrap_or_else(|| "broker default".into()),
    };
    let baseline = "commit-baseline";
    rt.block_on(admin.create_topic(
        baseline,
        d.partitions,
        d.replication_factor as u32,
        BTreeMap::new(),
    ))
    .unwrap();
    let described = rt.block_on(admin.describe_cluster()).unwrap();
    let addr_of: HashMap<u32, String> = described
        .brokers
        .iter()
        .map(|b| (b.id, b.addr.clone()))
        .collect();
    let leaders = poll_until(Duration::from_secs(30), || {
        let t = rt.block_on(admin.describe_topic(baseline)).ok()?;
        t.partitions
            .iter()
            .map(|p| Some((p.partition, p.leader?)))
            .collect::<Option<HashMap<u32, u32>>>()
            .filter(|m| m.len() == d.partitions as usize)
    })
    .expect("baseline topic led");
    let targets: Arc<Vec<(u32, String)>> = Arc::new(
        committers
            .iter()
            .map(|c| {
                let p = partition_for(&c.group, d.partitions);
                (p, addr_of[&leaders[&p]].clone())
            })
            .collect(),
    );
    let coordinators: BTreeSet<u32> = targets.iter().map(|t| t.0).collect();
    println!(
        "commit setup: {CONCURRENT} groups map to {} distinct {OFFSETS_TOPIC} partitions; baseline topic {baseline} (RF={}, min.insync.replicas=broker default) lane i writes the partition group i maps to; produce = 1 record of 100 B per request, commit = 12 offsets per request",
        coordinators.len(),
        d.replication_factor
    );
    for round in 1..=rounds {
        for lanes in [1, CONCURRENT] {
            let c = rt.block_on(commit_run(committers.clone(), cluster.clone(), lanes, secs));
            let p = rt.block_on(produce_run(
                targets.clone(),
                cluster.clone(),
                baseline.into(),
                lanes,
                secs,
            ));
            println!(
                "commit round {round} in-flight {lanes:>2}: commits {} {d}",
                c.describe()
            );
            println!(
                "commit round {round} in-flight {lanes:>2}: produces {} [acks=all, {baseline} RF={}, fsync=broker default]",
                p.describe(),
                d.replication_factor
            );
            println!(
                "commit round {round} in-flight {lanes:>2}: ratio commits/s / produces/s = {:.2}",
                c.per_sec() / p.per_sec()
            );
        }
    }
    drop(committers);
}

/// An in-process group member polling until told to stop, then closing (leaving).
struct InProc {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_member(
    rt: &Runtime,
    config: &ClientConfig,
    group: &str,
    session: Option<Duration>,
) -> InProc {
    let stop = Arc::new(AtomicBool::new(false));
    let (config, group, flag) = (config.clone(), group.to_string(), stop.clone());
    let task = rt.spawn(async move {
        let mut c = Consumer::new(&config, ConsumerConfig::default());
        c.subscribe(
            GroupOptions {
                session_timeout: session,
                ..GroupOptions::new(group)
            },
            Subscription::Topics(vec![TOPIC.into()]),
        )
        .expect("subscribe");
        while !flag.load(Ordering::Relaxed) {
            let _ = c.poll(Duration::from_millis(100)).await;
        }
        let _ = c.close().await;
    });
    InProc { stop, task }
}

/// Waits until `group` is stable with `n` members owning the 12 partitions.
fn wait_stable(
    rt: &Runtime,
    admin: &Admin,
    group: &str,
    n: usize,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    poll_until(limit, || {
        let d = rt.block_on(admin.describe_group(group)).ok()?;
        let owned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
        (d.state == "stable" && d.members.len() == n && owned == PARTITIONS as usize).then_some(())
    })
    .map(|()| start.elapsed())
}

/// Figure 2: a fourth member joining a stable group of three.
fn joins(rt: &Runtime, admin: &Admin, config: &ClientConfig) {
    let repeats: usize = env_or("SLUICE_BENCH_JOIN_REPEATS", 3);
    for (label, session) in [
        ("default session timeout (45 s, heartbeat 5 s)", None),
        (
            "session timeout 1000 ms (heartbeat 333 ms)",
            Some(Duration::from_millis(1000)),
        ),
    ] {
        let mut took = Vec::new();
        for i in 1..=repeats {
            let group = format!("join-{}-{i}", session.map_or(0, |s| s.as_millis()));
            let mut members: Vec<InProc> = (0..3)
                .map(|_| spawn_member(rt, config, &group, session))
                .collect();
            let three = wait_stable(rt, admin, &group, 3, Duration::from_secs(90));
            let Some(three) = three else {
                println!("join {label} #{i}: FAILED: 3 members never stable within 90 s");
                stop_members(rt, members);
                continue;
            };
            // The others' heartbeats are in phase with the moment the group became
            // stable, and how long the join takes depends on where in their interval it
            // lands: repeat i joins (i-1)/repeats of an interval later.
            let interval = session.map_or(Duration::from_secs(5), |s| s / 3);
            let phase = interval.mul_f64((i - 1) as f64 / repeats as f64);
            std::thread::sleep(phase);
            let start = Instant::now();
            members.push(spawn_member(rt, config, &group, session));
            match wait_stable(rt, admin, &group, 4, Duration::from_secs(90)) {
                Some(_) => {
                    let t = start.elapsed();
                    println!(
                        "join {label} #{i}: 4th member stable in {:.0} ms (joined {:.0} ms after 3 fresh members were stable, which took {:.0} ms)",
                        ms(t),
                        ms(phase),
                        ms(three)
                    );
                    took.push(ms(t));
                }
                None => println!("join {label} #{i}: FAILED: 4 members never stable within 90 s"),
            }
            stop_members(rt, members);
        }
        if !took.is_empty() {
            println!(
                "join {label}: median {:.0} ms of {:?} ms [group state written acks=all to {OFFSETS_TOPIC}]",
                median(&took),
                took.iter().map(|t| t.round() as i64).collect::<Vec<_>>()
            );
        }
    }
}

fn stop_members(rt: &Runtime, members: Vec<InProc>) {
    for m in &members {
        m.stop.store(true, Ordering::Relaxed);
    }
    for m in members {
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), m.task).await });
    }
}

/// A line a member process wrote, with when this program read it.
enum Line {
    /// stdout `%p %o %T`.
    Record {
        at: Instant,
        partition: u32,
        timestamp: i64,
    },
    /// stderr `group G member M epoch E owns [..]`.
    Owns {
        at: Instant,
        partitions: BTreeSet<u32>,
    },
    Other(String),
}

/// A `sluice consume --group` process; stopped (SIGTERM) on drop.
struct Member {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Member {
    fn start(bin: &Path, bootstrap: &str, group: &str, session_ms: Option<u64>) -> Member {
        let mut cmd = Command::new(bin);
        cmd.args([
            "consume",
            TOPIC,
            "--group",
            group,
            "-f",
            "%p %o %T\\n",
            "--bootstrap",
            bootstrap,
        ]);
        if let Some(s) = session_ms {
            cmd.args(["--session-timeout-ms", &s.to_string()]);
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice consume");
        let lines: Arc<Mutex<Vec<Line>>> = Default::default();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let at = Instant::now();
                let mut w = line.split(' ');
                let parsed: Option<(u32, i64)> =
                    (|| Some((w.next()?.parse().ok()?, w.nth(1)?.parse().ok()?)))();
                l.lock().unwrap().push(match parsed {
                    Some((partition, timestamp)) => Line::Record {
                        at,
                        partition,
                        timestamp,
                    },
                    None => Line::Other(line),
                });
            }
        });
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let at = Instant::now();
                let owned = line
                    .split_once(" owns [")
                    .and_then(|(_, rest)| rest.strip_suffix(']'))
                    .map(|list| {
                        list.split(',')
                            .filter_map(|tp| tp.rsplit_once('-')?.1.parse().ok())
                            .collect()
                    });
                l.lock().unwrap().push(match owned {
                    Some(partitions) => Line::Owns { at, partitions },
                    None => Line::Other(line),
                });
            }
        });
        Member {
            child: Some(child),
            lines,
        }
    }

    /// The partitions of its last ownership line.
    fn owns(&self) -> Option<BTreeSet<u32>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| match l {
                Line::Owns { partitions, .. } => Some(partitions.clone()),
                _ => None,
            })
    }

    fn printed_since(&self, t: Instant) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| matches!(l, Line::Record { at, .. } if *at >= t))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn others(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| match l {
                Line::Other(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }
}

/// A paced acks=all producer in the background.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

fn start_load(rt: &Runtime, config: &ClientConfig, per_sec: u32) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (config, flag, ok, bad) = (config.clone(), stop.clone(), acked.clone(), failed.clone());
    let task = rt.spawn(async move {
        let producer = Producer::new(
            &config,
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let began = tokio::time::Instant::now();
        let mut n = 0u64;
        while !flag.load(Ordering::Relaxed) {
            tokio::time::sleep_until(
                began + Duration::from_secs_f64(n as f64 / f64::from(per_sec)),
            )
            .await;
            let f = producer
                .send(ProducerRecord {
                    partition: Some((n % u64::from(PARTITIONS)) as u32),
                    ..ProducerRecord::new(TOPIC, None::<String>, format!("r{n}"))
                })
                .await
                .unwrap();
            let (ok, bad) = (ok.clone(), bad.clone());
            tokio::spawn(async move {
                match f.await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => bad.fetch_add(1, Ordering::Relaxed),
                };
            });
            n += 1;
        }
    });
    Load {
        stop,
        acked,
        failed,
        task,
    }
}

/// One failover: three members stable and printing, one killed; what the survivors do.
fn failover_once(
    rt: &Runtime,
    admin: &Admin,
    bin: &Path,
    bootstrap: &str,
    label: &str,
    session_ms: Option<u64>,
    i: usize,
) -> Option<f64> {
    let group = format!("failover-{}-{i}", session_ms.unwrap_or(0));
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::start(bin, bootstrap, &group, session_ms))
        .collect();
    let ready = Instant::now();
    let stable = wait_stable(rt, admin, &group, 3, Duration::from_secs(120)).is_some()
        && poll_until(Duration::from_secs(60), || {
            let owned: Vec<BTreeSet<u32>> =
                members.iter().map(Member::owns).collect::<Option<_>>()?;
            let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
            let printing = members.iter().all(|m| m.printed_since(ready));
            (all.len() == PARTITIONS as usize && owned.iter().all(|o| !o.is_empty()) && printing)
                .then_some(())
        })
        .is_some();
    if !stable {
        println!("failover {label} #{i}: FAILED: 3 members never stable and printing");
        return None;
    }
    // The killed member's partitions restart at its last commit, as in production; with
    // nothing committed they would start at the end and skip what came meanwhile.
    let committed = poll_until(Duration::from_secs(30), || {
        let d = rt.block_on(admin.describe_group(&group)).ok()?;
        (d.partitions.len() == PARTITIONS as usize
            && d.partitions.iter().all(|p| p.committed_offset.is_some()))
        .then_some(())
    });
    if committed.is_none() {
        println!("failover {label} #{i}: FAILED: offsets of every partition never committed");
        return None;
    }
    let victim = members[0].owns().unwrap();
    let kill_wall = wall_ms();
    let killed = Instant::now();
    members[0].kill9();
    let limit = Duration::from_millis(session_ms.unwrap_or(45_000)) + Duration::from_secs(60);
    let first = poll_until(limit, || {
        members[1..].iter().find_map(|m| {
            m.lines.lock().unwrap().iter().find_map(|l| match l {
                Line::Record {
                    at,
                    partition,
                    timestamp,
                } if *at >= killed && victim.contains(partition) => {
                    Some((*at, *partition, *timestamp))
                }
                _ => None,
            })
        })
    });
    let assigned = members[1..]
        .iter()
        .filter_map(|m| {
            m.lines.lock().unwrap().iter().find_map(|l| match l {
                Line::Owns { at, partitions }
                    if *at >= killed && !partitions.is_disjoint(&victim) =>
                {
                    Some(*at)
                }
                _ => None,
            })
        })
        .min();
    let result = match first {
        Some((at, partition, timestamp)) => {
            let t = ms(at - killed);
            println!(
                "failover {label} #{i}: first record of a killed member's partition printed {t:.0} ms after kill -9 (partition {partition}; survivor's ownership line at {} ms; record produced {} ms relative to the kill; killed member owned {victim:?})",
                assigned.map_or("?".into(), |a| format!("{:.0}", ms(a - killed))),
                timestamp - kill_wall
            );
            Some(t)
        }
        None => {
            println!("failover {label} #{i}: FAILED: no survivor printed a record of {victim:?} within {limit:?}");
            None
        }
    };
    for m in &members {
        for l in m.others() {
            println!("  member stderr: {l}");
        }
    }
    result
}

/// Figure 3: kill -9 of one of three printing members under a steady producer.
fn failovers(rt: &Runtime, admin: &Admin, config: &ClientConfig, bin: &Path, bootstrap: &str) {
    let repeats: usize = env_or("SLUICE_BENCH_FAILOVER_REPEATS", 3);
    let load = start_load(rt, config, 500);
    let mut cases = Vec::new();
    if !skipped("failover-default") {
        cases.push(("default session timeout (45 s)", None, 1));
    }
    cases.push(("session timeout 1000 ms", Some(1000), repeats));
    let started = Instant::now();
    for (label, session_ms, n) in cases {
        let took: Vec<f64> = (1..=n)
            .filter_map(|i| failover_once(rt, admin, bin, bootstrap, label, session_ms, i))
            .collect();
        if !took.is_empty() {
            println!(
                "failover {label}: median {:.0} ms of {:?} ms [producer ~500 records/s acks=all to {TOPIC} RF=3 min.insync.replicas=2; members commit every 5000 ms (default)]",
                median(&took),
                took.iter().map(|t| t.round() as i64).collect::<Vec<_>>()
            );
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), load.task).await });
    println!(
        "failover producer: {} acked, {} failed over {:.0} s",
        load.acked.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SLUICE_BIN").ok())
        .unwrap_or_else(|| "target/release/sluice".into());
    let bin = std::path::PathBuf::from(bin);
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&bin, dir.path());
    println!(
        "cluster: sluice dev --brokers 3 ({}), binary {}",
        dev.bootstrap(),
        bin.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ClientConfig::new(&dev.bootstrap());
    let admin = Admin::new(&config);
    rt.block_on(admin.create_topic(
        TOPIC,
        PARTITIONS,
        3,
        [("min.insync.replicas".to_string(), "2".to_string())].into(),
    ))
    .unwrap();
    let began = Instant::now();
    if !skipped("commit") {
        commits(&rt, &dev, &admin, &config);
    }
    if !skipped("join") {
        joins(&rt, &admin, &config);
    }
    if !skipped("failover") {
        failovers(&rt, &admin, &config, &bin, &dev.bootstrap());
    }
    println!("total {:.0} s", began.elapsed().as_secs_f64());
    drop(rt);
    drop(dev);
}
