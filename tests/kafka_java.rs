//! The Kafka listener through the Java client (org.apache.kafka:kafka-clients 4.4.0 from
//! Maven Central, unchanged): an idempotent producer, a KIP-848 consumer group that a
//! second member resumes, the AdminClient, and an idempotent producer that rides out a
//! kill -9 of its partition leader. The flows are tests/kafka_java (a Maven project that
//! `scripts/test.sh` builds into target/kafka-java/); each answer is checked against what
//! Sluice's own CLI or client reports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::cluster;
use common::{json, wait_for, Background, Dev};
use serde_json::Value;

fn java(args: &[&str]) -> Command {
    common::java::command("sluice.KafkaJava", args)
}

fn flow(args: &[&str]) -> Value {
    common::java::flow("sluice.KafkaJava", args)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One record as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: u32,
    offset: i64,
    key: String,
    value: String,
    headers: String,
    timestamp: i64,
}

/// The Java consumer's records: [partition, offset, key, value, seq, src, timestamp].
fn java_records(v: &Value) -> Vec<Rec> {
    v.as_array()
        .unwrap_or_else(|| panic!("records: {v}"))
        .iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().unwrap().to_string();
            Rec {
                partition: r[0].as_u64().unwrap() as u32,
                offset: r[1].as_i64().unwrap(),
                key: s(2),
                value: s(3),
                headers: format!("seq={},src={}", s(4), s(5)),
                timestamp: r[6].as_i64().unwrap(),
            }
        })
        .collect()
}

/// Every record of `topic` as `sluice consume` (gRPC) reads it.
fn sluice_records(dev: &Dev, topic: &str) -> Vec<Rec> {
    let out = dev.ok(
        &[
            "consume",
            topic,
            "--from-beginning",
            "-e",
            "-f",
            "%p\t%o\t%k\t%s\t%h\t%T\n",
        ],
        "",
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Rec {
                partition: f[0].parse().unwrap(),
                offset: f[1].parse().unwrap(),
                key: f[2].into(),
                value: f[3].into(),
                headers: f[4].into(),
                timestamp: f[5].parse().unwrap(),
            }
        })
        .collect()
}

/// Committed offsets of `group` on `topic` as `sluice group describe` reports them.
fn sluice_committed(dev: &Dev, group: &str, topic: &str) -> BTreeMap<String, i64> {
    let d = json(&dev.ok(&["group", "describe", group, "--output", "json"], ""));
    d["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions in {d}"))
        .iter()
        .filter(|p| p["topic"] == topic)
        .map(|p| {
            (
                p["partition"].to_string(),
                p["committed_offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn offsets_map(v: &Value) -> BTreeMap<String, i64> {
    v.as_object()
        .unwrap_or_else(|| panic!("offsets: {v}"))
        .iter()
        .map(|(k, o)| (k.clone(), o.as_i64().unwrap()))
        .collect()
}

/// Asserts two sorted record lists are equal, naming the first few differences only.
fn assert_same(got: &[Rec], want: &[Rec], what: &str) {
    if got != want {
        let g: BTreeSet<&Rec> = got.iter().collect();
        let w: BTreeSet<&Rec> = want.iter().collect();
        let extra: Vec<_> = g.difference(&w).take(5).collect();
        let missing: Vec<_> = w.difference(&g).take(5).collect();
        panic!(
            "{what}: {} records, {} expected; unexpected (first 5): {extra:?}; missing (first 5): {missing:?}",
            got.len(),
            want.len()
        );
    }
}

/// Each partition's records in offset order, no offset twice, none skipped.
fn assert_in_partition_order(records: &[Rec], what: &str) {
    let mut next: BTreeMap<u32, i64> = BTreeMap::new();
    for r in records {
        if let Some(n) = next.get(&r.partition) {
            assert_eq!(
                r.offset, *n,
                "{what}: partition {} offset {} after {}",
                r.partition, r.offset, n
            );
        }
        next.insert(r.partition, r.offset + 1);
    }
}

/// An idempotent producer (acks=all, enable.idempotence) writes 3000 keyed records with
/// headers to 4 partitions; `sluice consume` finds each once, where the producer was told
/// it landed. A `group.protocol=consumer` (KIP-848) member reads every record exactly
/// once in per-partition order and commits (the offsets `sluice group describe` reports);
/// after 400 more records, a second member of the group resumes at the committed offsets
/// and reads only those.
#[test]
fn java_idempotent_producer_then_kip848_group_resumes_from_commits() {
    producer_then_group_resumes_from_commits("consumer");
}

/// The same with `group.protocol=classic` members (JoinGroup/SyncGroup, the client's
/// own assignor) on the same coordinator.
#[test]
fn java_idempotent_producer_then_classic_group_resumes_from_commits() {
    producer_then_group_resumes_from_commits("classic");
}

fn producer_then_group_resumes_from_commits(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--group-session-timeout-ms", "3000"]);
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "jp", "--partitions", "4"], "");
    let n = 3000usize;
    let ts0 = now_ms() - 60_000;
    let produced = flow(&["produce", &kafka, "jp", &n.to_string(), &ts0.to_string()]);
    assert_eq!(produced["errors"], serde_json::json!([]), "{produced}");
    assert_eq!(produced["acked"], n, "{produced}");

    // Where the producer was told each record landed is where Sluice has it.
    let mut expected: Vec<Rec> = produced["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let i = r[0].as_i64().unwrap();
            Rec {
                partition: r[1].as_u64().unwrap() as u32,
                offset: r[2].as_i64().unwrap(),
                key: format!("k{i}"),
                value: format!("v{i}"),
                headers: format!("seq={i},src=java"),
                timestamp: ts0 + i,
            }
        })
        .collect();
    expected.sort();
    let mut stored = sluice_records(&dev, "jp");
    stored.sort();
    assert_same(
        &stored,
        &expected,
        "sluice consume, against where the producer was told each landed",
    );
    let partitions: BTreeSet<u32> = stored.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 4, "keys spread over every partition");
    // Per partition, the producer's send order is the offset order.
    let mut by_partition: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    for r in &expected {
        let i: i64 = r.value[1..].parse().unwrap();
        by_partition
            .entry(r.partition)
            .or_default()
            .push((i, r.offset));
    }
    for (p, mut v) in by_partition {
        v.sort();
        assert!(
            v.windows(2).all(|w| w[1].1 == w[0].1 + 1),
            "partition {p}: send order is offset order, no gaps"
        );
    }

    let first = flow(&[
        "consume",
        &kafka,
        "jp",
        "jg",
        &n.to_string(),
        "30000",
        protocol,
    ]);
    let read = java_records(&first["records"]);
    assert_eq!(read.len(), n, "the member read every record: {first}");
    assert_eq!(first["assigned"], serde_json::json!([0, 1, 2, 3]));
    assert_in_partition_order(&read, "first member");
    let mut sorted = read.clone();
    sorted.sort();
    assert_same(
        &sorted,
        &expected,
        "the first member, each record once, as produced",
    );
    let ends: BTreeMap<String, i64> = (0..4u32)
        .map(|p| {
            let end = expected
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset + 1)
                .max()
                .unwrap();
            (p.to_string(), end)
        })
        .collect();
    assert_eq!(offsets_map(&first["committed"]), ends, "{first}");
    assert_eq!(sluice_committed(&dev, "jg", "jp"), ends, "gRPC side");

    let more: Vec<String> = (0..400).map(|i| format!("n{i}:w{i}")).collect();
    dev.ok(&["produce", "jp", "-K", ":"], &(more.join("\n") + "\n"));
    let second = flow(&["consume", &kafka, "jp", "jg", "400", "30000", protocol]);
    let resumed = java_records(&second["records"]);
    assert_in_partition_order(&resumed, "second member");
    assert_eq!(
        resumed.len(),
        400,
        "only what came after the commits: {second}"
    );
    let values: BTreeSet<&str> = resumed.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values.len(), 400);
    assert!(values.iter().all(|v| v.starts_with('w')), "{values:?}");
    for r in &resumed {
        assert!(
            r.offset >= ends[&r.partition.to_string()],
            "read {r:?} again"
        );
    }
    for (p, end) in &ends {
        if let Some(f) = resumed.iter().find(|r| r.partition.to_string() == *p) {
            assert_eq!(f.offset, *end, "partition {p} resumes at its commit");
        }
    }
    let after = sluice_committed(&dev, "jg", "jp");
    assert_eq!(offsets_map(&second["committed"]), after, "{second}");
    assert_eq!(after.values().sum::<i64>(), (n + 400) as i64);
}

/// Every codec both ways: the Java producer with each `compression.type` (none, gzip,
/// snappy, lz4, zstd) writes records that `sluice consume` reads back; `sluice produce`
/// with each codec writes records (with a header) that the Java consumer reads exactly as
/// `sluice consume` does — partitions, offsets, keys, values, headers, timestamps.
#[test]
fn java_and_sluice_read_each_others_batches_in_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "jc", "--partitions", "3"], "");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let out = flow(&["produce-codecs", &kafka, "jc", "100"]);
    assert_eq!(out["errors"], serde_json::json!([]), "{out}");
    for c in codecs {
        assert_eq!(out["acked"][c], 100, "{c}: {out}");
    }
    let mut expected: Vec<(String, String)> = codecs
        .iter()
        .flat_map(|c| (0..100).map(move |i| (format!("{c}-k{i}"), format!("{c}-v{i}"))))
        .collect();
    expected.sort();
    let mut stored: Vec<(String, String)> = sluice_records(&dev, "jc")
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect();
    stored.sort();
    assert_eq!(
        stored.len(),
        500,
        "sluice consume reads each Java record once"
    );
    assert_eq!(stored, expected);

    for c in codecs {
        let lines: Vec<String> = (0..100).map(|i| format!("s-{c}-k{i}:s-{c}-v{i}")).collect();
        dev.ok(
            &[
                "produce",
                "jc",
                "-K",
                ":",
                "-z",
                c,
                "-H",
                &format!("codec={c}"),
            ],
            &(lines.join("\n") + "\n"),
        );
    }
    let mut all = sluice_records(&dev, "jc");
    all.sort();
    assert_eq!(all.len(), 1000);
    let read = flow(&["read", &kafka, "jc", "3", "1000", "30000"]);
    let mut got = java_read(&read["records"]);
    got.sort();
    assert_same(&got, &all, "the Java consumer against sluice consume");
}

/// The `read` flow's records: [partition, offset, key, value, headers, timestamp].
fn java_read(v: &Value) -> Vec<Rec> {
    v.as_array()
        .unwrap_or_else(|| panic!("records: {v}"))
        .iter()
        .map(|r| Rec {
            partition: r[0].as_u64().unwrap() as u32,
            offset: r[1].as_i64().unwrap(),
            key: r[2].as_str().unwrap().to_string(),
            value: r[3].as_str().unwrap().to_string(),
            headers: r[4].as_str().unwrap().to_string(),
            timestamp: r[5].as_i64().unwrap(),
        })
        .collect()
}

/// Two `group.protocol=consumer` members (KIP-848, the Java client's own reconciliation)
/// on the native coordinator: the second to join gets a share, the AdminClient describes
/// both shares, every record is read once (each member commits after each poll), and when
/// the first leaves the second takes every partition; the commits are what `sluice group
/// describe` reports.
#[test]
fn java_kip848_members_share_and_take_over() {
    let dir = tempfile::tempdir().unwrap();
    // A 3 s session: members heartbeat every second, so a rebalance takes about that.
    let dev = Dev::start_with(dir.path(), &["--group-session-timeout-ms", "3000"]);
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "js", "--partitions", "4"], "");
    let lines: Vec<String> = (0..400).map(|i| format!("k{i}:v{i}")).collect();
    dev.ok(&["produce", "js", "-K", ":"], &(lines.join("\n") + "\n"));
    let out = flow(&["group-share", &kafka, "js", "jsg", "400", "40000"]);
    // Commits at the epoch before a revocation's acknowledgement, refused and retried
    // (KIP-1251 is not served; see docs/kafka-compatibility.md).
    eprintln!(
        "stale-epoch commits retried: {}; shared after {} ms, taken over after {} ms",
        out["stale_commits"], out["shared_ms"], out["takeover_ms"]
    );
    assert_eq!(out["a_alone"], serde_json::json!([0, 1, 2, 3]), "{out}");
    let split: Vec<Vec<u64>> = out["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert!(
        split.iter().all(|s| !s.is_empty()),
        "both members hold partitions: {out}"
    );
    let mut union: Vec<u64> = split.concat();
    union.sort();
    assert_eq!(
        union,
        vec![0, 1, 2, 3],
        "disjoint shares of every partition: {out}"
    );
    let mut shares = split.clone();
    shares.sort_by_key(|s| format!("{s:?}"));
    let described: Vec<Vec<u64>> = out["described"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("described: {out}"))
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        described, shares,
        "the AdminClient's view of the shares: {out}"
    );
    assert_eq!(out["described"]["state"], "Stable", "{out}");
    assert_eq!(out["seen"], 400, "{out}");
    assert_eq!(
        out["twice"],
        serde_json::json!([]),
        "no record read twice: {out}"
    );
    assert_eq!(out["after_leave"], serde_json::json!([0, 1, 2, 3]), "{out}");
    let committed = offsets_map(&out["committed"]);
    assert_eq!(committed.values().sum::<i64>(), 400, "{out}");
    assert_eq!(sluice_committed(&dev, "jsg", "js"), committed, "gRPC side");
}

/// `sluice topic describe --output json` of `topic`.
fn describe(dev: &Dev, topic: &str) -> Value {
    json(&dev.ok(&["topic", "describe", topic, "--output", "json"], ""))
}

/// Configs as the AdminClient reports them, `name -> [value, source]`, against
/// `sluice topic describe`'s (source `topic` is Kafka's DYNAMIC_TOPIC_CONFIG).
fn assert_configs_match(java: &Value, cli: &Value) {
    let java = java
        .as_object()
        .unwrap_or_else(|| panic!("configs: {java}"));
    let values = cli["configs"].as_object().unwrap();
    assert_eq!(
        java.keys().collect::<Vec<_>>(),
        values.keys().collect::<Vec<_>>(),
        "the same config names"
    );
    for (name, v) in java {
        assert_eq!(v[0], values[name], "{name}");
        let source = match cli["config_sources"][name].as_str().unwrap() {
            "topic" => "DYNAMIC_TOPIC_CONFIG",
            _ => "DEFAULT_CONFIG",
        };
        assert_eq!(v[1], source, "{name}'s source");
    }
}

/// Partitions as the AdminClient describes them against `sluice topic describe`.
fn assert_partitions_match(java: &Value, cli: &Value) {
    let java = java["partitions"].as_array().unwrap();
    let cli = cli["partitions"].as_array().unwrap();
    assert_eq!(java.len(), cli.len());
    for (j, c) in java.iter().zip(cli) {
        assert_eq!(j["partition"], c["partition"]);
        assert_eq!(j["leader"], c["leader"], "{j} vs {c}");
        assert_eq!(j["replicas"], c["replicas"], "{j} vs {c}");
        assert_eq!(j["isr"], c["isr"], "{j} vs {c}");
    }
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

/// The AdminClient against a 3-broker `sluice dev`, each answer checked against the
/// CLI: createTopics (RF 3 with configs; broker defaults; an existing name),
/// listTopics, describeTopics (ids, leaders, replicas, ISR), describeCluster,
/// describeConfigs and incrementalAlterConfigs (SET, DELETE, an invalid value),
/// createPartitions (up; down refused), listOffsets (earliest, latest, by timestamp),
/// the consumer-group calls, and deleteTopics.
#[test]
fn java_admin_client_agrees_with_the_sluice_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "3"]);
    let kafka = dev.kafka();

    let a = flow(&["admin-topics", &kafka, "ja", "jo"]);
    assert_eq!(a["create"], "ok", "{a}");
    let ja = describe(&dev, "ja");
    let jo = describe(&dev, "jo");
    assert_eq!(a["create_id"], ja["topic_id"], "{a}");
    assert_eq!(a["create_partitions"], 1, "broker default num.partitions");
    assert_eq!(a["create_rf"], 3, "RF three with three brokers");
    assert_eq!(jo["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(error_of(&a["create_again"]), "TopicExistsException", "{a}");
    let listed = a["list"].as_array().unwrap();
    assert_eq!(listed, &vec![Value::from("ja"), Value::from("jo")], "{a}");
    assert_eq!(a["describe"]["ja"]["id"], ja["topic_id"]);
    assert_eq!(a["describe"]["jo"]["id"], jo["topic_id"]);
    assert_eq!(
        a["describe"]["ja"]["partitions"].as_array().unwrap().len(),
        3
    );
    assert_partitions_match(&a["describe"]["jo"], &jo);
    assert_eq!(
        error_of(&a["describe_missing"]),
        "UnknownTopicOrPartitionException",
        "{a}"
    );
    // By topic id: the same description; an unknown id is not found.
    assert_eq!(a["describe_by_id"]["name"], "ja", "{a}");
    assert_eq!(a["describe_by_id"]["id"], ja["topic_id"], "{a}");
    assert_eq!(
        a["describe_by_id"]["partitions"].as_array().map(Vec::len),
        Some(3),
        "{a}"
    );
    assert_eq!(
        error_of(&a["describe_by_id_missing"]),
        "UnknownTopicIdException",
        "{a}"
    );
    // The brokers at their Kafka addresses.
    let cluster = json(&dev.ok(&["cluster", "describe", "--output", "json"], ""));
    let ids: Vec<i64> = cluster["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    let nodes = a["cluster"]["nodes"].as_array().unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| n[0].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids,
        "{a}"
    );
    assert_eq!(
        nodes[0][1],
        kafka.as_str(),
        "broker 1 at its Kafka listener"
    );
    assert_eq!(a["cluster"]["id"], "sluice");
    // Configs as created, then as altered (the CLI's view is the final one).
    let before = &a["configs"];
    assert_eq!(
        before["retention.ms"],
        serde_json::json!(["3600000", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(
        before["cleanup.policy"],
        serde_json::json!(["compact", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(
        before["min.insync.replicas"],
        serde_json::json!(["2", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(a["alter"], "ok", "{a}");
    assert_eq!(
        error_of(&a["alter_invalid"]),
        "InvalidConfigurationException",
        "{a}"
    );
    let after = &a["configs_after"];
    assert_eq!(
        after["retention.ms"],
        serde_json::json!(["7200000", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(
        after["max.message.bytes"],
        serde_json::json!(["2000000", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(
        after["cleanup.policy"],
        serde_json::json!(["delete", "DEFAULT_CONFIG"])
    );
    assert_configs_match(after, &ja);
    // 3 -> 5 partitions; fewer refused.
    assert_eq!(a["partitions"], "ok", "{a}");
    assert_eq!(
        error_of(&a["partitions_fewer"]),
        "InvalidPartitionsException",
        "{a}"
    );
    assert_eq!(ja["partitions"].as_array().unwrap().len(), 5);
    // Preferred elections where every leader is already the preferred one: asked for
    // every partition, the answer lists none (as Kafka's: only partitions acted on);
    // asked for one by name, it says so.
    assert_eq!(a["elect_all"], 0, "{a}");
    assert_eq!(a["elect_all_result"], "ok", "{a}");
    assert_eq!(
        error_of(&a["elect_named"]),
        "ElectionNotNeededException",
        "{a}"
    );
    assert_partitions_match(&a["describe_after"], &ja);

    // listOffsets over records whose timestamps the producer chose (ts0 + i).
    let n = 600usize;
    let ts0 = now_ms() - 60_000;
    let produced = flow(&["produce", &kafka, "ja", &n.to_string(), &ts0.to_string()]);
    assert_eq!(produced["acked"], n, "{produced}");
    let at = ts0 + 400;
    let o = flow(&["admin-offsets", &kafka, "ja", &at.to_string()]);
    let ja = describe(&dev, "ja");
    for p in ja["partitions"].as_array().unwrap() {
        let key = p["partition"].to_string();
        let earliest = &o["earliest"][&key];
        let latest = &o["latest"][&key];
        assert_eq!(earliest[0], p["log_start_offset"], "{o}");
        assert_eq!(latest[0], p["high_watermark"], "{o}");
        // The first record at or after `at`, as `sluice consume -o s@MS` finds it (-1:
        // none; the CLI then prints nothing).
        let first = dev.first_record("ja", &key, &format!("s@{at}"));
        let by_time = &o["timestamp"][&key];
        match first {
            Some((offset, ts)) => {
                assert_eq!(by_time[0].to_string(), offset, "partition {key}: {o}");
                assert_eq!(by_time[1].to_string(), ts, "partition {key}: {o}");
            }
            None => assert_eq!(by_time[0], -1, "partition {key}: {o}"),
        }
        // Max timestamp (ListOffsets v7): the producer's timestamps grow with its send
        // order, so it is each partition's last record, as `sluice consume -o -1` reads it.
        let (offset, ts) = dev
            .first_record("ja", &key, "-1")
            .expect("every partition has records");
        let max = &o["max_timestamp"][&key];
        assert_eq!(max[0].to_string(), offset, "partition {key}: {o}");
        assert_eq!(max[1].to_string(), ts, "partition {key}: {o}");
    }

    // Consumer groups: offsets committed through Sluice's CLI, read and deleted by the
    // AdminClient.
    let at_s = at.to_string();
    let reset = dev.ok(
        &[
            "group",
            "reset-offsets",
            "jg",
            "--topic",
            "ja",
            "--to-timestamp",
            &at_s,
        ],
        "",
    );
    let committed = sluice_committed(&dev, "jg", "ja");
    assert_eq!(committed.len(), 5, "{reset}");
    let d = json(&dev.ok(&["group", "describe", "jg", "--output", "json"], ""));
    let g = flow(&["admin-groups", &kafka, "jg", "nog"]);
    assert_eq!(g["list"], serde_json::json!(["jg"]), "{g}");
    assert_eq!(g["describe"]["state"], "Empty", "{g}");
    assert_eq!(g["describe"]["members"], serde_json::json!([]), "{g}");
    assert_eq!(g["describe"]["coordinator"], d["coordinator"], "{g}");
    let offsets: BTreeMap<String, i64> = offsets_map(&g["offsets"]);
    let expected: BTreeMap<String, i64> = committed
        .iter()
        .map(|(p, o)| (format!("ja-{p}"), *o))
        .collect();
    assert_eq!(offsets, expected, "{g}");
    // An unknown group: ConsumerGroupDescribe answers GROUP_ID_NOT_FOUND, the client then
    // asks DescribeGroups (the classic describe), which answers it Dead, as Kafka does.
    let missing = &g["describe_missing"];
    assert_eq!(missing, "Dead", "{g}");
    assert_eq!(g["delete"], "ok", "{g}");
    assert_eq!(error_of(&g["delete_missing"]), "GroupIdNotFoundException");
    assert_eq!(g["list_after"], serde_json::json!([]), "{g}");
    let groups = dev.ok(&["group", "list"], "");
    assert!(!groups.contains("jg"), "{groups}");

    let del = flow(&["admin-delete", &kafka, "ja"]);
    assert_eq!(del["delete"], "ok", "{del}");
    assert_eq!(
        error_of(&del["delete_missing"]),
        "UnknownTopicOrPartitionException"
    );
    assert_eq!(del["list_after"], serde_json::json!(["jo"]), "{del}");
    let topics = dev.ok(&["topic", "list"], "");
    assert!(!topics.lines().any(|l| l.trim() == "ja"), "{topics}");
    assert!(topics.lines().any(|l| l.trim() == "jo"), "{topics}");
}

/// An idempotent Java producer (acks=all, retries on) writes to an RF 3 partition
/// (min.insync.replicas=2) of a three-broker cluster of separate processes while the
/// partition's leader is killed with kill -9 and restarted. Every record the client saw
/// acknowledged is stored once, at the offset it was told, in the order it was sent, in
/// every replica; no record failed.
#[test]
fn java_idempotent_producer_survives_leader_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, kafka) = cluster::start_with_kafka(dir.path(), 3);
    let (rt, config, admin) = c.client();
    let topic = "fk";
    cluster::create_replicated(&rt, &admin, topic);
    wait_for("fk in sync", Duration::from_secs(30), || {
        cluster::all_in_sync(&rt, &admin, topic, 3)
    });
    let stop = dir.path().join("stop");
    let producer = Background::start(
        "KafkaJava produce-until",
        java(&[
            "produce-until",
            &kafka.join(","),
            topic,
            stop.to_str().unwrap(),
            "60000",
        ]),
    );
    // A consumer reads alongside, through the failover (Fetch from the new leader,
    // OffsetForLeaderEpoch validation), until told to finish at the end offset.
    let consumer_stop = dir.path().join("consumer-stop");
    let consumer = Background::start(
        "KafkaJava consume-until",
        java(&[
            "consume-until",
            &kafka.join(","),
            topic,
            consumer_stop.to_str().unwrap(),
            "90000",
        ]),
    );
    cluster::kill9_leader_midstream(&mut c, &rt, &admin, topic, 2000, 2000);
    std::fs::write(&stop, b"").unwrap();
    let (answer, stderr) = producer.finish();
    // What the client went through (its warnings: disconnects, retries), for the log.
    for l in stderr
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("could not be established"))
        .take(20)
    {
        eprintln!("java: {l}");
    }
    cluster::check_leader_kill_run("java", &rt, &config, &admin, &mut c, topic, &answer, || {
        std::fs::write(&consumer_stop, b"").unwrap();
        consumer.finish()
    });
}
