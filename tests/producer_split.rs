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
