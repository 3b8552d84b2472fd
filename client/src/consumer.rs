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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_proto::v1;
use sluice_proto::{ErrorCode, Header, TopicPartition};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::cluster::Cluster;
use crate::group::{CoordinatorLink, GroupOptions, Membership, RebalanceEvent};
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
    /// `check.crcs` (default on, as Kafka's): read every fetched batch's CRC-32C and
    /// fail the poll on a mismatch. Off, a batch corrupted in transit or on the
    /// broker's disk without breaking its structure is returned as it is; lengths,
    /// varints and offsets are checked either way.
    pub check_crcs: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            check_crcs: true,
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

#[path = "consumer_group.rs"]
mod consumer_group;
mod decode;

pub use decode::decode_fetched;

type FetchResult = (Vec<(TopicPartition, u64)>, Result<v1::FetchResponse, Error>);

pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    parts: HashMap<TopicPartition, PartState>,
    /// Records fetched and not yet returned, in the order poll returns them.
    buffer: Vec<ConsumerRecord>,
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
            buffer: Vec::new(),
            in_flight: HashMap::new(),
            group: None,
            fresh: 0,
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
                        topic_id: self.cluster.topic_id(&tp.topic),
                    })
                    .collect(),
                replica_id: -1,
                isolation_level: 0,
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
            let Some(next) = state.fetch_position else {
                continue;
            };
            let buffered = self.buffer.len();
            let next = decode::decode_fetched(
                &tp.topic,
                tp.partition,
                p.records,
                next,
                self.config.check_crcs,
                &mut self.buffer,
            )
            .map_err(|e| Error::broker(ErrorCode::CorruptMessage.code(), format!("{tp}: {e}")))?;
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

    /// Hands the whole buffer over (no copy of the records) and moves each partition's
    /// position past its last record returned: one look-up per run of records of one
    /// partition, not per record.
    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let out = std::mem::take(&mut self.buffer);
        let mut i = 0;
        while i < out.len() {
            let first = &out[i];
            let mut last = i;
            while last + 1 < out.len()
                && out[last + 1].partition == first.partition
                && out[last + 1].topic == first.topic
            {
                last += 1;
            }
            let r = &out[last];
            if let Some(p) = self
                .parts
                .get_mut(&TopicPartition::new(r.topic.clone(), r.partition))
            {
                p.position = Some(r.offset + 1);
            }
            i = last + 1;
        }
        out
    }
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
