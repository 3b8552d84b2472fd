//! The controller's gRPC services: `Admin` and `ControllerApi`. Thin: decode, call the
//! state machine under the active lock and stage the change, write it after releasing
//! the lock (its pushes follow the write), encode. Heartbeats only take the state lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_proto::acl::{AclBinding, AclFilter};
use sluice_proto::limits::CONTROL_MESSAGE_BYTES_MAX;
use sluice_proto::v1::{self, admin_server, controller_api_server};
use sluice_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::pusher::PushAck;
use crate::state::{Action, Rejection, Reported, RECONCILE_AFTER};
use crate::store::StoreError;
use crate::writer::Staged;
use crate::Shared;

fn result(code: ErrorCode, message: impl Into<String>) -> v1::AdminResult {
    v1::AdminResult {
        error_code: code.code(),
        error_message: message.into(),
    }
}

fn not_controller(shared: &Shared) -> v1::AdminResult {
    result(
        ErrorCode::NotController,
        format!(
            "controller {} is not the active controller",
            shared.config.id
        ),
    )
}

#[derive(Clone)]
struct Svc(Arc<Shared>);

impl Svc {
    /// Runs a mutation on the active controller and commits it.
    async fn mutate(
        &self,
        f: impl FnOnce(&mut crate::state::ClusterState) -> Result<Vec<Action>, Rejection>,
    ) -> v1::AdminResult {
        let staged = {
            let mut guard = self.0.active.lock().await;
            let Some(active) = guard.as_mut() else {
                return not_controller(&self.0);
            };
            match f(&mut active.state) {
                Ok(actions) => active.stage(actions, &self.0.pusher),
                Err((code, message)) => return result(code, message),
            }
        };
        let acks = match write(staged).await {
            Ok(acks) => acks,
            Err(e) => {
                let message = format!("metadata store write failed: {e}");
                return result(ErrorCode::UnknownServerError, message);
            }
        };
        // Answer once brokers know: a client that hears "created" can use the topic.
        crate::await_pushes(acks).await;
        result(ErrorCode::None, "")
    }
}

impl Svc {
    /// Runs `f` on a copy of the state, which is thrown away (Kafka's `validate_only`):
    /// its verdict, and with `topic` the topic's metadata as `f` left it.
    async fn dry_run(
        &self,
        topic: Option<&str>,
        f: impl FnOnce(&mut crate::state::ClusterState) -> Result<Vec<Action>, Rejection>,
    ) -> (v1::AdminResult, Option<v1::TopicMetadata>) {
        let guard = self.0.active.lock().await;
        let Some(active) = guard.as_ref() else {
            return (not_controller(&self.0), None);
        };
        let mut copy = active.state.clone();
        match f(&mut copy) {
            Ok(_) => (
                result(ErrorCode::None, ""),
                topic.and_then(|t| copy.metadata(&[t.to_string()]).topics.pop()),
            ),
            Err((code, message)) => (result(code, message), None),
        }
    }
}

/// Writes a change staged under the state lock; call after releasing it.
async fn write(staged: Result<Staged, StoreError>) -> Result<Vec<PushAck>, StoreError> {
    staged?.write().await
}

fn random_topic_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[tonic::async_trait]
impl admin_server::Admin for Svc {
    async fn reassign_partition(
        &self,
        req: Request<v1::ReassignPartitionRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.mutate(|s| s.reassign(&r.topic, r.partition, r.replicas))
                .await,
        ))
    }

    async fn create_partitions(
        &self,
        req: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        Ok(Response::new({
            let lists: Vec<Vec<u32>> = r.assignments.iter().map(|l| l.replicas.clone()).collect();
            let f =
                |s: &mut crate::state::ClusterState| s.create_partitions(&r.topic, r.total, lists);
            if r.validate_only {
                self.dry_run(None, f).await.0
            } else {
                self.mutate(f).await
            }
        }))
    }

    async fn init_producer_id(
        &self,
        _: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        let mut id = -1;
        let res = self
            .mutate(|s| {
                id = s.init_producer_id();
                Ok(Vec::new())
            })
            .await;
        Ok(Response::new(v1::InitProducerIdResponse {
            result: Some(res),
            producer_id: id,
            producer_epoch: 0,
        }))
    }

    async fn create_acls(
        &self,
        req: Request<v1::CreateAclsRequest>,
    ) -> Result<Response<v1::CreateAclsResponse>, Status> {
        let acls: Vec<AclBinding> = req
            .into_inner()
            .acls
            .iter()
            .map(AclBinding::from_proto)
            .collect();
        let mut verdicts = Vec::new();
        let res = self.mutate(|s| s.create_acls(&acls, &mut verdicts)).await;
        let results = if res.error_code != 0 {
            vec![res; acls.len()]
        } else {
            let added = verdicts.iter().filter(|v| v.is_ok()).count();
            if added > 0 {
                info!(acls = added, "created ACLs");
            }
            verdicts
                .into_iter()
                .map(|v| match v {
                    Ok(()) => result(ErrorCode::None, ""),
                    Err((code, message)) => result(code, message),
                })
                .collect()
        };
        Ok(Response::new(v1::CreateAclsResponse { results }))
    }

    async fn delete_acls(
        &self,
        req: Request<v1::DeleteAclsRequest>,
    ) -> Result<Response<v1::DeleteAclsResponse>, Status> {
        let filters: Vec<AclFilter> = req
            .into_inner()
            .filters
            .iter()
            .map(AclFilter::from_proto)
            .collect();
        let mut removed = Vec::new();
        let res = self.mutate(|s| s.delete_acls(&filters, &mut removed)).await;
        let results = if res.error_code != 0 {
            filters
                .iter()
                .map(|_| v1::DeleteAclsFilterResult {
                    result: Some(res.clone()),
                    deleted: Vec::new(),
                })
                .collect()
        } else {
            removed
                .into_iter()
                .map(|r| match r {
                    Ok(gone) => {
                        if !gone.is_empty() {
                            info!(acls = gone.len(), "deleted ACLs");
                        }
                        v1::DeleteAclsFilterResult {
                            result: Some(result(ErrorCode::None, "")),
                            deleted: gone.iter().map(AclBinding::to_proto).collect(),
                        }
                    }
                    Err((code, message)) => v1::DeleteAclsFilterResult {
                        result: Some(result(code, message)),
                        deleted: Vec::new(),
                    },
                })
                .collect()
        };
        Ok(Response::new(v1::DeleteAclsResponse { results }))
    }

    async fn describe_acls(
        &self,
        req: Request<v1::AclFilter>,
    ) -> Result<Response<v1::DescribeAclsResponse>, Status> {
        let filter = AclFilter::from_proto(&req.into_inner());
        if let Err(e) = filter.validate() {
            return Ok(Response::new(v1::DescribeAclsResponse {
                result: Some(result(ErrorCode::InvalidRequest, e.to_string())),
                acls: Vec::new(),
            }));
        }
        match self.0.active.lock().await.as_ref() {
            Some(a) => Ok(Response::new(v1::DescribeAclsResponse {
                result: Some(result(ErrorCode::None, "")),
                acls: a
                    .state
                    .snap
                    .acls
                    .iter()
                    .filter(|b| filter.matches(b))
                    .map(AclBinding::to_proto)
                    .collect(),
            })),
            None => Err(Status::unavailable(not_controller(&self.0).error_message)),
        }
    }

    async fn elect_leaders(
        &self,
        req: Request<v1::ElectLeadersRequest>,
    ) -> Result<Response<v1::ElectLeadersResponse>, Status> {
        let req = req.into_inner();
        let topic = req.topic;
        let mut changed = 0;
        let mut outcomes = Vec::new();
        let res = if req.partitions.is_empty() {
            self.mutate(|s| {
                let (n, actions) =
                    s.elect_preferred((!topic.is_empty()).then_some(topic.as_str()))?;
                changed = n;
                Ok(actions)
            })
            .await
        } else {
            let wanted: std::collections::BTreeSet<(String, u32)> = req
                .partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect();
            self.mutate(|s| {
                let (found, actions) =
                    s.elect_preferred_where(|t, p| wanted.contains(&(t.to_string(), p)));
                changed = found.iter().filter(|o| o.2 == ErrorCode::None).count() as u32;
                let mut seen = std::collections::BTreeSet::new();
                outcomes = found
                    .into_iter()
                    .map(|(topic, partition, code)| {
                        seen.insert((topic.clone(), partition));
                        v1::ElectionOutcome {
                            topic,
                            partition,
                            error_code: code.code(),
                        }
                    })
                    .collect();
                outcomes.extend(wanted.difference(&seen).map(|(topic, partition)| {
                    v1::ElectionOutcome {
                        topic: topic.clone(),
                        partition: *partition,
                        error_code: ErrorCode::UnknownTopicOrPartition.code(),
                    }
                }));
                Ok(actions)
            })
            .await
        };
        Ok(Response::new(v1::ElectLeadersResponse {
            result: Some(res),
            changed,
            outcomes,
        }))
    }

    async fn create_topic(
        &self,
        req: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let r = req.into_inner();
        let configs: BTreeMap<String, String> = r.configs.into_iter().collect();
        if r.validate_only {
            let lists = r.assignments.iter().map(|l| l.replicas.clone()).collect();
            let (res, topic) = self
                .dry_run(Some(&r.name), |s| {
                    s.create_topic(
                        &r.name,
                        r.partitions,
                        r.replication_factor,
                        configs,
                        random_topic_id(),
                        lists,
                    )
                })
                .await;
            return Ok(Response::new(v1::CreateTopicResponse {
                result: Some(res),
                topic,
            }));
        }
        let res = self
            .mutate(|s| {
                s.create_topic(
                    &r.name,
                    r.partitions,
                    r.replication_factor,
                    configs,
                    random_topic_id(),
                    r.assignments.iter().map(|l| l.replicas.clone()).collect(),
                )
            })
            .await;
        if res.error_code == 0 {
            info!(
                topic = r.name,
                partitions = r.partitions,
                replication_factor = r.replication_factor,
                "created topic"
            );
        }
        let topic = match self.0.active.lock().await.as_ref() {
            Some(a) if res.error_code == 0 => a.state.metadata(&[r.name]).topics.pop(),
            _ => None,
        };
        Ok(Response::new(v1::CreateTopicResponse {
            result: Some(res),
            topic,
        }))
    }

    async fn delete_topic(
        &self,
        req: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let name = req.into_inner().name;
        Ok(Response::new(self.mutate(|s| s.delete_topic(&name)).await))
    }

    async fn alter_configs(
        &self,
        req: Request<v1::AlterConfigsRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        let set: BTreeMap<String, String> = r.set.into_iter().collect();
        let topic = matches!(
            r.resource_type,
            0 | sluice_proto::dynamic_config::RESOURCE_TOPIC
        );
        Ok(Response::new(
            self.mutate(|s| {
                if topic {
                    s.alter_configs(&r.topic, set, &r.delete)
                } else {
                    s.alter_resource_configs(r.resource_type, &r.topic, set, &r.delete)
                }
            })
            .await,
        ))
    }

    async fn describe_cluster(
        &self,
        _: Request<v1::DescribeClusterRequest>,
    ) -> Result<Response<v1::DescribeClusterResponse>, Status> {
        match self.0.active.lock().await.as_ref() {
            Some(a) => Ok(Response::new(a.state.cluster())),
            None => Err(Status::unavailable(not_controller(&self.0).error_message)),
        }
    }

    async fn describe_topics(
        &self,
        req: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        match self.0.active.lock().await.as_ref() {
            Some(a) => Ok(Response::new(a.state.metadata(&req.into_inner().topics))),
            None => Err(Status::unavailable(not_controller(&self.0).error_message)),
        }
    }
}

#[tonic::async_trait]
impl controller_api_server::ControllerApi for Svc {
    async fn controlled_shutdown(
        &self,
        req: Request<v1::ControlledShutdownRequest>,
    ) -> Result<Response<v1::ControlledShutdownResponse>, Status> {
        let r = req.into_inner();
        let mut remaining = 0;
        let res = self
            .mutate(|s| {
                let (n, actions) = s.controlled_shutdown(r.broker_id, r.broker_epoch)?;
                remaining = n;
                Ok(actions)
            })
            .await;
        Ok(Response::new(v1::ControlledShutdownResponse {
            error_code: res.error_code,
            error_message: res.error_message,
            remaining_leaderships: remaining,
        }))
    }

    async fn alter_partition(
        &self,
        req: Request<v1::AlterPartitionRequest>,
    ) -> Result<Response<v1::AlterPartitionResponse>, Status> {
        let r = req.into_inner();
        let (state, staged) = {
            let mut guard = self.0.active.lock().await;
            let Some(active) = guard.as_mut() else {
                let nc = not_controller(&self.0);
                return Ok(Response::new(v1::AlterPartitionResponse {
                    error_code: nc.error_code,
                    error_message: nc.error_message,
                    state: None,
                }));
            };
            let outcome = active.state.alter_partition(
                r.broker_id,
                r.broker_epoch,
                &r.topic,
                r.partition,
                r.leader_epoch,
                r.partition_epoch,
                r.new_isr,
            );
            match outcome {
                Ok((state, actions)) => (state, active.stage(actions, &self.0.pusher)),
                Err((code, message)) => {
                    return Ok(Response::new(v1::AlterPartitionResponse {
                        error_code: code.code(),
                        error_message: message,
                        state: None,
                    }));
                }
            }
        };
        let acks = write(staged)
            .await
            .map_err(|e| Status::internal(format!("metadata store write failed: {e}")))?;
        crate::await_pushes(acks).await;
        Ok(Response::new(v1::AlterPartitionResponse {
            error_code: 0,
            error_message: String::new(),
            state: Some(state),
        }))
    }

    async fn alter_partitions(
        &self,
        req: Request<v1::AlterPartitionsRequest>,
    ) -> Result<Response<v1::AlterPartitionsResponse>, Status> {
        let r = req.into_inner();
        let (answers, staged) = {
            let mut guard = self.0.active.lock().await;
            let Some(active) = guard.as_mut() else {
                let nc = not_controller(&self.0);
                let refused = v1::AlterPartitionResponse {
                    error_code: nc.error_code,
                    error_message: nc.error_message,
                    state: None,
                };
                return Ok(Response::new(v1::AlterPartitionsResponse {
                    partitions: vec![refused; r.partitions.len()],
                }));
            };
            let mut answers = Vec::with_capacity(r.partitions.len());
            let mut actions = Vec::new();
            for p in r.partitions {
                // The batch's broker and epoch, whatever an item says.
                let outcome = active.state.alter_partition(
                    r.broker_id,
                    r.broker_epoch,
                    &p.topic,
                    p.partition,
                    p.leader_epoch,
                    p.partition_epoch,
                    p.new_isr,
                );
                answers.push(match outcome {
                    Ok((state, more)) => {
                        actions.extend(more);
                        v1::AlterPartitionResponse {
                            error_code: 0,
                            error_message: String::new(),
                            state: Some(state),
                        }
                    }
                    Err((code, message)) => v1::AlterPartitionResponse {
                        error_code: code.code(),
                        error_message: message,
                        state: None,
                    },
                });
            }
            let committed = answers.iter().any(|a| a.error_code == 0);
            (
                answers,
                committed.then(|| active.stage(actions, &self.0.pusher)),
            )
        };
        if let Some(staged) = staged {
            // Answered once stored; the pushes follow on their own. Waiting for them
            // (as the single-partition call does) would let one unreachable replica
            // hold up every ISR change of the batch.
            write(staged)
                .await
                .map_err(|e| Status::internal(format!("metadata store write failed: {e}")))?;
        }
        Ok(Response::new(v1::AlterPartitionsResponse {
            partitions: answers,
        }))
    }

    async fn register_broker(
        &self,
        req: Request<v1::RegisterBrokerRequest>,
    ) -> Result<Response<v1::RegisterBrokerResponse>, Status> {
        let r = req.into_inner();
        let mut guard = self.0.active.lock().await;
        let Some(active) = guard.as_mut() else {
            let nc = not_controller(&self.0);
            return Ok(Response::new(v1::RegisterBrokerResponse {
                error_code: nc.error_code,
                error_message: nc.error_message,
                ..Default::default()
            }));
        };
        let now = Instant::now();
        if let Err((code, message)) =
            active
                .state
                .admit_registration(r.broker_id, &r.addr, r.incarnation, now)
        {
            drop(guard);
            if code == ErrorCode::DuplicateBrokerRegistration {
                warn!(broker = r.broker_id, addr = r.addr, %message, "duplicate broker registration refused");
            }
            return Ok(Response::new(v1::RegisterBrokerResponse {
                error_code: code.code(),
                error_message: message,
                ..Default::default()
            }));
        }
        let rack = (!r.rack.is_empty()).then_some(r.rack);
        let (epoch, actions) =
            active
                .state
                .register(r.broker_id, r.addr.clone(), rack, r.incarnation, now);
        let kafka_addr = (!r.kafka_addr.is_empty()).then(|| r.kafka_addr.clone());
        active.state.set_kafka_addr(r.broker_id, kafka_addr);
        let staged = active.stage(actions, &self.0.pusher);
        active.state.touch(r.broker_id, Instant::now());
        let controller_epoch = active.state.controller_epoch();
        drop(guard);
        let acks = write(staged)
            .await
            .map_err(|e| Status::internal(format!("metadata store write failed: {e}")))?;
        // Answer once the broker holds its partitions: "registered" then means "serving".
        // Only its own pushes: a dead peer must not delay (and so fence) it. And not for
        // longer than half a session: until it has its epoch the broker cannot heartbeat,
        // so a wait past the session timeout (a LeaderAndIsr of ten thousand partitions
        // takes longer to apply) fenced it, re-election re-sent everything, and the
        // broker registered again — for good (found restarting 10,000 partitions).
        let own = crate::await_pushes(acks.into_iter().filter(|(b, _)| *b == r.broker_id));
        if tokio::time::timeout(self.0.config.session_timeout / 2, own)
            .await
            .is_err()
        {
            info!(
                broker = r.broker_id,
                "answering a registration before the broker applied its partitions (it keeps applying them)"
            );
        }
        info!(
            broker = r.broker_id,
            addr = r.addr,
            broker_epoch = epoch,
            "broker registered"
        );
        Ok(Response::new(v1::RegisterBrokerResponse {
            error_code: 0,
            error_message: String::new(),
            broker_epoch: epoch,
            controller_epoch,
            controller_id: self.0.config.id,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let mut guard = self.0.active.lock().await;
        let Some(active) = guard.as_mut() else {
            let nc = not_controller(&self.0);
            return Ok(Response::new(v1::HeartbeatResponse {
                error_code: nc.error_code,
                error_message: nc.error_message,
                controller_epoch: 0,
                missed_pushes: false,
            }));
        };
        let epoch = active.state.controller_epoch();
        let now = Instant::now();
        Ok(Response::new(
            match active.state.heartbeat(r.broker_id, r.broker_epoch, now) {
                Ok(()) => {
                    if r.reports_state {
                        let reported = Reported {
                            roles_digest: r.roles_digest,
                            metadata_digest: Some(r.metadata_digest),
                        };
                        let actions = active.state.reconcile(r.broker_id, reported, now);
                        if active
                            .state
                            .confirm_deletions(r.broker_id, r.strays_deleted)
                        {
                            // Stored off the heartbeat's path; a lost write only means
                            // a later heartbeat confirms again.
                            let staged = active.stage(Vec::new(), &self.0.pusher);
                            metrics::gauge!("sluice_controller_pending_deletions")
                                .set(active.state.pending_deletions() as f64);
                            tokio::spawn(async move {
                                if let Err(e) = write(staged).await {
                                    warn!(error = %e, "could not store confirmed deletions");
                                }
                            });
                        }
                        metrics::gauge!("sluice_controller_brokers_out_of_sync")
                            .set(active.state.brokers_out_of_sync() as f64);
                        if !actions.is_empty() {
                            info!(
                                broker = r.broker_id,
                                "the broker reports state other than the controller's for {:?}: re-sending it",
                                RECONCILE_AFTER
                            );
                            metrics::counter!("sluice_controller_reconciliations_total")
                                .increment(1);
                            active.dispatch_when_durable(actions, &self.0.pusher);
                        }
                    }
                    v1::HeartbeatResponse {
                        error_code: 0,
                        error_message: String::new(),
                        controller_epoch: epoch,
                        missed_pushes: active.state.missed_pushes(r.broker_id),
                    }
                }
                Err((code, message)) => v1::HeartbeatResponse {
                    error_code: code.code(),
                    error_message: message,
                    controller_epoch: epoch,
                    missed_pushes: false,
                },
            },
        ))
    }
}

/// Serves both services on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let svc = Svc(shared);
    tonic::transport::Server::builder()
        .add_service(
            admin_server::AdminServer::new(svc.clone())
                .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
        )
        .add_service(
            controller_api_server::ControllerApiServer::new(svc)
                .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener).map(|s| {
                s.inspect(|s| {
                    let _ = s.set_nodelay(true);
                })
            }),
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::{ClusterState, Snapshot};
    use crate::store::Store;
    use crate::writer::Writer;
    use crate::{Active, ControllerConfig};

    /// An active controller on an embedded store in `dir`, with broker 1 registered.
    async fn active(dir: &std::path::Path) -> (Svc, Arc<Writer>, i64) {
        let spec = format!("embedded:{}", dir.display());
        let mut store = Store::open(&spec, Duration::from_secs(1)).unwrap();
        let epoch = store.acquire(1, Duration::from_millis(10)).await;
        let now = Instant::now();
        let mut state =
            ClusterState::new(Snapshot::default(), now, Duration::from_secs(60), 1, epoch);
        // A port nothing listens on: pushes fail fast and are given up.
        let (broker_epoch, _) = state.register(1, "127.0.0.1:1".into(), None, 7, now);
        let writer = Arc::new(Writer::new(store));
        let shared = Arc::new(Shared {
            config: ControllerConfig::default(),
            active: tokio::sync::Mutex::new(Some(Active::new(state, writer.clone()))),
            pusher: Default::default(),
        });
        (Svc(shared), writer, broker_epoch)
    }

    #[tokio::test]
    async fn heartbeats_and_describes_do_not_wait_for_a_slow_store_write() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, writer, broker_epoch) = active(dir.path()).await;
        let stalled = writer.stall().await;
        let create = tokio::spawn({
            let svc = svc.clone();
            async move {
                let req = v1::CreateTopicRequest {
                    name: "t".into(),
                    partitions: 1,
                    replication_factor: 1,
                    configs: Default::default(),
                    assignments: Vec::new(),
                    validate_only: false,
                };
                admin_server::Admin::create_topic(&svc, Request::new(req)).await
            }
        });
        // The creation has changed the state and now waits for its write.
        let staged = async {
            while !svc
                .0
                .active
                .lock()
                .await
                .as_ref()
                .unwrap()
                .state
                .snap
                .topics
                .contains_key("t")
            {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), staged)
            .await
            .unwrap();
        let beat = v1::HeartbeatRequest {
            broker_id: 1,
            broker_epoch,
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            controller_api_server::ControllerApi::heartbeat(&svc, Request::new(beat)),
        )
        .await
        .expect("a heartbeat must not wait for the store")
        .unwrap();
        assert_eq!(answer.into_inner().error_code, 0);
        let describe = admin_server::Admin::describe_cluster(
            &svc,
            Request::new(v1::DescribeClusterRequest {}),
        );
        tokio::time::timeout(Duration::from_secs(1), describe)
            .await
            .expect("a describe must not wait for the store")
            .unwrap();
        assert!(!create.is_finished(), "the creation waits for its write");
        drop(stalled);
        let created = create.await.unwrap().unwrap().into_inner();
        assert_eq!(created.result.unwrap().error_code, 0);
        let mut store = writer.end_term().await.unwrap();
        assert!(store
            .load()
            .await
            .unwrap()
            .unwrap()
            .topics
            .contains_key("t"));
    }
}
