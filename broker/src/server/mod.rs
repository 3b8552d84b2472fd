//! The broker process: gRPC services over the [`ReplicaManager`], registration and
//! heartbeats to the controller, background log maintenance, graceful shutdown.
//!
//! Services are thin (decode, call the replica manager, encode). Startup: open the data
//! directory (crash recovery happens here), bind, serve, register with the controller,
//! which then pushes this broker's partitions; client requests are answered "not ready"
//! until then ([`readiness`]). Shutdown: stop accepting, let in-flight
//! requests finish, flush and close every log, write the clean-shutdown marker.

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod classic;
mod control;
mod fetcher;
mod groups;
pub(crate) mod groups_api;
mod lifecycle;
mod readiness;
pub(crate) mod txn;

pub use groups::{partition_for, OFFSETS_TOPIC};
pub use readiness::Readiness;

use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use sluice_proto::limits::CONTROL_MESSAGE_BYTES_MAX;
use sluice_proto::topic_config::LogConfig;
use sluice_proto::v1;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tracing::{error, info, warn};

use crate::log::{LogError, LogManager};
use crate::replica::ReplicaManager;

/// Accepted connections with Nagle off: `Server::tcp_nodelay` only applies to
/// listeners tonic binds itself, and Nagle plus delayed ACKs stalls replies ~40 ms.
pub fn nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    })
}

/// Per-broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub id: u32,
    /// Address other brokers, the controller and clients use to reach this broker.
    pub advertised_addr: String,
    /// Controller addresses; the active one is found by asking.
    pub controllers: Vec<String>,
    pub data_dir: PathBuf,
    pub rack: Option<String>,
    /// Broker-wide topic config defaults; topic configs override them.
    pub log_defaults: LogConfig,
    pub heartbeat_interval: Duration,
    /// How often retention, `flush.ms` and the recovery checkpoint run.
    pub maintenance_interval: Duration,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `producer.id.expiration.ms`: idempotent producer ids idle this long are forgotten.
    pub producer_id_expiration: Duration,
    /// Ask the controller to move leadership away (and this broker out of ISRs) before
    /// stopping. Off when the whole cluster stops at once (`sluice dev`): there is
    /// nowhere to move to, and the ISRs are best left whole for the next start.
    pub controlled_shutdown: bool,
    /// The log cleaner of this broker's data directory.
    pub cleaner: crate::log::CleanerConfig,
    /// Consumer group defaults and bounds (session timeout, offsets retention).
    pub groups: crate::group::coordinator::CoordinatorConfig,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when created.
    pub offsets_topic_partitions: u32,
    /// HOST:PORT of this broker's Kafka listener as clients should reach it, given to
    /// the controller at registration so Kafka Metadata answers list it (`None`: no
    /// Kafka listener).
    pub kafka_advertised: Option<String>,
    /// `auto.create.topics.enable` with `num.partitions`: a Kafka Metadata request for a
    /// topic that does not exist creates it with this many partitions (and the default
    /// replication factor: three, or every live broker when fewer). `None`: off.
    pub kafka_auto_create_partitions: Option<u32>,
    /// Whether (and how) Kafka-listener requests are authorized against the cluster's
    /// ACLs (docs/authorization.md). Default: off, everything allowed.
    pub authorizer: sluice_proto::acl::AuthorizerConfig,
}

impl BrokerConfig {
    pub fn new(
        id: u32,
        advertised_addr: String,
        controllers: Vec<String>,
        data_dir: PathBuf,
    ) -> BrokerConfig {
        BrokerConfig {
            id,
            advertised_addr,
            controllers,
            data_dir,
            rack: None,
            log_defaults: LogConfig::default(),
            heartbeat_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_millis(1000),
            max_message_bytes: 64 * 1024 * 1024,
            replica_lag_time_max: Duration::from_secs(10),
            producer_id_expiration: Duration::from_millis(
                sluice_proto::limits::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            ),
            cleaner: Default::default(),
            controlled_shutdown: true,
            groups: Default::default(),
            offsets_topic_partitions: 12,
            kafka_advertised: None,
            kafka_auto_create_partitions: None,
            authorizer: Default::default(),
        }
    }
}

/// Dynamic configs by (Kafka resource type, resource name).
pub(crate) type ResourceConfigs =
    std::collections::BTreeMap<(i32, String), std::collections::BTreeMap<String, String>>;

impl Shared {
    /// A group's own setting of a KIP-848 group config (`consumer.session.timeout.ms`,
    /// `consumer.heartbeat.interval.ms`, set with IncrementalAlterConfigs on its GROUP
    /// resource), in milliseconds; `None` where it has none.
    pub(crate) fn group_config_ms(&self, group: &str, name: &str) -> Option<u64> {
        self.resource_configs
            .read()
            .get(&(
                sluice_proto::dynamic_config::RESOURCE_GROUP,
                group.to_string(),
            ))
            .and_then(|c| c.get(name)?.parse().ok())
    }
}

pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) replicas: ReplicaManager,
    /// Highest controller epoch seen; older controllers are refused.
    pub(crate) controller_epoch: AtomicI64,
    /// This broker's epoch from its last registration (-1 before).
    pub(crate) broker_epoch: AtomicI64,
    /// The newest control push applied; held while one is applied, so pushes apply
    /// one at a time and never in an order older than they were sent.
    pub(crate) control_order: tokio::sync::Mutex<control::PushOrder>,
    /// The latest metadata pushed by the controller.
    pub(crate) metadata: RwLock<v1::MetadataResponse>,
    /// The authorizer: this broker's settings and the ACLs the controller last pushed.
    pub(crate) authorizer: RwLock<sluice_proto::acl::Authorizer>,
    /// The cluster's dynamic broker and group configs, as the controller last pushed
    /// them: by (Kafka resource type, resource name).
    pub(crate) resource_configs: RwLock<ResourceConfigs>,
    /// Index into `config.controllers` of the last controller that answered as active.
    pub(crate) controller_hint: std::sync::atomic::AtomicUsize,
    /// Set once the broker stops serving: long-polls answer at once and replication
    /// streams end, so a graceful shutdown does not wait on peers that keep them open.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Whether client requests are served yet.
    pub(crate) gate: readiness::Gate,
    /// Why the last registration attempt failed, per controller (`None` once
    /// registered): clients hear this instead of a bare "not ready".
    pub(crate) registration_failure: parking_lot::Mutex<Option<String>>,
    /// The group coordinators of the `__consumer_offsets` partitions this broker leads.
    pub(crate) groups: groups::GroupCoordinator,
}

/// A broker ready to serve.
pub struct Broker {
    pub(crate) shared: Arc<Shared>,
}

impl Broker {
    /// Opens the data directory, recovering logs after a crash. Partitions that fail
    /// to open are logged and stay offline; the rest are served.
    pub fn open(config: BrokerConfig) -> Result<Broker, LogError> {
        let (logs, failed) = LogManager::open(&config.data_dir, config.log_defaults.clone())?;
        for (tp, e) in failed {
            error!(partition = %tp, error = %e, "partition offline");
        }
        let replicas = ReplicaManager::new(config.id, logs);
        replicas.set_producer_id_expiration(config.producer_id_expiration);
        let groups =
            groups::GroupCoordinator::new(config.groups.clone(), config.offsets_topic_partitions);
        let authorizer = sluice_proto::acl::Authorizer {
            config: config.authorizer.clone(),
            acls: Vec::new(),
        };
        Ok(Broker {
            shared: Arc::new(Shared {
                groups,
                config,
                replicas,
                controller_epoch: AtomicI64::new(0),
                broker_epoch: AtomicI64::new(-1),
                control_order: Default::default(),
                metadata: RwLock::new(v1::MetadataResponse::default()),
                authorizer: RwLock::new(authorizer),
                resource_configs: Default::default(),
                controller_hint: Default::default(),
                stopping: tokio::sync::watch::channel(false).0,
                gate: Default::default(),
                registration_failure: Default::default(),
            }),
        })
    }

    /// A handle on whether this broker serves clients yet.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.shared.clone())
    }

    /// Serves the Kafka wire protocol on `listener` (see `crate::kafka`) for as long as
    /// the broker runs. Set [`BrokerConfig::kafka_advertised`] to where clients reach it.
    pub fn serve_kafka(&self, listener: TcpListener) {
        tokio::spawn(crate::kafka::serve(self.shared.clone(), listener));
    }

    /// Serves until `shutdown` resolves, then shuts down cleanly.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let shared = self.shared.clone();
        let id = shared.config.id;
        info!(
            broker = id,
            addr = shared.config.advertised_addr,
            "broker serving"
        );
        // Set when the controller refuses this broker for good: it then stops serving
        // and `run` returns the reason.
        let (fatal_tx, fatal_rx) = tokio::sync::watch::channel(None::<String>);
        let lifecycle = tokio::spawn({
            let shared = shared.clone();
            async move {
                let reason = lifecycle::register_and_heartbeat(shared).await;
                fatal_tx.send_replace(Some(reason));
            }
        });
        let maintenance = tokio::spawn(lifecycle::maintenance(shared.clone()));
        let cleaner = {
            let s = shared.clone();
            crate::log::Cleaner::start(
                shared.config.cleaner.clone(),
                Box::new(move || {
                    let parts = s.replicas.partitions();
                    parts
                        .iter()
                        .map(|p| (p.log.clone(), p.high_watermark()))
                        .collect()
                }),
            )
        };
        let replication = tokio::spawn(fetcher::replicate(shared.clone()));
        let isr = tokio::spawn(fetcher::propose_isr_changes(shared.clone()));
        let group_maintenance = tokio::spawn(groups::maintain(shared.clone()));
        let max = shared.config.max_message_bytes;
        let gate = readiness::client_gate(shared.clone());
        // Large HTTP/2 windows and frames: the 64 KiB defaults cap one stream at a
        // window per round trip, far below what the log can take.
        let served = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(16 << 20))
            .initial_connection_window_size(Some(64 << 20))
            .max_frame_size(Some((1 << 24) - 1))
            .tcp_nodelay(true)
            .add_service(InterceptedService::new(
                v1::broker_server::BrokerServer::new(api::BrokerApi(shared.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
                gate.clone(),
            ))
            .add_service(InterceptedService::new(
                v1::admin_server::AdminServer::new(admin::AdminProxy(shared.clone()))
                    .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
                gate.clone(),
            ))
            .add_service(InterceptedService::new(
                v1::groups_server::GroupsServer::new(groups_api::GroupsApi(shared.clone())),
                gate,
            ))
            .add_service(
                v1::broker_control_server::BrokerControlServer::new(control::Control(
                    shared.clone(),
                ))
                .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
            )
            .serve_with_incoming_shutdown(nodelay(listener), {
                let shared = shared.clone();
                let mut fatal_rx = fatal_rx.clone();
                async move {
                    tokio::select! {
                        () = shutdown => {}
                        _ = fatal_rx.wait_for(Option::is_some) => {}
                    }
                    // Keep serving while leadership moves away, so clients see a
                    // NOT_LEADER and a retry, not a dead connection.
                    if shared.config.controlled_shutdown {
                        lifecycle::controlled_shutdown(&shared).await;
                    }
                    shared.stopping.send_replace(true);
                    // Waiting acks=all produces fail now rather than at their deadline.
                    shared.replicas.shutdown();
                }
            })
            .await;
        lifecycle.abort();
        maintenance.abort();
        replication.abort();
        isr.abort();
        group_maintenance.abort();
        info!(broker = id, "stopped serving; flushing and closing logs");
        let logs = shared.clone();
        let closed = tokio::task::spawn_blocking(move || {
            // A pass in progress finishes (or gives up) before the logs close.
            cleaner.stop();
            logs.replicas.logs().shutdown()
        })
        .await?;
        match closed {
            Ok(()) => info!(broker = id, "clean shutdown complete"),
            Err(e) => {
                warn!(broker = id, error = %e, "shutdown was not clean; the next start recovers")
            }
        }
        served?;
        if let Some(reason) = fatal_rx.borrow().clone() {
            return Err(reason.into());
        }
        Ok(())
    }
}
