//! Consumer groups across processes: `sluice consume --group` members on a three-broker
//! cluster while a producer writes, with members joining, killed (-9), stopped (SIGSTOP
//! past the session timeout), stopped cleanly, and the coordinator's broker killed.
//! Checks: every produced record is printed by some member (at least once, as commits
//! follow printing), no partition is owned by two members at the same member epoch
//! (from the ownership lines each member prints), committed offsets survive the
//! coordinator's failover.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{signal, Cluster};
use common::{wait_for, BIN};
use sluice_client::{Acks, Admin, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::TopicPartition;

const TOPIC: &str = "events";
const GROUP: &str = "workers";
const SESSION_MS: &str = "1500";

struct Member {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

fn start_member(dir: &Path, bootstrap: &str, n: usize, session_ms: &str) -> Member {
    let out = dir.join(format!("member-{n}.out"));
    let err = dir.join(format!("member-{n}.err"));
    let child = Command::new(BIN)
        .args(["consume", TOPIC, "--group", GROUP, "--from-beginning"])
        .args([
            "--session-timeout-ms",
            session_ms,
            "--commit-interval-ms",
            "200",
        ])
        .args(["-f", "%p %o %s\\n", "--bootstrap", bootstrap])
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Member {
        child: Some(child),
        out,
        err,
    }
}

/// Values every member printed.
fn printed(members: &[Member]) -> BTreeSet<String> {
    members
        .iter()
        .flat_map(|m| {
            std::fs::read_to_string(&m.out)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(2).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// (member id, epoch, owned) from a member's `group G member M epoch E owns [..]` lines.
fn ownership(m: &Member) -> Vec<(String, i32, BTreeSet<String>)> {
    std::fs::read_to_string(&m.err)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("group {GROUP} member "))?;
            let (id, rest) = rest.split_once(" epoch ")?;
            let (epoch, rest) = rest.split_once(" owns [")?;
            let owned = rest.strip_suffix(']')?;
            Some((
                id.to_string(),
                epoch.parse().ok()?,
                owned
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ))
        })
        .collect()
}

fn produce(rt: &tokio::runtime::Runtime, producer: &Producer, from: u64, n: u64) {
    rt.block_on(async {
        let mut acks = Vec::new();
        for i in from..from + n {
            acks.push(
                producer
                    .send(ProducerRecord::new(
                        TOPIC,
                        Some(format!("k{i}")),
                        format!("v{i}"),
                    ))
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.expect("acks=all with two of three replicas");
        }
    });
}

/// Waits until the group is stable with `n` members that together own all 12
/// partitions; returns its members' ids.
fn wait_stable(rt: &tokio::runtime::Runtime, admin: &Admin, n: usize) -> Vec<String> {
    wait_for(
        &format!("the group to be stable with {n} members"),
        Duration::from_secs(60),
        || {
            let d = rt.block_on(admin.describe_group(GROUP)).ok()?;
            let owned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
            (d.state == "stable" && d.members.len() == n && owned == 12)
                .then(|| d.members.iter().map(|m| m.member_id.clone()).collect())
        },
    )
}

#[test]
fn group_members_share_partitions_through_joins_kills_stops_and_coordinator_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, config, admin) = cluster.client();
    let bootstrap = cluster.bootstrap();
    rt.block_on(admin.create_topic(
        TOPIC,
        12,
        3,
        [("min.insync.replicas".to_string(), "2".to_string())].into(),
    ))
    .unwrap();
    let producer = rt
        .block_on(Producer::new(
            &config,
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(2),
                request_timeout: Duration::from_secs(3),
                delivery_timeout: Duration::from_secs(60),
                ..Default::default()
            },
        ))
        .unwrap();
    let mut produced = 0u64;
    let batch = |n: u64, produced: &mut u64| {
        produce(&rt, &producer, *produced, n);
        *produced += n;
    };

    // Member 2 is stopped cleanly later; its session timeout is too long to be what
    // moves its partitions within the wait, so only its leaving can.
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            let session = if i == 2 { "300000" } else { SESSION_MS };
            start_member(dir.path(), &bootstrap, i, session)
        })
        .collect();
    batch(3000, &mut produced);
    wait_stable(&rt, &admin, 3);

    // A fourth joins: it takes three partitions, the others keep the rest.
    members.push(start_member(dir.path(), &bootstrap, 3, SESSION_MS));
    batch(2000, &mut produced);
    let joined = Instant::now();
    wait_stable(&rt, &admin, 4);
    eprintln!("join rebalanced in {:?}", joined.elapsed());

    // kill -9 one: its partitions move after the session timeout.
    let killed = Instant::now();
    let mut c = members[0].child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    batch(2000, &mut produced);
    wait_stable(&rt, &admin, 3);
    eprintln!("kill -9 to a stable group of 3: {:?}", killed.elapsed());

    // SIGSTOP one past the session timeout: fenced; once continued it rejoins.
    let stopped = members[1].child.as_ref().unwrap();
    signal(stopped, libc::SIGSTOP);
    batch(2000, &mut produced);
    wait_stable(&rt, &admin, 2);
    signal(members[1].child.as_ref().unwrap(), libc::SIGCONT);
    wait_stable(&rt, &admin, 3);

    // Stop one cleanly: it commits and leaves at once (no session timeout to wait).
    let mut c = members[2].child.take().unwrap();
    signal(&c, libc::SIGTERM);
    let status = c.wait().unwrap();
    assert!(
        status.success(),
        "a member stopped with SIGTERM exits 0: {status}"
    );
    batch(2000, &mut produced);
    wait_stable(&rt, &admin, 2);

    // Everything so far is printed and committed.
    let all: BTreeSet<String> = (0..produced).map(|i| format!("v{i}")).collect();
    wait_for("every record printed", Duration::from_secs(60), || {
        (printed(&members).is_superset(&all)).then_some(())
    });
    let before = wait_for(
        "offsets committed up to the end",
        Duration::from_secs(30),
        || {
            let d = rt.block_on(admin.describe_group(GROUP)).ok()?;
            (d.partitions.len() == 12 && d.partitions.iter().all(|p| p.lag == Some(0))).then(|| {
                d.partitions
                    .iter()
                    .map(|p| (p.tp.clone(), p.committed_offset.unwrap()))
                    .collect::<BTreeMap<TopicPartition, u64>>()
            })
        },
    );

    // kill -9 the coordinator's broker: offsets survive, the group goes on.
    let coordinator = rt
        .block_on(admin.describe_group(GROUP))
        .unwrap()
        .coordinator;
    assert!(coordinator >= 1, "a coordinator answers: {coordinator}");
    cluster.kill9(coordinator as usize - 1);
    let after = wait_for(
        "the new coordinator to answer",
        Duration::from_secs(60),
        || {
            let d = rt.block_on(admin.describe_group(GROUP)).ok()?;
            (d.coordinator != coordinator).then_some(d)
        },
    );
    for (tp, offset) in &before {
        let now = after
            .partitions
            .iter()
            .find(|p| &p.tp == tp)
            .and_then(|p| p.committed_offset);
        assert!(
            now.is_some_and(|n| n >= *offset),
            "{tp}: committed {offset} before the coordinator died, {now:?} after"
        );
    }
    batch(2000, &mut produced);
    let all: BTreeSet<String> = (0..produced).map(|i| format!("v{i}")).collect();
    wait_for(
        "records after the failover printed",
        Duration::from_secs(60),
        || (printed(&members).is_superset(&all)).then_some(()),
    );

    // No partition was owned by two members at the same epoch.
    let mut by_epoch: BTreeMap<i32, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut lines = 0;
    for m in &members {
        for (id, epoch, owned) in ownership(m) {
            lines += 1;
            by_epoch
                .entry(epoch)
                .or_default()
                .entry(id)
                .or_default()
                .extend(owned);
        }
    }
    assert!(
        lines >= 8,
        "members reported their ownership ({lines} lines)"
    );
    for (epoch, owners) in &by_epoch {
        let mut seen: BTreeMap<&String, &String> = BTreeMap::new();
        for (member, parts) in owners {
            for p in parts {
                if let Some(other) = seen.insert(p, member) {
                    panic!("{p} owned by {other} and {member} at epoch {epoch}");
                }
            }
        }
    }
    for m in &mut members {
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
