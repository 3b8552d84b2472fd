//! The campaign's side workloads, each with its own invariant checked after the heal:
//!
//! - [`Cycled`]: a topic deleted and re-created under the same name while a sequential
//!   writer keeps writing to it. No record acknowledged by an earlier incarnation may be
//!   read from the last one; every record sent after the last re-creation finished and
//!   acknowledged must be read exactly once.
//! - [`Committer`]: one consumer group member reading the main topic and committing what
//!   it read. Acknowledged commits never go backwards: the committed offsets it resumes
//!   from after any failover are never below one it was told was committed, and the
//!   group's final committed offsets are at least the last acknowledged ones.
//! - [`Keyed`]: puts and deletes of a few hundred keys, one at a time, on a compacted
//!   topic whose cleaner runs often with a tiny dedupe buffer. Read from the beginning at
//!   the end, every key's last record is its last acknowledged operation: no deleted key
//!   comes back, no value is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{
    Acks, ClientConfig, Consumer, ConsumerConfig, GroupOptions, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, Subscription,
};
use sluice_proto::TopicPartition;

use crate::common::cluster::consume_partition;

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(1),
        request_timeout: Duration::from_secs(5),
        delivery_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

/// A background task and its stop flag.
struct Task {
    stop: Arc<AtomicBool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Task {
    fn new(stop: Arc<AtomicBool>, handle: tokio::task::JoinHandle<()>) -> Task {
        Task {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the task and waits for it (once).
    fn finish(&mut self, rt: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            rt.block_on(h).unwrap();
        }
    }
}

// ---- a topic deleted and re-created -----------------------------------------------

pub const CYCLED: &str = "cycled";

#[derive(Default)]
struct CycledLog {
    /// (value, sent at, acknowledged at) of every acknowledged write.
    acked: Vec<(String, Instant, Instant)>,
    /// (delete started, re-creation finished) of every cycle.
    cycles: Vec<(Instant, Instant)>,
}

pub struct Cycled {
    log: Arc<Mutex<CycledLog>>,
    task: Task,
}

impl Cycled {
    pub fn start(rt: &tokio::runtime::Runtime, config: &ClientConfig) -> Cycled {
        let log: Arc<Mutex<CycledLog>> = Default::default();
        let stop: Arc<AtomicBool> = Default::default();
        let handle = {
            let (config, log, stop) = (config.clone(), log.clone(), stop.clone());
            rt.spawn(async move {
                let producer = Producer::new(&config, producer_config()).await.unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("c{n}");
                    n += 1;
                    let sent = Instant::now();
                    let record = ProducerRecord {
                        partition: Some((n % 2) as u32),
                        ..ProducerRecord::new(CYCLED, None::<String>, value.clone())
                    };
                    let Ok(f) = producer.send(record).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    match f.await {
                        Ok(_) => log
                            .lock()
                            .unwrap()
                            .acked
                            .push((value, sent, Instant::now())),
                        // Unknown topic while it is re-created, timeouts under faults.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        };
        Cycled {
            log,
            task: Task::new(stop, handle),
        }
    }

    /// Deletes the topic and creates it again (2 partitions, RF 3, min ISR 2); returns
    /// what happened.
    pub fn recreate(&self, rt: &tokio::runtime::Runtime, admin: &sluice_client::Admin) -> String {
        let started = Instant::now();
        if let Err(e) = rt.block_on(admin.delete_topic(CYCLED)) {
            return format!("delete refused: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rt.block_on(admin.create_topic(CYCLED, 2, 3, min_isr_2())) {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    return format!("re-create failed for 30 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.log
            .lock()
            .unwrap()
            .cycles
            .push((started, Instant::now()));
        format!("re-created in {:?}", started.elapsed())
    }

    /// Stops writing.
    pub fn stop(&mut self, rt: &tokio::runtime::Runtime) {
        self.task.finish(rt);
    }

    /// Checks the last incarnation, read up to `ends` (partition, HW) once caught up.
    pub fn check(
        mut self,
        rt: &tokio::runtime::Runtime,
        config: &ClientConfig,
        ends: &[(u32, u64)],
    ) -> Vec<String> {
        self.task.finish(rt);
        let log = self.log.lock().unwrap();
        let mut read = BTreeMap::new();
        for &(p, end) in ends {
            for (_, v) in consume_partition(rt, config, CYCLED, p, end, Duration::from_secs(60)) {
                *read.entry(v).or_insert(0u32) += 1;
            }
        }
        let mut problems = Vec::new();
        let last_cycle = log.cycles.last().copied();
        // Acknowledged before the last deletion began: a record of an older incarnation.
        let old: Vec<&String> = log
            .acked
            .iter()
            .filter(|(_, _, acked)| last_cycle.is_some_and(|(deleting, _)| *acked < deleting))
            .map(|(v, _, _)| v)
            .filter(|v| read.contains_key(*v))
            .collect();
        if !old.is_empty() {
            problems.push(format!(
                "{CYCLED}: {} records acknowledged before its last deletion read from the re-created topic (first: {:?})",
                old.len(),
                &old[..old.len().min(5)]
            ));
        }
        let new: Vec<&String> = log
            .acked
            .iter()
            .filter(|(_, sent, _)| last_cycle.is_none_or(|(_, created)| *sent > created))
            .map(|(v, _, _)| v)
            .collect();
        let missing: Vec<&&String> = new.iter().filter(|v| !read.contains_key(**v)).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{CYCLED}: {} of {} records acknowledged after the last re-creation are missing (first: {:?})",
                missing.len(),
                new.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        let twice: Vec<(&String, &u32)> = read.iter().filter(|(_, n)| **n > 1).collect();
        if !twice.is_empty() {
            problems.push(format!(
                "{CYCLED}: records read twice: {:?}",
                &twice[..twice.len().min(5)]
            ));
        }
        eprintln!(
            "{CYCLED}: {} cycles, {} records acknowledged, {} sent after the last re-creation, {} read",
            log.cycles.len(),
            log.acked.len(),
            new.len(),
            read.len()
        );
        problems
    }
}

pub fn min_isr_2() -> BTreeMap<String, String> {
    BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())])
}

// ---- a consumer group committing ---------------------------------------------------

pub const GROUP: &str = "campaign-group";

#[derive(Default)]
struct CommitLog {
    /// Per partition, every acknowledged commit in order.
    acked: BTreeMap<u32, Vec<u64>>,
    failed: usize,
}

pub struct Committer {
    log: Arc<Mutex<CommitLog>>,
    task: Task,
}

impl Committer {
    pub fn start(rt: &tokio::runtime::Runtime, config: &ClientConfig, topic: &str) -> Committer {
        let log: Arc<Mutex<CommitLog>> = Default::default();
        let stop: Arc<AtomicBool> = Default::default();
        let handle = {
            let (config, log, stop) = (config.clone(), log.clone(), stop.clone());
            let topic = topic.to_string();
            rt.spawn(async move {
                let mut c = Consumer::new(
                    &config,
                    ConsumerConfig {
                        auto_offset_reset: OffsetReset::Earliest,
                        fetch_max_wait: Duration::from_millis(100),
                        ..ConsumerConfig::default()
                    },
                );
                c.subscribe(
                    GroupOptions {
                        session_timeout: Some(Duration::from_secs(10)),
                        auto_commit_interval: None,
                        ..GroupOptions::new(GROUP)
                    },
                    Subscription::Topics(vec![topic]),
                )
                .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if c.poll(Duration::from_millis(100)).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let offsets: BTreeMap<TopicPartition, u64> = c
                        .assignment()
                        .into_iter()
                        .filter_map(|tp| Some((tp.clone(), c.position(&tp)?)))
                        .collect();
                    if offsets.is_empty() {
                        continue;
                    }
                    match c.commit_offsets(offsets.clone()).await {
                        Ok(()) => {
                            let mut log = log.lock().unwrap();
                            for (tp, o) in offsets {
                                log.acked.entry(tp.partition).or_default().push(o);
                            }
                        }
                        Err(_) => log.lock().unwrap().failed += 1,
                    }
                }
                let _ = c.close().await;
            })
        };
        Committer {
            log,
            task: Task::new(stop, handle),
        }
    }

    /// Stops the member and checks its commits (after it closed, so nothing is in flight).
    pub fn check(
        mut self,
        rt: &tokio::runtime::Runtime,
        config: &ClientConfig,
        topic: &str,
    ) -> Vec<String> {
        self.task.finish(rt);
        let log = self.log.lock().unwrap();
        let mut problems = Vec::new();
        for (p, commits) in &log.acked {
            if let Some(w) = commits.windows(2).find(|w| w[1] < w[0]) {
                problems.push(format!(
                    "{GROUP} {topic}-{p}: an acknowledged commit of {} was followed by one of {}: the member resumed below a commit it was told was stored",
                    w[0], w[1]
                ));
            }
        }
        // What the coordinator holds now, through a fresh member of the same group.
        let tps: Vec<TopicPartition> = log
            .acked
            .keys()
            .map(|p| TopicPartition::new(topic, *p))
            .collect();
        let stored = rt.block_on(async {
            let mut c = Consumer::new(config, ConsumerConfig::default());
            c.subscribe(
                GroupOptions::new(GROUP),
                Subscription::Topics(vec![topic.to_string()]),
            )?;
            let r = c.committed(&tps).await;
            drop(c);
            r
        });
        match stored {
            Ok(stored) => {
                for (tp, now) in stored {
                    let last = log.acked[&tp.partition].last().copied().unwrap_or(0);
                    if now.unwrap_or(0) < last {
                        problems.push(format!(
                            "{GROUP} {tp}: committed {now:?} now, below the last acknowledged commit {last}"
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{GROUP}: committed offsets not readable: {e}")),
        }
        eprintln!(
            "{GROUP}: {} acknowledged commits, {} failed",
            log.acked.values().map(Vec::len).sum::<usize>(),
            log.failed
        );
        problems
    }
}

// ---- compaction with tombstones ----------------------------------------------------

pub const KEYED: &str = "keyed";
const KEYS: u64 = 300;

/// Topic configs that make the cleaner busy: small segments rolled often, everything
/// dirty is cleanable, tombstones past their horizon at once.
pub fn keyed_configs() -> BTreeMap<String, String> {
    let mut c = min_isr_2();
    for (k, v) in [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "16384"),
        ("segment.ms", "1000"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "0"),
        ("min.compaction.lag.ms", "0"),
    ] {
        c.insert(k.to_string(), v.to_string());
    }
    c
}

/// Broker arguments for the campaign: a cleaner that wakes often and whose dedupe map
/// fills within one pass.
pub const CLEANER_ARGS: [&str; 4] = [
    "--log-cleaner-backoff-ms",
    "200",
    "--log-cleaner-dedupe-buffer-size",
    "4096",
];

#[derive(Default)]
struct KeyedLog {
    /// Per key: the last operation whose outcome is known (`None`: a delete), and
    /// whether a later operation's outcome is unknown (then the key is not checked).
    last: BTreeMap<u64, (Option<String>, bool)>,
    ops: u64,
}

pub struct Keyed {
    log: Arc<Mutex<KeyedLog>>,
    task: Task,
}

impl Keyed {
    pub fn start(rt: &tokio::runtime::Runtime, config: &ClientConfig, seed: u64) -> Keyed {
        let log: Arc<Mutex<KeyedLog>> = Default::default();
        let stop: Arc<AtomicBool> = Default::default();
        let handle = {
            let (config, log, stop) = (config.clone(), log.clone(), stop.clone());
            rt.spawn(async move {
                let producer = Producer::new(&config, producer_config()).await.unwrap();
                let mut x = seed | 1;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // xorshift: which key, and put or delete (one in four).
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % KEYS;
                    let value = (!x.is_multiple_of(4)).then(|| format!("v{n}"));
                    n += 1;
                    let record = ProducerRecord {
                        value: value.clone().map(bytes::Bytes::from),
                        ..ProducerRecord::new(KEYED, Some(format!("k{key}")), "")
                    };
                    let outcome = match producer.send(record).await {
                        Ok(f) => f.await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    let mut log = log.lock().unwrap();
                    log.ops += 1;
                    match outcome {
                        Ok(()) => log.last.entry(key).or_insert((None, false)).0 = value,
                        // It may have landed: the key's final state is unknown.
                        Err(_) => {
                            log.last.entry(key).or_insert((None, true)).1 = true;
                        }
                    }
                }
            })
        };
        Keyed {
            log,
            task: Task::new(stop, handle),
        }
    }

    /// Stops writing.
    pub fn stop(&mut self, rt: &tokio::runtime::Runtime) {
        self.task.finish(rt);
    }

    /// Reads the topic from the beginning up to `ends` (partition, HW) and checks it.
    pub fn check(
        mut self,
        rt: &tokio::runtime::Runtime,
        config: &ClientConfig,
        ends: &[(u32, u64)],
    ) -> Vec<String> {
        self.task.finish(rt);
        let log = self.log.lock().unwrap();
        let mut latest: BTreeMap<u64, Option<String>> = BTreeMap::new();
        let mut read = 0usize;
        for &(p, end) in ends {
            for (key, value) in read_keyed(rt, config, p, end) {
                read += 1;
                let key: u64 = key.trim_start_matches('k').parse().unwrap();
                latest.insert(key, value);
            }
        }
        let mut problems = Vec::new();
        let mut checked = 0;
        for (key, (want, unknown)) in &log.last {
            if *unknown {
                continue;
            }
            checked += 1;
            let got = latest.get(key).cloned().flatten();
            if &got != want {
                problems.push(format!(
                    "{KEYED} k{key}: last acknowledged {}, read {}",
                    want.as_deref().unwrap_or("a delete"),
                    got.as_deref().unwrap_or("nothing (deleted)")
                ));
            }
        }
        problems.truncate(10);
        eprintln!(
            "{KEYED}: {} operations, {checked} keys checked, {read} records read after compaction",
            log.ops
        );
        problems
    }
}

/// (key, value) of every record of `keyed`-`p` below `end`, in offset order. Reads
/// until the position reaches `end`: compaction may have removed the records just below
/// it, so the last offset read says nothing.
fn read_keyed(
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    p: u32,
    end: u64,
) -> Vec<(String, Option<String>)> {
    rt.block_on(async {
        let mut c = Consumer::new(
            config,
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..Default::default()
            },
        );
        let tp = TopicPartition::new(KEYED, p);
        c.assign(vec![tp.clone()]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while c.position(&tp).unwrap_or(0) < end {
            assert!(
                Instant::now() < deadline,
                "{tp}: not read up to {end} within 60 s"
            );
            if let Ok(records) = c.poll(Duration::from_millis(200)).await {
                for r in records.into_iter().filter(|r| r.offset < end) {
                    let text =
                        |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
                    out.push((text(r.key).unwrap_or_default(), text(r.value)));
                }
            }
        }
        out
    })
}
