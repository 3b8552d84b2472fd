//! Tests of one offsets partition's coordinator: failover by replaying its records,
//! commit validation, expiry, metadata changes, regex subscriptions, delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;
use crate::group::state::{JOIN_EPOCH, LEAVE_EPOCH};

fn topics(names: &[(&str, u32)]) -> BTreeMap<String, u32> {
    names.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

/// Joins `id`; returns its epoch after joining and the records written.
fn join(
    c: &mut Coordinator,
    group: &str,
    id: &str,
    subs: &[&str],
    now: Instant,
) -> (i32, Vec<Write>) {
    let (r, w) = c.heartbeat(
        group,
        Heartbeat {
            member_id: id.into(),
            member_epoch: JOIN_EPOCH,
            topics: Some(subs.iter().map(|s| s.to_string()).collect()),
            owned: Some(BTreeSet::new()),
            ..Default::default()
        },
        now,
        0,
        || unreachable!(),
    );
    (r.expect("joins").member_epoch, w)
}

/// Heartbeats `id` until its epoch stops moving; returns the last reply.
fn settle(c: &mut Coordinator, group: &str, id: &str, epoch: i32, now: Instant) -> HeartbeatReply {
    settle_logged(c, group, id, epoch, now, &mut Vec::new())
}

/// [`settle`], keeping what it writes in `log`.
fn settle_logged(
    c: &mut Coordinator,
    group: &str,
    id: &str,
    epoch: i32,
    now: Instant,
    log: &mut Vec<Write>,
) -> HeartbeatReply {
    let mut owned = BTreeSet::new();
    let mut epoch = epoch;
    for _ in 0..10 {
        let (r, w) = c.heartbeat(
            group,
            Heartbeat {
                member_id: id.into(),
                member_epoch: epoch,
                owned: Some(owned.clone()),
                ..Default::default()
            },
            now,
            0,
            || unreachable!(),
        );
        log.extend(w);
        let r = r.expect("heartbeat");
        if r.member_epoch == epoch && r.assignment == owned {
            return r;
        }
        epoch = r.member_epoch;
        owned = r.assignment.clone();
    }
    panic!("{id} did not settle");
}

fn replay_all(writes: &[Write], partitions: BTreeMap<String, u32>, now: Instant) -> Coordinator {
    let mut c = Coordinator::new(CoordinatorConfig::default());
    c.set_partitions(partitions, 0);
    for w in writes {
        c.replay(&w.key, w.value.as_deref(), now).expect("replays");
    }
    c
}

#[test]
fn a_new_coordinator_carries_on_from_the_records() {
    let now = Instant::now();
    let parts = topics(&[("t", 6)]);
    let mut a = Coordinator::new(CoordinatorConfig::default());
    let mut log = a.set_partitions(parts.clone(), 0);
    let (e1, w) = join(&mut a, "g", "m1", &["t"], now);
    log.extend(w);
    let (e2, w) = join(&mut a, "g", "m2", &["t"], now);
    log.extend(w);
    let mut r1 = settle_logged(&mut a, "g", "m1", e1, now, &mut log);
    let mut r2 = settle_logged(&mut a, "g", "m2", e2, now, &mut log);
    // Until both stand still: one's revocation lets the other take more.
    for _ in 0..5 {
        r1 = settle_logged(&mut a, "g", "m1", r1.member_epoch, now, &mut log);
        r2 = settle_logged(&mut a, "g", "m2", r2.member_epoch, now, &mut log);
    }
    assert_eq!(r1.assignment.len() + r2.assignment.len(), 6);
    log.extend(
        a.commit(
            "g",
            "m1",
            r1.member_epoch,
            vec![(("t".into(), 0), 42, "meta".into())],
            5,
        )
        .expect("commits"),
    );
    // Everything the heartbeats changed was written along the way: replay it all.
    let more = a.tick(now, 5).writes;
    log.extend(more);
    let mut b = replay_all(&log, parts, now);
    // The members go on at their epochs with the same partitions: no rebalance.
    for (id, r) in [("m1", &r1), ("m2", &r2)] {
        let (got, writes) = b.heartbeat(
            "g",
            Heartbeat {
                member_id: id.into(),
                member_epoch: r.member_epoch,
                owned: Some(r.assignment.clone()),
                ..Default::default()
            },
            now,
            6,
            || unreachable!(),
        );
        let got = got.expect("known member");
        assert_eq!(got.assignment, r.assignment);
        assert_eq!(got.member_epoch, r.member_epoch);
        assert!(writes.is_empty(), "nothing changed, nothing to write");
    }
    let committed = b.fetch("g", &[("t".into(), 0), ("t".into(), 1)]);
    assert_eq!(committed[0].1.as_ref().map(|c| c.offset), Some(42));
    assert_eq!(
        committed[0].1.as_ref().map(|c| c.metadata.as_str()),
        Some("meta")
    );
    assert_eq!(committed[1].1, None);
}

#[test]
fn commits_check_member_and_epoch() {
    let now = Instant::now();
    let mut c = Coordinator::new(CoordinatorConfig::default());
    c.set_partitions(topics(&[("t", 2)]), 0);
    let (e, _) = join(&mut c, "g", "m1", &["t"], now);
    let r = settle(&mut c, "g", "m1", e, now);
    let tp = ("t".to_string(), 0);
    // KIP-1251: an epoch older than the one before is stale; a newer one is fenced.
    assert_eq!(
        c.commit(
            "g",
            "m1",
            r.member_epoch - 2,
            vec![(tp.clone(), 1, String::new())],
            0
        ),
        Err(GroupError::StaleMemberEpoch)
    );
    assert_eq!(
        c.commit(
            "g",
            "m1",
            r.member_epoch + 1,
            vec![(tp.clone(), 1, String::new())],
            0
        ),
        Err(GroupError::FencedMemberEpoch)
    );
    assert_eq!(
        c.commit(
            "g",
            "ghost",
            r.member_epoch,
            vec![(tp.clone(), 1, String::new())],
            0
        ),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        c.commit("g", "", -1, vec![(tp.clone(), 1, String::new())], 0),
        Err(GroupError::NonEmptyGroup),
        "an admin commit needs an empty group"
    );
    assert!(matches!(
        c.commit(
            "g",
            "m1",
            r.member_epoch,
            vec![(tp.clone(), 1, "x".repeat(MAX_METADATA + 1))],
            0
        ),
        Err(GroupError::InvalidRequest(_))
    ));
    assert!(matches!(
        c.commit(
            "g",
            "m1",
            r.member_epoch,
            vec![(tp.clone(), -5, String::new())],
            0
        ),
        Err(GroupError::InvalidRequest(_))
    ));
    assert!(c
        .commit(
            "g",
            "m1",
            r.member_epoch,
            vec![(tp.clone(), 7, String::new())],
            0
        )
        .is_ok());
    assert_eq!(c.delete("g"), Err(GroupError::NonEmptyGroup));
    // Once it leaves, an admin may commit (reset-offsets) and delete.
    let (left, _) = c.heartbeat(
        "g",
        Heartbeat {
            member_id: "m1".into(),
            member_epoch: LEAVE_EPOCH,
            ..Default::default()
        },
        now,
        0,
        || unreachable!(),
    );
    left.expect("leaves");
    c.commit("g", "", -1, vec![(tp.clone(), 0, String::new())], 0)
        .expect("admin commit on an empty group");
    // A consumer that does not use the group (librdkafka's KIP-848 consumer with assign())
    // names its own member id with epoch -1: accepted on an empty group, as in Kafka.
    c.commit(
        "g",
        "its-own-uuid",
        -1,
        vec![(tp.clone(), 0, String::new())],
        0,
    )
    .expect("epoch -1 with a member id on an empty group");
    c.commit(
        "new",
        "its-own-uuid",
        -1,
        vec![(tp.clone(), 3, String::new())],
        0,
    )
    .expect("epoch -1 with a member id on a group not seen before");
    assert_eq!(
        c.fetch("g", std::slice::from_ref(&tp))[0]
            .1
            .as_ref()
            .unwrap()
            .offset,
        0
    );
    let writes = c.delete("g").expect("deletes");
    assert!(writes.iter().all(|w| w.value.is_none()), "tombstones only");
    assert!(c.describe("g").is_none());
    assert_eq!(c.delete("g"), Err(GroupError::GroupIdNotFound));
}

#[test]
fn offsets_of_an_empty_group_expire_after_the_retention() {
    let now = Instant::now();
    let config = CoordinatorConfig {
        offsets_retention: Duration::from_secs(60),
        ..Default::default()
    };
    let mut c = Coordinator::new(config);
    c.set_partitions(topics(&[("t", 1)]), 0);
    let mut log = c
        .commit(
            "g",
            "",
            -1,
            vec![(("t".into(), 0), 9, String::new())],
            1_000,
        )
        .unwrap();
    let w = c.tick(now, 1_000 + 59_000).writes;
    assert!(w.is_empty(), "not yet");
    assert!(c.describe("g").is_some());
    let w = c.tick(now, 1_000 + 60_000).writes;
    assert!(!w.is_empty() && w.iter().all(|w| w.value.is_none()));
    assert!(c.describe("g").is_none());
    log.extend(w);
    // A coordinator replaying the log does not bring it back.
    let b = replay_all(&log, topics(&[("t", 1)]), now);
    assert!(b.describe("g").is_none());
    assert!(b.fetch("g", &[]).is_empty());
}

#[test]
fn a_member_in_a_group_keeps_its_offsets_past_the_retention() {
    let now = Instant::now();
    let mut config = CoordinatorConfig {
        offsets_retention: Duration::from_secs(60),
        ..Default::default()
    };
    config.group.session_timeout = Duration::from_secs(3600);
    let mut c = Coordinator::new(config);
    c.set_partitions(topics(&[("t", 1)]), 0);
    let (e, _) = join(&mut c, "g", "m1", &["t"], now);
    let r = settle(&mut c, "g", "m1", e, now);
    c.commit(
        "g",
        "m1",
        r.member_epoch,
        vec![(("t".into(), 0), 3, String::new())],
        0,
    )
    .unwrap();
    let w = c.tick(now, 10 * 60_000).writes;
    assert!(w.is_empty());
    assert_eq!(c.fetch("g", &[]).len(), 1);
}

#[test]
fn partitions_added_to_a_subscribed_topic_bump_the_epoch_and_get_assigned() {
    let now = Instant::now();
    let mut c = Coordinator::new(CoordinatorConfig::default());
    c.set_partitions(topics(&[("t", 2), ("other", 1)]), 0);
    let (e, _) = join(&mut c, "g", "m1", &["t"], now);
    let r = settle(&mut c, "g", "m1", e, now);
    assert_eq!(r.assignment.len(), 2);
    let before = c.describe("g").unwrap().group_epoch;
    // A change to a topic nobody subscribes to moves nothing.
    c.set_partitions(topics(&[("t", 2), ("other", 3)]), 0);
    assert_eq!(c.describe("g").unwrap().group_epoch, before);
    let w = c.set_partitions(topics(&[("t", 4), ("other", 3)]), 0);
    assert!(!w.is_empty(), "the new epoch is written");
    assert!(c.describe("g").unwrap().group_epoch > before);
    let r = settle(&mut c, "g", "m1", r.member_epoch, now);
    assert_eq!(r.assignment.len(), 4);
}

#[test]
fn a_regex_subscription_follows_new_topics() {
    let now = Instant::now();
    let mut c = Coordinator::new(CoordinatorConfig::default());
    c.set_partitions(
        topics(&[("orders.eu", 1), ("payments", 1), ("__consumer_offsets", 3)]),
        0,
    );
    let (r, _) = c.heartbeat(
        "g",
        Heartbeat {
            member_id: "m1".into(),
            member_epoch: JOIN_EPOCH,
            topics: Some(BTreeSet::new()),
            regex: Some("orders\\..*".into()),
            owned: Some(BTreeSet::new()),
            ..Default::default()
        },
        now,
        0,
        || unreachable!(),
    );
    let r = settle(&mut c, "g", "m1", r.unwrap().member_epoch, now);
    assert_eq!(r.assignment, [("orders.eu".to_string(), 0)].into());
    c.set_partitions(
        topics(&[
            ("orders.eu", 1),
            ("orders.us", 2),
            ("payments", 1),
            ("__consumer_offsets", 3),
        ]),
        0,
    );
    let r = settle(&mut c, "g", "m1", r.member_epoch, now);
    let topics: BTreeSet<&str> = r.assignment.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["orders.eu", "orders.us"].into());
    assert_eq!(r.assignment.len(), 3);
    // Internal topics match like any other, as Kafka resolves a KIP-848 regex
    // (franz-go's Test848RegexBrokerResolves subscribes to `__consumer_offsets` so).
    let (r2, _) = c.heartbeat(
        "internal",
        Heartbeat {
            member_id: "i1".into(),
            member_epoch: JOIN_EPOCH,
            topics: Some(BTreeSet::new()),
            regex: Some("__consumer.*".into()),
            owned: Some(BTreeSet::new()),
            ..Default::default()
        },
        now,
        0,
        || unreachable!(),
    );
    let r2 = settle(&mut c, "internal", "i1", r2.unwrap().member_epoch, now);
    assert_eq!(r2.assignment.len(), 3, "{:?}", r2.assignment);
    // A pattern that does not compile is refused at join.
    let (bad, _) = c.heartbeat(
        "g",
        Heartbeat {
            member_epoch: JOIN_EPOCH,
            member_id: "m2".into(),
            topics: Some(BTreeSet::new()),
            regex: Some("orders(".into()),
            ..Default::default()
        },
        now,
        0,
        || unreachable!(),
    );
    assert!(matches!(bad, Err(GroupError::InvalidRequest(_))));
}

#[test]
fn a_silent_member_is_fenced_at_its_own_session_timeout() {
    let now = Instant::now();
    let mut c = Coordinator::new(CoordinatorConfig::default());
    c.set_partitions(topics(&[("t", 4)]), 0);
    let (r, _) = c.heartbeat(
        "g",
        Heartbeat {
            member_id: "quick".into(),
            member_epoch: JOIN_EPOCH,
            topics: Some(["t".to_string()].into()),
            owned: Some(BTreeSet::new()),
            session_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        },
        now,
        0,
        || unreachable!(),
    );
    r.unwrap();
    join(&mut c, "g", "slow", &["t"], now);
    let fenced = c.tick(now + Duration::from_millis(900), 0).fenced;
    assert!(fenced.is_empty());
    let Tick {
        writes: w, fenced, ..
    } = c.tick(now + Duration::from_millis(1100), 0);
    assert_eq!(fenced, vec![("g".to_string(), "quick".to_string())]);
    assert!(!w.is_empty(), "the membership change is written");
    assert_eq!(c.describe("g").unwrap().members.len(), 1);
}

#[test]
fn bad_records_are_refused_not_panicked_on() {
    let mut c = Coordinator::new(CoordinatorConfig::default());
    let now = Instant::now();
    assert!(c.replay(b"not json", Some(b"{}"), now).is_err());
    assert!(c
        .replay(
            br#"{"type":"offset","group":"g","topic":"t","partition":0}"#,
            Some(b"[1"),
            now
        )
        .is_err());
    assert!(c.describe("g").is_none() || c.fetch("g", &[]).is_empty());
}

/// Everything `describe` shows, for comparing a coordinator with its replacement.
fn view(c: &Coordinator, group: &str) -> Option<String> {
    c.describe(group).map(|d| {
        format!(
            "{} {} {} {:?} {:?}",
            d.state, d.group_epoch, d.assignment_epoch, d.members, d.offsets
        )
    })
}

/// Random joins, leaves, heartbeats (revocations confirmed late, replies lost, at random), commits,
/// silences that fence, partitions added, and coordinator failovers (a new coordinator
/// replays every record written so far). After every step: no partition has two owners,
/// committed offsets are the last acknowledged ones, and a failover changes nothing the
/// group shows. At the end everyone settles on a balanced target.
/// `SLUICE_GROUP_SIM_SEEDS=N` runs N seeds; a failure prints `SLUICE_GROUP_SIM_SEED=S`,
/// which replays that seed alone.
#[test]
fn random_membership_with_coordinator_failovers() {
    crate::group::for_each_seed(100, simulate);
}

/// A fenced member gives everything up and rejoins under its id, as the client does;
/// its old membership is replaced.
fn rejoin(
    c: &mut Coordinator,
    id: &str,
    now: Instant,
    ms: i64,
    log: &mut Vec<Write>,
) -> HeartbeatReply {
    let (r, w) = c.heartbeat(
        "g",
        Heartbeat {
            member_id: id.to_string(),
            member_epoch: JOIN_EPOCH,
            topics: Some(["t".to_string()].into()),
            owned: Some(BTreeSet::new()),
            ..Default::default()
        },
        now,
        ms,
        || unreachable!(),
    );
    log.extend(w);
    r.expect("rejoin")
}

fn simulate(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let t0 = Instant::now();
    let mut partitions = 1 + next(12) as u32;
    let mut c = Coordinator::new(CoordinatorConfig::default());
    let mut log: Vec<Write> = c.set_partitions(topics(&[("t", partitions)]), 0);
    // Member id → (last reply, what it reports owning, when it last heartbeated).
    let mut members: BTreeMap<String, (HeartbeatReply, BTreeSet<Tp>)> = BTreeMap::new();
    let mut committed: BTreeMap<Tp, i64> = BTreeMap::new();
    let mut ids = 0;
    for step in 0..300u64 {
        let now = t0 + Duration::from_millis(step * 100);
        let ms = step as i64 * 100;
        let pick = |members: &BTreeMap<String, _>, k: u64| -> Option<String> {
            members
                .keys()
                .nth(k as usize % members.len().max(1))
                .cloned()
        };
        match next(14) {
            0 | 1 if members.len() < 6 => {
                ids += 1;
                let id = format!("m{ids}");
                let (r, w) = c.heartbeat(
                    "g",
                    Heartbeat {
                        member_id: id.clone(),
                        member_epoch: JOIN_EPOCH,
                        topics: Some(["t".to_string()].into()),
                        owned: Some(BTreeSet::new()),
                        session_timeout: Some(Duration::from_millis(1000 + next(4000))),
                        ..Default::default()
                    },
                    now,
                    ms,
                    || unreachable!(),
                );
                log.extend(w);
                members.insert(id, (r.expect("join"), BTreeSet::new()));
            }
            2 if !members.is_empty() => {
                let id = pick(&members, next(100)).unwrap();
                let (reply, _) = members.remove(&id).unwrap();
                let (r, w) = c.heartbeat(
                    "g",
                    Heartbeat {
                        member_id: id,
                        member_epoch: LEAVE_EPOCH,
                        ..Default::default()
                    },
                    now,
                    ms,
                    || unreachable!(),
                );
                log.extend(w);
                // A member fenced meanwhile is unknown: that is fine.
                if let Err(e) = r {
                    assert_eq!(e, GroupError::UnknownMemberId, "leave after {reply:?}");
                }
            }
            3 if !members.is_empty() => {
                let id = pick(&members, next(100)).unwrap();
                let (reply, _) = &members[&id];
                if let Some(tp) = reply.assignment.iter().next().cloned() {
                    let offset = step as i64;
                    match c.commit(
                        "g",
                        &id,
                        reply.member_epoch,
                        vec![(tp.clone(), offset, String::new())],
                        ms,
                    ) {
                        Ok(w) => {
                            log.extend(w);
                            committed.insert(tp, offset);
                        }
                        Err(GroupError::UnknownMemberId | GroupError::StaleMemberEpoch) => {}
                        Err(e) => panic!("commit: {e:?}"),
                    }
                }
            }
            4 => {
                let Tick {
                    writes: w, fenced, ..
                } = c.tick(now, ms);
                log.extend(w);
                for (_, m) in fenced {
                    members.remove(&m);
                }
            }
            5 if next(4) == 0 && partitions < 16 => {
                partitions += 1;
                log.extend(c.set_partitions(topics(&[("t", partitions)]), ms));
            }
            6 => {
                // Failover: a new coordinator replays the log and must show the same group.
                let before = view(&c, "g");
                let mut fresh = Coordinator::new(CoordinatorConfig::default());
                fresh.set_partitions(topics(&[("t", partitions)]), ms);
                for w in &log {
                    fresh
                        .replay(&w.key, w.value.as_deref(), now)
                        .expect("replays");
                }
                assert_eq!(
                    view(&fresh, "g"),
                    before,
                    "step {step}: failover changed the group"
                );
                c = fresh;
            }
            _ if !members.is_empty() => {
                let id = pick(&members, next(100)).unwrap();
                let (reply, reported) = members[&id].clone();
                // Confirm what was given back now, or only at a later heartbeat.
                let owned = if next(3) == 0 {
                    reported.clone()
                } else {
                    reply.assignment.clone()
                };
                let (r, w) = c.heartbeat(
                    "g",
                    Heartbeat {
                        member_id: id.clone(),
                        member_epoch: reply.member_epoch,
                        owned: Some(owned.clone()),
                        ..Default::default()
                    },
                    now,
                    ms,
                    || unreachable!(),
                );
                log.extend(w);
                match r {
                    // The reply is lost: the member goes on from what it had, and its
                    // next heartbeat may be an epoch behind (answered, not fenced).
                    Ok(_) if next(6) == 0 => {}
                    Ok(r) => {
                        members.insert(id, (r, owned));
                    }
                    Err(GroupError::UnknownMemberId) => {
                        members.remove(&id);
                    }
                    // Fenced (two replies lost): give everything up and rejoin under the
                    // same id, as the client does; the old membership is replaced.
                    Err(GroupError::FencedMemberEpoch) => {
                        let r = rejoin(&mut c, &id, now, ms, &mut log);
                        members.insert(id, (r, BTreeSet::new()));
                    }
                    Err(e) => panic!("step {step}: {e:?}"),
                }
            }
            _ => {}
        }
        // Exclusive ownership, as the coordinator counts it.
        if let Some(d) = c.describe("g") {
            let mut seen = BTreeSet::new();
            for m in &d.members {
                for tp in &m.owned {
                    assert!(
                        seen.insert(tp.clone()),
                        "step {step}: {tp:?} has two owners"
                    );
                }
            }
            let offsets: BTreeMap<Tp, i64> = d
                .offsets
                .iter()
                .map(|(tp, c)| (tp.clone(), c.offset))
                .collect();
            assert_eq!(offsets, committed, "step {step}: committed offsets");
        }
    }
    // Everyone heartbeats until nothing moves: a balanced, complete assignment.
    let now = t0 + Duration::from_millis(300 * 100);
    for _ in 0..6 {
        for id in members.keys().cloned().collect::<Vec<_>>() {
            let (reply, _) = members[&id].clone();
            let (r, _) = c.heartbeat(
                "g",
                Heartbeat {
                    member_id: id.clone(),
                    member_epoch: reply.member_epoch,
                    owned: Some(reply.assignment.clone()),
                    ..Default::default()
                },
                now,
                30_000,
                || unreachable!(),
            );
            let r = match r {
                Err(GroupError::FencedMemberEpoch) => {
                    rejoin(&mut c, &id, now, 30_000, &mut Vec::new())
                }
                r => r.expect("settling heartbeat"),
            };
            let owned = r.assignment.clone();
            members.insert(id, (r, owned));
        }
    }
    if !members.is_empty() {
        let counts: Vec<usize> = members.values().map(|(r, _)| r.assignment.len()).collect();
        assert_eq!(
            counts.iter().sum::<usize>(),
            partitions as usize,
            "complete"
        );
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "balanced: {counts:?}");
    }
}

/// KIP-1251: a commit sent at the member's previous epoch — while the heartbeat that
/// moved it on was being answered — is accepted for the partitions it still owns, and
/// refused (STALE_MEMBER_EPOCH) for one it gave up.
#[test]
fn a_commit_at_the_previous_epoch_is_accepted_for_partitions_still_owned() {
    let now = Instant::now();
    let mut c = Coordinator::new(CoordinatorConfig::default());
    c.set_partitions(topics(&[("t", 2)]), 0);
    let (e, _) = join(&mut c, "g", "m1", &["t"], now);
    let first = settle(&mut c, "g", "m1", e, now);
    assert_eq!(first.assignment.len(), 2);
    let (_, _) = join(&mut c, "g", "m2", &["t"], now);
    // m1 is told to give one partition up; it does, and moves to the next epoch.
    let beat = |c: &mut Coordinator, epoch: i32, owned: BTreeSet<Tp>| {
        c.heartbeat(
            "g",
            Heartbeat {
                member_id: "m1".into(),
                member_epoch: epoch,
                owned: Some(owned),
                ..Default::default()
            },
            now,
            0,
            || unreachable!(),
        )
        .0
        .expect("heartbeat")
    };
    let told = beat(&mut c, first.member_epoch, first.assignment.clone());
    let kept: BTreeSet<Tp> = told.assignment.clone();
    assert_eq!(kept.len(), 1, "{told:?}");
    let given_up = first.assignment.difference(&kept).next().cloned().unwrap();
    let moved = beat(&mut c, told.member_epoch, kept.clone());
    assert!(moved.member_epoch > first.member_epoch, "{moved:?}");
    let kept_tp = kept.iter().next().cloned().unwrap();
    assert!(c
        .commit(
            "g",
            "m1",
            first.member_epoch,
            vec![(kept_tp, 7, String::new())],
            0
        )
        .is_ok());
    assert_eq!(
        c.commit(
            "g",
            "m1",
            first.member_epoch,
            vec![(given_up, 7, String::new())],
            0
        ),
        Err(GroupError::StaleMemberEpoch)
    );
}
