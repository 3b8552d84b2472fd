//! `PartitionState` without sockets, files or sleeps: time is an `Instant` we move.

use super::*;

const ME: BrokerId = BrokerId(1);
const B2: BrokerId = BrokerId(2);
const B3: BrokerId = BrokerId(3);

fn role(leader: BrokerId, epoch: u32, isr: &[BrokerId], partition_epoch: i32) -> Role {
    Role {
        leader: Some(leader),
        leader_epoch: LeaderEpoch(epoch),
        replicas: vec![ME, B2, B3],
        isr: isr.to_vec(),
        partition_epoch,
    }
}

fn config(min_isr: usize) -> StateConfig {
    StateConfig {
        min_insync_replicas: min_isr,
        replica_lag_max: Duration::from_secs(10),
        isr_proposal_interval: Duration::from_secs(1),
    }
}

/// A leader of epoch 1 over replicas 1, 2, 3 (all in sync) at log end `leo`.
fn leader(min_isr: usize, leo: u64, t0: Instant) -> PartitionState {
    let mut s = PartitionState::new(ME, config(min_isr));
    let actions = s.handle(Event::Role {
        role: role(ME, 1, &[ME, B2, B3], 0),
        log_end_offset: Offset(leo),
        now: t0,
    });
    assert_eq!(
        actions,
        vec![Action::AssignLeaderEpoch {
            epoch: LeaderEpoch(1),
            start_offset: Offset(leo)
        }]
    );
    s
}

fn append(s: &mut PartitionState, leo: u64, id: u64, now: Instant) -> Vec<Action> {
    s.handle(Event::Appended {
        log_end_offset: Offset(leo),
        waiter: Some(NewWaiter {
            id: WaiterId(id),
            required_end: Offset(leo),
            deadline: now + Duration::from_secs(30),
        }),
    })
}

fn fetch(s: &mut PartitionState, who: BrokerId, at: u64, leo: u64, now: Instant) -> Vec<Action> {
    s.handle(Event::FollowerFetch {
        replica: who,
        fetch_offset: Offset(at),
        log_end_offset: Offset(leo),
        now,
    })
}

fn completions(actions: &[Action]) -> Vec<(u64, Result<(), ErrorCode>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Complete { waiter, result } => Some((waiter.0, *result)),
            _ => None,
        })
        .collect()
}

#[test]
fn acks_all_completes_once_every_isr_member_has_the_records() {
    let t0 = Instant::now();
    let mut s = leader(2, 0, t0);
    assert!(completions(&append(&mut s, 10, 7, t0)).is_empty());
    assert_eq!(s.high_watermark(), Offset(0));
    let a = fetch(&mut s, B2, 10, 10, t0);
    assert!(
        completions(&a).is_empty(),
        "replica 3 has not fetched: {a:?}"
    );
    let a = fetch(&mut s, B3, 10, 10, t0);
    assert_eq!(completions(&a), vec![(7, Ok(()))]);
    assert!(a.contains(&Action::PublishHighWatermark(Offset(10))));
    assert_eq!(s.waiting(), 0);
}

#[test]
fn isr_shrunk_below_min_fails_the_waiter_after_append() {
    // Both followers paused: the leader shrinks the ISR to itself. The HW then reaches
    // the records, but only one replica holds them: Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    let t0 = Instant::now();
    let mut s = leader(2, 0, t0);
    append(&mut s, 5, 1, t0);
    let a = s.handle(Event::Role {
        role: role(ME, 1, &[ME], 1),
        log_end_offset: Offset(5),
        now: t0,
    });
    assert_eq!(
        completions(&a),
        vec![(1, Err(ErrorCode::NotEnoughReplicasAfterAppend))]
    );
    assert_eq!(
        s.check_produce(true),
        Err(Refusal::NotEnoughReplicas { isr: 1, min: 2 })
    );
    assert_eq!(
        s.check_produce(false),
        Ok(LeaderEpoch(1)),
        "acks=1 still works"
    );
}

#[test]
fn a_new_term_fails_waiters_and_later_hw_never_completes_them() {
    // The lost-record story of issue 8: the leader is deposed while a produce waits,
    // truncates as a follower, and the follower HW from the new leader passes the offset.
    let t0 = Instant::now();
    let mut s = leader(2, 100, t0);
    append(&mut s, 300, 9, t0);
    let a = s.handle(Event::Role {
        role: role(B3, 2, &[B2, B3], 1),
        log_end_offset: Offset(300),
        now: t0,
    });
    assert_eq!(
        completions(&a),
        vec![(9, Err(ErrorCode::NotLeaderOrFollower))]
    );
    s.handle(Event::Truncated {
        log_end_offset: Offset(100),
    });
    let a = s.handle(Event::Replicated {
        leader_high_watermark: Offset(400),
        log_end_offset: Offset(400),
    });
    assert!(completions(&a).is_empty());
    assert_eq!(s.high_watermark(), Offset(400));
    assert_eq!(
        s.check_produce(true),
        Err(Refusal::NotLeader { leader: Some(B3) })
    );
}

#[test]
fn waiters_time_out_at_their_deadline_and_on_shutdown_fail() {
    let t0 = Instant::now();
    let mut s = leader(2, 0, t0);
    s.handle(Event::Appended {
        log_end_offset: Offset(1),
        waiter: Some(NewWaiter {
            id: WaiterId(1),
            required_end: Offset(1),
            deadline: t0 + Duration::from_millis(500),
        }),
    });
    append(&mut s, 2, 2, t0);
    let a = s.handle(Event::Tick {
        now: t0 + Duration::from_millis(499),
    });
    assert!(completions(&a).is_empty());
    let a = s.handle(Event::Tick {
        now: t0 + Duration::from_millis(500),
    });
    assert_eq!(completions(&a), vec![(1, Err(ErrorCode::RequestTimedOut))]);
    let a = s.handle(Event::Shutdown);
    assert_eq!(
        completions(&a),
        vec![(2, Err(ErrorCode::NotLeaderOrFollower))]
    );
}

#[test]
fn stale_roles_are_ignored() {
    let t0 = Instant::now();
    let mut s = leader(1, 0, t0);
    s.handle(Event::Role {
        role: role(ME, 3, &[ME, B2, B3], 5),
        log_end_offset: Offset(0),
        now: t0,
    });
    // An older leader epoch, and the same epoch with an older partition epoch.
    for stale in [role(B2, 2, &[B2], 9), role(ME, 3, &[ME], 4)] {
        let a = s.handle(Event::Role {
            role: stale,
            log_end_offset: Offset(0),
            now: t0,
        });
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(s.role().partition_epoch, 5);
        assert_eq!(s.role().isr, vec![ME, B2, B3]);
    }
}

#[test]
fn leader_hw_never_moves_back_when_a_replica_joins_the_isr() {
    let t0 = Instant::now();
    let mut s = leader(1, 0, t0);
    s.handle(Event::Role {
        role: role(ME, 1, &[ME], 1),
        log_end_offset: Offset(0),
        now: t0,
    });
    append(&mut s, 50, 1, t0);
    assert_eq!(s.high_watermark(), Offset(50));
    // Replica 2 joins while its last known LEO is 0 (it has not fetched in this term).
    let a = s.handle(Event::Role {
        role: role(ME, 1, &[ME, B2], 2),
        log_end_offset: Offset(50),
        now: t0,
    });
    assert!(!a
        .iter()
        .any(|a| matches!(a, Action::PublishHighWatermark(_))));
    assert_eq!(s.high_watermark(), Offset(50));
}

#[test]
fn lagging_followers_leave_and_caught_up_ones_join_at_the_proposal_rate() {
    let t0 = Instant::now();
    let mut s = leader(1, 0, t0);
    append(&mut s, 10, 1, t0);
    fetch(&mut s, B2, 10, 10, t0);
    let t1 = t0 + Duration::from_secs(11);
    fetch(&mut s, B2, 10, 10, t1);
    let a = s.handle(Event::Tick { now: t1 });
    let proposal = IsrProposal {
        leader_epoch: LeaderEpoch(1),
        partition_epoch: 0,
        new_isr: vec![ME, B2],
    };
    assert_eq!(
        a,
        vec![Action::ProposeIsr(proposal.clone())],
        "replica 3 never fetched"
    );
    assert!(s.handle(Event::Tick { now: t1 }).is_empty(), "rate-limited");
    let a = s.handle(Event::Tick {
        now: t1 + Duration::from_secs(1),
    });
    assert_eq!(
        a,
        vec![Action::ProposeIsr(proposal)],
        "not committed yet: asked again"
    );
    // Committed; then replica 3 catches up and is proposed back.
    s.handle(Event::Role {
        role: role(ME, 1, &[ME, B2], 1),
        log_end_offset: Offset(10),
        now: t1,
    });
    let t2 = t1 + Duration::from_secs(2);
    fetch(&mut s, B3, 10, 10, t2);
    let a = s.handle(Event::Tick { now: t2 });
    assert_eq!(
        a,
        vec![Action::ProposeIsr(IsrProposal {
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 1,
            new_isr: vec![ME, B2, B3],
        })]
    );
}

#[test]
fn a_follower_behind_the_epoch_start_cannot_join() {
    let t0 = Instant::now();
    // This leader's epoch starts at 20; replica 3 is at 15 and the HW is 10.
    let mut s = PartitionState::new(ME, config(1));
    s.handle(Event::Role {
        role: role(ME, 4, &[ME, B2], 0),
        log_end_offset: Offset(20),
        now: t0,
    });
    fetch(&mut s, B2, 20, 20, t0);
    fetch(&mut s, B3, 15, 20, t0);
    assert!(s.handle(Event::Tick { now: t0 }).is_empty());
    fetch(&mut s, B3, 20, 20, t0);
    assert_eq!(s.handle(Event::Tick { now: t0 }).len(), 1);
}

fn epochs(entries: &[(u32, u64)]) -> EpochEntries {
    let mut e = EpochEntries::default();
    for &(epoch, start) in entries {
        e.assign(epoch, start);
    }
    e
}

#[test]
fn divergence_follows_kip_320() {
    let leader = epochs(&[(1, 0), (2, 100), (4, 250)]);
    let (start, end) = (Offset(0), Offset(300));
    // Same epoch, within it: no divergence.
    assert_eq!(
        divergence(&leader, start, end, Some(LeaderEpoch(4)), Offset(260)),
        None
    );
    assert_eq!(divergence(&leader, start, end, None, Offset(0)), None);
    // The follower wrote epoch 2 past where it ended here.
    assert_eq!(
        divergence(&leader, start, end, Some(LeaderEpoch(2)), Offset(270)),
        Some((Some(LeaderEpoch(2)), Offset(250)))
    );
    // An epoch this leader never had: the largest below it.
    assert_eq!(
        divergence(&leader, start, end, Some(LeaderEpoch(3)), Offset(260)),
        Some((Some(LeaderEpoch(2)), Offset(250)))
    );
    // Older than everything here: start over at the log start.
    let trimmed = epochs(&[(5, 400)]);
    assert_eq!(
        divergence(
            &trimmed,
            Offset(400),
            Offset(500),
            Some(LeaderEpoch(2)),
            Offset(90)
        ),
        Some((None, Offset(400)))
    );
}

#[test]
fn an_empty_epoch_at_the_log_end_is_truncated_and_replication_resumes() {
    // Issue 8's endless loop: the follower became leader in epoch 7 at 268200 and was
    // deposed before appending; the leader (epoch 8 at 268200) says it diverged at
    // epoch 2, end 268200.
    let leader_epochs = epochs(&[(2, 217_400), (8, 268_200)]);
    let mut follower = epochs(&[(2, 217_400), (7, 268_200)]);
    let end = Offset(268_200);
    let d = divergence(&leader_epochs, Offset(0), end, Some(LeaderEpoch(7)), end)
        .expect("epoch 7 is unknown to the leader");
    assert_eq!(d, (Some(LeaderEpoch(2)), end));
    let target = truncation_target(&follower, end, d);
    assert_eq!(target, end);
    assert!(follower.truncate_from_end(target.0), "the empty epoch goes");
    let last = follower.latest().map(|e| LeaderEpoch(e.epoch));
    assert_eq!(divergence(&leader_epochs, Offset(0), end, last, end), None);
}

#[test]
fn a_replica_proposed_for_the_isr_holds_back_the_hw_until_the_next_partition_epoch() {
    // Found by the simulator (seed 213): the leader proposed adding replica 2 at HW 106,
    // kept acknowledging with ISR {1, 3} past 106, then the controller committed
    // {1, 2, 3}; with 1 gone, 2 was elected without the acknowledged records.
    let t0 = Instant::now();
    let mut s = PartitionState::new(ME, config(2));
    s.handle(Event::Role {
        role: role(ME, 1, &[ME, B3], 3),
        log_end_offset: Offset(106),
        now: t0,
    });
    fetch(&mut s, B3, 106, 106, t0);
    fetch(&mut s, B2, 106, 106, t0);
    assert_eq!(s.high_watermark(), Offset(106));
    let a = s.handle(Event::Tick { now: t0 });
    assert!(matches!(&a[..], [Action::ProposeIsr(p)] if p.new_isr == vec![ME, B2, B3]));
    // Replica 3 keeps up; replica 2 does not fetch again. The HW must wait for 2.
    append(&mut s, 110, 1, t0);
    let a = fetch(&mut s, B3, 110, 110, t0);
    assert!(
        completions(&a).is_empty(),
        "acknowledged without the joining replica: {a:?}"
    );
    assert_eq!(s.high_watermark(), Offset(106));
    // The controller commits {1, 2, 3}: the pending addition is now a real member.
    s.handle(Event::Role {
        role: role(ME, 1, &[ME, B2, B3], 4),
        log_end_offset: Offset(110),
        now: t0,
    });
    let a = fetch(&mut s, B2, 110, 110, t0);
    assert_eq!(completions(&a), vec![(1, Ok(()))]);
}

#[test]
fn pending_additions_are_retired_by_a_proposal_of_the_current_isr() {
    let t0 = Instant::now();
    let mut s = PartitionState::new(ME, config(1));
    s.handle(Event::Role {
        role: role(ME, 1, &[ME, B3], 3),
        log_end_offset: Offset(10),
        now: t0,
    });
    fetch(&mut s, B3, 10, 10, t0);
    fetch(&mut s, B2, 10, 10, t0);
    assert_eq!(s.handle(Event::Tick { now: t0 }).len(), 1);
    // Replica 2 goes silent past the lag limit; nothing else changes.
    let t1 = t0 + Duration::from_secs(11);
    fetch(&mut s, B3, 10, 10, t1);
    let a = s.handle(Event::Tick { now: t1 });
    assert_eq!(
        a,
        vec![Action::ProposeIsr(IsrProposal {
            leader_epoch: LeaderEpoch(1),
            partition_epoch: 3,
            new_isr: vec![ME, B3],
        })],
        "the current ISR again, to retire the proposal that added 2"
    );
    s.handle(Event::Role {
        role: role(ME, 1, &[ME, B3], 4),
        log_end_offset: Offset(10),
        now: t1,
    });
    let appended = append(&mut s, 12, 5, t1);
    let a = fetch(&mut s, B3, 12, 12, t1);
    assert_eq!(
        completions(&a),
        vec![(5, Ok(()))],
        "2 no longer holds the HW back; appended: {appended:?}, hw {:?}",
        s.high_watermark()
    );
}

#[test]
fn a_fresh_leader_answers_offsets_only_once_its_hw_reaches_the_epoch_start() {
    let t0 = Instant::now();
    let mut s = PartitionState::new(ME, config(1));
    s.handle(Event::Role {
        role: role(B2, 1, &[ME, B2, B3], 0),
        log_end_offset: Offset(0),
        now: t0,
    });
    s.handle(Event::Replicated {
        leader_high_watermark: Offset(5),
        log_end_offset: Offset(10),
    });
    assert!(
        s.offsets_available(),
        "a follower does not answer ListOffsets"
    );
    // The old leader exposed up to 10 perhaps; this one inherited HW 5 and starts
    // epoch 2 at 10.
    s.handle(Event::Role {
        role: role(ME, 2, &[ME, B2, B3], 1),
        log_end_offset: Offset(10),
        now: t0,
    });
    assert_eq!(s.high_watermark(), Offset(5));
    assert!(!s.offsets_available(), "HW 5 below the epoch start 10");
    fetch(&mut s, B2, 10, 10, t0);
    assert!(!s.offsets_available(), "replica 3 has not reached 10");
    fetch(&mut s, B3, 10, 10, t0);
    assert_eq!(s.high_watermark(), Offset(10));
    assert!(s.offsets_available());
}
