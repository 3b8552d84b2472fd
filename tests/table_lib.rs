//! The Table library (client/src/table) against a real `sluice dev`: bootstrap then
//! follow while a producer writes, read-your-writes with `wait_for`, tombstones,
//! transactions across partitions and topics that become visible at once, change
//! subscriptions, and local snapshots (used when fresh, ignored when corrupt).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{runtime, Dev};
use sluice_client::table::{TXN_END_HEADER, TXN_HEADER};
use sluice_client::{
    Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord, RawTable, Table, TableConfig,
    TableSet,
};
use sluice_proto::Header;

const WAIT: Duration = Duration::from_secs(20);

fn config() -> TableConfig {
    TableConfig {
        // Follow-mode long polls short, so tests that wait on "nothing new" are quick.
        fetch_max_wait: Duration::from_millis(100),
        ..TableConfig::default()
    }
}

async fn create(config: &ClientConfig, topic: &str, partitions: u32) {
    let configs = [("cleanup.policy".to_string(), "compact".to_string())].into();
    Admin::new(config)
        .create_topic(topic, partitions, 1, configs)
        .await
        .unwrap();
}

fn record(topic: &str, key: &str, value: Option<&str>) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        partition: None,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Vec::new(),
        timestamp: None,
    }
}

/// Sends and waits for the acknowledgement; returns (partition, offset).
async fn send(p: &Producer, r: ProducerRecord) -> (u32, u64) {
    let meta = p.send(r).await.unwrap().await.unwrap();
    (meta.partition, meta.offset.expect("acks=all gives offsets"))
}

/// Produces `n` records over `keys` keys (every 7th a tombstone) without waiting for
/// each; folds them into `model`; returns the last offset per partition.
async fn produce_mix(
    p: &Producer,
    topic: &str,
    n: usize,
    keys: usize,
    salt: &str,
    model: &mut HashMap<String, Option<String>>,
) -> BTreeMap<u32, u64> {
    let mut pending = Vec::new();
    for i in 0..n {
        let key = format!("key-{}", (i * 31) % keys);
        let value = (i % 7 != 3).then(|| format!("{salt}-{i}"));
        model.insert(key.clone(), value.clone());
        pending.push(p.send(record(topic, &key, value.as_deref())).await.unwrap());
    }
    let mut last = BTreeMap::new();
    for d in pending {
        let m = d.await.unwrap();
        let o = m.offset.unwrap();
        let e = last.entry(m.partition).or_insert(o);
        *e = (*e).max(o);
    }
    last
}

fn rows_of(t: &RawTable) -> HashMap<String, String> {
    t.snapshot()
        .rows
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn live(model: &HashMap<String, Option<String>>) -> HashMap<String, String> {
    model
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect()
}

#[test]
fn bootstrap_then_follow_equals_the_last_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "users", 4).await;
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        let mut model = HashMap::new();
        produce_mix(&producer, "users", 3000, 500, "boot", &mut model).await;

        let table = RawTable::open(&client, "users", config()).await.unwrap();
        tokio::time::timeout(WAIT, table.ready())
            .await
            .unwrap()
            .unwrap();
        assert!(table.is_ready());
        assert_eq!(rows_of(&table), live(&model), "after bootstrap");
        let stats = table.stats();
        assert_eq!(stats.rows, live(&model).len());
        assert!(stats.bootstrap_ms.is_some() && stats.bytes_per_row > 0.0);

        // Follow: a producer writes while the table applies.
        let last = produce_mix(&producer, "users", 3000, 700, "live", &mut model).await;
        let offsets: Vec<(u32, u64)> = last.into_iter().collect();
        table.wait_for(&offsets, WAIT).await.unwrap();
        assert_eq!(rows_of(&table), live(&model), "after following");
        assert_eq!(table.len(), live(&model).len());
        for (p, o) in offsets {
            assert!(table.position()[&p] > o);
        }
        table.close();
        tokio::time::timeout(WAIT, table.closed()).await.unwrap();
    });
}

#[test]
fn wait_for_returns_once_get_shows_the_write_and_tombstones_remove_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "ryw", 3).await;
        let table = RawTable::open(&client, "ryw", config()).await.unwrap();
        table.ready().await.unwrap();
        assert!(table.is_empty());
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        for i in 0..50 {
            let key = format!("k{i}");
            let at = send(&producer, record("ryw", &key, Some(&format!("v{i}")))).await;
            table.wait_for(&[at], WAIT).await.unwrap();
            assert_eq!(
                table.get(key.as_bytes()).as_deref(),
                Some(format!("v{i}").as_bytes())
            );
        }
        // An empty value is a value; a null value (tombstone) removes the key.
        let at = send(&producer, record("ryw", "k1", Some(""))).await;
        table.wait_for(&[at], WAIT).await.unwrap();
        assert_eq!(table.get(b"k1").as_deref(), Some(&b""[..]));
        let at = send(&producer, record("ryw", "k1", None)).await;
        table.wait_for(&[at], WAIT).await.unwrap();
        assert_eq!(table.get(b"k1"), None);
        assert_eq!(table.len(), 49);
        // An offset not written yet times out with an error naming it.
        let err = table
            .wait_for(&[(at.0, at.1 + 1000)], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not applied"), "{err}");
    });
}

/// Sends one transaction's pieces, one partition at a time, each acknowledged before
/// the next is sent, so the broker holds half a transaction for a while.
async fn send_txn(p: &Producer, id: &str, pieces: &[(&str, u32, usize)]) {
    let list = pieces
        .iter()
        .map(|(t, p, _)| format!("{t}:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    for (topic, partition, records) in pieces {
        for r in 0..*records {
            let mut rec = record(topic, &format!("{id}-{topic}-{partition}-{r}"), Some(id));
            rec.partition = Some(*partition);
            rec.headers.push(Header {
                key: TXN_HEADER.into(),
                value: Some(Bytes::copy_from_slice(id.as_bytes())),
            });
            if r + 1 == *records {
                rec.headers.push(Header {
                    key: TXN_END_HEADER.into(),
                    value: Some(Bytes::copy_from_slice(list.as_bytes())),
                });
            }
            send(p, rec).await;
        }
    }
}

#[test]
fn a_transaction_across_partitions_and_topics_becomes_visible_at_once() {
    transactions_become_visible_at_once(config());
}

/// The same through the large-transaction path (issue 20): every 4-record transaction
/// is over `large_unit_records`, so it is written one record per lock hold behind the
/// fence, across both topics, and made visible in one flip.
#[test]
fn a_transaction_applied_in_chunks_behind_the_fence_becomes_visible_at_once() {
    transactions_become_visible_at_once(TableConfig {
        large_unit_records: 2,
        apply_chunk_records: 1,
        ..config()
    });
}

fn transactions_become_visible_at_once(config: TableConfig) {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    let rt = runtime();
    let set = rt.block_on(async {
        create(&client, "txa", 2).await;
        create(&client, "txb", 1).await;
        let topics = ["txa".to_string(), "txb".to_string()];
        let set = TableSet::open(&client, &topics, config).await.unwrap();
        set.ready().await.unwrap();
        set
    });
    // A reader hammering consistent snapshots: every transaction's 4 rows (2 in
    // txa-0, 1 in txa-1, 1 in txb-0) are all there or none is.
    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (set, stop, torn, seen) = (set.clone(), stop.clone(), torn.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut snapshots = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut per_txn: HashMap<Bytes, usize> = HashMap::new();
                for snap in set.snapshot_all() {
                    for (_, v) in snap.rows {
                        *per_txn.entry(v).or_default() += 1;
                    }
                }
                if per_txn.values().any(|&n| n != 4) {
                    torn.fetch_add(1, Ordering::Relaxed);
                }
                seen.fetch_max(per_txn.len(), Ordering::Relaxed);
                snapshots += 1;
            }
            snapshots
        })
    };
    rt.block_on(async {
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        for i in 0..30 {
            let id = format!("tx{i:03}");
            send_txn(
                &producer,
                &id,
                &[("txa", 0, 2), ("txa", 1, 1), ("txb", 0, 1)],
            )
            .await;
        }
        let a = set.table("txa").unwrap();
        let b = set.table("txb").unwrap();
        common::wait_for("every transaction applied", WAIT, || {
            (a.len() == 90 && b.len() == 30).then_some(())
        });
        // Positions passed every record (the end records were the last ones).
        assert_eq!(a.position()[&0], 60);
        assert_eq!(b.position()[&0], 30);
    });
    stop.store(true, Ordering::Relaxed);
    let snapshots = reader.join().unwrap();
    assert!(snapshots > 0);
    // The reader saw transactions arrive (its last snapshot may predate the last one).
    assert!(seen.load(Ordering::Relaxed) > 0);
    assert_eq!(
        torn.load(Ordering::Relaxed),
        0,
        "a snapshot saw half a transaction"
    );
}

#[test]
fn subscribers_get_key_old_and_new_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "subs", 1).await;
        let table: Table<String, serde_json::Value> =
            Table::open(&client, "subs", config()).await.unwrap();
        table.ready().await.unwrap();
        let mut changes = table.raw().subscribe();
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        send(&producer, record("subs", "\"k\"", Some("{\"n\":1}"))).await;
        send(&producer, record("subs", "\"k\"", Some("{\"n\":2}"))).await;
        let at = send(&producer, record("subs", "\"k\"", None)).await;
        let mut got = Vec::new();
        while got.len() < 3 {
            let set = tokio::time::timeout(WAIT, changes.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(set.topic, "subs");
            got.extend(set.changes.iter().map(|c| {
                let s =
                    |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap());
                (
                    String::from_utf8(c.key.to_vec()).unwrap(),
                    s(&c.old),
                    s(&c.new),
                )
            }));
        }
        let k = "\"k\"".to_string();
        let (v1, v2) = (Some("{\"n\":1}".to_string()), Some("{\"n\":2}".to_string()));
        assert_eq!(
            got,
            vec![
                (k.clone(), None, v1.clone()),
                (k.clone(), v1, v2.clone()),
                (k, v2, None)
            ]
        );
        table.wait_for(&[at], WAIT).await.unwrap();
        assert_eq!(table.get(&"k".to_string()), None);
        // Typed reads decode JSON lazily.
        let at = send(&producer, record("subs", "\"j\"", Some("{\"n\":3}"))).await;
        table.wait_for(&[at], WAIT).await.unwrap();
        assert_eq!(
            table.get(&"j".to_string()),
            Some(serde_json::json!({"n": 3}))
        );
        assert_eq!(table.iter().len(), 1);
    });
}

#[test]
fn a_fresh_snapshot_is_used_and_a_corrupt_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "snap", 2).await;
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        let mut model = HashMap::new();
        produce_mix(&producer, "snap", 1000, 200, "a", &mut model).await;

        // Periodic snapshots: one appears while the table is open.
        let periodic = TableConfig {
            snapshot_interval: Some(Duration::from_millis(200)),
            ..config()
        };
        let t = RawTable::open_with_snapshot(&client, "snap", periodic, snaps.path())
            .await
            .unwrap();
        t.ready().await.unwrap();
        assert_eq!(t.stats().snapshot_rows, None);
        let file = snaps.path().join("snap.snapshot");
        common::wait_for("a periodic snapshot", WAIT, || file.exists().then_some(()));
        t.close();
        tokio::time::timeout(WAIT, t.closed()).await.unwrap();
        assert!(file.exists());

        // Written while closed: read from the snapshot's positions on.
        let last = produce_mix(&producer, "snap", 500, 300, "b", &mut model).await;
        let t = RawTable::open_with_snapshot(&client, "snap", config(), snaps.path())
            .await
            .unwrap();
        t.ready().await.unwrap();
        assert!(t.stats().snapshot_rows.is_some_and(|n| n > 0));
        let offsets: Vec<_> = last.into_iter().collect();
        t.wait_for(&offsets, WAIT).await.unwrap();
        assert_eq!(rows_of(&t), live(&model));
        t.close();
        tokio::time::timeout(WAIT, t.closed()).await.unwrap();

        // A flipped byte fails the CRC: ignored, bootstrapped from the log instead.
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let t = RawTable::open_with_snapshot(&client, "snap", config(), snaps.path())
            .await
            .unwrap();
        t.ready().await.unwrap();
        assert_eq!(t.stats().snapshot_rows, None);
        assert_eq!(rows_of(&t), live(&model));
    });
}

#[test]
fn every_partition_of_a_caught_up_table_long_polls_at_once() {
    // Room for 4 full-size fetches but 16 partitions: once caught up, each partition
    // must still have a (small) long poll waiting, or a write to one of them would
    // wait for other partitions' 30 s long polls to expire.
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "wide", 16).await;
        let config = TableConfig {
            fetch_max_bytes: 4 << 20,
            partition_max_bytes: 1 << 20,
            fetch_max_wait: Duration::from_secs(30),
            ..TableConfig::default()
        };
        let table = RawTable::open(&client, "wide", config).await.unwrap();
        table.ready().await.unwrap();
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        for p in 0..16 {
            let mut r = record("wide", &format!("k{p}"), Some("v"));
            r.partition = Some(p);
            let at = send(&producer, r).await;
            table
                .wait_for(&[at], Duration::from_secs(10))
                .await
                .unwrap();
        }
        assert_eq!(table.len(), 16);
        // A partition the table does not have is an error, not a wait.
        let err = table.wait_for(&[(99, 0)], WAIT).await.unwrap_err();
        assert!(err.to_string().contains("99"), "{err}");
    });
}

#[test]
fn point_reads_do_not_queue_behind_an_applier_waiting_for_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    let rt = runtime();
    let (table, producer) = rt.block_on(async {
        create(&client, "busy", 1).await;
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        let at = send(&producer, record("busy", "a", Some("1"))).await;
        let table = RawTable::open(&client, "busy", config()).await.unwrap();
        table.ready().await.unwrap();
        table.wait_for(&[at], WAIT).await.unwrap();
        (table, producer)
    });
    // A long consistent read: every shard read-locked until told to finish.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (entered, in_for_each) = std::sync::mpsc::channel::<()>();
    let holder = {
        let t = table.clone();
        std::thread::spawn(move || {
            let mut first = true;
            t.for_each(|_, _| {
                if std::mem::take(&mut first) {
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                }
            });
        })
    };
    in_for_each.recv_timeout(WAIT).unwrap();
    rt.block_on(async {
        // The applier cannot apply this while the shards are read-locked.
        let at = send(&producer, record("busy", "a", Some("2"))).await;
        let blocked = table.wait_for(&[at], Duration::from_millis(500)).await;
        assert!(blocked.is_err(), "applied during a consistent read");
        // A point read still answers, with the old value.
        let (tx, rx) = std::sync::mpsc::channel();
        let t = table.clone();
        std::thread::spawn(move || tx.send(t.get(b"a")).unwrap());
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("get blocked");
        assert_eq!(got.as_deref(), Some(&b"1"[..]));
        release.send(()).unwrap();
        holder.join().unwrap();
        table.wait_for(&[at], WAIT).await.unwrap();
        assert_eq!(table.get(b"a").as_deref(), Some(&b"2"[..]));
    });
}

#[test]
fn a_position_below_the_log_start_restarts_at_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    let rt = runtime();
    let admin = Admin::new(&client);
    let configs = [
        ("cleanup.policy", "delete"),
        ("retention.ms", "100"),
        ("segment.bytes", "1024"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    rt.block_on(admin.create_topic("oor", 1, 1, configs))
        .unwrap();
    // One 1 KiB fetch slot: while the applier is held, the fetcher cannot fetch ahead.
    let config = TableConfig {
        fetch_max_bytes: 1024,
        partition_max_bytes: 1024,
        fetch_max_wait: Duration::from_millis(100),
        ..TableConfig::default()
    };
    let (table, producer) = rt.block_on(async {
        let table = RawTable::open(&client, "oor", config).await.unwrap();
        table.ready().await.unwrap();
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        let at = send(&producer, record("oor", "seed", Some("s"))).await;
        table.wait_for(&[at], WAIT).await.unwrap();
        (table, producer)
    });
    // Hold the applier with a consistent read, so the table falls behind.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (entered, in_for_each) = std::sync::mpsc::channel::<()>();
    let holder = {
        let t = table.clone();
        std::thread::spawn(move || {
            let mut first = true;
            t.for_each(|_, _| {
                if std::mem::take(&mut first) {
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                }
            });
        })
    };
    in_for_each.recv_timeout(WAIT).unwrap();
    let held_at = table.position()[&0];
    let last = rt.block_on(async {
        let mut last = (0, 0);
        for i in 0..200 {
            last = send(&producer, record("oor", &format!("k{i:03}"), Some("value"))).await;
        }
        last
    });
    // Retention removes the sealed segments the table has not read.
    wait_for_log_start(&rt, &admin, "oor", held_at + 20);
    release.send(()).unwrap();
    holder.join().unwrap();
    rt.block_on(async {
        let at = send(&producer, record("oor", "after", Some("a"))).await;
        table.wait_for(&[at], WAIT).await.unwrap();
        assert!(at.1 > last.1);
        assert_eq!(table.get(b"after").as_deref(), Some(&b"a"[..]));
        // Keys written after the new log start are there; those only in the deleted
        // segments were never read (the table had fetched just one 1 KiB answer).
        assert!(table.get(b"k199").is_some());
        assert!(
            table.len() < 202,
            "{} rows: nothing was skipped",
            table.len()
        );
        assert!(table.is_ready());
    });
}

fn wait_for_log_start(rt: &tokio::runtime::Runtime, admin: &Admin, topic: &str, past: u64) {
    common::wait_for("retention to move the log start", WAIT, || {
        let d = rt.block_on(admin.describe_topic(topic)).ok()?;
        let start = d.partitions.first()?.log_start_offset?;
        (start > past).then_some(())
    });
}

#[test]
fn opening_a_missing_topic_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig {
        api_timeout: Duration::from_secs(2),
        ..ClientConfig::new(&dev.addr)
    };
    runtime().block_on(async {
        let err = RawTable::open(&client, "nope", config()).await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    });
}
