//! Writes source events into Sluice: topics per table, keys, envelopes, the position and
//! transaction headers; reads each partition's last position back at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::partitioner::partition_for_key;
use sluice_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, Error, Producer, ProducerConfig,
    ProducerRecord, Seek,
};
use sluice_proto::source_pos::{RecordPos, SourcePos, HEARTBEAT_HEADER, HEARTBEAT_KEY, POS_HEADER};
use sluice_proto::{ErrorCode, Header, TopicPartition};
use tracing::info;

use crate::change::{Op, RowChange, TableId, Transaction};
use crate::envelope::{key_bytes, source_block, write_value, SourceInfo, TxnOrder};
use crate::position::Resume;
use crate::Error as CdcError;

pub use sluice_proto::source_pos::SNAPSHOT_HEADER;
pub const TXN_HEADER: &str = "sluice.txn";
pub const TXN_END_HEADER: &str = "sluice.txn.end";

/// How the connector's topics are made and written.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub bootstrap: String,
    pub topic_prefix: String,
    /// Partitions of topics the connector creates.
    pub partitions: u32,
    /// `None`: three, or fewer when the cluster has fewer brokers.
    pub replication_factor: Option<u32>,
    /// Extra configs for topics the connector creates (`cleanup.policy=compact` always).
    pub topic_configs: BTreeMap<String, String>,
}

/// Whether the topics hold a finished initial copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// No partition holds a record: nothing was ever written.
    Empty,
    /// Some partition's last record is a snapshot row: a copy was cut short.
    Incomplete,
    /// Every partition ends past the copy.
    Complete,
}

struct TopicState {
    name: Arc<str>,
    partitions: u32,
}

pub struct Sink {
    producer: Producer,
    info: SourceInfo,
    topics: HashMap<TableId, TopicState>,
    resume: Resume,
    snapshot_state: SnapshotState,
}

/// The records of one unit, handed to the producer; each resolves on acknowledgement.
pub type Pending = Vec<DeliveryFuture>;

impl Sink {
    /// Creates missing topics (compacted) and reads every partition's last position.
    /// A topic holding records the connector did not write is a setup error
    /// ([`CdcError::Config`]: not retried), everything else a Sluice error.
    pub async fn open(
        config: &SinkConfig,
        info: SourceInfo,
        tables: &[TableId],
    ) -> Result<Sink, CdcError> {
        let client = ClientConfig::new(&config.bootstrap);
        let admin = Admin::new(&client);
        let existing = admin.list_topics().await?;
        let rf = match config.replication_factor {
            Some(rf) => rf,
            None => {
                let brokers = admin.describe_cluster().await?.brokers.len() as u32;
                brokers.clamp(1, 3)
            }
        };
        let mut topics = HashMap::new();
        for t in tables {
            let name = t.topic(&config.topic_prefix);
            if !existing.contains(&name) {
                let mut configs = config.topic_configs.clone();
                configs.insert("cleanup.policy".into(), "compact".into());
                if rf >= 3 {
                    configs
                        .entry("min.insync.replicas".into())
                        .or_insert("2".into());
                }
                match admin
                    .create_topic(&name, config.partitions, rf, configs)
                    .await
                {
                    Ok(()) => {
                        info!(topic = %name, partitions = config.partitions, replication_factor = rf, "created compacted topic")
                    }
                    Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let d = describe_settled(&admin, &name).await?;
            topics.insert(
                t.clone(),
                TopicState {
                    name: name.into(),
                    partitions: d.len() as u32,
                },
            );
        }
        let (resume, snapshot_state) = read_resume(&client, &admin, &topics).await?;
        let producer = Producer::new(
            &client,
            ProducerConfig {
                linger: Duration::from_millis(1),
                batch_size: 256 * 1024,
                ..ProducerConfig::default()
            },
        )
        .await?;
        Ok(Sink {
            producer,
            info,
            topics,
            resume,
            snapshot_state,
        })
    }

    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    pub fn snapshot_state(&self) -> SnapshotState {
        self.snapshot_state
    }

    /// The topic a captured table's changes go to.
    pub fn topic_of(&self, table: &TableId) -> Option<&str> {
        self.topics.get(table).map(|t| &*t.name)
    }

    fn route(&self, change: &RowChange) -> Result<(Arc<str>, u32, Vec<u8>), Error> {
        let t = self.topics.get(&change.table).ok_or_else(|| {
            Error::broker(
                ErrorCode::UnknownTopicOrPartition.code(),
                format!("{} is not a captured table", change.table),
            )
        })?;
        let key = key_bytes(&change.key);
        let partition = partition_for_key(&key, t.partitions);
        Ok((t.name.clone(), partition, key))
    }

    /// Rows of the initial copy, numbered from `first_ordinal`, all at `pos`.
    pub async fn write_snapshot_rows(
        &mut self,
        rows: &[RowChange],
        pos: &SourcePos,
        first_ordinal: u64,
    ) -> Result<Pending, Error> {
        let now = now_ms();
        let mut pending = Vec::with_capacity(rows.len());
        let mut sources: HashMap<&TableId, Vec<u8>> = HashMap::new();
        let snapshot_header = Bytes::from_static(b"1");
        for (i, row) in rows.iter().enumerate() {
            let (topic, partition, key) = self.route(row)?;
            let rp = RecordPos {
                pos: pos.clone(),
                ordinal: first_ordinal + i as u64,
            };
            let source = sources
                .entry(&row.table)
                .or_insert_with(|| source_block(&self.info, &row.table, pos, now, None, true));
            let mut value = Vec::with_capacity(
                128 + source.len() + 24 * row.after.as_ref().map_or(0, |r| r.len()),
            );
            write_value(&mut value, row, source, None, now);
            let headers = vec![
                header(POS_HEADER, rp.to_header()),
                Header {
                    key: SNAPSHOT_HEADER.to_string(),
                    value: Some(snapshot_header.clone()),
                },
            ];
            pending.push(
                self.send(&topic, partition, key, Some(value), headers)
                    .await?,
            );
        }
        Ok(pending)
    }

    /// A committed transaction, contiguous in each partition, its boundary in headers.
    /// Records a previous run already wrote (by position) are skipped.
    pub async fn write_transaction(&mut self, txn: &Transaction) -> Result<Pending, Error> {
        // (topic, partition, key, value or tombstone, ordinal, txn order)
        struct Out {
            topic: Arc<str>,
            partition: u32,
            key: Vec<u8>,
            value: Option<Vec<u8>>,
            ordinal: u64,
        }
        let now = now_ms();
        let mut outs = Vec::with_capacity(txn.changes.len() + 4);
        let mut per_table: HashMap<&TableId, u64> = HashMap::new();
        let mut sources: HashMap<&TableId, Vec<u8>> = HashMap::new();
        let mut ordinal = 0u64;
        for (i, change) in txn.changes.iter().enumerate() {
            let (topic, partition, key) = self.route(change)?;
            let order = per_table.entry(&change.table).or_insert(0);
            *order += 1;
            let source = sources.entry(&change.table).or_insert_with(|| {
                source_block(
                    &self.info,
                    &change.table,
                    &txn.pos,
                    txn.commit_ms,
                    Some(&txn.id),
                    false,
                )
            });
            let mut value = Vec::with_capacity(256 + source.len());
            write_value(
                &mut value,
                change,
                source,
                Some(TxnOrder {
                    id: &txn.id,
                    total_order: i as u64 + 1,
                    data_collection_order: *order,
                }),
                now,
            );
            outs.push(Out {
                topic: topic.clone(),
                partition,
                key: key.clone(),
                value: Some(value),
                ordinal,
            });
            ordinal += 1;
            if change.op == Op::Delete {
                outs.push(Out {
                    topic,
                    partition,
                    key,
                    value: None,
                    ordinal,
                });
                ordinal += 1;
            }
        }
        // Every piece, and the last record of each.
        let mut pieces: Vec<(Arc<str>, u32)> = Vec::new();
        let mut last_of_piece: HashMap<(Arc<str>, u32), usize> = HashMap::new();
        for (i, o) in outs.iter().enumerate() {
            let k = (o.topic.clone(), o.partition);
            if !last_of_piece.contains_key(&k) {
                pieces.push(k.clone());
            }
            last_of_piece.insert(k, i);
        }
        let end_list = pieces
            .iter()
            .map(|(t, p)| format!("{t}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut pending = Vec::with_capacity(outs.len());
        for (i, o) in outs.into_iter().enumerate() {
            let rp = RecordPos {
                pos: txn.pos.clone(),
                ordinal: o.ordinal,
            };
            if !self.resume.should_write(&o.topic, o.partition, &rp) {
                continue;
            }
            let mut headers = vec![
                header(POS_HEADER, rp.to_header()),
                header(TXN_HEADER, txn.id.clone().into_bytes()),
            ];
            if last_of_piece.get(&(o.topic.clone(), o.partition)) == Some(&i) {
                headers.push(header(TXN_END_HEADER, end_list.clone().into_bytes()));
            }
            pending.push(
                self.send(&o.topic, o.partition, o.key, o.value, headers)
                    .await?,
            );
        }
        Ok(pending)
    }

    /// "Everything of the source up to `pos` is here", in every partition of every topic.
    pub async fn write_heartbeat(&mut self, pos: &SourcePos) -> Result<Pending, Error> {
        // After every record at `pos`: a heartbeat at a transaction's own position
        // must not sort before that transaction's records (a restart would think them
        // unwritten in a partition whose last record is the heartbeat).
        let rp = RecordPos {
            pos: pos.clone(),
            ordinal: u64::MAX,
        };
        let value = serde_json::to_vec(&serde_json::json!({
            "heartbeat": true,
            "pos": pos.to_string(),
            "ts_ms": now_ms(),
        }))
        .expect("a JSON value serializes");
        let targets: Vec<(Arc<str>, u32)> = self
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
            .collect();
        let mut pending = Vec::with_capacity(targets.len());
        for (topic, partition) in targets {
            if !self.resume.should_write(&topic, partition, &rp) {
                continue;
            }
            let headers = vec![
                header(POS_HEADER, rp.to_header()),
                header(HEARTBEAT_HEADER, b"1".to_vec()),
            ];
            pending.push(
                self.send(
                    &topic,
                    partition,
                    HEARTBEAT_KEY.to_vec(),
                    Some(value.clone()),
                    headers,
                )
                .await?,
            );
        }
        Ok(pending)
    }

    async fn send(
        &self,
        topic: &str,
        partition: u32,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
    ) -> Result<DeliveryFuture, Error> {
        self.producer
            .send(ProducerRecord {
                topic: topic.to_string(),
                partition: Some(partition),
                key: Some(Bytes::from(key)),
                value: value.map(Bytes::from),
                headers,
                timestamp: None,
            })
            .await
    }

    pub async fn flush(&self) {
        self.producer.flush().await;
    }

    pub async fn close(&self) {
        self.producer.close().await;
    }
}

fn header(key: &str, value: Vec<u8>) -> Header {
    Header {
        key: key.to_string(),
        value: Some(Bytes::from(value)),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A topic's partitions once every high watermark reached its log end: records a
/// previous run left in flight are then either committed or gone, so the last record
/// read is the last there will be.
async fn describe_settled(
    admin: &Admin,
    name: &str,
) -> Result<Vec<sluice_client::PartitionDescription>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = admin.describe_topic(name).await?;
        let settled = d.partitions.iter().all(|p| {
            p.leader.is_some() && p.high_watermark.is_some() && p.high_watermark == p.log_end_offset
        });
        if settled || Instant::now() >= deadline {
            if !settled {
                return Err(Error::broker(
                    ErrorCode::NotEnoughReplicas.code(),
                    format!("{name}: partitions without a leader or with a high watermark below the log end for 60 s"),
                ));
            }
            return Ok(d.partitions);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each partition's last record position, and whether the copy finished.
async fn read_resume(
    client: &ClientConfig,
    admin: &Admin,
    topics: &HashMap<TableId, TopicState>,
) -> Result<(Resume, SnapshotState), CdcError> {
    let mut resume = Resume::new();
    let (mut any, mut incomplete, mut empty_partition) = (false, false, false);
    for t in topics.values() {
        let parts = describe_settled(admin, &t.name).await?;
        for p in parts {
            let hw = p.high_watermark.unwrap_or(0);
            if hw == 0 || hw <= p.log_start_offset.unwrap_or(0) {
                empty_partition = true;
                continue;
            }
            let tp = TopicPartition::new(&*t.name, p.partition);
            let mut consumer = Consumer::new(client, ConsumerConfig::default());
            consumer.assign(vec![tp.clone()]);
            consumer.seek(&tp, Seek::Offset(hw - 1));
            let deadline = Instant::now() + Duration::from_secs(30);
            let last = loop {
                let records = consumer.poll(Duration::from_millis(500)).await?;
                if let Some(r) = records.into_iter().filter(|r| r.offset == hw - 1).last() {
                    break r;
                }
                if Instant::now() >= deadline {
                    return Err(Error::broker(
                        ErrorCode::RequestTimedOut.code(),
                        format!(
                            "{tp}: could not read the record at offset {} in 30 s",
                            hw - 1
                        ),
                    )
                    .into());
                }
            };
            let pos = last
                .headers
                .iter()
                .find(|h| h.key == POS_HEADER)
                .and_then(|h| h.value.as_ref())
                .ok_or_else(|| {
                    CdcError::Config(format!(
                        "{tp}: the last record (offset {}) has no {POS_HEADER} header: the topic \
                         holds records the connector did not write; give the connector its own \
                         --topic-prefix",
                        hw - 1
                    ))
                })?;
            let pos = RecordPos::from_header(pos).map_err(|e| {
                CdcError::Config(format!(
                    "{tp}: the last record (offset {}) has a bad {POS_HEADER} header ({e}); give \
                     the connector its own --topic-prefix",
                    hw - 1
                ))
            })?;
            any = true;
            incomplete |= last.headers.iter().any(|h| h.key == SNAPSHOT_HEADER);
            resume.insert(&t.name, p.partition, pos);
        }
    }
    let state = if !any {
        SnapshotState::Empty
    } else if incomplete || empty_partition {
        SnapshotState::Incomplete
    } else {
        SnapshotState::Complete
    };
    Ok((resume, state))
}
