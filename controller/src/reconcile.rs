//! Reconciliation, sans-IO: every heartbeat carries digests of what the broker holds
//! (its partition roles, its metadata view; `sluice_proto::digest`), compared with what
//! the controller decided. A difference that outlasts [`RECONCILE_AFTER`] — longer than
//! a push takes to arrive — means a push was lost (given up after its retries, dropped
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
    /// that bring the broker back in line once it has differed for [`RECONCILE_AFTER`].
    /// Call after a successful [`ClusterState::heartbeat`].
    pub fn reconcile(&mut self, broker: u32, reported: Reported, now: Instant) -> Vec<Action> {
        let roles_differ = reported.roles_digest != self.expected_roles_digest(broker);
        let metadata_differs = reported
            .metadata_digest
            .is_some_and(|d| d != digest::metadata_digest(&self.metadata(&[])));
        if !metadata_differs {
            self.resent.remove(&broker);
        }
        if !roles_differ && !metadata_differs {
            self.differs_since.remove(&broker);
            return Vec::new();
        }
        let since = *self.differs_since.entry(broker).or_insert(now);
        if now.duration_since(since) < RECONCILE_AFTER {
            return Vec::new();
        }
        self.differs_since.insert(broker, now);
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

    /// Whether `broker`'s reports currently differ (for metrics and tests).
    pub fn differs(&self, broker: u32) -> bool {
        self.differs_since.contains_key(&broker)
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
        self.differs_since
            .keys()
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
}
