//! The Kafka listener through franz-go (github.com/twmb/franz-go v1.22.3 and pkg/kadm
//! v1.20.0 from the Go module proxy, unchanged): its default producer (idempotent,
//! acks=all), a consumer of directly assigned partitions (no group), and kadm's admin
//! calls. The flows are tests/kafka_franz (a Go program that `scripts/test.sh` builds
//! into target/kafka-franz/); each answer is checked against Sluice's own CLI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json, Dev};
use serde_json::Value;

fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-franz/kafka_franz")
}

/// Runs one flow; its JSON answer, or a panic with its stderr.
fn flow(args: &[&str]) -> Value {
    let bin = binary();
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test.sh (it builds tests/kafka_franz with go build)",
        bin.display()
    );
    let out = Command::new(&bin).args(args).output().expect("kafka_franz");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kafka_franz {args:?} failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (partition, offset, key, value, header seq, timestamp).
type Rec = (u32, i64, String, String, String, i64);

/// Every record of `topic` as `sluice consume` (gRPC) reads it; headers as `seq`'s value.
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
    let mut v: Vec<Rec> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let seq = f[4]
                .split(',')
                .find_map(|h| h.strip_prefix("seq="))
                .unwrap_or("");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].into(),
                f[3].into(),
                seq.into(),
                f[5].parse().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn franz_records(v: &Value) -> Vec<Rec> {
    v.as_array()
        .unwrap_or_else(|| panic!("records: {v}"))
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap() as u32,
                r[1].as_i64().unwrap(),
                r[2].as_str().unwrap().into(),
                r[3].as_str().unwrap().into(),
                r[4].as_str().unwrap().into(),
                r[5].as_i64().unwrap(),
            )
        })
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

/// franz-go's default producer (idempotent, acks=all) writes 2000 keyed records with a
/// header and chosen timestamps to 4 partitions; `sluice consume` finds each once where
/// the producer was told it landed, each partition in send order. Then `sluice produce`
/// adds 200 more, and a franz-go consumer of the 4 partitions by direct assignment
/// (ConsumePartitions, no group) reads all 2200 exactly as `sluice consume` does: offsets,
/// keys, values, headers, timestamps.
#[test]
fn franz_go_produces_and_consumes_assigned_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "fp", "--partitions", "4"], "");
    let n = 2000usize;
    let ts0 = now_ms() - 60_000;
    let produced = flow(&["produce", &kafka, "fp", &n.to_string(), &ts0.to_string()]);
    assert_eq!(produced["errors"], serde_json::json!([]), "{produced}");
    assert_eq!(produced["acked"], n);
    let mut expected: Vec<Rec> = produced["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let i = r[0].as_i64().unwrap();
            (
                r[1].as_u64().unwrap() as u32,
                r[2].as_i64().unwrap(),
                format!("k{i}"),
                format!("v{i}"),
                i.to_string(),
                ts0 + i,
            )
        })
        .collect();
    // Per partition, send order is offset order, without gaps.
    let mut per: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for r in &expected {
        per.entry(r.0).or_default().push(r.1);
    }
    assert_eq!(per.len(), 4, "keys spread over every partition");
    for (p, offsets) in &per {
        assert!(
            offsets.iter().enumerate().all(|(i, o)| *o == i as i64),
            "partition {p}: {offsets:?}"
        );
    }
    expected.sort();
    assert_same(&sluice_records(&dev, "fp"), &expected, "sluice consume");

    let lines: Vec<String> = (0..200).map(|i| format!("c{i}:x{i}")).collect();
    dev.ok(
        &["produce", "fp", "-K", ":", "-H", "seq=cli"],
        &(lines.join("\n") + "\n"),
    );
    let all = sluice_records(&dev, "fp");
    assert_eq!(all.len(), n + 200);
    let read = flow(&["consume", &kafka, "fp", "4", &(n + 200).to_string()]);
    assert_eq!(read["errors"], serde_json::json!([]), "{}", read["errors"]);
    let got = franz_records(&read["records"]);
    // Each partition in offset order as franz-go delivers it.
    let mut next: BTreeMap<u32, i64> = BTreeMap::new();
    for r in &got {
        let n = next.entry(r.0).or_insert(0);
        assert_eq!(r.1, *n, "partition {} out of order", r.0);
        *n += 1;
    }
    let mut got = got;
    got.sort();
    assert_same(&got, &all, "franz-go's consumer against sluice consume");
}

/// `sluice topic describe --output json`.
fn describe(dev: &Dev, topic: &str) -> Value {
    json(&dev.ok(&["topic", "describe", topic, "--output", "json"], ""))
}

/// kadm against a 3-broker `sluice dev`, each answer checked against the CLI:
/// CreateTopic (RF 3, configs) and again, ListTopics / Metadata (topic id, leaders,
/// replicas, ISR), DescribeCluster, DescribeTopicConfigs and AlterTopicConfigs (SET and
/// DELETE), UpdatePartitions, ListStartOffsets / ListEndOffsets / ListOffsetsAfterMilli,
/// DeleteTopics.
#[test]
fn franz_go_kadm_agrees_with_the_sluice_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "3"]);
    let kafka = dev.kafka();

    let a = flow(&["admin-topics", &kafka, "fa"]);
    let d = describe(&dev, "fa");
    assert_eq!(a["create"]["error"], "", "{a}");
    assert_eq!(a["create"]["id"], d["topic_id"], "{a}");
    assert_eq!(a["create"]["partitions"], 3);
    assert_eq!(a["create"]["rf"], 3);
    assert!(
        a["create_again"]
            .as_str()
            .unwrap()
            .contains("TOPIC_ALREADY_EXISTS"),
        "{a}"
    );
    assert_eq!(
        a["list"],
        serde_json::json!(["fa"]),
        "internal topics hidden: {a}"
    );
    assert!(
        a["describe_missing"]
            .as_str()
            .unwrap()
            .contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{a}"
    );
    assert_eq!(a["describe"]["id"], d["topic_id"]);
    assert_eq!(a["describe"]["partitions"].as_array().unwrap().len(), 3);
    // The cluster: the brokers at their Kafka addresses.
    let cluster = json(&dev.ok(&["cluster", "describe", "--output", "json"], ""));
    let ids: Vec<i64> = cluster["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    let brokers = a["cluster"]["brokers"]
        .as_array()
        .unwrap_or_else(|| panic!("{a}"));
    let mut got: Vec<i64> = brokers.iter().map(|b| b[0].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, ids, "{a}");
    assert!(
        brokers.iter().any(|b| b[0] == 1 && b[1] == kafka.as_str()),
        "{a}"
    );
    assert_eq!(a["cluster"]["id"], "sluice");
    assert_eq!(a["cluster"]["error_code"], 0);
    // Configs: as created, then as altered; the CLI's view is the final one.
    assert_eq!(
        a["configs"]["retention.ms"],
        serde_json::json!(["3600000", "DYNAMIC_TOPIC_CONFIG"]),
        "{a}"
    );
    assert_eq!(
        a["configs"]["min.insync.replicas"],
        serde_json::json!(["2", "DYNAMIC_TOPIC_CONFIG"])
    );
    assert_eq!(a["alter"], "", "{a}");
    let after = a["configs_after"].as_object().unwrap();
    let cli = d["configs"].as_object().unwrap();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        cli.keys().collect::<Vec<_>>()
    );
    for (name, v) in after {
        assert_eq!(v[0], cli[name], "{name}");
        let source = match d["config_sources"][name].as_str().unwrap() {
            "topic" => "DYNAMIC_TOPIC_CONFIG",
            _ => "DEFAULT_CONFIG",
        };
        assert_eq!(v[1], source, "{name}");
    }
    assert_eq!(after["retention.ms"][0], "7200000");
    assert_eq!(after["min.insync.replicas"][1], "DEFAULT_CONFIG");
    // 3 -> 4 partitions, each as the CLI describes it.
    assert_eq!(a["partitions"], "", "{a}");
    let parts = a["describe_after"]["partitions"].as_array().unwrap();
    let cli_parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{a}");
    assert_eq!(cli_parts.len(), 4);
    for (f, c) in parts.iter().zip(cli_parts) {
        assert_eq!(f["partition"], c["partition"]);
        assert_eq!(f["leader"], c["leader"], "{f} vs {c}");
        assert_eq!(f["leader_epoch"], c["leader_epoch"], "{f} vs {c}");
        assert_eq!(f["replicas"], c["replicas"], "{f} vs {c}");
        assert_eq!(f["isr"], c["isr"], "{f} vs {c}");
    }

    // Offsets over records with timestamps the producer chose.
    let ts0 = now_ms() - 60_000;
    let produced = flow(&["produce", &kafka, "fa", "400", &ts0.to_string()]);
    assert_eq!(produced["acked"], 400, "{produced}");
    let at = ts0 + 250;
    let o = flow(&["admin-offsets", &kafka, "fa", &at.to_string()]);
    let d = describe(&dev, "fa");
    for p in d["partitions"].as_array().unwrap() {
        let key = p["partition"].to_string();
        assert_eq!(o["start"][&key][0], p["log_start_offset"], "{o}");
        assert_eq!(o["end"][&key][0], p["high_watermark"], "{o}");
        let first = dev.first_record("fa", &key, &format!("s@{at}"));
        let after = &o["after"][&key];
        match first {
            Some((offset, ts)) => {
                assert_eq!(after[0].to_string(), offset, "partition {key}: {o}");
                assert_eq!(after[1].to_string(), ts, "partition {key}: {o}");
            }
            // None at or after: Kafka answers the end offset (kadm's ListOffsetsAfterMilli
            // documents it), with no timestamp.
            None => assert_eq!(after[0], p["high_watermark"], "partition {key}: {o}"),
        }
    }

    let del = flow(&["admin-delete", &kafka, "fa"]);
    assert_eq!(del["delete"], "", "{del}");
    assert!(
        del["delete_missing"]
            .as_str()
            .unwrap()
            .contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{del}"
    );
    assert_eq!(del["list_after"], serde_json::json!([]), "{del}");
    let topics = dev.ok(&["topic", "list"], "");
    assert!(!topics.lines().any(|l| l.trim() == "fa"), "{topics}");
}

/// franz-go's default producer (idempotent, acks=all, retrying until its delivery
/// timeout) writes to an RF 3 partition (min.insync.replicas=2) of a three-broker cluster
/// of separate processes while the partition's leader is killed with kill -9 and
/// restarted. Every record it saw acknowledged is stored once, at the offset it was told,
/// in the order it was sent, in every replica; no record failed.
#[test]
fn franz_go_idempotent_producer_survives_leader_kill9() {
    use common::cluster;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (mut c, kafka) = cluster::start_with_kafka(dir.path(), 3);
    let (rt, config, admin) = c.client();
    let topic = "fk";
    cluster::create_replicated(&rt, &admin, topic);
    common::wait_for("fk in sync", Duration::from_secs(30), || {
        cluster::all_in_sync(&rt, &admin, topic, 3)
    });
    let stop = dir.path().join("stop");
    let bin = binary();
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test.sh (it builds tests/kafka_franz with go build)",
        bin.display()
    );
    let mut command = Command::new(&bin);
    command.args([
        "produce-until",
        &kafka.join(","),
        topic,
        stop.to_str().unwrap(),
        "60000",
    ]);
    let producer = common::Background::start("kafka_franz produce-until", command);
    // A consumer reads alongside, through the failover (Fetch from the new leader,
    // OffsetForLeaderEpoch validation), until told to finish at the end offset.
    let consumer_stop = dir.path().join("consumer-stop");
    let mut command = Command::new(&bin);
    command.args([
        "consume-until",
        &kafka.join(","),
        topic,
        consumer_stop.to_str().unwrap(),
        "90000",
    ]);
    let consumer = common::Background::start("kafka_franz consume-until", command);
    cluster::kill9_leader_midstream(&mut c, &rt, &admin, topic, 2000, 2000);
    std::fs::write(&stop, b"").unwrap();
    let (answer, log) = producer.finish();
    for l in log
        .lines()
        .filter(|l| !l.contains("unable to open"))
        .take(20)
    {
        eprintln!("franz-go: {l}");
    }
    cluster::check_leader_kill_run(
        "franz-go",
        &rt,
        &config,
        &admin,
        &mut c,
        topic,
        &answer,
        || {
            std::fs::write(&consumer_stop, b"").unwrap();
            consumer.finish()
        },
    );
}
