//! Log compaction (`cleanup.policy=compact`) through the real binary: a replicated
//! compacted topic keeps the latest value of every key on every replica through a
//! kill -9 of the leader in the middle of a cleaner pass; keyless records are refused
//! on compacted topics only; tombstones are readable until `delete.retention.ms` after
//! the cleaner first saw them, then gone.
//!
//! The replicated test reads each stopped broker's segment files itself (keys and null
//! values matter here, which `replica_partition_records` drops), so what it checks is
//! what is on disk, not what a fetch path chooses to return.
//!
//! Size: `SLUICE_COMPACTION_UPDATES` updates over a tenth as many keys (default
//! [`DEFAULT_UPDATES`], 1 M over 100 k: about 60 s in a debug build on two cores;
//! set it lower on a slower machine).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{all_in_sync, Cluster};
use common::{free_port, http_get, wait_for, Dev};
use sluice_client::{
    Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord, RawTable, TableConfig,
};
use sluice_proto::batch::Batches;

const TOPIC: &str = "accounts";
const PARTITIONS: u32 = 2;
/// Updates produced by the replicated test unless `SLUICE_COMPACTION_UPDATES` says
/// otherwise; keys are a tenth of that.
const DEFAULT_UPDATES: usize = 1_000_000;
/// `delete.retention.ms` of the replicated test: longer than the killed broker is down
/// (see the test's doc for why).
const DEFAULT_DELETE_RETENTION_MS: u64 = 2_000;
/// Bytes of every live value: enough that compaction's saving dwarfs record overhead.
const VALUE_BYTES: usize = 100;
/// Share of updates that are deletes (tombstones), in per mille.
const DELETE_PER_MILLE: u64 = 50;
/// Share of updates sent after the leader is killed, in per mille.
const TAIL_PER_MILLE: usize = 20;

/// The update at index `i` of the run: (key, value), `None` a delete.
type Update = (String, Option<String>);

/// `n` updates over `n / 10` keys, keys and deletes drawn by a xorshift from `seed`.
fn updates(seed: u64, n: usize) -> Vec<Update> {
    let keys = (n / 10).max(1) as u64;
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let key = format!("key-{:06}", next() % keys);
            let value = (next() % 1000 >= DELETE_PER_MILLE).then(|| {
                let head = format!("update-{i:08}-");
                format!("{head}{}", "v".repeat(VALUE_BYTES - head.len()))
            });
            (key, value)
        })
        .collect()
}

/// Where an acknowledged update landed: (partition, offset).
type Placed = (u32, u64);

/// Sends `batch` (acks=all, idempotent) with at most `window` records unsettled and
/// returns where each landed. Every record must be acknowledged: two of three replicas
/// stay alive throughout and `min.insync.replicas=2`.
async fn produce(
    config: &ClientConfig,
    batch: &[Update],
    window: usize,
    acked: &AtomicUsize,
) -> Vec<Placed> {
    let producer = Producer::new(
        config,
        ProducerConfig {
            acks: Acks::All,
            idempotence: true,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            // A killed leader leaves no one to close the connection: the request
            // timeout is how the producer notices and moves to the new leader.
            request_timeout: Duration::from_secs(3),
            delivery_timeout: Duration::from_secs(90),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut placed = Vec::with_capacity(batch.len());
    let mut pending = std::collections::VecDeque::new();
    for (key, value) in batch {
        let record = ProducerRecord {
            topic: TOPIC.into(),
            partition: None,
            key: Some(Bytes::from(key.clone())),
            value: value.clone().map(Bytes::from),
            headers: Vec::new(),
            timestamp: None,
        };
        pending.push_back(producer.send(record).await.unwrap());
        while pending.len() > window {
            placed.push(settle(pending.pop_front().unwrap()).await);
            acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    for f in pending {
        placed.push(settle(f).await);
    }
    producer.close().await;
    placed
}

async fn settle(f: sluice_client::DeliveryFuture) -> Placed {
    let meta = f
        .await
        .expect("acks=all with two of three replicas alive and min.insync.replicas=2");
    (
        meta.partition,
        meta.offset.expect("acks=all reports offsets"),
    )
}

/// The latest update of every key: key → (partition, offset, value; `None` deleted).
type Model = HashMap<String, (u32, u64, Option<String>)>;

fn model(updates: &[Update], placed: &[Placed]) -> Model {
    assert_eq!(updates.len(), placed.len());
    let mut m: Model = HashMap::new();
    for ((key, value), &(p, o)) in updates.iter().zip(placed) {
        let e = m.entry(key.clone()).or_insert((p, o, value.clone()));
        assert_eq!(e.0, p, "{key} went to partitions {} and {p}", e.0);
        if o >= e.1 {
            *e = (p, o, value.clone());
        }
    }
    m
}

/// One record of a replica's files.
#[derive(Debug, Clone)]
struct Stored {
    offset: u64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

/// A stopped broker's copy of one partition, read from its `.log` files in offset
/// order: the records, the bytes of those files, and the cleaner checkpoint (the first
/// offset not yet compacted; 0 when absent).
struct Replica {
    records: Vec<Stored>,
    log_bytes: u64,
    cleaned_to: u64,
}

fn read_replica(pdir: &Path) -> Replica {
    read_replica_at(pdir, false)
}

fn partition_dir(dir: &Path, broker: u32, partition: u32) -> PathBuf {
    dir.join(format!("broker-{broker}"))
        .join(format!("{TOPIC}-{partition}"))
}

/// Every record of a replica's files. `killed`: the broker was just killed -9, so the
/// last file may end in a batch cut short mid-write (recovery truncates it on restart);
/// reading stops there. Anywhere else a damaged batch fails the test.
fn read_replica_at(pdir: &Path, killed: bool) -> Replica {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(pdir)
        .unwrap_or_else(|e| panic!("{}: {e}", pdir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let last = logs.last().cloned();
    let (mut records, mut log_bytes) = (Vec::new(), 0);
    for l in logs {
        let data = std::fs::read(&l).unwrap();
        log_bytes += data.len() as u64;
        for b in Batches::new(Bytes::from(data)) {
            let b = match b {
                Ok(b) => b,
                Err(e)
                    if killed
                        && Some(&l) == last.as_ref()
                        && e.to_string().contains("truncated") =>
                {
                    break
                }
                Err(e) => panic!("{}: {e}", l.display()),
            };
            if b.is_control() {
                continue;
            }
            for r in b.records().unwrap() {
                records.push(Stored {
                    offset: b.base_offset() as u64 + r.offset_delta as u64,
                    key: r.key,
                    value: r.value,
                });
            }
        }
    }
    // "FIRST_DIRTY TOMBSTONES_REMOVED_BELOW" (docs/compaction.md).
    let cleaned_to = std::fs::read_to_string(pdir.join("cleaner-offset-checkpoint"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Replica {
        records,
        log_bytes,
        cleaned_to,
    }
}

/// Every way `replica` (broker `broker`, partition `partition`) disagrees with the
/// model; empty when it agrees. `tombstones_kept`: no delete horizon can have passed
/// yet, so every deleted key must still be there as a tombstone.
fn replica_violations(
    broker: u32,
    partition: u32,
    r: &Replica,
    m: &Model,
    tombstones_kept: bool,
) -> Vec<String> {
    let what = format!("broker {broker} {TOPIC}-{partition}");
    let mut problems = Vec::new();
    if let Some(w) = r.records.windows(2).find(|w| w[0].offset >= w[1].offset) {
        problems.push(format!(
            "{what}: offset {} followed by {} (offsets must strictly increase)",
            w[0].offset, w[1].offset
        ));
    }
    // Replay the log: what a reader from the beginning ends up with.
    let mut live: HashMap<String, (u64, Option<String>)> = HashMap::new();
    let mut seen_below_checkpoint: HashMap<String, u64> = HashMap::new();
    for s in &r.records {
        let Some(key) = &s.key else {
            problems.push(format!("{what}: keyless record at offset {}", s.offset));
            continue;
        };
        let key = String::from_utf8(key.to_vec()).unwrap();
        let value = s
            .value
            .as_ref()
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        if s.offset < r.cleaned_to {
            if let Some(first) = seen_below_checkpoint.insert(key.clone(), s.offset) {
                problems.push(format!(
                    "{what}: {key} at offsets {first} and {}, both below the cleaner checkpoint {}",
                    s.offset, r.cleaned_to
                ));
            }
        }
        match m.get(&key) {
            None => problems.push(format!("{what}: {key} was never produced")),
            Some(&(p, o, _)) if p != partition || s.offset > o => problems.push(format!(
                "{what}: {key} at offset {} but its last update is {TOPIC}-{p} offset {o}",
                s.offset
            )),
            Some(&(_, o, ref v)) if s.offset == o && v != &value => problems.push(format!(
                "{what}: {key} at offset {o} holds {value:?}, produced {v:?}"
            )),
            Some(_) => {}
        }
        live.insert(key, (s.offset, value));
    }
    for (key, (p, o, v)) in m.iter().filter(|e| e.1 .0 == partition) {
        match (live.get(key), v) {
            (Some((at, got)), _) if at == o && got == v => {}
            // A deleted key may be gone altogether once its tombstone expired.
            (None, None) if !tombstones_kept => {}
            (got, _) => problems.push(format!(
                "{what}: {key} should end at offset {o} (partition {p}) with {v:?}, replays to {got:?}"
            )),
        }
    }
    if problems.len() > 20 {
        let n = problems.len();
        problems.truncate(20);
        problems.push(format!("{what}: … {n} problems in all"));
    }
    problems
}

/// `sluice_log_dirty_ratio` of every partition of [`TOPIC`] in one scrape.
fn dirty_ratios(scrape: &str) -> Vec<f64> {
    let topic = format!("topic=\"{TOPIC}\"");
    scrape
        .lines()
        .filter(|l| l.starts_with("sluice_log_dirty_ratio{") && l.contains(&topic))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

fn scrape(metrics: &str) -> Option<String> {
    http_get(metrics, "/metrics").filter(|s| s.starts_with("HTTP/1.") && s.contains(" 200 "))
}

fn updates_wanted() -> usize {
    std::env::var("SLUICE_COMPACTION_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_UPDATES)
}

/// Three brokers, RF 3, two partitions, `min.insync.replicas=2`, 256 KiB segments,
/// `min.cleanable.dirty.ratio=0.01`, cleaners polling every 200 ms. A producer writes
/// N updates over N/10 keys (5 % deletes); the leader of partition 0 is killed -9 while
/// its cleaner has a pass under way (a `cleaner.tmp` or `cleaner.swap-*` directory in
/// the partition), the rest of the updates go to the new leader, the killed broker
/// comes back and catches up, and the cleaners finish. Then, from each stopped
/// replica's files: offsets strictly increase; replaying the log gives exactly the
/// model's latest value per key, each at the offset it was acknowledged with (a
/// deleted key a tombstone there, or absent once `delete.retention.ms` could have
/// passed); below the cleaner checkpoint no key appears
/// twice; and the files hold less than 30 % of the bytes produced. Restarted, a fresh
/// `RawTable` equals the model.
///
/// `delete.retention.ms` (2 s) is shorter than the killed broker stays down, so the
/// leader's cleaner drops tombstones the follower never fetched; the leader must then
/// make that follower start over from the log start, or its copy would keep the
/// deleted keys' older values forever (found by this test; see docs/compaction.md).
/// Tombstone expiry itself is
/// `tombstones_disappear_after_delete_retention`.
#[test]
fn compacted_topic_rf3_survives_leader_kill_mid_clean() {
    let began = Instant::now();
    let n = updates_wanted();
    let seed = std::env::var("SLUICE_COMPACTION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0ffee_u64);
    eprintln!(
        "compaction test: {n} updates over {} keys, seed {seed}",
        n / 10
    );
    let all = updates(seed, n);
    let produced_bytes: u64 = all
        .iter()
        .map(|(k, v)| (k.len() + v.as_ref().map_or(0, |v| v.len())) as u64)
        .sum();
    let delete_retention_ms: u64 = std::env::var("SLUICE_COMPACTION_DELETE_RETENTION_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_DELETE_RETENTION_MS);
    let tail = (n * TAIL_PER_MILLE / 1000).max(1);
    let (head, rest) = all.split_at(n - tail);

    let dir = tempfile::tempdir().unwrap();
    let metrics: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let brokers = metrics
        .iter()
        .map(|m| {
            let args = ["--metrics", m, "--log-cleaner-backoff-ms", "200"];
            let args = args.iter().map(|s| s.to_string()).collect();
            (format!("127.0.0.1:{}", free_port()), Vec::new(), args)
        })
        .collect();
    let store = format!("embedded:{}", dir.path().join("controller").display());
    let controller = vec![format!("127.0.0.1:{}", free_port())];
    let mut cluster = Cluster::start_custom(dir.path(), controller, brokers, &store);
    let (rt, config, admin) = cluster.client();
    let configs: BTreeMap<String, String> = [
        ("cleanup.policy", "compact"),
        ("min.insync.replicas", "2"),
        ("segment.bytes", "262144"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", &delete_retention_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    rt.block_on(admin.create_topic(TOPIC, PARTITIONS, 3, configs))
        .unwrap();
    let ps = wait_for("leaders with full ISRs", Duration::from_secs(30), || {
        all_in_sync(&rt, &admin, TOPIC, 3).filter(|ps| ps.len() == PARTITIONS as usize)
    });
    let leader = ps
        .iter()
        .find(|p| p.partition == 0)
        .unwrap()
        .leader
        .unwrap();

    let acked = Arc::new(AtomicUsize::new(0));
    let producing = {
        let (config, head, acked) = (config.clone(), head.to_vec(), acked.clone());
        rt.spawn(async move { produce(&config, &head, 20_000, &acked).await })
    };
    // The kill must land inside a pass (a new segment being written or swapped in), with
    // a third of the updates in, so that cleaned segments, dirty ones and a checkpoint
    // all exist by then, and after the leader's cleaner has completed passes.
    let leader_dir = partition_dir(dir.path(), leader, 0);
    wait_for(
        "the leader's cleaner in the middle of a pass (after one completed)",
        Duration::from_secs(240),
        || {
            if acked.load(Ordering::Relaxed) < head.len() / 3 {
                return None;
            }
            let mid_pass = std::fs::read_dir(&leader_dir).ok()?.any(|e| {
                e.ok().is_some_and(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name == "cleaner.tmp" || name.starts_with("cleaner.swap-")
                })
            });
            let runs = common::metric(
                &scrape(&metrics[leader as usize - 1])?,
                "sluice_cleaner_runs_total",
            )?;
            (mid_pass && runs > 0.0).then_some(())
        },
    );
    cluster.kill9(leader as usize - 1);
    let ends: Vec<Option<u64>> = (0..PARTITIONS)
        .map(|p| {
            let r = read_replica_at(&partition_dir(dir.path(), leader, p), true);
            r.records.last().map(|s| s.offset + 1)
        })
        .collect();
    eprintln!("broker {leader}'s log end offsets when killed: {ends:?}");
    eprintln!(
        "killed broker {leader} (leader of {TOPIC}-0) mid-pass at {:?}",
        began.elapsed()
    );
    let mut placed = rt.block_on(producing).unwrap();
    placed.extend(rt.block_on(produce(&config, rest, 20_000, &AtomicUsize::new(0))));
    eprintln!("all {n} updates acknowledged at {:?}", began.elapsed());
    let m = model(&all, &placed);

    cluster.start_broker(leader as usize - 1);
    wait_for(
        "every replica back in sync",
        Duration::from_secs(120),
        || all_in_sync(&rt, &admin, TOPIC, 3),
    );
    wait_for(
        "every replica's cleaner done (dirty ratio 0 on every partition)",
        Duration::from_secs(120),
        || {
            metrics
                .iter()
                .all(|m| {
                    scrape(m).is_some_and(|s| {
                        let r = dirty_ratios(&s);
                        r.len() == PARTITIONS as usize && r.iter().all(|&x| x == 0.0)
                    })
                })
                .then_some(())
        },
    );
    eprintln!("cleaners done at {:?}", began.elapsed());
    cluster.stop_all();
    // A delete horizon is set when a pass first keeps a tombstone, so none has passed
    // if the whole run so far took less than delete.retention.ms.
    let tombstones_kept = began.elapsed().as_millis() < delete_retention_ms as u128;

    let mut problems = Vec::new();
    for broker in 1..=3u32 {
        let mut log_bytes = 0;
        for p in 0..PARTITIONS {
            let r = read_replica(&partition_dir(dir.path(), broker, p));
            assert!(
                r.cleaned_to > 0,
                "broker {broker} {TOPIC}-{p}: the cleaner never completed a pass"
            );
            problems.extend(replica_violations(broker, p, &r, &m, tombstones_kept));
            log_bytes += r.log_bytes;
        }
        eprintln!(
            "broker {broker}: {log_bytes} bytes of segments for {produced_bytes} bytes produced"
        );
        assert!(
            (log_bytes as f64) < 0.30 * produced_bytes as f64,
            "broker {broker}: {log_bytes} bytes on disk, not below 30 % of the {produced_bytes} \
             bytes of keys and values produced ({} keys)",
            n / 10
        );
    }
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));

    for i in 0..3 {
        cluster.start_broker(i);
    }
    wait_for(
        "every replica in sync after restart",
        Duration::from_secs(60),
        || all_in_sync(&rt, &admin, TOPIC, 3),
    );
    let rows = rt.block_on(async {
        let table = RawTable::open(&config, TOPIC, TableConfig::default())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), table.ready())
            .await
            .expect("table ready within 60 s")
            .unwrap();
        let mut rows: HashMap<String, String> = HashMap::new();
        table.for_each(|k, v| {
            rows.insert(
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            );
        });
        table.close();
        rows
    });
    let expected: HashMap<String, String> = m
        .iter()
        .filter_map(|(k, (_, _, v))| Some((k.clone(), v.clone()?)))
        .collect();
    assert_eq!(
        rows.len(),
        expected.len(),
        "seed {seed}: the table's row count"
    );
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| rows.get(*k) != Some(v))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "seed {seed}: table rows differ: {wrong:?}"
    );
    eprintln!("done at {:?}", began.elapsed());
}

fn create_topic(dev: &Dev, name: &str, configs: &[&str]) {
    let mut args = vec!["topic", "create", name, "-p", "1", "-r", "1"];
    for c in configs {
        args.extend(["--config", c]);
    }
    dev.ok(&args, "");
}

/// `offset key value-length` of every record of `topic`, value length -1 for a
/// tombstone.
fn dump(dev: &Dev, topic: &str) -> Vec<(u64, String, i64)> {
    let out = dev.ok(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "-f",
            "%o %k %S\\n",
        ],
        "",
    );
    out.lines()
        .map(|l| {
            let mut f = l.split(' ');
            let mut next = || f.next().unwrap_or_else(|| panic!("short line {l:?}"));
            (
                next().parse().unwrap(),
                next().to_string(),
                next().parse().unwrap(),
            )
        })
        .collect()
}

/// `sluice produce` without `--key-separator` sends keyless records: a compacted topic
/// refuses them with a one-line INVALID_RECORD error and stores nothing, while the same
/// line goes to a non-compacted topic, and a keyed line to the compacted one.
#[test]
fn keyless_records_are_refused_on_compacted_topics() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_topic(&dev, "compacted", &["cleanup.policy=compact"]);
    create_topic(&dev, "plain", &[]);

    let out = dev.cli(&["produce", "compacted"], "no key here\n");
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // `produce` reports what was acknowledged on a line of its own, then the error.
    assert!(stderr.contains("0 record(s) acknowledged"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("INVALID_RECORD") && errors[0].contains("no key"),
        "the error names INVALID_RECORD and the missing key: {stderr}"
    );
    assert_eq!(
        dump(&dev, "compacted"),
        vec![],
        "a refused record is not stored"
    );

    dev.ok(&["produce", "plain"], "no key here\n");
    let plain = dev.ok(
        &["consume", "plain", "--from-beginning", "--exit-at-end"],
        "",
    );
    assert_eq!(plain.trim(), "no key here");

    dev.ok(
        &["produce", "compacted", "--key-separator", ":"],
        "k:with a key\n",
    );
    assert_eq!(dump(&dev, "compacted"), vec![(0, "k".to_string(), 10)]);
}

/// One broker, `delete.retention.ms=1000`, tiny segments so every produce rolls one.
/// `k=v` then a tombstone for `k`: the tombstone is readable at once; once the cleaner
/// has stamped its delete horizon and that horizon has passed, no record of `k` is left,
/// while the other keys stay.
#[test]
fn tombstones_disappear_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--log-cleaner-backoff-ms", "100"]);
    create_topic(
        &dev,
        "tomb",
        &[
            "cleanup.policy=compact",
            "delete.retention.ms=1000",
            "segment.bytes=100",
            "min.cleanable.dirty.ratio=0.01",
        ],
    );
    let produce = |lines: &str| {
        dev.ok(
            &[
                "produce",
                "tomb",
                "--key-separator",
                ":",
                "--null-value-if-empty",
            ],
            lines,
        );
    };
    produce("k:v\n");
    produce("k:\n");
    let at_once = dump(&dev, "tomb");
    assert!(
        at_once.contains(&(1, "k".to_string(), -1)),
        "the tombstone is readable at once: {at_once:?}"
    );
    // Later records seal the tombstone's segment and move the high watermark past it.
    produce("other:1\n");
    produce("other:2\n");
    produce("last:3\n");
    let left = wait_for("no record of k left", Duration::from_secs(30), || {
        let records = dump(&dev, "tomb");
        records.iter().all(|r| r.1 != "k").then_some(records)
    });
    assert!(
        left.contains(&(3, "other".to_string(), 1)) && left.contains(&(4, "last".to_string(), 1)),
        "the latest record of every other key stays, at its offset: {left:?}"
    );
}

/// Issue 18: a pass whose dedupe map filled before a tombstone past its horizon removed
/// that tombstone and kept the key's older value below the map's end — the deleted key
/// came back for good. One broker, a 100-byte dedupe buffer (a 3-key map),
/// `delete.retention.ms=0` (every pass after the first that stamps a tombstone may
/// remove it), every record its own batch: `a=old`, 40 other keys, a delete of `a`, all
/// in one segment, then enough records to seal it (the first pass maps three keys and
/// rewrites the whole segment, tombstone included). Once the tombstone is gone, neither
/// a consumer from the beginning nor `table dump` sees `a`, and every other key keeps
/// its value.
#[test]
fn a_full_dedupe_map_never_brings_a_deleted_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(
        dir.path(),
        &[
            "--log-cleaner-backoff-ms",
            "100",
            "--log-cleaner-dedupe-buffer-size",
            "100",
        ],
    );
    let topic = "deletes";
    create_topic(
        &dev,
        topic,
        &[
            "cleanup.policy=compact",
            "delete.retention.ms=0",
            "segment.bytes=4096",
            // Room in the indexes for an entry per batch: a full index would roll the
            // segment early and part the tombstone from the map's end.
            "index.interval.bytes=32",
            "min.cleanable.dirty.ratio=0.01",
        ],
    );
    let others: Vec<String> = (1..=40).map(|i| format!("k{i:02}")).collect();
    let mut records: Vec<(String, Option<String>)> = vec![("a".into(), Some("old".into()))];
    records.extend(others.iter().map(|k| (k.clone(), Some("v".to_string()))));
    records.push(("a".into(), None));
    // Seals the segment holding the rest and moves the high watermark past it.
    records.extend((1..=40).map(|i| (format!("pad{i:02}"), Some("p".to_string()))));
    let rt = common::runtime();
    rt.block_on(async {
        let config = ClientConfig::new(&dev.addr);
        let producer = Producer::new(
            &config,
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::ZERO,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for (key, value) in records {
            // Awaited one by one: one record per batch, so a full map stops between them.
            let record = ProducerRecord {
                topic: topic.into(),
                partition: Some(0),
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
                headers: Vec::new(),
                timestamp: None,
            };
            producer.send(record).await.unwrap().await.unwrap();
        }
        producer.close().await;
    });
    let left = wait_for(
        "the cleaner to remove the tombstone of a",
        Duration::from_secs(60),
        || {
            let records = dump(&dev, topic);
            records
                .iter()
                .all(|r| !(r.1 == "a" && r.2 == -1))
                .then_some(records)
        },
    );
    let a: Vec<_> = left.iter().filter(|r| r.1 == "a").collect();
    assert!(
        a.is_empty(),
        "the tombstone of a is gone but a consumer still reads a: {a:?}"
    );
    for k in &others {
        assert!(
            left.iter().any(|r| &r.1 == k && r.2 == 1),
            "{k} lost its value: {left:?}"
        );
    }
    let table = dev.ok(&["table", "dump", topic, "--output", "json"], "");
    let rows: Vec<serde_json::Value> = table.lines().map(common::json).collect();
    assert!(
        rows.iter().all(|r| r["key"] != "a"),
        "table dump shows the deleted key a: {table}"
    );
    assert_eq!(rows.len(), others.len() + 40, "{table}");
}
