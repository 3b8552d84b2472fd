//! The producer's calling-thread cost: what `Producer::send` costs per record on the
//! thread that calls it (issue 21; docs/performance.md, "Producer hot path").
//!
//! What it isolates: the producer talks to a stub broker in this process that answers
//! `Metadata` (one broker, the topic with `PARTITIONS` partitions led by it) and
//! acknowledges every `Produce` at once without storing anything, so batches are
//! encoded, carried over loopback gRPC and acknowledged, but cost nothing on a broker.
//! `buffer_memory` is the default (64 MiB): when the pipeline (encode, loopback gRPC,
//! the stub) is slower than the calling thread, as it is at 1 KiB, `send` waits for
//! room, so the divan wall times below measure that pipeline there, while the thread
//! CPU time measures the calling thread's own work (partitioning, appending to the
//! batch, bookkeeping, the delivery future). The sender task and the stub run on one
//! tokio worker thread beside it.
//!
//! Two measurements:
//! 1. printed first: thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) of the calling thread
//!    per record over `SLUICE_BENCH_RECORDS` sends (default 2,000,000) for each case,
//!    best of three rounds: insensitive to other load on the machine taking the core;
//! 2. divan: wall time of 1,000 sends per iteration (ns per record = time / 1000).
//!
//! Run: `cargo bench -p sluice-benches --bench producer`.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use divan::counter::ItemsCount;
use divan::Bencher;
use futures::Stream;
use sluice_client::{Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::v1::{self, broker_server};
use tonic::{Request, Response, Status, Streaming};

const TOPIC: &str = "bench";
const PARTITIONS: u32 = 8;
/// Sends per divan iteration.
const PER_ITERATION: usize = 1000;

/// A broker that knows one topic and acknowledges every produce without storing it.
struct Stub {
    addr: String,
    next_offset: AtomicI64,
}

#[tonic::async_trait]
impl broker_server::Broker for Stub {
    async fn produce(
        &self,
        req: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let partitions = req
            .into_inner()
            .partitions
            .into_iter()
            .map(|p| v1::ProducePartitionResponse {
                topic: p.topic,
                partition: p.partition,
                base_offset: self.next_offset.fetch_add(1 << 20, Ordering::Relaxed),
                log_append_time: -1,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::ProduceResponse { partitions }))
    }

    async fn fetch(
        &self,
        _: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    type ReplicaFetchStream =
        Pin<Box<dyn Stream<Item = Result<v1::FetchResponse, Status>> + Send + 'static>>;

    async fn replica_fetch(
        &self,
        _: Request<Streaming<v1::FetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn list_offsets(
        &self,
        _: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn write_txn_markers(
        &self,
        _: Request<v1::WriteTxnMarkersRequest>,
    ) -> Result<Response<v1::WriteTxnMarkersResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn metadata(
        &self,
        req: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        let mut names = req.into_inner().topics;
        if names.is_empty() {
            names.push(TOPIC.to_string());
        }
        let topics = names
            .into_iter()
            .map(|name| v1::TopicMetadata {
                name,
                partitions: (0..PARTITIONS)
                    .map(|p| v1::PartitionMetadata {
                        partition: p,
                        leader: 1,
                        replicas: vec![1],
                        isr: vec![1],
                        ..Default::default()
                    })
                    .collect(),
                topic_id: "00000000000000000000000000000001".into(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::MetadataResponse {
            brokers: vec![v1::BrokerInfo {
                id: 1,
                addr: self.addr.clone(),
                alive: true,
                ..Default::default()
            }],
            topics,
            controller_id: 1,
            controller_epoch: 1,
        }))
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    producer: Producer,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let producer = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let stub = Stub {
                addr: addr.clone(),
                next_offset: AtomicI64::new(0),
            };
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(
                        broker_server::BrokerServer::new(stub).max_decoding_message_size(64 << 20),
                    )
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            let defaults = ProducerConfig::default();
            let config = ProducerConfig {
                acks: Acks::Leader,
                idempotence: false,
                // `sluice perf produce --batch-size 1048576`, within the largest batch.
                batch_size: defaults.batch_size_max,
                linger: Duration::from_millis(5),
                ..defaults
            };
            Producer::new(&ClientConfig::new(&addr), config)
                .await
                .expect("producer")
        });
        Env { rt, producer }
    })
}

/// One record of a case: keyless or keyed (16-byte keys cycling over 1024 values).
fn record(value: &Bytes, keys: Option<&[Bytes]>, i: usize) -> ProducerRecord {
    ProducerRecord {
        topic: TOPIC.to_string(),
        partition: None,
        key: keys.map(|k| k[i % k.len()].clone()),
        value: Some(value.clone()),
        headers: Vec::new(),
        timestamp: None,
    }
}

fn keys() -> Vec<Bytes> {
    (0..1024)
        .map(|i| Bytes::from(format!("key-{i:012}")))
        .collect()
}

async fn send_n(producer: &Producer, value: &Bytes, keys: Option<&[Bytes]>, n: usize) {
    for i in 0..n {
        let f = producer.send(record(value, keys, i)).await.expect("send");
        drop(divan::black_box(f));
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let env = env();
    let records: usize = std::env::var("SLUICE_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let keys = keys();
    println!("calling-thread CPU per record, {records} sends per round, best of 3 (acks=1, stub broker: RF 1, nothing stored, no fsync)");
    for (name, size, keyed) in [
        ("keyless 100 B", 100, false),
        ("keyed 100 B", 100, true),
        ("keyless 1 KiB", 1024, false),
    ] {
        let value = Bytes::from(vec![b'x'; size]);
        let keys = keyed.then_some(&keys[..]);
        let best = (0..3)
            .map(|_| {
                env.rt.block_on(async {
                    let start = thread_cpu_ns();
                    send_n(&env.producer, &value, keys, records).await;
                    let ns = thread_cpu_ns() - start;
                    env.producer.flush().await;
                    ns as f64 / records as f64
                })
            })
            .fold(f64::INFINITY, f64::min);
        println!("  {name:<14} {best:>7.1} ns/record");
    }
    divan::main();
}

#[divan::bench(args = [100, 1024])]
fn send_keyless(bencher: Bencher, size: usize) {
    let env = env();
    let value = Bytes::from(vec![b'x'; size]);
    bencher
        .counter(ItemsCount::new(PER_ITERATION))
        .bench_local(|| {
            env.rt
                .block_on(send_n(&env.producer, &value, None, PER_ITERATION))
        });
}

#[divan::bench]
fn send_keyed_100b(bencher: Bencher) {
    let env = env();
    let value = Bytes::from(vec![b'x'; 100]);
    let keys = keys();
    bencher
        .counter(ItemsCount::new(PER_ITERATION))
        .bench_local(|| {
            env.rt
                .block_on(send_n(&env.producer, &value, Some(&keys), PER_ITERATION))
        });
}
