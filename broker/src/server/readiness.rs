//! Whether a broker serves clients yet. A broker binds its port before it has
//! registered with the controller (the controller reaches it on that same port to push
//! its partitions), so until it is registered and holds the metadata the controller
//! pushed, the client-facing services (`Broker`, `Admin`) answer every request with a
//! retriable "not ready" (`sluice_proto::status::not_ready`), which clients retry within
//! their timeout. `BrokerControl` is always served.
//!
//! Ready is a one-way latch per process: once a broker has served clients, a later
//! fencing or re-registration does not stop it (clients then get NOT_LEADER and
//! retry, as in Kafka). `sluice dev` can also hold a broker's clients back until every
//! broker it started is live at the controller ([`Readiness::hold_clients`]).
//!
//! The gate is evaluated per request (an atomic load once open), never by a timer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tonic::{Request, Status};
use tracing::info;

use super::Shared;

/// Readiness state kept in [`Shared`].
#[derive(Default)]
pub(crate) struct Gate {
    /// Invariant: once true, stays true for the life of the process.
    open: AtomicBool,
    /// Set by `sluice dev` until all of its brokers are live at the controller.
    held: AtomicBool,
}

/// Whether `shared` is registered with the controller and holds metadata that lists
/// it alive at its own address (the controller pushes it right after registration).
pub(crate) fn registered(shared: &Shared) -> bool {
    if shared.broker_epoch.load(Ordering::Acquire) < 0 {
        return false;
    }
    let me = shared.config.id;
    let addr = &shared.config.advertised_addr;
    shared
        .metadata
        .read()
        .brokers
        .iter()
        .any(|b| b.id == me && b.alive && &b.addr == addr)
}

/// Whether client requests are served; opens the latch the first time it can.
pub(crate) fn serving_clients(shared: &Shared) -> bool {
    let gate = &shared.gate;
    if gate.open.load(Ordering::Acquire) {
        return true;
    }
    if gate.held.load(Ordering::Acquire) || !registered(shared) {
        return false;
    }
    if !gate.open.swap(true, Ordering::AcqRel) {
        info!(broker = shared.config.id, "ready: serving clients");
    }
    true
}

/// A tonic interceptor for the client-facing services.
pub(crate) fn client_gate(
    shared: Arc<Shared>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req| {
        if serving_clients(&shared) {
            Ok(req)
        } else {
            let config = &shared.config;
            let why = match shared.registration_failure.lock().clone() {
                Some(failure) => format!("not registered with a controller: {failure}"),
                None => format!(
                    "not registered with an active controller ({}) yet",
                    config.controllers.join(",")
                ),
            };
            Err(sluice_proto::status::not_ready(format!(
                "broker {} at {} is not ready: {why}",
                config.id, config.advertised_addr
            )))
        }
    }
}

/// A handle on a broker's readiness, kept by whoever started it.
#[derive(Clone)]
pub struct Readiness(pub(crate) Arc<Shared>);

impl Readiness {
    /// Registered with the active controller and holding the metadata it pushed.
    pub fn is_registered(&self) -> bool {
        registered(&self.0)
    }

    /// Addresses of the brokers alive in the metadata the controller last pushed here.
    pub fn live_broker_addrs(&self) -> Vec<String> {
        let md = self.0.metadata.read();
        md.brokers
            .iter()
            .filter(|b| b.alive)
            .map(|b| b.addr.clone())
            .collect()
    }

    /// Whether the broker answers client requests (registered, and not held).
    pub fn is_serving_clients(&self) -> bool {
        serving_clients(&self.0)
    }

    /// Keeps answering clients "not ready" even once registered, until
    /// [`Readiness::release_clients`]. Call before [`super::Broker::run`].
    pub fn hold_clients(&self) {
        self.0.gate.held.store(true, Ordering::Release);
    }

    pub fn release_clients(&self) {
        self.0.gate.held.store(false, Ordering::Release);
    }
}
