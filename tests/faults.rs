//! A seeded fault campaign through the real binaries (issue 8): three brokers, two
//! controllers on one embedded store, a topic of 3 partitions with RF 3 and
//! `min.insync.replicas=2`, and two acks=all producers running throughout, while faults
//! drawn from a seeded RNG hit one process at a time: kill -9 + restart of a broker,
//! SIGSTOP for 1–4 s, SIGTERM + restart, kill -9 + restart of the active controller,
//! leadership moved one to three times back to back (reassign + preferred election),
//! (as root, with iproute2) cutting broker 3 off from its peers for a few seconds or
//! dropping only the controllers' packets to broker 1 or 2 (lost control pushes), topic
//! `cycled` deleted and re-created, (as root) broker 3's tmpfs data directory filled,
//! and (as root, with a loop device and the blkio controller) broker 2's disk throttled
//! to a few hundred KiB/s or a few MiB/s for a few seconds (`faults/disks.rs`).
//! Side workloads (`faults/workloads.rs`) run throughout: the re-created topic's writer,
//! a consumer group committing, and puts/deletes on a busily compacted topic.
//! Afterwards everything is healed, every ISR must be whole again, every acknowledged
//! record readable exactly once (in each producer's order), and the replicas identical.
//!
//! `FAULT_SEED=N` replays a seed's fault list (timing still varies); `FAULTS=N` sets
//! how many faults (default 8, about a minute and a half here);
//! `FAULT_RATE=N` records a second per producer (default 500); `FAULT_NETNS=0` leaves out the
//! network faults, `FAULT_DISK=0` the full disk, `FAULT_SLOW_DISK=0` the slow disk (each
//! then plans what the seed planned before that kind existed); `FAULT_ONLY=kind[,kind]`
//! keeps only the named kinds (as the summary line names them, e.g. `slow-disk`);
//! `FAULT_SLOW_KIBS=lo-hi` sets the slow disk's range of rates in KiB/s (default 256-4096).
//! `scripts/fault-campaign.sh` runs long campaigns.

mod common;
#[path = "faults/disks.rs"]
mod disks;
#[path = "faults/plan.rs"]
mod plan;
#[path = "faults/workloads.rs"]
mod workloads;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::slowdisk::SlowDisk;
use common::{DropRule, Netns};
use disks::Tmpfs;
use plan::{plan, Fault, Powers};
use workloads::{Committer, Cycled, Keyed};

const TOPIC: &str = "campaign";
const PARTITIONS: u32 = 3;
const PREFIXES: [&str; 2] = ["a", "b"];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Network namespaces need root and iproute2.
fn netns_possible() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    std::env::var("FAULT_NETNS").as_deref() != Ok("0")
        && unsafe { libc::geteuid() } == 0
        && std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Polls `f` until `Some` or `limit`; `Err` names what did not happen.
fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the campaign saw, for the failure message and the summary.
struct Log {
    seed: u64,
    planned: Vec<(u64, Fault)>,
    injected: Vec<String>,
    started: Instant,
}

impl Log {
    fn fail(&self, problems: &[String]) -> ! {
        let faults: Vec<String> = self
            .injected
            .iter()
            .enumerate()
            .map(|(i, f)| format!("  {}. {f}", i + 1))
            .collect();
        panic!(
            "fault campaign FAILED: FAULT_SEED={} FAULTS={} (replay with these), after {:?}\nfaults injected:\n{}\nproblems:\n  {}",
            self.seed,
            self.planned.len(),
            self.started.elapsed(),
            faults.join("\n"),
            problems.join("\n  ")
        );
    }
}

#[test]
fn seeded_fault_campaign() {
    let seed = env_u64("FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let count = env_u64("FAULTS").unwrap_or(8) as usize;
    let netns = netns_possible();
    let dir = tempfile::tempdir().unwrap();
    // Declared before the cluster so that they are removed after the processes in them.
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0 && std::env::var("FAULT_DISK").as_deref() != Ok("0");
    let disk = root
        .then(|| Tmpfs::mount(&dir.path().join("broker-3"), 1 << 30))
        .flatten();
    // Broker 2's data directory on a loop device of its own, for the slow disk.
    let slow_disk = if std::env::var("FAULT_SLOW_DISK").as_deref() == Ok("0") {
        Err("off: FAULT_SLOW_DISK=0".to_string())
    } else {
        SlowDisk::create(dir.path(), 1 << 30)
            .and_then(|d| {
                let data = d.mount.join("broker-2");
                std::fs::create_dir_all(&data)
                    .and_then(|()| std::os::unix::fs::symlink(&data, dir.path().join("broker-2")))
                    .map_err(|e| format!("{}: {e}", data.display()))?;
                Ok(d)
            })
            .map_err(|e| format!("off: {e}"))
    };
    let powers = Powers {
        netns,
        tmpfs: disk.is_some(),
        slow_disk: slow_disk.is_ok(),
        slow_kibs: std::env::var("FAULT_SLOW_KIBS").map_or((256, 4096), |v| {
            v.split_once('-')
                .and_then(|(lo, hi)| Some((lo.parse().ok()?, hi.parse().ok()?)))
                .filter(|(lo, hi)| 0 < *lo && lo <= hi)
                .unwrap_or_else(|| panic!("FAULT_SLOW_KIBS={v}: want lo-hi, e.g. 256-4096"))
        }),
    };
    let only: Vec<String> = std::env::var("FAULT_ONLY")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let planned = plan(seed, count, powers, &only);
    let on_off = |on: bool| if on { "on" } else { "off: needs root" };
    eprintln!(
        "fault campaign: FAULT_SEED={seed} FAULTS={count} (network faults {}, disk-full faults {}, slow-disk faults {})",
        on_off(netns),
        on_off(powers.tmpfs),
        match &slow_disk {
            Ok(d) => format!("on: broker 2 on {}", d.device()),
            Err(e) => e.clone(),
        }
    );
    let net = netns.then(Netns::create);
    let cluster = match &net {
        Some(net) => netns_cluster(dir.path(), net),
        None => {
            let local = || {
                (
                    format!("127.0.0.1:{}", common::free_port()),
                    Vec::new(),
                    broker_args(),
                )
            };
            Cluster::start_custom(
                dir.path(),
                (0..2)
                    .map(|_| format!("127.0.0.1:{}", common::free_port()))
                    .collect(),
                (0..3).map(|_| local()).collect(),
                &format!("embedded:{}", dir.path().join("controller").display()),
            )
        }
    };
    let log = Log {
        seed,
        planned,
        injected: Vec::new(),
        started: Instant::now(),
    };
    run(
        cluster,
        net.as_ref(),
        disk.as_ref(),
        slow_disk.as_ref().ok(),
        log,
    );
}

fn broker_args() -> Vec<String> {
    workloads::CLEANER_ARGS
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// Brokers 1 and 2 and both controllers on the root side's extra addresses, broker 3
/// inside the namespace, as in replication.rs's network-partition test: a cut drops
/// what broker 3 sends to brokers 1 and 2 (its fetches from them and its answers to
/// them), not its traffic to the controllers or clients.
fn netns_cluster(dir: &Path, net: &Netns) -> Cluster {
    // Every address is private to this test (its own IPs), so fixed ports are free.
    Cluster::start_custom(
        dir,
        vec![
            format!("{}:9390", net.addr(1)),
            format!("{}:9391", net.addr(1)),
        ],
        vec![
            (format!("{}:9392", net.addr(11)), Vec::new(), broker_args()),
            (format!("{}:9392", net.addr(12)), Vec::new(), broker_args()),
            (
                format!("{}:9392", net.addr(2)),
                net.exec_prefix(),
                broker_args(),
            ),
        ],
        &format!("embedded:{}", dir.join("controller").display()),
    )
}

/// The side workloads, and what the faults act on besides processes.
struct Side<'a> {
    cycled: &'a Cycled,
    net: Option<&'a Netns>,
    disk: Option<&'a Tmpfs>,
    slow_disk: Option<&'a SlowDisk>,
    probes: &'a disks::Probes,
    config: &'a sluice_client::ClientConfig,
}

/// `(partition, high watermark)` of every partition of `topic` once all three replicas
/// are in sync.
fn ends(
    rt: &tokio::runtime::Runtime,
    admin: &sluice_client::Admin,
    topic: &str,
) -> Result<Vec<(u32, u64)>, String> {
    let ps = wait_until(
        &format!("{topic}: replicas caught up"),
        Duration::from_secs(60),
        || all_in_sync(rt, admin, topic, 3),
    )?;
    Ok(ps
        .iter()
        .map(|p| (p.partition, p.high_watermark.unwrap_or(0)))
        .collect())
}

fn run(
    mut cluster: Cluster,
    net: Option<&Netns>,
    disk: Option<&Tmpfs>,
    slow_disk: Option<&SlowDisk>,
    mut log: Log,
) {
    let (rt, config, admin) = cluster.client();
    let mut configs = BTreeMap::new();
    configs.insert("min.insync.replicas".to_string(), "2".to_string());
    rt.block_on(admin.create_topic(TOPIC, PARTITIONS, 3, configs))
        .unwrap();
    if let Err(e) = wait_until("full ISRs", Duration::from_secs(30), || {
        all_in_sync(&rt, &admin, TOPIC, 3)
    }) {
        log.fail(&[e]);
    }
    rt.block_on(admin.create_topic(workloads::CYCLED, 2, 3, workloads::min_isr_2()))
        .unwrap();
    rt.block_on(admin.create_topic(workloads::KEYED, 2, 3, workloads::keyed_configs()))
        .unwrap();
    let cycled = Cycled::start(&rt, &config);
    let keyed = Keyed::start(&rt, &config, log.seed);
    let committer = Committer::start(&rt, &config, TOPIC);
    let probes = disks::Probes::default();
    let side = Side {
        cycled: &cycled,
        net,
        disk,
        slow_disk,
        probes: &probes,
        config: &config,
    };
    let rate = env_u64("FAULT_RATE").unwrap_or(500) as u32;
    let loads: Vec<Load> = PREFIXES
        .iter()
        .map(|p| Load::start_paced(&rt, &config, TOPIC, p, PARTITIONS, 300, Some(rate)))
        .collect();
    let acked = |loads: &[Load]| loads.iter().map(Load::acked_count).sum::<usize>();
    let mut problems = Vec::new();
    let mut stalls = 0;
    let mut resumed = Vec::new();
    for (i, (gap_ms, fault)) in log.planned.clone().into_iter().enumerate() {
        // Undisturbed running between faults (holding, not synchronising).
        std::thread::sleep(Duration::from_millis(gap_ms));
        let description = inject(&mut cluster, &side, &rt, &admin, &fault, &mut problems);
        let injected_at = Instant::now();
        eprintln!(
            "fault {}/{} at {:.1?}: {description} ({} acknowledged so far)",
            i + 1,
            log.planned.len(),
            log.started.elapsed(),
            acked(&loads)
        );
        log.injected.push(description);
        // Never more than one broker down: the next fault waits for this one's broker.
        if let Err(e) = wait_until("every broker alive", Duration::from_secs(60), || {
            rt.block_on(admin.describe_cluster())
                .ok()
                .filter(|c| c.brokers.len() == 3 && c.brokers.iter().all(|b| b.alive))
        }) {
            problems.push(format!("after fault {} ({fault}): {e}", i + 1));
            log.fail(&problems);
        }
        // Writes go on: both producers get acknowledgements again (ISRs may still be
        // short; min.insync.replicas=2 leaves room for one missing replica).
        let targets: Vec<usize> = loads.iter().map(|l| l.acked_count() + 50).collect();
        match wait_until(
            "acknowledgements to resume",
            Duration::from_secs(30),
            || {
                loads
                    .iter()
                    .zip(&targets)
                    .all(|(l, t)| l.acked_count() >= *t)
                    .then_some(())
            },
        ) {
            Ok(()) => resumed.push(injected_at.elapsed()),
            Err(_) => {
                stalls += 1;
                eprintln!(
                    "fault {}: acknowledgements did not resume within 30 s",
                    i + 1
                );
            }
        }
    }
    // Healed (every process runs, no cut): every ISR must become whole again.
    let healed_at = Instant::now();
    let mut last = None;
    if let Err(e) = wait_until(
        "every partition's ISR whole (3)",
        Duration::from_secs(90),
        || {
            last = [TOPIC, workloads::CYCLED, workloads::KEYED]
                .iter()
                .map(|t| partitions(&rt, &admin, t))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat());
            last.clone()
                .filter(|ps| ps.iter().all(|p| p.leader.is_some() && p.isr.len() == 3))
        },
    ) {
        let seen: Vec<String> = last
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{TOPIC}-{}: leader {:?} (epoch {}), replicas {:?}, isr {:?}, hw {:?}, leo {:?}",
                    p.partition,
                    p.leader,
                    p.leader_epoch,
                    p.replicas,
                    p.isr,
                    p.high_watermark,
                    p.log_end_offset
                )
            })
            .collect();
        problems.push(format!("{e}; last seen: {}", seen.join("; ")));
        log.fail(&problems);
    }
    eprintln!(
        "every ISR whole {:?} after the last fault",
        healed_at.elapsed()
    );
    let mut outcomes: Vec<Outcomes> = loads.into_iter().map(|l| l.finish(&rt)).collect();
    outcomes.push(probes.outcomes());
    problems.extend(committer.check(&rt, &config, TOPIC));
    // Writers stopped first, so the ends read below are final.
    let (mut cycled, mut keyed) = (cycled, keyed);
    cycled.stop(&rt);
    keyed.stop(&rt);
    match ends(&rt, &admin, workloads::CYCLED) {
        Ok(e) => problems.extend(cycled.check(&rt, &config, &e)),
        Err(e) => problems.push(e),
    }
    match ends(&rt, &admin, workloads::KEYED) {
        Ok(e) => problems.extend(keyed.check(&rt, &config, &e)),
        Err(e) => problems.push(e),
    }
    let in_sync = match wait_until(
        "replicas caught up (HW == LEO)",
        Duration::from_secs(60),
        || all_in_sync(&rt, &admin, TOPIC, 3),
    ) {
        Ok(ps) => ps,
        Err(e) => {
            problems.push(e);
            log.fail(&problems);
        }
    };
    let acked_total: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    let failed_total: usize = outcomes.iter().map(|o| o.failed.len()).sum();
    let mut failure_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (_, e) in outcomes.iter().flat_map(|o| &o.failed) {
        *failure_kinds
            .entry(e.chars().take(60).collect())
            .or_default() += 1;
    }

    for p in &in_sync {
        let mut acked: Vec<(u64, String)> = outcomes
            .iter()
            .flat_map(|o| &o.acked)
            .filter(|((partition, _), _)| *partition == p.partition)
            .map(|((_, offset), value)| (*offset, value.clone()))
            .collect();
        acked.sort();
        let twice: Vec<String> = acked
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| format!("{} to {} and {}", w[0].0, w[0].1, w[1].1))
            .collect();
        if !twice.is_empty() {
            problems.push(format!(
                "{TOPIC}-{}: {} offsets acknowledged for two records (first: {:?})",
                p.partition,
                twice.len(),
                &twice[..twice.len().min(5)]
            ));
        }
        let read = consume_partition(
            &rt,
            &config,
            TOPIC,
            p.partition,
            p.high_watermark.unwrap(),
            Duration::from_secs(60),
        );
        problems.extend(exactly_once_violations(
            &format!("{TOPIC}-{} via a consumer", p.partition),
            &read,
            &acked,
            &[PREFIXES[0], PREFIXES[1], disks::PROBE_PREFIX],
        ));
    }
    cluster.stop_all();
    for p in 0..PARTITIONS {
        let copies: Vec<Vec<(u64, String)>> = (1..=3)
            .map(|b| replica_partition_records(&cluster.dir, b, TOPIC, p))
            .collect();
        for (b, c) in copies.iter().enumerate().skip(1) {
            if c != &copies[0] {
                let at = c
                    .iter()
                    .zip(&copies[0])
                    .position(|(x, y)| x != y)
                    .unwrap_or(c.len().min(copies[0].len()));
                problems.push(format!(
                    "{TOPIC}-{p}: broker {} holds {} records, broker 1 {}; first difference at index {at}",
                    b + 1,
                    c.len(),
                    copies[0].len()
                ));
            }
        }
    }
    if !problems.is_empty() {
        log.fail(&problems);
    }
    resumed.sort();
    eprintln!(
        "acknowledgements resumed after a healed fault (every broker alive again): median {:?}, max {:?}",
        resumed.get(resumed.len() / 2),
        resumed.last()
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, f) in &log.planned {
        *kinds.entry(f.kind()).or_default() += 1;
    }
    if let Some(line) = probes.summary() {
        eprintln!("{line}");
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    eprintln!(
        "FAULT-CAMPAIGN seed={} faults={} kinds={} acked={acked_total} failed={failed_total} stalls={stalls} duration={:.0}s result=ok",
        log.seed,
        log.injected.len(),
        kinds.join(","),
        log.started.elapsed().as_secs_f64()
    );
    if !failure_kinds.is_empty() {
        eprintln!("records not acknowledged, by error: {failure_kinds:#?}");
    }
}

/// Injects one fault and heals it; returns what was done, as it happened.
fn inject(
    cluster: &mut Cluster,
    side: &Side,
    rt: &tokio::runtime::Runtime,
    admin: &sluice_client::Admin,
    fault: &Fault,
    problems: &mut Vec<String>,
) -> String {
    match *fault {
        Fault::Kill9 { broker, down_ms } => {
            cluster.kill9(broker - 1);
            std::thread::sleep(Duration::from_millis(down_ms));
            cluster.start_broker(broker - 1);
        }
        Fault::Pause { broker, ms } => {
            let child = cluster.brokers[broker - 1].1.as_ref().unwrap();
            signal(child, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(ms));
            signal(child, libc::SIGCONT);
        }
        Fault::Term { broker } => {
            let mut child = cluster.brokers[broker - 1].1.take().unwrap();
            signal(&child, libc::SIGTERM);
            let stopped_at = Instant::now();
            match wait_until("the broker to exit", Duration::from_secs(60), || {
                child.try_wait().unwrap()
            }) {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!(
                    "broker {broker} exited with {status} after SIGTERM"
                )),
                Err(e) => {
                    problems.push(format!("broker {broker} after SIGTERM: {e}"));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            let took = stopped_at.elapsed();
            cluster.start_broker(broker - 1);
            return format!("{fault} (it stopped in {took:?})");
        }
        Fault::KillController { down_ms } => {
            let active = match wait_until("an active controller", Duration::from_secs(30), || {
                rt.block_on(admin.describe_cluster()).ok().and_then(|d| {
                    cluster
                        .controllers
                        .iter()
                        .position(|c| c.0 as i32 == d.controller_id)
                })
            }) {
                Ok(i) => i,
                Err(e) => {
                    problems.push(e);
                    return format!("{fault}: skipped, no active controller");
                }
            };
            cluster.kill9_controller(active);
            std::thread::sleep(Duration::from_millis(down_ms));
            cluster.start_controller(active);
            return format!("{fault} (controller {})", cluster.controllers[active].0);
        }
        Fault::Move { partition, hops } => {
            let mut moves = Vec::new();
            for _ in 0..hops {
                let Some(p) = partitions(rt, admin, TOPIC)
                    .and_then(|ps| ps.into_iter().find(|p| p.partition == partition))
                else {
                    moves.push("no metadata".to_string());
                    continue;
                };
                // The next in-sync replica after the current leader becomes preferred.
                let leader = p.leader.unwrap_or(0);
                let Some(to) = (1..=3)
                    .map(|i| (leader + i - 1) % 3 + 1)
                    .find(|b| *b != leader && p.isr.contains(b))
                else {
                    moves.push(format!("none: isr {:?}", p.isr));
                    continue;
                };
                let order: Vec<u32> = std::iter::once(to)
                    .chain(p.replicas.iter().copied().filter(|&b| b != to))
                    .collect();
                let moved = rt
                    .block_on(admin.reassign_partition(TOPIC, partition, order.clone()))
                    .and_then(|()| rt.block_on(admin.elect_leaders(Some(TOPIC))));
                moves.push(match moved {
                    Ok(_) => format!("{leader}->{to}"),
                    Err(e) => format!("{leader}->{to} refused: {e}"),
                });
            }
            return format!("{fault} ({})", moves.join(", "));
        }
        Fault::Cut { ms } => {
            let net = side.net.expect("cuts are planned only with a namespace");
            net.cut(&[11, 12]);
            std::thread::sleep(Duration::from_millis(ms));
            net.heal(&[11, 12]);
        }
        Fault::Recreate => {
            return format!("{fault}: {}", side.cycled.recreate(rt, admin));
        }
        Fault::DropPushes { broker, ms } => {
            let net = side.net.expect("planned only with a namespace");
            // The controllers sit on host 1, brokers 1 and 2 on hosts 11 and 12: only
            // what the controllers send to the broker's port is dropped, so its own
            // heartbeats (and their answers) still flow and it stays live.
            let rule = DropRule::new(&[
                "-s",
                &net.addr(1),
                "-d",
                &net.addr(10 + broker as u8),
                "--dport",
                "9392",
            ]);
            std::thread::sleep(Duration::from_millis(ms));
            drop(rule);
        }
        Fault::DiskFull { ms } => {
            let disk = side.disk.expect("planned only with a tmpfs");
            let filler = disk.fill();
            std::thread::sleep(Duration::from_millis(ms));
            let _ = std::fs::remove_file(&filler);
            let exited = cluster.brokers[2]
                .1
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            cluster.kill9(2);
            cluster.start_broker(2);
            return format!(
                "{fault} (it had {} by itself)",
                if exited { "exited" } else { "not exited" }
            );
        }
        Fault::SlowDisk {
            bytes_per_sec,
            ms,
            cold,
        } => {
            let slow = disks::Slow {
                disk: side.slow_disk.expect("planned only with a loop device"),
                store_dir: &cluster.dir.join("controller"),
                bytes_per_sec,
                ms,
                cold,
            };
            let what = slow.inject(side.probes, rt, side.config, admin, TOPIC, problems);
            return format!("{fault}: {what}");
        }
    }
    fault.to_string()
}
