//! What every client shares: bootstrap addresses, cached metadata and one gRPC channel
//! per broker address (HTTP/2 multiplexes concurrent requests over it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::{self};
use sluice_proto::ErrorCode;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// Largest gRPC message a client sends or accepts.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Where to find the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// How long an admin operation keeps retrying while no controller is active (a
    /// controller failover), like Kafka's `default.api.timeout.ms`.
    pub api_timeout: Duration,
}

impl ClientConfig {
    /// From a comma-separated `host:port` list.
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            request_timeout: Duration::from_secs(30),
            api_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Meta {
    brokers: HashMap<u32, String>,
    topics: HashMap<String, v1::TopicMetadata>,
}

/// Shared cluster view. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    config: ClientConfig,
    meta: Arc<RwLock<Meta>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Cluster {
    pub fn new(config: &ClientConfig) -> Cluster {
        Cluster {
            config: config.clone(),
            meta: Default::default(),
            channels: Default::default(),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The channel to `addr`, created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Invalid(format!("bad broker address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.config.request_timeout)
            .tcp_nodelay(true)
            // A stopped broker (SIGSTOP, hung host) still accepts TCP; unanswered HTTP/2
            // pings find it in ~3 s instead of a whole request timeout. hyper pings only
            // after a quiet second, so busy connections carry no extra frames.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(64 << 20);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn broker_client(&self, addr: &str) -> Result<BrokerClient<Channel>, Error> {
        Ok(BrokerClient::new(self.channel(addr)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    pub fn admin_client(&self, addr: &str) -> Result<AdminClient<Channel>, Error> {
        Ok(AdminClient::new(self.channel(addr)?)
            .max_decoding_message_size(sluice_proto::limits::CONTROL_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(sluice_proto::limits::CONTROL_MESSAGE_BYTES_MAX))
    }

    /// Addresses to try for cluster-wide requests: known brokers, then bootstrap.
    pub fn any_addresses(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.meta.read().brokers.values().cloned().collect();
        addrs.sort();
        for b in &self.config.bootstrap {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        addrs
    }

    /// Fetches metadata for `topics` (all when empty) from the first broker that answers.
    /// While every broker answers "not ready" (just started, not registered yet), retries
    /// until the api timeout.
    pub async fn refresh(&self, topics: &[String]) -> Result<v1::MetadataResponse, Error> {
        let deadline = tokio::time::Instant::now() + self.config.api_timeout;
        loop {
            match self.refresh_once(topics).await {
                Err(e)
                    if e.code() == Some(ErrorCode::BrokerNotAvailable)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                answer => return answer,
            }
        }
    }

    async fn refresh_once(&self, topics: &[String]) -> Result<v1::MetadataResponse, Error> {
        let mut last = Error::Invalid("no bootstrap address given".into());
        for addr in self.any_addresses() {
            let mut client = self.broker_client(&addr)?;
            match client
                .metadata(v1::MetadataRequest {
                    topics: topics.to_vec(),
                })
                .await
            {
                Ok(resp) => {
                    let md = resp.into_inner();
                    let mut meta = self.meta.write();
                    meta.brokers = md.brokers.iter().map(|b| (b.id, b.addr.clone())).collect();
                    for t in &md.topics {
                        if t.error_code == 0 {
                            meta.topics.insert(t.name.clone(), t.clone());
                        } else {
                            meta.topics.remove(&t.name);
                        }
                    }
                    return Ok(md);
                }
                Err(status) => last = Error::from_status(&addr, status),
            }
        }
        Err(last)
    }

    /// Partition count of `topic`, refreshing metadata if it is not known.
    /// The topic's partition count; never 0 (a metadata answer listing no partitions,
    /// e.g. a topic being created or deleted, is a retriable error, not a divisor).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, Error> {
        let cached = self
            .meta
            .read()
            .topics
            .get(topic)
            .map(|t| t.partitions.len() as u32);
        if let Some(n) = cached.filter(|n| *n > 0) {
            return Ok(n);
        }
        let md = self.refresh(&[topic.to_string()]).await?;
        let t = md
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                Error::broker(
                    ErrorCode::UnknownTopicOrPartition.code(),
                    format!("topic {topic} does not exist"),
                )
            })?;
        if t.error_code != 0 {
            return Err(Error::broker(t.error_code, t.error_message));
        }
        if t.partitions.is_empty() {
            return Err(Error::broker(
                ErrorCode::LeaderNotAvailable.code(),
                format!("topic {topic} has no partitions in the metadata yet"),
            ));
        }
        Ok(t.partitions.len() as u32)
    }

    /// The topic id of `topic` per cached metadata (empty when unknown): sent with
    /// produce and fetch requests so a broker holding a deleted topic of the same name
    /// refuses them (UNKNOWN_TOPIC_ID) instead of serving its copy.
    pub fn topic_id(&self, topic: &str) -> String {
        self.meta
            .read()
            .topics
            .get(topic)
            .map(|t| t.topic_id.clone())
            .unwrap_or_default()
    }

    /// Address of the leader of `topic`/`partition` per cached metadata.
    pub fn leader_addr(&self, topic: &str, partition: u32) -> Option<String> {
        let meta = self.meta.read();
        let p = meta
            .topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        if p.leader < 0 {
            return None;
        }
        meta.brokers.get(&(p.leader as u32)).cloned()
    }

    /// Like [`Cluster::leader_addr`], refreshing metadata once when unknown.
    pub async fn leader_addr_refreshed(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<String, Error> {
        if let Some(a) = self.leader_addr(topic, partition) {
            return Ok(a);
        }
        self.refresh(&[topic.to_string()]).await?;
        self.leader_addr(topic, partition).ok_or_else(|| {
            Error::broker(
                ErrorCode::LeaderNotAvailable.code(),
                format!("no leader for {topic}-{partition}"),
            )
        })
    }

    /// Forgets cached leadership for `topic` (after a NOT_LEADER answer).
    pub fn invalidate(&self, topic: &str) {
        self.meta.write().topics.remove(topic);
    }

    /// ListOffsets for one partition at its leader: `timestamp` -1 latest (the high
    /// watermark), -2 earliest, else the first offset at or after that time (ms). An
    /// error answer forgets the cached leader.
    ///
    /// A leader just elected answers OFFSET_NOT_AVAILABLE until its high watermark reaches
    /// the start of its epoch (so no answer moves backwards); that is retried here, with
    /// a short backoff, for up to the request timeout.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<v1::ListOffsetsPartitionResponse, Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.list_offset_once(topic, partition, timestamp).await {
                Err(e)
                    if e.code() == Some(ErrorCode::OffsetNotAvailable)
                        && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn list_offset_once(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<v1::ListOffsetsPartitionResponse, Error> {
        let addr = self.leader_addr_refreshed(topic, partition).await?;
        let mut client = self.broker_client(&addr)?;
        let req = v1::ListOffsetsRequest {
            partitions: vec![v1::ListOffsetsPartition {
                topic: topic.to_string(),
                partition,
                timestamp,
            }],
        };
        let resp = client
            .list_offsets(req)
            .await
            .map_err(|s| Error::from_status(&addr, s))?
            .into_inner();
        let p = resp
            .partitions
            .into_iter()
            .next()
            .ok_or_else(|| Error::broker(-1, "empty ListOffsets answer"))?;
        if p.error_code != 0 {
            self.invalidate(topic);
            return Err(Error::broker(p.error_code, p.error_message));
        }
        Ok(p)
    }
}
