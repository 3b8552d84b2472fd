//! kill -9 of `sluice dev` while a producer writes with acks=all to a topic with
//! `flush.messages=1` (every acknowledgement waits for a group-committed fsync), then a
//! restart: every acknowledged record is there, once, at the offset it was
//! acknowledged with.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Dev};
use sluice_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use sluice_proto::TopicPartition;

#[test]
fn kill9_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ClientConfig::new(&dev.addr);
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let producing = {
        let (config, acked) = (config.clone(), acked.clone());
        rt.block_on(async {
            let mut configs = BTreeMap::new();
            configs.insert("flush.messages".to_string(), "1".to_string());
            Admin::new(&config)
                .create_topic("durable", 1, 1, configs)
                .await
                .unwrap();
        });
        rt.spawn(async move {
            let pconfig = ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(1),
                delivery_timeout: Duration::from_secs(2),
                ..Default::default()
            };
            let producer = Producer::new(&config, pconfig).await.unwrap();
            let mut i = 0u64;
            loop {
                let value = format!("record-{i}");
                let Ok(f) = producer
                    .send(ProducerRecord {
                        partition: Some(0),
                        ..ProducerRecord::new("durable", None::<String>, value.clone())
                    })
                    .await
                else {
                    return;
                };
                let acked = acked.clone();
                tokio::spawn(async move {
                    if let Ok(meta) = f.await {
                        acked.lock().unwrap().insert(meta.offset.unwrap(), value);
                    }
                });
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    wait_for("2000 acknowledged records", Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 2000).then_some(())
    });
    dev.kill9();
    // Whatever was acknowledged before the kill is the promise to keep.
    let promised = acked.lock().unwrap().clone();
    producing.abort();

    let dev = Dev::start(dir.path());
    let config = ClientConfig::new(&dev.addr);
    let stored = rt.block_on(async {
        let tp = TopicPartition::new("durable", 0);
        let mut c = Consumer::new(
            &config,
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..Default::default()
            },
        );
        c.assign(vec![tp]);
        let mut stored = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let last = *promised.keys().next_back().unwrap();
        while stored.keys().next_back().is_none_or(|&o| o < last) && Instant::now() < deadline {
            for r in c.poll(Duration::from_millis(500)).await.unwrap() {
                let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                assert!(
                    stored.insert(r.offset, v).is_none(),
                    "offset {} twice",
                    r.offset
                );
            }
        }
        stored
    });
    for (offset, value) in &promised {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acknowledged offset {offset} lost or changed"
        );
    }
    // No record appears twice under different offsets.
    let mut values: Vec<&String> = stored.values().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), stored.len());
    dev.stop();
}
