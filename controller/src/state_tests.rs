//! Unit tests of the cluster state machine.
use super::*;

fn state_with(brokers: &[u32]) -> (ClusterState, Instant) {
    let now = Instant::now();
    let mut s = ClusterState::new(Snapshot::default(), now, Duration::from_secs(2), 100, 1);
    for &b in brokers {
        s.register(b, format!("127.0.0.1:{}", 9000 + b), None, 1, now);
    }
    (s, now)
}

#[test]
fn topics_spread_over_brokers_and_reject_bad_input() {
    let (mut s, _) = state_with(&[1, 2, 3]);
    let actions = s
        .create_topic("orders", 6, 1, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    let leaders: Vec<u32> = s.snap.topics["orders"]
        .partitions
        .iter()
        .map(|p| p.leader.unwrap())
        .collect();
    assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::LeaderAndIsr { .. }))
            .count(),
        3
    );
    let err = |r: Result<Vec<Action>, Rejection>| r.unwrap_err().0;
    assert_eq!(
        err(s.create_topic("orders", 1, 1, BTreeMap::new(), "x".into(), Vec::new())),
        ErrorCode::TopicAlreadyExists
    );
    assert_eq!(
        err(s.create_topic("bad name", 1, 1, BTreeMap::new(), "x".into(), Vec::new())),
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        err(s.create_topic("t", 0, 1, BTreeMap::new(), "x".into(), Vec::new())),
        ErrorCode::InvalidPartitions
    );
    assert_eq!(
        err(s.create_topic("t", 1, 4, BTreeMap::new(), "x".into(), Vec::new())),
        ErrorCode::InvalidReplicationFactor
    );
    let bad = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
    assert_eq!(
        err(s.create_topic("t", 1, 1, bad, "x".into(), Vec::new())),
        ErrorCode::InvalidConfig
    );
}

#[test]
fn silent_broker_is_fenced_and_its_partitions_go_offline_then_return() {
    let (mut s, now) = state_with(&[1, 2]);
    s.create_topic("t", 2, 1, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    s.heartbeat(1, s.snap.brokers[&1].epoch, now + Duration::from_secs(2))
        .unwrap();
    let actions = s.tick(now + Duration::from_millis(2500));
    assert!(!s.is_live(2));
    assert!(actions.contains(&Action::UpdateMetadataAll));
    let p1 = &s.snap.topics["t"].partitions[1];
    assert_eq!((p1.leader, p1.leader_epoch), (None, 1));
    let stale = s.snap.brokers[&2].epoch;
    assert_eq!(
        s.heartbeat(2, stale, now).unwrap_err().0,
        ErrorCode::StaleBrokerEpoch
    );
    // It comes back: a new epoch, and its partition leads again with a new leader epoch.
    let (epoch, actions) = s.register(
        2,
        "127.0.0.1:9002".into(),
        None,
        2,
        now + Duration::from_secs(3),
    );
    assert!(epoch > stale);
    let p1 = &s.snap.topics["t"].partitions[1];
    assert_eq!((p1.leader, p1.leader_epoch), (Some(2), 2));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::LeaderAndIsr { broker: 2, .. })));
}

#[test]
fn configs_are_validated_on_alter_and_delete_stops_replicas() {
    let (mut s, _) = state_with(&[1]);
    s.create_topic("t", 1, 1, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    let set = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    s.alter_configs("t", set, &[]).unwrap();
    assert_eq!(s.snap.topics["t"].configs["retention.ms"], "1000");
    let bad = BTreeMap::from([("nope".to_string(), "1".to_string())]);
    assert_eq!(
        s.alter_configs("t", bad, &[]).unwrap_err().0,
        ErrorCode::InvalidConfig
    );
    let actions = s.delete_topic("t").unwrap();
    assert_eq!(
        actions[0],
        Action::StopReplica {
            broker: 1,
            partitions: vec![("t".into(), 0)]
        }
    );
    assert_eq!(
        s.delete_topic("t").unwrap_err().0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        s.metadata(&["t".into()]).topics[0].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );
}

#[test]
fn fencing_shrinks_isrs_and_moves_leadership() {
    let (mut s, now) = state_with(&[1, 2, 3]);
    s.create_topic("r", 1, 3, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    assert_eq!(s.snap.topics["r"].partitions[0].isr, vec![1, 2, 3]);
    for b in [2, 3] {
        s.heartbeat(b, s.snap.brokers[&b].epoch, now + Duration::from_secs(2))
            .unwrap();
    }
    s.tick(now + Duration::from_millis(2500));
    let p = &s.snap.topics["r"].partitions[0];
    assert_eq!(
        (p.leader, p.isr.clone(), p.leader_epoch),
        (Some(2), vec![2, 3], 1)
    );
    assert!(p.partition_epoch >= 1);
}

#[test]
fn alter_partition_is_fenced_by_leader_and_partition_epochs() {
    let (mut s, _) = state_with(&[1, 2, 3]);
    s.create_topic("r", 1, 3, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    let e1 = s.snap.brokers[&1].epoch;
    let (state, actions) = s.alter_partition(1, e1, "r", 0, 0, 0, vec![1, 3]).unwrap();
    assert_eq!((state.isr, state.partition_epoch), (vec![1, 3], 1));
    assert!(actions.contains(&Action::UpdateMetadataAll));
    let code = |r: Result<(v1::PartitionState, Vec<Action>), Rejection>| r.unwrap_err().0;
    // Stale partition epoch, wrong leader, stale leader epoch, leader left out, stale broker.
    assert_eq!(
        code(s.alter_partition(1, e1, "r", 0, 0, 0, vec![1, 2, 3])),
        ErrorCode::InvalidUpdateVersion
    );
    let e2 = s.snap.brokers[&2].epoch;
    assert_eq!(
        code(s.alter_partition(2, e2, "r", 0, 0, 1, vec![2])),
        ErrorCode::FencedLeaderEpoch
    );
    assert_eq!(
        code(s.alter_partition(1, e1, "r", 0, 5, 1, vec![1])),
        ErrorCode::FencedLeaderEpoch
    );
    assert_eq!(
        code(s.alter_partition(1, e1, "r", 0, 0, 1, vec![3])),
        ErrorCode::IneligibleReplica
    );
    assert_eq!(
        code(s.alter_partition(1, e1 - 1, "r", 0, 0, 1, vec![1])),
        ErrorCode::StaleBrokerEpoch
    );
    s.alter_partition(1, e1, "r", 0, 0, 1, vec![3, 1, 2])
        .unwrap();
    assert_eq!(
        s.snap.topics["r"].partitions[0].isr,
        vec![1, 2, 3],
        "kept in replica order"
    );
}

#[test]
fn unclean_election_only_when_the_topic_allows_it() {
    for (allowed, expect) in [(false, None), (true, Some(2))] {
        let (mut s, now) = state_with(&[1, 2]);
        let mut configs = BTreeMap::new();
        configs.insert(
            "unclean.leader.election.enable".to_string(),
            allowed.to_string(),
        );
        s.create_topic("u", 1, 2, configs, "id".into(), Vec::new())
            .unwrap();
        let e1 = s.snap.brokers[&1].epoch;
        s.alter_partition(1, e1, "u", 0, 0, 0, vec![1]).unwrap();
        s.heartbeat(2, s.snap.brokers[&2].epoch, now + Duration::from_secs(2))
            .unwrap();
        s.tick(now + Duration::from_millis(2500));
        assert_eq!(
            s.snap.topics["u"].partitions[0].leader, expect,
            "unclean allowed: {allowed}"
        );
    }
}

#[test]
fn replicas_spread_across_racks() {
    let now = Instant::now();
    let mut s = ClusterState::new(Snapshot::default(), now, Duration::from_secs(2), 100, 1);
    for (b, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
        s.register(
            b,
            format!("127.0.0.1:{}", 9000 + b),
            Some(rack.to_string()),
            1,
            now,
        );
    }
    s.create_topic("r", 6, 3, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    for p in &s.snap.topics["r"].partitions {
        let mut racks: Vec<String> = p
            .replicas
            .iter()
            .map(|b| s.snap.brokers[b].rack.clone().unwrap())
            .collect();
        racks.sort();
        racks.dedup();
        assert_eq!(racks.len(), 3, "replicas {:?} share a rack", p.replicas);
    }
    let leaders: std::collections::BTreeSet<u32> = s.snap.topics["r"]
        .partitions
        .iter()
        .map(|p| p.leader.unwrap())
        .collect();
    assert_eq!(leaders.len(), 6, "leaders spread over every broker");
}

#[test]
fn partitions_can_be_added_never_removed() {
    let (mut s, _) = state_with(&[1, 2, 3]);
    s.create_topic("g", 2, 2, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    let before = s.snap.topics["g"].partitions.clone();
    let actions = s.create_partitions("g", 5, Vec::new()).unwrap();
    let after = &s.snap.topics["g"].partitions;
    assert_eq!(after.len(), 5);
    assert_eq!(&after[..2], &before[..], "existing partitions untouched");
    assert!(after[2..]
        .iter()
        .all(|p| p.replicas.len() == 2 && p.leader == Some(p.replicas[0])));
    assert!(actions.contains(&Action::UpdateMetadataAll));
    assert_eq!(
        s.create_partitions("g", 5, Vec::new()).unwrap_err().0,
        ErrorCode::InvalidPartitions
    );
    assert_eq!(
        s.create_partitions("g", 3, Vec::new()).unwrap_err().0,
        ErrorCode::InvalidPartitions
    );
    assert_eq!(
        s.create_partitions("nope", 9, Vec::new()).unwrap_err().0,
        ErrorCode::UnknownTopicOrPartition
    );
}

#[test]
fn reassignment_waits_for_the_new_replicas_then_drops_the_old() {
    let (mut s, _) = state_with(&[1, 2, 3]);
    s.create_topic("m", 1, 2, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    assert_eq!(s.snap.topics["m"].partitions[0].replicas, vec![1, 2]);
    s.reassign("m", 0, vec![3, 2]).unwrap();
    let p = &s.snap.topics["m"].partitions[0];
    assert_eq!(
        (p.replicas.clone(), p.target.clone(), p.leader),
        (vec![3, 2, 1], Some(vec![3, 2]), Some(1))
    );
    // Broker 3 catches up and the leader adds it to the ISR: the move completes.
    let e1 = s.snap.brokers[&1].epoch;
    let pe = p.partition_epoch;
    let (_, actions) = s
        .alter_partition(1, e1, "m", 0, 0, pe, vec![1, 2, 3])
        .unwrap();
    let p = &s.snap.topics["m"].partitions[0];
    assert_eq!(
        (
            p.replicas.clone(),
            p.isr.clone(),
            p.leader,
            p.target.clone()
        ),
        (vec![3, 2], vec![3, 2], Some(3), None)
    );
    assert!(actions.contains(&Action::StopReplica {
        broker: 1,
        partitions: vec![("m".into(), 0)]
    }));
    assert_eq!(
        s.reassign("m", 0, vec![3, 3]).unwrap_err().0,
        ErrorCode::InvalidReplicationFactor
    );
}

#[test]
fn a_reassignment_lists_what_it_adds_and_removes_and_a_cancel_goes_back() {
    let (mut s, _) = state_with(&[1, 2, 3, 4]);
    s.create_topic("m", 1, 2, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    let listed = |s: &ClusterState| {
        let md = s.metadata(&["m".to_string()]);
        let p = &md.topics[0].partitions[0];
        (
            p.replicas.clone(),
            p.adding_replicas.clone(),
            p.removing_replicas.clone(),
        )
    };
    assert_eq!(listed(&s), (vec![1, 2], vec![], vec![]));
    // Nothing to cancel yet.
    assert_eq!(
        s.reassign("m", 0, vec![]).unwrap_err().0,
        ErrorCode::NoReassignmentInProgress
    );
    // 1,2 -> 2,3: 3 joins, 1 goes once 3 is in sync.
    s.reassign("m", 0, vec![2, 3]).unwrap();
    assert_eq!(listed(&s), (vec![2, 3, 1], vec![3], vec![1]));
    // Changed before it completes: the replicas it started from still count (4 is
    // added, 3 was never one of them, so it goes).
    s.reassign("m", 0, vec![2, 4]).unwrap();
    assert_eq!(listed(&s), (vec![2, 4, 3, 1], vec![4], vec![3, 1]));
    // Cancelled: back to 1,2 at once (both are in sync), the others stopped.
    let actions = s.reassign("m", 0, vec![]).unwrap();
    assert_eq!(listed(&s), (vec![1, 2], vec![], vec![]));
    for broker in [3, 4] {
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::StopReplica { broker: b, .. } if *b == broker)),
            "broker {broker} stops its copy: {actions:?}"
        );
    }
    assert_eq!(
        s.reassign("m", 0, vec![]).unwrap_err().0,
        ErrorCode::NoReassignmentInProgress
    );
}

#[test]
fn a_new_controller_elects_a_leader_for_a_partition_whose_last_isr_member_is_live() {
    // Simulator seed 97: the only ISR member was fenced (the partition went leaderless),
    // then the controller failed over; the new controller takes every stored broker as
    // live, the broker keeps heartbeating with its old epoch and never registers again.
    let (mut s, now) = state_with(&[1, 2]);
    s.create_topic("t", 1, 2, BTreeMap::new(), "id".into(), Vec::new())
        .unwrap();
    let later = now + Duration::from_secs(3);
    s.heartbeat(1, s.broker_epoch(1).unwrap(), later).unwrap();
    s.tick(later); // broker 2 fenced: ISR [1]
    let much_later = later + Duration::from_secs(3);
    s.tick(much_later); // broker 1 fenced too: leaderless, ISR [1] remembered
    let p = &s.snap.topics["t"].partitions[0];
    assert_eq!((p.leader, p.isr.clone()), (None, vec![1]));

    let mut next = ClusterState::new(s.snap.clone(), much_later, Duration::from_secs(2), 101, 2);
    let epoch1 = next.broker_epoch(1).unwrap();
    next.heartbeat(1, epoch1, much_later).unwrap();
    let actions = next.tick(much_later + Duration::from_millis(100));
    assert_eq!(next.snap.topics["t"].partitions[0].leader, Some(1));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::LeaderAndIsr { broker: 1, .. })));
    assert!(
        next.tick(much_later + Duration::from_millis(200))
            .is_empty(),
        "nothing more to do"
    );
}

#[test]
fn a_second_process_with_a_live_id_is_refused_a_restart_is_admitted() {
    let (mut s, now) = state_with(&[1]);
    let addr = "127.0.0.1:9001";
    let ms = Duration::from_millis;
    // The same process retrying, or a restart that bound the same port: admitted.
    assert!(s.admit_registration(1, addr, 1, now).is_ok());
    assert!(s.admit_registration(1, addr, 2, now).is_ok());
    // Another process elsewhere: not yet known to be a duplicate (the holder may be
    // dead with its session not expired), so retriable.
    let (code, _) = s
        .admit_registration(1, "127.0.0.1:7", 9, now + ms(10))
        .unwrap_err();
    assert_eq!(code, ErrorCode::BrokerNotAvailable);
    assert!(code.is_retriable());
    // The holder heartbeats after that first attempt: it is alive, the newcomer a duplicate.
    s.heartbeat(1, s.broker_epoch(1).unwrap(), now + ms(500))
        .unwrap();
    let (code, msg) = s
        .admit_registration(1, "127.0.0.1:7", 9, now + ms(600))
        .unwrap_err();
    assert_eq!(code, ErrorCode::DuplicateBrokerRegistration);
    assert!(!code.is_retriable());
    assert!(msg.contains(addr), "{msg}");
    assert_eq!(
        s.snap.brokers[&1].incarnation, 1,
        "the holder keeps its registration"
    );
    // A newcomer whose holder has died: admitted once the session expires.
    let (code, _) = s
        .admit_registration(1, "127.0.0.1:8", 10, now + ms(700))
        .unwrap_err();
    assert_eq!(code, ErrorCode::BrokerNotAvailable);
    s.tick(now + ms(3000));
    assert!(!s.is_live(1));
    assert!(s
        .admit_registration(1, "127.0.0.1:8", 10, now + ms(3100))
        .is_ok());
}

#[test]
fn manual_replica_assignments_are_placed_as_given_or_refused_as_kafka_does() {
    let (mut s, _) = state_with(&[1, 2, 3]);
    let none = BTreeMap::new;
    s.create_topic("m", 0, 0, none(), "id".into(), vec![vec![3, 1], vec![2, 3]])
        .unwrap();
    let placed: Vec<(Vec<u32>, Option<u32>)> = s.snap.topics["m"]
        .partitions
        .iter()
        .map(|p| (p.replicas.clone(), p.leader))
        .collect();
    assert_eq!(
        placed,
        vec![(vec![3, 1], Some(3)), (vec![2, 3], Some(2))],
        "the first replica leads"
    );
    let err = |r: Result<Vec<Action>, Rejection>| r.unwrap_err().0;
    let bad = ErrorCode::InvalidReplicaAssignment;
    assert_eq!(
        err(s.create_topic("x", 0, 0, none(), "x".into(), vec![vec![1, 1]])),
        bad
    );
    assert_eq!(
        err(s.create_topic("x", 0, 0, none(), "x".into(), vec![vec![9]])),
        bad
    );
    assert_eq!(
        err(s.create_topic("x", 0, 0, none(), "x".into(), vec![vec![1, 2], vec![3]])),
        bad
    );
    assert_eq!(
        err(s.create_topic("x", 0, 0, none(), "x".into(), vec![vec![]])),
        bad
    );
    assert_eq!(
        err(s.create_topic("x", 2, 1, none(), "x".into(), vec![vec![1]])),
        ErrorCode::InvalidRequest,
        "a count and assignments"
    );
    assert!(
        !s.snap.topics.contains_key("x"),
        "nothing refused was created"
    );
    // New partitions: as many lists as partitions added, of the topic's factor.
    assert_eq!(err(s.create_partitions("m", 4, vec![vec![1, 2]])), bad);
    assert_eq!(err(s.create_partitions("m", 3, vec![vec![1]])), bad);
    s.create_partitions("m", 4, vec![vec![1, 2], vec![2, 1]])
        .unwrap();
    let added: Vec<Vec<u32>> = s.snap.topics["m"].partitions[2..]
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    assert_eq!(added, vec![vec![1, 2], vec![2, 1]]);
}

#[test]
fn acls_are_kept_in_the_snapshot_and_pushed_when_they_change() {
    use sluice_proto::acl::{op, pattern, permission, resource, AclBinding, AclFilter};
    let (mut s, _) = state_with(&[1]);
    let deny = AclBinding {
        resource_type: resource::TOPIC,
        resource_name: "t".into(),
        pattern_type: pattern::LITERAL,
        principal: "User:*".into(),
        host: "*".into(),
        operation: op::ALL,
        permission: permission::DENY,
    };
    let bad = AclBinding {
        principal: "nobody".into(),
        ..deny.clone()
    };
    let mut verdicts = Vec::new();
    let actions = s.create_acls(&[deny.clone(), bad], &mut verdicts).unwrap();
    assert_eq!(actions, vec![Action::UpdateMetadataAll]);
    assert!(verdicts[0].is_ok());
    assert_eq!(
        verdicts[1].as_ref().unwrap_err().0,
        ErrorCode::InvalidRequest
    );
    assert_eq!(s.acls_proto(), vec![deny.to_proto()]);
    // Again: no change, nothing to push.
    let mut verdicts = Vec::new();
    assert!(s
        .create_acls(std::slice::from_ref(&deny), &mut verdicts)
        .unwrap()
        .is_empty());
    // The store's snapshot carries them (a restarted or new controller has them).
    let text = serde_json::to_string(&s.snap).unwrap();
    let back: crate::state::Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back.acls.iter().cloned().collect::<Vec<_>>(),
        vec![deny.clone()]
    );
    // A snapshot written before ACLs existed reads as none.
    let old: crate::state::Snapshot =
        serde_json::from_str(&text.replace(",\"acls\"", ",\"ignored\"")).unwrap();
    assert!(old.acls.is_empty());
    let every = AclFilter {
        resource_type: resource::ANY,
        resource_name: None,
        pattern_type: pattern::ANY,
        principal: None,
        host: None,
        operation: op::ANY,
        permission: permission::ANY,
    };
    let mut removed = Vec::new();
    let actions = s
        .delete_acls(&[every.clone(), every], &mut removed)
        .unwrap();
    assert_eq!(actions, vec![Action::UpdateMetadataAll]);
    assert_eq!(removed[0].as_ref().unwrap(), &vec![deny]);
    assert!(removed[1].as_ref().unwrap().is_empty());
    assert!(s.acls_proto().is_empty());
}

#[test]
fn broker_and_group_configs_are_validated_kept_and_pushed() {
    use sluice_proto::dynamic_config::{RESOURCE_BROKER, RESOURCE_GROUP};
    let (mut s, _) = state_with(&[1]);
    let set = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let relogin = "sasl.kerberos.min.time.before.relogin";
    let actions = s
        .alter_resource_configs(RESOURCE_BROKER, "1", set(relogin, "58000"), &[])
        .unwrap();
    assert_eq!(actions, vec![Action::UpdateMetadataAll]);
    // The same again changes nothing and pushes nothing.
    assert!(s
        .alter_resource_configs(RESOURCE_BROKER, "1", set(relogin, "58000"), &[])
        .unwrap()
        .is_empty());
    // A config Sluice cannot honour is refused, and nothing of that request is kept.
    let mut two = set("background.threads", "9");
    two.insert(relogin.into(), "1".into());
    let (code, message) = s
        .alter_resource_configs(RESOURCE_BROKER, "1", two, &[])
        .unwrap_err();
    assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
    let group = "consumer.session.timeout.ms";
    assert_eq!(
        s.alter_resource_configs(RESOURCE_GROUP, "g", set(group, "1000"), &[])
            .unwrap_err()
            .0,
        ErrorCode::InvalidConfig
    );
    s.alter_resource_configs(RESOURCE_GROUP, "g", set(group, "50000"), &[])
        .unwrap();
    let pushed = s.resource_configs_proto();
    assert_eq!(pushed.len(), 2);
    let of = |t: i32| pushed.iter().find(|c| c.resource_type == t).unwrap();
    assert_eq!(of(RESOURCE_BROKER).resource_name, "1");
    assert_eq!(of(RESOURCE_BROKER).configs[relogin], "58000");
    assert_eq!(
        (
            of(RESOURCE_GROUP).resource_name.as_str(),
            of(RESOURCE_GROUP).configs[group].as_str()
        ),
        ("g", "50000")
    );
    // The store's snapshot carries them (a new controller has them).
    let text = serde_json::to_string(&s.snap).unwrap();
    let back: crate::state::Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back.resource_configs, s.snap.resource_configs);
    // Deleting the last config of a resource removes it.
    s.alter_resource_configs(RESOURCE_GROUP, "g", BTreeMap::new(), &[group.to_string()])
        .unwrap();
    assert_eq!(s.resource_configs_proto().len(), 1);
}
