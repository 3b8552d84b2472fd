//! The native consumer's decode cost on replay (issue 21; docs/performance.md, "Native
//! consumer replay (issue 21)"): what the consumer does with one partition's fetched
//! bytes, per record, once the fetch response has arrived. No network, no broker.
//!
//! Data: 1 MiB of records, 100 B or 1 KiB values with no key, in one batch, as
//! `sluice perf produce --batch-size 1048576` writes them and one fetch of
//! `max.partition.fetch.bytes` (1 MiB) returns them.
//!
//! Cases (divan wall time per 1 MiB; divan prints records/s):
//! - `legacy`: the consumer before issue 21's change, as it was in
//!   `client/src/consumer.rs`: `Batches` (CRC read), `RecordBatch::records()` into a
//!   `Vec<Record>` per batch, each record pushed to a `VecDeque<ConsumerRecord>`, then
//!   `poll`'s drain: collected into a `Vec` with one `HashMap` look-up (and a `String`
//!   clone of the topic) per record to move the position;
//! - `current_crc_on` / `current_crc_off`: `sluice_client::decode_fetched` with
//!   `check.crcs` on and off, into a `Vec`, then the drain as `poll` does it now (the
//!   `Vec` handed over whole, one look-up per run of one partition's records).
//!
//! Run: `cargo bench -p sluice-benches --bench consumer`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use sluice_client::{decode_fetched, ConsumerRecord};
use sluice_proto::batch::{stamp, BatchBuilder, Batches};
use sluice_proto::{Compression, TimestampType, TopicPartition};

const TOPIC: &str = "replay-bench";
const FETCH_BYTES: usize = 1024 * 1024;

fn main() {
    divan::main();
}

/// About 1 MiB of `size`-byte values in one batch at base offset 1000.
fn fetched(size: usize) -> (Bytes, usize) {
    let per_record = size + 8;
    let n = (FETCH_BYTES - 61) / per_record;
    let value = vec![b'x'; size];
    let mut b = BatchBuilder::with_capacity(Compression::None, FETCH_BYTES);
    for i in 0..n {
        b.append(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    let mut buf = b.build().expect("batch").into_bytes().to_vec();
    stamp(&mut buf, 1000, 0);
    (Bytes::from(buf), n)
}

type Positions = HashMap<TopicPartition, Option<u64>>;

fn positions() -> Positions {
    HashMap::from([(TopicPartition::new(TOPIC.to_string(), 0), None)])
}

/// The pre-issue-21 absorb and drain, kept here as the baseline.
fn legacy(data: Bytes, parts: &mut Positions) -> Vec<ConsumerRecord> {
    let mut buffer = VecDeque::new();
    let tp = TopicPartition::new(TOPIC.to_string(), 0);
    let next = 1000u64;
    for batch in Batches::new(data) {
        let batch = batch.expect("good batch");
        let base = batch.base_offset() as u64;
        for r in batch.records().expect("records") {
            let offset = base + r.offset_delta as u64;
            if offset < next {
                continue;
            }
            let timestamp = if batch.timestamp_type() == TimestampType::LogAppendTime {
                batch.max_timestamp()
            } else {
                batch.base_timestamp() + r.timestamp_delta
            };
            buffer.push_back(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset,
                timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
    }
    let out: Vec<ConsumerRecord> = buffer.drain(..).collect();
    for r in &out {
        if let Some(p) = parts.get_mut(&TopicPartition::new(r.topic.clone(), r.partition)) {
            *p = Some(r.offset + 1);
        }
    }
    out
}

/// `decode_fetched`, then the drain as `Consumer::poll` does it now.
fn current(data: Bytes, check_crcs: bool, parts: &mut Positions) -> Vec<ConsumerRecord> {
    let mut buffer = Vec::new();
    decode_fetched(TOPIC, 0, data, 1000, check_crcs, &mut buffer).expect("good batch");
    let out = std::mem::take(&mut buffer);
    let mut i = 0;
    while i < out.len() {
        let mut last = i;
        while last + 1 < out.len()
            && out[last + 1].partition == out[i].partition
            && out[last + 1].topic == out[i].topic
        {
            last += 1;
        }
        let r = &out[last];
        if let Some(p) = parts.get_mut(&TopicPartition::new(r.topic.clone(), r.partition)) {
            *p = Some(r.offset + 1);
        }
        i = last + 1;
    }
    out
}

fn run(bencher: Bencher, size: usize, f: fn(Bytes, &mut Positions) -> Vec<ConsumerRecord>) {
    let (data, n) = fetched(size);
    let mut parts = positions();
    bencher
        .counter(ItemsCount::new(n))
        .counter(BytesCount::new(data.len()))
        .bench_local(|| {
            // Dropped inside the timed region: the application drops its records too,
            // so freeing them is part of replay's cost.
            let out = f(data.clone(), &mut parts);
            assert_eq!(out.len(), n);
            drop(out);
        });
}

#[divan::bench(args = [100, 1024])]
fn legacy_crc_on(bencher: Bencher, size: usize) {
    run(bencher, size, legacy);
}

#[divan::bench(args = [100, 1024])]
fn current_crc_on(bencher: Bencher, size: usize) {
    run(bencher, size, |d, p| current(d, true, p));
}

#[divan::bench(args = [100, 1024])]
fn current_crc_off(bencher: Bencher, size: usize) {
    run(bencher, size, |d, p| current(d, false, p));
}
