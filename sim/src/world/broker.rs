//! The brokers' side of the simulation: the real `ReplicaManager` over each broker's
//! in-memory logs, driven as the broker's services drive it — the control service
//! (`server/control.rs`) applies LeaderAndIsr, the fetch loop (`server/fetcher.rs`)
//! sends `followed()` to each leader and applies the answers, the leader answers with
//! `fetch_for_follower` (`server/api.rs`), the ISR proposer ticks every 100 ms, and the
//! produce service calls `produce_append` then waits for the flush and the waiter. What
//! remains here is that glue (messages instead of gRPC) and the checker's view.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_broker::log::{LogConfig, TopicId};
use sluice_broker::replica::{ReplicaLog, ReplicaManager, Role, ToFetch};
use sluice_proto::batch::Batches;
use sluice_proto::{v1, BatchBuilder, BrokerId, Compression, ErrorCode, LeaderEpoch};
use tokio::sync::oneshot::error::TryRecvError;

use super::*;

/// A follower's fetch: at most this many bytes per partition (a few dozen batches, so
/// catching up takes several round trips, as with real data volumes).
const FETCH_MAX_BYTES: usize = 64 * 80;

pub(super) type Manager = ReplicaManager<MemStore>;

/// A simulated record: one batch of one record whose value is the record's id.
fn record_batch(id: u64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(0, None, Some(&id.to_be_bytes()), &[]);
    b.build().expect("a valid batch").into_bytes()
}

impl World {
    pub(super) fn tp() -> TopicPartition {
        TopicPartition::new(TOPIC, 0)
    }

    /// A new incarnation's replica manager over the broker's surviving logs.
    pub(super) fn start_manager(&self, i: usize) -> Manager {
        let rm = ReplicaManager::with_clock(
            i as u32 + 1,
            self.nodes[i].store.clone(),
            Arc::new(self.clock.clone()),
        );
        rm.set_replica_lag_max(Duration::from_millis(self.cfg.replica_lag_max_ms));
        rm
    }

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
                partitions,
                full_state,
            } => self.leader_and_isr(i, controller_epoch, broker_epoch, partitions, full_state)?,
            Msg::Fetch { req, parts } => {
                let Addr::Broker(f) = from else { return Ok(()) };
                let results = self.answer_fetch(i, f, &parts);
                self.send(Addr::Broker(i), from, Msg::FetchAnswer { req, results });
            }
            Msg::FetchAnswer { req, results } => self.apply_fetch(i, req, results)?,
            Msg::Produce { req, id } => self.produce(i, req, id),
            _ => {}
        }
        self.after_broker_step(i)
    }

    /// As `server/control.rs`: epochs checked, strays of a full state stopped, then
    /// every partition applied.
    fn leader_and_isr(
        &mut self,
        i: usize,
        controller_epoch: i64,
        broker_epoch: i64,
        partitions: Vec<v1::PartitionState>,
        full_state: bool,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        if controller_epoch < n.controller_epoch {
            return Ok(());
        }
        n.controller_epoch = controller_epoch;
        if broker_epoch < n.broker_epoch.unwrap_or(-1) {
            return Ok(());
        }
        let Some(rm) = n.rm.as_ref() else {
            return Ok(());
        };
        if full_state {
            for p in rm.partitions() {
                if !partitions
                    .iter()
                    .any(|s| s.topic == p.tp.topic && s.partition == p.tp.partition)
                {
                    let _ = rm.stop_replica(&p.tp, true);
                }
            }
        }
        for ps in partitions {
            let Some(leader_epoch) = LeaderEpoch::from_wire(ps.leader_epoch) else {
                continue;
            };
            let tp = TopicPartition::new(ps.topic.clone(), ps.partition);
            let config = LogConfig::default()
                .with_overrides(ps.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| format!("bad topic config from the controller: {e}"))?;
            let role = Role {
                leader: (ps.leader >= 0).then_some(BrokerId(ps.leader as u32)),
                leader_epoch,
                replicas: ps.replicas.iter().copied().map(BrokerId).collect(),
                isr: ps.isr.iter().copied().map(BrokerId).collect(),
                partition_epoch: ps.partition_epoch,
            };
            let before = self.role_of(i);
            let rm = self.nodes[i].rm.as_ref().expect("checked above");
            if let Err((code, message)) =
                rm.apply_role(&tp, role, config, TopicId::parse(&ps.topic_id).as_ref())
            {
                return Err(format!("b{} refused a role: {code:?} {message}", i + 1));
            }
            let after = self.role_of(i);
            if after != before {
                let (leads, epoch) = after.unwrap_or((false, LeaderEpoch(0)));
                self.trace(|| format!("b{} role: leader={leads} epoch={epoch}", i + 1));
                if leads && before != Some((true, epoch)) {
                    let me = BrokerId(i as u32 + 1);
                    self.checker.on_leader(epoch, me)?;
                    let log = self.entries(i);
                    self.checker.leader_complete(me, epoch, &log)?;
                }
            }
        }
        Ok(())
    }

    /// (leads, leader epoch) of the simulated partition on broker `i`.
    pub(super) fn role_of(&self, i: usize) -> Option<(bool, LeaderEpoch)> {
        let p = self.nodes[i].rm.as_ref()?.partition(&Self::tp())?;
        let role = p.role();
        Some((
            role.leader == Some(BrokerId(i as u32 + 1)),
            role.leader_epoch,
        ))
    }

    /// What the checker looks at after every call into a broker: acks=all answers the
    /// state machine gave (counting, at that moment, the replicas holding the record),
    /// truncations, and the leader's high watermark.
    pub(super) fn after_broker_step(&mut self, i: usize) -> Result<(), Violation> {
        let Some(log) = self.nodes[i].store.get(&Self::tp()) else {
            return Ok(());
        };
        let following = self.role_of(i).map_or(LeaderEpoch(0), |(_, e)| e);
        let removed = log.take_removed();
        if !removed.is_empty() {
            self.report.truncations += 1;
            let (from, to) = (removed[0].0, removed.len() as u64 + removed[0].0);
            self.trace(|| format!("b{} truncates {to} -> {from}", i + 1));
            self.checker
                .on_truncate(BrokerId(i as u32 + 1), following, &removed, "a replica")?;
        }
        if let Some(p) = self.nodes[i]
            .rm
            .as_ref()
            .and_then(|rm| rm.partition(&Self::tp()))
        {
            let (hw, leo) = (p.high_watermark(), p.log.log_end_offset());
            if hw > leo {
                return Err(format!(
                    "b{} high watermark {hw} above its log end {leo}",
                    i + 1
                ));
            }
            if let Some((true, epoch)) = self.role_of(i) {
                let incarnation = self.nodes[i].incarnation;
                self.checker.on_leader_hw(
                    BrokerId(i as u32 + 1),
                    incarnation,
                    epoch,
                    Offset(hw),
                )?;
            }
        }
        self.answer_waiters(i)
    }

    fn answer_waiters(&mut self, i: usize) -> Result<(), Violation> {
        let mut k = 0;
        while k < self.nodes[i].waiters.len() {
            let w = &mut self.nodes[i].waiters[k];
            let result = match w.rx.try_recv() {
                Err(TryRecvError::Empty) => {
                    k += 1;
                    continue;
                }
                Ok(r) => r,
                Err(TryRecvError::Closed) => Err(ErrorCode::NotLeaderOrFollower),
            };
            let w = self.nodes[i].waiters.remove(k);
            if result.is_ok() {
                let holders = (0..self.nodes.len())
                    .filter(|&j| {
                        let e = self.nodes[j]
                            .store
                            .get(&Self::tp())
                            .and_then(|l| l.entry_at(w.offset));
                        e.map(|e| e.id) == Some(w.id)
                    })
                    .count();
                self.checker.on_ack(
                    w.offset,
                    w.id,
                    w.epoch,
                    holders,
                    self.cfg.min_insync_replicas,
                )?;
                self.trace(|| {
                    format!(
                        "b{} acks record {} at {} ({holders} holders)",
                        i + 1,
                        w.id,
                        w.offset
                    )
                });
            }
            let result = result.map(|()| w.offset);
            self.send(
                Addr::Broker(i),
                Addr::Client,
                Msg::Produced { req: w.req, result },
            );
        }
        Ok(())
    }

    /// Every 100 ms, as the broker's timers: register or heartbeat (with the digest of
    /// the roles held), tick the replica manager and send its ISR proposals, and make
    /// sure a fetch is outstanding to the leader followed.
    pub(super) fn node_tick(&mut self, i: usize) -> Result<(), Violation> {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.ticks += 1;
        let every_half_second = n.ticks.is_multiple_of(5);
        let Some(rm) = n.rm.as_ref() else {
            return Ok(());
        };
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
                let roles_digest = rm.roles_digest();
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
        let n = &self.nodes[i];
        let proposals = n.rm.as_ref().map(|rm| rm.tick(now)).unwrap_or_default();
        if let (false, Some(broker_epoch)) = (proposals.is_empty(), n.broker_epoch) {
            let proposals = proposals.into_iter().map(|(_, p)| p).collect();
            let msg = Msg::AlterPartition {
                broker_epoch,
                proposals,
            };
            self.send(Addr::Broker(i), Addr::Controller, msg);
        }
        let n = &self.nodes[i];
        let stale = n
            .fetch
            .as_ref()
            .is_none_or(|f| f.sent_ms + FETCH_TIMEOUT_MS <= self.now_ms);
        let leader_moved = n
            .fetch
            .as_ref()
            .is_some_and(|f| Some(f.leader) != self.followed_leader(i));
        if stale || leader_moved {
            self.send_fetch(i);
        }
        self.after_broker_step(i)
    }

    fn followed_leader(&self, i: usize) -> Option<usize> {
        let rm = self.nodes[i].rm.as_ref()?;
        rm.followed().into_keys().next().map(|l| l as usize - 1)
    }

    /// As one pass of `fetch_from`: everything followed from that leader, in one request.
    pub(super) fn send_fetch(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.fetch = None;
        let Some(rm) = n.rm.as_ref() else { return };
        let Some((leader, parts)) = rm.followed().into_iter().next() else {
            return;
        };
        n.next_req += 1;
        let req = n.next_req;
        let leader = leader as usize - 1;
        n.fetch = Some(OutstandingFetch {
            req,
            sent_ms: self.now_ms,
            leader,
            parts: parts.clone(),
        });
        self.send(
            Addr::Broker(i),
            Addr::Broker(leader),
            Msg::Fetch { req, parts },
        );
    }

    /// Leader side, as `server/api.rs` `follower_read`.
    fn answer_fetch(&mut self, i: usize, follower: usize, parts: &[ToFetch]) -> Vec<FetchResult> {
        let Some(rm) = self.nodes[i].rm.as_ref() else {
            return Vec::new();
        };
        parts
            .iter()
            .map(|f| {
                rm.fetch_for_follower(follower as u32 + 1, f, FETCH_MAX_BYTES)
                    .map_err(|(code, _)| {
                        let (start, end) = rm.partition(&f.tp).map_or((0, 0), |p| {
                            (p.log.log_start_offset(), p.log.log_end_offset())
                        });
                        (code, start, end)
                    })
            })
            .collect()
    }

    /// Follower side, as the rest of `fetch_from`: each answer applied, the next fetch
    /// at once after progress, else after a pause.
    fn apply_fetch(
        &mut self,
        i: usize,
        req: u64,
        results: Vec<FetchResult>,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        if n.fetch.as_ref().is_none_or(|f| f.req != req) {
            return Ok(());
        }
        let sent = n.fetch.take().expect("checked").parts;
        let Some(rm) = n.rm.as_ref() else {
            return Ok(());
        };
        let mut progressed = false;
        for (f, result) in sent.iter().zip(results) {
            if let Ok(r) = &result {
                progressed |= !r.records.is_empty() || r.diverging.is_some();
            }
            if let Err((code, message)) = rm.apply_fetched(f, result) {
                return Err(format!(
                    "b{} could not apply what its leader sent: {code:?} {message}",
                    i + 1
                ));
            }
        }
        if progressed {
            self.send_fetch(i);
        } else {
            self.timer(FETCH_IDLE_MS, Timer::Fetch(i));
        }
        Ok(())
    }

    /// As the produce service: `produce_append`, the flush `flush.messages` asks for,
    /// then the answer once the state machine gives it ([`World::answer_waiters`]).
    fn produce(&mut self, i: usize, req: u64, id: u64) {
        let Some(rm) = self.nodes[i].rm.as_ref() else {
            return;
        };
        let timeout = Duration::from_millis(PRODUCE_TIMEOUT_MS);
        let appended = rm
            .produce_append(&Self::tp(), record_batch(id), -1, timeout)
            .and_then(|a| match a.flush_to {
                Some(end) => a
                    .partition
                    .log
                    .flush_to(end)
                    .map(|()| a)
                    .map_err(sluice_broker::replica::storage_failure),
                None => Ok(a),
            });
        match appended {
            Err((code, _)) => self.send(
                Addr::Broker(i),
                Addr::Client,
                Msg::Produced {
                    req,
                    result: Err(code),
                },
            ),
            Ok(a) => {
                let epoch = self.role_of(i).map_or(LeaderEpoch(0), |(_, e)| e);
                let (_, rx) = a.waiter.expect("acks=all has a waiter");
                self.nodes[i].waiters.push(Waiting {
                    req,
                    offset: a.produced.base_offset,
                    id,
                    epoch,
                    rx,
                });
            }
        }
    }

    /// The consumer's read, as the fetch service: `ReplicaManager::fetch` below the
    /// high watermark, from the broker leading the newest epoch.
    pub(super) fn consume(&mut self) -> Result<(), Violation> {
        let leader = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].paused_until <= self.now_ms)
            .filter_map(|i| match self.role_of(i) {
                Some((true, epoch)) => Some((epoch, i)),
                _ => None,
            })
            .max();
        let Some((epoch, i)) = leader else {
            return Ok(());
        };
        let rm = self.nodes[i].rm.as_ref().expect("leads");
        let mut reads = Vec::new();
        let mut next = self.consumer_read_upto;
        loop {
            let Ok(f) = rm.fetch(&Self::tp(), next, 1 << 20) else {
                break;
            };
            if f.records.is_empty() {
                break;
            }
            let before = next;
            for b in Batches::new(f.records) {
                let b = b.map_err(|e| format!("b{} served a bad batch: {e}", i + 1))?;
                reads.push((b.base_offset() as u64, crate::memlog::record_id(&b)));
                next = b.next_offset() as u64;
            }
            if next <= before {
                return Err(format!(
                    "b{} served from {before} a read ending at {next} (hw {})",
                    i + 1,
                    f.high_watermark
                ));
            }
        }
        for (o, id) in reads {
            self.checker.on_read(o, id, epoch)?;
        }
        self.consumer_read_upto = next;
        Ok(())
    }

    /// Every record in broker `i`'s log, by offset.
    pub(super) fn entries(&self, i: usize) -> Vec<Entry> {
        self.nodes[i]
            .store
            .get(&Self::tp())
            .map(|l| l.entries())
            .unwrap_or_default()
    }

    pub(super) fn high_watermark(&self, i: usize) -> Option<u64> {
        let p = self.nodes[i].rm.as_ref()?.partition(&Self::tp())?;
        Some(p.high_watermark())
    }
}
