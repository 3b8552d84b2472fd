//! The consumer library's group API against a real `sluice dev`: two subscribed
//! consumers in one process split a topic (rebalance callbacks: the first is told what it
//! gives up before the second is told what it gets), manual commits and `committed`,
//! `lag`, a regex subscription that picks up a topic created later, a stale-epoch commit
//! refused, and `close` handing partitions over at once.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{runtime, wait_for, Dev};
use sluice_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, GroupOptions, OffsetReset, RebalanceEvent,
    Subscription,
};
use sluice_proto::TopicPartition;

type Events = Arc<Mutex<Vec<(&'static str, RebalanceEvent)>>>;

fn member(
    rt: &tokio::runtime::Runtime,
    config: &ClientConfig,
    group: &str,
    sub: Subscription,
    name: &'static str,
    events: &Events,
) -> Consumer {
    let mut c = Consumer::new(
        config,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    let _in_runtime = rt.enter();
    c.subscribe(
        GroupOptions {
            session_timeout: Some(Duration::from_secs(60)),
            auto_commit_interval: None,
            ..GroupOptions::new(group)
        },
        sub,
    )
    .unwrap();
    let events = events.clone();
    c.on_rebalance(move |e| events.lock().unwrap().push((name, e)));
    c
}

/// Polls both until each owns `want` partitions (or `want_b` for the second).
fn settle(rt: &tokio::runtime::Runtime, a: &mut Consumer, b: &mut Consumer, want: (usize, usize)) {
    wait_for("the members to settle", Duration::from_secs(30), || {
        rt.block_on(async {
            a.poll(Duration::from_millis(50)).await.unwrap();
            b.poll(Duration::from_millis(50)).await.unwrap();
        });
        (a.assignment().len() == want.0 && b.assignment().len() == want.1).then_some(())
    });
}

#[test]
fn two_members_split_a_topic_commit_and_hand_over() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "4",
            "--replication-factor",
            "1",
        ],
        "",
    );
    let lines: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    dev.ok(&["produce", "t", "--key-separator", ":"], &lines);
    let rt = runtime();
    let config = ClientConfig::new(&dev.addr);
    let events: Events = Default::default();

    let mut a = member(
        &rt,
        &config,
        "g",
        Subscription::Topics(vec!["t".into()]),
        "a",
        &events,
    );
    let mut got = Vec::new();
    wait_for("a to read everything", Duration::from_secs(30), || {
        got.extend(rt.block_on(a.poll(Duration::from_millis(100))).unwrap());
        (got.len() >= 40).then_some(())
    });
    assert_eq!(a.assignment().len(), 4);
    for p in 0..4 {
        assert_eq!(
            a.lag(&TopicPartition::new("t", p)),
            Some(0),
            "read to the end"
        );
    }
    rt.block_on(a.commit()).unwrap();
    let committed = rt
        .block_on(
            a.committed(
                &(0..4)
                    .map(|p| TopicPartition::new("t", p))
                    .collect::<Vec<_>>(),
            ),
        )
        .unwrap();
    let total: u64 = committed.values().map(|o| o.expect("committed")).sum();
    assert_eq!(
        total, 40,
        "every partition committed at its end: {committed:?}"
    );

    // A second member: a gives up two partitions (Revoked) before b gets them (Assigned).
    let mut b = member(
        &rt,
        &config,
        "g",
        Subscription::Topics(vec!["t".into()]),
        "b",
        &events,
    );
    settle(&rt, &mut a, &mut b, (2, 2));
    let log = events.lock().unwrap().clone();
    let revoked = log
        .iter()
        .position(|(who, e)| *who == "a" && matches!(e, RebalanceEvent::Revoked(p) if p.len() == 2))
        .expect("a was told what it gave up");
    let assigned = log
        .iter()
        .position(|(who, e)| {
            *who == "b" && matches!(e, RebalanceEvent::Assigned(p) if p.len() == 2)
        })
        .expect("b was told what it got");
    assert!(revoked < assigned, "revoke before assign: {log:?}");
    let a_parts: BTreeSet<_> = a.assignment().into_iter().collect();
    let b_parts: BTreeSet<_> = b.assignment().into_iter().collect();
    assert!(a_parts.is_disjoint(&b_parts));
    // b starts at the committed offsets: nothing to read.
    let more = rt.block_on(b.poll(Duration::from_millis(300))).unwrap();
    assert!(
        more.is_empty(),
        "b resumes where the group committed: {more:?}"
    );

    // A commit at a stale epoch is refused: the epoch before the member's current one
    // is accepted only for partitions it still owns (KIP-1251), so this one names a
    // partition b owns.
    let (id, epoch) = a.member().unwrap();
    let admin = Admin::new(&config);
    let stale = rt.block_on(async {
        let link_commit = sluice_proto::v1::CommitOffsetsRequest {
            group_id: "g".into(),
            member_id: id.clone(),
            member_epoch: epoch - 1,
            partitions: vec![sluice_proto::v1::OffsetCommitPartition {
                topic: "t".into(),
                partition: b_parts.iter().next().unwrap().partition,
                offset: 0,
                metadata: String::new(),
                leader_epoch: None,
            }],
        };
        let d = admin.describe_group("g").await.unwrap();
        let addr = {
            let md = admin.describe_cluster().await.unwrap();
            md.brokers
                .into_iter()
                .find(|b| b.id as i32 == d.coordinator)
                .unwrap()
                .addr
        };
        let mut c =
            sluice_proto::v1::groups_client::GroupsClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        c.commit_offsets(link_commit).await.unwrap().into_inner()
    });
    assert_eq!(
        sluice_proto::ErrorCode::from_code(stale.error_code),
        sluice_proto::ErrorCode::StaleMemberEpoch,
        "{}",
        stale.error_message
    );

    // close: a leaves, b takes all four. Sessions are 60 s, longer than this wait: only
    // the leave can move a's partitions in time.
    rt.block_on(a.close()).unwrap();
    wait_for("b to own everything", Duration::from_secs(30), || {
        rt.block_on(b.poll(Duration::from_millis(50))).unwrap();
        (b.assignment().len() == 4).then_some(())
    });
    rt.block_on(b.close()).unwrap();
}

#[test]
fn a_regex_subscription_picks_up_a_topic_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "orders.eu",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
        "",
    );
    dev.ok(
        &[
            "topic",
            "create",
            "payments",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        "",
    );
    dev.ok(&["produce", "orders.eu"], "eu1\n");
    dev.ok(&["produce", "payments"], "pay1\n");
    let rt = runtime();
    let config = ClientConfig::new(&dev.addr);
    let events: Events = Default::default();
    let mut c = member(
        &rt,
        &config,
        "rg",
        Subscription::Pattern(r"orders\..*".into()),
        "c",
        &events,
    );
    let mut values = BTreeSet::new();
    let read = |c: &mut Consumer, values: &mut BTreeSet<String>| {
        for r in rt.block_on(c.poll(Duration::from_millis(100))).unwrap() {
            values.insert(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    };
    wait_for("orders.eu read", Duration::from_secs(30), || {
        read(&mut c, &mut values);
        values.contains("eu1").then_some(())
    });
    dev.ok(
        &[
            "topic",
            "create",
            "orders.us",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        "",
    );
    dev.ok(&["produce", "orders.us"], "us1\n");
    wait_for(
        "orders.us picked up and read",
        Duration::from_secs(30),
        || {
            read(&mut c, &mut values);
            values.contains("us1").then_some(())
        },
    );
    assert!(
        !values.contains("pay1"),
        "payments does not match: {values:?}"
    );
    let topics: BTreeSet<String> = c.assignment().into_iter().map(|tp| tp.topic).collect();
    assert_eq!(topics, ["orders.eu", "orders.us"].map(String::from).into());
    assert_eq!(c.assignment().len(), 5);
}
