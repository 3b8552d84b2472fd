//! Idempotent producer state is bounded in time: a broker started with
//! `--producer-id-expiration-ms` forgets a producer id idle that long, so its next batch
//! is taken as a new producer's instead of being refused as out of order.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::{free_port, wait_for};
use sluice_proto::v1;
use sluice_proto::{BatchBuilder, Compression, ErrorCode};

/// Sends one batch of producer 77 at `sequence` with acks=1; the answer's error code.
async fn send(addr: &str, sequence: i32) -> ErrorCode {
    let mut b = BatchBuilder::new(Compression::None).producer(77, 0, sequence);
    b.append(0, None, Some(b"v"), &[]);
    let records = b.build().unwrap().into_bytes();
    let mut client = v1::broker_client::BrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let resp = client
        .produce(v1::ProduceRequest {
            acks: 1,
            timeout_ms: 5_000,
            partitions: vec![v1::ProducePartition {
                topic: "pe".into(),
                partition: 0,
                records,
                topic_id: String::new(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    ErrorCode::from_code(resp.partitions[0].error_code)
}

#[test]
fn an_idle_producer_id_is_forgotten_after_the_expiration() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let args = ["--producer-id-expiration-ms", "1000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let store = format!("embedded:{}", dir.path().join("controller").display());
    let controller = vec![format!("127.0.0.1:{}", free_port())];
    let mut cluster = Cluster::start_custom(
        dir.path(),
        controller,
        vec![(addr.clone(), Vec::new(), args)],
        &store,
    );
    let (rt, _config, admin) = cluster.client();
    wait_for("topic pe created", Duration::from_secs(30), || {
        rt.block_on(admin.create_topic("pe", 1, 1, Default::default()))
            .ok()
    });
    wait_for("the first batch appended", Duration::from_secs(30), || {
        (rt.block_on(send(&addr, 0)) == ErrorCode::None).then_some(())
    });
    // A gap while the producer is remembered: refused.
    assert_eq!(rt.block_on(send(&addr, 5)), ErrorCode::OutOfOrderSequence);
    // Idle past the expiration (checked at least every 500 ms here): forgotten, so the
    // same batch is taken as a new producer's.
    let started = std::time::Instant::now();
    wait_for("producer 77 forgotten", Duration::from_secs(10), || {
        (rt.block_on(send(&addr, 5)) == ErrorCode::None).then_some(())
    });
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "forgotten only once idle for the expiration"
    );
    cluster.stop_all();
}
