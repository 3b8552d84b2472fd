//! Tests of one group's heartbeat state ([`super`]): KIP-848 reconciliation cases and a
//! seeded random-membership run (exclusive ownership after every step, convergence).

use super::*;

fn topics(ts: &[&str]) -> Option<BTreeSet<String>> {
    Some(ts.iter().map(|t| t.to_string()).collect())
}

fn group(partitions: u32) -> Group {
    let mut g = Group::new(GroupConfig {
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        ..GroupConfig::default()
    });
    g.set_partitions([("t".to_string(), partitions)].into());
    g
}

fn join(g: &mut Group, id: &str, now: Instant) -> HeartbeatReply {
    g.heartbeat(
        Heartbeat {
            member_id: id.into(),
            member_epoch: JOIN_EPOCH,
            instance_id: None,
            topics: topics(&["t"]),
            owned: Some(BTreeSet::new()),
            ..Default::default()
        },
        now,
        || unreachable!("ids are given"),
    )
    .unwrap()
}

/// A member's regular heartbeat reporting it owns exactly what it was last given.
fn beat(g: &mut Group, last: &HeartbeatReply, now: Instant) -> Result<HeartbeatReply, GroupError> {
    g.heartbeat(
        Heartbeat {
            member_id: last.member_id.clone(),
            member_epoch: last.member_epoch,
            instance_id: None,
            topics: None,
            owned: Some(last.assignment.clone()),
            ..Default::default()
        },
        now,
        || unreachable!(),
    )
}

/// No partition is owned by two members (as the coordinator counts ownership, which
/// includes what a member has not yet confirmed giving back).
fn assert_exclusive(g: &Group) {
    let mut seen: BTreeMap<Tp, MemberId> = BTreeMap::new();
    for (m, (_, owned)) in g.members() {
        for tp in owned {
            if let Some(other) = seen.insert(tp.clone(), m.clone()) {
                panic!("{tp:?} owned by {other} and {m}");
            }
        }
    }
}

#[test]
fn members_joining_get_balanced_shares_at_the_group_epoch() {
    let now = Instant::now();
    let mut g = group(6);
    let mut a = join(&mut g, "a", now);
    a = beat(&mut g, &a, now).unwrap();
    assert_eq!(a.assignment.len(), 6);
    let b = join(&mut g, "b", now);
    assert!(b.assignment.is_empty(), "b gets nothing a still owns");
    // a gives up three first; its epoch stays until it has.
    let a2 = beat(&mut g, &a, now).unwrap();
    assert_eq!((a2.assignment.len(), a2.member_epoch), (3, a.member_epoch));
    assert_exclusive(&g);
    let b2 = beat(&mut g, &b, now).unwrap();
    assert!(b2.assignment.is_empty(), "a has not confirmed yet");
    let a3 = beat(&mut g, &a2, now).unwrap();
    assert_eq!(a3.member_epoch, g.epoch);
    let b3 = beat(&mut g, &b2, now).unwrap();
    assert_eq!((b3.assignment.len(), b3.member_epoch), (3, g.epoch));
    assert!(a3.assignment.is_disjoint(&b3.assignment));
    assert_exclusive(&g);
}

#[test]
fn a_stale_epoch_is_fenced_and_an_unknown_member_refused() {
    let now = Instant::now();
    let mut g = group(4);
    let a = join(&mut g, "a", now);
    let a = beat(&mut g, &a, now).unwrap();
    let _b = join(&mut g, "b", now);
    let a2 = beat(&mut g, &a, now).unwrap();
    let a3 = beat(&mut g, &a2, now).unwrap();
    assert!(a3.member_epoch > a.member_epoch);
    // One epoch behind, owning only what it was given: the reply that moved it on was
    // lost; it is answered at its current epoch.
    let lost_reply = HeartbeatReply {
        member_epoch: a3.member_epoch - 1,
        ..a3.clone()
    };
    assert_eq!(
        beat(&mut g, &lost_reply, now).map(|r| r.member_epoch),
        Ok(a3.member_epoch)
    );
    // One behind but claiming what it no longer has: a zombie.
    let zombie = HeartbeatReply {
        member_epoch: a3.member_epoch - 1,
        assignment: a.assignment.clone(),
        ..a3.clone()
    };
    assert!(!a.assignment.is_subset(&a3.assignment));
    assert_eq!(
        beat(&mut g, &zombie, now),
        Err(GroupError::FencedMemberEpoch)
    );
    let stranger = HeartbeatReply {
        member_id: "nobody".into(),
        ..a3
    };
    assert_eq!(
        beat(&mut g, &stranger, now),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_silent_member_is_fenced_after_the_session_timeout_and_its_partitions_move() {
    let t0 = Instant::now();
    let mut g = group(4);
    let a = join(&mut g, "a", t0);
    let b = join(&mut g, "b", t0);
    let a = beat(&mut g, &a, t0).unwrap();
    let b = beat(&mut g, &b, t0).unwrap();
    let a = beat(&mut g, &a, t0).unwrap();
    let b = beat(&mut g, &b, t0).unwrap();
    assert_eq!((a.assignment.len(), b.assignment.len()), (2, 2));
    let later = t0 + Duration::from_secs(8);
    let a = beat(&mut g, &a, later).unwrap();
    assert_eq!(g.tick(t0 + Duration::from_secs(11)), vec!["b".to_string()]);
    let a = beat(&mut g, &a, t0 + Duration::from_secs(11)).unwrap();
    assert_eq!(a.assignment.len(), 4);
    assert_eq!(beat(&mut g, &b, later), Err(GroupError::UnknownMemberId));
}

#[test]
fn a_static_member_that_comes_back_gets_its_partitions_again() {
    let now = Instant::now();
    let mut g = group(4);
    let hb = |id: &str, epoch: i32, owned: BTreeSet<Tp>| Heartbeat {
        member_id: id.into(),
        member_epoch: epoch,
        instance_id: Some(format!("inst-{id}")),
        topics: topics(&["t"]),
        owned: Some(owned),
        ..Default::default()
    };
    let mut replies = BTreeMap::new();
    for id in ["a", "b"] {
        let r = g
            .heartbeat(hb(id, JOIN_EPOCH, BTreeSet::new()), now, || unreachable!())
            .unwrap();
        replies.insert(id, r);
    }
    for _ in 0..2 {
        for id in ["a", "b"] {
            let r = beat(&mut g, &replies[id], now).unwrap();
            replies.insert(id, r);
        }
    }
    let b_had = replies["b"].assignment.clone();
    assert_eq!(b_had.len(), 2);
    let epoch = g.epoch;
    g.heartbeat(
        hb("b", STATIC_LEAVE_EPOCH, BTreeSet::new()),
        now,
        || unreachable!(),
    )
    .unwrap();
    assert_eq!(g.epoch, epoch, "a static leave does not rebalance");
    let mut back = hb("", JOIN_EPOCH, BTreeSet::new());
    back.instance_id = Some("inst-b".into());
    let r = g.heartbeat(back, now, || "b2".to_string()).unwrap();
    assert_eq!(r.member_id, "b2");
    assert_eq!(r.assignment, b_had, "same partitions, no rebalance");
    assert_exclusive(&g);
}

/// Random joins, leaves, heartbeats (members confirm what they give back at random
/// times) and silences; after every step no partition has two owners, and once everyone
/// heartbeats a few times the group settles on its target. `SLUICE_GROUP_SIM_SEEDS=N`.
#[test]
fn random_membership_never_gives_a_partition_to_two_members() {
    let seeds: u64 = std::env::var("SLUICE_GROUP_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for seed in 1..=seeds {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n.max(1)
        };
        let t0 = Instant::now();
        let mut g = group(1 + next(12) as u32);
        let mut last: BTreeMap<String, HeartbeatReply> = BTreeMap::new();
        let mut ids = 0;
        for step in 0..200 {
            let now = t0 + Duration::from_millis(step * 10);
            match next(10) {
                0 | 1 if last.len() < 6 => {
                    ids += 1;
                    let id = format!("m{ids}");
                    last.insert(id.clone(), join(&mut g, &id, now));
                }
                2 if !last.is_empty() => {
                    let id = last
                        .keys()
                        .nth(next(last.len() as u64) as usize)
                        .unwrap()
                        .clone();
                    let r = last.remove(&id).unwrap();
                    g.heartbeat(
                        Heartbeat {
                            member_id: id,
                            member_epoch: LEAVE_EPOCH,
                            instance_id: None,
                            topics: None,
                            owned: None,
                            ..Default::default()
                        },
                        now,
                        || unreachable!(),
                    )
                    .unwrap_or_else(|e| panic!("seed {seed}: leave {e:?} after {r:?}"));
                }
                _ if !last.is_empty() => {
                    let id = last
                        .keys()
                        .nth(next(last.len() as u64) as usize)
                        .unwrap()
                        .clone();
                    let r = beat(&mut g, &last[&id], now)
                        .unwrap_or_else(|e| panic!("seed {seed} step {step}: {id}: {e:?}"));
                    last.insert(id, r);
                }
                _ => {}
            }
            let mut seen = BTreeSet::new();
            for (m, (_, owned)) in g.members() {
                for tp in owned {
                    assert!(
                        seen.insert(tp.clone()),
                        "seed {seed} step {step}: {tp:?} twice ({m})"
                    );
                }
            }
        }
        // Everyone heartbeats until nothing changes: the target is reached.
        let now = t0 + Duration::from_secs(3);
        for _ in 0..4 {
            for id in last.keys().cloned().collect::<Vec<_>>() {
                let r = beat(&mut g, &last[&id], now).unwrap();
                last.insert(id, r);
            }
        }
        if !last.is_empty() {
            let total: usize = last.values().map(|r| r.assignment.len()).sum();
            let n = g.partitions.get("t").copied().unwrap_or(0) as usize;
            assert_eq!(total, n, "seed {seed}: every partition owned once settled");
            let counts: Vec<usize> = last.values().map(|r| r.assignment.len()).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1, "seed {seed}: {counts:?}");
            assert!(
                last.values().all(|r| r.member_epoch == g.epoch),
                "seed {seed}: epochs"
            );
        }
    }
}

#[test]
fn a_group_is_stable_only_once_every_member_owns_its_target() {
    let now = Instant::now();
    let mut g = group(6);
    let a = join(&mut g, "a", now);
    let a = beat(&mut g, &a, now).unwrap();
    assert_eq!(a.assignment.len(), 6);
    assert_eq!(g.state(), "stable");
    let b = join(&mut g, "b", now);
    // b reaches the new epoch at once but owns nothing: a still holds its share.
    let b = beat(&mut g, &b, now).unwrap();
    assert!(b.assignment.is_empty());
    let a = beat(&mut g, &a, now).unwrap(); // told to give three back
    let a = beat(&mut g, &a, now).unwrap(); // has given them back: at the new epoch
    assert_eq!(a.member_epoch, b.member_epoch, "both at the target's epoch");
    assert_eq!(g.state(), "reconciling", "b does not own its target yet");
    let b = beat(&mut g, &b, now).unwrap();
    assert_eq!(b.assignment.len(), 3);
    assert_eq!(g.state(), "stable");
}

#[test]
fn a_partition_just_assigned_is_kept_until_the_member_reports_it() {
    let now = Instant::now();
    let mut g = group(4);
    let a = join(&mut g, "a", now);
    let a = beat(&mut g, &a, now).unwrap();
    assert_eq!(a.assignment.len(), 4);
    // A heartbeat sent before the member took what it was given reports less: that
    // frees nothing (only partitions being revoked are freed by leaving them out).
    let early = Heartbeat {
        member_id: "a".into(),
        member_epoch: a.member_epoch,
        owned: Some(a.assignment.iter().take(1).cloned().collect()),
        ..Default::default()
    };
    g.heartbeat(early, now, || unreachable!()).unwrap();
    assert_eq!(g.members()["a"].1, a.assignment, "still a's");
    let b = join(&mut g, "b", now);
    let b = beat(&mut g, &b, now).unwrap();
    assert!(b.assignment.is_empty(), "nothing is free for b yet: {b:?}");
    assert_exclusive(&g);
}

#[test]
fn a_join_past_max_members_is_refused_and_a_rejoin_is_not() {
    let now = Instant::now();
    let mut g = group(8);
    g.config.max_members = 3;
    for id in ["a", "b", "c"] {
        join(&mut g, id, now);
    }
    let fourth = g.heartbeat(
        Heartbeat {
            member_id: "d".into(),
            member_epoch: JOIN_EPOCH,
            topics: topics(&["t"]),
            ..Default::default()
        },
        now,
        || "d".into(),
    );
    assert_eq!(fourth, Err(GroupError::GroupMaxSizeReached(3)));
    assert_eq!(g.members().len(), 3);
    // A member rejoining under its id takes no new place.
    join(&mut g, "b", now);
    assert_eq!(g.members().len(), 3);
    // A place freed is taken.
    g.heartbeat(
        Heartbeat {
            member_id: "a".into(),
            member_epoch: LEAVE_EPOCH,
            ..Default::default()
        },
        now,
        || unreachable!(),
    )
    .unwrap();
    join(&mut g, "d", now);
    assert_eq!(g.members().len(), 3);
}

#[test]
fn regex_subscriptions_are_bounded() {
    use sluice_proto::limits::{GROUP_REGEX_BYTES_MAX, GROUP_REGEX_CACHE_MAX};
    let now = Instant::now();
    let mut g = group(4);
    let with = |regex: String| Heartbeat {
        member_id: "m".into(),
        member_epoch: JOIN_EPOCH,
        topics: topics(&[]),
        regex: Some(regex),
        ..Default::default()
    };
    // One member rejoining with a new pattern each time: the cache keeps what members
    // use and at most GROUP_REGEX_CACHE_MAX more.
    for i in 0..GROUP_REGEX_CACHE_MAX * 3 {
        g.heartbeat(with(format!("t|x{i}")), now, || "m".into())
            .unwrap();
        assert!(
            g.patterns.len() <= GROUP_REGEX_CACHE_MAX,
            "{}",
            g.patterns.len()
        );
    }
    assert!(g.members().contains_key("m"));
    let long = "t|".to_string() + &"x".repeat(GROUP_REGEX_BYTES_MAX);
    match g.heartbeat(with(long), now, || "m".into()) {
        Err(GroupError::InvalidRequest(m)) => assert!(m.contains("at most"), "{m}"),
        other => panic!("a pattern past GROUP_REGEX_BYTES_MAX: {other:?}"),
    }
    // A pattern whose compiled program is huge is refused, not built.
    match g.heartbeat(with("(t{1000}){1000}".into()), now, || "m".into()) {
        Err(GroupError::InvalidRequest(_)) => {}
        other => panic!("a pattern compiling past the size limit: {other:?}"),
    }
}

#[test]
fn a_pattern_new_to_the_group_is_resolved_after_the_heartbeat_that_brings_it() {
    // Kafka resolves a subscription pattern the group does not know yet asynchronously:
    // the heartbeat that brings it is answered with the named topics' partitions only,
    // a later one with the matches too (librdkafka's 0045 `Resubscribe with Regex`
    // expects exactly these two assignments).
    let now = Instant::now();
    let mut g = group(2);
    g.set_partitions(
        [
            ("t".to_string(), 2),
            ("r1".to_string(), 4),
            ("r2".to_string(), 4),
        ]
        .into(),
    );
    let sub = |id: &str, named: &[&str]| Heartbeat {
        member_id: id.into(),
        member_epoch: JOIN_EPOCH,
        topics: topics(named),
        regex: Some("r.*".into()),
        owned: Some(BTreeSet::new()),
        ..Default::default()
    };
    let count = |r: &HeartbeatReply, t: &str| r.assignment.iter().filter(|(x, _)| x == t).count();
    let m = g
        .heartbeat(sub("m", &["t"]), now, || unreachable!())
        .unwrap();
    assert_eq!((count(&m, "t"), m.assignment.len()), (2, 2), "{m:?}");
    let m = beat(&mut g, &m, now).unwrap();
    assert_eq!(
        (count(&m, "r1"), count(&m, "r2"), m.assignment.len()),
        (4, 4, 10)
    );
    // A pattern another member already uses is resolved: the newcomer's share is counted
    // at once.
    g.heartbeat(sub("n", &[]), now, || unreachable!()).unwrap();
    let targets: BTreeMap<MemberId, usize> = g
        .describe()
        .into_iter()
        .map(|v| (v.member_id, v.target.len()))
        .collect();
    assert!(targets["n"] > 0, "{targets:?}");
    // Once no member uses it, it is new again.
    for id in ["m", "n"] {
        g.heartbeat(
            Heartbeat {
                member_id: id.into(),
                member_epoch: LEAVE_EPOCH,
                ..Default::default()
            },
            now,
            || unreachable!(),
        )
        .unwrap();
    }
    let m = g.heartbeat(sub("m", &[]), now, || unreachable!()).unwrap();
    assert!(m.assignment.is_empty(), "{m:?}");
    let m = beat(&mut g, &m, now).unwrap();
    assert_eq!(m.assignment.len(), 8);
}
