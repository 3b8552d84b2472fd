//! Kafka transactions through the Java client (kafka-clients 4.4, unchanged; the flows
//! are tests/kafka_java/src/main/java/sluice/KafkaTxn.java): a zombie instance fenced by
//! a second one, a producer that dies inside a transaction (its records hold the last
//! stable offset until the coordinator aborts them), and exactly-once
//! consume-transform-produce across a kill -9 of the transaction coordinator's broker.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_for, Background, Dev};
use serde_json::Value;

const TXN: &str = "sluice.KafkaTxn";

fn flow(args: &[&str]) -> Value {
    common::java::flow(TXN, args)
}

fn values(v: &Value) -> Vec<String> {
    v["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values in {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn ends(v: &Value, key: &str) -> BTreeMap<String, i64> {
    v[key]
        .as_object()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|(p, o)| (p.clone(), o.as_i64().unwrap()))
        .collect()
}

/// Kafka's partition of a transactional id (or group) in `__consumer_offsets`: Java's
/// String hash, absolute, modulo the partition count.
fn offsets_partition(id: &str, partitions: u32) -> u32 {
    let h = id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    (if h == i32::MIN { 0 } else { h.unsigned_abs() }) % partitions
}

/// A second instance of a transactional id fences the first: the first's commit fails,
/// the second's records are what a read_committed reader sees. Then a producer dies
/// (the JVM halts) with 20 records in an open transaction: until the coordinator aborts
/// it (the producer's 3 s timeout), a read_committed reader's end offset stops below
/// the high watermark; after it, the two meet and the dead records are never read.
#[test]
fn java_transactions_fence_a_zombie_and_abort_what_a_dead_producer_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "tz", "--partitions", "2"], "");
    let z = flow(&["zombie", &kafka, "tz", "tz-txn"]);
    assert_eq!(z["live_committed"], true, "{z}");
    let verdict = z["zombie_commit"].as_str().unwrap();
    assert!(
        verdict == "ProducerFencedException" || verdict == "InvalidProducerEpochException",
        "the fenced instance's commit: {z}"
    );
    let read = flow(&["read-committed", &kafka, "tz", "30000"]);
    let mut got = values(&read);
    got.sort();
    let mut live: Vec<String> = (0..10).map(|i| format!("live-{i}")).collect();
    live.sort();
    assert_eq!(
        got, live,
        "read_committed sees the live instance's records only"
    );

    // A producer that dies inside its transaction.
    let died = common::java::command(TXN, &["die-in-txn", &kafka, "tz", "tz-dead", "20", "3000"])
        .output()
        .unwrap();
    assert!(
        died.status.success(),
        "{}",
        String::from_utf8_lossy(&died.stderr)
    );
    let stuck = flow(&["read-committed", &kafka, "tz", "10000"]);
    let (stable, high) = (ends(&stuck, "stable_end"), ends(&stuck, "high_watermark"));
    if stable == high {
        // The read ran after the timeout already (a slow JVM start): the abort below
        // must still hold.
        eprintln!("the open transaction was aborted before the first read: {stuck}");
    } else {
        assert!(
            stable.iter().all(|(p, s)| *s <= high[p]),
            "stable end above the high watermark: {stuck}"
        );
        assert!(
            !values(&stuck).iter().any(|v| v.starts_with("dead-")),
            "records of an open transaction read: {stuck}"
        );
    }
    let after = wait_for(
        "the coordinator to abort the dead producer's transaction",
        Duration::from_secs(60),
        || {
            let r = flow(&["read-committed", &kafka, "tz", "10000"]);
            (ends(&r, "stable_end") == ends(&r, "high_watermark")).then_some(r)
        },
    );
    let mut got = values(&after);
    got.sort();
    assert_eq!(got, live, "after the abort: {after}");
    // What the transaction left is in the log, marked aborted: Sluice's own consumer,
    // which reads uncommitted, shows it.
    let raw = dev.ok(
        &["consume", "tz", "--from-beginning", "--timeout-ms", "3000"],
        "",
    );
    assert_eq!(
        raw.lines().filter(|l| l.starts_with("dead-")).count(),
        20,
        "{raw}"
    );
}

/// Exactly-once consume-transform-produce (the Java client's standard loop: a
/// transaction per poll holding the output and the consumed offsets) over a cluster of
/// three broker processes, while the broker coordinating the transactional id is killed
/// with kill -9 and restarted. Every input record is in the output exactly once for a
/// read_committed reader, and the group's committed offsets cover the whole input.
#[test]
fn java_exactly_once_etl_survives_a_kill9_of_the_transaction_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, kafka) = common::cluster::start_with_kafka(dir.path(), 3);
    let (rt, _config, admin) = cluster.client();
    let bootstrap = cluster.bootstrap();
    let cli = |args: &[&str], stdin: &str| {
        let out = common::run_cli(&bootstrap, args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for t in ["etl-in", "etl-out"] {
        cli(
            &[
                "topic",
                "create",
                t,
                "--partitions",
                "4",
                "--replication-factor",
                "3",
            ],
            "",
        );
    }
    const TOTAL: usize = 3000;
    let input: Vec<String> = (0..TOTAL).map(|i| format!("k{i}:v{i}")).collect();
    cli(
        &["produce", "etl-in", "-K", ":"],
        &(input.join("\n") + "\n"),
    );
    let all = kafka.join(",");
    let etl = Background::start(
        "KafkaTxn etl",
        common::java::command(
            TXN,
            &[
                "etl",
                &all,
                "etl-in",
                "etl-out",
                "etl",
                "etl-tx",
                &TOTAL.to_string(),
                "120000",
                "classic",
            ],
        ),
    );
    let out_records = |admin: &sluice_client::Admin| {
        common::cluster::partitions(&rt, admin, "etl-out")
            .map(|ps| ps.iter().filter_map(|p| p.high_watermark).sum::<u64>())
            .unwrap_or(0)
    };
    wait_for("a third of the output", Duration::from_secs(90), || {
        (out_records(&admin) >= TOTAL as u64 / 3).then_some(())
    });
    let p = offsets_partition("etl-tx", 12);
    let coordinator = wait_for("the coordinator's broker", Duration::from_secs(10), || {
        common::cluster::partitions(&rt, &admin, "__consumer_offsets")?
            .into_iter()
            .find(|x| x.partition == p)?
            .leader
    });
    cluster.kill9(coordinator as usize - 1);
    eprintln!("killed broker {coordinator}, the coordinator of etl-tx (__consumer_offsets-{p})");
    wait_for("another coordinator", Duration::from_secs(30), || {
        common::cluster::partitions(&rt, &admin, "__consumer_offsets")?
            .into_iter()
            .find(|x| x.partition == p)?
            .leader
            .filter(|l| *l != coordinator)
    });
    cluster.start_broker(coordinator as usize - 1);
    let (answer, stderr) = etl.finish();
    assert_eq!(answer["done"], TOTAL as i64, "{answer}\n{stderr}");
    assert!(answer.get("fenced").is_none(), "{answer}");
    eprintln!(
        "etl: {} transactions committed, {} aborted, errors {}",
        answer["committed_txns"], answer["aborted_txns"], answer["errors"]
    );
    let read = flow(&["read-committed", &all, "etl-out", "60000"]);
    let mut got = values(&read);
    got.sort();
    let mut want: Vec<String> = (0..TOTAL).map(|i| format!("v{i}|etl")).collect();
    want.sort();
    let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(dups, 0, "output records read twice");
    assert_eq!(got, want, "the output is the input, each once");
}
