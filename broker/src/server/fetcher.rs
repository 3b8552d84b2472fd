//! Replication drivers: one fetch loop per leader this broker follows (carrying all
//! partitions it follows from that leader, over one HTTP/2 channel, long-polling), and
//! the ISR proposer that sends a leader's ISR changes to the controller.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::v1;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::controller_api_client::ControllerApiClient;
use sluice_proto::{ErrorCode, TopicPartition};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::admin::channel;
use super::Shared;
use crate::replica::FollowerFetched;

const FOLLOWER_WAIT_MS: u32 = 500;
const FOLLOWER_FETCH_BYTES: u32 = 32 << 20;
const IDLE: Duration = Duration::from_millis(100);
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
    loop {
        while let Some(done) = loops.try_join_next() {
            if let Ok(leader) = done {
                running.remove(&leader);
            }
        }
        for leader in shared.replicas.followed().into_keys() {
            if running.insert(leader) {
                let shared = shared.clone();
                loops.spawn(async move {
                    fetch_from(shared, leader).await;
                    leader
                });
            }
        }
        tokio::time::sleep(IDLE).await;
    }
}

async fn fetch_from(shared: Arc<Shared>, leader: u32) {
    let me = shared.config.id;
    let mut client: Option<(String, BrokerClient<Channel>)> = None;
    loop {
        let parts = shared
            .replicas
            .followed()
            .remove(&leader)
            .unwrap_or_default();
        if parts.is_empty() {
            return;
        }
        let Some(addr) = broker_addr(&shared, leader) else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != addr) {
            match channel(&addr) {
                Ok(ch) => {
                    client = Some((
                        addr.clone(),
                        BrokerClient::new(ch).max_decoding_message_size(64 << 20),
                    ))
                }
                Err(_) => {
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
            }
        }
        let c = &mut client.as_mut().expect("set above").1;
        let req = v1::FetchRequest {
            max_wait_ms: FOLLOWER_WAIT_MS,
            min_bytes: 1,
            max_bytes: FOLLOWER_FETCH_BYTES,
            replica_id: me as i32,
            partitions: parts
                .iter()
                .map(|f| v1::FetchPartition {
                    topic: f.tp.topic.clone(),
                    partition: f.tp.partition,
                    fetch_offset: f.fetch_offset as i64,
                    partition_max_bytes: 8 << 20,
                    current_leader_epoch: f.current_leader_epoch,
                    last_fetched_epoch: f.last_fetched_epoch,
                })
                .collect(),
        };
        // A leader that stops answering (SIGSTOP, a partition) must not hold the
        // follower for the channel's 30 s request timeout.
        let answer = tokio::time::timeout(FOLLOWER_FETCH_TIMEOUT, c.fetch(req)).await;
        let resp = match answer {
            Ok(Ok(r)) => r.into_inner(),
            Err(_) => {
                debug!(leader, "follower fetch timed out");
                client = None;
                continue;
            }
            Ok(Err(status)) => {
                debug!(leader, %status, "follower fetch failed");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
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
                    diverging: (p.diverging_end_offset >= 0)
                        .then_some((p.diverging_epoch, p.diverging_end_offset as u64)),
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
                warn!(partition = %tp, %code, message, "applying replicated data failed");
            }
        }
        if !progressed {
            // Errors or an empty long-poll: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends this broker's ISR proposals (as leader) to the active controller.
pub(crate) async fn propose_isr_changes(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let proposals = shared
            .replicas
            .isr_proposals(Instant::now(), shared.config.replica_lag_time_max);
        if proposals.is_empty() {
            continue;
        }
        let controllers = &shared.config.controllers;
        let idx = shared.controller_hint.load(Ordering::Relaxed) % controllers.len();
        let Ok(ch) = channel(&controllers[idx]) else {
            continue;
        };
        let mut client = ControllerApiClient::new(ch);
        for prop in proposals {
            let req = v1::AlterPartitionRequest {
                broker_id: shared.config.id,
                broker_epoch: shared.broker_epoch.load(Ordering::Acquire),
                topic: prop.tp.topic.clone(),
                partition: prop.tp.partition,
                leader_epoch: prop.leader_epoch,
                partition_epoch: prop.partition_epoch,
                new_isr: prop.new_isr.clone(),
            };
            match client.alter_partition(req).await {
                Ok(r) if r.get_ref().error_code == 0 => {
                    info!(partition = %prop.tp, isr = ?prop.new_isr, "ISR change committed")
                }
                Ok(r) => {
                    debug!(partition = %prop.tp, message = r.get_ref().error_message, "ISR change refused")
                }
                Err(status) => debug!(%status, "AlterPartition failed"),
            }
        }
    }
}
