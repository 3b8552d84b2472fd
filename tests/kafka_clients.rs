//! The Kafka listener through confluent-kafka (PyPI, librdkafka 2.x bundled), which
//! `scripts/test.sh` installs into `.venv-tools/`: idempotent producers, committed
//! offsets that the gRPC side reports identically, and a KIP-848 group that rebalances.
//! The flows are in tests/kafka_clients.py.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Dev;

/// Runs one flow of tests/kafka_clients.py.
fn flow(args: &[&str]) -> serde_json::Value {
    common::python::flow("tests/kafka_clients.py", "confluent_kafka", args)
}

fn dev_with_topic(dir: &Path, topic: &str, partitions: u32) -> (Dev, String) {
    // A 3 s session: KIP-848 members heartbeat every second (a third of it), so a
    // rebalance takes a few seconds rather than a few 5 s heartbeats.
    let dev = Dev::start_with(dir, &["--group-session-timeout-ms", "3000"]);
    let kafka = dev.kafka();
    dev.ok(
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
        "",
    );
    (dev, kafka)
}

/// An idempotent producer (enable.idempotence, acks=all: the Java client's default)
/// gets a producer id (InitProducerId) and every record lands exactly once.
#[test]
fn confluent_kafka_idempotent_producer_writes_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, kafka) = dev_with_topic(dir.path(), "idem", 3);
    let n = 2000;
    let out = flow(&["idempotent", &kafka, "idem", &n.to_string()]);
    assert_eq!(out["delivered"], n, "{out}");
    assert_eq!(out["distinct_offsets"], n, "{out}");
    let read = dev.ok(
        &["consume", "idem", "--from-beginning", "-e", "-f", "%s\n"],
        "",
    );
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for l in read.lines() {
        *counts.entry(l).or_default() += 1;
    }
    assert_eq!(counts.len(), n, "every record arrived");
    assert!(counts.values().all(|c| *c == 1), "none twice");
}

/// A consumer assigning partitions by hand commits over Kafka (OffsetCommit,
/// generation -1); the client reads them back (OffsetFetch) and `sluice group
/// describe` (gRPC, the same coordinator and `__consumer_offsets`) reports the same.
#[test]
fn confluent_kafka_commits_are_the_offsets_sluice_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, kafka) = dev_with_topic(dir.path(), "cm", 3);
    let lines: Vec<String> = (0..300).map(|i| format!("k{i}:v{i}")).collect();
    dev.ok(&["produce", "cm", "-K", ":"], &(lines.join("\n") + "\n"));
    let out = flow(&["commit", &kafka, "cm", "manual", "300"]);
    assert_eq!(out["read"], 300, "{out}");
    let committed: BTreeMap<u32, i64> = out["committed"]
        .as_object()
        .expect("committed")
        .iter()
        .map(|(p, o)| (p.parse().unwrap(), o.as_i64().unwrap()))
        .collect();
    assert_eq!(committed.len(), 3, "{out}");
    assert_eq!(committed.values().sum::<i64>(), 300, "{out}");

    let described = dev.ok(&["group", "describe", "manual", "--output", "json"], "");
    let d: serde_json::Value = serde_json::from_str(&described).expect("json");
    let offsets = d["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions in {d}"));
    let native: BTreeMap<u32, i64> = offsets
        .iter()
        .filter(|o| o["topic"] == "cm")
        .map(|o| {
            (
                o["partition"].as_u64().unwrap() as u32,
                o["committed_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(native, committed, "gRPC side: {d}");
}

/// Two `group.protocol=consumer` (KIP-848) members share a 4-partition topic on the
/// native coordinator, and an admin client describes them (ConsumerGroupDescribe); one
/// leaves and the other takes every partition, reading what is written after. Every
/// record is read.
#[test]
fn confluent_kafka_kip848_group_shares_and_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    two_members_share_and_hand_over(dir.path(), "group", "grp", "g848");
}

/// Two members of `protocol_flow` ("group": KIP-848, "classic") on a 4-partition topic
/// of 400 records: both get a share, an admin client describes exactly those shares
/// (Stable), one leaves and the other takes all four and reads 400 more; 800 distinct
/// records read. Returns the dev for checks of its own.
fn two_members_share_and_hand_over(
    dir: &Path,
    protocol_flow: &str,
    topic: &str,
    group: &str,
) -> Dev {
    let (dev, kafka) = dev_with_topic(dir, topic, 4);
    let lines: Vec<String> = (0..400).map(|i| format!("k{i}:v{i}")).collect();
    dev.ok(&["produce", topic, "-K", ":"], &(lines.join("\n") + "\n"));
    let out = flow(&[protocol_flow, &kafka, topic, group, "400"]);
    let split = out["split"].as_array().expect("split");
    assert!(
        split.iter().all(|s| !s.as_array().unwrap().is_empty()),
        "{out}"
    );
    assert_eq!(out["after_leave"], serde_json::json!([0, 1, 2, 3]), "{out}");
    // Described through librdkafka's admin client: two members whose assignments are
    // the two shares the members reported.
    let mut shares: Vec<serde_json::Value> = split.clone();
    shares.sort_by_key(|s| s.to_string());
    let mut described: Vec<serde_json::Value> = out["described"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("described members: {out}"))
        .clone();
    described.sort_by_key(|s| s.to_string());
    assert_eq!(described, shares, "{out}");
    assert!(
        out["described"]["state"]
            .as_str()
            .unwrap_or("")
            .contains("STABLE"),
        "{out}"
    );
    assert_eq!(out["distinct"], 800, "{out}");
    dev
}

/// The same two members with `group.protocol=classic`: JoinGroup/SyncGroup on the
/// native coordinator, the leader client assigning with librdkafka's own assignors.
/// They split the partitions, an admin describes them through DescribeGroups (after
/// ConsumerGroupDescribe says the group is not a consumer group), one leaves (LeaveGroup)
/// and the other takes every partition. Every record is read; committed offsets show
/// on the gRPC side.
#[test]
fn confluent_kafka_classic_group_shares_and_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let dev = two_members_share_and_hand_over(dir.path(), "classic", "cls", "gclassic");
    // Every record was committed by a member of the generation it was read in.
    let described = dev.ok(&["group", "describe", "gclassic", "--output", "json"], "");
    let d: serde_json::Value = serde_json::from_str(&described).expect("json");
    let total: i64 = d["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions in {d}"))
        .iter()
        .map(|o| o["committed_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, 800, "{d}");
}

/// ListOffsets through librdkafka's admin client (`list_offsets`): earliest, latest,
/// the first record at or after a timestamp, none past the last, and (v7, KIP-734) the
/// record with the largest timestamp — not the last written.
#[test]
fn confluent_kafka_lists_offsets_by_spec_including_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, kafka) = dev_with_topic(dir.path(), "lo", 1);
    let out = flow(&["offsets", &kafka, "lo"]);
    let at = |k: &str| (out[k]["offset"].as_i64(), out[k]["timestamp"].as_i64());
    assert_eq!(at("earliest").0, Some(0), "{out}");
    assert_eq!(at("latest").0, Some(3), "{out}");
    assert_eq!(at("max_timestamp"), (Some(1), Some(5000)), "{out}");
    assert_eq!(at("at_2000"), (Some(1), Some(5000)), "{out}");
    assert_eq!(at("at_9000").0, Some(-1), "{out}");
}

/// `sluice dev` creates a topic a producer's Metadata request names
/// (`auto.create.topics.enable`, `num.partitions` 1 by default), and not one named by a
/// client that says not to (a consumer's default).
#[test]
fn confluent_kafka_producer_auto_creates_its_topic_in_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--num-partitions", "2"]);
    let kafka = dev.kafka();
    let out = flow(&["autocreate", &kafka, "made", "nope", "100"]);
    assert_eq!(out["delivered"], 100, "{out}");
    assert_eq!(out["nope_absent"], true, "{out}");
    let listed = dev.ok(&["topic", "list"], "");
    assert!(listed.contains("made"), "{listed}");
    assert!(!listed.contains("nope"), "{listed}");
    let described = dev.ok(&["topic", "describe", "made", "--output", "json"], "");
    let d: serde_json::Value = serde_json::from_str(&described).expect("json");
    let text = d.to_string();
    assert_eq!(
        text.matches("\"partition\"").count(),
        2,
        "two partitions (--num-partitions): {d}"
    );
    let read = dev.ok(
        &["consume", "made", "--from-beginning", "-e", "-f", "%s\n"],
        "",
    );
    assert_eq!(read.lines().count(), 100);
}
