//! The consumer: assigned partitions, seek (offset, earliest, latest, timestamp),
//! a poll loop with fetch pipelining, pause/resume, positions; or `subscribe` to a
//! consumer group, which assigns partitions through the same machinery
//! ([`crate::group`]): `poll` applies the coordinator's assignment (revoking first,
//! committing what it revokes under auto-commit), commits every auto-commit interval,
//! and starts each newly assigned partition at its committed offset.
//!
//! Pipelining: after a poll returns records, the next fetch to each leader is already
//! in flight, so the network round trip overlaps the application's processing. Each
//! partition has a fetch position (where the next fetch starts, ahead of what the
//! application has seen) and a position (the next record poll will return).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_proto::batch::Batches;
use sluice_proto::v1;
use sluice_proto::{ErrorCode, Header, TopicPartition};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::cluster::Cluster;
use crate::group::{
    heartbeat_loop, CoordinatorLink, GroupOptions, Membership, RebalanceEvent, Subscription,
};
use crate::{ClientConfig, Error};

/// Where to start when a partition has no position or its position is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Report an error instead.
    None,
}

/// A position to move to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Offset(u64),
    Earliest,
    Latest,
    /// The first record with a timestamp at or after this (ms); the end if none.
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: u32,
    /// `fetch.max.bytes`: per fetch request.
    pub fetch_max_bytes: u32,
    /// `max.partition.fetch.bytes`.
    pub partition_max_bytes: u32,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
        }
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

#[derive(Debug, Default)]
struct PartState {
    /// Next offset poll returns; `None` until reset or seek resolves it.
    position: Option<u64>,
    /// Next offset to fetch (>= position).
    fetch_position: Option<u64>,
    pending_seek: Option<Seek>,
    paused: bool,
    /// Bumped on every seek, so results of fetches issued before it are dropped.
    generation: u64,
    high_watermark: Option<u64>,
}

type FetchResult = (Vec<(TopicPartition, u64)>, Result<v1::FetchResponse, Error>);

pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    parts: HashMap<TopicPartition, PartState>,
    buffer: VecDeque<ConsumerRecord>,
    /// One fetch in flight per leader address, with the (partition, generation) it covers.
    in_flight: HashMap<String, JoinHandle<FetchResult>>,
    group: Option<GroupMember>,
    /// Counts partitions (re)assigned, for their fetch generations.
    fresh: u64,
}

/// In a mutex only so that `Consumer` stays `Sync`; called with `&mut` access.
type Listener = parking_lot::Mutex<Box<dyn FnMut(RebalanceEvent) + Send>>;

/// A subscribed consumer's side of its group.
struct GroupMember {
    link: CoordinatorLink,
    opts: GroupOptions,
    state: Arc<parking_lot::Mutex<Membership>>,
    /// Wakes the heartbeat task (ownership changed).
    wake: Arc<tokio::sync::Notify>,
    /// Wakes `poll` (the coordinator's answer changed).
    changed: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// What this consumer owns.
    owned: BTreeSet<TopicPartition>,
    /// Offsets last committed, to skip commits that change nothing.
    committed: BTreeMap<TopicPartition, u64>,
    last_auto_commit: tokio::time::Instant,
    /// The auto-commit in flight: at most one, so they land in order.
    auto_commit: Option<JoinHandle<Result<(), Error>>>,
    listener: Option<Listener>,
}

impl Consumer {
    pub fn new(client: &ClientConfig, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster: Cluster::new(client),
            config,
            parts: HashMap::new(),
            buffer: VecDeque::new(),
            in_flight: HashMap::new(),
            group: None,
            fresh: 0,
        }
    }

    /// Joins consumer group `opts.group_id` with `subscription`; from now on the group
    /// assigns this consumer's partitions (which `assign` must not be mixed with). Must
    /// be called within a tokio runtime.
    pub fn subscribe(
        &mut self,
        opts: GroupOptions,
        subscription: Subscription,
    ) -> Result<(), Error> {
        if self.group.is_some() {
            return Err(Error::Invalid("already subscribed".into()));
        }
        if opts.group_id.is_empty() {
            return Err(Error::Invalid("the group id is empty".into()));
        }
        match &subscription {
            Subscription::Topics(t) if t.is_empty() => {
                return Err(Error::Invalid("subscribe to at least one topic".into()))
            }
            _ => {}
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Invalid("subscribe must be called within a tokio runtime".into())
        })?;
        self.assign(Vec::new());
        let link = CoordinatorLink::new(self.cluster.clone(), &opts.group_id);
        let state = Arc::new(parking_lot::Mutex::new(Membership::default()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let changed = Arc::new(tokio::sync::Notify::new());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = runtime.spawn(heartbeat_loop(
            link.clone(),
            opts.clone(),
            subscription,
            state.clone(),
            wake.clone(),
            changed.clone(),
            stop_rx,
        ));
        self.group = Some(GroupMember {
            link,
            opts,
            state,
            wake,
            changed,
            stop,
            task: Some(task),
            owned: BTreeSet::new(),
            committed: BTreeMap::new(),
            last_auto_commit: tokio::time::Instant::now(),
            auto_commit: None,
            listener: None,
        });
        Ok(())
    }

    /// Called with every change of what a subscribed consumer owns, from within `poll`.
    pub fn on_rebalance(&mut self, listener: impl FnMut(RebalanceEvent) + Send + 'static) {
        if let Some(g) = &mut self.group {
            g.listener = Some(parking_lot::Mutex::new(Box::new(listener)));
        }
    }

    /// The member id and epoch in the group (`None` without a group, or before joining).
    pub fn member(&self) -> Option<(String, i32)> {
        let g = self.group.as_ref()?;
        let s = g.state.lock();
        (!s.member_id.is_empty()).then(|| (s.member_id.clone(), s.epoch))
    }

    /// Positions of the owned partitions that moved since the last commit.
    fn positions_to_commit(
        &self,
        only: Option<&BTreeSet<TopicPartition>>,
    ) -> BTreeMap<TopicPartition, u64> {
        let Some(g) = &self.group else {
            return BTreeMap::new();
        };
        g.owned
            .iter()
            .filter(|tp| only.is_none_or(|o| o.contains(*tp)))
            .filter_map(|tp| Some((tp.clone(), self.parts.get(tp)?.position?)))
            .filter(|(tp, o)| g.committed.get(tp) != Some(o))
            .collect()
    }

    /// Commits the position of every owned partition (the offset after the last record
    /// `poll` returned) and waits for the coordinator's acknowledgement.
    pub async fn commit(&mut self) -> Result<(), Error> {
        self.commit_some(None).await
    }

    async fn commit_some(&mut self, only: Option<&BTreeSet<TopicPartition>>) -> Result<(), Error> {
        // An auto-commit in flight lands first, so offsets never go back.
        if let Some(h) = self.group.as_mut().and_then(|g| g.auto_commit.take()) {
            if !matches!(h.await, Ok(Ok(()))) {
                if let Some(g) = &mut self.group {
                    g.committed.clear();
                }
            }
        }
        let offsets = self.positions_to_commit(only);
        let Some(g) = &mut self.group else {
            return Err(Error::Invalid(
                "commit needs a group: subscribe first".into(),
            ));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let Some((member, epoch)) = committer(&g.state) else {
            // Fenced: what it held is lost, not committed (others may own it now).
            return Ok(());
        };
        g.link.commit(&member, epoch, &offsets).await?;
        g.committed.extend(offsets);
        Ok(())
    }

    /// Commits `offsets` (each the offset of the next record to read) as this member,
    /// whatever the positions are: for an application that processed only part of what
    /// `poll` returned.
    pub async fn commit_offsets(
        &mut self,
        offsets: BTreeMap<TopicPartition, u64>,
    ) -> Result<(), Error> {
        if let Some(h) = self.group.as_mut().and_then(|g| g.auto_commit.take()) {
            let _ = h.await;
        }
        let Some(g) = &mut self.group else {
            return Err(Error::Invalid(
                "commit needs a group: subscribe first".into(),
            ));
        };
        let offsets: BTreeMap<TopicPartition, u64> = offsets
            .into_iter()
            .filter(|(tp, _)| g.owned.contains(tp))
            .collect();
        let Some((member, epoch)) = committer(&g.state) else {
            return Ok(());
        };
        if offsets.is_empty() {
            return Ok(());
        }
        g.link.commit(&member, epoch, &offsets).await?;
        g.committed.extend(offsets);
        Ok(())
    }

    /// Starts a commit of every owned partition's position; the handle tells how it
    /// went.
    pub fn commit_async(&mut self) -> Result<JoinHandle<Result<(), Error>>, Error> {
        let offsets = self.positions_to_commit(None);
        let Some(g) = &mut self.group else {
            return Err(Error::Invalid(
                "commit needs a group: subscribe first".into(),
            ));
        };
        let Some((member, epoch)) = committer(&g.state) else {
            return Ok(tokio::spawn(async { Ok(()) }));
        };
        // Counted as committed now; a failed commit is retried by the next one only if
        // the position moves again (as Kafka's commitAsync, which never retries).
        g.committed.extend(offsets.clone());
        let link = g.link.clone();
        Ok(tokio::spawn(async move {
            if offsets.is_empty() {
                return Ok(());
            }
            link.commit(&member, epoch, &offsets).await
        }))
    }

    /// The group's committed offsets of `tps` (`None`: nothing committed).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<u64>>, Error> {
        let Some(g) = &self.group else {
            return Err(Error::Invalid(
                "committed offsets need a group: subscribe first".into(),
            ));
        };
        g.link.committed(tps).await
    }

    /// Records between the position and the high watermark last seen.
    pub fn lag(&self, tp: &TopicPartition) -> Option<u64> {
        let p = self.parts.get(tp)?;
        Some(p.high_watermark?.saturating_sub(p.position?))
    }

    /// Leaves the group: commits positions (with auto-commit), gives every partition
    /// back and tells the coordinator, so others take them over at once.
    pub async fn close(&mut self) -> Result<(), Error> {
        let committed = if self
            .group
            .as_ref()
            .is_some_and(|g| g.opts.auto_commit_interval.is_some())
        {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(mut g) = self.group.take() {
            let owned: Vec<TopicPartition> = g.owned.iter().cloned().collect();
            if !owned.is_empty() {
                if let Some(l) = &mut g.listener {
                    (l.get_mut())(RebalanceEvent::Revoked(owned));
                }
            }
            g.stop.send_replace(true);
            if let Some(task) = g.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
            }
        }
        self.assign(Vec::new());
        committed
    }

    /// Applies the coordinator's latest answer: lost partitions go without a commit,
    /// revoked ones after one (auto-commit), new ones start at their committed offsets.
    async fn reconcile(&mut self) -> Result<(), Error> {
        let Some(g) = &mut self.group else {
            return Ok(());
        };
        let (target, lost, fatal) = {
            let mut s = g.state.lock();
            (
                s.target.clone(),
                std::mem::take(&mut s.lost),
                s.fatal.clone(),
            )
        };
        if let Some(e) = fatal {
            // Sticky: the heartbeat task has stopped, so nothing is owned any more.
            g.owned.clear();
            self.assign(Vec::new());
            return Err(e);
        }
        if lost {
            let gone: Vec<TopicPartition> = std::mem::take(&mut g.owned).into_iter().collect();
            g.committed.clear();
            g.state.lock().owned.clear();
            if !gone.is_empty() {
                if let Some(l) = &mut g.listener {
                    (l.get_mut())(RebalanceEvent::Lost(gone));
                }
            }
            self.assign(Vec::new());
            self.group.as_ref().expect("subscribed").wake.notify_one();
            return Ok(());
        }
        let Some(target) = target else {
            return Ok(());
        };
        let revoked: BTreeSet<TopicPartition> = g.owned.difference(&target).cloned().collect();
        let added: Vec<TopicPartition> = target.difference(&g.owned).cloned().collect();
        if revoked.is_empty() && added.is_empty() {
            return Ok(());
        }
        if !revoked.is_empty() {
            if g.opts.auto_commit_interval.is_some() {
                if let Err(e) = self.commit_some(Some(&revoked)).await {
                    debug!(error = %e, "commit on revoke failed");
                }
            }
            let g = self.group.as_mut().expect("subscribed");
            if let Some(l) = &mut g.listener {
                (l.get_mut())(RebalanceEvent::Revoked(revoked.iter().cloned().collect()));
            }
            for tp in &revoked {
                g.owned.remove(tp);
                g.committed.remove(tp);
            }
        }
        let g = self.group.as_mut().expect("subscribed");
        let starts = if added.is_empty() {
            BTreeMap::new()
        } else {
            g.link.committed(&added).await?
        };
        let g = self.group.as_mut().expect("subscribed");
        g.owned.extend(added.iter().cloned());
        for (tp, o) in &starts {
            if let Some(o) = o {
                g.committed.insert(tp.clone(), *o);
            }
        }
        let owned: Vec<TopicPartition> = g.owned.iter().cloned().collect();
        g.state.lock().owned = g.owned.clone();
        g.wake.notify_one();
        if !added.is_empty() {
            if let Some(l) = &mut g.listener {
                (l.get_mut())(RebalanceEvent::Assigned(added.clone()));
            }
        }
        self.assign(owned);
        for tp in added {
            if let Some(Some(o)) = starts.get(&tp) {
                self.seek(&tp, Seek::Offset(*o));
            }
        }
        Ok(())
    }

    /// Starts a commit every auto-commit interval (at the start of a poll, so what is
    /// committed is what the application got from earlier polls). It runs beside the
    /// poll, one at a time; a failed one is redone in full by the next.
    async fn auto_commit(&mut self) {
        let Some(g) = &mut self.group else { return };
        let Some(every) = g.opts.auto_commit_interval else {
            return;
        };
        if let Some(h) = &g.auto_commit {
            if !h.is_finished() {
                return;
            }
            let h = g.auto_commit.take().expect("checked");
            if !matches!(h.await, Ok(Ok(()))) {
                debug!("auto-commit failed; committing everything again");
                g.committed.clear();
            }
        }
        if g.last_auto_commit.elapsed() < every {
            return;
        }
        g.last_auto_commit = tokio::time::Instant::now();
        match self.commit_async() {
            Ok(h) => self.group.as_mut().expect("subscribed").auto_commit = Some(h),
            Err(e) => debug!(error = %e, "auto-commit not started"),
        }
    }

    /// Replaces the assignment. New partitions start per `auto_offset_reset` unless
    /// sought.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        self.parts.retain(|tp, _| partitions.contains(tp));
        for tp in partitions {
            if !self.parts.contains_key(&tp) {
                // A generation no earlier state of this partition had, so a fetch sent
                // before it was last unassigned is not taken for this one.
                self.fresh += 1;
                let p = PartState {
                    generation: self.fresh << 32,
                    ..PartState::default()
                };
                self.parts.insert(tp, p);
            }
        }
        self.buffer.retain(|r| {
            self.parts
                .contains_key(&TopicPartition::new(r.topic.clone(), r.partition))
        });
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self.parts.keys().cloned().collect();
        v.sort();
        v
    }

    /// Moves `tp` (which must be assigned) to `to`; takes effect at the next poll.
    pub fn seek(&mut self, tp: &TopicPartition, to: Seek) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.pending_seek = Some(to);
            p.generation += 1;
            p.position = None;
            p.fetch_position = None;
            self.buffer
                .retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
        }
    }

    pub fn pause(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.paused = true;
        }
    }

    pub fn resume(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.paused = false;
        }
    }

    /// The offset of the next record poll will return for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.parts.get(tp).and_then(|p| p.position)
    }

    /// The high watermark seen in the last fetch of `tp`.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<u64> {
        self.parts.get(tp).and_then(|p| p.high_watermark)
    }

    /// Resolves a seek or reset target to an offset via ListOffsets at the leader.
    async fn resolve(&self, tp: &TopicPartition, to: Seek) -> Result<u64, Error> {
        let timestamp = match to {
            Seek::Offset(o) => return Ok(o),
            Seek::Earliest => -2,
            Seek::Latest => -1,
            Seek::Timestamp(t) => t,
        };
        let p = self
            .cluster
            .list_offset(&tp.topic, tp.partition, timestamp)
            .await?;
        // No record at or after the timestamp: the end.
        Ok(if p.offset >= 0 {
            p.offset as u64
        } else {
            p.high_watermark as u64
        })
    }

    async fn resolve_positions(&mut self) -> Result<(), Error> {
        let todo: Vec<(TopicPartition, Seek)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.position.is_none())
            .map(|(tp, p)| {
                let target = p
                    .pending_seek
                    .unwrap_or(match self.config.auto_offset_reset {
                        OffsetReset::Earliest => Seek::Earliest,
                        _ => Seek::Latest,
                    });
                (tp.clone(), target)
            })
            .collect();
        for (tp, target) in todo {
            if self.parts[&tp].pending_seek.is_none()
                && self.config.auto_offset_reset == OffsetReset::None
            {
                return Err(Error::Invalid(format!(
                    "{tp} has no position and auto.offset.reset is none"
                )));
            }
            let offset = match self.resolve(&tp, target).await {
                Ok(o) => o,
                // No leader yet (startup, failover): try again on the next round.
                Err(e) if e.is_retriable() => {
                    debug!(partition = %tp, error = %e, "cannot resolve the position yet");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let p = self.parts.get_mut(&tp).expect("assigned");
            p.position = Some(offset);
            p.fetch_position = Some(offset);
            p.pending_seek = None;
        }
        Ok(())
    }

    /// Starts a fetch to every leader that has fetchable partitions and none in flight.
    async fn start_fetches(&mut self) -> Result<(), Error> {
        let mut by_leader: HashMap<String, Vec<(TopicPartition, u64, u64)>> = HashMap::new();
        for (tp, p) in &self.parts {
            let (Some(offset), false) = (p.fetch_position, p.paused) else {
                continue;
            };
            let addr = match self.cluster.leader_addr(&tp.topic, tp.partition) {
                Some(a) => a,
                None => match self
                    .cluster
                    .leader_addr_refreshed(&tp.topic, tp.partition)
                    .await
                {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(partition = %tp, error = %e, "no leader yet");
                        continue;
                    }
                },
            };
            by_leader
                .entry(addr)
                .or_default()
                .push((tp.clone(), offset, p.generation));
        }
        for (addr, parts) in by_leader {
            if self.in_flight.contains_key(&addr) {
                continue;
            }
            let req = v1::FetchRequest {
                max_wait_ms: self.config.fetch_max_wait.as_millis() as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                partitions: parts
                    .iter()
                    .map(|(tp, offset, _)| v1::FetchPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        fetch_offset: *offset as i64,
                        partition_max_bytes: self.config.partition_max_bytes,
                        current_leader_epoch: -1,
                        last_fetched_epoch: -1,
                    })
                    .collect(),
                replica_id: -1,
            };
            let mut client = self.cluster.broker_client(&addr)?;
            let generations: Vec<(TopicPartition, u64)> =
                parts.into_iter().map(|(tp, _, g)| (tp, g)).collect();
            let a = addr.clone();
            let handle = tokio::spawn(async move {
                let r = client
                    .fetch(req)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| Error::from_status(&a, s));
                (generations, r)
            });
            self.in_flight.insert(addr, handle);
        }
        Ok(())
    }

    /// Folds one fetch answer into positions and the record buffer.
    fn absorb(
        &mut self,
        generations: Vec<(TopicPartition, u64)>,
        resp: v1::FetchResponse,
    ) -> Result<(), Error> {
        for p in resp.partitions {
            let tp = TopicPartition::new(p.topic.clone(), p.partition);
            let Some(gen) = generations.iter().find(|(t, _)| *t == tp).map(|(_, g)| *g) else {
                continue;
            };
            let Some(state) = self.parts.get_mut(&tp) else {
                continue;
            };
            if state.generation != gen {
                continue;
            }
            match ErrorCode::from_code(p.error_code) {
                ErrorCode::None => {}
                ErrorCode::OffsetOutOfRange
                    if self.config.auto_offset_reset != OffsetReset::None =>
                {
                    state.position = None;
                    state.fetch_position = None;
                    continue;
                }
                code if code.is_retriable() => {
                    self.cluster.invalidate(&tp.topic);
                    continue;
                }
                _ => return Err(Error::broker(p.error_code, p.error_message)),
            }
            state.high_watermark = Some(p.high_watermark as u64);
            let Some(mut next) = state.fetch_position else {
                continue;
            };
            let buffered = self.buffer.len();
            for batch in Batches::new(p.records) {
                let batch = batch.map_err(|e| {
                    Error::broker(ErrorCode::CorruptMessage.code(), format!("{tp}: {e}"))
                })?;
                if batch.is_control() {
                    next = next.max(batch.next_offset() as u64);
                    continue;
                }
                let base = batch.base_offset() as u64;
                for r in batch.records().map_err(|e| {
                    Error::broker(ErrorCode::CorruptMessage.code(), format!("{tp}: {e}"))
                })? {
                    let offset = base + r.offset_delta as u64;
                    if offset < next {
                        continue;
                    }
                    let timestamp =
                        if batch.timestamp_type() == sluice_proto::TimestampType::LogAppendTime {
                            batch.max_timestamp()
                        } else {
                            batch.base_timestamp() + r.timestamp_delta
                        };
                    self.buffer.push_back(ConsumerRecord {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset,
                        timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                }
                next = next.max(batch.next_offset() as u64);
            }
            // Only control batches (or nothing) came back: nothing left for poll to
            // return below `next`, so the position moves past them, as Kafka's does.
            if self.buffer.len() == buffered && state.position == state.fetch_position {
                state.position = Some(next);
            }
            state.fetch_position = Some(next);
        }
        Ok(())
    }

    /// Returns buffered records, waiting up to `timeout` for some to arrive. An empty
    /// answer means nothing new within the timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        // What the group says first: a fenced member must not commit what it lost.
        self.reconcile().await?;
        self.auto_commit().await;
        loop {
            self.reconcile().await?;
            self.resolve_positions().await?;
            self.start_fetches().await?;
            if !self.buffer.is_empty() {
                return Ok(self.drain());
            }
            if self.in_flight.is_empty() {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                let changed = self.group.as_ref().map(|g| g.changed.clone());
                tokio::select! {
                    _ = tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
                    ) => {}
                    _ = async { match &changed { Some(c) => c.notified().await, None => std::future::pending().await } } => {}
                }
                continue;
            }
            let changed = self.group.as_ref().map(|g| g.changed.clone());
            let waiting =
                futures::future::select_all(self.in_flight.iter_mut().map(|(addr, h)| {
                    let addr = addr.clone();
                    Box::pin(async move { (addr, h.await) })
                }));
            let next = tokio::select! {
                r = tokio::time::timeout_at(deadline, waiting) => r.map(|(first, _, _)| first),
                // The group's answer changed: apply it now, not after the long poll.
                _ = async { match &changed { Some(c) => c.notified().await, None => std::future::pending().await } } => continue,
            };
            let Ok((addr, joined)) = next else {
                return Ok(Vec::new());
            };
            self.in_flight.remove(&addr);
            match joined {
                Ok((gens, Ok(resp))) => self.absorb(gens, resp)?,
                Ok((_, Err(e))) => {
                    debug!(addr, error = %e, "fetch failed");
                    for (tp, _) in self.parts.iter() {
                        self.cluster.invalidate(&tp.topic);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::Invalid(format!("fetch task failed: {e}"))),
            }
        }
    }

    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let out: Vec<ConsumerRecord> = self.buffer.drain(..).collect();
        for r in &out {
            if let Some(p) = self
                .parts
                .get_mut(&TopicPartition::new(r.topic.clone(), r.partition))
            {
                p.position = Some(r.offset + 1);
            }
        }
        out
    }
}

/// The member id and epoch to commit with; `None` while fenced (lost, rejoining).
fn committer(state: &parking_lot::Mutex<Membership>) -> Option<(String, i32)> {
    let s = state.lock();
    (!s.lost && s.epoch > 0 && s.fatal.is_none()).then(|| (s.member_id.clone(), s.epoch))
}

impl Drop for Consumer {
    /// A subscribed consumer dropped without `close` still leaves its group (its
    /// heartbeat task sends the leave), so its partitions move without waiting for the
    /// session timeout; nothing is committed.
    fn drop(&mut self) {
        if let Some(g) = &self.group {
            g.stop.send_replace(true);
        }
    }
}
