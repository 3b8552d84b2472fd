//! The differential harness of tests/kafka_diff*.rs: the same raw Kafka requests (the
//! kafka-protocol crate's types over a socket) to a `sluice dev` and to Apache Kafka 4.4,
//! each step's two observations kept and compared by [`Diff::verdict`], and the request
//! helpers the steps share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::{json, Value};

use super::kafka_raw::Conn;

/// One server under test and what the steps learned from it (member ids, generations).
pub struct Side {
    pub name: &'static str,
    pub addr: String,
    pub conn: Conn,
    pub memory: BTreeMap<&'static str, String>,
}

impl Side {
    pub fn new(name: &'static str, addr: String) -> Side {
        Side {
            name,
            conn: Conn::open(&addr),
            addr,
            memory: BTreeMap::new(),
        }
    }

    /// The answer, or `{"closed": why}` when the server closed the connection instead
    /// (a fresh one replaces it).
    pub fn ask(
        &mut self,
        key: ApiKey,
        version: i16,
        req: RequestKind,
    ) -> Result<ResponseKind, Value> {
        self.conn.try_call(key, version, req).map_err(|why| {
            self.conn = Conn::open(&self.addr);
            json!({ "closed": why.split(':').next().unwrap_or_default() })
        })
    }

    pub fn remember(&mut self, key: &'static str, value: impl ToString) {
        self.memory.insert(key, value.to_string());
    }

    pub fn recall(&self, key: &str) -> String {
        self.memory.get(key).cloned().unwrap_or_default()
    }
}

/// Sends a request of kind `$kind`; the typed answer, or returns the step's
/// `{"closed": …}` observation from the enclosing function.
#[allow(unused_macros)]
macro_rules! ask {
    ($side:expr, $kind:ident, $version:expr, $req:expr) => {
        match $side.ask(ApiKey::$kind, $version, RequestKind::$kind($req)) {
            Ok(ResponseKind::$kind(r)) => r,
            Ok(other) => panic!("not a {} answer: {other:?}", stringify!($kind)),
            Err(closed) => return closed,
        }
    };
}

/// Both sides and every step's two observations. `allowed`: steps whose answers may
/// differ, with the reason; every other difference fails [`Diff::verdict`].
pub struct Diff {
    pub sides: [Side; 2],
    pub steps: Vec<(String, Value, Value)>,
    pub allowed: &'static [(&'static str, &'static str)],
}

impl Diff {
    /// Runs `f` against Sluice, then against Kafka, and keeps both observations.
    pub fn step(&mut self, label: &str, f: impl Fn(&mut Side) -> Value) {
        let a = f(&mut self.sides[0]);
        let b = f(&mut self.sides[1]);
        // As it goes, for a run that stops before the verdict (a wait that times out).
        eprintln!("step {label}\n    sluice: {a}\n    kafka:  {b}");
        self.steps.push((label.to_string(), a, b));
    }

    /// A read after a write that Kafka's brokers apply asynchronously (an ACL change
    /// reaches the authorizer through the KRaft metadata log after the answer, where
    /// Sluice pushes it to every broker before answering): Kafka is asked again, for up
    /// to 10 s, until it answers as Sluice did; its last answer is what is compared.
    pub fn step_eventually(&mut self, label: &str, f: impl Fn(&mut Side) -> Value) {
        let a = f(&mut self.sides[0]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut b = f(&mut self.sides[1]);
        while b != a && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            b = f(&mut self.sides[1]);
        }
        eprintln!("step {label}\n    sluice: {a}\n    kafka:  {b}");
        self.steps.push((label.to_string(), a, b));
    }

    /// Runs `f` on both sides, comparing nothing (setup and waits).
    pub fn each(&mut self, f: impl Fn(&mut Side)) {
        for side in &mut self.sides {
            f(side);
        }
    }

    /// Fails on any difference not allowed, and on any allowed one that is gone.
    pub fn verdict(&self) {
        let mut failures = Vec::new();
        for (label, sluice, kafka) in &self.steps {
            let allowed = self.allowed.iter().find(|(l, _)| l == label);
            let same = sluice == kafka;
            println!(
                "{} {label}\n    sluice: {sluice}\n    kafka:  {kafka}",
                if same { "same" } else { "DIFF" }
            );
            match (same, allowed) {
                (true, Some(_)) => failures.push(format!(
                    "{label}: allowed to differ, but Sluice now answers as Kafka does ({kafka}): remove it from the allowed list and the ledger"
                )),
                (false, None) => failures.push(format!(
                    "{label}:\n    sluice: {sluice}\n    kafka:  {kafka}"
                )),
                _ => {}
            }
        }
        for (label, _) in self.allowed {
            if !self.steps.iter().any(|(l, _, _)| l == label) {
                failures.push(format!("{label}: allowed but no step has that name"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} steps differ from Apache Kafka:\n{}",
            failures.len(),
            self.steps.len(),
            failures.join("\n")
        );
    }
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

pub fn text(b: &Option<Bytes>) -> Value {
    match b {
        Some(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        None => Value::Null,
    }
}

/// The creation timestamp of the `i`th record written by the produce steps.
pub const T0: i64 = 1_700_000_000_000;

/// One RecordBatch v2 of `n` records `{prefix}-k{i}` → `{prefix}-v{i}`, each with one
/// header, created at `T0 + (first + i) * 1000`.
pub fn batch(prefix: &str, first: i64, n: i64) -> Bytes {
    encode_batch(prefix, first, n, None, Compression::None)
}

/// [`batch`], from idempotent producer `(id, epoch, base sequence)` when given, and
/// compressed with `compression`.
pub fn encode_batch(
    prefix: &str,
    first: i64,
    n: i64,
    producer: Option<(i64, i16, i32)>,
    compression: Compression,
) -> Bytes {
    encode_records(prefix, first, n, producer, compression, false)
}

/// [`encode_batch`], marked transactional when `transactional`.
pub fn encode_records(
    prefix: &str,
    first: i64,
    n: i64,
    producer: Option<(i64, i16, i32)>,
    compression: Compression,
    transactional: bool,
) -> Bytes {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let mut r = Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // The encoder starts a new batch wherever offset - sequence changes
                // (and takes the first record's as the base sequence)
                sequence: base_sequence + i as i32,
                timestamp: T0 + (first + i) * 1000,
                key: Some(Bytes::from(format!("{prefix}-k{i}"))),
                value: Some(Bytes::from(format!("{prefix}-v{i}"))),
                headers: Default::default(),
            };
            r.headers
                .insert(s("h"), Some(Bytes::from(format!("{prefix}-h{i}"))));
            r
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

pub fn produce(side: &mut Side, t: &str, partition: i32, records: Bytes) -> Value {
    produce_as(side, t, partition, records, None)
}

/// [`produce`] naming `transactional_id` in the request.
pub fn produce_as(
    side: &mut Side,
    t: &str,
    partition: i32,
    records: Bytes,
    transactional_id: Option<&str>,
) -> Value {
    let r = ask!(
        side,
        Produce,
        9,
        ProduceRequest::default()
            .with_transactional_id(transactional_id.map(|id| TransactionalId(s(id))))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic(t))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])])
    );
    let p = &r.responses[0].partition_responses[0];
    json!({ "error": p.error_code, "base_offset": p.base_offset, "log_start_offset": p.log_start_offset })
}

pub fn fetch(side: &mut Side, t: &str, partition: i32, offset: i64) -> Value {
    fetch_as(side, 12, t, None, partition, offset)
}

/// Fetch `version`, naming the topic by `id` when given (v13+).
pub fn fetch_as(
    side: &mut Side,
    version: i16,
    t: &str,
    id: Option<uuid::Uuid>,
    partition: i32,
    offset: i64,
) -> Value {
    let asked = match id {
        Some(id) => FetchTopic::default().with_topic_id(id),
        None => FetchTopic::default().with_topic(topic(t)),
    };
    let r = ask!(
        side,
        Fetch,
        version,
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(200)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![asked.with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(4 << 20)])])
    );
    let p = &r.responses[0].partitions[0];
    let mut records = Vec::new();
    if let Some(bytes) = &p.records {
        let mut bytes = bytes.clone();
        for set in RecordBatchDecoder::decode_all(&mut bytes).expect("whole batches") {
            for r in set.records {
                let headers: Vec<Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| json!([k.as_str(), text(v)]))
                    .collect();
                records.push(json!({
                    "offset": r.offset, "timestamp": r.timestamp, "key": text(&r.key),
                    "value": text(&r.value), "headers": headers,
                }));
            }
        }
    }
    json!({
        "error": r.error_code.max(p.error_code), "high_watermark": p.high_watermark,
        "last_stable_offset": p.last_stable_offset, "log_start_offset": p.log_start_offset,
        "records": records,
    })
}

pub fn list_offsets(side: &mut Side, version: i16, t: &str, partition: i32, at: i64) -> Value {
    let r = ask!(
        side,
        ListOffsets,
        version,
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic(t))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(at)])])
    );
    let p = &r.topics[0].partitions[0];
    json!({ "error": p.error_code, "offset": p.offset, "timestamp": p.timestamp })
}

pub fn metadata(side: &mut Side, t: &str, auto_create: bool) -> Value {
    let r = ask!(
        side,
        Metadata,
        12,
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic(t)))
            ]))
            .with_allow_auto_topic_creation(auto_create)
    );
    let t = &r.topics[0];
    json!({
        "error": t.error_code,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition_index, "error": p.error_code,
            "has_leader": p.leader_id.0 >= 0, "replicas": p.replica_nodes.len(),
        })).collect::<Vec<_>>(),
    })
}

/// Waits until `t` has `partitions` partitions, each with a leader (Kafka creates
/// topics asynchronously).
pub fn wait_topic(side: &mut Side, t: &str, partitions: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = metadata(side, t, false);
        let ready = md["error"] == 0
            && md["partitions"].as_array().map(Vec::len) == Some(partitions)
            && md["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["error"] == 0 && p["has_leader"] == true);
        // Kafka's Metadata names a leader before that broker serves as one: a
        // ListOffsets answer tells it does.
        if ready && (0..partitions as i32).all(|p| list_offsets(side, 6, t, p, -1)["error"] == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: topic {t} not ready in 30 s: {md}",
            side.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `f` observes something for which `done` holds; that observation.
pub fn wait_until(
    side: &mut Side,
    what: &str,
    f: impl Fn(&mut Side) -> Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = f(side);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} not seen in 30 s: {v}",
            side.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn create_topic(
    side: &mut Side,
    t: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
) -> Value {
    create_topic_as(side, t, partitions, rf, configs, false)
}

/// [`create_topic`], a dry run when `validate_only`.
pub fn create_topic_as(
    side: &mut Side,
    t: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> Value {
    let r = ask!(
        side,
        CreateTopics,
        7,
        CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic(t))
                .with_num_partitions(partitions)
                .with_replication_factor(rf)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v))))
                        .collect()
                )])
    );
    let t = &r.topics[0];
    let asked: Vec<Value> = t
        .configs
        .iter()
        .flatten()
        .filter(|c| configs.iter().any(|(k, _)| c.name.as_str() == *k))
        .map(|c| json!([c.name.as_str(), c.value.as_ref().map(|v| v.to_string())]))
        .collect();
    if t.error_code != 0 {
        return json!({ "error": t.error_code });
    }
    json!({
        "error": t.error_code, "partitions": t.num_partitions,
        "replication_factor": t.replication_factor, "configs": asked,
    })
}

pub fn delete_topic(side: &mut Side, t: &str) -> Value {
    let r = ask!(
        side,
        DeleteTopics,
        6,
        DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteTopicState::default().with_name(Some(topic(t)))])
    );
    json!({ "error": r.responses[0].error_code })
}

pub fn find_coordinator(side: &mut Side, version: i16, key: &str, key_type: i8) -> Value {
    let own = side.addr.clone();
    let r = ask!(
        side,
        FindCoordinator,
        version,
        if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![s(key)])
        } else {
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_key(s(key))
        }
    );
    let (error, host, port) = match r.coordinators.first() {
        Some(c) => (c.error_code, c.host.to_string(), c.port),
        None => (r.error_code, r.host.to_string(), r.port),
    };
    json!({ "error": error, "is_this_broker": error == 0 && own == format!("{host}:{port}") })
}
