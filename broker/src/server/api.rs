//! The `Broker` service: Produce, Fetch (long-poll), ReplicaFetch (the followers'
//! stream), ListOffsets, Metadata.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::select_all;
use futures::Stream;
use sluice_proto::limits::FETCH_RESPONSE_BYTES_MAX;
use sluice_proto::v1::{self, broker_server};
use sluice_proto::{ErrorCode, LeaderEpoch, Offset, TopicPartition};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::replica::Failure;

/// Upper bound on a fetch's wait, whatever the client asks.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

pub(crate) struct BrokerApi(pub(crate) Arc<Shared>);

fn record_request(api: &'static str, started: Instant) {
    metrics::histogram!("sluice_request_seconds", "api" => api)
        .record(started.elapsed().as_secs_f64());
}

impl BrokerApi {
    /// A produce in two steps: the returned future's creation appends every partition's
    /// batches (checks, then the append on a blocking thread); awaiting it waits for
    /// what the acks need and answers. The Kafka listener starts pipelined requests of
    /// one connection in order, so their appends keep the order the client sent them.
    pub(crate) async fn start_produce(
        &self,
        r: v1::ProduceRequest,
    ) -> impl std::future::Future<Output = v1::ProduceResponse> + Send + 'static {
        let started = Instant::now();
        let timeout = Duration::from_millis(u64::from(r.timeout_ms.clamp(1, 300_000)));
        let acks = r.acks.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
        let appends = r.partitions.into_iter().map(|p| {
            let shared = self.0.clone();
            async move {
                let tp = TopicPartition::new(p.topic.clone(), p.partition);
                let bytes = p.records.len();
                let records = p.records.clone();
                // The coordinator writes its own records there; a client's would be
                // read back as group state.
                let appended = if p.topic == super::OFFSETS_TOPIC {
                    Err((
                        ErrorCode::InvalidTopic,
                        format!(
                            "{} is an internal topic: clients cannot produce to it",
                            p.topic
                        ),
                    ))
                } else if let Err(e) = check_topic_id(&shared, &tp, &p.topic_id) {
                    Err(e)
                } else {
                    // The append on a blocking thread: it takes the partition's locks,
                    // which other blocking threads hold across disk work, and may roll.
                    let appender = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        appender
                            .replicas
                            .start_produce(&tp, p.records, acks, timeout)
                    })
                    .await
                    .unwrap_or_else(|e| Err((ErrorCode::UnknownServerError, e.to_string())))
                };
                (p.topic, p.partition, bytes, records, appended)
            }
        });
        let appended = futures::future::join_all(appends).await;
        let shared = self.0.clone();
        async move {
            let answers = appended
                .into_iter()
                .map(|(topic, partition, bytes, records, appended)| {
                    let shared = shared.clone();
                    async move {
                        let result = match appended {
                            Ok(a) => shared.replicas.finish_produce(a).await,
                            Err(f) => Err(f),
                        };
                        let mut out = v1::ProducePartitionResponse {
                            topic,
                            partition,
                            base_offset: -1,
                            log_append_time: -1,
                            log_start_offset: -1,
                            ..Default::default()
                        };
                        match result {
                            Ok(done) => {
                                metrics::counter!("sluice_bytes_in_total", "topic" => out.topic.clone())
                                    .increment(bytes as u64);
                                metrics::counter!("sluice_records_in_total", "topic" => out.topic.clone())
                                    .increment(done.last_offset - done.base_offset + 1);
                                out.base_offset = done.base_offset as i64;
                                out.log_append_time = done.log_append_time.unwrap_or(-1);
                                out.log_start_offset = done.log_start_offset as i64;
                            }
                            Err((code, message)) => {
                                if code == ErrorCode::InvalidRecord {
                                    out.invalid_records =
                                        crate::replica::keyless_records(&records);
                                }
                                out.error_code = code.code();
                                out.error_message = message;
                                // Kafka gives the log start with the errors its log
                                // append raised (a producer's sequence or epoch, too
                                // few replicas, a record refused), not with those of
                                // an unknown or moved partition or an oversize batch.
                                if matches!(
                                    code,
                                    ErrorCode::OutOfOrderSequence
                                        | ErrorCode::NotEnoughReplicas
                                        | ErrorCode::InvalidRecord
                                ) {
                                    let tp = TopicPartition::new(out.topic.clone(), out.partition);
                                    if let Ok((Some(start), ..)) = shared.replicas.list_offset(&tp, -2)
                                    {
                                        out.log_start_offset = start as i64;
                                    }
                                }
                            }
                        }
                        out
                    }
                });
            let partitions = futures::future::join_all(answers).await;
            record_request("produce", started);
            v1::ProduceResponse { partitions }
        }
    }

    /// One fetch: reads at once, or waits (up to `max_wait_ms`) on the partitions'
    /// watches until `min_bytes` are there. `api` labels the request metric.
    pub(crate) async fn fetch_once(
        &self,
        r: v1::FetchRequest,
        api: &'static str,
    ) -> v1::FetchResponse {
        let started = Instant::now();
        let mut stopping = self.0.stopping.subscribe();
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(r.max_wait_ms)).min(FETCH_WAIT_MAX);
        let max_bytes = if r.max_bytes == 0 {
            FETCH_RESPONSE_BYTES_MAX
        } else {
            (r.max_bytes as usize).min(FETCH_RESPONSE_BYTES_MAX)
        };
        let wanted = Arc::new(r.partitions);
        loop {
            let (mut watches, partitions) = self
                .read_all_blocking(&wanted, max_bytes, r.replica_id, r.isolation_level == 1)
                .await;
            let bytes: usize = partitions.iter().map(|p| p.records.len()).sum();
            let errors = partitions
                .iter()
                .any(|p| p.error_code != 0 || p.diverging_end_offset >= 0);
            if bytes >= r.min_bytes.max(1) as usize
                || errors
                || Instant::now() >= deadline
                || watches.is_empty()
                || *stopping.borrow()
            {
                for p in &partitions {
                    if !p.records.is_empty() {
                        metrics::counter!("sluice_bytes_out_total", "topic" => p.topic.clone())
                            .increment(p.records.len() as u64);
                        metrics::counter!("sluice_records_out_total", "topic" => p.topic.clone())
                            .increment(records_in(&p.records));
                    }
                }
                record_request(api, started);
                return v1::FetchResponse { partitions };
            }
            let any_change = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = tokio::time::timeout_at(deadline.into(), any_change) => {}
                _ = stopping.changed() => {}
            }
        }
    }
}

/// Refuses a request naming topic id `wanted` (empty: unchecked) for a copy of `tp`
/// that carries another id: a deleted topic's log this broker still holds under a
/// re-created topic's name, until its new role arrives (docs/cluster.md).
fn check_topic_id(shared: &Shared, tp: &TopicPartition, wanted: &str) -> Result<(), Failure> {
    if wanted.is_empty() {
        return Ok(());
    }
    let held = shared.replicas.partition(tp).and_then(|p| p.log.topic_id());
    match (held, crate::log::TopicId::parse(wanted)) {
        (Some(held), Some(w)) if held != w => Err((
            ErrorCode::UnknownTopicId,
            format!(
                "this broker's copy of {tp} belongs to topic id {held}, not {wanted} (a deleted topic of the same name); refresh metadata and retry"
            ),
        )),
        _ => Ok(()),
    }
}

/// Records in `batches` (RecordBatch v2, back to back), control batches left out, read
/// from each header without a CRC pass: what `sluice_records_out_total` counts. Whole
/// batches are counted, as Kafka does, even where a fetch began inside one.
fn records_in(batches: &[u8]) -> u64 {
    // Kafka's RecordBatch v2 header: attributes at 21..23, records count at 57..61.
    const ATTRIBUTES_AT: usize = 21;
    const CONTROL_FLAG: u16 = 0x20;
    const RECORD_COUNT_AT: usize = 57;
    let mut rest = batches;
    let mut records = 0;
    while rest.len() >= RECORD_COUNT_AT + 4 {
        let Ok(size) = sluice_proto::batch::batch_size(rest) else {
            break;
        };
        let attributes = u16::from_be_bytes([rest[ATTRIBUTES_AT], rest[ATTRIBUTES_AT + 1]]);
        if attributes & CONTROL_FLAG == 0 {
            let count = &rest[RECORD_COUNT_AT..RECORD_COUNT_AT + 4];
            let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
            records += count.max(0) as u64;
        }
        rest = rest.get(size..).unwrap_or_default();
    }
    records
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerApi {
    #[tracing::instrument(skip_all, fields(partitions = req.get_ref().partitions.len(), acks = req.get_ref().acks))]
    async fn produce(
        &self,
        req: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        Ok(Response::new(
            self.start_produce(req.into_inner()).await.await,
        ))
    }

    #[tracing::instrument(skip_all, fields(partitions = req.get_ref().partitions.len()))]
    async fn fetch(
        &self,
        req: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        Ok(Response::new(
            self.fetch_once(req.into_inner(), "fetch").await,
        ))
    }

    type ReplicaFetchStream =
        Pin<Box<dyn Stream<Item = Result<v1::FetchResponse, Status>> + Send + 'static>>;

    /// Answers a follower's fetches in order on one stream, each long-polling as
    /// [`fetch`](Self::fetch) does. Ends when the follower closes its side.
    async fn replica_fetch(
        &self,
        req: Request<Streaming<v1::FetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        let mut inbound = req.into_inner();
        let api = BrokerApi(self.0.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut stopping = self.0.stopping.subscribe();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let Ok(Some(r)) = next else {
                    return;
                };
                let answer = if r.replica_id < 0 {
                    Err(Status::invalid_argument(
                        "ReplicaFetch is for followers: set replica_id",
                    ))
                } else {
                    Ok(api.fetch_once(r, "replica_fetch").await)
                };
                let last = answer.is_err();
                if tx.send(answer).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        req: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let started = Instant::now();
        let wanted = req.into_inner().partitions;
        let shared = self.0.clone();
        // A search by timestamp reads segments: on a blocking thread.
        let listed = tokio::task::spawn_blocking(move || BrokerApi(shared).list_all(wanted)).await;
        let partitions =
            listed.map_err(|e| Status::internal(format!("ListOffsets failed: {e}")))?;
        record_request("list_offsets", started);
        Ok(Response::new(v1::ListOffsetsResponse { partitions }))
    }

    async fn write_txn_markers(
        &self,
        req: Request<v1::WriteTxnMarkersRequest>,
    ) -> Result<Response<v1::WriteTxnMarkersResponse>, Status> {
        let r = req.into_inner();
        let epoch = i16::try_from(r.producer_epoch)
            .map_err(|_| Status::invalid_argument("producer_epoch out of range"))?;
        let tps = r
            .partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic.clone(), *p))
            })
            .collect();
        let written = super::txn::write_markers_here(
            &self.0,
            r.producer_id,
            epoch,
            r.commit,
            r.coordinator_epoch,
            tps,
        )
        .await;
        let partitions = written
            .into_iter()
            .map(|(tp, result)| {
                let (code, message) = match result {
                    Ok(()) => (ErrorCode::None, String::new()),
                    Err(f) => f,
                };
                v1::ListOffsetsPartitionResponse {
                    topic: tp.topic,
                    partition: tp.partition,
                    error_code: code.code(),
                    error_message: message,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(v1::WriteTxnMarkersResponse { partitions }))
    }

    async fn metadata(
        &self,
        req: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        if self.0.gate.missed_pushes() {
            return Err(sluice_proto::status::not_ready(format!(
                "broker {} at {} missed updates from the controller (its connections to this broker fail); ask another broker",
                self.0.config.id, self.0.config.advertised_addr
            )));
        }
        let started = Instant::now();
        let wanted = req.into_inner().topics;
        let mut md = self.0.metadata.read().clone();
        if !wanted.is_empty() {
            let mut topics = Vec::new();
            for name in wanted {
                match md.topics.iter().find(|t| t.name == name) {
                    Some(t) => topics.push(t.clone()),
                    None => topics.push(v1::TopicMetadata {
                        error_code: ErrorCode::UnknownTopicOrPartition.code(),
                        error_message: format!("topic {name} does not exist"),
                        name,
                        ..Default::default()
                    }),
                }
            }
            md.topics = topics;
        }
        record_request("metadata", started);
        Ok(Response::new(md))
    }
}

impl BrokerApi {
    /// ListOffsets for each partition (blocking: may read segments).
    pub(crate) fn list_all(
        &self,
        wanted: Vec<v1::ListOffsetsPartition>,
    ) -> Vec<v1::ListOffsetsPartitionResponse> {
        wanted
            .into_iter()
            .map(|p| {
                let tp = TopicPartition::new(p.topic.clone(), p.partition);
                let mut out = v1::ListOffsetsPartitionResponse {
                    topic: p.topic,
                    partition: p.partition,
                    offset: -1,
                    timestamp: -1,
                    ..Default::default()
                };
                match self.0.replicas.list_offset(&tp, p.timestamp) {
                    Ok((offset, ts, part)) => {
                        out.offset = offset.map_or(-1, |o| o as i64);
                        out.timestamp = ts;
                        out.log_start_offset = part.log.log_start_offset() as i64;
                        out.high_watermark = part.high_watermark() as i64;
                        out.last_stable_offset =
                            part.last_stable_offset(part.high_watermark()) as i64;
                        out.log_end_offset = part.log.log_end_offset() as i64;
                        out.leader_epoch = part.role().leader_epoch.to_wire();
                        out.size_bytes = part.log.size_bytes() as i64;
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        let view = part.log.compaction_view(now, part.high_watermark());
                        let compacted = part.log.config().cleanup_policy.compacts();
                        out.dirty_ratio = if compacted { view.dirty_ratio } else { -1.0 };
                        out.last_clean_ms = view.last_clean_ms.unwrap_or(-1);
                    }
                    Err((code, message)) => {
                        out.error_code = code.code();
                        out.error_message = message;
                    }
                }
                out
            })
            .collect()
    }

    /// The partitions' watches (subscribed before reading, so an append between the
    /// read and the wait wakes the fetch) and [`BrokerApi::read_all`], on a blocking
    /// thread: reads touch the disk (a cold segment page-faults for as long as the disk
    /// takes), and even the watches take each partition's lock, which blocking threads
    /// hold across appends (a journal commit on a slow disk can hold one for seconds).
    /// None of it may stall the async workers that serve other requests and heartbeats.
    async fn read_all_blocking(
        &self,
        partitions: &Arc<Vec<v1::FetchPartition>>,
        max_bytes: usize,
        replica_id: i32,
        read_committed: bool,
    ) -> (Vec<watch::Receiver<u64>>, Vec<v1::FetchPartitionResponse>) {
        let (shared, wanted) = (self.0.clone(), partitions.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut watches: Vec<_> = wanted
                .iter()
                .filter_map(|p| {
                    // Followers wait for new data (log end), consumers for committed data.
                    let tp = TopicPartition::new(p.topic.clone(), p.partition);
                    if replica_id >= 0 {
                        shared.replicas.watch_leo(&tp)
                    } else {
                        shared.replicas.watch_hw(&tp)
                    }
                })
                .collect();
            for w in &mut watches {
                w.mark_unchanged();
            }
            let read = BrokerApi(shared).read_all(&wanted, max_bytes, replica_id, read_committed);
            (watches, read)
        })
        .await;
        read.unwrap_or_else(|e| {
            let failed = partitions
                .iter()
                .map(|p| v1::FetchPartitionResponse {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error_code: ErrorCode::UnknownServerError.code(),
                    error_message: format!("the read failed: {e}"),
                    high_watermark: -1,
                    log_start_offset: -1,
                    log_end_offset: -1,
                    diverging_epoch: -1,
                    diverging_end_offset: -1,
                    ..Default::default()
                })
                .collect();
            (Vec::new(), failed)
        })
    }

    fn read_all(
        &self,
        partitions: &[v1::FetchPartition],
        max_bytes: usize,
        replica_id: i32,
        read_committed: bool,
    ) -> Vec<v1::FetchPartitionResponse> {
        let mut budget = max_bytes;
        partitions
            .iter()
            .map(|p| {
                let tp = TopicPartition::new(p.topic.clone(), p.partition);
                let mut out = v1::FetchPartitionResponse {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    log_end_offset: -1,
                    diverging_epoch: -1,
                    diverging_end_offset: -1,
                    ..Default::default()
                };
                if let Err((code, message)) = check_topic_id(&self.0, &tp, &p.topic_id) {
                    out.error_code = code.code();
                    out.error_message = message;
                    return out;
                }
                if replica_id >= 0 {
                    let limit = if p.partition_max_bytes == 0 {
                        budget
                    } else {
                        (p.partition_max_bytes as usize).min(budget)
                    };
                    self.follower_read(p, &tp, replica_id as u32, limit, &mut out);
                    budget = budget.saturating_sub(out.records.len());
                    return out;
                }
                let limit = if p.partition_max_bytes == 0 {
                    budget
                } else {
                    (p.partition_max_bytes as usize).min(budget)
                };
                let result: Result<_, Failure> = if p.fetch_offset < 0 {
                    Err((
                        ErrorCode::OffsetOutOfRange,
                        format!("{tp}: negative fetch offset {}", p.fetch_offset),
                    ))
                } else if limit == 0 {
                    Ok(None)
                } else {
                    self.0
                        .replicas
                        .fetch_isolated(&tp, p.fetch_offset as u64, limit, read_committed)
                        .map(Some)
                };
                match result {
                    Ok(Some(f)) => {
                        budget = budget.saturating_sub(f.records.len());
                        out.records = f.records;
                        out.high_watermark = f.high_watermark as i64;
                        out.last_stable_offset = f.last_stable_offset as i64;
                        out.log_start_offset = f.log_start_offset as i64;
                        out.log_end_offset = f.log_end_offset as i64;
                        out.aborted_transactions = f
                            .aborted
                            .iter()
                            .map(|a| v1::AbortedTransaction {
                                producer_id: a.producer_id,
                                first_offset: a.first_offset as i64,
                            })
                            .collect();
                    }
                    Ok(None) => out.records = Bytes::new(),
                    Err((code, message)) => {
                        out.error_code = code.code();
                        out.error_message = message;
                    }
                }
                out
            })
            .collect()
    }

    /// A follower's fetch of one partition (replication).
    fn follower_read(
        &self,
        p: &v1::FetchPartition,
        tp: &TopicPartition,
        replica: u32,
        limit: usize,
        out: &mut v1::FetchPartitionResponse,
    ) {
        let want = crate::replica::ToFetch {
            tp: tp.clone(),
            fetch_offset: Offset(p.fetch_offset.max(0) as u64),
            current_leader_epoch: LeaderEpoch::from_wire(p.current_leader_epoch),
            last_fetched_epoch: LeaderEpoch::from_wire(p.last_fetched_epoch),
        };
        match self.0.replicas.fetch_for_follower(replica, &want, limit) {
            Ok(f) => {
                out.records = f.records;
                out.high_watermark = f.high_watermark as i64;
                out.log_start_offset = f.log_start_offset as i64;
                out.log_end_offset = f.log_end_offset as i64;
                if let Some((epoch, end)) = f.diverging {
                    out.diverging_epoch = epoch.map_or(-1, LeaderEpoch::to_wire);
                    out.diverging_end_offset = end.to_wire();
                }
            }
            Err((code, message)) => {
                out.error_code = code.code();
                out.error_message = message;
                if let Some(part) = self.0.replicas.partition(tp) {
                    out.log_start_offset = part.log.log_start_offset() as i64;
                    out.log_end_offset = part.log.log_end_offset() as i64;
                }
            }
        }
    }
}
