//! The Kafka listener through kafka-python (pure Python, its own protocol code, PyPI;
//! `scripts/test.sh` installs it with its codec modules into `.venv-tools/`): every
//! codec written by it and read back by Sluice's own consumer with keys, headers and
//! timestamps, Sluice's records read back by it, a classic group that rebalances as
//! members join and leave, and its admin client. The flows are in
//! tests/kafka_python_clients.py.

mod common;

use common::{clients, Dev};

fn flow(args: &[&str]) -> serde_json::Value {
    common::python::flow("tests/kafka_python_clients.py", "kafka", args)
}

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

#[test]
fn kafka_python_writes_every_codec_and_each_side_reads_the_other_identically() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "kp", "--partitions", "1"], "");
    let n = 50;
    let out = flow(&["codecs", &kafka, "kp", &n.to_string()]);
    assert_eq!(out["sent"], 5 * n, "{out}");
    // Sluice reads what kafka-python wrote: key, value, timestamp and headers as sent.
    assert_eq!(
        clients::read_stamped(&dev, "kp"),
        clients::stamped_records(&CODECS, n)
    );

    // kafka-python reads what Sluice wrote, headers included.
    dev.ok(&["topic", "create", "kn", "--partitions", "1"], "");
    let lines: String = (0..20).map(|i| format!("nk{i}:nv{i}\n")).collect();
    dev.ok(&["produce", "kn", "-K", ":", "-H", "from=sluice"], &lines);
    let out = flow(&["read", &kafka, "kn", "20"]);
    let records = out["records"].as_array().expect("records");
    assert_eq!(records.len(), 20, "{out}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"], i, "{r}");
        assert_eq!(r["key"], format!("nk{i}"), "{r}");
        assert_eq!(r["value"], format!("nv{i}"), "{r}");
        assert_eq!(r["headers"], serde_json::json!([["from", "sluice"]]), "{r}");
        assert!(
            r["timestamp"].as_i64().unwrap_or(0) > 1_700_000_000_000,
            "{r}"
        );
    }
}

#[test]
fn kafka_python_classic_group_rebalances_as_members_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "kg", "--partitions", "4"], "");
    let lines: String = (0..400).map(|i| format!("k{i}:v{i}\n")).collect();
    dev.ok(&["produce", "kg", "-K", ":"], &lines);
    let out = flow(&["group", &kafka, "kg", "kpg", "400"]);
    let shares = |k: &str| -> Vec<Vec<u64>> {
        out[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} in {out}"))
            .iter()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
                    .collect()
            })
            .collect()
    };
    assert_eq!(shares("two").len(), 2, "{out}");
    assert_eq!(shares("three").len(), 3, "{out}");
    assert_eq!(shares("last"), vec![vec![0, 1, 2, 3]], "{out}");
    assert_eq!(out["distinct"], 400, "{out}");
    // Its commits are the group's offsets on Sluice's side too.
    let d: serde_json::Value =
        serde_json::from_str(&dev.ok(&["group", "describe", "kpg", "--output", "json"], ""))
            .unwrap();
    let committed: i64 = d["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions in {d}"))
        .iter()
        .map(|p| p["committed_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committed, 400, "{d}");
}

#[test]
fn kafka_python_admin_client_manages_topics_and_reads_groups() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    clients::group_with_offsets(&dev, "ka-src", "kag");
    let out = flow(&["admin", &kafka, "ka", "kag"]);
    assert_eq!(out["listed"], true, "{out}");
    assert_eq!(out["partitions"], 2, "{out}");
    assert_eq!(out["retention"], "3600000", "{out}");
    assert_eq!(out["grown"], 3, "{out}");
    assert!(
        out["groups"].as_array().unwrap().iter().any(|g| g == "kag"),
        "{out}"
    );
    assert_eq!(out["offsets"]["ka-src-0"], 3, "{out}");
    assert_eq!(out["group_state"], "Empty", "{out}");
    let listed = dev.ok(&["topic", "list"], "");
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some("ka")),
        "{listed}"
    );
}
