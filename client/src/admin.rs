//! The admin client: every topic and cluster operation the CLI offers, as functions.
//! Requests go to any broker, which forwards them to the active controller.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_proto::acl::{AclBinding, AclFilter};
use sluice_proto::v1;
use sluice_proto::ErrorCode;

use crate::cluster::Cluster;
use crate::{ClientConfig, Error};

/// One partition as `topic describe` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub leader: Option<u32>,
    pub leader_epoch: i32,
    pub replicas: Vec<u32>,
    pub isr: Vec<u32>,
    /// From the leader; `None` when it could not be asked.
    pub high_watermark: Option<u64>,
    pub log_end_offset: Option<u64>,
    pub log_start_offset: Option<u64>,
    /// Bytes of the leader's copy on disk.
    pub size_bytes: Option<u64>,
    /// Compacted topics: share of the leader's sealed bytes not yet compacted.
    pub dirty_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: String,
    pub partitions: Vec<PartitionDescription>,
    /// Configs set on the topic (others are broker defaults).
    pub configs: BTreeMap<String, String>,
}

pub struct Admin {
    pub(crate) cluster: Cluster,
}

fn check(r: Option<v1::AdminResult>) -> Result<(), Error> {
    match r {
        Some(r) if r.error_code != 0 => Err(Error::broker(r.error_code, r.error_message)),
        _ => Ok(()),
    }
}

impl Admin {
    pub fn new(client: &ClientConfig) -> Admin {
        Admin {
            cluster: Cluster::new(client),
        }
    }

    /// Runs `call` against each known address until one answers.
    async fn any<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(v1::admin_client::AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // During a controller failover brokers answer "no active controller", and a
        // starting broker answers "not ready" until it has registered: retry with a
        // short backoff until the api timeout, as Kafka's admin client does.
        let deadline = tokio::time::Instant::now() + self.cluster.config().api_timeout;
        loop {
            let mut last = Error::Invalid("no bootstrap address given".into());
            let mut retry_later = false;
            for addr in self.cluster.any_addresses() {
                match call(self.cluster.admin_client(&addr)?).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s)
                        if s.code() == tonic::Code::Unavailable
                            && s.message().contains("no active controller") =>
                    {
                        retry_later = true;
                        last = Error::Unreachable {
                            addr,
                            message: s.message().to_string(),
                        }
                    }
                    Err(s) => {
                        last = Error::from_status(&addr, s);
                        retry_later |= last.code().is_some_and(|c| c.is_retriable());
                    }
                }
            }
            if !retry_later || tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        self.create_topic_placed(name, partitions, replication_factor, Vec::new(), configs)
            .await
    }

    /// [`Admin::create_topic`] with each partition's replicas given (the preferred
    /// leader first); the count and replication factor follow from them.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<Vec<u32>>,
        configs: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        self.create_topic_placed(name, 0, 0, assignments, configs)
            .await
    }

    async fn create_topic_placed(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        assignments: Vec<Vec<u32>>,
        configs: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let req = v1::CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor,
            configs: configs.into_iter().collect(),
            assignments: replica_lists(assignments),
            validate_only: false,
        };
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.create_topic(req).await }
            })
            .await?;
        check(resp.result)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        let resp = self
            .any(|mut c| async move {
                c.delete_topic(v1::DeleteTopicRequest { name: name.into() })
                    .await
            })
            .await?;
        check(Some(resp))
    }

    pub async fn alter_configs(
        &self,
        topic: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<(), Error> {
        let req = v1::AlterConfigsRequest {
            topic: topic.into(),
            set: set.into_iter().collect(),
            delete,
            resource_type: 0,
        };
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.alter_configs(req).await }
            })
            .await?;
        check(Some(resp))
    }

    /// Preferred-replica election for `topic` (all topics when `None`); returns how
    /// many partitions changed leader.
    pub async fn elect_leaders(&self, topic: Option<&str>) -> Result<u32, Error> {
        let topic = topic.unwrap_or_default().to_string();
        let resp = self
            .any(|mut c| {
                let topic = topic.clone();
                async move {
                    c.elect_leaders(v1::ElectLeadersRequest {
                        topic,
                        partitions: Vec::new(),
                    })
                    .await
                }
            })
            .await?;
        check(resp.result)?;
        Ok(resp.changed)
    }

    /// Moves a partition to `replicas` (the first is preferred leader); completes in the
    /// background once the new replicas are in sync.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<u32>,
    ) -> Result<(), Error> {
        let req = v1::ReassignPartitionRequest {
            topic: topic.into(),
            partition,
            replicas,
        };
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.reassign_partition(req).await }
            })
            .await?;
        check(Some(resp))
    }

    /// Grows `topic` to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<(), Error> {
        self.create_partitions_assigned(topic, total, Vec::new())
            .await
    }

    /// Grows `topic` to `total` partitions, the new ones placed as `assignments` says
    /// (one replica list each; empty: placed by the controller).
    pub async fn create_partitions_assigned(
        &self,
        topic: &str,
        total: u32,
        assignments: Vec<Vec<u32>>,
    ) -> Result<(), Error> {
        let req = v1::CreatePartitionsRequest {
            topic: topic.into(),
            total,
            assignments: replica_lists(assignments),
            validate_only: false,
        };
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.create_partitions(req).await }
            })
            .await?;
        check(Some(resp))
    }

    /// A new producer id from the controller (for idempotent producers).
    pub async fn init_producer_id(&self) -> Result<i64, Error> {
        let resp = self
            .any(|mut c| async move { c.init_producer_id(v1::InitProducerIdRequest {}).await })
            .await?;
        check(resp.result)?;
        Ok(resp.producer_id)
    }

    /// Adds Kafka ACLs (docs/authorization.md); one that exists is no change. The first
    /// binding refused, if any, is the error (the others are added).
    pub async fn create_acls(&self, acls: &[AclBinding]) -> Result<(), Error> {
        let req = v1::CreateAclsRequest {
            acls: acls.iter().map(AclBinding::to_proto).collect(),
        };
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.create_acls(req).await }
            })
            .await?;
        resp.results.into_iter().try_for_each(|r| check(Some(r)))
    }

    /// The ACLs `filter` selects.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, Error> {
        let req = filter.to_proto();
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.describe_acls(req).await }
            })
            .await?;
        check(resp.result)?;
        Ok(resp.acls.iter().map(AclBinding::from_proto).collect())
    }

    /// Removes the ACLs `filter` selects; those removed.
    pub async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, Error> {
        let req = v1::DeleteAclsRequest {
            filters: vec![filter.to_proto()],
        };
        let resp = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.delete_acls(req).await }
            })
            .await?;
        let Some(r) = resp.results.into_iter().next() else {
            return Ok(Vec::new());
        };
        check(r.result)?;
        Ok(r.deleted.iter().map(AclBinding::from_proto).collect())
    }

    pub async fn describe_cluster(&self) -> Result<v1::DescribeClusterResponse, Error> {
        self.any(|mut c| async move { c.describe_cluster(v1::DescribeClusterRequest {}).await })
            .await
    }

    /// Topic names, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, Error> {
        let md = self
            .any(|mut c| async move {
                c.describe_topics(v1::MetadataRequest { topics: vec![] })
                    .await
            })
            .await?;
        let mut names: Vec<String> = md.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    }

    /// A topic's id, from a broker's own metadata (the controller is not asked, so
    /// this answers during a controller failover too): cheap enough to ask often, e.g.
    /// to notice that a topic being read was deleted or replaced.
    pub async fn topic_id(&self, name: &str) -> Result<String, Error> {
        let md = self.cluster.refresh(&[name.to_string()]).await?;
        match md.topics.into_iter().find(|t| t.name == name) {
            Some(t) if t.error_code == 0 => Ok(t.topic_id),
            Some(t) => Err(Error::broker(t.error_code, t.error_message)),
            None => Err(Error::broker(
                ErrorCode::UnknownTopicOrPartition.code(),
                format!("topic {name} does not exist"),
            )),
        }
    }

    /// A topic's partitions, with offsets asked from each leader.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, Error> {
        let md = self
            .any(|mut c| async move {
                c.describe_topics(v1::MetadataRequest {
                    topics: vec![name.to_string()],
                })
                .await
            })
            .await?;
        let t = md.topics.into_iter().next().ok_or_else(|| {
            Error::broker(
                ErrorCode::UnknownTopicOrPartition.code(),
                format!("topic {name} does not exist"),
            )
        })?;
        if t.error_code != 0 {
            return Err(Error::broker(t.error_code, t.error_message));
        }
        let brokers: BTreeMap<u32, String> =
            md.brokers.into_iter().map(|b| (b.id, b.addr)).collect();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let leader = (p.leader >= 0).then_some(p.leader as u32);
            let mut d = PartitionDescription {
                partition: p.partition,
                leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                isr: p.isr,
                high_watermark: None,
                log_end_offset: None,
                log_start_offset: None,
                size_bytes: None,
                dirty_ratio: None,
            };
            if let Some(addr) = leader.and_then(|l| brokers.get(&l)) {
                let req = v1::ListOffsetsRequest {
                    partitions: vec![v1::ListOffsetsPartition {
                        topic: name.into(),
                        partition: p.partition,
                        timestamp: -1,
                    }],
                };
                if let Ok(resp) = self.cluster.broker_client(addr)?.list_offsets(req).await {
                    if let Some(o) = resp
                        .into_inner()
                        .partitions
                        .into_iter()
                        .find(|o| o.error_code == 0)
                    {
                        d.high_watermark = Some(o.high_watermark as u64);
                        d.log_end_offset = Some(o.log_end_offset as u64);
                        d.log_start_offset = Some(o.log_start_offset as u64);
                        d.size_bytes = Some(o.size_bytes as u64);
                        d.dirty_ratio = (o.dirty_ratio >= 0.0).then_some(o.dirty_ratio);
                    }
                }
            }
            partitions.push(d);
        }
        Ok(TopicDescription {
            name: t.name,
            topic_id: t.topic_id,
            partitions,
            configs: t.configs.into_iter().collect(),
        })
    }
}

fn replica_lists(lists: Vec<Vec<u32>>) -> Vec<v1::ReplicaList> {
    lists
        .into_iter()
        .map(|replicas| v1::ReplicaList { replicas })
        .collect()
}
