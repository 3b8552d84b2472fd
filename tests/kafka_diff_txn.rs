//! Transactions against Apache Kafka 4.4 as the reference (the harness of
//! tests/kafka_diff.rs, `tests/common/diff.rs`): the same raw requests of a transactional
//! producer — InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn — with their error cases, and what a
//! read_committed reader, OffsetFetch with `require_stable`, DescribeTransactions,
//! ListTransactions and DescribeProducers then see, compared step by step.

#[macro_use]
mod common;

use common::apache_kafka::ApacheKafka;
use common::diff::*;
use common::Dev;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use serde_json::{json, Value};

/// Steps whose answers differ from Apache Kafka's, with the reason.
const ALLOWED: &[(&str, &str)] = &[];

const TXN_ID: &str = "dtx";
const T: &str = "tx";
const G: &str = "dg";

fn pid(x: &Side) -> i64 {
    x.recall("txn_pid").parse().unwrap_or(-1)
}

fn epoch(x: &Side) -> i16 {
    x.recall("txn_epoch").parse().unwrap_or(-1)
}

/// InitProducerId v4 for the transactional id; remembers the answer.
fn init(x: &mut Side, expected: Option<(i64, i16)>) -> Value {
    let (p, e) = expected.unwrap_or((-1, -1));
    let r = ask!(
        x,
        InitProducerId,
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(TXN_ID))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(p))
            .with_producer_epoch(e)
    );
    if r.error_code == 0 {
        let first = x.recall("first_pid").is_empty();
        if first {
            x.remember("first_pid", r.producer_id.0);
        }
        x.remember("txn_pid", r.producer_id.0);
        x.remember("txn_epoch", r.producer_epoch);
    }
    let same_id = r.producer_id.0 == x.recall("first_pid").parse().unwrap_or(-2);
    json!({ "error": r.error_code, "epoch": r.producer_epoch, "same_producer_id": same_id })
}

fn add_partitions(x: &mut Side, producer: (i64, i16), parts: &[(&str, i32)]) -> Value {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in parts {
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(*p),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    let r = ask!(
        x,
        AddPartitionsToTxn,
        3,
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(TXN_ID)))
            .with_v3_and_below_producer_id(ProducerId(producer.0))
            .with_v3_and_below_producer_epoch(producer.1)
            .with_v3_and_below_topics(topics)
    );
    let mut out = Vec::new();
    for t in &r.results_by_topic_v3_and_below {
        for p in &t.results_by_partition {
            out.push(json!([
                t.name.as_str(),
                p.partition_index,
                p.partition_error_code
            ]));
        }
    }
    out.sort_by_key(|v| v.to_string());
    json!({ "error": r.error_code, "partitions": out })
}

fn add_offsets(x: &mut Side) -> Value {
    let (p, e) = (pid(x), epoch(x));
    let r = ask!(
        x,
        AddOffsetsToTxn,
        3,
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(TXN_ID)))
            .with_producer_id(ProducerId(p))
            .with_producer_epoch(e)
            .with_group_id(GroupId(s(G)))
    );
    json!({ "error": r.error_code })
}

fn txn_offset_commit(x: &mut Side, producer: (i64, i16), offset: i64) -> Value {
    let r = ask!(
        x,
        TxnOffsetCommit,
        3,
        TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s(TXN_ID)))
            .with_group_id(GroupId(s(G)))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(topic(T))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)])])
    );
    json!({ "errors": r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect::<Vec<_>>() })
}

fn end_txn(x: &mut Side, producer: (i64, i16), commit: bool) -> Value {
    let r = ask!(
        x,
        EndTxn,
        3,
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(TXN_ID)))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_committed(commit)
    );
    json!({ "error": r.error_code })
}

/// A transactional batch of `n` records from the current producer at `sequence`.
fn produce_txn(x: &mut Side, producer: (i64, i16), sequence: i32, n: i64) -> Value {
    let records = encode_records(
        "txn",
        sequence as i64,
        n,
        Some((producer.0, producer.1, sequence)),
        Compression::None,
        true,
    );
    produce_as(x, T, 0, records, Some(TXN_ID))
}

/// Fetch v12 of `tx`-0 from 0 at `isolation`: high watermark, last stable offset, the
/// aborted transactions (first offsets) and how many data records came back.
fn fetch_isolated(x: &mut Side, isolation: i8) -> Value {
    let r = ask!(
        x,
        Fetch,
        12,
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_isolation_level(isolation)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic(T))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(4 << 20)])])
    );
    let p = &r.responses[0].partitions[0];
    let mut data = 0;
    let mut control = 0;
    if let Some(bytes) = &p.records {
        let mut bytes = bytes.clone();
        for set in RecordBatchDecoder::decode_all(&mut bytes).expect("whole batches") {
            for rec in set.records {
                if rec.control {
                    control += 1;
                } else {
                    data += 1;
                }
            }
        }
    }
    let aborted: Vec<i64> = p
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| a.first_offset)
        .collect();
    json!({
        "error": p.error_code, "high_watermark": p.high_watermark,
        "last_stable_offset": p.last_stable_offset, "aborted_first_offsets": aborted,
        "data_records": data, "markers": control,
    })
}

/// What a read_committed consumer of `tx`-0 reads from offset 0: fetches from the next
/// offset until the last stable offset, dropping the records of the aborted
/// transactions each answer lists as Kafka's clients do (a producer's records from the
/// aborted transaction's first offset up to its abort marker), and control records.
fn read_committed(x: &mut Side) -> Value {
    let mut next = 0i64;
    let mut values = Vec::new();
    let mut aborted: Vec<(i64, i64)> = Vec::new();
    let mut lso = -1;
    for _ in 0..100 {
        let r = ask!(
            x,
            Fetch,
            12,
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(8 << 20)
                .with_isolation_level(1)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic(T))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(next)
                        .with_partition_max_bytes(4 << 20)])])
        );
        let p = &r.responses[0].partitions[0];
        lso = p.last_stable_offset;
        for a in p.aborted_transactions.iter().flatten() {
            if !aborted.contains(&(a.producer_id.0, a.first_offset)) {
                aborted.push((a.producer_id.0, a.first_offset));
            }
        }
        let mut bytes = p.records.clone().unwrap_or_default();
        let mut any = false;
        for set in RecordBatchDecoder::decode_all(&mut bytes).expect("whole batches") {
            for rec in set.records {
                any = true;
                next = next.max(rec.offset + 1);
                if rec.control {
                    let abort = rec.key.as_ref().is_some_and(|k| k.get(3) == Some(&0));
                    if abort {
                        aborted.retain(|(pid, first)| {
                            !(*pid == rec.producer_id && *first <= rec.offset)
                        });
                    }
                    continue;
                }
                let dropped = rec.transactional
                    && aborted
                        .iter()
                        .any(|(pid, first)| *pid == rec.producer_id && *first <= rec.offset);
                if !dropped {
                    values.push(text(&rec.value));
                }
            }
        }
        if !any || next >= lso {
            break;
        }
    }
    json!({ "last_stable_offset": lso, "values": values })
}

fn latest(x: &mut Side, isolation: i8) -> Value {
    let r = ask!(
        x,
        ListOffsets,
        6,
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic(T))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])])
    );
    let p = &r.topics[0].partitions[0];
    json!({ "error": p.error_code, "offset": p.offset })
}

fn offset_fetch_stable(x: &mut Side) -> Value {
    let r = ask!(
        x,
        OffsetFetch,
        7,
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(G)))
            .with_require_stable(true)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic(T))
                .with_partition_indexes(vec![0])]))
    );
    match r.topics.first().and_then(|t| t.partitions.first()) {
        Some(p) => json!({
            "error": r.error_code, "partition_error": p.error_code, "offset": p.committed_offset,
        }),
        None => json!({ "error": r.error_code, "partitions": "none" }),
    }
}

fn describe(x: &mut Side, id: &str) -> Value {
    let r = ask!(
        x,
        DescribeTransactions,
        0,
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))])
    );
    let t = &r.transaction_states[0];
    let parts: Vec<Value> = t
        .topics
        .iter()
        .map(|x| {
            let mut p = x.partitions.clone();
            p.sort();
            json!([x.topic.as_str(), p])
        })
        .collect();
    json!({
        "error": t.error_code, "state": t.transaction_state.as_str(),
        "timeout_ms": t.transaction_timeout_ms, "epoch": t.producer_epoch,
        "started": t.transaction_start_time_ms >= 0, "partitions": parts,
    })
}

fn list(x: &mut Side, states: &[&str]) -> Value {
    let r = ask!(
        x,
        ListTransactions,
        1,
        ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|v| s(v)).collect())
            .with_duration_filter(-1)
    );
    let mut ids: Vec<Value> = r
        .transaction_states
        .iter()
        .map(|t| json!([t.transactional_id.as_str(), t.transaction_state.as_str()]))
        .collect();
    ids.sort_by_key(|v| v.to_string());
    let unknown: Vec<&str> = r.unknown_state_filters.iter().map(|v| v.as_str()).collect();
    json!({ "error": r.error_code, "transactions": ids, "unknown_filters": unknown })
}

fn open_txn_start(x: &mut Side) -> Value {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let r = ask!(
        x,
        DescribeProducers,
        0,
        DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(topic(T))
            .with_partition_indexes(vec![0])])
    );
    let p = &r.topics[0].partitions[0];
    let starts: Vec<i64> = p
        .active_producers
        .iter()
        .map(|a| a.current_txn_start_offset)
        .collect();
    json!({ "error": p.error_code, "txn_starts": starts })
}

/// Polls DescribeTransactions until the id is in `state` (markers are asynchronous).
fn wait_state(x: &mut Side, state: &'static str) {
    wait_until(x, state, |x| describe(x, TXN_ID), |v| v["state"] == state);
}

#[test]
fn transactions_answer_as_apache_kafka_does() {
    let mut kafka = ApacheKafka::launch();
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    kafka.wait_ready();
    let mut d = Diff {
        sides: [
            Side::new("sluice", dev.kafka()),
            Side::new("kafka", kafka.addr.clone()),
        ],
        steps: Vec::new(),
        allowed: ALLOWED,
    };
    d.step("create_topics.tx", |x| create_topic(x, T, 2, 1, &[]));
    d.each(|x| wait_topic(x, T, 2));
    // Both create their coordinator's topic on first use (COORDINATOR_NOT_AVAILABLE).
    d.each(|x| {
        wait_until(
            x,
            "a transaction coordinator",
            |x| find_coordinator(x, 4, TXN_ID, 1),
            |v| v["error"] == 0,
        );
    });
    d.step("find_coordinator.transaction", |x| {
        find_coordinator(x, 4, TXN_ID, 1)
    });
    // Kafka answers NOT_COORDINATOR while it loads the partition it was just given; the
    // groups' coordinator likewise.
    d.each(|x| {
        wait_until(
            x,
            "the first InitProducerId",
            |x| init(x, None),
            |v| v["error"] == 0,
        );
        wait_until(
            x,
            "a group coordinator",
            |x| find_coordinator(x, 4, G, 0),
            |v| v["error"] == 0,
        );
        wait_until(x, "OffsetFetch", offset_fetch_stable, |v| v["error"] == 0);
    });
    d.step("describe.after_first_init", |x| describe(x, TXN_ID));
    d.step("offset_fetch.nothing_committed", offset_fetch_stable);
    d.step("init.second_instance_bumps", |x| init(x, None));
    d.step("init.retry_with_previous_epoch", |x| {
        let p = pid(x);
        init(x, Some((p, epoch(x) - 1)))
    });
    d.step("init.other_producer_id", |x| {
        init(x, Some((pid(x) + 1000, 0)))
    });
    d.step("describe.empty", |x| describe(x, TXN_ID));
    d.step("end.nothing_open", |x| {
        let p = (pid(x), epoch(x));
        end_txn(x, p, true)
    });
    d.step("add_partitions.wrong_producer_id", |x| {
        let p = (pid(x) + 1, epoch(x));
        add_partitions(x, p, &[(T, 0)])
    });
    d.step("add_partitions.old_epoch", |x| {
        let p = (pid(x), epoch(x) - 1);
        add_partitions(x, p, &[(T, 0)])
    });
    d.step("add_partitions.unknown_partition", |x| {
        let p = (pid(x), epoch(x));
        add_partitions(x, p, &[(T, 0), (T, 9)])
    });
    d.step("add_partitions.ok", |x| {
        let p = (pid(x), epoch(x));
        add_partitions(x, p, &[(T, 0), (T, 1)])
    });
    d.step("produce.transactional_without_id", |x| {
        let p = (pid(x), epoch(x));
        let records = encode_records("txn", 0, 1, Some((p.0, p.1, 0)), Compression::None, true);
        produce(x, T, 0, records)
    });
    d.step("produce.in_transaction", |x| {
        let p = (pid(x), epoch(x));
        produce_txn(x, p, 0, 2)
    });
    d.step("fetch.read_committed_open", |x| fetch_isolated(x, 1));
    d.step("fetch.read_uncommitted_open", |x| fetch_isolated(x, 0));
    d.step("list_offsets.read_committed_open", |x| latest(x, 1));
    d.step("list_offsets.read_uncommitted_open", |x| latest(x, 0));
    d.step("describe.ongoing", |x| describe(x, TXN_ID));
    d.step("list.ongoing", |x| list(x, &["Ongoing", "Nope"]));
    d.step("describe_producers.open", open_txn_start);
    d.step("add_offsets.ok", add_offsets);
    d.step("txn_offset_commit.ok", |x| {
        let p = (pid(x), epoch(x));
        txn_offset_commit(x, p, 5)
    });
    d.step("offset_fetch.require_stable_pending", offset_fetch_stable);
    d.step("end.abort", |x| {
        let p = (pid(x), epoch(x));
        end_txn(x, p, false)
    });
    d.each(|x| wait_state(x, "CompleteAbort"));
    d.step("describe.complete_abort", |x| describe(x, TXN_ID));
    d.step("end.abort_retried", |x| {
        let p = (pid(x), epoch(x));
        end_txn(x, p, false)
    });
    d.step("end.commit_after_abort", |x| {
        let p = (pid(x), epoch(x));
        end_txn(x, p, true)
    });
    d.step("fetch.read_committed_aborted", read_committed);
    d.step("offset_fetch.after_abort", offset_fetch_stable);
    // A second transaction, committed.
    d.step("add_partitions.second", |x| {
        let p = (pid(x), epoch(x));
        add_partitions(x, p, &[(T, 0)])
    });
    d.step("produce.second", |x| {
        let p = (pid(x), epoch(x));
        produce_txn(x, p, 2, 3)
    });
    d.step("add_offsets.second", add_offsets);
    d.step("txn_offset_commit.second", |x| {
        let p = (pid(x), epoch(x));
        txn_offset_commit(x, p, 7)
    });
    d.step("end.commit", |x| {
        let p = (pid(x), epoch(x));
        end_txn(x, p, true)
    });
    d.each(|x| wait_state(x, "CompleteCommit"));
    d.step("fetch.read_committed_after_commit", read_committed);
    d.step("list_offsets.read_committed_after_commit", |x| latest(x, 1));
    d.step("offset_fetch.after_commit", offset_fetch_stable);
    d.step("describe_producers.closed", open_txn_start);
    // A third transaction left open, then a new instance fences it.
    d.step("add_partitions.third", |x| {
        let p = (pid(x), epoch(x));
        add_partitions(x, p, &[(T, 0)])
    });
    d.step("produce.third", |x| {
        let p = (pid(x), epoch(x));
        produce_txn(x, p, 5, 1)
    });
    d.each(|x| {
        let old = (pid(x), epoch(x));
        x.remember("zombie_pid", old.0);
        x.remember("zombie_epoch", old.1);
    });
    d.step("init.fences_an_open_transaction", |x| init(x, None));
    d.each(|x| {
        wait_until(
            x,
            "the fencing abort",
            |x| init(x, None),
            |v| v["error"] == 0,
        );
    });
    d.step("describe.after_fencing", |x| describe(x, TXN_ID));
    d.step("end.zombie", |x| {
        let z = (
            x.recall("zombie_pid").parse().unwrap(),
            x.recall("zombie_epoch").parse().unwrap(),
        );
        end_txn(x, z, true)
    });
    d.step("produce.zombie", |x| {
        let z = (
            x.recall("zombie_pid").parse().unwrap(),
            x.recall("zombie_epoch").parse().unwrap(),
        );
        produce_txn(x, z, 6, 1)
    });
    d.step("fetch.read_committed_after_fencing", read_committed);
    d.step("describe.unknown_id", |x| describe(x, "nobody"));
    d.step("list.complete", |x| list(x, &[]));
    d.verdict();
    drop(kafka);
}
