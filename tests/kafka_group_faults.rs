//! Classic consumer groups through the Kafka listener when a member dies: two `kcat -G`
//! members (librdkafka's classic protocol) share a topic; one is killed with kill -9
//! (no LeaveGroup); the coordinator notices the silence after the session timeout, the
//! survivor is told to rejoin, takes every partition and reads every record written
//! since — none is lost.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Dev};

/// A `kcat -G` member whose printed lines (`partition value`) are collected.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(kafka: &str, group: &str, topic: &str, session_ms: u32) -> Member {
        let mut child = Command::new("kcat")
            .args([
                "-b",
                kafka,
                "-G",
                group,
                topic,
                "-u",
                "-q",
                "-f",
                "%p %s\\n",
                "-X",
                &format!("session.timeout.ms={session_ms}"),
                "-X",
                "heartbeat.interval.ms=300",
                "-X",
                "auto.offset.reset=earliest",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat not found: scripts/test.sh installs it (Debian package kcat)");
        let out = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Member { child, lines }
    }

    fn values(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split_once(' ').map(|(_, v)| v.to_string()))
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each member's partitions as `sluice group describe` shows them.
fn owners(dev: &Dev, group: &str) -> Option<(String, Vec<Vec<u64>>)> {
    let out = dev.cli(&["group", "describe", group, "--output", "json"], "");
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let shares = d["members"]
        .as_array()?
        .iter()
        .map(|m| {
            let mut ps: Vec<u64> = m["assignment"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|tp| tp["partition"].as_u64())
                .collect();
            ps.sort();
            ps
        })
        .collect();
    Some((d["state"].as_str()?.to_string(), shares))
}

#[test]
fn a_classic_member_killed_is_replaced_within_its_session_timeout_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "gf", "--partitions", "4"], "");
    let session_ms = 4000;
    let a = Member::start(&kafka, "gfault", "gf", session_ms);
    let b = Member::start(&kafka, "gfault", "gf", session_ms);
    wait_for(
        "both members with two partitions each",
        Duration::from_secs(60),
        || {
            let (state, shares) = owners(&dev, "gfault")?;
            (state == "Stable" && shares.len() == 2 && shares.iter().all(|s| s.len() == 2))
                .then_some(())
        },
    );
    let before: Vec<String> = (0..200).map(|i| format!("k{i}:before-{i}")).collect();
    dev.ok(&["produce", "gf", "-K", ":"], &(before.join("\n") + "\n"));
    wait_for(
        "the records before read once between them",
        Duration::from_secs(30),
        || (a.values().len() + b.values().len() >= 200).then_some(()),
    );

    // kill -9: no LeaveGroup; the coordinator learns of it only by its silence.
    let mut a = a;
    a.child.kill().expect("kill -9");
    a.child.wait().expect("reaped");
    let killed = Instant::now();
    let after: Vec<String> = (0..200).map(|i| format!("k{i}:after-{i}")).collect();
    dev.ok(&["produce", "gf", "-K", ":"], &(after.join("\n") + "\n"));
    wait_for(
        "the survivor owning all four partitions",
        Duration::from_secs(60),
        || {
            let (state, shares) = owners(&dev, "gfault")?;
            (state == "Stable" && shares == vec![vec![0, 1, 2, 3]]).then_some(())
        },
    );
    wait_for(
        "every record written after the kill read by the survivor",
        Duration::from_secs(60),
        || {
            let got = b.values();
            after
                .iter()
                .all(|w| {
                    got.iter()
                        .any(|v| Some(v.as_str()) == w.split_once(':').map(|x| x.1))
                })
                .then_some(())
        },
    );
    let took = killed.elapsed();
    eprintln!(
        "taken over and caught up {} ms after the kill (session timeout {session_ms} ms)",
        took.as_millis()
    );
    // Duplicates are allowed (at-least-once: what the dead member read but had not
    // committed is read again); losses are not.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in a.values().into_iter().chain(b.values()) {
        *counts.entry(v).or_default() += 1;
    }
    for w in before.iter().chain(&after) {
        let value = w.split_once(':').unwrap().1;
        assert!(counts.contains_key(value), "{value} never read");
    }
}

/// Committed offsets of `group` per partition, and its coordinator, as `sluice group
/// describe` shows them through `bootstrap`.
fn committed(bootstrap: &str, group: &str) -> Option<(i64, BTreeMap<u64, i64>)> {
    let out = common::run_cli(
        bootstrap,
        &["group", "describe", group, "--output", "json"],
        "",
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let offsets = d["partitions"]
        .as_array()?
        .iter()
        .filter_map(|p| Some((p["partition"].as_u64()?, p["committed_offset"].as_i64()?)))
        .collect();
    Some((d["coordinator"].as_i64()?, offsets))
}

/// The group coordinator's broker is killed with kill -9 while two `kcat -G` members
/// read: `__consumer_offsets` (three replicas) gets a new leader, which replays the
/// group — its generation, members and assignment — so the members go on with the new
/// coordinator; every record written after the kill is read, and no committed offset
/// ever moves backwards, before, during or after.
#[test]
fn cluster_the_classic_group_survives_a_kill_of_its_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, kafka) = common::cluster::start_with_kafka(dir.path(), 3);
    let _ = cluster.client();
    let bootstrap = cluster.bootstrap();
    let cli = |args: &[&str], stdin: &str| {
        let out = common::run_cli(&bootstrap, args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(
        &[
            "topic",
            "create",
            "gc",
            "--partitions",
            "4",
            "--replication-factor",
            "3",
        ],
        "",
    );
    let all = kafka.join(",");
    let a = Member::start(&all, "gcoord", "gc", 6000);
    let b = Member::start(&all, "gcoord", "gc", 6000);
    let before: Vec<String> = (0..200).map(|i| format!("k{i}:before-{i}")).collect();
    cli(&["produce", "gc", "-K", ":"], &(before.join("\n") + "\n"));
    // Both read, and kcat's auto-commit (every 5 s) has committed everything.
    let (coordinator, mut last) = wait_for(
        "200 records read and committed",
        Duration::from_secs(60),
        || {
            let (c, offsets) = committed(&bootstrap, "gcoord")?;
            (a.values().len() + b.values().len() >= 200 && offsets.values().sum::<i64>() == 200)
                .then_some((c, offsets))
        },
    );
    cluster.kill9(coordinator as usize - 1);
    let after: Vec<String> = (0..200).map(|i| format!("k{i}:after-{i}")).collect();
    cli(&["produce", "gc", "-K", ":"], &(after.join("\n") + "\n"));
    let moved_to = wait_for(
        "every record after the kill read and committed through a new coordinator",
        Duration::from_secs(90),
        || {
            let (c, offsets) = committed(&bootstrap, "gcoord")?;
            for (p, o) in &offsets {
                let was = last.get(p).copied().unwrap_or(0);
                assert!(*o >= was, "partition {p}: committed {o} after {was}");
            }
            last = offsets.clone();
            let got: Vec<String> = a.values().into_iter().chain(b.values()).collect();
            let all_read = after.iter().all(|w| {
                got.iter()
                    .any(|v| Some(v.as_str()) == w.split_once(':').map(|x| x.1))
            });
            (c != coordinator && all_read && offsets.values().sum::<i64>() == 400).then_some(c)
        },
    );
    eprintln!("coordinator moved from broker {coordinator} to {moved_to}");
    cluster.start_broker(coordinator as usize - 1);
}
