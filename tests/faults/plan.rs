//! The campaign's fault list: the fault kinds and the seeded plan that draws them
//! (`FAULT_SEED` replays it). Each kind is injected and healed by `inject` in
//! `faults.rs` (the disk faults with `disks.rs`).

use std::fmt;

use crate::{disks, workloads, PARTITIONS, TOPIC};

/// splitmix64: small, and the same sequence for a seed on every platform and version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// kill -9 broker `broker` (1-based), restart it after `down_ms`.
    Kill9 { broker: usize, down_ms: u64 },
    /// SIGSTOP broker `broker`, SIGCONT after `ms`.
    Pause { broker: usize, ms: u64 },
    /// SIGTERM broker `broker` (controlled shutdown), restart it once it exited.
    Term { broker: usize },
    /// kill -9 the active controller, restart it after `down_ms`.
    KillController { down_ms: u64 },
    /// Leadership of `partition` moved `hops` times back to back (replica list reordered,
    /// then a preferred election), so a leader may lose leadership before it appends.
    Move { partition: u32, hops: u64 },
    /// Broker 3 cannot reach brokers 1 and 2 (blackhole routes in its namespace) for `ms`.
    Cut { ms: u64 },
    /// The `cycled` topic deleted and created again under the same name.
    Recreate,
    /// The controllers' packets to broker `broker` (1 or 2) dropped for `ms`: control
    /// pushes are lost while the broker keeps heartbeating (namespace runs only).
    DropPushes { broker: usize, ms: u64 },
    /// Broker 3's disk (a tmpfs of its own) filled for `ms`, then freed, and the broker
    /// restarted (as Kafka, a broker recovers from a failed log directory by a restart).
    DiskFull { ms: u64 },
    /// Broker 2's disk (a loop device of its own) throttled to `bytes_per_sec` for reads
    /// and for writes for `ms`, then unthrottled; with `cold`, its files are first
    /// dropped from the page cache, so that its reads go to the slow disk too.
    SlowDisk {
        bytes_per_sec: u64,
        ms: u64,
        cold: bool,
    },
}

impl Fault {
    /// The kind's name in the summary line and in `FAULT_ONLY`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill9 { .. } => "kill9",
            Fault::Pause { .. } => "sigstop",
            Fault::Term { .. } => "sigterm",
            Fault::KillController { .. } => "controller-kill9",
            Fault::Move { .. } => "leader-move",
            Fault::Cut { .. } => "partition",
            Fault::Recreate => "recreate",
            Fault::DropPushes { .. } => "lost-pushes",
            Fault::DiskFull { .. } => "disk-full",
            Fault::SlowDisk { .. } => "slow-disk",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill9 { broker, down_ms } => {
                write!(f, "kill -9 broker {broker}, restart after {down_ms} ms")
            }
            Fault::Pause { broker, ms } => write!(f, "SIGSTOP broker {broker} for {ms} ms"),
            Fault::Term { broker } => write!(f, "SIGTERM broker {broker}, restart"),
            Fault::KillController { down_ms } => {
                write!(
                    f,
                    "kill -9 the active controller, restart after {down_ms} ms"
                )
            }
            Fault::Move { partition, hops } => {
                write!(
                    f,
                    "move leadership of {TOPIC}-{partition} {hops} time(s) back to back"
                )
            }
            Fault::Cut { ms } => write!(f, "cut broker 3 from its peers for {ms} ms"),
            Fault::Recreate => write!(f, "delete and re-create topic {}", workloads::CYCLED),
            Fault::DropPushes { broker, ms } => {
                write!(
                    f,
                    "drop the controllers' packets to broker {broker} for {ms} ms"
                )
            }
            Fault::DiskFull { ms } => {
                write!(
                    f,
                    "fill broker 3's disk for {ms} ms, free it, restart broker 3"
                )
            }
            Fault::SlowDisk {
                bytes_per_sec,
                ms,
                cold,
            } => write!(
                f,
                "throttle broker {}'s disk to {} KiB/s for {ms} ms{}",
                disks::SLOW_BROKER,
                bytes_per_sec / 1024,
                if *cold {
                    ", its page cache dropped"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What this machine allows beyond signals and admin calls.
#[derive(Clone, Copy)]
pub struct Powers {
    /// Network namespaces (cuts, dropped pushes).
    pub netns: bool,
    /// A tmpfs of its own for broker 3 (a disk that fills).
    pub tmpfs: bool,
    /// A throttled loop device for broker 2 (a slow disk).
    pub slow_disk: bool,
    /// The slow disk's rates, `lo..=hi` KiB/s (default 256..=4096; `FAULT_SLOW_KIBS=lo-hi`).
    pub slow_kibs: (u64, u64),
}

/// The seed's faults, each with how long to run undisturbed before it (ms); only the
/// kinds in `only`, when it names any.
pub fn plan(seed: u64, count: usize, powers: Powers, only: &[String]) -> Vec<(u64, Fault)> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    while out.len() < count {
        let gap = rng.range(500, 3000);
        let broker = rng.range(1, 3) as usize;
        let fault = match rng.range(0, 8) {
            0 => Fault::Kill9 {
                broker,
                down_ms: rng.range(0, 3000),
            },
            1 => Fault::Pause {
                broker,
                ms: rng.range(1000, 4000),
            },
            2 => Fault::Term { broker },
            3 => Fault::KillController {
                down_ms: rng.range(0, 2000),
            },
            4 => Fault::Move {
                partition: rng.range(0, u64::from(PARTITIONS) - 1) as u32,
                hops: rng.range(1, 3),
            },
            5 => Fault::Recreate,
            6 if powers.netns => match rng.range(0, 1) {
                0 => Fault::Cut {
                    ms: rng.range(2000, 6000),
                },
                _ => Fault::DropPushes {
                    broker: rng.range(1, 2) as usize,
                    ms: rng.range(3000, 12000),
                },
            },
            7 if powers.tmpfs => Fault::DiskFull {
                ms: rng.range(500, 3000),
            },
            8 if powers.slow_disk => Fault::SlowDisk {
                bytes_per_sec: rng.range(powers.slow_kibs.0, powers.slow_kibs.1) * 1024,
                ms: rng.range(2000, 6000),
                cold: rng.range(0, 1) == 1,
            },
            _ => continue,
        };
        if !only.is_empty() && !only.iter().any(|k| k == fault.kind()) {
            continue;
        }
        out.push((gap, fault));
    }
    out
}
