//! The Kafka listener, through unchanged Kafka clients: kcat (librdkafka) against
//! `sluice dev`. Records written by a Kafka client read back identically through
//! Sluice's own client, and the other way round.

mod common;

use std::process::{Command, Output, Stdio};

use common::kafka_raw as raw;
use common::Dev;

/// kcat (the Debian package, which `scripts/test.sh` installs) with `args`, fed `stdin`.
fn kcat(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat not found: scripts/test.sh installs it (Debian package kcat)");
    let mut input = child.stdin.take().expect("piped");
    let bytes = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("kcat output");
    writer.join().expect("stdin writer");
    out
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// kcat's balanced consumer (`-G`: librdkafka's classic group protocol) reads a topic,
/// commits as it goes and leaves; a second run of the same group reads only what was
/// written since, and Sluice's own CLI shows the offsets it committed.
#[test]
fn kcat_balanced_consumer_resumes_from_its_classic_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "kg", "--partitions", "3"], "");
    let first: Vec<String> = (0..300).map(|i| format!("k{i}:a{i}")).collect();
    dev.ok(&["produce", "kg", "-K", ":"], &(first.join("\n") + "\n"));
    let group = |what: &str| {
        ok(
            kcat(
                &[
                    "-b",
                    &kafka,
                    "-G",
                    "kgroup",
                    "kg",
                    "-e",
                    "-f",
                    "%k:%s\n",
                    "-X",
                    "auto.offset.reset=earliest",
                ],
                "",
            ),
            what,
        )
    };
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    // While a member is in the group, Sluice's own describe shows it: the classic
    // protocol, Stable, its subscription and the 3 partitions librdkafka's assignor gave it.
    let mut live = Command::new("kcat")
        .args([
            "-b",
            &kafka,
            "-G",
            "kgroup",
            "kg",
            "-q",
            "-X",
            "enable.auto.commit=false",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat");
    let described = common::wait_for(
        "the live member in sluice group describe",
        std::time::Duration::from_secs(30),
        || {
            let out = dev.cli(&["group", "describe", "kgroup", "--output", "json"], "");
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let m = d["members"].as_array()?.first()?.clone();
            (d["state"] == "Stable"
                && m["assignment"].to_string().matches("partition").count() == 3)
                .then_some(d)
        },
    );
    assert_eq!(described["group_type"], "classic", "{described}");
    assert_eq!(
        described["members"][0]["subscribed_topics"],
        serde_json::json!(["kg"]),
        "{described}"
    );
    // SIGINT: kcat closes its consumer, which leaves the group.
    unsafe { libc::kill(live.id() as i32, libc::SIGINT) };
    let _ = live.wait();
    common::wait_for(
        "the group empty",
        std::time::Duration::from_secs(30),
        || {
            let out = dev.cli(&["group", "describe", "kgroup", "--output", "json"], "");
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (d["state"] == "Empty").then_some(())
        },
    );
    assert_eq!(sorted_lines(&group("kcat -G (first run)")), sorted(&first));
    let second: Vec<String> = (0..50).map(|i| format!("k{i}:b{i}")).collect();
    dev.ok(&["produce", "kg", "-K", ":"], &(second.join("\n") + "\n"));
    assert_eq!(
        sorted_lines(&group("kcat -G (second run)")),
        sorted(&second),
        "the second run resumes where the first committed"
    );
    let described = dev.ok(&["group", "describe", "kgroup", "--output", "json"], "");
    let d: serde_json::Value = serde_json::from_str(&described).expect("json");
    let committed: i64 = d["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("partitions in {d}"))
        .iter()
        .map(|o| o["committed_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committed, 350, "{d}");
}

#[test]
fn kcat_produces_and_consumes_through_the_kafka_listener() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "2"]);
    let kafka = dev.kafka();
    dev.ok(
        &[
            "topic",
            "create",
            "k",
            "--partitions",
            "3",
            "--replication-factor",
            "2",
        ],
        "",
    );

    // Metadata: both brokers, the topic, its three partitions with leaders.
    let listed = ok(kcat(&["-b", &kafka, "-L", "-J"], ""), "kcat -L");
    let md: serde_json::Value = serde_json::from_str(&listed).expect("kcat -L -J is JSON");
    assert_eq!(md["brokers"].as_array().map(Vec::len), Some(2), "{md}");
    let topic = md["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic"] == "k"))
        .unwrap_or_else(|| panic!("topic k listed: {md}"));
    let parts = topic["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3, "{topic}");
    for p in parts {
        assert!(p["leader"].as_i64().unwrap_or(-1) >= 1, "{p}");
        assert_eq!(p["isrs"].as_array().map(Vec::len), Some(2), "{p}");
    }

    // kcat writes (acks=all, idempotence off: kcat's default), Sluice reads.
    let written: Vec<String> = (0..300).map(|i| format!("key-{i}:value-{i}")).collect();
    ok(
        kcat(
            &["-b", &kafka, "-P", "-t", "k", "-K:", "-X", "acks=all"],
            &(written.join("\n") + "\n"),
        ),
        "kcat -P",
    );
    let read = dev.ok(
        &["consume", "k", "--from-beginning", "-e", "-f", "%k:%s\n"],
        "",
    );
    assert_eq!(sorted_lines(&read), {
        let mut w = written.clone();
        w.sort();
        w
    });

    // Sluice writes, kcat reads: keys and values as written, every partition.
    let native: Vec<String> = (0..200).map(|i| format!("n{i}:native-{i}")).collect();
    dev.ok(&["produce", "k", "-K", ":"], &(native.join("\n") + "\n"));
    let consumed = ok(
        kcat(
            &[
                "-b",
                &kafka,
                "-C",
                "-t",
                "k",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k:%s\n",
            ],
            "",
        ),
        "kcat -C",
    );
    let mut all = written.clone();
    all.extend(native.iter().cloned());
    all.sort();
    assert_eq!(sorted_lines(&consumed), all);

    // Compressed batches from librdkafka are stored as they arrive and read back.
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let lines: Vec<String> = (0..50)
            .map(|i| format!("{codec}-{i}:{codec}-v{i}"))
            .collect();
        ok(
            kcat(
                &["-b", &kafka, "-P", "-t", "k", "-K:", "-z", codec],
                &(lines.join("\n") + "\n"),
            ),
            &format!("kcat -P -z {codec}"),
        );
        let read = dev.ok(
            &["consume", "k", "--from-beginning", "-e", "-f", "%k:%s\n"],
            "",
        );
        for l in &lines {
            assert!(read.lines().any(|r| r == l), "{codec}: {l} not read back");
        }
    }

    // Offsets: kcat's query of the end of each partition matches the records written.
    let total: u64 = (0..3)
        .map(|p| {
            let out = ok(
                kcat(&["-b", &kafka, "-Q", "-t", &format!("k:{p}:-1")], ""),
                "kcat -Q",
            );
            // "k [p] offset N"
            out.split_whitespace()
                .last()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("kcat -Q answer: {out}"))
        })
        .sum();
    assert_eq!(total, 300 + 200 + 4 * 50);
}

/// Groups over Kafka's protocol, by hand: FindCoordinator old and batched; a KIP-848
/// member's OffsetCommit v9 refused with a stale epoch (STALE_MEMBER_EPOCH), an unknown
/// member (UNKNOWN_MEMBER_ID) and as a simple consumer while the group has members
/// (UNKNOWN_MEMBER_ID, as Kafka), accepted with its epoch and read back by OffsetFetch v9 and v1;
/// after it leaves, a simple consumer's commit (generation -1) is accepted.
/// ListGroups lists it with Kafka's state names and filters; DeleteGroups deletes it.
/// InitProducerId gives ids, and a transactional id its coordinator's producer id.
#[test]
fn group_and_producer_id_apis_by_hand() {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as Owned;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "w", "--partitions", "4"], "");
    let port: i32 = kafka.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut c = raw::Conn::open(&kafka);
    let s = StrBytes::from_static_str;
    let deadline = Instant::now() + Duration::from_secs(30);

    // FindCoordinator v4, two keys: both answered (the offsets topic is created on
    // first use: COORDINATOR_NOT_AVAILABLE until then).
    loop {
        let ResponseKind::FindCoordinator(r) = c.call(
            ApiKey::FindCoordinator,
            4,
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g1"), s("g2")]),
            ),
        ) else {
            panic!("not a FindCoordinator answer")
        };
        assert_eq!(r.coordinators.len(), 2);
        if r.coordinators.iter().all(|k| k.error_code == 0) {
            assert!(r
                .coordinators
                .iter()
                .all(|k| k.port == port && k.node_id.0 == 1));
            break;
        }
        assert!(Instant::now() < deadline, "no coordinator: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ResponseKind::FindCoordinator(r) = c.call(
        ApiKey::FindCoordinator,
        0,
        RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g1"))),
    ) else {
        panic!()
    };
    assert_eq!((r.error_code, r.port), (0, port), "{r:?}");
    // A transaction coordinator (this one-broker dev), and an unknown key type.
    for (key_type, want) in [(1, 0), (2, 42)] {
        let ResponseKind::FindCoordinator(r) = c.call(
            ApiKey::FindCoordinator,
            3,
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default()
                    .with_key(s("tx"))
                    .with_key_type(key_type),
            ),
        ) else {
            panic!()
        };
        assert_eq!(r.error_code, want, "key type {key_type}: {r:?}");
    }

    // A KIP-848 member joins and heartbeats until it owns all four partitions.
    let heartbeat = |c: &mut raw::Conn, member: &str, epoch: i32, join: bool| {
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if join { 30_000 } else { -1 });
        if join {
            req = req
                .with_subscribed_topic_names(Some(vec![TopicName(s("w"))]))
                .with_topic_partitions(Some(Vec::<Owned>::new()));
        }
        let ResponseKind::ConsumerGroupHeartbeat(r) = c.call(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            RequestKind::ConsumerGroupHeartbeat(req),
        ) else {
            panic!()
        };
        r
    };
    let joined = heartbeat(&mut c, "raw-member", 0, true);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let member = joined.member_id.clone().expect("a member id").to_string();
    let mut epoch = joined.member_epoch;
    let mut assignment = joined.assignment;
    while assignment.as_ref().map_or(0, |a| {
        a.topic_partitions
            .iter()
            .map(|t| t.partitions.len())
            .sum::<usize>()
    }) != 4
    {
        assert!(Instant::now() < deadline, "no assignment: {assignment:?}");
        std::thread::sleep(Duration::from_millis(100));
        let r = heartbeat(&mut c, &member, epoch, false);
        assert_eq!(r.error_code, 0, "{r:?}");
        epoch = r.member_epoch;
        assignment = r.assignment;
    }
    assert!(epoch >= 1);

    let commit = |c: &mut raw::Conn, version: i16, member: &str, epoch: i32, offset: i64| {
        let ResponseKind::OffsetCommit(r) = c.call(
            ApiKey::OffsetCommit,
            version,
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_member_id(StrBytes::from_string(member.to_string()))
                    .with_generation_id_or_member_epoch(epoch)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("w")))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)])]),
            ),
        ) else {
            panic!()
        };
        r.topics[0].partitions[0].error_code
    };
    assert_eq!(
        commit(&mut c, 9, &member, epoch + 1, 5),
        110,
        "an epoch ahead of the member's: FENCED_MEMBER_EPOCH, as Kafka 4.3+ answers"
    );
    assert_eq!(
        commit(&mut c, 9, "nobody", epoch, 5),
        25,
        "an unknown member"
    );
    assert_eq!(
        commit(&mut c, 9, "", -1, 5),
        25,
        "a simple consumer while members: UNKNOWN_MEMBER_ID, as Kafka answers"
    );
    assert_eq!(
        commit(&mut c, 9, &member, epoch, 7),
        0,
        "the member's own epoch"
    );

    let ResponseKind::OffsetFetch(r) = c.call(
        ApiKey::OffsetFetch,
        9,
        RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g1")))
                .with_member_id(Some(StrBytes::from_string(member.clone())))
                .with_member_epoch(epoch)
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("w")))
                    .with_partition_indexes(vec![0, 1])])),
        ])),
    ) else {
        panic!()
    };
    let parts = &r.groups[0].topics[0].partitions;
    assert_eq!(
        parts
            .iter()
            .map(|p| (p.partition_index, p.committed_offset))
            .collect::<Vec<_>>(),
        vec![(0, 7), (1, -1)],
        "{r:?}"
    );
    let ResponseKind::OffsetFetch(r) = c.call(
        ApiKey::OffsetFetch,
        1,
        RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g1")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("w")))
                    .with_partition_indexes(vec![0])])),
        ),
    ) else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].committed_offset, 7, "{r:?}");

    // The member leaves; now a simple consumer (generation -1) may commit.
    let left = heartbeat(&mut c, &member, -1, false);
    assert_eq!((left.error_code, left.member_epoch), (0, -1), "{left:?}");
    assert_eq!(
        commit(&mut c, 2, "", -1, 9),
        0,
        "a simple consumer, group empty"
    );
    let described = dev.ok(&["group", "describe", "g1", "--output", "json"], "");
    assert!(described.contains("\"committed_offset\":9"), "{described}");

    // ListGroups (v0 and v5 with filters) and DeleteGroups.
    let list =
        |c: &mut raw::Conn, version: i16, states: &[&'static str]| -> Vec<(String, String)> {
            let ResponseKind::ListGroups(r) = c.call(
                ApiKey::ListGroups,
                version,
                RequestKind::ListGroups(
                    ListGroupsRequest::default()
                        .with_states_filter(states.iter().map(|x| s(x)).collect()),
                ),
            ) else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "{r:?}");
            r.groups
                .iter()
                .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
                .collect()
        };
    assert!(list(&mut c, 0, &[]).contains(&("g1".into(), String::new())));
    assert!(list(&mut c, 5, &[]).contains(&("g1".into(), "Empty".into())));
    assert!(list(&mut c, 5, &["Empty"]).iter().any(|(g, _)| g == "g1"));
    assert!(!list(&mut c, 5, &["Stable"]).iter().any(|(g, _)| g == "g1"));
    let ResponseKind::DeleteGroups(r) = c.call(
        ApiKey::DeleteGroups,
        2,
        RequestKind::DeleteGroups(
            DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("g1")), GroupId(s("no-such-group"))]),
        ),
    ) else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    assert_eq!(r.results[1].error_code, 69, "GROUP_ID_NOT_FOUND: {r:?}");
    assert!(!list(&mut c, 5, &[]).iter().any(|(g, _)| g == "g1"));

    // Producer ids: fresh ones; a transactional id gets its own at epoch 0.
    let mut ids = Vec::new();
    for version in [0, 4] {
        let ResponseKind::InitProducerId(r) = c.call(
            ApiKey::InitProducerId,
            version,
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000),
            ),
        ) else {
            panic!()
        };
        assert_eq!((r.error_code, r.producer_epoch), (0, 0), "{r:?}");
        ids.push(r.producer_id.0);
    }
    assert!(ids[0] >= 0 && ids[1] != ids[0], "{ids:?}");
    let ResponseKind::InitProducerId(r) = c.call(
        ApiKey::InitProducerId,
        4,
        RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("tx"))))
                .with_transaction_timeout_ms(60_000),
        ),
    ) else {
        panic!()
    };
    assert_eq!((r.error_code, r.producer_epoch), (0, 0), "{r:?}");
    assert!(!ids.contains(&r.producer_id.0), "{r:?}");
}

/// `sluice broker` creates no topic for a Metadata request unless started with
/// `--auto-create-topics`; with it, a request that allows creation creates the topic
/// (`--num-partitions`), one that does not (v4+ `allow_auto_topic_creation` false) does
/// not.
#[test]
fn broker_auto_creates_topics_only_when_told() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let local = || format!("127.0.0.1:{}", common::free_port());
    let (k1, k2) = (local(), local());
    let brokers = vec![
        (
            local(),
            Vec::new(),
            vec!["--kafka-listen".to_string(), k1.clone()],
        ),
        (
            local(),
            Vec::new(),
            [
                "--kafka-listen",
                &k2,
                "--auto-create-topics",
                "--num-partitions",
                "3",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
    ];
    let store = format!("embedded:{}", dir.path().join("controller").display());
    let _cluster =
        common::cluster::Cluster::start_custom(dir.path(), vec![local()], brokers, &store);

    // The topic's (error, partitions) in broker `addr`'s answer, once it lists both brokers.
    let ask = |addr: &str, topic: &str, allow: bool| -> (i16, usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = std::panic::catch_unwind(|| {
                let mut c = raw::Conn::open(addr);
                c.call(
                    ApiKey::Metadata,
                    12,
                    RequestKind::Metadata(
                        MetadataRequest::default()
                            .with_topics(Some(vec![MetadataRequestTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(topic.into()))))]))
                            .with_allow_auto_topic_creation(allow),
                    ),
                )
            });
            if let Ok(ResponseKind::Metadata(r)) = answer {
                if r.brokers.len() == 2 {
                    let t = &r.topics[0];
                    return (t.error_code, t.partitions.len());
                }
            }
            assert!(
                Instant::now() < deadline,
                "broker {addr} not answering Metadata"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Off (the default): unknown, and nothing is created.
    assert_eq!(ask(&k1, "made", true), (3, 0));
    // On, but the client says no.
    assert_eq!(ask(&k2, "kept", false), (3, 0));
    // On: LEADER_NOT_AVAILABLE while it is created, then three partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ask(&k2, "made", true) {
            (0, 3) => break,
            (5, _) => assert!(Instant::now() < deadline, "topic not created in 30 s"),
            other => panic!("unexpected answer {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ask(&k1, "made", false), (0, 3), "every broker sees it");
    assert_eq!(ask(&k1, "kept", false), (3, 0), "never created");
}

/// Bad frames close only their own connection: one that claims two billion topics
/// (the protocol decoder sizes its vector by the claim: the broker aborted before its
/// allocator change), one over `socket.request.max.bytes`, an unknown API key, a body
/// cut short. The broker goes on serving kcat.
#[test]
fn bad_frames_close_only_their_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    let frame = |body: &[u8]| {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    // Metadata v1: key 3, version 1, correlation 1, null client id, then the topics
    // array's count.
    let mut lying = vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff];
    lying.extend_from_slice(&i32::MAX.to_be_bytes());
    let mut unknown_key = vec![0x7f, 0x00, 0, 0, 0, 0, 0, 2];
    unknown_key.extend_from_slice(&[0xff, 0xff]);
    let cut_short = vec![0, 3, 0, 9, 0, 0, 0, 3, 0, 40, b'x'];
    let oversize = (200i32 << 20).to_be_bytes().to_vec();
    for (what, bytes) in [
        ("a lying count", frame(&lying)),
        ("an unknown key", frame(&unknown_key)),
        ("a cut header", frame(&cut_short)),
        ("an oversize frame", oversize),
    ] {
        let mut s = std::net::TcpStream::connect(&kafka).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&bytes).unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf);
        assert!(
            matches!(n, Ok(0)) || n.is_err(),
            "{what}: the connection stays open ({n:?})"
        );
        let listed = kcat(&["-b", &kafka, "-L"], "");
        assert!(
            listed.status.success(),
            "after {what} the broker no longer serves: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
}

/// OffsetForLeaderEpoch (KIP-320): after leadership moves, the new leader tells where
/// each epoch ended; a client's stale epoch is FENCED_LEADER_EPOCH, a newer one
/// UNKNOWN_LEADER_EPOCH, and a follower answers NOT_LEADER_OR_FOLLOWER.
#[test]
fn offset_for_leader_epoch_tells_where_each_epoch_ended() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    let dir = tempfile::tempdir().unwrap();
    let (dev, kafka) = two_brokers_with(dir.path(), "e", 1);
    let describe = || partition_json(&dev, "e", 0);
    let lines = |n: usize| (0..n).map(|i| format!("r{i}\n")).collect::<String>();
    dev.ok(&["produce", "e"], &lines(10));
    let (new, old) = follower_and_leader(&dev, "e", 0);
    // The other replica first, then a preferred election: leader epoch 1 on it.
    prefer(&dev, "e", 0, new, old, true);
    let epoch = describe()["leader_epoch"].as_i64().unwrap();
    assert!(epoch >= 1, "{epoch}");
    dev.ok(&["produce", "e"], &lines(5));

    let addrs = kafka_addrs(&kafka);
    let addr_of = |id: u64| addrs[&id].clone();
    let ask = |addr: &str, current: i32, asked: i32| {
        let mut c = raw::Conn::open(addr);
        let ResponseKind::OffsetForLeaderEpoch(r) = c.call(
            ApiKey::OffsetForLeaderEpoch,
            4,
            RequestKind::OffsetForLeaderEpoch(
                OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str("e")))
                        .with_partitions(vec![OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(asked)])]),
            ),
        ) else {
            panic!("not an OffsetForLeaderEpoch answer")
        };
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    let leader = addr_of(new);
    assert_eq!(
        ask(&leader, -1, 0),
        (0, 0, 10),
        "epoch 0 ended at offset 10"
    );
    assert_eq!(
        ask(&leader, epoch as i32, epoch as i32),
        (0, epoch as i32, 15)
    );
    assert_eq!(
        ask(&leader, -1, 99),
        (0, epoch as i32, 15),
        "the latest at or below"
    );
    assert_eq!(ask(&leader, 0, 0).0, 74, "FENCED_LEADER_EPOCH");
    assert_eq!(
        ask(&leader, epoch as i32 + 5, 0).0,
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
    assert_eq!(ask(&addr_of(old), -1, 0).0, 6, "NOT_LEADER_OR_FOLLOWER");
}

/// Fetch v13–16 names topics by id (KIP-516): records come back under the id Metadata
/// gave, as v12 returns them under the name; an id the broker does not know (a deleted
/// topic's, or a made-up one) answers UNKNOWN_TOPIC_ID for each partition asked.
#[test]
fn fetch_by_topic_id_from_v13() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::*;

    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "byid", "--partitions", "1"], "");
    let written: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    dev.ok(&["produce", "byid"], &(written.join("\n") + "\n"));
    let mut conn = raw::Conn::open(&kafka);
    let ResponseKind::Metadata(md) = conn.call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(apis_name("byid"))),
        ]))),
    ) else {
        panic!("not a Metadata answer")
    };
    let id = md.topics[0].topic_id;
    assert!(!id.is_nil(), "{md:?}");
    let fetch = |conn: &mut raw::Conn, version: i16, topic: FetchTopic| {
        let req = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic.with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
        match conn.call(ApiKey::Fetch, version, RequestKind::Fetch(req)) {
            ResponseKind::Fetch(f) => f,
            other => panic!("{other:?}"),
        }
    };
    let count = |records: &Option<bytes::Bytes>| -> usize {
        let mut b = records.clone().unwrap_or_default();
        kafka_protocol::records::RecordBatchDecoder::decode_all(&mut b)
            .map(|sets| sets.iter().map(|s| s.records.len()).sum())
            .unwrap_or(0)
    };
    for version in [13, 16] {
        let f = fetch(&mut conn, version, FetchTopic::default().with_topic_id(id));
        let t = &f.responses[0];
        assert_eq!(t.topic_id, id, "v{version}: {f:?}");
        assert_eq!(t.partitions[0].error_code, 0, "v{version}: {f:?}");
        assert_eq!(t.partitions[0].high_watermark, 20);
        assert_eq!(count(&t.partitions[0].records), 20, "v{version}");
        let unknown = uuid::Uuid::from_u128(0x5157_1ce0);
        let f = fetch(
            &mut conn,
            version,
            FetchTopic::default().with_topic_id(unknown),
        );
        assert_eq!(f.responses[0].topic_id, unknown);
        assert_eq!(
            f.responses[0].partitions[0].error_code, 100,
            "UNKNOWN_TOPIC_ID: {f:?}"
        );
    }
    let f = fetch(
        &mut conn,
        12,
        FetchTopic::default().with_topic(apis_name("byid")),
    );
    assert_eq!(f.responses[0].topic.0.as_str(), "byid");
    assert_eq!(count(&f.responses[0].partitions[0].records), 20);
}

/// A `sluice dev --brokers 2` with `topic` (`partitions` partitions, on both brokers);
/// its Kafka listener.
fn two_brokers_with(dir: &std::path::Path, topic: &str, partitions: u32) -> (Dev, String) {
    let dev = Dev::start_with(dir, &["--brokers", "2"]);
    let kafka = dev.kafka();
    dev.ok(
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--replication-factor",
            "2",
        ],
        "",
    );
    (dev, kafka)
}

/// Partition `p` of `topic` as `sluice topic describe --output json` shows it.
fn partition_json(dev: &Dev, topic: &str, p: usize) -> serde_json::Value {
    let d: serde_json::Value =
        serde_json::from_str(&dev.ok(&["topic", "describe", topic, "--output", "json"], ""))
            .unwrap();
    d["partitions"][p].clone()
}

/// The replica of `topic`-`p` that does not lead it, and its leader.
fn follower_and_leader(dev: &Dev, topic: &str, p: usize) -> (u64, u64) {
    let first = partition_json(dev, topic, p);
    let old = first["leader"].as_u64().unwrap();
    let new = first["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .find(|r| *r != old)
        .unwrap();
    (new, old)
}

/// Makes `new` the preferred replica of `topic`-`p` (`old` second); with `elect`, also
/// elects it and waits until it leads with both replicas in sync.
fn prefer(dev: &Dev, topic: &str, p: usize, new: u64, old: u64, elect: bool) {
    use std::time::Duration;
    dev.ok(
        &[
            "partition",
            "reassign",
            "--topic",
            topic,
            "--partition",
            &p.to_string(),
            "--replicas",
            &format!("{new},{old}"),
        ],
        "",
    );
    common::wait_for("the reassignment", Duration::from_secs(30), || {
        if elect {
            let _ = dev.cli(&["partition", "elect-leaders"], "");
        }
        let j = partition_json(dev, topic, p);
        let leads = !elect || j["leader"].as_u64() == Some(new);
        (j["replicas"][0].as_u64() == Some(new)
            && leads
            && j["isr"].as_array().map(Vec::len) == Some(2))
        .then_some(())
    });
}

/// Each broker's Kafka address, from Metadata.
fn kafka_addrs(kafka: &str) -> std::collections::BTreeMap<u64, String> {
    use kafka_protocol::messages::*;
    let ResponseKind::Metadata(md) = raw::Conn::open(kafka).call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default()),
    ) else {
        panic!("not a Metadata answer")
    };
    md.brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0 as u64,
                format!("{}:{}", b.host.as_str(), b.port),
            )
        })
        .collect()
}

fn apis_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(s.into()))
}

/// DeleteRecords (kafka-delete-records, AdminClient.deleteRecords): the leader's log
/// start moves to the offset asked (the low watermark answered), reads before it are
/// OFFSET_OUT_OF_RANGE and an offset past the high watermark is refused; the follower
/// takes the leader's log start with its next fetch, so after the leadership moves to it
/// the deleted records stay deleted.
#[test]
fn delete_records_moves_the_log_start_on_every_replica() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::*;

    let dir = tempfile::tempdir().unwrap();
    let (dev, kafka) = two_brokers_with(dir.path(), "dr", 1);
    let lines: String = (0..100).map(|i| format!("r{i}\n")).collect();
    dev.ok(&["produce", "dr"], &lines);
    let describe = || partition_json(&dev, "dr", 0);
    let (new, old) = follower_and_leader(&dev, "dr", 0);
    let addrs = kafka_addrs(&kafka);
    let addr_of = |id: u64| addrs[&id].clone();
    let delete = |addr: &str, offset: i64| {
        let mut c = raw::Conn::open(addr);
        let ResponseKind::DeleteRecords(r) = c.call(
            ApiKey::DeleteRecords,
            2,
            RequestKind::DeleteRecords(
                DeleteRecordsRequest::default()
                    .with_timeout_ms(5000)
                    .with_topics(vec![DeleteRecordsTopic::default()
                        .with_name(apis_name("dr"))
                        .with_partitions(vec![DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(offset)])]),
            ),
        ) else {
            panic!("not a DeleteRecords answer")
        };
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    };
    assert_eq!(
        delete(&addr_of(new), 40).0,
        6,
        "a follower: NOT_LEADER_OR_FOLLOWER"
    );
    assert_eq!(
        delete(&addr_of(old), 101).0,
        1,
        "past the HW: OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(delete(&addr_of(old), 40), (0, 40));
    assert_eq!(
        delete(&addr_of(old), 10),
        (0, 40),
        "below the log start: no change"
    );
    let read = |what: &str| {
        let out = ok(
            kcat(
                &[
                    "-b",
                    &kafka,
                    "-C",
                    "-t",
                    "dr",
                    "-o",
                    "beginning",
                    "-e",
                    "-f",
                    "%o %s\n",
                ],
                "",
            ),
            what,
        );
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let want: Vec<String> = (40..100).map(|i| format!("{i} r{i}")).collect();
    assert_eq!(read("kcat -C after the delete"), want);

    // The follower follows; then it leads and the records stay deleted.
    prefer(&dev, "dr", 0, new, old, true);
    assert_eq!(describe()["log_start_offset"], 40, "{}", describe());
    assert_eq!(read("kcat -C after the move"), want);
}

/// ElectLeaders (kafka-leader-election): a preferred election of the partitions named,
/// each with its outcome — elected where the preferred replica is in sync and does not
/// lead, ELECTION_NOT_NEEDED where it leads, UNKNOWN_TOPIC_OR_PARTITION for one that
/// does not exist; all partitions when none are named; an unclean election elects
/// nobody outside the ISR.
#[test]
fn elect_leaders_runs_a_preferred_election_per_partition() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (dev, kafka) = two_brokers_with(dir.path(), "el", 2);
    let describe = |p: usize| partition_json(&dev, "el", p);
    // The other replica first: it is now preferred, but does not lead yet.
    let (new, old) = follower_and_leader(&dev, "el", 0);
    prefer(&dev, "el", 0, new, old, false);
    let elect = |kind: i8, partitions: Option<Vec<i32>>| -> BTreeMap<i32, i16> {
        let mut c = raw::Conn::open(&kafka);
        let ResponseKind::ElectLeaders(r) = c.call(
            ApiKey::ElectLeaders,
            2,
            RequestKind::ElectLeaders(
                ElectLeadersRequest::default()
                    .with_election_type(kind)
                    .with_timeout_ms(5000)
                    .with_topic_partitions(partitions.map(|ps| {
                        vec![TopicPartitions::default()
                            .with_topic(apis_name("el"))
                            .with_partitions(ps)]
                    })),
            ),
        ) else {
            panic!("not an ElectLeaders answer")
        };
        assert_eq!(r.error_code, 0, "{r:?}");
        r.replica_election_results
            .iter()
            .filter(|t| t.topic.0.as_str() == "el")
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(|p| (p.partition_id, p.error_code))
            })
            .collect()
    };
    assert_eq!(
        elect(0, Some(vec![0, 1, 7])),
        BTreeMap::from([(0, 0), (1, 84), (7, 3)])
    );
    common::wait_for(
        "partition 0 led by its preferred replica",
        Duration::from_secs(30),
        || (describe(0)["leader"].as_u64() == Some(new)).then_some(()),
    );
    // Every partition (null): as in Kafka, only partitions acted on are answered, and
    // both already have their preferred leader.
    assert_eq!(elect(0, None), BTreeMap::new());
    assert_eq!(elect(1, Some(vec![0])), BTreeMap::from([(0, 84)]));
}

/// OffsetCommit names partitions the cluster does not have: as in Kafka, each is answered
/// UNKNOWN_TOPIC_OR_PARTITION and left out, and the known ones commit (librdkafka's
/// 0030_offset_commit `do_nonexist_commit` expects the error; it got success).
#[test]
fn offset_commit_answers_unknown_partitions_and_commits_the_rest() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(&["topic", "create", "known", "--partitions", "2"], "");
    let mut c = raw::Conn::open(&kafka);
    let s = StrBytes::from_static_str;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ResponseKind::FindCoordinator(r) = c.call(
            ApiKey::FindCoordinator,
            0,
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("gu"))),
        ) else {
            panic!()
        };
        if r.error_code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no coordinator: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let part = |i: i32, offset: i64| {
        OffsetCommitRequestPartition::default()
            .with_partition_index(i)
            .with_committed_offset(offset)
    };
    let commit = |c: &mut raw::Conn, topics: Vec<OffsetCommitRequestTopic>| {
        let ResponseKind::OffsetCommit(r) = c.call(
            ApiKey::OffsetCommit,
            8,
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("gu")))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(topics),
            ),
        ) else {
            panic!()
        };
        r.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
            })
            .collect::<Vec<_>>()
    };
    let topic = |name: &'static str, parts| {
        OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(name)))
            .with_partitions(parts)
    };
    // Only unknown partitions: each answered 3, nothing committed.
    assert_eq!(
        commit(
            &mut c,
            vec![topic("nowhere", vec![part(0, 123), part(1, 456)])]
        ),
        vec![("nowhere".into(), 0, 3), ("nowhere".into(), 1, 3)]
    );
    // Mixed: partition 5 of a 2-partition topic is unknown too; partition 1 commits.
    assert_eq!(
        commit(
            &mut c,
            vec![
                topic("known", vec![part(1, 9), part(5, 9)]),
                topic("nowhere", vec![part(0, 1)]),
            ]
        ),
        vec![
            ("known".into(), 1, 0),
            ("known".into(), 5, 3),
            ("nowhere".into(), 0, 3)
        ]
    );
    let described = dev.ok(&["group", "describe", "gu", "--output", "json"], "");
    assert!(
        described.contains("\"known\"") && !described.contains("nowhere"),
        "{described}"
    );
    dev.stop();
}

/// A compacted topic refuses a batch holding records without a key (INVALID_RECORD), and
/// from Produce v8 names each of them by its position in the batch (KIP-467's record
/// errors), so a client fails those records with INVALID_RECORD and the rest of the batch
/// with its "different record" error (librdkafka's 0011_produce_batch
/// `test_message_single_partition_record_fail`: it failed all 100 records alike).
#[test]
fn produce_to_a_compacted_topic_names_the_keyless_records() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use sluice_proto::{BatchBuilder, Compression};

    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka();
    dev.ok(
        &[
            "topic",
            "create",
            "compacted",
            "--partitions",
            "1",
            "--config",
            "cleanup.policy=compact",
        ],
        "",
    );
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..5 {
        let key = [b'k', b'0' + i];
        b.append(1, (i % 2 == 0).then_some(&key[..]), Some(b"v"), &[]);
    }
    let records = b.build().unwrap().into_bytes();
    let mut c = raw::Conn::open(&kafka);
    for version in [7, 8, 11] {
        let ResponseKind::Produce(r) = c.call(
            ApiKey::Produce,
            version,
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(10_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("compacted")))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records.clone()))])]),
            ),
        ) else {
            panic!()
        };
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 87, "INVALID_RECORD at v{version}: {p:?}");
        let named: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
        if version >= 8 {
            assert_eq!(
                named,
                vec![1, 3],
                "the keyless records at v{version}: {p:?}"
            );
            assert!(p.record_errors[0]
                .batch_index_error_message
                .as_ref()
                .is_some_and(|m| m.contains("key")));
        } else {
            assert!(named.is_empty(), "no record errors before v8");
        }
    }
    dev.stop();
}
