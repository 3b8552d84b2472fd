//! The classic group protocol through the coordinator: the join/sync round, rejoins,
//! timeouts, static members, and a seeded simulator of clients that crash, lose answers,
//! leave, commit, and live through coordinator failovers (a new coordinator replays what
//! the old one wrote; requests waiting on the old one are lost).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::classic::{Delivery, JoinAnswer, JoinReply, JoinRequest, SyncAnswer, SyncReply};
use super::coordinator::{Coordinator, CoordinatorConfig, Tick, Write};
use super::state::GroupError;

const G: &str = "g";

fn config(delay_ms: u64) -> CoordinatorConfig {
    CoordinatorConfig {
        initial_rebalance_delay: Duration::from_millis(delay_ms),
        ..CoordinatorConfig::default()
    }
}

fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), format!("md-{member_id}-{p}").into_bytes()))
            .collect(),
        require_known_member_id: true,
        ..Default::default()
    }
}

/// A first join of a v4+ client: MEMBER_ID_REQUIRED, then the join with that id.
fn first_join(
    c: &mut Coordinator,
    n: &mut u32,
    now: Instant,
    out: &mut Vec<Delivery>,
) -> (String, JoinAnswer) {
    let (a, d, _) = c.join(G, request("", &["range"]), now, 0, || {
        *n += 1;
        format!("m{n}")
    });
    out.extend(d);
    let JoinAnswer::Now(Err(GroupError::MemberIdRequired(id))) = a else {
        panic!("{a:?}")
    };
    let (a, d, _) = c.join(G, request(&id, &["range"]), now, 0, || unreachable!());
    out.extend(d);
    (id, a)
}

fn joined(out: &[Delivery], id: &str) -> JoinReply {
    out.iter()
        .find_map(|d| match d {
            Delivery::Join(m, Ok(r)) if m == id => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join answer for {id} in {out:?}"))
}

fn synced(out: &[Delivery], id: &str) -> SyncReply {
    out.iter()
        .find_map(|d| match d {
            Delivery::Sync(m, Ok(r)) if m == id => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no sync answer for {id} in {out:?}"))
}

fn sync(
    c: &mut Coordinator,
    id: &str,
    generation: i32,
    assignments: Vec<(String, Vec<u8>)>,
    now: Instant,
) -> (SyncAnswer, Vec<Delivery>, Vec<Write>) {
    c.sync(G, id, None, generation, (None, None), assignments, now, 0)
}

#[test]
fn two_members_join_the_leader_assigns_and_both_get_their_share() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(0));
    let (mut n, mut out) = (0, Vec::new());
    let (a, first) = first_join(&mut c, &mut n, t0, &mut out);
    // Alone and no initial delay: its join completes at once, as generation 1.
    assert_eq!(first, JoinAnswer::Later(a.clone()));
    let r = joined(&out, &a);
    assert_eq!(
        (r.generation, r.leader.as_str(), r.members.len()),
        (1, a.as_str(), 1)
    );
    assert_eq!(r.protocol, "range");
    let (s, _, w) = sync(&mut c, &a, 1, vec![(a.clone(), b"all".to_vec())], t0);
    assert!(matches!(s, SyncAnswer::Now(Ok(ref r)) if r.assignment == b"all"));
    assert_eq!(w.len(), 1, "a stable group is written");

    // A second member: the leader learns of the rebalance by heartbeat and rejoins.
    out.clear();
    let (b, later) = first_join(&mut c, &mut n, t0, &mut out);
    assert_eq!(later, JoinAnswer::Later(b.clone()));
    assert!(out.is_empty(), "waits for the leader: {out:?}");
    assert_eq!(
        c.classic_heartbeat(G, &a, None, 1, t0),
        Err(GroupError::RebalanceInProgress)
    );
    let (again, d, _) = c.join(G, request(&a, &["range"]), t0, 0, || unreachable!());
    assert_eq!(again, JoinAnswer::Later(a.clone()));
    let leader = joined(&d, &a);
    let follower = joined(&d, &b);
    assert_eq!(leader.generation, 2);
    assert_eq!(
        leader.members.len(),
        2,
        "the leader's answer lists the members"
    );
    assert!(follower.members.is_empty());
    assert_eq!(follower.leader, a);
    // The follower's sync waits for the leader's.
    let (s, d, _) = sync(&mut c, &b, 2, Vec::new(), t0);
    assert_eq!((s, d.len()), (SyncAnswer::Later, 0));
    let plan = vec![(a.clone(), b"p0".to_vec()), (b.clone(), b"p1".to_vec())];
    let (s, d, _) = sync(&mut c, &a, 2, plan, t0);
    assert!(matches!(s, SyncAnswer::Now(Ok(ref r)) if r.assignment == b"p0"));
    assert_eq!(synced(&d, &b).assignment, b"p1");
    assert_eq!(c.classic_heartbeat(G, &b, None, 2, t0), Ok(()));
    assert_eq!(
        c.classic_heartbeat(G, &b, None, 1, t0),
        Err(GroupError::IllegalGeneration)
    );
    // Commits: the member's generation only.
    let tp = ("t".to_string(), 0);
    assert_eq!(
        c.commit(G, &b, 1, vec![(tp.clone(), 5, String::new())], 0),
        Err(GroupError::IllegalGeneration)
    );
    assert!(c.commit(G, &b, 2, vec![(tp, 5, String::new())], 0).is_ok());
    // A KIP-848 member cannot join a classic group with members.
    let (r, _) = c.heartbeat(
        G,
        super::state::Heartbeat {
            member_id: "x".into(),
            topics: Some(["t".to_string()].into()),
            ..Default::default()
        },
        t0,
        0,
        || "x".into(),
    );
    assert_eq!(r, Err(GroupError::InconsistentGroupProtocol));
}

#[test]
fn the_initial_delay_gathers_members_into_one_first_generation() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(3000));
    let (mut n, mut out) = (0, Vec::new());
    let (a, _) = first_join(&mut c, &mut n, t0, &mut out);
    let (b, _) = first_join(&mut c, &mut n, t0 + Duration::from_secs(1), &mut out);
    assert!(out.is_empty());
    let Tick { deliveries, .. } = c.tick(t0 + Duration::from_millis(3900), 0);
    assert!(deliveries.is_empty(), "the delay restarted with b's join");
    let Tick { deliveries, .. } = c.tick(t0 + Duration::from_secs(4), 0);
    let got: Vec<Delivery> = deliveries.into_iter().map(|(_, d)| d).collect();
    assert_eq!(joined(&got, &a).generation, 1);
    assert_eq!(joined(&got, &b).generation, 1);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(0));
    let (mut n, mut out) = (0, Vec::new());
    let (a, _) = first_join(&mut c, &mut n, t0, &mut out);
    sync(&mut c, &a, 1, Vec::new(), t0);
    let (b, _) = first_join(&mut c, &mut n, t0, &mut out);
    // `a` heartbeats but never rejoins (stuck in its poll loop): after the rebalance
    // timeout (30 s), `b` goes on alone.
    out.clear();
    for s in [5, 10, 15, 20, 25] {
        let at = t0 + Duration::from_secs(s);
        assert_eq!(
            c.classic_heartbeat(G, &a, None, 1, at),
            Err(GroupError::RebalanceInProgress)
        );
        let Tick {
            deliveries, fenced, ..
        } = c.tick(at, 0);
        assert!(deliveries.is_empty() && fenced.is_empty());
    }
    let Tick {
        deliveries, fenced, ..
    } = c.tick(t0 + Duration::from_secs(29), 0);
    assert!(deliveries.is_empty() && fenced.is_empty());
    let Tick { deliveries, .. } = c.tick(t0 + Duration::from_secs(30), 0);
    let got: Vec<Delivery> = deliveries.into_iter().map(|(_, d)| d).collect();
    let r = joined(&got, &b);
    assert_eq!(
        (r.generation, r.leader.as_str(), r.members.len()),
        (2, b.as_str(), 1)
    );
    assert_eq!(
        c.classic_heartbeat(G, &a, None, 1, t0 + Duration::from_secs(31)),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_silent_member_expires_and_a_leader_that_never_syncs_is_dropped() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(0));
    let (mut n, mut out) = (0, Vec::new());
    let (a, _) = first_join(&mut c, &mut n, t0, &mut out);
    sync(&mut c, &a, 1, Vec::new(), t0);
    // Silent past its 10 s session: removed, the group is empty at generation 2.
    let Tick { fenced, writes, .. } = c.tick(t0 + Duration::from_secs(10), 0);
    assert_eq!(fenced, vec![(G.to_string(), a.clone())]);
    assert_eq!(writes.len(), 1, "the empty group is written");
    assert_eq!(c.list()[0].state, "Empty");

    // Two join; the leader never sends its SyncGroup: the follower's waits until the
    // sync deadline (the rebalance timeout), then it is told to rejoin.
    out.clear();
    let t1 = t0 + Duration::from_secs(20);
    let (b, _) = first_join(&mut c, &mut n, t1, &mut out);
    sync(&mut c, &b, 3, Vec::new(), t1);
    let (d2, _) = first_join(&mut c, &mut n, t1, &mut out);
    let (_, d, _) = c.join(G, request(&b, &["range"]), t1, 0, || unreachable!());
    let leader = joined(&d, &b).leader;
    let follower = if leader == b { d2.clone() } else { b.clone() };
    let (s, _, _) = sync(&mut c, &follower, 4, Vec::new(), t1);
    assert_eq!(s, SyncAnswer::Later);
    let Tick {
        deliveries, fenced, ..
    } = c.tick(t1 + Duration::from_secs(30), 0);
    assert_eq!(fenced, vec![(G.to_string(), leader)]);
    assert!(
        deliveries
            .iter()
            .any(|(_, d)| *d
                == Delivery::Sync(follower.clone(), Err(GroupError::RebalanceInProgress)))
    );
}

#[test]
fn a_static_member_restarted_takes_its_place_without_a_rebalance() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(0));
    let mut n = 0;
    let mut new_id = || {
        n += 1;
        format!("m{n}")
    };
    let req = |id: &str| JoinRequest {
        instance_id: Some(format!("pod-{}", if id.is_empty() { "?" } else { id })),
        ..request(id, &["range"])
    };
    let mut a_req = req("");
    a_req.instance_id = Some("pod-a".into());
    let (JoinAnswer::Later(a), d, _) = c.join(G, a_req.clone(), t0, 0, &mut new_id) else {
        panic!()
    };
    assert_eq!(
        joined(&d, &a).generation,
        1,
        "a static member needs no member id round"
    );
    let mut b_req = req("");
    b_req.instance_id = Some("pod-b".into());
    let (JoinAnswer::Later(b), _, _) = c.join(G, b_req.clone(), t0, 0, &mut new_id) else {
        panic!()
    };
    let (_, d, _) = c.join(
        G,
        JoinRequest {
            member_id: a.clone(),
            ..a_req.clone()
        },
        t0,
        0,
        &mut new_id,
    );
    assert_eq!(joined(&d, &b).generation, 2);
    sync(&mut c, &b, 2, Vec::new(), t0);
    let plan = vec![(a.clone(), b"A".to_vec()), (b.clone(), b"B".to_vec())];
    sync(&mut c, &a, 2, plan, t0);
    // pod-b restarts (a rolling update): a new member id, the same assignment, no new
    // generation; the old id is fenced.
    let (answer, _, _) = c.join(G, b_req, t0, 0, &mut new_id);
    let JoinAnswer::Now(Ok(r)) = answer else {
        panic!("{answer:?}")
    };
    assert_ne!(r.member_id, b);
    assert_eq!(r.generation, 2);
    let (s, _, _) = sync(&mut c, &r.member_id, 2, Vec::new(), t0);
    assert!(matches!(s, SyncAnswer::Now(Ok(ref x)) if x.assignment == b"B"));
    assert_eq!(
        c.classic_heartbeat(G, &b, None, 2, t0),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(c.classic_heartbeat(G, &a, None, 2, t0), Ok(()));
    // Known by its instance id, the replaced member id is fenced, not unknown.
    assert_eq!(
        c.classic_heartbeat(G, &b, Some("pod-b"), 2, t0),
        Err(GroupError::FencedInstanceId)
    );
    // The leader restarts: no rebalance either; it is answered with its old id as the
    // leader, so it takes the follower's path and syncs for what it had.
    let (answer, _, _) = c.join(G, a_req, t0, 0, &mut new_id);
    let JoinAnswer::Now(Ok(r)) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        (r.generation, r.leader.as_str(), r.members.len()),
        (2, a.as_str(), 0)
    );
    assert_ne!(r.member_id, a);
    let (s, _, _) = sync(&mut c, &r.member_id, 2, Vec::new(), t0);
    assert!(matches!(s, SyncAnswer::Now(Ok(ref x)) if x.assignment == b"A"));
}

#[test]
fn joins_with_another_protocol_type_or_no_common_protocol_are_refused() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(0));
    let (mut n, mut out) = (0, Vec::new());
    first_join(&mut c, &mut n, t0, &mut out);
    let mut other = request("", &["range"]);
    other.protocol_type = "connect".into();
    let (a, _, _) = c.join(G, other, t0, 0, || "x".into());
    assert_eq!(
        a,
        JoinAnswer::Now(Err(GroupError::InconsistentGroupProtocol))
    );
    let (a, _, _) = c.join(G, request("", &["roundrobin"]), t0, 0, || "x".into());
    assert_eq!(
        a,
        JoinAnswer::Now(Err(GroupError::InconsistentGroupProtocol))
    );
    let mut short = request("", &["range"]);
    short.session_timeout = Duration::from_millis(10);
    let (a, _, _) = c.join(G, short, t0, 0, || "x".into());
    assert_eq!(a, JoinAnswer::Now(Err(GroupError::InvalidSessionTimeout)));
}

/// What a simulated client is doing.
#[derive(Debug, Clone, PartialEq)]
enum Client {
    /// Must send JoinGroup (with its member id, if it has one).
    Join,
    /// Its JoinGroup waits; re-sent after `until` if the answer was lost.
    WaitJoin {
        until: Instant,
    },
    /// Must send SyncGroup for this generation (the leader with an assignment).
    Sync {
        generation: i32,
        members: Vec<String>,
    },
    WaitSync {
        generation: i32,
        until: Instant,
    },
    Stable {
        generation: i32,
        owned: BTreeSet<u32>,
    },
}

struct Sim {
    id: String,
    state: Client,
    alive: bool,
    /// Paused (a GC pause, a stalled host) until then: it then acts on its stale state.
    paused_until: Option<Instant>,
}

/// Seeded runs: clients join, crash (silent for good), lose answers (and re-send after a
/// request timeout), leave, heartbeat, commit; the coordinator fails over (a new one
/// replays what was written; waiting requests fail and are re-sent as a fresh join). After
/// every step: every SyncGroup answer of a generation is the leader's assignment for that
/// member, so no partition has two owners within a generation, and an accepted commit
/// comes from the current generation's owner. At the end, with faults stopped, the live
/// clients settle in one generation that covers every partition once.
/// `SLUICE_GROUP_SIM_SEEDS=N` runs N seeds; a failure prints `SLUICE_GROUP_SIM_SEED=S`.
/// OffsetDelete on classic groups: a `consumer` member's subscription (decoded from its
/// ConsumerProtocol metadata) keeps its topics' offsets and not the others'; a group of
/// another protocol type with members refuses; an unknown group is not found.
#[test]
fn offset_delete_keeps_what_a_classic_member_subscribes_to() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(0));
    let (a, b) = (("a".to_string(), 0), ("b".to_string(), 0));
    let commit_both = |c: &mut Coordinator, group: &str| {
        let offsets = vec![(a.clone(), 5, String::new()), (b.clone(), 7, String::new())];
        c.commit(group, "", -1, offsets, 0).unwrap();
    };
    commit_both(&mut c, G);
    // A member subscribed to "a" (ConsumerProtocol v1 metadata: version, then the body).
    let mut md = bytes::BytesMut::from(&1i16.to_be_bytes()[..]);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("a")])
        .encode(&mut md, 1)
        .unwrap();
    let mut req = request("", &["range"]);
    req.require_known_member_id = false;
    req.protocols = vec![("range".into(), md.to_vec())];
    let (answer, _, _) = c.join(G, req, t0, 0, || "m1".into());
    assert!(!matches!(answer, JoinAnswer::Now(Err(_))), "{answer:?}");
    let (writes, each) = c.delete_offsets(G, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(
        each,
        vec![
            (a.clone(), Some(GroupError::GroupSubscribedToTopic)),
            (b.clone(), None)
        ]
    );
    assert_eq!(writes.len(), 1, "one tombstone, for b-0: {writes:?}");
    assert_eq!(writes[0].value, None);
    let left: Vec<_> = c.fetch(G, &[]).into_iter().map(|(tp, _)| tp).collect();
    assert_eq!(left, vec![a.clone()]);

    // Another protocol type with members: the coordinator cannot tell what they read.
    commit_both(&mut c, "connect");
    let mut req = request("", &["range"]);
    req.require_known_member_id = false;
    req.protocol_type = "connect".into();
    c.join("connect", req, t0, 0, || "w1".into());
    assert_eq!(
        c.delete_offsets("connect", std::slice::from_ref(&b))
            .unwrap_err(),
        GroupError::NonEmptyGroup
    );
    assert_eq!(c.fetch("connect", &[]).len(), 2, "nothing deleted");
    assert_eq!(
        c.delete_offsets("no-such-group", &[b]).unwrap_err(),
        GroupError::GroupIdNotFound
    );
}

#[test]
fn random_classic_members_with_lost_answers_and_failovers() {
    super::for_each_seed(150, simulate);
}

fn encode(parts: &BTreeSet<u32>) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_be_bytes()).collect()
}

fn decode(b: &[u8]) -> BTreeSet<u32> {
    b.chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn simulate(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let partitions = 1 + next(8) as u32;
    let delay = [0, 0, 500, 3000][next(4) as usize];
    let t0 = Instant::now();
    let mut c = Coordinator::new(config(delay));
    let mut log: Vec<Write> = Vec::new();
    let mut clients: Vec<Sim> = Vec::new();
    let mut ids = 0u32;
    // The leader's assignment per generation, as the coordinator accepted it.
    let mut plans: BTreeMap<i32, BTreeMap<String, BTreeSet<u32>>> = BTreeMap::new();
    let request_timeout = Duration::from_secs(40);
    let mut inflight: Vec<(Instant, String, i32, u32)> = Vec::new();
    let steps = 2000u64;
    let settle_from = 1000u64;
    for step in 0..steps {
        let now = t0 + Duration::from_millis(step * 100);
        let faults = step < settle_from;
        // At most one client acts per step, plus the tick.
        let mut deliveries: Vec<Delivery> = Vec::new();
        let pick = next(100);
        if faults && pick < 4 && clients.iter().filter(|c| c.alive).count() < 6 {
            clients.push(Sim {
                id: String::new(),
                state: Client::Join,
                alive: true,
                paused_until: None,
            });
        } else if faults && pick < 5 {
            // A crash: silent for good; or a pause of up to 60 s, after which it goes
            // on from the state it had (a commit for a generation that may be gone).
            let forever = next(2) == 0;
            let pause = Duration::from_millis(next(60_000));
            if let Some(cl) = clients.iter_mut().filter(|c| c.alive).nth(next(6) as usize) {
                if forever {
                    cl.alive = false;
                } else {
                    cl.paused_until = Some(now + pause);
                }
            }
        } else if faults && pick < 7 {
            // A clean leave.
            if let Some(cl) = clients
                .iter_mut()
                .filter(|c| c.alive && !c.id.is_empty())
                .nth(next(6) as usize)
            {
                cl.alive = false;
                let (_, d, w) = c.leave(G, &[(cl.id.clone(), None)], now, 0);
                log.extend(w);
                deliveries.extend(d);
            }
        } else if faults && pick < 8 {
            // Failover: a new coordinator from the log; every waiting request is lost
            // and its client starts a fresh join (as on NOT_COORDINATOR).
            let mut fresh = Coordinator::new(config(delay));
            for w in &log {
                fresh
                    .replay(&w.key, w.value.as_deref(), now)
                    .expect("replays");
            }
            c = fresh;
            for cl in clients.iter_mut().filter(|c| c.alive) {
                if matches!(cl.state, Client::WaitJoin { .. } | Client::WaitSync { .. }) {
                    cl.state = Client::Join;
                }
            }
        }
        // Every live client takes its next step with some probability.
        let order: Vec<usize> = (0..clients.len()).collect();
        for i in order {
            if !clients[i].alive || clients[i].paused_until.is_some_and(|u| now < u) || next(3) == 0
            {
                continue;
            }
            clients[i].paused_until = None;
            let id = clients[i].id.clone();
            match clients[i].state.clone() {
                Client::Join => {
                    let (a, d, w) = c.join(G, request(&id, &["range"]), now, 0, || {
                        ids += 1;
                        format!("m{ids}")
                    });
                    log.extend(w);
                    deliveries.extend(d);
                    clients[i].state = match a {
                        JoinAnswer::Now(Err(GroupError::MemberIdRequired(m))) => {
                            clients[i].id = m;
                            Client::Join
                        }
                        JoinAnswer::Now(Ok(r)) => {
                            clients[i].id = r.member_id.clone();
                            Client::Sync {
                                generation: r.generation,
                                members: r.members.iter().map(|m| m.0.clone()).collect(),
                            }
                        }
                        JoinAnswer::Now(Err(GroupError::UnknownMemberId)) => {
                            clients[i].id.clear();
                            Client::Join
                        }
                        JoinAnswer::Now(Err(e)) => panic!("seed {seed}: join {e:?}"),
                        JoinAnswer::Later(m) => {
                            clients[i].id = m;
                            Client::WaitJoin {
                                until: now + request_timeout,
                            }
                        }
                    };
                }
                Client::WaitJoin { until } | Client::WaitSync { until, .. } if now >= until => {
                    // The answer was lost: join again under the same id.
                    clients[i].state = Client::Join;
                }
                Client::WaitJoin { .. } | Client::WaitSync { .. } => {}
                Client::Sync {
                    generation,
                    members,
                } => {
                    let plan: Vec<(String, Vec<u8>)> = if members.is_empty() {
                        Vec::new()
                    } else {
                        let mut shares: BTreeMap<String, BTreeSet<u32>> = members
                            .iter()
                            .map(|m| (m.clone(), BTreeSet::new()))
                            .collect();
                        for p in 0..partitions {
                            let m = &members[p as usize % members.len()];
                            shares.get_mut(m).expect("listed").insert(p);
                        }
                        shares.iter().map(|(m, s)| (m.clone(), encode(s))).collect()
                    };
                    let (a, d, w) = sync(&mut c, &id, generation, plan.clone(), now);
                    log.extend(w);
                    deliveries.extend(d);
                    let leader_done = matches!(a, SyncAnswer::Now(Ok(_))) && !plan.is_empty();
                    if leader_done && !plans.contains_key(&generation) {
                        plans.insert(
                            generation,
                            plan.iter().map(|(m, b)| (m.clone(), decode(b))).collect(),
                        );
                    }
                    clients[i].state = match a {
                        SyncAnswer::Later => Client::WaitSync {
                            generation,
                            until: now + request_timeout,
                        },
                        SyncAnswer::Now(Ok(r)) => Client::Stable {
                            generation,
                            owned: decode(&r.assignment),
                        },
                        SyncAnswer::Now(Err(GroupError::UnknownMemberId)) => {
                            clients[i].id.clear();
                            Client::Join
                        }
                        SyncAnswer::Now(Err(_)) => Client::Join,
                    };
                }
                Client::Stable { generation, owned } => {
                    if next(4) == 0 {
                        if let Some(p) = owned.iter().nth(next(owned.len() as u64) as usize) {
                            // Sent now, arriving after a network delay of up to 20 s.
                            let due = now + Duration::from_millis(next(20_000));
                            inflight.push((due, id.clone(), generation, *p));
                        }
                    }
                    match c.classic_heartbeat(G, &id, None, generation, now) {
                        Ok(()) => {}
                        Err(GroupError::UnknownMemberId) => {
                            clients[i].id.clear();
                            clients[i].state = Client::Join;
                        }
                        Err(_) => clients[i].state = Client::Join,
                    }
                }
            }
        }
        // Commits arrive; only the owner under the latest assignment may get one in.
        let (due, later): (Vec<_>, Vec<_>) = inflight.drain(..).partition(|x| x.0 <= now);
        inflight = later;
        for (_, id, generation, p) in due {
            let tp = ("t".to_string(), p);
            if let Ok(w) = c.commit(
                G,
                &id,
                generation,
                vec![(tp, step as i64, String::new())],
                0,
            ) {
                log.extend(w);
                let (latest, plan) = plans.last_key_value().expect("a plan");
                let owner = plan.get(&id).is_some_and(|s| s.contains(&p));
                assert!(
                    *latest == generation && owner,
                    "seed {seed} step {step}: {id} committed {p} in generation {generation}; the latest assignment is generation {latest}'s: {plan:?}"
                );
            }
        }
        let Tick {
            writes,
            deliveries: ticked,
            ..
        } = c.tick(now, step as i64 * 100);
        log.extend(writes);
        deliveries.extend(ticked.into_iter().map(|(_, d)| d));
        // Answers reach their clients, unless the network loses them (before settling).
        for d in deliveries {
            let (m, lost) = match &d {
                Delivery::Join(m, _) | Delivery::Sync(m, _) => (m.clone(), faults && next(20) == 0),
            };
            let Some(cl) = clients.iter_mut().find(|c| c.alive && c.id == m) else {
                continue;
            };
            if lost {
                continue;
            }
            match d {
                Delivery::Join(_, Ok(r)) if matches!(cl.state, Client::WaitJoin { .. }) => {
                    cl.state = Client::Sync {
                        generation: r.generation,
                        members: r.members.iter().map(|m| m.0.clone()).collect(),
                    };
                }
                Delivery::Sync(_, Ok(r)) => {
                    if let Client::WaitSync { generation, .. } = cl.state {
                        let owned = decode(&r.assignment);
                        let plan = plans.get(&generation).and_then(|p| p.get(&m));
                        assert_eq!(
                            plan,
                            Some(&owned),
                            "seed {seed} step {step}: {m}'s answer in generation {generation} is not the leader's"
                        );
                        cl.state = Client::Stable { generation, owned };
                    }
                }
                Delivery::Join(_, Err(GroupError::UnknownMemberId))
                | Delivery::Sync(_, Err(GroupError::UnknownMemberId)) => {
                    cl.id.clear();
                    cl.state = Client::Join;
                }
                _ => cl.state = Client::Join,
            }
        }
        // No partition has two owners within one generation.
        let mut owners: BTreeMap<(i32, u32), &str> = BTreeMap::new();
        for cl in clients.iter().filter(|c| c.alive) {
            if let Client::Stable { generation, owned } = &cl.state {
                for p in owned {
                    if let Some(o) = owners.insert((*generation, *p), &cl.id) {
                        panic!("seed {seed} step {step}: partition {p} owned by {o} and {} in generation {generation}", cl.id);
                    }
                }
            }
        }
    }
    // Settled: every live client stable in one generation, every partition once.
    let live: Vec<&Sim> = clients.iter().filter(|c| c.alive).collect();
    if live.is_empty() {
        return;
    }
    let generations: BTreeSet<i32> = live
        .iter()
        .map(|c| match &c.state {
            Client::Stable { generation, .. } => *generation,
            other => panic!("seed {seed}: {} still {other:?}", c.id),
        })
        .collect();
    assert_eq!(generations.len(), 1, "seed {seed}: {generations:?}");
    let mut all: Vec<u32> = live
        .iter()
        .flat_map(|c| match &c.state {
            Client::Stable { owned, .. } => owned.iter().copied().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    all.sort();
    assert_eq!(all, (0..partitions).collect::<Vec<_>>(), "seed {seed}");
}
