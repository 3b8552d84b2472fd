//! `__consumer_offsets` keeps up with the cluster: a coordinator creates it with the
//! replication factor the live brokers allowed at that moment — one, when the first
//! group arrived while only one broker was up — and Kafka leaves it there for good.
//! Here, whenever a broker registers, every partition of the topic short of
//! [`OFFSETS_REPLICATION_TARGET`] replicas (or of the live broker count, if smaller) is
//! reassigned to add live brokers, the least loaded first; the reassignment machinery
//! (`elections.rs`) copies the data and switches only once the new replicas are in sync.

use std::collections::BTreeMap;

use super::{Action, ClusterState};

/// The internal topic holding group commits (`OFFSETS_TOPIC` in the broker).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `offsets.topic.replication.factor` default.
pub const OFFSETS_REPLICATION_TARGET: usize = 3;

impl ClusterState {
    /// Reassignments that raise the offsets topic's replication factor towards
    /// [`OFFSETS_REPLICATION_TARGET`] with the brokers live now. Partitions already
    /// moving are left alone (the next registration looks again).
    pub fn grow_offsets_topic(&mut self) -> Vec<Action> {
        let live = self.live_brokers();
        let want = OFFSETS_REPLICATION_TARGET.min(live.len());
        let Some(t) = self.snap.topics.get(OFFSETS_TOPIC) else {
            return Vec::new();
        };
        // Replicas per live broker over the whole topic, so additions spread evenly.
        let mut load: BTreeMap<u32, usize> = live.iter().map(|&b| (b, 0)).collect();
        for p in &t.partitions {
            for r in &p.replicas {
                if let Some(n) = load.get_mut(r) {
                    *n += 1;
                }
            }
        }
        let mut plans: Vec<(u32, Vec<u32>)> = Vec::new();
        for (i, p) in t.partitions.iter().enumerate() {
            if p.target.is_some() || p.replicas.len() >= want {
                continue;
            }
            let mut replicas = p.replicas.clone();
            while replicas.len() < want {
                let Some((&b, _)) = load
                    .iter()
                    .filter(|(b, _)| !replicas.contains(b))
                    .min_by_key(|(b, n)| (**n, **b))
                else {
                    break;
                };
                *load.get_mut(&b).expect("live") += 1;
                replicas.push(b);
            }
            if replicas.len() > p.replicas.len() {
                plans.push((i as u32, replicas));
            }
        }
        let mut actions = Vec::new();
        for (partition, replicas) in plans {
            match self.reassign(OFFSETS_TOPIC, partition, replicas) {
                Ok(a) => actions.extend(
                    a.into_iter()
                        .filter(|a| !matches!(a, Action::UpdateMetadataAll)),
                ),
                Err((code, message)) => tracing::warn!(
                    partition,
                    %code,
                    message,
                    "could not raise the replication factor of {OFFSETS_TOPIC}"
                ),
            }
        }
        if !actions.is_empty() {
            actions.push(Action::UpdateMetadataAll);
            tracing::info!(
                replication_factor = want,
                "raising the replication factor of {OFFSETS_TOPIC} as brokers joined"
            );
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::state::Snapshot;

    fn targets(s: &ClusterState) -> Vec<Option<Vec<u32>>> {
        s.snap.topics[OFFSETS_TOPIC]
            .partitions
            .iter()
            .map(|p| p.target.clone())
            .collect()
    }

    /// Marks every new replica of a moving partition in sync, as the leader would.
    fn catch_up(s: &mut ClusterState) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..s.snap.topics[OFFSETS_TOPIC].partitions.len() {
            let p = s.snap.topics[OFFSETS_TOPIC].partitions[i].clone();
            let Some(leader) = p.leader else { continue };
            if p.target.is_none() {
                continue;
            }
            let epoch = s.broker_epoch(leader).unwrap();
            let (_, a) = s
                .alter_partition(
                    leader,
                    epoch,
                    OFFSETS_TOPIC,
                    i as u32,
                    p.leader_epoch,
                    p.partition_epoch,
                    p.replicas.clone(),
                )
                .unwrap();
            actions.extend(a);
        }
        actions
    }

    #[test]
    fn an_offsets_topic_created_on_one_broker_grows_to_three_replicas_as_brokers_join() {
        let now = Instant::now();
        let mut s = ClusterState::new(Snapshot::default(), now, Duration::from_secs(2), 100, 1);
        s.register(1, "b1".into(), None, 1, now);
        s.create_topic(
            OFFSETS_TOPIC,
            6,
            1,
            BTreeMap::new(),
            "id".into(),
            Vec::new(),
        )
        .unwrap();
        assert!(
            s.grow_offsets_topic().is_empty(),
            "one live broker: RF 1 is all there is"
        );

        // Broker 2 joins: every partition starts moving to two replicas, keeping broker 1.
        let (_, actions) = s.register(2, "b2".into(), None, 1, now);
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::LeaderAndIsr { broker: 2, .. })));
        assert!(targets(&s)
            .iter()
            .all(|t| t.as_deref() == Some(&[1, 2][..])));

        // Broker 3 joins while those moves run: they are left alone...
        s.register(3, "b3".into(), None, 1, now);
        assert!(targets(&s)
            .iter()
            .all(|t| t.as_deref() == Some(&[1, 2][..])));
        // ...and once each finishes, it starts the next one towards three.
        catch_up(&mut s);
        assert!(targets(&s)
            .iter()
            .all(|t| t.as_ref().is_some_and(|t| t.len() == 3)));
        catch_up(&mut s);
        for p in &s.snap.topics[OFFSETS_TOPIC].partitions {
            assert_eq!(p.target, None);
            let mut r = p.replicas.clone();
            r.sort_unstable();
            assert_eq!(r, vec![1, 2, 3]);
            assert_eq!(
                p.leader,
                Some(1),
                "the data's holder keeps leading while it moves"
            );
        }
        assert!(
            s.grow_offsets_topic().is_empty(),
            "at the target: nothing more to do"
        );

        // Other topics are never touched.
        s.create_topic("app", 2, 1, BTreeMap::new(), "id2".into(), Vec::new())
            .unwrap();
        s.register(4, "b4".into(), None, 1, now);
        assert!(s.snap.topics["app"]
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 1));
    }
}
