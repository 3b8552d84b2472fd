//! The Kafka listener through kafkajs (pure JavaScript, npm; `scripts/test.sh` runs
//! `npm ci` in tests/kafkajs/): an idempotent producer in three codecs read back by
//! Sluice's own consumer with keys, headers and timestamps, a classic group that
//! rebalances as members join and leave, and its admin client. The flows are in
//! tests/kafkajs/flows.js.

mod common;

use std::path::Path;
use std::process::Command;

use common::{clients, Dev};

fn flow(args: &[&str]) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafkajs");
    assert!(
        dir.join("node_modules/kafkajs").exists(),
        "kafkajs is not installed: run scripts/test.sh (it runs npm ci in tests/kafkajs/)"
    );
    let out = Command::new("node")
        .arg(dir.join("flows.js"))
        .args(args)
        .output()
        .expect("node (Node.js) not found");
    assert!(
        out.status.success(),
        "flows.js {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn kafkajs_idempotent_producer_writes_each_codec_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "kj", "--partitions", "1"], "");
    let n = 40;
    let out = flow(&["codecs", &kafka, "kj", &n.to_string()]);
    assert_eq!(out["sent"], 3 * n, "{out}");
    assert_eq!(
        clients::read_stamped(&dev, "kj"),
        clients::stamped_records(&["none", "gzip", "snappy"], n)
    );
}

#[test]
fn kafkajs_group_rebalances_as_members_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "kjg", "--partitions", "4"], "");
    let lines: String = (0..400).map(|i| format!("k{i}:v{i}\n")).collect();
    dev.ok(&["produce", "kjg", "-K", ":"], &lines);
    let out = flow(&["group", &kafka, "kjg", "kjgroup", "400"]);
    assert_eq!(out["two"].as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(out["three"].as_array().map(Vec::len), Some(3), "{out}");
    assert_eq!(out["last"], serde_json::json!([[0, 1, 2, 3]]), "{out}");
    assert_eq!(out["distinct"], 400, "{out}");
}

#[test]
fn kafkajs_admin_client_manages_topics_and_reads_groups() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    clients::group_with_offsets(&dev, "ka-src", "kjag");
    let out = flow(&["admin", &kafka, "kja", "kjag"]);
    assert_eq!(out["created"], true, "{out}");
    assert_eq!(out["listed"], true, "{out}");
    assert_eq!(out["partitions"], 2, "{out}");
    assert_eq!(out["retention"], "3600000", "{out}");
    assert_eq!(out["grown"], 3, "{out}");
    assert!(
        out["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "kjag"),
        "{out}"
    );
    assert_eq!(out["offsets"], serde_json::json!([[0, 3]]), "{out}");
    assert_eq!(out["group_state"], "Empty", "{out}");
}
