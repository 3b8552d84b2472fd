//! `sluice group` against a real `sluice dev`: a group made by the client library
//! (subscribe, poll everything, commit), then list, describe (JSON per DESIGN.md §10),
//! reset-offsets refused while the member lives, a dry run that changes nothing, resets
//! to earliest / an offset / latest, delete, and one-line errors for unknown groups.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{json, one_line_error, runtime, wait_for, Dev};
use serde_json::Value;
use sluice_client::{
    ClientConfig, Consumer, ConsumerConfig, GroupOptions, OffsetReset, Subscription,
};

const TOPIC: &str = "events";
const RECORDS: u64 = 60;

fn describe(dev: &Dev, group: &str) -> Value {
    json(&dev.ok(&["group", "describe", group, "--output", "json"], ""))
}

/// Partition → (committed_offset, end_offset, lag) from a `group describe` answer.
fn progress(d: &Value) -> BTreeMap<u64, (Value, Value, Value)> {
    d["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .map(|p| {
            assert_eq!(p["topic"], TOPIC, "{p}");
            (
                p["partition"].as_u64().unwrap(),
                (
                    p["committed_offset"].clone(),
                    p["end_offset"].clone(),
                    p["lag"].clone(),
                ),
            )
        })
        .collect()
}

/// `reset-offsets g1 --topic events ARGS --output json`, parsed.
fn reset(dev: &Dev, args: &[&str]) -> Value {
    let mut all = vec!["group", "reset-offsets", "g1", "--topic", TOPIC];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    json(&dev.ok(&all, ""))
}

/// A consumer of `topic` in `group`, reading from the earliest offset and committing
/// only when told.
fn member(rt: &tokio::runtime::Runtime, dev: &Dev, group: &str, topic: &str) -> Consumer {
    // The group's tasks run on `rt`.
    let _runtime = rt.enter();
    let mut consumer = Consumer::new(
        &ClientConfig::new(&dev.addr),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    consumer
        .subscribe(
            GroupOptions {
                auto_commit_interval: None,
                ..GroupOptions::new(group)
            },
            Subscription::Topics(vec![topic.into()]),
        )
        .unwrap();
    consumer
}

fn listed(dev: &Dev) -> Vec<Value> {
    json(&dev.ok(&["group", "list", "--output", "json"], ""))
        .as_array()
        .expect("list is an array")
        .clone()
}

#[test]
fn group_list_describe_reset_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        "",
    );
    let input: String = (0..RECORDS).map(|i| format!("k{i}:v{i}\n")).collect();
    dev.ok(&["produce", TOPIC, "--key-separator", ":"], &input);

    // A member that reads everything and commits by hand.
    let rt = runtime();
    let mut consumer = member(&rt, &dev, "g1", TOPIC);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut read = 0;
        while read < RECORDS {
            assert!(
                Instant::now() < deadline,
                "read {read} of {RECORDS} records"
            );
            read += consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .len() as u64;
        }
        assert_eq!(read, RECORDS);
        consumer.commit().await.unwrap();
    });

    // The coordinator's topic exists now, and clients cannot touch it.
    for (args, stdin) in [
        (&["topic", "delete", "__consumer_offsets"][..], ""),
        (
            &[
                "topic",
                "alter",
                "__consumer_offsets",
                "--config",
                "cleanup.policy=delete",
            ][..],
            "",
        ),
        (&["produce", "__consumer_offsets"][..], "junk\n"),
    ] {
        let out = dev.cli(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "sluice {args:?} must be refused");
        assert!(
            stderr.contains("internal topic"),
            "sluice {args:?}: {stderr}"
        );
    }
    let g = listed(&dev);
    let g1 = g.iter().find(|g| g["group"] == "g1").expect("g1 listed");
    assert_eq!(g1["members"], 1, "{g1}");
    for field in ["state", "coordinator"] {
        assert!(!g1[field].is_null(), "missing {field} in {g1}");
    }

    // The member owns all three partitions once reconciled; every partition read to the end.
    let d = wait_for(
        "g1 to show one member owning 3 partitions",
        Duration::from_secs(30),
        || {
            let d = describe(&dev, "g1");
            let owned = d["members"][0]["assignment"].as_array()?.len();
            (owned == 3).then_some(d)
        },
    );
    assert_eq!(d["group"], "g1");
    assert!(d["group_epoch"].as_i64().unwrap() > 0, "{d}");
    let members = d["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{d}");
    assert!(!members[0]["member_id"].as_str().unwrap().is_empty());
    for tp in members[0]["assignment"].as_array().unwrap() {
        assert_eq!(tp["topic"], TOPIC);
        assert!(tp["partition"].as_u64().unwrap() < 3);
    }
    let before = progress(&d);
    assert_eq!(before.len(), 3, "{d}");
    let mut total = 0;
    for (p, (committed, end, lag)) in &before {
        assert_eq!(committed, end, "partition {p}: {d}");
        assert_eq!(lag, 0, "partition {p}: {d}");
        total += end.as_u64().unwrap();
    }
    assert_eq!(total, RECORDS);
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["owner"], members[0]["member_id"], "{p}");
    }

    // A live member: the coordinator refuses an admin commit, the CLI says why.
    let err = one_line_error(&dev.cli(
        &[
            "group",
            "reset-offsets",
            "g1",
            "--topic",
            TOPIC,
            "--to-earliest",
        ],
        "",
    ));
    assert!(err.contains("active members"), "{err}");
    // A dry run is refused the same way: its plan could not be carried out.
    let err = one_line_error(&dev.cli(
        &[
            "group",
            "reset-offsets",
            "g1",
            "--topic",
            TOPIC,
            "--to-earliest",
            "--dry-run",
        ],
        "",
    ));
    assert!(err.contains("active members"), "{err}");
    let err = one_line_error(&dev.cli(&["group", "delete", "g1"], ""));
    assert!(err.contains("active members"), "{err}");

    rt.block_on(consumer.close()).unwrap();
    wait_for("g1 to be empty", Duration::from_secs(30), || {
        (describe(&dev, "g1")["state"] == "empty").then_some(())
    });

    // Dry run: the plan, and nothing changed.
    let plan = reset(&dev, &["--to-earliest", "--dry-run"]);
    let plan = plan.as_array().unwrap();
    assert_eq!(plan.len(), 3);
    for r in plan {
        let p = r["partition"].as_u64().unwrap();
        assert_eq!(r["topic"], TOPIC);
        assert_eq!(r["new_offset"], 0, "{r}");
        assert_eq!(r["current_offset"], before[&p].0, "{r}");
    }
    assert_eq!(progress(&describe(&dev, "g1")), before);

    reset(&dev, &["--to-earliest"]);
    for (p, (committed, end, lag)) in progress(&describe(&dev, "g1")) {
        assert_eq!(committed, 0, "partition {p}");
        assert_eq!(end, before[&p].1, "partition {p}");
        assert_eq!(lag, end, "partition {p}");
    }

    // Clamped into [log start, high watermark]: 1, or 0 for an empty partition.
    reset(&dev, &["--to-offset", "1"]);
    for (p, (committed, end, _)) in progress(&describe(&dev, "g1")) {
        let want = 1.min(end.as_u64().unwrap());
        assert_eq!(committed, want, "partition {p}");
    }

    reset(&dev, &["--to-latest"]);
    assert_eq!(progress(&describe(&dev, "g1")), before);

    // The table output of a dry run says nothing was changed.
    let text = dev.ok(
        &[
            "group",
            "reset-offsets",
            "g1",
            "--topic",
            TOPIC,
            "--to-offset",
            "0",
            "--dry-run",
        ],
        "",
    );
    assert!(text.contains("dry run"), "{text}");
    assert_eq!(progress(&describe(&dev, "g1")), before);

    let text = dev.ok(&["group", "describe", "g1"], "");
    assert!(text.contains("group g1 (empty"), "{text}");

    dev.ok(&["group", "delete", "g1"], "");
    let err = one_line_error(&dev.cli(&["group", "describe", "g1"], ""));
    assert!(
        err.contains("g1") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !listed(&dev).iter().any(|g| g["group"] == "g1"),
        "g1 still listed"
    );

    let err = one_line_error(&dev.cli(&["group", "describe", "no-such-group"], ""));
    assert!(err.contains("no-such-group"), "{err}");
    let err = one_line_error(&dev.cli(&["group", "delete", "no-such-group"], ""));
    assert!(err.contains("no-such-group"), "{err}");

    // Exactly one --to-* is required.
    let out = dev.cli(&["group", "reset-offsets", "g1", "--topic", TOPIC], "");
    assert!(!out.status.success());
    let out = dev.cli(
        &[
            "group",
            "reset-offsets",
            "g1",
            "--topic",
            TOPIC,
            "--to-earliest",
            "--to-latest",
        ],
        "",
    );
    assert!(!out.status.success());

    dev.stop();
}

/// `consume --group` into a closed pipe: nothing reached a reader, so the group's
/// offset stays at the start and the next member of the group reads everything.
#[test]
fn a_group_read_into_a_closed_pipe_commits_nothing() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "p",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        "",
    );
    let lines: String = (0..50).map(|i| format!("v{i}\n")).collect();
    dev.ok(&["produce", "p"], &lines);
    let out = Command::new(common::BIN)
        .args([
            "consume",
            "p",
            "--group",
            "gp",
            "--from-beginning",
            "--timeout-ms",
            "2000",
        ])
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .stdin(Stdio::null())
        .stdout(common::closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let d = describe(&dev, "gp");
    // Committed where the unwritten batch began: the start.
    assert_eq!(d["partitions"][0]["committed_offset"], 0, "{d}");
    assert_eq!(d["partitions"][0]["lag"], 50, "{d}");
    let all = dev.ok(
        &[
            "consume",
            "p",
            "--group",
            "gp",
            "--from-beginning",
            "--timeout-ms",
            "2000",
        ],
        "",
    );
    assert_eq!(all.lines().count(), 50, "{all}");
}

/// Committed offsets of `group` by (topic, partition), from `group describe`.
fn committed(dev: &Dev, group: &str) -> BTreeMap<(String, u64), u64> {
    describe(dev, group)["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .filter_map(|p| {
            Some((
                (p["topic"].as_str()?.to_string(), p["partition"].as_u64()?),
                p["committed_offset"].as_u64()?,
            ))
        })
        .collect()
}

/// `group delete-offsets` (Kafka's OffsetDelete): refused with one line for a topic a
/// live member subscribes to (nothing deleted), done for a topic nobody subscribes to
/// while the member lives, and for the subscribed topic's partitions once it left.
#[test]
fn group_delete_offsets_keeps_what_a_member_subscribes_to() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    for t in ["od-read", "od-old"] {
        dev.ok(&["topic", "create", t, "--partitions", "2"], "");
        dev.ok(&["produce", t, "--partition", "0"], "a\nb\n");
        dev.ok(&["produce", t, "--partition", "1"], "c\n");
        let r = json(&dev.ok(
            &[
                "group",
                "reset-offsets",
                "od",
                "--topic",
                t,
                "--to-latest",
                "--output",
                "json",
            ],
            "",
        ));
        assert!(r.is_array() || r.is_object(), "{r}");
    }
    let all: BTreeMap<(String, u64), u64> = [
        (("od-old".to_string(), 0), 2),
        (("od-old".to_string(), 1), 1),
        (("od-read".to_string(), 0), 2),
        (("od-read".to_string(), 1), 1),
    ]
    .into();
    assert_eq!(committed(&dev, "od"), all);

    // A live member subscribed to od-read.
    let rt = runtime();
    let mut consumer = member(&rt, &dev, "od", "od-read");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumer.assignment().len() < 2 {
            assert!(Instant::now() < deadline, "no assignment");
            consumer.poll(Duration::from_millis(100)).await.unwrap();
        }
    });

    let out = dev.cli(&["group", "delete-offsets", "od", "--topic", "od-read"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out);
    assert!(
        err.contains("subscribes to od-read") && err.contains("[0, 1]"),
        "{err}"
    );
    assert_eq!(committed(&dev, "od"), all, "nothing deleted");

    let r = json(&dev.ok(
        &[
            "group",
            "delete-offsets",
            "od",
            "--topic",
            "od-old",
            "--output",
            "json",
        ],
        "",
    ));
    assert_eq!(r["deleted"], serde_json::json!([0, 1]), "{r}");
    assert_eq!(r["subscribed"], serde_json::json!([]), "{r}");
    let mut left = all.clone();
    left.retain(|(t, _), _| t == "od-read");
    assert_eq!(committed(&dev, "od"), left);

    // Once the member left, the subscribed topic's offsets can go, one partition here.
    rt.block_on(consumer.close()).unwrap();
    wait_for("the member gone", Duration::from_secs(30), || {
        (describe(&dev, "od")["members"].as_array().map(Vec::len) == Some(0)).then_some(())
    });
    dev.ok(
        &[
            "group",
            "delete-offsets",
            "od",
            "--topic",
            "od-read",
            "--partitions",
            "1",
        ],
        "",
    );
    left.remove(&("od-read".to_string(), 1));
    assert_eq!(committed(&dev, "od"), left);

    let err = one_line_error(&dev.cli(
        &[
            "group",
            "delete-offsets",
            "no-such-group",
            "--topic",
            "od-read",
        ],
        "",
    ));
    assert!(
        err.contains("no-such-group") && err.contains("does not exist"),
        "{err}"
    );
    dev.stop();
}
