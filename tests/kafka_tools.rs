//! Apache Kafka's own command-line tools (the `kafka-tools` 4.4 jar, run as its main
//! classes: kafka-topics, kafka-console-producer/consumer, kafka-consumer-groups,
//! kafka-get-offsets) against `sluice dev`'s Kafka listener, each answer checked against
//! what Sluice's own CLI reports. What the tools cannot do against Sluice is asserted as
//! it fails, and listed in docs/kafka-compatibility.md.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::apache_kafka::java;
use common::{json, Dev};
use serde_json::Value;

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";
const GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const OFFSETS: &str = "org.apache.kafka.tools.GetOffsetShell";

/// Runs Kafka tool `main` with `--bootstrap-server kafka` and `args`, fed `stdin`.
fn tool(main: &str, kafka: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = java(main)
        .args(["--bootstrap-server", kafka])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java (scripts/install-apache-kafka.sh installs Java 17)");
    let mut input = child.stdin.take().expect("piped");
    let bytes = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("tool output");
    writer.join().expect("stdin writer");
    out
}

/// [`tool`], asserting success; its stdout.
fn ok(main: &str, kafka: &str, args: &[&str], stdin: &str) -> String {
    let out = tool(main, kafka, args, stdin);
    assert!(
        out.status.success(),
        "{main} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn describe_topic(dev: &Dev, topic: &str) -> Value {
    json(&dev.ok(&["topic", "describe", topic, "--output", "json"], ""))
}

fn describe_group(dev: &Dev, group: &str) -> Value {
    json(&dev.ok(&["group", "describe", group, "--output", "json"], ""))
}

/// `Key: value` fields of one line of kafka-topics --describe (tab separated).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split('\t')
        .map(str::trim)
        .find_map(|f| f.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A list like `1,2` from kafka-topics, as numbers.
fn ids(list: &str) -> Vec<u64> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Kafka prints topic ids in URL-safe base64; Sluice in hex.
fn hex_of_base64(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap_or_else(|e| panic!("topic id {id}: {e}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// kafka-topics creates, lists, describes, grows and deletes topics; each step seen
/// the same by `sluice topic`.
#[test]
fn kafka_topics_administers_sluice_topics() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "2"]);
    let kafka = dev.kafka();
    let created = ok(
        TOPICS,
        &kafka,
        &[
            "--create",
            "--topic",
            "kt",
            "--partitions",
            "3",
            "--replication-factor",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert!(created.contains("Created topic kt."), "{created}");
    ok(TOPICS, &kafka, &["--create", "--topic", "other"], "");

    // --list: Sluice's topics, less the internal ones (as Kafka hides its own).
    let listed: BTreeSet<String> = ok(TOPICS, &kafka, &["--list"], "")
        .lines()
        .map(str::to_string)
        .collect();
    let sluice: BTreeSet<String> =
        serde_json::from_str::<Vec<String>>(&dev.ok(&["topic", "list", "--output", "json"], ""))
            .unwrap()
            .into_iter()
            .filter(|t| !t.starts_with("__"))
            .collect();
    assert_eq!(listed, sluice);
    assert!(
        listed.contains("kt") && listed.contains("other"),
        "{listed:?}"
    );

    // --describe: id, counts, configs, and each partition's leader, replicas and ISR.
    let described = ok(TOPICS, &kafka, &["--describe", "--topic", "kt"], "");
    let d = describe_topic(&dev, "kt");
    let mut lines = described.lines();
    let head = lines.next().expect("a topic line");
    assert_eq!(
        hex_of_base64(field(head, "TopicId")),
        d["topic_id"].as_str().unwrap(),
        "{head}"
    );
    assert_eq!(field(head, "PartitionCount"), "3", "{head}");
    assert_eq!(field(head, "ReplicationFactor"), "2", "{head}");
    assert!(
        field(head, "Configs").contains("retention.ms=3600000"),
        "{head}"
    );
    assert_eq!(d["configs"]["retention.ms"], "3600000", "{d}");
    let partitions: Vec<&str> = lines.collect();
    assert_eq!(partitions.len(), 3, "{described}");
    for line in partitions {
        let p: usize = field(line, "Partition").parse().unwrap();
        let s = &d["partitions"][p];
        assert_eq!(
            field(line, "Leader").parse::<u64>().ok(),
            s["leader"].as_u64(),
            "{line} / {s}"
        );
        let replicas: Vec<u64> = serde_json::from_value(s["replicas"].clone()).unwrap();
        let isr: Vec<u64> = serde_json::from_value(s["isr"].clone()).unwrap();
        assert_eq!(ids(field(line, "Replicas")), replicas, "{line} / {s}");
        assert_eq!(ids(field(line, "Isr")), isr, "{line} / {s}");
    }

    // --alter --partitions: five partitions for Sluice too.
    ok(
        TOPICS,
        &kafka,
        &["--alter", "--topic", "kt", "--partitions", "5"],
        "",
    );
    assert_eq!(
        describe_topic(&dev, "kt")["partitions"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );

    // A second --create of the same topic fails, saying why.
    let again = tool(TOPICS, &kafka, &["--create", "--topic", "kt"], "");
    let said = String::from_utf8_lossy(&again.stdout) + String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && said.contains("already exists"),
        "{said}"
    );

    // --delete: gone from `sluice topic list`.
    ok(TOPICS, &kafka, &["--delete", "--topic", "kt"], "");
    common::wait_for("kt deleted", Duration::from_secs(30), || {
        let names: Vec<String> =
            serde_json::from_str(&dev.ok(&["topic", "list", "--output", "json"], "")).unwrap();
        (!names.iter().any(|n| n == "kt")).then_some(())
    });
}

/// kafka-consumer-groups --describe: (topic, partition) → (current offset, log end,
/// lag, consumer id) from its table, `-` as None.
type Described = Vec<(
    (String, u64),
    (Option<i64>, i64, Option<i64>, Option<String>),
)>;

fn described_rows(out: &str, group: &str) -> Described {
    let mut rows: Described = out
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(group))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |s: &str| s.parse::<i64>().ok();
            (
                (f[1].to_string(), f[2].parse().unwrap()),
                (
                    num(f[3]),
                    f[4].parse().unwrap(),
                    num(f[5]),
                    (f[6] != "-").then(|| f[6].to_string()),
                ),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// (topic, partition) → (committed offset, end offset, lag).
type Offsets = Vec<((String, u64), (Option<i64>, i64, Option<i64>))>;

/// Sluice's view of the same as [`Described`].
fn sluice_rows(d: &Value) -> Offsets {
    let mut rows: Vec<_> = d["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions in {d}"))
        .iter()
        .map(|p| {
            (
                (
                    p["topic"].as_str().unwrap().to_string(),
                    p["partition"].as_u64().unwrap(),
                ),
                (
                    p["committed_offset"].as_i64(),
                    p["end_offset"].as_i64().unwrap(),
                    p["lag"].as_i64(),
                ),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// A console consumer of group `group` left running (until [`stop`]).
fn live_consumer(kafka: &str, topic: &str, group: &str) -> Child {
    java(CONSUMER)
        .args([
            "--bootstrap-server",
            kafka,
            "--topic",
            topic,
            "--group",
            group,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("java")
}

/// SIGTERM: the console consumer closes, leaving its group.
fn stop(mut child: Child) {
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    common::wait_for(
        "the console consumer to exit",
        Duration::from_secs(30),
        || child.try_wait().expect("wait"),
    );
}

/// The console producer writes, Sluice reads; Sluice writes, the console consumer (a
/// classic group) reads; kafka-consumer-groups lists, describes (idle and with a live
/// member), resets and deletes the group; kafka-get-offsets gives the end and start
/// offsets. Each checked against `sluice consume`, `sluice group` and `sluice topic`.
#[test]
fn console_clients_and_consumer_groups_against_sluice() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "kc", "--partitions", "3"], "");

    // kafka-console-producer with keys; `sluice consume` reads them back.
    let written: Vec<String> = (0..30).map(|i| format!("key{i}:value{i}")).collect();
    ok(
        PRODUCER,
        &kafka,
        &[
            "--topic",
            "kc",
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ],
        &(written.join("\n") + "\n"),
    );
    let read = dev.ok(
        &["consume", "kc", "--from-beginning", "-e", "-f", "%k:%s\n"],
        "",
    );
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(sorted_lines(&read), expected);

    // `sluice produce`; kafka-console-consumer (classic group cg) reads all 50.
    let native: Vec<String> = (0..20).map(|i| format!("n{i}:native{i}")).collect();
    dev.ok(&["produce", "kc", "-K", ":"], &(native.join("\n") + "\n"));
    expected.extend(native.iter().cloned());
    expected.sort();
    let consumed = ok(
        CONSUMER,
        &kafka,
        &[
            "--topic",
            "kc",
            "--group",
            "cg",
            "--from-beginning",
            "--max-messages",
            "50",
            "--formatter-property",
            "print.key=true",
            "--formatter-property",
            "key.separator=:",
        ],
        "",
    );
    assert_eq!(sorted_lines(&consumed), expected);

    // --list and --describe match `sluice group`.
    let listed = ok(GROUPS, &kafka, &["--list"], "");
    let sluice_groups: Vec<Value> =
        serde_json::from_str(&dev.ok(&["group", "list", "--output", "json"], "")).unwrap();
    let sluice_names: BTreeSet<&str> = sluice_groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed.lines().collect::<BTreeSet<&str>>(),
        sluice_names,
        "{listed}"
    );
    assert!(sluice_names.contains("cg"));
    let rows = |out: &str| -> Offsets {
        let group = if out.contains("cg848 ") {
            "cg848"
        } else {
            "cg"
        };
        described_rows(out, group)
            .into_iter()
            .map(|(k, (c, e, l, _))| (k, (c, e, l)))
            .collect()
    };
    let described = ok(GROUPS, &kafka, &["--describe", "--group", "cg"], "");
    assert_eq!(rows(&described), sluice_rows(&describe_group(&dev, "cg")));
    assert_eq!(
        rows(&described)
            .iter()
            .map(|(_, (c, ..))| c.unwrap_or(0))
            .sum::<i64>(),
        50,
        "{described}"
    );
    let state = ok(
        GROUPS,
        &kafka,
        &["--describe", "--group", "cg", "--state"],
        "",
    );
    assert!(state.contains("Empty"), "{state}");

    // --reset-offsets: to the start, then one partition to offset 2.
    let reset = ok(
        GROUPS,
        &kafka,
        &[
            "--reset-offsets",
            "--group",
            "cg",
            "--topic",
            "kc",
            "--to-earliest",
            "--execute",
        ],
        "",
    );
    assert_eq!(
        reset.lines().filter(|l| l.starts_with("cg ")).count(),
        3,
        "{reset}"
    );
    ok(
        GROUPS,
        &kafka,
        &[
            "--reset-offsets",
            "--group",
            "cg",
            "--topic",
            "kc:1",
            "--to-offset",
            "2",
            "--execute",
        ],
        "",
    );
    let committed: Vec<Option<i64>> = sluice_rows(&describe_group(&dev, "cg"))
        .into_iter()
        .map(|(_, (c, ..))| c)
        .collect();
    assert_eq!(committed, vec![Some(0), Some(2), Some(0)]);

    // The group resumes there: every record but partition 1's first two.
    let skipped = dev.ok(
        &[
            "consume",
            "kc",
            "-p",
            "1",
            "--from-beginning",
            "-c",
            "2",
            "-f",
            "%k:%s\n",
        ],
        "",
    );
    let mut rest: Vec<String> = expected
        .iter()
        .filter(|r| !skipped.lines().any(|s| s == r.as_str()))
        .cloned()
        .collect();
    rest.sort();
    assert_eq!(rest.len(), 48, "{skipped}");
    let resumed = ok(
        CONSUMER,
        &kafka,
        &[
            "--topic",
            "kc",
            "--group",
            "cg",
            "--max-messages",
            "48",
            "--timeout-ms",
            "30000",
            "--formatter-property",
            "print.key=true",
            "--formatter-property",
            "key.separator=:",
        ],
        "",
    );
    assert_eq!(sorted_lines(&resumed), rest);

    // A live member: listed with its partitions; a reset is refused meanwhile.
    let member = live_consumer(&kafka, "kc", "cg");
    let members = common::wait_for("the live member described", Duration::from_secs(60), || {
        let out = ok(
            GROUPS,
            &kafka,
            &["--describe", "--group", "cg", "--members"],
            "",
        );
        out.lines()
            .any(|l| l.starts_with("cg ") && l.trim_end().ends_with(" 3"))
            .then_some(out)
    });
    let listed: Vec<&str> = members.lines().filter(|l| l.starts_with("cg ")).collect();
    assert_eq!(listed.len(), 1, "{members}");
    let member_id = listed[0].split_whitespace().nth(1).unwrap().to_string();
    // `sluice group describe`: the same member with the same three partitions, and
    // it owns every partition kafka-consumer-groups --describe gives it.
    let d = describe_group(&dev, "cg");
    assert_eq!(
        (&d["state"], &d["group_type"]),
        (&"Stable".into(), &"classic".into()),
        "{d}"
    );
    assert_eq!(d["members"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["members"][0]["member_id"], member_id.as_str(), "{d}");
    assert_eq!(
        d["members"][0]["assignment"].as_array().map(Vec::len),
        Some(3),
        "{d}"
    );
    let described = ok(GROUPS, &kafka, &["--describe", "--group", "cg"], "");
    let owners: Vec<Option<String>> = described_rows(&described, "cg")
        .into_iter()
        .map(|(_, (.., owner))| owner)
        .collect();
    assert_eq!(owners, vec![Some(member_id.clone()); 3], "{described}");
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["owner"], member_id.as_str(), "{d}");
    }
    let refused = tool(
        GROUPS,
        &kafka,
        &[
            "--reset-offsets",
            "--group",
            "cg",
            "--topic",
            "kc",
            "--to-earliest",
            "--execute",
        ],
        "",
    );
    let said = String::from_utf8_lossy(&refused.stdout) + String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("can only be reset if the group 'cg' is inactive"),
        "{said}"
    );
    stop(member);

    // A KIP-848 group (group.protocol=consumer) reads all 50 and is described alike.
    let consumed = ok(
        CONSUMER,
        &kafka,
        &[
            "--topic",
            "kc",
            "--group",
            "cg848",
            "--from-beginning",
            "--max-messages",
            "50",
            "--command-property",
            "group.protocol=consumer",
        ],
        "",
    );
    assert_eq!(consumed.lines().count(), 50, "{consumed}");
    let described = ok(GROUPS, &kafka, &["--describe", "--group", "cg848"], "");
    assert_eq!(
        rows(&described),
        sluice_rows(&describe_group(&dev, "cg848"))
    );
    assert_eq!(
        rows(&described)
            .iter()
            .map(|(_, (c, ..))| c.unwrap_or(0))
            .sum::<i64>(),
        50,
        "{described}"
    );

    // kafka-get-offsets: end offsets as `sluice topic describe` gives them, start 0.
    let ends = ok(OFFSETS, &kafka, &["--topic", "kc"], "");
    let d = describe_topic(&dev, "kc");
    let expected_ends: Vec<String> = (0..3)
        .map(|p| format!("kc:{p}:{}", d["partitions"][p]["high_watermark"]))
        .collect();
    assert_eq!(sorted_lines(&ends), expected_ends);
    let starts = ok(OFFSETS, &kafka, &["--topic", "kc", "--time", "-2"], "");
    assert_eq!(sorted_lines(&starts), vec!["kc:0:0", "kc:1:0", "kc:2:0"]);
    // Max timestamp (-3, ListOffsets v7): a record of each partition below its end.
    let max = ok(OFFSETS, &kafka, &["--topic", "kc", "--time", "-3"], "");
    let max: Vec<(u64, i64)> = max
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(max.len(), 3, "{max:?}");
    for (p, offset) in max {
        let end = d["partitions"][p as usize]["high_watermark"]
            .as_i64()
            .unwrap();
        assert!(
            (0..end).contains(&offset),
            "partition {p}: {offset} of {end}"
        );
    }

    // --delete: gone for Sluice too.
    let deleted = ok(GROUPS, &kafka, &["--delete", "--group", "cg"], "");
    assert!(deleted.contains("was successful"), "{deleted}");
    let after: Vec<Value> =
        serde_json::from_str(&dev.ok(&["group", "list", "--output", "json"], "")).unwrap();
    assert!(!after.iter().any(|g| g["group"] == "cg"), "{after:?}");
}

const ACLS: &str = "org.apache.kafka.tools.AclCommand";

/// `kafka-acls --list` output, the lines naming a resource or an entry, trimmed.
fn acl_lines(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Current ACLs for resource") || l.starts_with("(principal="))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn kafka_acls_manages_acls_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let on = ["--authorizer", "--allow-everyone-if-no-acl-found"];
    let dev = Dev::start_with(dir.path(), &on);
    let kafka = dev.kafka();
    ok(
        ACLS,
        &kafka,
        &[
            "--add",
            "--deny-principal",
            "User:*",
            "--operation",
            "Write",
            "--topic",
            "t",
        ],
        "",
    );
    ok(
        ACLS,
        &kafka,
        &[
            "--add",
            "--allow-principal",
            "User:alice",
            "--allow-host",
            "10.0.0.1",
            "--operation",
            "Read",
            "--topic",
            "pre-",
            "--resource-pattern-type",
            "prefixed",
        ],
        "",
    );
    let both = vec![
        "(principal=User:*, host=*, operation=WRITE, permissionType=DENY)".to_string(),
        "(principal=User:alice, host=10.0.0.1, operation=READ, permissionType=ALLOW)".to_string(),
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=pre-, patternType=PREFIXED)`:".to_string(),
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL)`:".to_string(),
    ];
    assert_eq!(acl_lines(&ok(ACLS, &kafka, &["--list"], "")), both);
    // The controller's store keeps them: a restarted cluster still has them.
    drop(dev);
    let dev = Dev::start_with(dir.path(), &on);
    let kafka = dev.kafka();
    assert_eq!(acl_lines(&ok(ACLS, &kafka, &["--list"], "")), both);
    // `--list --topic` selects by the literal name; `--remove` deletes what matches.
    assert_eq!(
        acl_lines(&ok(ACLS, &kafka, &["--list", "--topic", "t"], "")),
        [both[0].clone(), both[3].clone()]
    );
    ok(
        ACLS,
        &kafka,
        &[
            "--remove",
            "--force",
            "--deny-principal",
            "User:*",
            "--operation",
            "Write",
            "--topic",
            "t",
        ],
        "",
    );
    assert_eq!(
        acl_lines(&ok(ACLS, &kafka, &["--list"], "")),
        [both[1].clone(), both[2].clone()]
    );
    // `sluice acl` manages the same ACLs over the native API.
    let listed = json(&dev.ok(&["acl", "list", "--output", "json"], ""));
    assert_eq!(
        listed,
        serde_json::json!([{
            "resource_type": "topic", "name": "pre-", "pattern": "prefixed",
            "principal": "User:alice", "host": "10.0.0.1", "operation": "read",
            "permission": "allow",
        }])
    );
    dev.ok(
        &[
            "acl",
            "create",
            "--topic",
            "cli",
            "--principal",
            "User:carol",
            "--operation",
            "read",
            "--operation",
            "write",
            "--deny",
        ],
        "",
    );
    assert_eq!(
        acl_lines(&ok(ACLS, &kafka, &["--list", "--topic", "cli"], "")),
        [
            "(principal=User:carol, host=*, operation=READ, permissionType=DENY)",
            "(principal=User:carol, host=*, operation=WRITE, permissionType=DENY)",
            "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=cli, patternType=LITERAL)`:",
        ]
    );
    let deleted = json(&dev.ok(&["acl", "delete", "--topic", "cli", "--output", "json"], ""));
    assert_eq!(deleted.as_array().map(Vec::len), Some(2), "{deleted}");
    assert!(acl_lines(&ok(ACLS, &kafka, &["--list", "--topic", "cli"], "")).is_empty());
    // Without --authorizer, as Kafka without one: the ACL APIs are refused.
    drop(dev);
    let dev = Dev::start(dir.path());
    let out = tool(ACLS, &dev.kafka(), &["--list"], "");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("SecurityDisabledException") || text.contains("No Authorizer is configured"),
        "{text}"
    );
}
