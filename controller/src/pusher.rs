//! Sends controller decisions to brokers over `BrokerControl`, in order, per broker.
//!
//! Each broker has one bounded queue and one task. A push staged with a metadata change
//! waits in its queue until that change is stored ([`DurableGate`]), and is dropped if
//! the controller's term ends first. A message that cannot be delivered after a few
//! attempts, or finds the queue full, is dropped: a dead broker gets its full state when
//! it registers again, and a live one reports what it holds in every heartbeat, so the
//! controller re-sends what differs (`reconcile.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sluice_proto::v1::broker_control_client::BrokerControlClient;
use sluice_proto::v1::{self};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Endpoint;
use tracing::{debug, warn};

use crate::state::{Action, ClusterState};
use crate::writer::DurableGate;

const ATTEMPTS: u32 = 10;
/// How long one push is retried at most.
const PUSH_DEADLINE: Duration = Duration::from_secs(10);
/// Pushes waiting per broker; past it a push is dropped (reconciliation repairs).
const QUEUED_PUSHES_MAX: usize = 4096;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Push {
    LeaderAndIsr(v1::LeaderAndIsrRequest),
    UpdateMetadata(v1::UpdateMetadataRequest),
    StopReplica(v1::StopReplicaRequest),
}

enum Kind {
    FullState,
    Other,
}

/// Resolves once `broker` accepted one push.
pub type PushAck = (u32, oneshot::Receiver<()>);

#[derive(Default)]
pub struct Pusher {
    /// broker id -> (address the task talks to, its queue)
    queues: Mutex<HashMap<u32, Queue>>,
    /// The last `push_seq` stamped (under the `queues` lock, so a broker's queue holds
    /// its pushes in increasing order). Brokers apply a push only if its number is
    /// above every one they applied in this controller epoch: a request that lingered
    /// on a dead connection must not undo newer ones (docs/cluster.md).
    seq: std::sync::atomic::AtomicU64,
}

impl Push {
    fn stamp(&mut self, seq: u64) {
        match self {
            Push::LeaderAndIsr(r) => r.push_seq = seq,
            Push::UpdateMetadata(r) => r.push_seq = seq,
            Push::StopReplica(r) => r.push_seq = seq,
        }
    }
}

/// A push, its acknowledgement, and the write it waits for (if any).
type Queued = (Push, oneshot::Sender<()>, Option<DurableGate>);

/// One broker's ordered queue and the task draining it.
struct Queue {
    addr: String,
    epoch: i64,
    tx: mpsc::Sender<Queued>,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    /// Turns actions into requests stamped with the controller and broker epochs.
    /// Queues the actions; the returned receivers resolve as each push is accepted by
    /// its broker (and are dropped if it is given up), so callers can wait for brokers
    /// to know about a change before answering.
    pub fn dispatch(&self, actions: Vec<Action>, state: &ClusterState) -> Vec<PushAck> {
        self.dispatch_after(actions, state, None)
    }

    /// Like [`Pusher::dispatch`], but each push waits in its queue until `gate` opens
    /// (the change it reports is stored) and is dropped if it never does. Call under
    /// the state lock, so pushes queue in the order their changes were made.
    pub(crate) fn dispatch_after(
        &self,
        actions: Vec<Action>,
        state: &ClusterState,
        gate: Option<DurableGate>,
    ) -> Vec<PushAck> {
        let mut acks = Vec::new();
        let (controller_id, controller_epoch) = (state.controller_id(), state.controller_epoch());
        for action in actions {
            let action_kind = match &action {
                Action::FullState { .. } => Kind::FullState,
                _ => Kind::Other,
            };
            match action {
                Action::LeaderAndIsr { broker, partitions }
                | Action::FullState { broker, partitions } => {
                    let broker_epoch = state.broker_epoch(broker).unwrap_or(-1);
                    let req = v1::LeaderAndIsrRequest {
                        controller_id,
                        controller_epoch,
                        broker_epoch,
                        partitions,
                        full_state: matches!(action_kind, Kind::FullState),
                        push_seq: 0,
                    };
                    acks.extend(
                        self.send(state, &gate, broker, Push::LeaderAndIsr(req))
                            .map(|r| (broker, r)),
                    );
                }
                Action::StopReplica { broker, partitions } => {
                    let broker_epoch = state.broker_epoch(broker).unwrap_or(-1);
                    let partitions = partitions
                        .into_iter()
                        .map(|(topic, partition)| v1::StopReplicaPartition {
                            topic,
                            partition,
                            delete: true,
                        })
                        .collect();
                    let req = v1::StopReplicaRequest {
                        controller_id,
                        controller_epoch,
                        broker_epoch,
                        partitions,
                        push_seq: 0,
                    };
                    acks.extend(
                        self.send(state, &gate, broker, Push::StopReplica(req))
                            .map(|r| (broker, r)),
                    );
                }
                Action::UpdateMetadata { broker } => {
                    let req = v1::UpdateMetadataRequest {
                        controller_id,
                        controller_epoch,
                        metadata: Some(state.metadata(&[])),
                        push_seq: 0,
                        acls: state.acls_proto(),
                        resource_configs: state.resource_configs_proto(),
                    };
                    acks.extend(
                        self.send(state, &gate, broker, Push::UpdateMetadata(req))
                            .map(|r| (broker, r)),
                    );
                }
                Action::UpdateMetadataAll => {
                    let metadata = state.metadata(&[]);
                    let acls = state.acls_proto();
                    let resource_configs = state.resource_configs_proto();
                    for broker in state.live_brokers() {
                        let req = v1::UpdateMetadataRequest {
                            controller_id,
                            controller_epoch,
                            metadata: Some(metadata.clone()),
                            push_seq: 0,
                            acls: acls.clone(),
                            resource_configs: resource_configs.clone(),
                        };
                        acks.extend(
                            self.send(state, &gate, broker, Push::UpdateMetadata(req))
                                .map(|r| (broker, r)),
                        );
                    }
                }
            }
        }
        acks
    }

    fn send(
        &self,
        state: &ClusterState,
        gate: &Option<DurableGate>,
        broker: u32,
        mut push: Push,
    ) -> Option<oneshot::Receiver<()>> {
        let addr = state.broker_addr(broker)?;
        let (done, acked) = oneshot::channel();
        let epoch = state.broker_epoch(broker).unwrap_or(-1);
        let mut queues = self.queues.lock().expect("pusher lock");
        // A new registration (epoch) or address starts a fresh queue: what was queued for
        // the old incarnation is moot, and must not hold up what the new one needs.
        let stale = queues
            .get(&broker)
            .is_none_or(|q| q.addr != addr || q.epoch != epoch || q.tx.is_closed());
        if stale {
            let (tx, rx) = mpsc::channel(QUEUED_PUSHES_MAX);
            let task = tokio::spawn(deliver(broker, addr.to_string(), rx));
            if let Some(old) = queues.insert(
                broker,
                Queue {
                    addr: addr.to_string(),
                    epoch,
                    tx,
                    task,
                },
            ) {
                old.task.abort();
            }
        }
        push.stamp(self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        if let Err(e) = queues[&broker].tx.try_send((push, done, gate.clone())) {
            // Dropping `done` tells whoever waits; the broker's heartbeats then report
            // a state that differs and reconciliation re-sends it (reconcile.rs).
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                warn!(
                    broker,
                    max = QUEUED_PUSHES_MAX,
                    "push queue full: dropping a push; reconciliation re-sends the broker's state"
                );
            }
        }
        Some(acked)
    }
}

async fn deliver(broker: u32, addr: String, mut rx: mpsc::Receiver<Queued>) {
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            // A connection whose packets vanish (a cut, a paused host) is found dead in
            // about 3 s rather than one request timeout per queued push.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true),
        Err(e) => {
            warn!(broker, addr, error = %e, "bad broker address");
            return;
        }
    };
    let mut client = BrokerControlClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(sluice_proto::limits::CONTROL_MESSAGE_BYTES_MAX);
    let mut backlog: VecDeque<Queued> = VecDeque::new();
    loop {
        while let Ok(q) = rx.try_recv() {
            backlog.push_back(q);
        }
        supersede(&mut backlog);
        let Some((push, done, gate)) = backlog.pop_front() else {
            match rx.recv().await {
                Some(q) => {
                    backlog.push_back(q);
                    continue;
                }
                None => break,
            }
        };
        if let Some(gate) = gate {
            if !gate.passed().await {
                // The change was never stored: the term ended. Dropping `done` tells
                // whoever waits on it.
                debug!(broker, "dropping a push whose change was not stored");
                continue;
            }
        }
        let mut done = Some(done);
        let started = tokio::time::Instant::now();
        for attempt in 1..=ATTEMPTS {
            // A push older than this is given up: a newer one may be behind it, and what
            // it carried reaches a live broker through reconciliation anyway.
            let last = attempt == ATTEMPTS || started.elapsed() >= PUSH_DEADLINE;
            let result = match &push {
                Push::LeaderAndIsr(r) => client.leader_and_isr(r.clone()).await,
                Push::UpdateMetadata(r) => client.update_metadata(r.clone()).await,
                Push::StopReplica(r) => client.stop_replica(r.clone()).await,
            };
            match result {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if resp.error_code != 0 {
                        warn!(
                            broker,
                            code = resp.error_code,
                            message = resp.error_message,
                            "broker refused a control request"
                        );
                    }
                    if let Some(d) = done.take() {
                        let _ = d.send(());
                    }
                    break;
                }
                Err(status) if last => {
                    metrics::counter!("sluice_controller_pushes_dropped_total", "reason" => "given_up").increment(1);
                    warn!(broker, addr, %status, "giving up on a control request; while the broker heartbeats, reconciliation re-sends what it misses");
                    break;
                }
                Err(status) => {
                    debug!(broker, %status, attempt, "control request failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    // A full state queued meanwhile carries this role push's news too.
                    while let Ok(q) = rx.try_recv() {
                        backlog.push_back(q);
                    }
                    let role_push = matches!(push, Push::LeaderAndIsr(_) | Push::StopReplica(_));
                    let full_queued = backlog
                        .iter()
                        .any(|(p, _, _)| matches!(p, Push::LeaderAndIsr(r) if r.full_state));
                    if role_push && full_queued {
                        debug!(
                            broker,
                            "a queued full state supersedes the push being retried"
                        );
                        metrics::counter!("sluice_controller_pushes_dropped_total", "reason" => "superseded").increment(1);
                        break;
                    }
                }
            }
        }
    }
}

/// Drops queued role pushes that a later full-state push (a reconciliation) makes moot:
/// it carries every partition's current role, and stops what it does not list. Their
/// acknowledgements are dropped, as for a push given up. Metadata pushes before the last
/// metadata push go the same way (each carries the whole view).
fn supersede(backlog: &mut VecDeque<Queued>) {
    let full = backlog
        .iter()
        .rposition(|(p, _, _)| matches!(p, Push::LeaderAndIsr(r) if r.full_state));
    let metadata = backlog
        .iter()
        .rposition(|(p, _, _)| matches!(p, Push::UpdateMetadata(_)));
    if full.is_none() && metadata.is_none() {
        return;
    }
    let mut i = 0;
    let before = backlog.len();
    backlog.retain(|(p, _, _)| {
        let at = i;
        i += 1;
        let moot = match p {
            Push::LeaderAndIsr(_) | Push::StopReplica(_) => full.is_some_and(|f| at < f),
            Push::UpdateMetadata(_) => metadata.is_some_and(|m| at < m),
        };
        !moot
    });
    let dropped = before - backlog.len();
    if dropped > 0 {
        metrics::counter!("sluice_controller_pushes_dropped_total", "reason" => "superseded")
            .increment(dropped as u64);
    }
}
