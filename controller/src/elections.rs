//! Leadership and replica-set changes of the cluster state machine: offline and
//! preferred elections, controlled shutdown, AlterPartition, reassignment. A child of
//! `state.rs`, so it works on [`ClusterState`]'s private fields; still sans-IO.

use super::*;

/// Elections logged one line each per round; the rest are counted in one line.
const ELECTIONS_LOGGED: usize = 20;

impl ClusterState {
    /// The record of `topic`-`partition`, or UNKNOWN_TOPIC_OR_PARTITION.
    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<&mut PartitionRecord, Rejection> {
        let t = self.snap.topics.get_mut(topic).ok_or_else(|| {
            reject(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {topic} does not exist"),
            )
        })?;
        t.partitions.get_mut(partition as usize).ok_or_else(|| {
            reject(
                ErrorCode::UnknownTopicOrPartition,
                format!("{topic} has no partition {partition}"),
            )
        })
    }

    /// Re-elects leaders of every partition whose leader is not live, or which has none
    /// and a live ISR member: the first live ISR member in replica order.
    pub(super) fn elect_offline_leaders(&mut self) -> Vec<(String, usize)> {
        // Brokers in controlled shutdown count as gone: they lose leadership and ISR places.
        let mut live = self.live.clone();
        live.retain(|b, _| !self.shutting_down.contains(b));
        let mut changed = Vec::new();
        let mut elected = 0usize;
        for (name, t) in self.snap.topics.iter_mut() {
            let unclean = t
                .configs
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v == "true");
            for (i, p) in t.partitions.iter_mut().enumerate() {
                let mut isr_changed = false;
                // A fenced broker leaves the ISR, unless it is the last member: the
                // last ISR member is remembered as the only safe future leader.
                if p.isr.len() > 1 && p.isr.iter().any(|r| !live.contains_key(r)) {
                    let kept: Vec<u32> = p
                        .isr
                        .iter()
                        .copied()
                        .filter(|r| live.contains_key(r))
                        .collect();
                    p.isr = if kept.is_empty() {
                        vec![p.isr[0]]
                    } else {
                        kept
                    };
                    p.partition_epoch += 1;
                    changed.push((name.clone(), i));
                    isr_changed = true;
                }
                if p.leader.is_some_and(|l| live.contains_key(&l)) {
                    continue;
                }
                let mut next = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| p.isr.contains(r) && live.contains_key(r));
                if next.is_none() && unclean {
                    // Unclean election: a live non-ISR replica, accepting data loss.
                    next = p.replicas.iter().copied().find(|r| live.contains_key(r));
                    if let Some(r) = next {
                        tracing::warn!(topic = %name, partition = i, leader = r, "unclean leader election");
                        p.isr = vec![r];
                    }
                }
                if next != p.leader {
                    // One line per partition only for the first few: a broker leading
                    // ten thousand partitions must not cost ten thousand lines (and
                    // seconds under the state lock) per failover.
                    if elected < ELECTIONS_LOGGED {
                        tracing::info!(topic = %name, partition = i, old_leader = ?p.leader, new_leader = ?next, leader_epoch = p.leader_epoch + 1, "leader elected");
                    }
                    elected += 1;
                    p.leader = next;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                    if !isr_changed {
                        changed.push((name.clone(), i));
                    }
                }
            }
        }
        if elected > ELECTIONS_LOGGED {
            tracing::info!(
                partitions = elected,
                logged = ELECTIONS_LOGGED,
                "leaders elected (the first ones logged above)"
            );
        }
        changed
    }

    /// Controlled shutdown: `broker` keeps running but gives up leadership and its ISR
    /// places; returns how many partitions it still leads (no other ISR member).
    pub fn controlled_shutdown(
        &mut self,
        broker: u32,
        broker_epoch: i64,
    ) -> Result<(u32, Vec<Action>), Rejection> {
        if self.broker_epoch(broker) != Some(broker_epoch) || !self.is_live(broker) {
            return Err(reject(
                ErrorCode::StaleBrokerEpoch,
                format!("broker {broker} epoch {broker_epoch} is not current"),
            ));
        }
        self.shutting_down.insert(broker);
        let changed = self.elect_offline_leaders();
        let remaining = self
            .snap
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == Some(broker))
            .count() as u32;
        tracing::info!(
            broker,
            moved = changed.len(),
            remaining,
            "controlled shutdown"
        );
        let mut actions = self.leader_and_isr_for(&changed);
        actions.push(Action::UpdateMetadataAll);
        Ok((remaining, actions))
    }

    /// A fresh producer id; persisted with the snapshot before it is returned.
    pub fn init_producer_id(&mut self) -> i64 {
        self.snap.next_producer_id += 1;
        self.snap.next_producer_id
    }

    /// Preferred-replica election: each partition (of `topic`, or all) whose first
    /// replica is live, in sync and not leading gets it back as leader.
    pub fn elect_preferred(
        &mut self,
        topic: Option<&str>,
    ) -> Result<(u32, Vec<Action>), Rejection> {
        if let Some(t) = topic.filter(|t| !self.snap.topics.contains_key(*t)) {
            return Err(reject(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {t} does not exist"),
            ));
        }
        let (outcomes, actions) =
            self.elect_preferred_where(|name, _| topic.is_none_or(|x| x == name));
        let moved = outcomes.iter().filter(|o| o.2 == ErrorCode::None).count();
        Ok((moved as u32, actions))
    }

    /// A preferred election of the partitions `wanted` selects, with each one's outcome:
    /// elected (`None`), ELECTION_NOT_NEEDED (the preferred replica leads), or
    /// PREFERRED_LEADER_NOT_AVAILABLE (it is out of the ISR, not live, or shutting down).
    pub fn elect_preferred_where(
        &mut self,
        wanted: impl Fn(&str, u32) -> bool,
    ) -> (Vec<(String, u32, ErrorCode)>, Vec<Action>) {
        let eligible = |b: u32| self.live.contains_key(&b) && !self.shutting_down.contains(&b);
        let mut changed = Vec::new();
        let mut moves = Vec::new();
        let mut outcomes = Vec::new();
        for (name, t) in &self.snap.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if !wanted(name, i as u32) {
                    continue;
                }
                let preferred = p.replicas[0];
                let outcome = if p.leader == Some(preferred) {
                    ErrorCode::ElectionNotNeeded
                } else if p.isr.contains(&preferred) && eligible(preferred) {
                    moves.push((name.clone(), i, preferred));
                    ErrorCode::None
                } else {
                    ErrorCode::PreferredLeaderNotAvailable
                };
                outcomes.push((name.clone(), i as u32, outcome));
            }
        }
        for (name, i, preferred) in moves {
            let p = &mut self.snap.topics.get_mut(&name).expect("listed").partitions[i];
            tracing::info!(topic = %name, partition = i, old_leader = ?p.leader, new_leader = preferred, "preferred leader elected");
            p.leader = Some(preferred);
            p.leader_epoch += 1;
            p.partition_epoch += 1;
            changed.push((name, i));
        }
        let mut actions = self.leader_and_isr_for(&changed);
        if !changed.is_empty() {
            actions.push(Action::UpdateMetadataAll);
        }
        (outcomes, actions)
    }

    /// A leader's ISR proposal (KIP-497): accepted only from the current leader with the
    /// current leader and partition epochs, for an ISR of live replicas that keeps the
    /// leader. Returns the committed partition state.
    #[allow(clippy::too_many_arguments)]
    pub fn alter_partition(
        &mut self,
        broker: u32,
        broker_epoch: i64,
        topic: &str,
        partition: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<u32>,
    ) -> Result<(v1::PartitionState, Vec<Action>), Rejection> {
        if self.broker_epoch(broker) != Some(broker_epoch) || !self.is_live(broker) {
            return Err(reject(
                ErrorCode::StaleBrokerEpoch,
                format!("broker {broker} epoch {broker_epoch} is not current"),
            ));
        }
        let live = self.live.clone();
        let p = self.partition_mut(topic, partition)?;
        if p.leader != Some(broker) || p.leader_epoch != leader_epoch {
            return Err(reject(ErrorCode::FencedLeaderEpoch, format!("{topic}-{partition}: broker {broker} at leader epoch {leader_epoch} is not the leader (leader {:?}, epoch {})", p.leader, p.leader_epoch)));
        }
        if p.partition_epoch != partition_epoch {
            return Err(reject(
                ErrorCode::InvalidUpdateVersion,
                format!(
                    "{topic}-{partition}: partition epoch {partition_epoch} is stale (now {})",
                    p.partition_epoch
                ),
            ));
        }
        if !new_isr.contains(&broker)
            || new_isr
                .iter()
                .any(|r| !p.replicas.contains(r) || !live.contains_key(r))
        {
            return Err(reject(ErrorCode::IneligibleReplica, format!("{topic}-{partition}: ISR {new_isr:?} must hold the leader and only live replicas")));
        }
        let mut isr = new_isr;
        isr.sort_by_key(|r| p.replicas.iter().position(|x| x == r));
        isr.dedup();
        tracing::info!(topic, partition, old_isr = ?p.isr, new_isr = ?isr, "ISR changed");
        p.isr = isr;
        p.partition_epoch += 1;
        let changed = vec![(topic.to_string(), partition as usize)];
        let state = self.partition_state(topic, &self.snap.topics[topic], partition as usize);
        let mut actions = self.leader_and_isr_for(&changed);
        actions.extend(self.complete_reassignment(topic, partition as usize));
        if topic == super::OFFSETS_TOPIC {
            // A finished move may leave it short of the brokers that joined meanwhile.
            actions.extend(self.grow_offsets_topic());
        }
        actions.push(Action::UpdateMetadataAll);
        Ok((state, actions))
    }

    /// Starts moving a partition to `replicas`: the new replicas join the replica set
    /// and catch up; once all are in the ISR, [`Self::complete_reassignment`] switches
    /// leadership if needed and drops the old ones (their files are deleted).
    pub fn reassign(
        &mut self,
        topic: &str,
        partition: u32,
        replicas: Vec<u32>,
    ) -> Result<Vec<Action>, Rejection> {
        // No replicas: cancel, which is a reassignment back to where it started.
        let replicas = if replicas.is_empty() {
            let p = self.partition_mut(topic, partition)?;
            match p.original() {
                Some(original) => original,
                None => {
                    return Err(reject(
                        ErrorCode::NoReassignmentInProgress,
                        format!("no reassignment of {topic}-{partition} is in progress"),
                    ))
                }
            }
        } else {
            replicas
        };
        let mut unique = replicas.clone();
        unique.sort_unstable();
        unique.dedup();
        if replicas.is_empty()
            || unique.len() != replicas.len()
            || replicas.iter().any(|b| !self.is_live(*b))
        {
            return Err(reject(
                ErrorCode::InvalidReplicationFactor,
                format!("replicas {replicas:?} must be distinct live brokers"),
            ));
        }
        let p = self.partition_mut(topic, partition)?;
        if p.replicas == replicas {
            return Ok(Vec::new());
        }
        let original = p.original().unwrap_or_else(|| p.replicas.clone());
        let mut all = replicas.clone();
        all.extend(p.replicas.iter().copied().filter(|r| !replicas.contains(r)));
        tracing::info!(topic, partition, old = ?p.replicas, target = ?replicas, "reassignment started");
        p.replicas = all;
        p.origin = original;
        p.target = Some(replicas);
        p.partition_epoch += 1;
        let changed = vec![(topic.to_string(), partition as usize)];
        let mut actions = self.leader_and_isr_for(&changed);
        actions.extend(self.complete_reassignment(topic, partition as usize));
        actions.push(Action::UpdateMetadataAll);
        Ok(actions)
    }

    /// Finishes a reassignment whose target replicas are all in sync.
    pub(super) fn complete_reassignment(&mut self, topic: &str, index: usize) -> Vec<Action> {
        let live = self.live.clone();
        let Some(p) = self
            .snap
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(index))
        else {
            return Vec::new();
        };
        let Some(target) = p.target.clone() else {
            return Vec::new();
        };
        if !target.iter().all(|r| p.isr.contains(r)) {
            return Vec::new();
        }
        let removed: Vec<u32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        p.isr = target
            .iter()
            .copied()
            .filter(|r| p.isr.contains(r))
            .collect();
        if p.leader.is_none_or(|l| !target.contains(&l)) {
            p.leader = target.iter().copied().find(|r| live.contains_key(r));
            p.leader_epoch += 1;
        }
        p.replicas = target;
        p.target = None;
        p.origin.clear();
        p.partition_epoch += 1;
        tracing::info!(topic, partition = index, replicas = ?p.replicas, leader = ?p.leader, "reassignment completed");
        let mut actions = self.leader_and_isr_for(&[(topic.to_string(), index)]);
        for broker in removed {
            actions.push(Action::StopReplica {
                broker,
                partitions: vec![(topic.to_string(), index as u32)],
            });
        }
        actions
    }
}
