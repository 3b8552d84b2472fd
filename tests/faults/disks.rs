//! The campaign's disk faults (issue 18): a full disk and a slow one.
//!
//! **Full disk**: broker 3's data directory is a tmpfs of its own ([`Tmpfs`]), filled with
//! a file for a while, then freed (the fault itself is in `faults.rs`).
//!
//! **Slow disk**: broker 2's data directory is an ext4 on a
//! loop device (`tests/common/slowdisk.rs`); the fault throttles the device's reads and
//! writes to a seeded rate (256 KiB/s to 4 MiB/s) for 2–6 s, then lifts the throttle.
//! This kernel has no device-mapper, so no `dm-delay`: the cgroup-v1 blkio throttle on a
//! loop device is the slow disk (docs/storage.md).
//!
//! Besides the campaign's checks after the heal, checked while the disk is slow, and
//! only what the broker promises:
//!
//! - broker 2 is never fenced: no heartbeat or answer waits for its disk (the IO boundary,
//!   docs/storage.md; `tests/slow_disk.rs` proves it with a far slower disk);
//! - an acks=all produce to a partition that broker 2 only follows is answered within
//!   [`ACK_BOUND`] (`replica.lag.time.max.ms` plus room for the ISR change): a follower
//!   held up by its disk leaves the ISR rather than holding acknowledgements
//!   (docs/replication.md). A probe producer per such partition writes one record at a
//!   time and times each answer; its records join the exactly-once check at the end.
//!
//! A partition that broker 2 leads, or whose ISR lost its other follower meanwhile, is
//! not held to the bound: nothing moves leadership off a slow leader (nor in Kafka), and
//! with only the leader left the answer is NOT_ENOUGH_REPLICAS until the other follower
//! is back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{Acks, Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};

use crate::common::cluster::{partitions, Outcomes, REPLICA_LAG_TIME_MAX};
use crate::common::slowdisk::{evict, SlowDisk};

/// The broker whose data directory is on the loop device (1-based).
pub const SLOW_BROKER: u32 = 2;

/// The probe producers' record prefix (`p0`, `p1`, … across every fault, so each
/// partition's probe records are in offset order).
pub const PROBE_PREFIX: &str = "p";

/// How long an acks=all produce to a partition broker 2 only follows may take while its
/// disk is slow: the lag bound after which the leader proposes to drop it, its proposal
/// interval (1 s), the controller's commit, and scheduling on a loaded 2-core machine.
pub const ACK_BOUND: Duration =
    Duration::from_millis(REPLICA_LAG_TIME_MAX.as_millis() as u64 + 5000);

/// Every probe record and what it was told, over the whole campaign.
#[derive(Default)]
pub struct Probes {
    next: Arc<AtomicU64>,
    outcomes: Arc<Mutex<Outcomes>>,
    /// Per fault: (broker 2 left some ISR, slowest probe answer held to the bound).
    seen: Mutex<Vec<(bool, Option<Duration>)>>,
}

impl Probes {
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes.lock().unwrap().clone()
    }

    /// One line for the campaign's summary, `None` when no slow-disk fault ran.
    pub fn summary(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        if seen.is_empty() {
            return None;
        }
        let left = seen.iter().filter(|s| s.0).count();
        let slowest = seen.iter().filter_map(|s| s.1).max();
        let o = self.outcomes.lock().unwrap();
        Some(format!(
            "slow disk: {} faults, broker {SLOW_BROKER} left an ISR in {left}; {} probe records \
             acknowledged, {} failed; slowest probe answer held to the {ACK_BOUND:?} bound: {slowest:?}",
            seen.len(),
            o.acked.len(),
            o.failed.len()
        ))
    }
}

/// What one probe saw: (sent at, answered after, acknowledged) of every record.
type Timings = Arc<Mutex<Vec<(Instant, Duration, bool)>>>;

fn probe(
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    probes: &Probes,
    topic: &str,
    partition: u32,
    stop: Arc<AtomicBool>,
) -> (Timings, tokio::task::JoinHandle<()>) {
    let timings: Timings = Default::default();
    let (config, topic) = (config.clone(), topic.to_string());
    let (next, outcomes, t) = (
        probes.next.clone(),
        probes.outcomes.clone(),
        timings.clone(),
    );
    let task = rt.spawn(async move {
        // A long request timeout, so that an answer's time is the broker's, not a retry's.
        let pconfig = ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            request_timeout: Duration::from_secs(20),
            delivery_timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let Ok(producer) = Producer::new(&config, pconfig).await else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            let value = format!("{PROBE_PREFIX}{}", next.fetch_add(1, Ordering::Relaxed));
            let record = ProducerRecord {
                partition: Some(partition),
                ..ProducerRecord::new(topic.as_str(), None::<String>, value.clone())
            };
            let sent = Instant::now();
            let answer = match producer.send(record).await {
                Ok(f) => f.await,
                Err(e) => Err(e),
            };
            let took = sent.elapsed();
            t.lock().unwrap().push((sent, took, answer.is_ok()));
            match answer {
                Ok(meta) => {
                    let at = (partition, meta.offset.unwrap());
                    outcomes.lock().unwrap().acked.insert(at, value);
                }
                Err(e) => outcomes
                    .lock()
                    .unwrap()
                    .failed
                    .push((value, format!("{e:?}"))),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (timings, task)
}

/// What the polls saw of one partition while the disk was slow.
#[derive(Default)]
struct Watch {
    /// Broker 2 led it at some poll.
    led_by_slow: bool,
    /// Its ISR lacked a replica other than broker 2 at some poll.
    short: bool,
    /// When broker 2 was first seen out of its ISR (since the throttle).
    left_after: Option<Duration>,
}

/// Broker 2's broker epoch as the controllers' embedded store (`store_dir`) holds it.
/// It changes only when broker 2 registers after the controller fenced it (a broker
/// that registers again while live keeps its epoch) or after a restart.
fn slow_broker_epoch(store_dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(store_dir.join("metadata.json")).ok()?;
    // The snapshot, then a line with its CRC.
    let json = text
        .rsplit_once("\ncrc32")
        .map_or(text.as_str(), |(j, _)| j);
    let snapshot: serde_json::Value = serde_json::from_str(json).ok()?;
    snapshot["brokers"][SLOW_BROKER.to_string()]["epoch"].as_i64()
}

/// One slow-disk fault.
pub struct Slow<'a> {
    pub disk: &'a SlowDisk,
    /// The controllers' embedded store, where broker epochs are kept.
    pub store_dir: &'a Path,
    pub bytes_per_sec: u64,
    pub ms: u64,
    /// Broker 2's files dropped from the page cache before the throttle.
    pub cold: bool,
}

/// The probes of one fault.
struct Running {
    stop: Arc<AtomicBool>,
    probes: Vec<(u32, Timings, tokio::task::JoinHandle<()>)>,
}

impl Slow<'_> {
    /// Whole ISRs first (bounded wait), probes on the partitions broker 2 only follows,
    /// the throttle for `ms`, then the checks. Returns what happened; violations go to
    /// `problems`.
    pub fn inject(
        &self,
        probes: &Probes,
        rt: &tokio::runtime::Runtime,
        config: &ClientConfig,
        admin: &Admin,
        topic: &str,
        problems: &mut Vec<String>,
    ) -> String {
        let running = start_probes(probes, rt, config, admin, topic);
        let evicted = if self.cold {
            evict(&self.disk.mount)
        } else {
            0
        };
        let epoch_before = slow_broker_epoch(self.store_dir);
        let served_before = self.disk.served();
        let throttle = match self.disk.throttle_bps(self.bytes_per_sec) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("the slow-disk fault could not throttle: {e}"));
                running.stop.store(true, Ordering::Relaxed);
                return "not throttled".into();
            }
        };
        let throttled_at = Instant::now();
        let mut watch: BTreeMap<u32, Watch> = BTreeMap::new();
        let mut epochs = vec![epoch_before];
        while throttled_at.elapsed() < Duration::from_millis(self.ms) {
            for p in partitions(rt, admin, topic).unwrap_or_default() {
                let w = watch.entry(p.partition).or_default();
                w.led_by_slow |= p.leader == Some(SLOW_BROKER);
                w.short |= p
                    .replicas
                    .iter()
                    .any(|r| *r != SLOW_BROKER && !p.isr.contains(r));
                if !p.isr.contains(&SLOW_BROKER) && w.left_after.is_none() {
                    w.left_after = Some(throttled_at.elapsed());
                }
            }
            epochs.push(slow_broker_epoch(self.store_dir));
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(throttle);
        let window = (throttled_at, Instant::now());
        let served_after = self.disk.served();
        let mut report = self.judge(running, window, &mut watch, probes, rt, topic, problems);
        // Read again after the probes stopped: a broker stalled by its disk registers
        // again as soon as it heartbeats after the lift.
        epochs.push(slow_broker_epoch(self.store_dir));
        epochs.dedup();
        if epochs.len() > 1 {
            problems.push(format!(
                "slow disk at {} B/s for {} ms: broker {SLOW_BROKER} was fenced and registered \
                 again (broker epochs in the controllers' store: {epochs:?})",
                self.bytes_per_sec, self.ms
            ));
            let _ = write!(report, "; FENCED (broker epochs {epochs:?})");
        }
        format!(
            "{}the device read {} KiB and wrote {} KiB in {:.1?}; broker {SLOW_BROKER} epoch \
             {:?}{report}",
            if self.cold {
                format!("{} MiB dropped from the page cache; ", evicted >> 20)
            } else {
                String::new()
            },
            (served_after.0 - served_before.0) >> 10,
            (served_after.1 - served_before.1) >> 10,
            window.1 - window.0,
            epochs.last().copied().flatten(),
        )
    }

    /// Stops the probes and holds their answers during `window` (throttled, lifted) to
    /// the bound; returns one clause per partition.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        running: Running,
        window: (Instant, Instant),
        watch: &mut BTreeMap<u32, Watch>,
        probes: &Probes,
        rt: &tokio::runtime::Runtime,
        topic: &str,
        problems: &mut Vec<String>,
    ) -> String {
        running.stop.store(true, Ordering::Relaxed);
        let (mut slowest, mut failed) = (None, 0);
        let mut report = String::new();
        for (p, timings, handle) in running.probes {
            // A produce in flight when the throttle lifted settles within the delivery timeout.
            if rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(90), handle).await })
                .is_err()
            {
                problems.push(format!("slow disk: the probe of {topic}-{p} did not stop"));
            }
            let w = watch.entry(p).or_default();
            let during: Vec<(Duration, bool)> = timings
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _, _)| *sent >= window.0 && *sent <= window.1)
                .map(|(_, took, ok)| (*took, *ok))
                .collect();
            let worst = during.iter().map(|d| d.0).max();
            let held = !w.led_by_slow && !w.short;
            let _ = write!(
                report,
                "; {topic}-{p}: {} probe answers, slowest {:?}{}{}",
                during.len(),
                worst.unwrap_or_default(),
                w.left_after
                    .map(|t| format!(", broker {SLOW_BROKER} out of the ISR after {t:.1?}"))
                    .unwrap_or_default(),
                if held { "" } else { " (not held to the bound)" }
            );
            if !held {
                continue;
            }
            failed += during.iter().filter(|d| !d.1).count();
            slowest = slowest.max(worst);
            if let Some(took) = worst.filter(|t| *t > ACK_BOUND) {
                problems.push(format!(
                    "slow disk at {} B/s: an acks=all produce to {topic}-{p}, which broker \
                     {SLOW_BROKER} only follows, took {took:?} (bound {ACK_BOUND:?}); broker \
                     {SLOW_BROKER} {}",
                    self.bytes_per_sec,
                    w.left_after
                        .map(|t| format!("left the ISR after {t:?}"))
                        .unwrap_or_else(|| "never left the ISR".into())
                ));
            }
        }
        if failed > 0 {
            problems.push(format!(
                "slow disk: {failed} probe produce(s) held to the bound failed (last failure: {:?})",
                probes.outcomes.lock().unwrap().failed.last()
            ));
        }
        let left = watch.values().any(|w| w.left_after.is_some());
        probes.seen.lock().unwrap().push((left, slowest));
        report
    }
}

/// Waits (bounded) for whole ISRs, then starts a probe on each partition of `topic` that
/// broker 2 follows and whose ISR is whole, and waits (bounded) for each to be answered
/// once, so that its connections are up before the disk slows.
fn start_probes(
    probes: &Probes,
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    admin: &Admin,
    topic: &str,
) -> Running {
    // The bound holds for a partition whose other follower is in sync: wait a little for
    // the previous fault's broker to catch up, go on regardless.
    let whole_by = Instant::now() + Duration::from_secs(15);
    let mut ps = partitions(rt, admin, topic).unwrap_or_default();
    while Instant::now() < whole_by && !ps.iter().all(|p| p.isr.len() == p.replicas.len()) {
        std::thread::sleep(Duration::from_millis(100));
        ps = partitions(rt, admin, topic).unwrap_or_default();
    }
    let followed: BTreeSet<u32> = ps
        .iter()
        .filter(|p| p.leader.is_some_and(|l| l != SLOW_BROKER) && p.isr.len() == p.replicas.len())
        .map(|p| p.partition)
        .collect();
    let stop: Arc<AtomicBool> = Default::default();
    let running = Running {
        probes: followed
            .iter()
            .map(|&p| {
                let (t, h) = probe(rt, config, probes, topic, p, stop.clone());
                (p, t, h)
            })
            .collect(),
        stop,
    };
    let warm_by = Instant::now() + Duration::from_secs(10);
    while Instant::now() < warm_by
        && running
            .probes
            .iter()
            .any(|r| r.1.lock().unwrap().is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// A tmpfs mounted on `dir` (created) of `bytes`, lazily unmounted on drop.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Takes every free byte with a file; returns its path.
    pub fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        // SAFETY: statvfs(3) on a NUL-terminated path into a zeroed struct.
        let free = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
            st.f_bavail as u64 * st.f_frsize as u64
        };
        let _ = std::process::Command::new("fallocate")
            .args(["-l", &free.to_string()])
            .arg(&filler)
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
