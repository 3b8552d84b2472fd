//! `BrokerControl`: what the controller tells this broker. Every request carries the
//! controller epoch; one older than the newest seen is refused (a deposed controller
//! can change nothing). A request for an older broker epoch (aimed at a previous run
//! of this broker) is refused too.
//!
//! Pushes apply one at a time and in the order the controller queued them: each carries
//! a `push_seq`, and one numbered below a push already applied (in the same controller
//! epoch) is ignored. A request sent on a connection that then died can still land, by
//! TCP retransmission, after newer pushes went through on a fresh connection; applied
//! then, a StopReplica for a deleted topic would delete the re-created topic's replica
//! that a later push had just created (tests/reconcile.rs).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_proto::topic_config::LogConfig;
use sluice_proto::v1::{self, broker_control_server};
use sluice_proto::{BrokerId, ErrorCode, LeaderEpoch, TopicPartition};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::Shared;
use crate::log::TopicId;
use crate::replica::Role;

pub(crate) struct Control(pub(crate) Arc<Shared>);

/// The newest control push applied: (controller epoch, push_seq).
#[derive(Debug, Default)]
pub(crate) struct PushOrder {
    controller_epoch: i64,
    seq: u64,
}

impl PushOrder {
    /// Whether a push numbered `seq` from controller epoch `controller_epoch` (already
    /// checked to be no older than the newest seen) may apply; remembers it if so. The
    /// same number again applies again: a retry of a push whose first attempt timed out
    /// on the controller's side, and applying a push twice changes nothing.
    pub(crate) fn admit(&mut self, controller_epoch: i64, seq: u64) -> bool {
        if seq == 0 {
            return true;
        }
        if controller_epoch != self.controller_epoch {
            if controller_epoch < self.controller_epoch {
                return false;
            }
            *self = PushOrder {
                controller_epoch,
                seq,
            };
            return true;
        }
        if seq < self.seq {
            return false;
        }
        self.seq = seq;
        true
    }
}

/// Answer to a push older than one applied: accepted (it is not an error the controller
/// could act on), not applied.
fn superseded(kind: &str, seq: u64, order: &PushOrder) -> v1::ControlResponse {
    info!(
        kind,
        push_seq = seq,
        newest_applied = order.seq,
        "ignoring a control push older than one already applied (delayed on the network)"
    );
    ok()
}

fn ok() -> v1::ControlResponse {
    v1::ControlResponse::default()
}

fn refuse(code: ErrorCode, message: String) -> v1::ControlResponse {
    warn!(%code, message, "refused a controller request");
    v1::ControlResponse {
        error_code: code.code(),
        error_message: message,
    }
}

impl Control {
    /// Accepts `epoch` if it is at least the newest seen, remembering it.
    fn check_controller(&self, epoch: i64) -> Result<(), v1::ControlResponse> {
        let seen = self.0.controller_epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch < seen {
            return Err(refuse(
                ErrorCode::StaleControllerEpoch,
                format!("controller epoch {epoch} is older than {seen}"),
            ));
        }
        Ok(())
    }

    /// Takes the push-order lock for a push of `kind` numbered `seq`, held while it
    /// applies; answers a push older than one applied without applying it.
    async fn admit(
        &self,
        kind: &str,
        controller_epoch: i64,
        seq: u64,
    ) -> Result<tokio::sync::MutexGuard<'_, PushOrder>, v1::ControlResponse> {
        let mut order = self.0.control_order.lock().await;
        if !order.admit(controller_epoch, seq) {
            return Err(superseded(kind, seq, &order));
        }
        self.0.gate.pushed(self.0.config.id);
        Ok(order)
    }

    fn check_broker_epoch(&self, epoch: i64) -> Result<(), v1::ControlResponse> {
        let mine = self.0.broker_epoch.load(Ordering::Acquire);
        // A newer epoch is this broker's registration whose answer has not arrived yet.
        if epoch < mine {
            return Err(refuse(
                ErrorCode::StaleBrokerEpoch,
                format!("broker epoch {epoch} is older than {mine}"),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl broker_control_server::BrokerControl for Control {
    async fn leader_and_isr(
        &self,
        req: Request<v1::LeaderAndIsrRequest>,
    ) -> Result<Response<v1::ControlResponse>, Status> {
        let r = req.into_inner();
        if let Err(resp) = self
            .check_controller(r.controller_epoch)
            .and_then(|_| self.check_broker_epoch(r.broker_epoch))
        {
            return Ok(Response::new(resp));
        }
        let _order = match self
            .admit("LeaderAndIsr", r.controller_epoch, r.push_seq)
            .await
        {
            Ok(guard) => guard,
            Err(resp) => return Ok(Response::new(resp)),
        };
        if r.full_state {
            // A reconciliation: replicas this broker holds that the controller no longer
            // gives it (a StopReplica it missed) are stopped and deleted, as that push
            // would have done.
            let listed: std::collections::HashSet<(String, u32)> = r
                .partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect();
            let strays: Vec<TopicPartition> = self
                .0
                .replicas
                .partitions()
                .into_iter()
                .map(|p| p.tp.clone())
                .filter(|tp| !listed.contains(&(tp.topic.clone(), tp.partition)))
                .collect();
            for tp in strays {
                info!(partition = %tp, "not this broker's any more (full state from the controller): stopping and deleting the replica");
                let shared = self.0.clone();
                let stopped = tokio::task::spawn_blocking(move || {
                    shared.replicas.stop_replica(&tp, true).map_err(|e| (tp, e))
                })
                .await;
                if let Ok(Err((tp, (code, message)))) = stopped {
                    warn!(partition = %tp, %code, message, "could not stop a stray replica");
                }
            }
        }
        // Every partition is applied, whatever an earlier one answered; the refusals
        // are reported together (the controller re-sends what the heartbeat digests
        // still show as different). On a blocking thread: a role creates, deletes or
        // truncates logs and rebuilds producer state from them, for every partition of
        // the request.
        let shared = self.0.clone();
        let partitions = r.partitions;
        let refused = tokio::task::spawn_blocking(move || apply_roles(&shared, partitions))
            .await
            .map_err(|e| Status::internal(format!("applying LeaderAndIsr failed: {e}")))?;
        match refused.first() {
            None => Ok(Response::new(ok())),
            Some((_, code, _)) => {
                let all: Vec<String> = refused
                    .iter()
                    .map(|(tp, code, message)| format!("{tp}: {message} [{code}]"))
                    .collect();
                Ok(Response::new(refuse(
                    *code,
                    format!(
                        "{} of the partitions refused: {}",
                        refused.len(),
                        all.join("; ")
                    ),
                )))
            }
        }
    }

    async fn update_metadata(
        &self,
        req: Request<v1::UpdateMetadataRequest>,
    ) -> Result<Response<v1::ControlResponse>, Status> {
        let r = req.into_inner();
        if let Err(resp) = self.check_controller(r.controller_epoch) {
            return Ok(Response::new(resp));
        }
        let _order = match self
            .admit("UpdateMetadata", r.controller_epoch, r.push_seq)
            .await
        {
            Ok(guard) => guard,
            Err(resp) => return Ok(Response::new(resp)),
        };
        if let Some(md) = r.metadata {
            *self.0.metadata.write() = md;
            self.0.authorizer.write().acls = r
                .acls
                .iter()
                .map(sluice_proto::acl::AclBinding::from_proto)
                .collect();
            *self.0.resource_configs.write() = r
                .resource_configs
                .iter()
                .map(|c| {
                    let configs = c.configs.clone().into_iter().collect();
                    ((c.resource_type, c.resource_name.clone()), configs)
                })
                .collect();
        }
        // Not awaited: it waits for the roles lock, which a LeaderAndIsr may hold for
        // long, and this push's answer must not (the heartbeat loop starts it too).
        let shared = self.0.clone();
        tokio::spawn(async move { check_strays(&shared).await });
        Ok(Response::new(ok()))
    }

    async fn stop_replica(
        &self,
        req: Request<v1::StopReplicaRequest>,
    ) -> Result<Response<v1::ControlResponse>, Status> {
        let r = req.into_inner();
        if let Err(resp) = self
            .check_controller(r.controller_epoch)
            .and_then(|_| self.check_broker_epoch(r.broker_epoch))
        {
            return Ok(Response::new(resp));
        }
        let _order = match self
            .admit("StopReplica", r.controller_epoch, r.push_seq)
            .await
        {
            Ok(guard) => guard,
            Err(resp) => return Ok(Response::new(resp)),
        };
        for p in r.partitions {
            let tp = TopicPartition::new(p.topic, p.partition);
            let shared = self.0.clone();
            let result =
                tokio::task::spawn_blocking(move || shared.replicas.stop_replica(&tp, p.delete))
                    .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err((code, message))) => return Ok(Response::new(refuse(code, message))),
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        Ok(Response::new(ok()))
    }
}

/// The first metadata since registering is newer than every log on disk: the logs of
/// topics deleted while this broker was away can go. Runs once per process, from the
/// metadata push and from the heartbeat loop (the push that comes with registration can
/// land before the registration's answer, when the check cannot run yet).
pub(crate) async fn check_strays(shared: &Arc<Shared>) {
    if !shared.replicas.strays_checked() && super::readiness::registered(shared) {
        let topics: HashMap<String, Option<TopicId>> = shared
            .metadata
            .read()
            .topics
            .iter()
            .map(|t| (t.name.clone(), TopicId::parse(&t.topic_id)))
            .collect();
        let shared = shared.clone();
        let result =
            tokio::task::spawn_blocking(move || shared.replicas.delete_stray_logs(&topics)).await;
        match result {
            Ok(Ok(_)) => {}
            // The metadata itself is taken; a role for a re-created topic still
            // replaces such a log (`apply_role`).
            Ok(Err((code, message))) => {
                warn!(%code, message, "could not delete the logs of deleted topics")
            }
            Err(e) => warn!(error = %e, "could not delete the logs of deleted topics"),
        }
    }
}

/// Applies each partition's role of a LeaderAndIsr (blocking: touches logs); returns
/// the refusals.
fn apply_roles(
    shared: &Shared,
    partitions: Vec<v1::PartitionState>,
) -> Vec<(TopicPartition, ErrorCode, String)> {
    let defaults = &shared.config.log_defaults;
    let mut refused: Vec<(TopicPartition, ErrorCode, String)> = Vec::new();
    for p in partitions {
        let tp = TopicPartition::new(p.topic.clone(), p.partition);
        let config = match defaults
            .with_overrides(p.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            Ok(c) => c,
            Err(e) => {
                warn!(partition = %tp, error = %e, "invalid topic config from the controller; using broker defaults");
                LogConfig::clone(defaults)
            }
        };
        let Some(leader_epoch) = LeaderEpoch::from_wire(p.leader_epoch) else {
            warn!(partition = %tp, leader_epoch = p.leader_epoch, "ignored a partition state without a leader epoch");
            continue;
        };
        let topic_id = TopicId::parse(&p.topic_id);
        let role = Role {
            leader: (p.leader >= 0).then_some(BrokerId(p.leader as u32)),
            leader_epoch,
            replicas: p.replicas.into_iter().map(BrokerId).collect(),
            isr: p.isr.into_iter().map(BrokerId).collect(),
            partition_epoch: p.partition_epoch,
        };
        if let Err((code, message)) =
            shared
                .replicas
                .apply_role(&tp, role, config, topic_id.as_ref())
        {
            refused.push((tp, code, message));
        }
    }
    refused
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
