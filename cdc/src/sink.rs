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

use crate::change::{RowChange, TableId};
use crate::envelope::{
    key_bytes, source_block, write_change, write_value, SourceInfo, TxnOrder, ValueFormat,
    FORMAT_HEADER,
};
use crate::position::{copy_state, Resume, StaleKeys};
use crate::Error as CdcError;

mod copy;
mod incremental;
mod truncate;
mod txn;

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
    /// Largest record (key, value and headers) the connector writes: its topics are
    /// made (or altered) to take it, and a larger row stops the connector with an
    /// error naming the table and key rather than being skipped.
    pub max_record_bytes: usize,
    /// `--heartbeat-ms`: a partition gets a heartbeat only once it has had no record
    /// for (nine tenths of) this long, so a busy connector does not write one to every
    /// partition after every transaction (docs/cdc.md, "Heartbeats").
    pub heartbeat_idle: Duration,
    /// `--value-format`: the envelope, or the row alone (docs/cdc.md, "Value format").
    /// Every partition's last record must be of this format, else [`Sink::open`]
    /// refuses: a topic keeps one format.
    pub value_format: ValueFormat,
    /// `--exclude-columns`: columns left out of every row image written.
    pub exclude_columns: crate::change::ColumnFilter,
}

/// Default `--max-record-bytes`: a few-MB `text`/`jsonb`/`bytea` value is ordinary in a
/// database row, and its JSON envelope carries it twice on updates with `before`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Largest `--max-record-bytes`: what one produce request carries, less the batch's own
/// bytes.
pub const MAX_RECORD_BYTES_LIMIT: usize = sluice_client::REQUEST_BYTES_MAX - RECORD_OVERHEAD_BYTES;

/// Room a topic's `max.message.bytes` leaves beyond the largest record: the batch header
/// and the record's varints.
const RECORD_OVERHEAD_BYTES: usize = 4096;

impl SinkConfig {
    /// The `max.message.bytes` the connector's topics need.
    pub fn topic_max_message_bytes(&self) -> u64 {
        (self.max_record_bytes + RECORD_OVERHEAD_BYTES) as u64
    }
}

pub use crate::position::SnapshotState;

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
    /// The same, per table: a table added to `--tables` has an empty topic while the
    /// others hold a finished copy (a source that can copy one table on its own then
    /// copies only that one).
    table_states: HashMap<TableId, SnapshotState>,
    client: ClientConfig,
    /// `<prefix>.`: topics named so and not captured belong to tables left out of
    /// `--tables` (see [`Sink::mark_topics`]).
    topic_prefix: String,
    max_record_bytes: usize,
    /// `--exclude-columns`, applied by the runner to every event's rows.
    exclude_columns: crate::change::ColumnFilter,
    /// During a copy over topics that already held rows: keys whose latest record is a
    /// row not (yet) written by this copy. What is left when the copy ends was deleted
    /// in the source meanwhile and gets a tombstone (see `begin_copy`).
    stale_keys: Option<StaleKeys>,
    /// When this run last handed a record (any: a row, a tombstone, a heartbeat) to
    /// each partition, and the stream position (`moves`) then, by topic and partition:
    /// [`Sink::write_heartbeat`] skips partitions written within `heartbeat_idle` and
    /// partitions already written at the latest position.
    last_write: HashMap<Arc<str>, Vec<Written>>,
    /// How many times the stream's position moved ([`Sink::stream_moved`]).
    /// Invariant: every `Written::moves <= moves`.
    moves: u64,
    /// See [`SinkConfig::heartbeat_idle`].
    heartbeat_idle: Duration,
    /// See [`SinkConfig::value_format`].
    format: ValueFormat,
    /// `--topic-prefix`.
    prefix: String,
    /// Replication factor of topics the connector creates.
    replication_factor: u32,
    /// Incremental snapshots: what `<prefix>.__sluice_snapshots` holds per table, the
    /// passes of this run, and whether the topic is known to exist.
    progress: HashMap<String, crate::incremental::Progress>,
    passes: HashMap<TableId, incremental::Pass>,
    progress_topic_ready: bool,
    /// A transaction coming in parts, between its first part and its last.
    open_txn: Option<txn::OpenTxn>,
}

/// A partition's last write by this run.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    at: Option<Instant>,
    /// [`Sink::stream_moved`]'s count at the time: equal to the sink's, the partition
    /// holds the latest position streamed.
    moves: u64,
}

/// The records of one unit, handed to the producer; each resolves on acknowledgement.
pub type Pending = Vec<DeliveryFuture>;

impl Sink {
    /// The columns left out of the row images (`SinkConfig::exclude_columns`).
    pub fn exclude_columns(&self) -> &crate::change::ColumnFilter {
        &self.exclude_columns
    }

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
        if config.max_record_bytes == 0 || config.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return Err(CdcError::Config(format!(
                "--max-record-bytes {} must be in 1..={MAX_RECORD_BYTES_LIMIT}",
                config.max_record_bytes
            )));
        }
        let max_message_bytes = config.topic_max_message_bytes();
        for t in tables {
            let name = t.topic(&config.topic_prefix);
            if existing.contains(&name) {
                ensure_max_message_bytes(&admin, &name, max_message_bytes).await?;
            } else {
                let mut configs = config.topic_configs.clone();
                configs.insert("cleanup.policy".into(), "compact".into());
                configs
                    .entry("max.message.bytes".into())
                    .or_insert(max_message_bytes.to_string());
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
        let (resume, snapshot_state, table_states, formats) =
            read_resume(&client, &admin, &topics).await?;
        check_format(config.value_format, &formats)?;
        let producer = Producer::new(
            &client,
            ProducerConfig {
                linger: Duration::from_millis(1),
                batch_size: 256 * 1024,
                max_request_bytes: max_message_bytes as usize,
                // A record that fails for good must not be followed by later records of
                // its partition: a restart resumes after a partition's last record, so
                // anything after a hole would hide it for good.
                gapless: true,
                // Kafka's `buffer.memory` default (Sluice's producer takes 64 MiB): what
                // is in flight bounds the connector's memory while it writes a large
                // transaction or a copy (docs/cdc.md, "Large transactions").
                buffer_memory: 32 << 20,
                ..ProducerConfig::default()
            },
        )
        .await?;
        let mut sink = Sink {
            producer,
            info,
            topics,
            resume,
            snapshot_state,
            table_states,
            client,
            topic_prefix: format!("{}.", config.topic_prefix),
            max_record_bytes: config.max_record_bytes,
            exclude_columns: config.exclude_columns.clone(),
            stale_keys: None,
            last_write: HashMap::new(),
            moves: 0,
            heartbeat_idle: config.heartbeat_idle,
            format: config.value_format,
            prefix: config.topic_prefix.clone(),
            replication_factor: rf,
            progress: HashMap::new(),
            passes: HashMap::new(),
            progress_topic_ready: false,
            open_txn: None,
        };
        sink.read_progress().await?;
        sink.progress_topic_ready = !sink.progress.is_empty();
        Ok(sink)
    }

    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// Whether the topics hold a finished copy, over every table.
    pub fn snapshot_state(&self) -> SnapshotState {
        self.snapshot_state
    }

    /// Whether each table's topic holds a finished copy.
    pub fn table_states(&self) -> &HashMap<TableId, SnapshotState> {
        &self.table_states
    }

    /// The topic a captured table's changes go to.
    pub fn topic_of(&self, table: &TableId) -> Option<&str> {
        self.topics.get(table).map(|t| &*t.name)
    }

    /// The topic a captured table's changes go to, and its partition count.
    pub fn topic_partitions(&self, table: &TableId) -> Option<(&str, u32)> {
        self.topics.get(table).map(|t| (&*t.name, t.partitions))
    }

    fn topic_state(&self, table: &TableId) -> Result<&TopicState, Error> {
        self.topics.get(table).ok_or_else(|| {
            Error::broker(
                ErrorCode::UnknownTopicOrPartition.code(),
                format!("{table} is not a captured table"),
            )
        })
    }

    fn route(&self, change: &RowChange) -> Result<(Arc<str>, u32, Vec<u8>), Error> {
        let t = self.topic_state(&change.table)?;
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
    ) -> Result<Pending, CdcError> {
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
            let source: &[u8] = match self.format {
                ValueFormat::Envelope => sources
                    .entry(&row.table)
                    .or_insert_with(|| source_block(&self.info, &row.table, pos, now, None, true)),
                ValueFormat::Row => &[],
            };
            let value = write_change(self.format, row, source, None, now).ok_or_else(|| {
                CdcError::Source(format!("a copied row of {} without a row", row.table))
            })?;
            let mut headers = vec![
                header(POS_HEADER, rp.to_header()),
                Header {
                    key: SNAPSHOT_HEADER.to_string(),
                    value: Some(snapshot_header.clone()),
                },
            ];
            self.mark_format(&mut headers);
            if let Some(stale) = self.stale_keys.as_mut() {
                stale.copied(&topic, &key);
            }
            check_size(
                self.max_record_bytes,
                &row.table,
                &key,
                Some(&value),
                &headers,
            )?;
            pending.push(
                self.send(&topic, partition, key, Some(value), headers)
                    .await?,
            );
        }
        Ok(pending)
    }

    /// "Everything of the source up to `pos` (the latest position streamed) is here", in
    /// every partition that is not written at it yet and has had no record for
    /// `heartbeat_idle` (nine tenths of it, [`Sink::idle_for`]). A partition written
    /// more recently already holds a position at most that old, and gets one once idle
    /// (the runner's timer, [`Sink::next_heartbeat_due`]): a Table's source position —
    /// its partitions' minimum — trails the source by about `--heartbeat-ms` at most,
    /// busy or idle. Returns nothing when no partition is due (the unit then only
    /// moves the confirmed position).
    pub async fn write_heartbeat(&mut self, pos: &SourcePos) -> Result<Pending, Error> {
        let now = Instant::now();
        let targets: Vec<(Arc<str>, u32)> = self
            .owed()
            .filter(|(_, _, w)| w.at.is_none_or(|at| at + self.idle_for() <= now))
            .map(|(name, p, _)| (name, p))
            .collect();
        self.heartbeat_to(pos, targets).await
    }

    /// The stream's position moved on (a transaction or a heartbeat of the source, about
    /// to be written): every partition owes a heartbeat until written again.
    pub fn stream_moved(&mut self) {
        self.moves += 1;
    }

    /// When the next partition that is not at the latest position streamed falls idle
    /// and is due a heartbeat ([`Sink::write_heartbeat`]); `None` when every partition
    /// is there. The runner writes one then, so a partition a heartbeat skipped while it
    /// was busy gets the position even when the source then falls silent (MariaDB sends
    /// nothing while idle).
    pub fn next_heartbeat_due(&self) -> Option<Instant> {
        let now = Instant::now();
        self.owed()
            .map(|(_, _, w)| w.at.map_or(now, |at| at + self.idle_for()))
            .min()
    }

    /// Nine tenths of `--heartbeat-ms`: the source's own heartbeats come once an
    /// interval, and one arriving a little early must not skip a partition for a whole
    /// further interval.
    fn idle_for(&self) -> Duration {
        self.heartbeat_idle * 9 / 10
    }

    /// Partitions not written since the stream's position last moved.
    fn owed(&self) -> impl Iterator<Item = (Arc<str>, u32, Written)> + '_ {
        self.topics.values().flat_map(move |t| {
            let written = self.last_write.get(&t.name);
            (0..t.partitions).filter_map(move |p| {
                let w = written
                    .and_then(|w| w.get(p as usize))
                    .copied()
                    .unwrap_or_default();
                (w.moves < self.moves).then(|| (t.name.clone(), p, w))
            })
        })
    }

    /// A clean stop: a heartbeat at `pos` (the last position streamed) in every
    /// partition, idle or not. The heartbeats before skipped busy partitions, and the
    /// catch-up after the last transactions may not have run (it runs at most every
    /// 10 ms): without this a partition could keep an older position until the next
    /// run, and a Table's `wait_for_source` of the last commit would wait that long.
    pub async fn write_final_heartbeat(&mut self, pos: &SourcePos) -> Result<Pending, Error> {
        let targets: Vec<(Arc<str>, u32)> = self
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
            .collect();
        self.heartbeat_to(pos, targets).await
    }

    pub(crate) async fn heartbeat_to(
        &mut self,
        pos: &SourcePos,
        targets: Vec<(Arc<str>, u32)>,
    ) -> Result<Pending, Error> {
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
        let mut pending = Vec::with_capacity(targets.len());
        for (topic, partition) in targets {
            if !self.resume.should_write(&topic, partition, &rp) {
                // Ahead of `pos` already (a copy of an added table): owes nothing.
                let moves = self.moves;
                if let Some(w) = self
                    .last_write
                    .get_mut(&topic)
                    .and_then(|w| w.get_mut(partition as usize))
                {
                    w.moves = moves;
                } else {
                    let w = self.last_write.entry(topic.clone()).or_default();
                    w.resize(w.len().max(partition as usize + 1), Written::default());
                    w[partition as usize].moves = moves;
                }
                continue;
            }
            let mut headers = vec![
                header(POS_HEADER, rp.to_header()),
                header(HEARTBEAT_HEADER, b"1".to_vec()),
            ];
            self.mark_format(&mut headers);
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
        &mut self,
        topic: &str,
        partition: u32,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
    ) -> Result<DeliveryFuture, Error> {
        let written = match self.last_write.get_mut(topic) {
            Some(w) => w,
            None => self.last_write.entry(Arc::from(topic)).or_default(),
        };
        if written.len() <= partition as usize {
            written.resize(partition as usize + 1, Written::default());
        }
        written[partition as usize] = Written {
            at: Some(Instant::now()),
            moves: self.moves,
        };
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

    /// Row format: the header that says so, on every record this run writes (rows,
    /// tombstones, markers, heartbeats), so that the partition's last record tells the
    /// next run which format the topic holds ([`Sink::open`]).
    pub(super) fn mark_format(&self, headers: &mut Vec<Header>) {
        if self.format == ValueFormat::Row {
            headers.push(header(FORMAT_HEADER, b"row".to_vec()));
        }
    }

    /// The format this run writes.
    pub fn value_format(&self) -> ValueFormat {
        self.format
    }

    pub async fn flush(&self) {
        self.producer.flush().await;
    }

    /// After a failure: fails what is not sent yet instead of sending it (nothing more
    /// of this run is written), and waits for what is in flight.
    pub async fn abort(&self) {
        self.producer.abort().await;
    }

    pub async fn close(&self) {
        self.producer.close().await;
    }
}

/// The value of a truncate marker: Debezium's truncate event (`op: "t"`, the `source`
/// block) in an envelope topic; in a row topic, whose values are rows, a small object
/// of its own (`{"truncate": true, "table", "pos", "ts_ms"}`, the shape of a
/// heartbeat's), since no row describes it. Tables skip it either way (its header).
fn truncate_marker_value(
    format: ValueFormat,
    change: &RowChange,
    source: &[u8],
    order: Option<TxnOrder<'_>>,
    pos: &SourcePos,
    now: i64,
) -> Vec<u8> {
    match format {
        ValueFormat::Envelope => {
            let mut out = Vec::with_capacity(256 + source.len());
            write_value(&mut out, change, source, order, now);
            out
        }
        ValueFormat::Row => serde_json::to_vec(&serde_json::json!({
            "truncate": true,
            "table": change.table.to_string(),
            "pos": pos.to_string(),
            "ts_ms": now,
        }))
        .expect("a JSON value serializes"),
    }
}

/// A record over `--max-record-bytes` stops the connector (a setup error: the same row
/// would fail again), naming the table, the key and the setting; it is never skipped.
fn check_size(
    max: usize,
    table: &TableId,
    key: &[u8],
    value: Option<&[u8]>,
    headers: &[Header],
) -> Result<(), CdcError> {
    let headers: usize = headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    let size = key.len() + value.map_or(0, |v| v.len()) + headers;
    if size <= max {
        return Ok(());
    }
    let mut shown = String::from_utf8_lossy(key).into_owned();
    if shown.len() > 200 {
        let mut cut = 200;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push('…');
    }
    Err(CdcError::Config(format!(
        "a change of {table} with key {shown} is a record of {size} bytes, over --max-record-bytes={max}; \
         restart with a larger --max-record-bytes (at most {MAX_RECORD_BYTES_LIMIT}; the connector \
         raises its topics' max.message.bytes to match)"
    )))
}

/// Raises an existing topic's `max.message.bytes` to what the connector writes (a topic
/// made by an older version, or by hand, may take less).
async fn ensure_max_message_bytes(admin: &Admin, name: &str, needed: u64) -> Result<(), CdcError> {
    let d = admin.describe_topic(name).await?;
    let current = d
        .configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| sluice_proto::topic_config::LogConfig::default().max_message_bytes);
    if current >= needed {
        return Ok(());
    }
    let set = BTreeMap::from([("max.message.bytes".to_string(), needed.to_string())]);
    admin.alter_configs(name, set, Vec::new()).await?;
    info!(topic = %name, old = current, new = needed, "raised max.message.bytes to --max-record-bytes");
    Ok(())
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

/// A partition's last record was written in one format: `(topic, partition, format)`.
type LastFormat = (Arc<str>, u32, ValueFormat);

/// Each partition's last record position, whether the copy finished (over every
/// table, and per table), and the format each non-empty partition's last record has.
async fn read_resume(
    client: &ClientConfig,
    admin: &Admin,
    topics: &HashMap<TableId, TopicState>,
) -> Result<
    (
        Resume,
        SnapshotState,
        HashMap<TableId, SnapshotState>,
        Vec<LastFormat>,
    ),
    CdcError,
> {
    let mut formats = Vec::new();
    let mut resume = Resume::new();
    let mut all = Vec::new();
    let mut per_table = HashMap::new();
    for (table, t) in topics {
        let mut lasts = Vec::new();
        let parts = describe_settled(admin, &t.name).await?;
        for p in parts {
            let hw = p.high_watermark.unwrap_or(0);
            if hw == 0 || hw <= p.log_start_offset.unwrap_or(0) {
                lasts.push(None);
                continue;
            }
            let tp = TopicPartition::new(&*t.name, p.partition);
            let (pos, snapshot, format) = last_record_pos(client, &tp, hw).await?;
            formats.push((t.name.clone(), p.partition, format));
            lasts.push(Some(snapshot));
            resume.insert(&t.name, p.partition, pos);
        }
        per_table.insert(table.clone(), copy_state(lasts.iter().copied()));
        all.extend(lasts);
    }
    Ok((resume, copy_state(all), per_table, formats))
}

/// A topic keeps the format it was written in: every record of a run carries it (row
/// format: the `sluice.format` header), so a partition's last record says what the
/// previous run wrote. A run with another `--value-format` is refused (a setup error,
/// not retried) rather than leave a topic whose values change shape at some offset,
/// which readers other than Tables would not expect.
fn check_format(format: ValueFormat, lasts: &[LastFormat]) -> Result<(), CdcError> {
    let Some((topic, partition, held)) = lasts.iter().find(|(_, _, f)| *f != format) else {
        return Ok(());
    };
    Err(CdcError::Config(format!(
        "{topic} holds --value-format {} records (partition {partition} ends with one) and \
         this connector writes --value-format {}: restart it with --value-format {}, or \
         capture into new topics under another --topic-prefix (the tables are copied there \
         in the new format)",
        held.name(),
        format.name(),
        held.name()
    )))
}

/// The position of a partition's last record (at `hw - 1`), whether it is a copy
/// record, and its value format.
async fn last_record_pos(
    client: &ClientConfig,
    tp: &TopicPartition,
    hw: u64,
) -> Result<(RecordPos, bool, ValueFormat), CdcError> {
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign(vec![tp.clone()]);
    consumer.seek(tp, Seek::Offset(hw - 1));
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
    let snapshot = last.headers.iter().any(|h| h.key == SNAPSHOT_HEADER);
    Ok((pos, snapshot, ValueFormat::of_headers(&last.headers)))
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn a_topic_ending_in_the_other_format_is_refused_with_the_way_out() {
        let lasts: Vec<LastFormat> = vec![
            ("cdc.public.a".into(), 0, ValueFormat::Row),
            ("cdc.public.b".into(), 1, ValueFormat::Envelope),
        ];
        assert!(check_format(ValueFormat::Row, &lasts[..1]).is_ok());
        assert!(check_format(ValueFormat::Envelope, &[]).is_ok());
        let Err(CdcError::Config(line)) = check_format(ValueFormat::Row, &lasts) else {
            panic!("not refused");
        };
        assert!(
            line.starts_with("cdc.public.b holds --value-format envelope records (partition 1")
                && line.contains("restart it with --value-format envelope")
                && line.contains("another --topic-prefix")
                && !line.contains('\n'),
            "{line}"
        );
    }
}
