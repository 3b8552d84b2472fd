//! The brokers' side of the simulation: what `ReplicaManager`, the fetcher and the
//! control service do with a LeaderAndIsr, a follower fetch, a fetched answer and a
//! produce, performed against the in-memory log and the real `PartitionState`.

use std::time::Duration;

use sluice_broker::replica::state::{
    self, Action, Event, NewWaiter, PartitionState, Refusal, Role, StateConfig, WaiterId,
};
use sluice_proto::{v1, BrokerId, ErrorCode, LeaderEpoch, Offset};

use super::*;

impl World {
    // ---- brokers --------------------------------------------------------------------

    pub(super) fn broker_receive(
        &mut self,
        i: usize,
        from: Addr,
        msg: Msg,
    ) -> Result<(), Violation> {
        match msg {
            Msg::Registered { incarnation, epoch } if incarnation == self.nodes[i].incarnation => {
                self.nodes[i].broker_epoch = Some(epoch);
            }
            Msg::HeartbeatRefused => self.nodes[i].broker_epoch = None,
            Msg::LeaderAndIsr {
                controller_epoch,
                broker_epoch,
                state,
            } => self.leader_and_isr(i, controller_epoch, broker_epoch, state)?,
            Msg::Fetch {
                req,
                fetch_offset,
                current_epoch,
                last_fetched_epoch,
            } => {
                let answer =
                    self.answer_fetch(i, from, fetch_offset, current_epoch, last_fetched_epoch)?;
                self.send(Addr::Broker(i), from, Msg::FetchAnswer { req, answer });
            }
            Msg::FetchAnswer { req, answer } => self.apply_fetch(i, req, answer)?,
            Msg::Produce { req, id } => self.produce(i, req, id)?,
            _ => {}
        }
        Ok(())
    }

    pub(super) fn leader_and_isr(
        &mut self,
        i: usize,
        controller_epoch: i64,
        broker_epoch: i64,
        ps: v1::PartitionState,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        if controller_epoch < n.controller_epoch || broker_epoch < n.broker_epoch.unwrap_or(-1) {
            return Ok(());
        }
        n.controller_epoch = controller_epoch;
        let Some(leader_epoch) = LeaderEpoch::from_wire(ps.leader_epoch) else {
            return Ok(());
        };
        let role = Role {
            leader: (ps.leader >= 0).then_some(BrokerId(ps.leader as u32)),
            leader_epoch,
            replicas: ps.replicas.iter().copied().map(BrokerId).collect(),
            isr: ps.isr.iter().copied().map(BrokerId).collect(),
            partition_epoch: ps.partition_epoch,
        };
        if !role.replicas.contains(&n.id) {
            return Ok(());
        }
        let config = self.state_config();
        let n = &mut self.nodes[i];
        let (me, leo) = (n.id, n.leo());
        let part = n
            .part
            .get_or_insert_with(|| PartitionState::new(me, config));
        let was_leader = part.is_leader();
        let old_epoch = part.role().leader_epoch;
        let event = Event::Role {
            role,
            log_end_offset: leo,
            now: self.base + Duration::from_millis(self.now_ms),
        };
        let actions = part.handle(event);
        let (leads, epoch) = (part.is_leader(), part.role().leader_epoch);
        if leads != was_leader || epoch != old_epoch {
            self.trace(|| format!("b{} role: leader={leads} epoch={epoch}", i + 1));
        }
        if leads {
            let me = BrokerId(i as u32 + 1);
            self.checker.on_leader(epoch, me)?;
            if !was_leader || epoch != old_epoch {
                self.checker
                    .leader_complete(me, epoch, &self.nodes[i].log)?;
            }
        }
        self.node_actions(i, actions)
    }

    pub(super) fn state_config(&self) -> StateConfig {
        StateConfig {
            min_insync_replicas: self.cfg.min_insync_replicas,
            replica_lag_max: Duration::from_millis(self.cfg.replica_lag_max_ms),
            isr_proposal_interval: Duration::from_millis(1000),
        }
    }

    pub(super) fn node_actions(&mut self, i: usize, actions: Vec<Action>) -> Result<(), Violation> {
        for a in actions {
            match a {
                Action::AssignLeaderEpoch { epoch, .. } => {
                    let n = &mut self.nodes[i];
                    let end = n.log.len() as u64;
                    n.epochs.assign(epoch.0, end);
                }
                Action::PublishHighWatermark(hw) => {
                    let n = &self.nodes[i];
                    if hw > n.leo() {
                        return Err(format!(
                            "b{} published HW {hw} above its log end {}",
                            n.id,
                            n.leo()
                        ));
                    }
                    if let Some(p) = n.part.as_ref().filter(|p| p.is_leader()) {
                        let epoch = p.role().leader_epoch;
                        self.checker.on_leader_hw(n.id, epoch, hw)?;
                    }
                }
                Action::Complete { waiter, result } => {
                    let Some((req, offset, id)) = self.nodes[i].waiters.remove(&waiter) else {
                        continue;
                    };
                    let epoch = self.nodes[i]
                        .part
                        .as_ref()
                        .map_or(LeaderEpoch(0), |p| p.role().leader_epoch);
                    if result.is_ok() {
                        let holders = self
                            .nodes
                            .iter()
                            .filter(|n| n.log.get(offset as usize).map(|e| e.id) == Some(id))
                            .count();
                        self.checker.on_ack(
                            offset,
                            id,
                            epoch,
                            holders,
                            self.cfg.min_insync_replicas,
                        )?;
                        self.trace(|| {
                            format!(
                                "b{} acks record {id} at {offset} ({holders} holders)",
                                i + 1
                            )
                        });
                    }
                    let result = result.map(|()| offset);
                    self.send(Addr::Broker(i), Addr::Client, Msg::Produced { req, result });
                }
                Action::ProposeIsr(proposal) => {
                    if let Some(broker_epoch) = self.nodes[i].broker_epoch {
                        let msg = Msg::AlterPartition {
                            broker_epoch,
                            proposal,
                        };
                        self.send(Addr::Broker(i), Addr::Controller, msg);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn node_tick(&mut self, i: usize) -> Result<(), Violation> {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.ticks += 1;
        let every_half_second = n.ticks.is_multiple_of(5);
        match n.broker_epoch {
            None if every_half_second || n.ticks == 1 => {
                let incarnation = n.incarnation;
                self.send(
                    Addr::Broker(i),
                    Addr::Controller,
                    Msg::Register { incarnation },
                );
            }
            Some(epoch) if every_half_second => {
                let roles_digest = digest::roles_digest(n.part.as_ref().map(|p| {
                    let role = p.role();
                    digest::role_hash(
                        TOPIC,
                        TOPIC_ID,
                        0,
                        role.leader.map_or(-1, |l| l.0 as i32),
                        role.leader_epoch.to_wire(),
                        role.partition_epoch,
                    )
                }));
                self.send(
                    Addr::Broker(i),
                    Addr::Controller,
                    Msg::Heartbeat {
                        epoch,
                        roles_digest,
                    },
                );
            }
            _ => {}
        }
        let n = &mut self.nodes[i];
        if let Some(part) = n.part.as_mut() {
            let actions = part.handle(Event::Tick { now });
            self.node_actions(i, actions)?;
        }
        let n = &self.nodes[i];
        let stale = n
            .fetch
            .is_none_or(|(_, at, _, _)| at + FETCH_TIMEOUT_MS <= self.now_ms);
        if stale {
            self.send_fetch(i);
        }
        Ok(())
    }

    pub(super) fn send_fetch(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(part) = n.part.as_ref() else { return };
        let Some(leader) = part.role().leader.filter(|&l| l != n.id) else {
            return;
        };
        let epoch = part.role().leader_epoch;
        n.next_req += 1;
        let req = n.next_req;
        n.fetch = Some((req, self.now_ms, n.leo(), epoch));
        let msg = Msg::Fetch {
            req,
            fetch_offset: n.leo(),
            current_epoch: epoch,
            last_fetched_epoch: n.epochs.latest().map(|e| LeaderEpoch(e.epoch)),
        };
        self.send(Addr::Broker(i), Addr::Broker(leader.0 as usize - 1), msg);
    }

    /// Leader side of a follower fetch, as `ReplicaManager::fetch_for_follower` does it.
    pub(super) fn answer_fetch(
        &mut self,
        i: usize,
        from: Addr,
        fetch_offset: Offset,
        current_epoch: LeaderEpoch,
        last_fetched_epoch: Option<LeaderEpoch>,
    ) -> Result<Result<FetchData, (ErrorCode, u64)>, Violation> {
        let Addr::Broker(f) = from else {
            return Ok(Err((ErrorCode::InvalidRequest, 0)));
        };
        let now = self.now();
        let n = &mut self.nodes[i];
        let leo = n.leo();
        let Some(part) = n.part.as_mut().filter(|p| p.is_leader()) else {
            return Ok(Err((ErrorCode::NotLeaderOrFollower, leo.0)));
        };
        let follower = BrokerId(f as u32 + 1);
        if !part.role().replicas.contains(&follower) {
            return Ok(Err((ErrorCode::NotLeaderOrFollower, leo.0)));
        }
        if current_epoch != part.role().leader_epoch {
            return Ok(Err((ErrorCode::FencedLeaderEpoch, leo.0)));
        }
        if let Some(d) = state::divergence(
            &n.epochs,
            Offset::ZERO,
            leo,
            last_fetched_epoch,
            fetch_offset,
        ) {
            let hw = part.high_watermark();
            return Ok(Ok(FetchData {
                base: fetch_offset.0,
                entries: Vec::new(),
                hw,
                diverging: Some(d),
            }));
        }
        if fetch_offset > leo {
            return Ok(Err((ErrorCode::OffsetOutOfRange, leo.0)));
        }
        let actions = part.handle(Event::FollowerFetch {
            replica: follower,
            fetch_offset,
            log_end_offset: leo,
            now,
        });
        self.node_actions(i, actions)?;
        let n = &self.nodes[i];
        let start = fetch_offset.0 as usize;
        let end = n.log.len().min(start + FETCH_MAX_ENTRIES);
        let hw = n.part.as_ref().map_or(Offset::ZERO, |p| p.high_watermark());
        Ok(Ok(FetchData {
            base: fetch_offset.0,
            entries: n.log[start..end].to_vec(),
            hw,
            diverging: None,
        }))
    }

    pub(super) fn truncate(&mut self, i: usize, to: u64, why: &str) -> Result<(), Violation> {
        let n = &self.nodes[i];
        let removed: Vec<(u64, Entry)> = (to as usize..n.log.len())
            .map(|o| (o as u64, n.log[o]))
            .collect();
        let following = n
            .part
            .as_ref()
            .map_or(LeaderEpoch(0), |p| p.role().leader_epoch);
        self.checker.on_truncate(n.id, following, &removed, why)?;
        if !removed.is_empty() {
            self.report.truncations += 1;
            self.trace(|| {
                format!(
                    "b{} truncates {} -> {to} ({why})",
                    i + 1,
                    removed.len() + to as usize
                )
            });
        }
        let n = &mut self.nodes[i];
        n.log.truncate(to as usize);
        n.epochs.truncate_from_end(to);
        let leo = n.leo();
        if let Some(part) = n.part.as_mut() {
            let actions = part.handle(Event::Truncated {
                log_end_offset: leo,
            });
            self.node_actions(i, actions)?;
        }
        Ok(())
    }

    /// Follower side, as `ReplicaManager::apply_fetched` does it.
    pub(super) fn apply_fetch(
        &mut self,
        i: usize,
        req: u64,
        answer: Result<FetchData, (ErrorCode, u64)>,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        let Some((sent, _, offset, epoch)) = n.fetch else {
            return Ok(());
        };
        if sent != req {
            return Ok(());
        }
        n.fetch = None;
        let Some(part) = n.part.as_ref() else {
            return Ok(());
        };
        if part.role().leader_epoch != epoch || part.is_leader() || n.leo() != offset {
            return Ok(());
        }
        match answer {
            Err((ErrorCode::OffsetOutOfRange, leader_end)) if n.log.len() as u64 > leader_end => {
                self.truncate(i, leader_end, "past the leader's end")
            }
            Err(_) => Ok(()),
            Ok(FetchData {
                diverging: Some(d), ..
            }) => {
                let target = state::truncation_target(&n.epochs, n.leo(), d);
                // As `Log::truncate_to`: also drops an epoch begun at the cut.
                self.truncate(i, target.0, "divergence")
            }
            Ok(data) => {
                let got = !data.entries.is_empty();
                for (k, e) in data.entries.iter().enumerate() {
                    let offset = data.base + k as u64;
                    if offset >= n.log.len() as u64 {
                        n.epochs.assign(e.epoch, offset);
                        n.log.push(*e);
                    }
                }
                let leo = n.leo();
                let part = n.part.as_mut().expect("checked above");
                let actions = part.handle(Event::Replicated {
                    leader_high_watermark: data.hw,
                    log_end_offset: leo,
                });
                self.node_actions(i, actions)?;
                if got {
                    self.send_fetch(i);
                } else {
                    self.timer(FETCH_IDLE_MS, Timer::Fetch(i));
                }
                Ok(())
            }
        }
    }

    pub(super) fn produce(&mut self, i: usize, req: u64, id: u64) -> Result<(), Violation> {
        let now = self.now();
        let n = &mut self.nodes[i];
        let Some(part) = n.part.as_mut() else {
            self.send(
                Addr::Broker(i),
                Addr::Client,
                Msg::Produced {
                    req,
                    result: Err(ErrorCode::NotLeaderOrFollower),
                },
            );
            return Ok(());
        };
        let epoch = match part.check_produce(true) {
            Ok(e) => e,
            Err(refusal) => {
                let code = match refusal {
                    Refusal::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
                    Refusal::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
                };
                self.send(
                    Addr::Broker(i),
                    Addr::Client,
                    Msg::Produced {
                        req,
                        result: Err(code),
                    },
                );
                return Ok(());
            }
        };
        let offset = n.log.len() as u64;
        n.epochs.assign(epoch.0, offset);
        n.log.push(Entry { epoch: epoch.0, id });
        n.next_waiter += 1;
        let waiter = WaiterId(n.next_waiter);
        n.waiters.insert(waiter, (req, offset, id));
        let actions = part.handle(Event::Appended {
            log_end_offset: Offset(offset + 1),
            waiter: Some(NewWaiter {
                id: waiter,
                required_end: Offset(offset + 1),
                deadline: now + Duration::from_millis(PRODUCE_TIMEOUT_MS),
            }),
        });
        self.node_actions(i, actions)
    }
}
