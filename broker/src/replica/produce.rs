//! The produce path of [`ReplicaManager`]: validate a request's batches, append them
//! under the partition's lock (the state machine says whether this broker may, the
//! producer state whether each batch is new), then wait for what the answer needs —
//! the flush `flush.messages` asks for and, for acks=all, the in-sync replicas. The
//! synchronous half ([`ReplicaManager::produce_append`] / `start_produce`) runs on a
//! blocking thread in the broker and directly in the simulator; the waiting half is
//! async. Nothing is appended unless every batch of the request validates.

use super::*;

/// What a successful produce returns.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_append_time: Option<i64>,
    pub log_start_offset: u64,
}

/// A produce appended and not yet answered ([`ReplicaManager::start_produce`]).
pub struct StartedProduce<L = Log> {
    appended: Appended<L>,
    timeout: Duration,
}

/// A produce that is in the log, with what remains before it may be answered: see
/// [`ReplicaManager::produce_append`].
pub struct Appended<L = Log> {
    pub produced: Produced,
    pub partition: Arc<Partition<L>>,
    /// `flush.messages` is reached: everything below this must be flushed first.
    pub flush_to: Option<u64>,
    /// The acks=all waiter; the state machine answers it.
    pub waiter: Option<(WaiterId, oneshot::Receiver<Result<(), ErrorCode>>)>,
}

/// The answer for a waiter that failed, in words a user can act on.
fn waiter_failure(tp: &TopicPartition, code: ErrorCode, timeout: Duration) -> Failure {
    let message = match code {
        ErrorCode::NotLeaderOrFollower => format!(
            "{tp}: leadership changed before the in-sync replicas confirmed the write; it may \
             be truncated by the new leader: retry"
        ),
        ErrorCode::NotEnoughReplicasAfterAppend => format!(
            "{tp}: written on the leader, but the in-sync replica set shrank below \
             min.insync.replicas before the write was replicated: retry"
        ),
        ErrorCode::RequestTimedOut => {
            format!("{tp}: in-sync replicas did not confirm within {timeout:?}")
        }
        other => format!("{tp}: {}", other.name()),
    };
    (code, message)
}

impl<S: LogStore> ReplicaManager<S> {
    /// Validates and appends the batches in `records`, then waits as `acks` demands:
    /// [`ReplicaManager::start_produce`] then [`ReplicaManager::finish_produce`]. The
    /// first part runs on the calling task; the broker's Produce service runs it on a
    /// blocking thread instead (it may wait on the disk or on a lock held across it).
    pub async fn produce(
        &self,
        tp: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<Produced, Failure> {
        let started = self.start_produce(tp, records, acks, timeout)?;
        self.finish_produce(started).await
    }

    /// The synchronous part of a produce ([`ReplicaManager::produce_append`]): checks
    /// leadership and the batches, and appends them. Blocks (partition and log locks, a
    /// roll's file creation): call it from a blocking thread.
    pub fn start_produce(
        &self,
        tp: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<StartedProduce<S::Log>, Failure> {
        Ok(StartedProduce {
            appended: self.produce_append(tp, records, acks, timeout)?,
            timeout,
        })
    }

    /// The waiting part of a produce: the fsync `flush.messages` asks for (on a
    /// blocking thread), then the in-sync replicas for acks=all.
    pub async fn finish_produce(
        &self,
        started: StartedProduce<S::Log>,
    ) -> Result<Produced, Failure> {
        let StartedProduce {
            appended:
                Appended {
                    produced,
                    partition: p,
                    flush_to,
                    waiter,
                },
            timeout,
        } = started;
        let tp = &p.tp;
        if let Some(end) = flush_to {
            let log = p.log.clone();
            tokio::task::spawn_blocking(move || log.flush_to(end))
                .await
                .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?
                .map_err(storage_failure)?;
        }
        if let Some((id, rx)) = waiter {
            // The state machine answers at the deadline; the margin only covers a tick
            // that never comes (the broker stopping).
            let waited = tokio::time::timeout(timeout + Duration::from_secs(1), rx).await;
            let code = match waited {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(code))) => Some(code),
                Ok(Err(_)) => Some(ErrorCode::NotLeaderOrFollower),
                Err(_) => {
                    p.waiters.lock().remove(&id);
                    Some(ErrorCode::RequestTimedOut)
                }
            };
            if let Some(code) = code {
                return Err(waiter_failure(tp, code, timeout));
            }
        }
        Ok(produced)
    }

    /// Appends a transaction marker on the leader of `tp` (Kafka's WriteTxnMarkers): a
    /// control batch of `producer_id` at `producer_epoch` that commits or aborts the
    /// producer's open transaction here. Waits as acks=all does, through
    /// [`ReplicaManager::finish_produce`]: the coordinator completes a transaction only
    /// once every marker is on the in-sync replicas.
    pub fn start_marker(
        &self,
        tp: &TopicPartition,
        producer_id: i64,
        producer_epoch: i16,
        marker: super::txns::Marker,
        coordinator_epoch: i32,
        timeout: Duration,
    ) -> Result<StartedProduce<S::Log>, Failure> {
        let p = self.leader_partition(tp)?;
        if let Err(newer) = p
            .replica
            .lock()
            .producers
            .check_marker(producer_id, coordinator_epoch)
        {
            return Err((
                ErrorCode::TransactionCoordinatorFenced,
                format!(
                    "{tp}: a marker of producer {producer_id} from coordinator epoch \
                     {coordinator_epoch}; coordinator epoch {newer} already wrote one"
                ),
            ));
        }
        let mut b = sluice_proto::BatchBuilder::new(sluice_proto::Compression::None)
            .producer(producer_id, producer_epoch, -1)
            .transactional(true)
            .control(true);
        let value = super::txns::Marker::value(coordinator_epoch);
        b.append(self.clock.wall_ms(), Some(&marker.key()), Some(&value), &[]);
        let batch = b
            .build()
            .map_err(|e| (ErrorCode::UnknownServerError, e.to_string()))?;
        let (produced, needs_flush, waiter) = self.append(&p, &[batch], true, timeout)?;
        Ok(StartedProduce {
            appended: Appended {
                produced,
                flush_to: needs_flush.then_some(produced.last_offset + 1),
                partition: p,
                waiter,
            },
            timeout,
        })
    }

    /// The synchronous half of [`ReplicaManager::produce`]: validates and appends, and
    /// returns what is left to wait for — a flush (`flush.messages`) and the acks=all
    /// answer. `produce` awaits them; the simulator, which has no runtime, carries them
    /// out itself (the flush, then polling the waiter).
    pub fn produce_append(
        &self,
        tp: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<Appended<S::Log>, Failure> {
        if !(-1..=1).contains(&acks) {
            return Err((
                ErrorCode::InvalidRequiredAcks,
                format!("acks must be -1 (all), 0 or 1, got {acks}"),
            ));
        }
        let p = self.leader_partition(tp)?;
        let batches = validate_batches(tp, records, &p.log.config())?;
        let (produced, needs_flush, waiter) = self.append(&p, &batches, acks == -1, timeout)?;
        Ok(Appended {
            produced,
            flush_to: needs_flush.then_some(produced.last_offset + 1),
            partition: p,
            waiter,
        })
    }

    /// The append itself, under the partition's lock: the state machine says whether
    /// this broker may append, the producer state says whether each batch is new, the
    /// log appends, and the state machine learns the new log end (and the waiter).
    #[allow(clippy::type_complexity)]
    fn append(
        &self,
        p: &Partition<S::Log>,
        batches: &[RecordBatch],
        acks_all: bool,
        timeout: Duration,
    ) -> Result<
        (
            Produced,
            bool,
            Option<(WaiterId, oneshot::Receiver<Result<(), ErrorCode>>)>,
        ),
        Failure,
    > {
        let tp = &p.tp;
        let mut guard = p.replica.lock();
        let replica = &mut *guard;
        let leader_epoch = match replica.state.check_produce(acks_all) {
            Ok(epoch) => epoch,
            Err(Refusal::NotLeader { leader }) => return Err(self.not_leader(tp, leader)),
            Err(Refusal::NotEnoughReplicas { isr, min }) => {
                return Err((
                    ErrorCode::NotEnoughReplicas,
                    format!("{tp}: {isr} in-sync replicas, min.insync.replicas={min}"),
                ))
            }
        };
        let now = self.clock.wall_ms();
        let mut first: Option<Produced> = None;
        let mut needs_flush = false;
        let mut failed = None;
        for b in batches {
            match append_one(p, replica, b, leader_epoch, now) {
                Ok(info) => {
                    needs_flush |= info.needs_flush;
                    first = Some(match first {
                        Some(f) => Produced {
                            last_offset: info.last_offset,
                            ..f
                        },
                        None => Produced {
                            base_offset: info.base_offset,
                            last_offset: info.last_offset,
                            log_append_time: info.log_append_time,
                            log_start_offset: 0,
                        },
                    });
                }
                Err(f) => {
                    failed = Some(f);
                    break;
                }
            }
        }
        let answer = match (&first, acks_all, &failed) {
            (Some(f), true, None) => {
                let id = WaiterId(p.next_waiter.fetch_add(1, Ordering::Relaxed));
                let (tx, rx) = oneshot::channel();
                p.waiters.lock().insert(id, tx);
                let waiter = state::NewWaiter {
                    id,
                    required_end: Offset(f.last_offset + 1),
                    deadline: self.clock.now() + timeout,
                };
                Some((waiter, rx))
            }
            _ => None,
        };
        let event = Event::Appended {
            log_end_offset: p.log_end(),
            waiter: answer.as_ref().map(|(w, _)| *w),
        };
        p.handle(replica, event)?;
        p.leo_tx.send_replace(p.log.log_end_offset());
        drop(guard);
        if let Some(f) = failed {
            return Err(f);
        }
        let mut produced = first.ok_or_else(|| {
            (
                ErrorCode::CorruptMessage,
                format!("{tp}: the request carries no record batch"),
            )
        })?;
        produced.log_start_offset = p.log.log_start_offset();
        Ok((produced, needs_flush, answer.map(|(w, rx)| (w.id, rx))))
    }
}

/// Decodes and checks every batch of a produce request before anything is appended.
fn validate_batches(
    tp: &TopicPartition,
    records: Bytes,
    config: &LogConfig,
) -> Result<Vec<RecordBatch>, Failure> {
    let mut batches = Vec::new();
    for b in Batches::new(records) {
        let b: RecordBatch = b.map_err(|e| (ErrorCode::CorruptMessage, format!("{tp}: {e}")))?;
        if b.size() as u64 > config.max_message_bytes {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "{tp}: batch of {} bytes exceeds max.message.bytes={}",
                    b.size(),
                    config.max_message_bytes
                ),
            ));
        }
        b.validate(&ValidateOptions::default())
            .map_err(|e| (ErrorCode::CorruptMessage, format!("{tp}: {e}")))?;
        if b.delete_horizon_ms().is_some() {
            // Only the log cleaner stamps a delete horizon; from a producer it would
            // let tombstones vanish before delete.retention.ms.
            return Err((
                ErrorCode::CorruptMessage,
                format!(
                    "{tp}: batch attribute bit 6 (delete horizon) is reserved for the log cleaner"
                ),
            ));
        }
        if b.is_control() {
            // Only the transaction coordinator writes markers (WriteTxnMarkers).
            return Err((
                ErrorCode::InvalidRecord,
                format!("{tp}: a control batch (attribute bit 5) from a producer"),
            ));
        }
        if config.cleanup_policy.compacts() {
            refuse_keyless(tp, &b)?;
        }
        // `compression.type`: stored in the topic's codec, whatever the producer used.
        let b = match config.compression_type {
            Some(codec) => sluice_proto::batch::compact::recompress(&b, codec)
                .map_err(|e| (ErrorCode::CorruptMessage, format!("{tp}: {e}")))?,
            None => b,
        };
        batches.push(b);
    }
    if batches.is_empty() {
        return Err((
            ErrorCode::CorruptMessage,
            format!("{tp}: the request carries no record batch"),
        ));
    }
    Ok(batches)
}

/// The positions in their batch of the records without a key in `records` (a produce
/// request's batches): the records [`refuse_keyless`] refuses on a compacted topic,
/// which a Kafka client is told one by one (KIP-467). Undecodable batches add nothing.
pub fn keyless_records(records: &Bytes) -> Vec<u32> {
    let mut out = Vec::new();
    for b in Batches::new(records.clone()) {
        let Ok(b): Result<RecordBatch, _> = b else {
            break;
        };
        let _ = b.for_each_key(|r| {
            if r.key.is_none() {
                out.push(r.offset_delta as u32);
            }
        });
    }
    out
}

/// Kafka's rule for compacted topics: compaction keeps the latest record per key, so a
/// record without a key has no meaning there and is refused (INVALID_RECORD).
fn refuse_keyless(tp: &TopicPartition, b: &RecordBatch) -> Result<(), Failure> {
    let mut keyless = None;
    b.for_each_key(|r| {
        if r.key.is_none() && keyless.is_none() {
            keyless = Some(r.offset_delta);
        }
    })
    .map_err(|e| (ErrorCode::CorruptMessage, format!("{tp}: {e}")))?;
    match keyless {
        Some(i) => Err((
            ErrorCode::InvalidRecord,
            format!("{tp}: record {i} of the batch has no key; a compacted topic (cleanup.policy=compact) keeps the latest record per key, so every record needs one"),
        )),
        None => Ok(()),
    }
}

/// Appends one batch unless the producer state finds it is a retry already in the log.
fn append_one<L: ReplicaLog>(
    p: &Partition<L>,
    replica: &mut Replica,
    b: &RecordBatch,
    leader_epoch: LeaderEpoch,
    now_ms: i64,
) -> Result<crate::log::AppendInfo, Failure> {
    let check = if b.producer_id() >= 0 && !b.is_control() {
        replica.producers.check(b)
    } else {
        producers::Check::Append
    };
    match check {
        producers::Check::Duplicate(base) => Ok(crate::log::AppendInfo {
            base_offset: base,
            last_offset: base + b.last_offset_delta() as u64,
            log_append_time: None,
            needs_flush: false,
        }),
        producers::Check::OutOfOrder { expected, got } => Err((
            ErrorCode::OutOfOrderSequence,
            format!(
                "{}: producer {} sent sequence {got}, expected {expected}",
                p.tp,
                b.producer_id()
            ),
        )),
        producers::Check::Fenced { current } => Err((
            ErrorCode::InvalidProducerEpoch,
            format!(
                "{}: producer {} has epoch {current}; a batch of epoch {} is from a fenced \
                 instance",
                p.tp,
                b.producer_id(),
                b.producer_epoch()
            ),
        )),
        producers::Check::Append => {
            replica
                .txns
                .before_append(&*p.log, std::iter::once(b))
                .map_err(storage_failure)?;
            let info = p
                .log
                .append_as_leader(b, leader_epoch.0, now_ms)
                .map_err(storage_failure)?;
            replica.producers.record(b, info.base_offset, now_ms);
            replica.txns.observe(b, info.base_offset);
            p.publish_first_unstable(replica);
            Ok(info)
        }
    }
}
