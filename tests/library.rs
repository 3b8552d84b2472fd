//! The client libraries and the raw gRPC API against a real `sluice dev`: keyed
//! partitioning, seeks, pause/resume, long-poll fetches woken by appends, and
//! malformed or oversized requests answered with typed errors while the broker keeps
//! serving.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{runtime, Dev};
use sluice_client::partitioner::partition_for_key;
use sluice_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Seek,
};
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::{FetchPartition, FetchRequest, ProducePartition, ProduceRequest};
use sluice_proto::{BatchBuilder, Compression, ErrorCode, TopicPartition};

async fn consume_all(
    config: &ClientConfig,
    tp: &TopicPartition,
    n: usize,
) -> Vec<sluice_client::ConsumerRecord> {
    let mut c = Consumer::new(
        config,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    c.assign(vec![tp.clone()]);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

#[test]
fn producer_consumer_round_trip_with_keys_compression_and_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        let admin = Admin::new(&config);
        admin
            .create_topic("lib", 4, 1, BTreeMap::new())
            .await
            .unwrap();
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let producer = Producer::new(
                &config,
                ProducerConfig {
                    acks: Acks::All,
                    compression,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let mut futures = Vec::new();
            for i in 0..200 {
                let key = format!("user-{i}");
                let r = ProducerRecord {
                    timestamp: Some(1_000_000 + i),
                    ..ProducerRecord::new("lib", Some(key.clone()), format!("{compression:?}-{i}"))
                };
                futures.push((key, producer.send(r).await.unwrap()));
            }
            for (key, f) in futures {
                let meta = f.await.unwrap();
                assert_eq!(
                    meta.partition,
                    partition_for_key(key.as_bytes(), 4),
                    "murmur2 placement for {key}"
                );
                assert!(meta.offset.is_some());
            }
            producer.close().await;
        }
        // Everything is readable, in offset order per partition.
        let mut total = 0;
        for p in 0..4 {
            let tp = TopicPartition::new("lib", p);
            let d = admin.describe_topic("lib").await.unwrap();
            let hw = d.partitions[p as usize].high_watermark.unwrap() as usize;
            let records = consume_all(&config, &tp, hw).await;
            assert_eq!(records.len(), hw);
            assert!(records.windows(2).all(|w| w[1].offset == w[0].offset + 1));
            total += records.len();
        }
        assert_eq!(total, 1000);

        // Seek to a timestamp, to an offset, pause and resume.
        let tp = TopicPartition::new("lib", 0);
        let mut c = Consumer::new(&config, ConsumerConfig::default());
        c.assign(vec![tp.clone()]);
        c.seek(&tp, Seek::Timestamp(1_000_150));
        let first = loop {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            if let Some(r) = r.into_iter().next() {
                break r;
            }
        };
        assert!(first.timestamp >= 1_000_150);
        c.seek(&tp, Seek::Offset(3));
        let r = c.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(r[0].offset, 3);
        c.pause(&tp);
        assert!(
            c.poll(Duration::from_millis(300)).await.unwrap().is_empty(),
            "a paused partition yields nothing"
        );
        c.resume(&tp);
        c.seek(&tp, Seek::Latest);
        assert!(c.poll(Duration::from_millis(300)).await.unwrap().is_empty());
        assert!(c.position(&tp).is_some());
    });
    dev.stop();
}

#[test]
fn long_poll_fetch_is_woken_by_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        Admin::new(&config)
            .create_topic("wake", 1, 1, BTreeMap::new())
            .await
            .unwrap();
        let mut client = BrokerClient::connect(format!("http://{}", dev.addr))
            .await
            .unwrap();
        let fetch = FetchRequest {
            max_wait_ms: 20_000,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions: vec![FetchPartition {
                topic: "wake".into(),
                partition: 0,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                topic_id: String::new(),
            }],
            replica_id: -1,
            isolation_level: 0,
        };
        let started = Instant::now();
        let waiting = tokio::spawn(async move { client.fetch(fetch).await.unwrap().into_inner() });
        let producer = Producer::new(&config, ProducerConfig::default())
            .await
            .unwrap();
        producer
            .send(ProducerRecord::new("wake", None::<Bytes>, "hello"))
            .await
            .unwrap()
            .await
            .unwrap();
        let resp = waiting.await.unwrap();
        assert!(
            !resp.partitions[0].records.is_empty(),
            "the append must complete the waiting fetch"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "answered by the append, not by max_wait"
        );
    });
    dev.stop();
}

#[test]
fn malformed_and_oversized_produce_requests_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_string(), "2000".to_string());
        Admin::new(&config)
            .create_topic("strict", 1, 1, configs)
            .await
            .unwrap();
        let mut client = BrokerClient::connect(format!("http://{}", dev.addr))
            .await
            .unwrap();
        let produce = |records: Bytes, topic: &str, acks: i32| ProduceRequest {
            acks,
            timeout_ms: 5000,
            partitions: vec![ProducePartition {
                topic: topic.into(),
                partition: 0,
                records,
                topic_id: String::new(),
            }],
        };
        let good = {
            let mut b = BatchBuilder::new(Compression::None);
            b.append(1, None, Some(b"ok"), &[]);
            b.build().unwrap().into_bytes()
        };
        let mut corrupt = good.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let big = {
            let mut b = BatchBuilder::new(Compression::None);
            b.append(1, None, Some(&[7u8; 5000]), &[]);
            b.build().unwrap().into_bytes()
        };
        let cases = [
            (
                produce(Bytes::from_static(b"garbage"), "strict", 1),
                ErrorCode::CorruptMessage,
            ),
            (
                produce(Bytes::from(corrupt), "strict", 1),
                ErrorCode::CorruptMessage,
            ),
            (produce(big, "strict", 1), ErrorCode::MessageTooLarge),
            (
                produce(good.clone(), "nope", 1),
                ErrorCode::UnknownTopicOrPartition,
            ),
            (
                produce(good.clone(), "strict", 7),
                ErrorCode::InvalidRequiredAcks,
            ),
        ];
        for (req, want) in cases {
            let resp = client.produce(req).await.unwrap().into_inner();
            let p = &resp.partitions[0];
            assert_eq!(
                ErrorCode::from_code(p.error_code),
                want,
                "{}",
                p.error_message
            );
            assert!(!p.error_message.is_empty());
        }
        // min.insync.replicas above the ISR size refuses acks=all before appending.
        let mut configs = BTreeMap::new();
        configs.insert("min.insync.replicas".to_string(), "2".to_string());
        Admin::new(&config)
            .create_topic("mir", 1, 1, configs)
            .await
            .unwrap();
        let resp = client
            .produce(produce(good.clone(), "mir", -1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            ErrorCode::from_code(resp.partitions[0].error_code),
            ErrorCode::NotEnoughReplicas
        );
        let resp = client
            .produce(produce(good.clone(), "mir", 1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.partitions[0].error_code, 0,
            "acks=1 does not need the ISR"
        );
        // The broker still serves normal traffic on the same connection.
        let resp = client
            .produce(produce(good, "strict", -1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                resp.partitions[0].error_code,
                resp.partitions[0].base_offset
            ),
            (0, 0)
        );
        // Out-of-range fetches are typed too.
        let fetch = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions: vec![FetchPartition {
                topic: "strict".into(),
                partition: 0,
                fetch_offset: 99,
                partition_max_bytes: 1 << 20,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                topic_id: String::new(),
            }],
            replica_id: -1,
            isolation_level: 0,
        };
        let resp = client.fetch(fetch).await.unwrap().into_inner();
        assert_eq!(
            ErrorCode::from_code(resp.partitions[0].error_code),
            ErrorCode::OffsetOutOfRange
        );
    });
    dev.stop();
}

#[test]
fn an_idempotent_producer_recovers_from_a_refused_batch() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_string(), "2000".to_string());
        Admin::new(&config)
            .create_topic("idem", 1, 1, configs)
            .await
            .unwrap();
        let producer = Producer::new(
            &config,
            ProducerConfig {
                acks: Acks::All,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let send = |v: Vec<u8>| {
            let producer = producer.clone();
            async move {
                producer
                    .send(ProducerRecord::new("idem", None::<Bytes>, v))
                    .await
                    .unwrap()
                    .await
            }
        };
        assert_eq!(send(b"first".to_vec()).await.unwrap().offset, Some(0));
        let err = send(vec![7u8; 5000]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
        // The refused batch's sequence numbers were never used: the next send works.
        assert_eq!(send(b"third".to_vec()).await.unwrap().offset, Some(1));
    });
    dev.stop();
}

/// A consumer asking for more bytes than the transport carries (fetch.max.bytes 1 GiB
/// over a 72 MB backlog) gets answers the broker clamped, not the same transport error
/// on every retry.
#[test]
fn a_fetch_asking_more_than_the_transport_carries_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        Admin::new(&config)
            .create_topic("backlog", 2, 1, BTreeMap::new())
            .await
            .unwrap();
        let producer = Producer::new(&config, ProducerConfig::default())
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..72u32 {
            let record = ProducerRecord {
                partition: Some(i % 2),
                ..ProducerRecord::new("backlog", None::<Bytes>, vec![b'v'; 1_000_000])
            };
            pending.push(producer.send(record).await.unwrap());
        }
        for f in pending {
            f.await.unwrap();
        }
        let mut c = Consumer::new(
            &config,
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_bytes: 1 << 30,
                partition_max_bytes: 1 << 30,
                ..Default::default()
            },
        );
        c.assign(vec![
            TopicPartition::new("backlog", 0),
            TopicPartition::new("backlog", 1),
        ]);
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < 72 {
            let records = c
                .poll(Duration::from_millis(500))
                .await
                .expect("fetches succeed");
            got += records.len();
            assert!(
                Instant::now() < deadline,
                "read {got} of 72 records in 60 s"
            );
        }
        assert_eq!(got, 72);
    });
    dev.stop();
}
