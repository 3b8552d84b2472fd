//! The producer splits a batch the leader refuses as larger than the topic's
//! `max.message.bytes` (as Kafka's producer does), through the real binary: a bulk
//! produce to a topic with a 2000-byte limit succeeds record for record, exactly once,
//! in order, at the offsets the delivery futures report; only a record too large on its
//! own fails, alone, with MESSAGE_TOO_LARGE.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Dev;
use sluice_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use sluice_proto::{ErrorCode, TopicPartition};

const PARTITIONS: u32 = 2;
const RECORDS: usize = 2000;
/// The record too large to be sent even alone: 5005 bytes with its key.
const BIG: usize = 1000;

fn value(i: usize) -> Vec<u8> {
    if i == BIG {
        return vec![b'x'; 5000];
    }
    format!("{i:06}-{}", "v".repeat(93)).into_bytes()
}

fn index_of(value: &[u8]) -> usize {
    std::str::from_utf8(&value[..6]).unwrap().parse().unwrap()
}

async fn read_partition(config: &ClientConfig, tp: &TopicPartition, n: usize) -> Vec<(u64, Bytes)> {
    let mut c = Consumer::new(
        config,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    c.assign(vec![tp.clone()]);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.unwrap() {
            out.push((r.offset, r.value.unwrap()));
        }
    }
    out
}

#[test]
fn a_bulk_produce_over_max_message_bytes_is_split_and_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_string(), "2000".to_string());
        Admin::new(&config)
            .create_topic("small", PARTITIONS, 1, configs)
            .await
            .unwrap();
        // Defaults: idempotent, acks=all, 16 KiB batches, 5 ms linger.
        let producer = Producer::new(&config, ProducerConfig::default())
            .await
            .unwrap();
        assert_eq!(producer.config().acks, Acks::All);
        let mut futures = Vec::new();
        for i in 0..RECORDS {
            let key = format!("key-{}", i % 7);
            let record = ProducerRecord::new("small", Some(key), value(i));
            futures.push(producer.send(record).await.unwrap());
        }
        producer.flush().await;

        // (partition, offset) -> record index, as the futures report them.
        let mut reported: HashMap<(u32, u64), usize> = HashMap::new();
        for (i, f) in futures.into_iter().enumerate() {
            match f.await {
                Ok(m) if i != BIG => {
                    let at = (m.partition, m.offset.expect("acks=all has an offset"));
                    assert_eq!(reported.insert(at, i), None, "two records at {at:?}");
                }
                Ok(m) => panic!("the 5000-byte record was accepted: {m:?}"),
                Err(e) if i == BIG => {
                    assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
                    let text = e.to_string();
                    assert!(
                        text.contains("5005 bytes"),
                        "names the record's size: {text}"
                    );
                    assert!(
                        text.contains("max.message.bytes=2000"),
                        "names the limit: {text}"
                    );
                }
                Err(e) => panic!("record {i} failed: {e}"),
            }
        }
        assert_eq!(reported.len(), RECORDS - 1);

        let mut read = 0;
        for p in 0..PARTITIONS {
            let tp = TopicPartition::new("small", p);
            let want = reported.keys().filter(|(q, _)| *q == p).count();
            let records = read_partition(&config, &tp, want).await;
            assert_eq!(
                records.len(),
                want,
                "partition {p}: each record exactly once"
            );
            let mut previous = None;
            for (offset, v) in records {
                let i = index_of(&v);
                assert_eq!(v, value(i), "record {i} intact");
                assert_eq!(
                    reported.get(&(p, offset)),
                    Some(&i),
                    "partition {p} offset {offset} holds record {i}, as its future said"
                );
                assert!(previous < Some(i), "partition {p}: {i} after {previous:?}");
                previous = Some(i);
            }
            read += want;
        }
        assert_eq!(read, RECORDS - 1);

        // The producer learned the size: later bulk sends go through as well.
        let later: Vec<_> = {
            let mut v = Vec::new();
            for i in 0..200 {
                let record = ProducerRecord::new("small", None::<Bytes>, value(i));
                v.push(producer.send(record).await.unwrap());
            }
            v
        };
        for f in later {
            f.await.unwrap();
        }
    });

    let input: String = (0..3000)
        .map(|i| format!("line-{i:05}-{}\n", "c".repeat(80)))
        .collect();
    let out = dev.cli(&["produce", "small"], &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sluice produce: {stderr}");
    assert!(stderr.contains("3000 record(s) acknowledged"), "{stderr}");
    dev.stop();
}

/// A gapless producer (what the CDC connector uses): once a record of a partition fails
/// for good, nothing queued behind it in that partition is written — the partition's
/// records land as a prefix of what was sent, never with a hole that later records hide
/// — while other partitions go on; `reset_partition` lets it send again. A record over
/// the producer's own `max_request_bytes` fails at `send`, without a request.
#[test]
fn a_gapless_producer_writes_nothing_after_a_failed_record_of_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_string(), "2000".to_string());
        Admin::new(&config)
            .create_topic("gapless", 2, 1, configs)
            .await
            .unwrap();
        let producer = Producer::new(
            &config,
            ProducerConfig {
                gapless: true,
                max_request_bytes: 100_000,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();

        let over = ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new("gapless", Some("k"), vec![b'x'; 200_000])
        };
        let e = producer.send(over).await.err().expect("refused at send");
        assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
        assert!(
            producer.partition_gap("gapless", 0).is_none(),
            "nothing was sent"
        );

        // Partition 0: 20 small records, then one the topic refuses, then 50 more sent
        // at once (queued behind it); partition 1 gets records throughout.
        let send = |p: u32, v: Vec<u8>| {
            let producer = producer.clone();
            async move {
                producer
                    .send(ProducerRecord {
                        partition: Some(p),
                        ..ProducerRecord::new("gapless", Some("k"), v)
                    })
                    .await
            }
        };
        let mut before = Vec::new();
        for i in 0..20 {
            before.push(send(0, value(i)).await.unwrap());
        }
        let big = send(0, vec![b'x'; 5000]).await.unwrap();
        let mut after = Vec::new();
        for i in 100..150 {
            after.push(send(0, value(i)).await.unwrap());
        }
        let mut other = Vec::new();
        for i in 0..30 {
            other.push(send(1, value(i)).await.unwrap());
        }
        for f in before {
            f.await.unwrap();
        }
        let e = big.await.expect_err("the topic refuses 5000 bytes");
        assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
        for f in after {
            let e = f
                .await
                .expect_err("nothing after the failed record is written");
            assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
            assert!(e.to_string().contains("gapless"), "{e}");
        }
        for f in other {
            f.await.expect("the other partition goes on");
        }
        let stopped = producer.partition_gap("gapless", 0).expect("stopped");
        assert_eq!(stopped.code(), Some(ErrorCode::MessageTooLarge));
        let e = send(0, value(200))
            .await
            .err()
            .expect("refused while stopped");
        assert!(e.to_string().contains("gapless"), "{e}");

        let tp0 = TopicPartition::new("gapless", 0);
        let hw = |d: sluice_client::TopicDescription| d.partitions[0].high_watermark;
        let admin = Admin::new(&config);
        assert_eq!(hw(admin.describe_topic("gapless").await.unwrap()), Some(20));
        let records = read_partition(&config, &tp0, 20).await;
        let got: Vec<usize> = records.iter().map(|(_, v)| index_of(v)).collect();
        assert_eq!(
            got,
            (0..20).collect::<Vec<_>>(),
            "partition 0 is the prefix before the failure"
        );

        producer.reset_partition("gapless", 0);
        send(0, value(300)).await.unwrap().await.unwrap();
        let records = read_partition(&config, &tp0, 21).await;
        assert_eq!(records.len(), 21);
        assert_eq!(index_of(&records[20].1), 300);
    });
    dev.stop();
}
