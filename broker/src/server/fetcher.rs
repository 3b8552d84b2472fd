//! Replication drivers: one fetch loop per leader this broker follows, carrying all
//! partitions it follows from that leader over one long-lived `ReplicaFetch` stream
//! (request, long-polled answer, request, …), and the ISR proposer that sends a
//! leader's ISR changes to the controller.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::v1;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::controller_api_client::ControllerApiClient;
use sluice_proto::{ErrorCode, LeaderEpoch, Offset, TopicPartition};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, error, info, warn};

use super::admin::{channel, replication_channel};
use super::Shared;
use crate::replica::{FollowerFetched, IsrProposal, ToFetch};

const FOLLOWER_WAIT_MS: u32 = 500;
const FOLLOWER_FETCH_BYTES: u32 = 32 << 20;
const IDLE: Duration = Duration::from_millis(100);
/// How often waiting produces are checked against their deadlines and ISR proposals made.
const TICK: Duration = Duration::from_millis(100);
const FOLLOWER_FETCH_TIMEOUT: Duration = Duration::from_millis(FOLLOWER_WAIT_MS as u64 + 2500);

fn broker_addr(shared: &Shared, id: u32) -> Option<String> {
    shared
        .metadata
        .read()
        .brokers
        .iter()
        .find(|b| b.id == id)
        .map(|b| b.addr.clone())
}

/// Keeps one fetch loop running per leader that this broker follows something from.
/// The loops live in a `JoinSet`, so aborting this task stops them all.
pub(crate) async fn replicate(shared: Arc<Shared>) {
    let mut loops = JoinSet::new();
    let mut running = HashSet::new();
    let mut ids: HashMap<tokio::task::Id, u32> = HashMap::new();
    loop {
        // A loop that ends or panics is restarted below on the next pass, so no leader
        // stays unfollowed.
        while let Some(done) = loops.try_join_next_with_id() {
            match done {
                Ok((id, leader)) => {
                    ids.remove(&id);
                    running.remove(&leader);
                }
                Err(e) => {
                    if let Some(leader) = ids.remove(&e.id()) {
                        running.remove(&leader);
                        if e.is_panic() {
                            error!(leader, "replica fetch loop panicked; restarting it");
                        }
                    }
                }
            }
        }
        for leader in followed_leaders(&shared).await {
            if running.insert(leader) {
                let shared = shared.clone();
                let handle = loops.spawn(async move {
                    fetch_from(shared, leader).await;
                    leader
                });
                ids.insert(handle.id(), leader);
            }
        }
        tokio::time::sleep(IDLE).await;
    }
}

/// One open `ReplicaFetch` stream to a leader.
struct FetchStream {
    addr: String,
    requests: mpsc::Sender<v1::FetchRequest>,
    answers: Streaming<v1::FetchResponse>,
}

impl FetchStream {
    async fn open(addr: &str) -> Result<FetchStream, Status> {
        let mut client =
            BrokerClient::new(replication_channel(addr)?).max_decoding_message_size(64 << 20);
        let (requests, rx) = mpsc::channel(1);
        let answers = tokio::time::timeout(
            FOLLOWER_FETCH_TIMEOUT,
            client.replica_fetch(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("opening the replication stream"))??
        .into_inner();
        Ok(FetchStream {
            addr: addr.to_string(),
            requests,
            answers,
        })
    }

    /// Sends one fetch and waits for its answer. A leader that stops answering
    /// (SIGSTOP, a partition) fails the stream within `FOLLOWER_FETCH_TIMEOUT`.
    async fn fetch(&mut self, req: v1::FetchRequest) -> Result<v1::FetchResponse, Status> {
        self.requests
            .send(req)
            .await
            .map_err(|_| Status::unavailable("replication stream closed"))?;
        match tokio::time::timeout(FOLLOWER_FETCH_TIMEOUT, self.answers.message()).await {
            Ok(Ok(Some(resp))) => Ok(resp),
            Ok(Ok(None)) => Err(Status::unavailable(
                "the leader ended the replication stream",
            )),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded("follower fetch timed out")),
        }
    }
}

/// The leaders this broker follows something from. `followed` takes every partition's
/// lock, which a blocking thread holds across a write that waits for the disk: off the
/// async workers, or a slow disk stops them and the heartbeats they run.
async fn followed_leaders(shared: &Arc<Shared>) -> Vec<u32> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || shared.replicas.followed().into_keys().collect())
        .await
        .unwrap_or_default()
}

/// What to fetch from `leader`, each partition with its topic id (empty when unknown);
/// on a blocking thread for the same reason as [`followed_leaders`].
async fn wanted_from(shared: &Arc<Shared>, leader: u32) -> Vec<(ToFetch, String)> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let parts = shared
            .replicas
            .followed()
            .remove(&leader)
            .unwrap_or_default();
        parts
            .into_iter()
            .map(|f| {
                // The leader refuses to serve a copy of another topic of this name.
                let topic_id = shared
                    .replicas
                    .partition(&f.tp)
                    .and_then(|p| p.log.topic_id())
                    .map(|id| id.to_string())
                    .unwrap_or_default();
                (f, topic_id)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

async fn fetch_from(shared: Arc<Shared>, leader: u32) {
    let me = shared.config.id;
    let mut stream: Option<FetchStream> = None;
    loop {
        let wanted = wanted_from(&shared, leader).await;
        if wanted.is_empty() {
            return;
        }
        let Some(addr) = broker_addr(&shared, leader) else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        if stream.as_ref().is_none_or(|s| s.addr != addr) {
            match FetchStream::open(&addr).await {
                Ok(s) => stream = Some(s),
                Err(status) => {
                    debug!(leader, %status, "could not open the replication stream");
                    stream = None;
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else {
            continue;
        };
        let req = v1::FetchRequest {
            max_wait_ms: FOLLOWER_WAIT_MS,
            min_bytes: 1,
            max_bytes: FOLLOWER_FETCH_BYTES,
            replica_id: me as i32,
            isolation_level: 0,
            partitions: wanted
                .iter()
                .map(|(f, topic_id)| v1::FetchPartition {
                    topic: f.tp.topic.clone(),
                    partition: f.tp.partition,
                    fetch_offset: f.fetch_offset.to_wire(),
                    partition_max_bytes: 8 << 20,
                    current_leader_epoch: f.current_leader_epoch.map_or(-1, LeaderEpoch::to_wire),
                    last_fetched_epoch: f.last_fetched_epoch.map_or(-1, LeaderEpoch::to_wire),
                    topic_id: topic_id.clone(),
                })
                .collect(),
        };
        let parts: Vec<ToFetch> = wanted.into_iter().map(|(f, _)| f).collect();
        let resp = match s.fetch(req).await {
            Ok(r) => r,
            Err(status) => {
                debug!(leader, %status, "follower fetch failed; reopening the stream");
                stream = None;
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        // Appends, truncations (a sealed segment is copied) and producer-state rebuilds
        // touch the disk: on a blocking thread.
        let applier = shared.clone();
        let applied =
            tokio::task::spawn_blocking(move || apply_answer(&applier, leader, &parts, resp)).await;
        let progressed = match applied {
            Ok(progressed) => progressed,
            Err(e) => {
                error!(leader, error = %e, "applying a fetch answer failed");
                false
            }
        };
        if !progressed {
            // Errors or an empty long-poll: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Applies a leader's answer to the partitions fetched from it; whether any progressed.
fn apply_answer(shared: &Shared, leader: u32, parts: &[ToFetch], resp: v1::FetchResponse) -> bool {
    let mut progressed = false;
    for p in resp.partitions {
        let tp = TopicPartition::new(p.topic.clone(), p.partition);
        let Some(sent) = parts.iter().find(|f| f.tp == tp) else {
            continue;
        };
        let result = if p.error_code == 0 {
            progressed |= !p.records.is_empty() || p.diverging_end_offset >= 0;
            Ok(FollowerFetched {
                records: p.records,
                high_watermark: p.high_watermark.max(0) as u64,
                log_start_offset: p.log_start_offset.max(0) as u64,
                log_end_offset: p.log_end_offset.max(0) as u64,
                diverging: Offset::from_wire(p.diverging_end_offset)
                    .map(|end| (LeaderEpoch::from_wire(p.diverging_epoch), end)),
            })
        } else {
            debug!(partition = %tp, code = %ErrorCode::from_code(p.error_code), message = p.error_message, "follower fetch refused");
            Err((
                ErrorCode::from_code(p.error_code),
                p.log_start_offset.max(0) as u64,
                p.log_end_offset.max(0) as u64,
            ))
        };
        if let Err((code, message)) = shared.replicas.apply_fetched(sent, result) {
            warn!(partition = %tp, leader, %code, message, "applying replicated data failed");
        }
    }
    progressed
}

/// Ticks every partition's state machine on its own timer (waiting produces expire on
/// time, whatever the controller is doing) and hands this broker's ISR proposals (as
/// leader) to [`send_isr_changes`]. A proposal that finds the sender's queue full is
/// dropped: the state machine proposes again (at most once per proposal interval).
pub(crate) async fn propose_isr_changes(shared: Arc<Shared>) {
    shared
        .replicas
        .set_replica_lag_max(shared.config.replica_lag_time_max);
    let (tx, rx) = mpsc::channel(ISR_BATCHES_QUEUED_MAX);
    let sender = tokio::spawn(send_isr_changes(shared.clone(), rx));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The tick takes every partition's lock, which a blocking thread may hold
        // across disk work (an append that rolls, a truncation): not on a worker.
        let ticking = shared.clone();
        let Ok(proposals) =
            tokio::task::spawn_blocking(move || ticking.replicas.tick(Instant::now())).await
        else {
            continue;
        };
        if !proposals.is_empty() && tx.try_send(proposals).is_err() && sender.is_finished() {
            return;
        }
    }
}

/// ISR proposal batches waiting for the sender.
const ISR_BATCHES_QUEUED_MAX: usize = 64;

/// How long one AlterPartitions call may take.
const ALTER_PARTITIONS_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends whatever ISR proposals are waiting as one AlterPartitions request (the latest
/// per partition), so a slow follower shared by many partitions leaves all their ISRs in
/// one round trip rather than one partition at a time.
async fn send_isr_changes(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<(TopicPartition, IsrProposal)>>,
) {
    while let Some(first) = rx.recv().await {
        let mut latest: HashMap<TopicPartition, IsrProposal> = first.into_iter().collect();
        while let Ok(more) = rx.try_recv() {
            latest.extend(more);
        }
        let controllers = &shared.config.controllers;
        let idx = shared.controller_hint.load(Ordering::Relaxed) % controllers.len();
        let Ok(ch) = channel(&controllers[idx]) else {
            continue;
        };
        let mut client = ControllerApiClient::new(ch);
        let broker_epoch = shared.broker_epoch.load(Ordering::Acquire);
        // The current ISRs take the partitions' locks: off the async workers.
        let items: Vec<(TopicPartition, Vec<u32>, bool)> = {
            let (shared, latest) = (shared.clone(), latest.clone());
            tokio::task::spawn_blocking(move || {
                latest
                    .iter()
                    .map(|(tp, prop)| {
                        let new_isr: Vec<u32> = prop.new_isr.iter().map(|b| b.0).collect();
                        let shrink = shared
                            .replicas
                            .partition(tp)
                            .is_some_and(|p| new_isr.len() < p.role().isr.len());
                        (tp.clone(), new_isr, shrink)
                    })
                    .collect()
            })
            .await
            .unwrap_or_default()
        };
        let req = v1::AlterPartitionsRequest {
            broker_id: shared.config.id,
            broker_epoch,
            partitions: latest
                .iter()
                .map(|(tp, prop)| v1::AlterPartitionRequest {
                    broker_id: shared.config.id,
                    broker_epoch,
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    leader_epoch: prop.leader_epoch.to_wire(),
                    partition_epoch: prop.partition_epoch,
                    new_isr: prop.new_isr.iter().map(|b| b.0).collect(),
                })
                .collect(),
        };
        let answer =
            tokio::time::timeout(ALTER_PARTITIONS_TIMEOUT, client.alter_partitions(req)).await;
        let answers = match answer {
            Ok(Ok(r)) => r.into_inner().partitions,
            Ok(Err(status)) => {
                debug!(%status, "AlterPartitions failed");
                continue;
            }
            Err(_) => {
                debug!("AlterPartitions timed out");
                continue;
            }
        };
        let broker = shared.config.id.to_string();
        for ((tp, new_isr, shrink), a) in items.into_iter().zip(answers) {
            if a.error_code != 0 {
                debug!(partition = %tp, message = a.error_message, "ISR change refused");
                continue;
            }
            let kind = if shrink {
                "sluice_isr_shrinks_total"
            } else {
                "sluice_isr_expands_total"
            };
            metrics::counter!(kind, "broker" => broker.clone()).increment(1);
            info!(partition = %tp, isr = ?new_isr, "ISR change committed");
        }
    }
}

#[cfg(test)]
#[path = "fetcher_tests.rs"]
mod tests;
