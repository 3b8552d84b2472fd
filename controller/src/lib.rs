//! The Sluice controller: exactly one active instance, elected through a lease, owns
//! the cluster metadata (topics, partition leaders and ISRs, brokers) and pushes
//! leadership and metadata to brokers over gRPC.
//!
//! Data flow: brokers register and heartbeat through `ControllerApi`; admin requests
//! arrive through `Admin` (forwarded by brokers). Each request locks the active
//! [`state::ClusterState`], applies the change, stages the snapshot and queues the
//! resulting [`state::Action`]s with the [`pusher`], then releases the lock and writes
//! the snapshot to the store (`writer`: in order, never under the state lock, so a slow
//! store never delays heartbeats); pushes go out to each broker in order once the change
//! they report is stored. A standby controller answers NOT_CONTROLLER until it wins the
//! lease.
//!
//! Stores ([`store::Store`]): `embedded:DIR` (flock + files) and, with the cargo feature
//! `etcd`, `etcd://HOST:PORT[,…][/PREFIX]`. A controller that loses its lease resigns
//! and campaigns again.

pub mod pusher;
pub mod service;
pub mod state;
pub mod store;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::pusher::Pusher;
use crate::state::ClusterState;
use crate::store::{Store, StoreError};
use crate::writer::{Staged, Writer};

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This controller's id (reported as the controller id in metadata).
    pub id: u32,
    /// `embedded:DIR` or `etcd://HOST:PORT[,…][/PREFIX]`.
    pub store: String,
    /// TTL of the etcd controller lease (whole seconds, at least 1).
    pub lease_ttl: Duration,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout: Duration,
    /// How often liveness is checked and the lease retried while standby.
    pub tick: Duration,
    /// How often leadership is moved back to preferred replicas.
    pub leader_rebalance_interval: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            id: 1,
            store: "embedded:sluice-data/controller".into(),
            session_timeout: Duration::from_millis(2000),
            lease_ttl: Duration::from_secs(2),
            tick: Duration::from_millis(200),
            leader_rebalance_interval: Duration::from_secs(30),
        }
    }
}

/// State of the active controller; `None` in [`Shared::active`] while standby.
pub(crate) struct Active {
    pub(crate) state: ClusterState,
    /// This term's store, written outside the state lock.
    pub(crate) writer: Arc<Writer>,
    /// Sequence number of the last snapshot staged.
    /// Invariant: never below the writer's durable sequence number.
    staged: u64,
}

impl Active {
    pub(crate) fn new(state: ClusterState, writer: Arc<Writer>) -> Active {
        Active {
            state,
            writer,
            staged: 0,
        }
    }

    /// Under the state lock: numbers the change, copies the snapshot, and queues the
    /// actions' pushes behind its write. The caller then releases the lock and calls
    /// [`Staged::write`]. Once a write has failed the term is over and nothing is staged.
    /// Queues pushes that change nothing in the store (reconciliation re-sends) behind
    /// everything staged so far: a broker never hears of state the store may not hold.
    pub(crate) fn dispatch_when_durable(&self, actions: Vec<state::Action>, pusher: &Pusher) {
        let gate = self.writer.gate(self.staged);
        pusher.dispatch_after(actions, &self.state, Some(gate));
    }

    pub(crate) fn stage(
        &mut self,
        actions: Vec<state::Action>,
        pusher: &Pusher,
    ) -> Result<Staged, StoreError> {
        if self.writer.failed() {
            return Err(StoreError::TermEnded);
        }
        self.staged += 1;
        let gate = self.writer.gate(self.staged);
        Ok(Staged {
            writer: self.writer.clone(),
            seq: self.staged,
            snapshot: self.state.snap.clone(),
            acks: pusher.dispatch_after(actions, &self.state, Some(gate)),
        })
    }
}

/// Longest a request waits for brokers to apply what it changed.
const PUSH_WAIT: Duration = Duration::from_secs(3);

/// Waits (bounded) until brokers accepted the pushes of a commit, so that a client that
/// hears "created" can use the topic at once. Call without holding the state lock.
pub(crate) async fn await_pushes(acks: impl IntoIterator<Item = pusher::PushAck>) {
    let _ = tokio::time::timeout(PUSH_WAIT, futures_join(acks)).await;
}

async fn futures_join(acks: impl IntoIterator<Item = pusher::PushAck>) {
    for (_, a) in acks {
        let _ = a.await;
    }
}

pub(crate) struct Shared {
    pub(crate) config: ControllerConfig,
    pub(crate) active: Mutex<Option<Active>>,
    pub(crate) pusher: Pusher,
}

/// A running controller.
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
}

/// Kafka's ActiveControllerCount, OfflinePartitionsCount and fenced brokers, from the
/// active controller's state (a standby reports itself inactive and nothing else).
fn publish_gauges(state: &ClusterState) {
    let offline = state
        .snap
        .topics
        .values()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.leader.is_none())
        .count();
    let fenced = state
        .snap
        .brokers
        .keys()
        .filter(|id| !state.is_live(**id))
        .count();
    metrics::gauge!("sluice_controller_active").set(1.0);
    metrics::gauge!("sluice_controller_epoch").set(state.controller_epoch() as f64);
    metrics::gauge!("sluice_offline_partitions").set(offline as f64);
    metrics::gauge!("sluice_fenced_brokers").set(fenced as f64);
    metrics::gauge!("sluice_controller_pending_deletions").set(state.pending_deletions() as f64);
}

impl Controller {
    /// Checks the store spec and, for an embedded store, that its directory is
    /// writable (so a bad one fails fast), and builds a standby controller.
    pub fn new(config: ControllerConfig) -> Result<Controller, StoreError> {
        Store::preflight(&config.store)?;
        Ok(Controller {
            shared: Arc::new(Shared {
                config,
                active: Mutex::new(None),
                pusher: Pusher::default(),
            }),
        })
    }

    /// Serves the gRPC API on `listener` and campaigns for the lease, until `shutdown`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let campaign = tokio::spawn(self.clone().campaign());
        let result = service::serve(self.shared.clone(), listener, shutdown).await;
        campaign.abort();
        result
    }

    /// Whether this controller holds the lease.
    pub async fn is_active(&self) -> bool {
        self.shared.active.lock().await.is_some()
    }

    /// Campaigns for the lease, leads while it is held, and campaigns again after
    /// losing it.
    async fn campaign(self) {
        let config = &self.shared.config;
        // A standby reports itself inactive from the start, not only after a term.
        metrics::gauge!("sluice_controller_active").set(0.0);
        let mut store = match Store::open(&config.store, config.lease_ttl) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "controller store unusable");
                return;
            }
        };
        loop {
            let epoch = store.acquire(config.id, config.tick).await;
            let snap = match store.load().await {
                Ok(snap) => snap.unwrap_or_default(),
                Err(e) => {
                    error!(error = %e, "could not read the metadata store; giving the lease up");
                    store.resign().await;
                    tokio::time::sleep(config.tick).await;
                    continue;
                }
            };
            info!(
                controller = config.id,
                controller_epoch = epoch,
                topics = snap.topics.len(),
                "won the controller lease"
            );
            let state = ClusterState::new(
                snap,
                Instant::now(),
                config.session_timeout,
                config.id,
                epoch,
            );
            {
                let mut guard = self.shared.active.lock().await;
                let active = guard.insert(Active::new(state, Arc::new(Writer::new(store))));
                // Known brokers learn the new controller epoch and their partitions.
                let actions = active.state.all_leader_and_isr();
                let _ = self.shared.pusher.dispatch(actions, &active.state);
            }
            store = self.lead().await;
            metrics::gauge!("sluice_controller_active").set(0.0);
            store.resign().await;
            info!(controller = config.id, "resigned; campaigning again");
        }
    }

    /// Drives liveness and rebalancing while the lease is held; returns the store once
    /// it is lost or a write failed (the controller is then standby again).
    async fn lead(&self) -> Store {
        let config = &self.shared.config;
        let mut ticker = tokio::time::interval(config.tick);
        let mut last_rebalance = Instant::now();
        loop {
            ticker.tick().await;
            let mut guard = self.shared.active.lock().await;
            let Some(active) = guard.as_mut() else {
                unreachable!("only lead() ends a term");
            };
            // Checked before anything else: after a stop (SIGSTOP) every broker looks
            // silent, and a deposed controller must not act on that.
            let lease_lost = active.writer.lease_lost();
            if active.writer.failed() || lease_lost {
                warn!(
                    controller = config.id,
                    lease_lost,
                    "ending this controller term: lease lost or a metadata write failed"
                );
                let writer = guard.take().map(|a| a.writer).expect("active above");
                drop(guard);
                return writer.end_term().await.expect("only lead() ends a term");
            }
            let mut actions = active.state.tick(Instant::now());
            publish_gauges(&active.state);
            if last_rebalance.elapsed() >= config.leader_rebalance_interval {
                // Leadership drifts to survivors after failures; move it back.
                last_rebalance = Instant::now();
                if let Ok((_, more)) = active.state.elect_preferred(None) {
                    actions.extend(more);
                }
                // Also what registrations missed: a move that was still running
                // then, or a new controller whose brokers never register again.
                actions.extend(active.state.grow_offsets_topic());
            }
            if actions.is_empty() {
                continue;
            }
            let Ok(staged) = active.stage(actions, &self.shared.pusher) else {
                continue; // the term ends on the next tick
            };
            drop(guard);
            // In its own task: the next tick must not wait for the store either. A
            // failure ends the term on the next tick.
            tokio::spawn(async move {
                if let Err(e) = staged.write().await {
                    error!(error = %e, "metadata store write failed; resigning");
                }
            });
        }
    }
}
