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
    /// nothing of a deleted topic (module doc). Call right after
    /// [`ClusterState::reconcile`] with the same heartbeat's report (digests included):
    /// whether they matched is what reconcile recorded, so nothing is computed twice.
    /// Returns whether the snapshot changed (the caller stores it).
    pub fn confirm_deletions(&mut self, broker: u32, strays_deleted: bool) -> bool {
        if !strays_deleted || self.differs(broker) || !self.awaits_deletions_from(broker) {
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
    use crate::state::reconcile::Reported;
    use crate::state::Snapshot;
    use sluice_proto::digest;

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
        s.create_topic("t", 3, 2, BTreeMap::new(), "old".into(), Vec::new())
            .unwrap();
        let stale = report(&s, 1);
        // The controller saw that state at a heartbeat: a later report of it is a
        // state replaced moments ago (reconcile waits before re-sending it), but still
        // not a broker that deleted anything.
        assert!(s.reconcile(1, stale, now).is_empty());
        s.delete_topic("t").unwrap();
        assert_eq!(s.pending_deletions(), 1);
        // The name is free at once: a new topic, a new id.
        s.create_topic("t", 1, 1, BTreeMap::new(), "new".into(), Vec::new())
            .unwrap();
        assert_eq!(s.pending_deletions(), 1);

        // A heartbeat as the service handles it: reconcile, then confirm.
        let beat = |s: &mut ClusterState, b: u32, r: Reported, strays: bool| {
            s.reconcile(b, r, now);
            s.confirm_deletions(b, strays)
        };
        // A broker still reporting the old roles has not deleted anything.
        assert!(!beat(&mut s, 1, stale, true));
        // Nor one whose stray check has not run (or failed).
        let r1 = report(&s, 1);
        assert!(!beat(&mut s, 1, r1, false));
        // Nor one on old metadata.
        let old_metadata = Reported {
            metadata_digest: Some(0),
            ..r1
        };
        assert!(!beat(&mut s, 1, old_metadata, true));
        // Brokers 1 and 2 confirm; broker 3, down, keeps it pending.
        let (r2, r3) = (report(&s, 2), report(&s, 3));
        assert!(beat(&mut s, 1, r1, true));
        assert!(beat(&mut s, 2, r2, true));
        assert_eq!(s.snap.deleting["old"].brokers, BTreeSet::from([3]));
        assert!(!beat(&mut s, 1, r1, true), "nothing left for 1");
        assert!(beat(&mut s, 3, r3, true));
        assert_eq!(s.pending_deletions(), 0);
        assert!(!s.awaits_deletions_from(3));
    }
}
