//! `Admin` on the broker: forwards each request to the active controller, so clients
//! need only a bootstrap broker address. Tries the last controller that answered as
//! active first, then the others.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::limits::CONTROL_MESSAGE_BYTES_MAX;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::{self, admin_server};
use sluice_proto::ErrorCode;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::Shared;

pub(crate) struct AdminProxy(pub(crate) Arc<Shared>);

/// A channel to a controller (or any peer) for ordinary calls, each bounded at 30 s.
pub(crate) fn channel(addr: &str) -> Result<Channel, Status> {
    Ok(endpoint(addr)?
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

/// A channel to a leader for the replication stream: no per-call deadline (the stream
/// lives as long as the pair does; each fetch is bounded by the follower) and large
/// windows so one stream is not window-bound.
pub(crate) fn replication_channel(addr: &str) -> Result<Channel, Status> {
    Ok(endpoint(addr)?
        .tcp_nodelay(true)
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(64 << 20)
        .connect_lazy())
}

/// What every broker-to-peer channel shares. HTTP/2 pings find a peer that is stopped
/// (SIGSTOP, a hung host) within ~1.5 s: its kernel still accepts the connection, only
/// the pings go unanswered. Long calls (registration waits for pushes) stay possible.
fn endpoint(addr: &str) -> Result<Endpoint, Status> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_millis(500))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true))
}

/// Whether an answer says "ask another controller".
trait NotActive {
    fn not_active(&self) -> bool;
}
impl NotActive for v1::AdminResult {
    fn not_active(&self) -> bool {
        self.error_code == ErrorCode::NotController.code()
    }
}
impl NotActive for v1::CreateTopicResponse {
    fn not_active(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.not_active())
    }
}
impl NotActive for v1::ElectLeadersResponse {
    fn not_active(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.not_active())
    }
}
impl NotActive for v1::InitProducerIdResponse {
    fn not_active(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.not_active())
    }
}
impl NotActive for v1::CreateAclsResponse {
    fn not_active(&self) -> bool {
        self.results.first().is_some_and(|r| r.not_active())
    }
}
impl NotActive for v1::DeleteAclsResponse {
    fn not_active(&self) -> bool {
        self.results
            .first()
            .and_then(|r| r.result.as_ref())
            .is_some_and(|r| r.not_active())
    }
}
impl NotActive for v1::DescribeAclsResponse {
    fn not_active(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.not_active())
    }
}
impl NotActive for v1::DescribeClusterResponse {
    fn not_active(&self) -> bool {
        false
    }
}
impl NotActive for v1::MetadataResponse {
    fn not_active(&self) -> bool {
        false
    }
}

impl AdminProxy {
    async fn forward<T: NotActive, F, Fut>(&self, call: F) -> Result<Response<T>, Status>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let controllers = &self.0.config.controllers;
        let start = self.0.controller_hint.load(Ordering::Relaxed);
        let mut last = Status::unavailable("no controller address configured");
        for i in 0..controllers.len() {
            let idx = (start + i) % controllers.len();
            let client = AdminClient::new(channel(&controllers[idx])?)
                .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CONTROL_MESSAGE_BYTES_MAX);
            match call(client).await {
                Ok(resp) if !resp.get_ref().not_active() => {
                    self.0.controller_hint.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(_) => {
                    last = Status::unavailable(format!(
                        "controller {} is not active",
                        controllers[idx]
                    ))
                }
                Err(status) => last = status,
            }
        }
        Err(Status::unavailable(format!(
            "no active controller reachable: {}",
            last.message()
        )))
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminProxy {
    async fn reassign_partition(
        &self,
        req: Request<v1::ReassignPartitionRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.reassign_partition(r).await }
        })
        .await
    }

    async fn create_partitions(
        &self,
        req: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.create_partitions(r).await }
        })
        .await
    }

    async fn init_producer_id(
        &self,
        req: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| async move { c.init_producer_id(r).await })
            .await
    }

    async fn create_acls(
        &self,
        req: Request<v1::CreateAclsRequest>,
    ) -> Result<Response<v1::CreateAclsResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.create_acls(r).await }
        })
        .await
    }

    async fn delete_acls(
        &self,
        req: Request<v1::DeleteAclsRequest>,
    ) -> Result<Response<v1::DeleteAclsResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.delete_acls(r).await }
        })
        .await
    }

    async fn describe_acls(
        &self,
        req: Request<v1::AclFilter>,
    ) -> Result<Response<v1::DescribeAclsResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.describe_acls(r).await }
        })
        .await
    }

    async fn elect_leaders(
        &self,
        req: Request<v1::ElectLeadersRequest>,
    ) -> Result<Response<v1::ElectLeadersResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.elect_leaders(r).await }
        })
        .await
    }

    async fn create_topic(
        &self,
        req: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.create_topic(r).await }
        })
        .await
    }

    async fn delete_topic(
        &self,
        req: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        if r.name == super::OFFSETS_TOPIC {
            return Ok(Response::new(internal_topic(&r.name, "deleted")));
        }
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.delete_topic(r).await }
        })
        .await
    }

    async fn alter_configs(
        &self,
        req: Request<v1::AlterConfigsRequest>,
    ) -> Result<Response<v1::AdminResult>, Status> {
        let r = req.into_inner();
        if r.topic == super::OFFSETS_TOPIC {
            return Ok(Response::new(internal_topic(&r.topic, "reconfigured")));
        }
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.alter_configs(r).await }
        })
        .await
    }

    async fn describe_cluster(
        &self,
        req: Request<v1::DescribeClusterRequest>,
    ) -> Result<Response<v1::DescribeClusterResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| async move { c.describe_cluster(r).await })
            .await
    }

    async fn describe_topics(
        &self,
        req: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        let r = req.into_inner();
        self.forward(|mut c| {
            let r = r.clone();
            async move { c.describe_topics(r).await }
        })
        .await
    }
}

/// The group coordinator owns `__consumer_offsets`: its records are group state, its
/// configs (compaction, record size) what the coordinator relies on.
fn internal_topic(name: &str, what: &str) -> v1::AdminResult {
    v1::AdminResult {
        error_code: ErrorCode::InvalidTopic.code(),
        error_message: format!("{name} is an internal topic and cannot be {what} by clients"),
    }
}
