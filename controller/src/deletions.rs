//! Pending deletions, sans-IO: a deleted topic leaves the metadata at once (its name can
//! be created again: the new topic has a new id, and brokers key their logs by id), but
//! the controller remembers, per topic id, which replicas have not yet shown that their
//! copy is gone — Kafka's "deletion in progress", kept until every replica, one that was
//! down included, has confirmed. A broker confirms through its heartbeat: roles and
//! metadata digests equal to the controller's (it holds no role of a deleted partition:
//! the StopReplica, or a reconciliation's full state, stopped and deleted it) and
//! `strays_deleted` (it deleted the on-disk logs of topics deleted while it was away,
//! with the first metadata after registering). The gauge
//! `sluice_controller_pending_deletions` counts topics not yet gone everywhere.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sluice_proto::digest;

use super::reconcile::Reported;
use super::{ClusterState, TopicRecord};

/// A deleted topic some replicas still have to confirm gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDeletion {
    pub topic: String,
    /// Brokers that held a replica and have not confirmed its deletion.
    pub brokers: BTreeSet<u32>,
}

impl ClusterState {
    /// Records the deletion of `t` (called by `delete_topic`).
    pub(super) fn record_deletion(&mut self, name: &str, t: &TopicRecord) {
        let brokers: BTreeSet<u32> = t
            .partitions
            .iter()
            .flat_map(|p| p.replicas.iter().copied())
            .collect();
        if !brokers.is_empty() {
            self.snap.deleting.insert(
                t.id.clone(),
                PendingDeletion {
                    topic: name.to_string(),
                    brokers,
                },
            );
        }
    }

    /// Whether `broker` has deletions to confirm (cheap: checked on every heartbeat).
    pub fn awaits_deletions_from(&self, broker: u32) -> bool {
        self.snap
            .deleting
            .values()
            .any(|d| d.brokers.contains(&broker))
    }

    /// Closes `broker`'s part of every pending deletion if its heartbeat proves it holds
    /// nothing of a deleted topic (module doc). Returns whether the snapshot changed
    /// (the caller stores it).
    pub fn confirm_deletions(
        &mut self,
        broker: u32,
        reported: Reported,
        strays_deleted: bool,
    ) -> bool {
        if !strays_deleted || !self.awaits_deletions_from(broker) {
            return false;
        }
        let in_step = reported.roles_digest == self.expected_roles_digest(broker)
            && reported
                .metadata_digest
                .is_some_and(|d| d == digest::metadata_digest(&self.metadata(&[])));
        if !in_step {
            return false;
        }
        self.snap.deleting.retain(|id, d| {
            d.brokers.remove(&broker);
            if d.brokers.is_empty() {
                tracing::info!(
                    topic = d.topic,
                    topic_id = id,
                    "topic deleted from every replica"
                );
            }
            !d.brokers.is_empty()
        });
        true
    }

    /// Deleted topics some replica has not confirmed gone.
    pub fn pending_deletions(&self) -> usize {
        self.snap.deleting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::state::Snapshot;

    fn report(s: &ClusterState, broker: u32) -> Reported {
        Reported {
            roles_digest: s.expected_roles_digest(broker),
            metadata_digest: Some(digest::metadata_digest(&s.metadata(&[]))),
        }
    }

    #[test]
    fn a_deletion_stays_pending_until_every_replica_confirms_one_that_was_down_included() {
        let now = Instant::now();
        let mut s = ClusterState::new(Snapshot::default(), now, Duration::from_secs(2), 100, 1);
        for b in 1..=3 {
            s.register(b, format!("b{b}"), None, 1, now);
        }
        s.create_topic("t", 3, 2, BTreeMap::new(), "old".into())
            .unwrap();
        let stale = report(&s, 1);
        s.delete_topic("t").unwrap();
        assert_eq!(s.pending_deletions(), 1);
        // The name is free at once: a new topic, a new id.
        s.create_topic("t", 1, 1, BTreeMap::new(), "new".into())
            .unwrap();
        assert_eq!(s.pending_deletions(), 1);

        // A broker still reporting the old roles has not deleted anything.
        assert!(!s.confirm_deletions(1, stale, true));
        // Nor one whose stray check has not run (or failed).
        assert!(!s.confirm_deletions(1, report(&s, 1), false));
        // Nor one on old metadata.
        let old_metadata = Reported {
            metadata_digest: Some(0),
            ..report(&s, 1)
        };
        assert!(!s.confirm_deletions(1, old_metadata, true));
        // Brokers 1 and 2 confirm; broker 3, down, keeps it pending.
        assert!(s.confirm_deletions(1, report(&s, 1), true));
        assert!(s.confirm_deletions(2, report(&s, 2), true));
        assert_eq!(s.snap.deleting["old"].brokers, BTreeSet::from([3]));
        assert!(
            !s.confirm_deletions(1, report(&s, 1), true),
            "nothing left for 1"
        );
        assert!(s.confirm_deletions(3, report(&s, 3), true));
        assert_eq!(s.pending_deletions(), 0);
        assert!(!s.awaits_deletions_from(3));
    }
}
