//! Reconciliation, sans-IO: every heartbeat carries digests of what the broker holds
//! (its partition roles, its metadata view; `sluice_proto::digest`), compared with what
//! the controller decided. A broker behind the controller's state for longer than
//! [`RECONCILE_AFTER`] — longer than a push takes to arrive, counted from when the state
//! it reports was replaced — means a push was lost (given up after its retries, dropped
//! from a full queue, refused): the controller re-sends the broker's whole state, a
//! full-state LeaderAndIsr (the broker drops replicas not listed) and its metadata, and
//! waits another interval before sending again. So a live broker converges to the
//! current roles within about one interval after the network lets pushes through, even
//! though it never registers again.

use std::time::{Duration, Instant};

use sluice_proto::digest;

use super::{Action, ClusterState};

/// How long a broker's reported state may differ from the controller's before the
/// controller re-sends it (and between two re-sends while it still differs).
pub const RECONCILE_AFTER: Duration = Duration::from_secs(2);

/// What a broker's heartbeat says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub roles_digest: u64,
    /// `None`: not reported (the simulator's brokers keep no metadata view).
    pub metadata_digest: Option<u64>,
}

/// How far a reported digest is behind the controller's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lag {
    /// The current state's.
    InStep,
    /// A state the controller had until this instant.
    Since(Instant),
    /// Not a state the controller remembers.
    Unknown,
}

/// Digests superseded more than this long ago are forgotten (a report of one is then
/// `Lag::Unknown`, behind since it is first seen).
const REMEMBER_FOR: Duration = Duration::from_secs(8);
/// And at most this many (a controller creating topics by the thousand a second).
const REMEMBER_AT_MOST: usize = 4096;

/// One digest of the controller's state over time: the current one and those it
/// replaced lately, each with when `reconcile` first saw it replaced (a heartbeat after
/// the change, so a lag is measured from at most one heartbeat interval late).
#[derive(Debug, Clone, Default)]
pub(super) struct DigestHistory {
    current: Option<u64>,
    superseded: std::collections::VecDeque<(u64, Instant)>,
}

impl DigestHistory {
    /// Records the state's digest at `now`.
    pub(super) fn observe(&mut self, digest: u64, now: Instant) {
        if let Some(old) = self.current.filter(|&c| c != digest) {
            self.superseded.push_back((old, now));
        }
        self.current = Some(digest);
        while self.superseded.len() > REMEMBER_AT_MOST
            || self
                .superseded
                .front()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) > REMEMBER_FOR)
        {
            self.superseded.pop_front();
        }
    }

    /// How far behind a report of `digest` is. A digest the state had more than once
    /// counts from its latest replacement.
    pub(super) fn lag(&self, digest: u64) -> Lag {
        if self.current == Some(digest) {
            return Lag::InStep;
        }
        match self.superseded.iter().rev().find(|(d, _)| *d == digest) {
            Some(&(_, at)) => Lag::Since(at),
            None => Lag::Unknown,
        }
    }
}

impl ClusterState {
    /// The digest of the roles `broker` should hold: every partition it replicates.
    pub fn expected_roles_digest(&self, broker: u32) -> u64 {
        digest::roles_digest(self.snap.topics.iter().flat_map(|(name, t)| {
            t.partitions
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.replicas.contains(&broker))
                .map(move |(i, p)| {
                    digest::role_hash(
                        name,
                        &t.id,
                        i as u32,
                        p.leader.map_or(-1, |l| l as i32),
                        p.leader_epoch,
                        p.partition_epoch,
                    )
                })
        }))
    }

    /// Compares a heartbeat's report with the controller's state; returns the pushes
    /// that bring the broker back in line once it has been behind for
    /// [`RECONCILE_AFTER`]. Call after a successful [`ClusterState::heartbeat`].
    ///
    /// Behind since when: a report of a state this controller had lately (the digest
    /// of a superseded state) is behind since that state was superseded — so a broker
    /// whose pushes arrive while topics are created and deleted all the time, and
    /// whose every heartbeat reports a state one change old, is never taken for one
    /// that missed them; a digest the controller does not remember is behind since the
    /// first report of one.
    pub fn reconcile(&mut self, broker: u32, reported: Reported, now: Instant) -> Vec<Action> {
        let expected_roles = self.expected_roles_digest(broker);
        let metadata = digest::metadata_digest(&self.metadata(&[]));
        self.recent_metadata.observe(metadata, now);
        let roles = self.recent_roles.entry(broker).or_default();
        roles.observe(expected_roles, now);
        let roles_lag = roles.lag(reported.roles_digest);
        let metadata_lag = reported
            .metadata_digest
            .map_or(Lag::InStep, |d| self.recent_metadata.lag(d));
        if roles_lag == Lag::InStep && metadata_lag == Lag::InStep {
            self.differs_since.remove(&broker);
            self.out_of_step.remove(&broker);
            self.resent.remove(&broker);
            self.resent_at.remove(&broker);
            return Vec::new();
        }
        self.out_of_step.insert(broker);
        if roles_lag != Lag::Unknown && metadata_lag != Lag::Unknown {
            self.differs_since.remove(&broker);
        }
        let first_unknown = match (roles_lag, metadata_lag) {
            (Lag::Unknown, _) | (_, Lag::Unknown) => {
                Some(*self.differs_since.entry(broker).or_insert(now))
            }
            _ => None,
        };
        let behind = |lag: Lag| {
            let since = match lag {
                Lag::InStep => return false,
                Lag::Since(at) => at,
                Lag::Unknown => first_unknown.expect("set for an unknown digest"),
            };
            now.saturating_duration_since(since) >= RECONCILE_AFTER
        };
        let (roles_differ, metadata_differs) = (behind(roles_lag), behind(metadata_lag));
        // Within a push of the current state (a state it reports that was replaced less
        // than an interval ago): what it answers clients with is at most a change
        // behind, as every broker's is — under churn a broker re-sent its state rarely
        // reports the current one exactly. Not for a digest the controller does not
        // remember: that may be the stale state itself, forgotten.
        let metadata_recent = match metadata_lag {
            Lag::InStep => true,
            Lag::Since(at) => now.saturating_duration_since(at) < RECONCILE_AFTER,
            Lag::Unknown => false,
        };
        if metadata_recent {
            self.resent.remove(&broker);
        }
        if !roles_differ && !metadata_differs {
            return Vec::new();
        }
        if self
            .resent_at
            .get(&broker)
            .is_some_and(|at| now.saturating_duration_since(*at) < RECONCILE_AFTER)
        {
            return Vec::new();
        }
        self.resent_at.insert(broker, now);
        if metadata_differs {
            self.resent.insert(broker);
        }
        let mut actions = Vec::new();
        if roles_differ {
            let partitions = self
                .partitions_of(broker)
                .iter()
                .map(|(topic, i)| self.partition_state(topic, &self.snap.topics[topic], *i))
                .collect();
            actions.push(Action::FullState { broker, partitions });
        }
        // A broker's roles come with metadata too: it answers clients' metadata requests.
        actions.push(Action::UpdateMetadata { broker });
        actions
    }

    /// Whether `broker`'s last report was other than the controller's current state,
    /// even by a change still on its way (deletions wait for a report that is not;
    /// metrics, tests).
    pub fn differs(&self, broker: u32) -> bool {
        self.out_of_step.contains(&broker)
    }

    /// Whether `broker` has missed metadata pushes: its reported metadata differed long
    /// enough for a re-send, and has not matched since. The heartbeat answer says so,
    /// and the broker refuses Metadata requests (its view may name a deleted topic)
    /// until a push reaches it. Roles are left out: a role that fails to apply (a full
    /// disk) keeps the roles digest apart for good, and produce and fetch are guarded by
    /// topic ids and leader epochs anyway.
    pub fn missed_pushes(&self, broker: u32) -> bool {
        self.resent.contains(&broker)
    }

    /// Live brokers whose last report differed from the controller's state.
    pub fn brokers_out_of_sync(&self) -> usize {
        self.out_of_step
            .iter()
            .filter(|b| self.is_live(**b))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Snapshot;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_broker_reporting_stale_roles_gets_its_full_state_after_the_interval_and_not_before() {
        let now = Instant::now();
        let mut s = ClusterState::new(Snapshot::default(), now, ms(2000), 100, 1);
        for b in 1..=3 {
            s.register(b, format!("b{b}"), None, b as u64, now);
        }
        s.create_topic("t", 2, 3, Default::default(), "id-t".into(), Vec::new())
            .unwrap();
        let meta = digest::metadata_digest(&s.metadata(&[]));
        let good = Reported {
            roles_digest: s.expected_roles_digest(3),
            metadata_digest: Some(meta),
        };
        assert!(
            s.reconcile(3, good, now).is_empty(),
            "in line: nothing to send"
        );
        let stale = Reported {
            roles_digest: good.roles_digest ^ 1,
            ..good
        };
        assert!(
            s.reconcile(3, stale, now).is_empty(),
            "a push may be on its way"
        );
        assert!(s.reconcile(3, stale, now + ms(1900)).is_empty());
        let actions = s.reconcile(3, stale, now + ms(2000));
        match &actions[..] {
            [Action::FullState {
                broker: 3,
                partitions,
            }, Action::UpdateMetadata { broker: 3 }] => {
                assert_eq!(partitions.len(), 2, "every partition broker 3 replicates");
            }
            other => panic!("unexpected actions {other:?}"),
        }
        assert!(
            s.reconcile(3, stale, now + ms(3000)).is_empty(),
            "one re-send per interval"
        );
        assert!(
            !s.missed_pushes(3),
            "roles alone never make a broker refuse metadata"
        );
        assert_eq!(s.reconcile(3, stale, now + ms(4000)).len(), 2);
        assert!(s.reconcile(3, good, now + ms(4100)).is_empty());
        assert!(!s.differs(3));
        // Metadata alone: only metadata is re-sent.
        let old_meta = Reported {
            metadata_digest: Some(meta ^ 1),
            ..good
        };
        s.reconcile(3, old_meta, now + ms(8000));
        assert!(!s.missed_pushes(3), "not before a re-send was needed");
        assert_eq!(
            s.reconcile(3, old_meta, now + ms(10000)),
            vec![Action::UpdateMetadata { broker: 3 }]
        );
        assert!(
            s.missed_pushes(3),
            "stale metadata, re-sent: told until it matches"
        );
        assert!(!s.missed_pushes(2));
        s.reconcile(3, old_meta, now + ms(11000));
        assert!(s.missed_pushes(3));
        s.reconcile(3, good, now + ms(11100));
        assert!(!s.missed_pushes(3), "in step again");
    }

    /// Topics created every 200 ms for 10 s while broker 3's pushes arrive 300 ms late:
    /// every heartbeat (each 250 ms) may report the state before the latest change. That
    /// broker is never re-sent anything nor told it missed pushes; one stuck at a state
    /// is, 2 s after that state was replaced, though topics keep changing, and is no
    /// longer once its pushes arrive again, though it never reports the current state.
    #[test]
    fn a_broker_one_change_behind_under_churn_is_not_taken_for_one_that_missed_pushes() {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Snapshot::default(), t0, ms(60_000), 100, 1);
        for b in 1..=3 {
            s.register(b, format!("b{b}"), None, b as u64, t0);
        }
        let report = |s: &ClusterState, b: u32| Reported {
            roles_digest: s.expected_roles_digest(b),
            metadata_digest: Some(digest::metadata_digest(&s.metadata(&[]))),
        };
        // (when a change happens, the state each broker holds after it arrives)
        let mut changes: Vec<(Duration, Reported, Reported)> = Vec::new();
        let mut stuck: Option<(Duration, Reported)> = None;
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(10) {
            t += ms(50);
            if t.as_millis().is_multiple_of(200) {
                let (before3, before2) = (report(&s, 3), report(&s, 2));
                let n = t.as_millis();
                s.create_topic(
                    &format!("t{n}"),
                    1,
                    3,
                    Default::default(),
                    format!("id{n}"),
                    Vec::new(),
                )
                .unwrap();
                changes.push((t, before3, before2));
                if stuck.is_none() && t >= Duration::from_secs(4) {
                    stuck = Some((t, before2));
                }
            }
            if t.as_millis().is_multiple_of(250) {
                // Broker 3 holds the state as of 300 ms ago.
                let seen = changes
                    .iter()
                    .find(|(at, _, _)| *at + ms(300) > t)
                    .map_or_else(|| report(&s, 3), |(_, before, _)| *before);
                let actions = s.reconcile(3, seen, t0 + t);
                assert!(actions.is_empty(), "at {t:?}: {actions:?}");
                assert!(!s.missed_pushes(3), "at {t:?}");
                // Broker 2 stops receiving pushes from 4 s on, and gets them again
                // (as late as broker 3's) from 8 s on.
                let resumed = t >= Duration::from_secs(8);
                let two = match stuck {
                    _ if resumed => changes
                        .iter()
                        .find(|(at, _, _)| *at + ms(300) > t)
                        .map_or_else(|| report(&s, 2), |(_, _, before)| *before),
                    Some((_, r)) => r,
                    None => report(&s, 2),
                };
                s.reconcile(2, two, t0 + t);
                match stuck {
                    _ if resumed => {
                        assert!(!s.missed_pushes(2), "at {t:?}: broker 2 in step again")
                    }
                    Some((from, _)) if t >= from + ms(2250) => {
                        assert!(
                            s.missed_pushes(2),
                            "at {t:?}: broker 2 is stuck since {from:?}"
                        )
                    }
                    _ if t < Duration::from_secs(4) => assert!(!s.missed_pushes(2), "at {t:?}"),
                    _ => {}
                }
            }
        }
        assert!(!s.missed_pushes(2));
    }
}
