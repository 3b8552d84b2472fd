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
//! A broker the controller reports as having missed metadata pushes (its heartbeats'
//! metadata has been behind the controller's long enough for a re-send, and still is:
//! the controller's connections to it fail while its own heartbeats get through, or
//! pushes are late on a loaded machine) answers
//! Metadata requests "not ready", so clients ask another broker, until a push reaches
//! it or its reports match again. Its view can name a deleted topic: a client that took
//! it would write, under the deleted topic's id, to a log the next push throws away.
//!
//! The gate is evaluated per request (an atomic load once open), never by a timer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tonic::{Request, Status};
use tracing::{info, warn};

use super::Shared;

/// Readiness state kept in [`Shared`].
#[derive(Default)]
pub(crate) struct Gate {
    /// Invariant: once true, stays true for the life of the process.
    open: AtomicBool,
    /// Set by `sluice dev` until all of its brokers are live at the controller.
    held: AtomicBool,
    /// The controller's last heartbeat answer said this broker missed pushes, and no
    /// push has been applied since.
    missed_pushes: AtomicBool,
}

impl Gate {
    /// Records the heartbeat answer's `missed_pushes`.
    pub(crate) fn set_missed_pushes(&self, broker: u32, missed: bool) {
        let was = self.missed_pushes.swap(missed, Ordering::AcqRel);
        if missed && !was {
            warn!(
                broker,
                "the controller reports this broker 2 s or more behind its metadata (pushes lost, or late on a loaded machine): refusing Metadata requests until one arrives"
            );
        } else if was && !missed {
            info!(
                broker,
                "in step with the controller again: serving Metadata"
            );
        }
    }

    /// Whether Metadata requests are refused: see the module doc.
    pub(crate) fn missed_pushes(&self) -> bool {
        self.missed_pushes.load(Ordering::Acquire)
    }

    /// A push from the controller was applied: it can be the one that was missed.
    pub(crate) fn pushed(&self, broker: u32) {
        if self.missed_pushes.swap(false, Ordering::AcqRel) {
            info!(
                broker,
                "a push from the controller arrived: serving Metadata"
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Broker, BrokerConfig};
    use sluice_proto::v1;

    /// A broker that the controller reports as having missed metadata pushes refuses
    /// Metadata requests (clients ask another broker) until a push is applied or the
    /// reports match again; everything else is served.
    #[tokio::test]
    async fn a_broker_that_missed_pushes_refuses_metadata_until_a_push_arrives() {
        use sluice_proto::v1::broker_server::Broker as _;
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::new(1, "127.0.0.1:1".into(), Vec::new(), dir.path().into());
        let broker = Broker::open(config).unwrap();
        let shared = broker.shared.clone();
        let api = crate::server::api::BrokerApi(shared.clone());
        let ask = || async {
            api.metadata(Request::new(v1::MetadataRequest::default()))
                .await
                .map(|_| ())
        };
        assert!(ask().await.is_ok());
        shared.gate.set_missed_pushes(1, true);
        let refused = ask().await.unwrap_err();
        assert!(
            refused
                .message()
                .contains("missed updates from the controller"),
            "{}",
            refused.message()
        );
        shared.gate.set_missed_pushes(1, true);
        assert!(ask().await.is_err(), "still missing");
        shared.gate.pushed(1);
        assert!(ask().await.is_ok(), "a push arrived");
        shared.gate.set_missed_pushes(1, true);
        shared.gate.set_missed_pushes(1, false);
        assert!(ask().await.is_ok(), "reports match again");
    }
}
