//! One partition's fetch loop: large fetches from the leader, decoded here (outside
//! any lock, on whichever runtime thread runs this task) into [`Rec`]s and handed to
//! the applier over a bounded channel. A semaphore of `fetch_max_bytes` (in KiB)
//! shared by the set bounds the bytes fetched but not yet applied: each fetch holds
//! what it may return until the applier took it in, so a slow applier stops the
//! fetchers instead of growing memory. A partition that has caught up asks for only
//! [`FOLLOW_FETCH_BYTES`] per long poll, so every partition of a large set can keep
//! one waiting at the broker (a change anywhere is seen at once) while bootstrapping
//! partitions use the rest for full-size fetches.
//!
//! Errors: a leader move, an unreachable broker or any retriable code refreshes
//! metadata and retries with backoff; OFFSET_OUT_OF_RANGE restarts the partition at
//! its log start (docs/table.md says what that means for deleted keys); anything else
//! is reported to the applier, which fails the set.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_proto::batch::Batches;
use sluice_proto::source_pos::RecordPos;
use sluice_proto::{v1, ErrorCode};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::txn::{Rec, RecPos, Tp, TxnTag};
use super::{
    FORMAT_HEADER, HEARTBEAT_HEADER, POS_HEADER, TRUNCATE_HEADER, TXN_END_HEADER, TXN_HEADER,
};
use crate::cluster::Cluster;
use crate::Error;
use sluice_proto::source_pos::SNAPSHOT_HEADER;

/// What a fetch task tells the applier.
pub(crate) enum Delivery {
    Records {
        tp: Tp,
        records: Vec<Rec>,
        next_offset: u64,
        /// From the same answer.
        high_watermark: u64,
        /// Held until the applier has taken the records in.
        _permit: OwnedSemaphorePermit,
    },
    /// The partition starts over at `offset` (its log start).
    Reset {
        tp: Tp,
        offset: u64,
    },
    Failed {
        error: Error,
    },
}

/// What one fetch task needs.
pub(crate) struct Fetcher {
    pub cluster: Cluster,
    pub topic: String,
    pub tp: Tp,
    pub next_offset: u64,
    pub partition_max_bytes: u32,
    pub max_wait: Duration,
    /// Invariant: holds `fetch_max_bytes / PERMIT_BYTES` permits in all.
    pub permits: Arc<Semaphore>,
    /// The last answer reached the high watermark (so the next fetch long-polls).
    pub caught_up: bool,
    pub tx: mpsc::Sender<Delivery>,
    pub shutdown: watch::Receiver<bool>,
    /// The topic's count of `sluice.pos` headers that did not parse (`TableStats`).
    pub malformed_positions: Arc<AtomicU64>,
    /// When a malformed `sluice.pos` was last logged (at most once per
    /// [`MALFORMED_LOG_EVERY`]).
    pub malformed_logged_at: Option<Instant>,
    /// [`super::TableConfig::row_images`].
    pub row_images: bool,
}

/// What a caught-up partition asks for per fetch. An answer that stops short of the
/// high watermark switches it back to `partition_max_bytes`.
pub(crate) const FOLLOW_FETCH_BYTES: u32 = 256 * 1024;
/// Semaphore unit: permits count KiB.
pub(crate) const PERMIT_BYTES: u32 = 1024;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Undecodable answers tolerated in a row before the table fails.
const DECODE_FAILURES_MAX: u32 = 3;
/// A partition logs malformed `sluice.pos` headers at most this often: a connector
/// writing bad ones writes them on every record.
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(60);

enum Step {
    Continue,
    Stop,
}

impl Fetcher {
    pub(crate) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut decode_failures = 0;
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let ask = self.ask_bytes();
            let permit = tokio::select! {
                p = self.permits.clone().acquire_many_owned(ask.div_ceil(PERMIT_BYTES)) => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            };
            let answer = tokio::select! {
                a = self.fetch_once(ask) => a,
                _ = shutdown.changed() => return,
            };
            let step = match answer {
                Ok(p) => self.absorb(p, permit, &mut decode_failures).await,
                Err(e) => {
                    debug!(topic = %self.topic, partition = self.tp.1, error = %e, "fetch failed; retrying");
                    self.cluster.invalidate(&self.topic);
                    Err(e)
                }
            };
            match step {
                Ok(Step::Continue) => backoff = BACKOFF_MIN,
                Ok(Step::Stop) => return,
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The partition's log start offset, from its leader (ListOffsets earliest).
    async fn log_start_offset(&self) -> Result<u64, Error> {
        let addr = self
            .cluster
            .leader_addr_refreshed(&self.topic, self.tp.1)
            .await?;
        let req = v1::ListOffsetsRequest {
            partitions: vec![v1::ListOffsetsPartition {
                topic: self.topic.clone(),
                partition: self.tp.1,
                timestamp: -2,
            }],
        };
        let resp = self
            .cluster
            .broker_client(&addr)?
            .list_offsets(req)
            .await
            .map_err(|s| Error::from_status(&addr, s))?
            .into_inner();
        match resp.partitions.into_iter().next() {
            Some(p) if p.error_code == 0 => Ok(p.log_start_offset.max(p.offset).max(0) as u64),
            Some(p) => Err(Error::broker(p.error_code, p.error_message)),
            None => Err(Error::broker(
                -1,
                format!("{addr}: empty ListOffsets answer"),
            )),
        }
    }

    /// Counts malformed `sluice.pos` headers; logs them, rate-limited.
    fn count_malformed(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let total = self
            .malformed_positions
            .fetch_add(n, AtomicOrdering::Relaxed)
            + n;
        let now = Instant::now();
        if self
            .malformed_logged_at
            .is_none_or(|at| now.duration_since(at) >= MALFORMED_LOG_EVERY)
        {
            self.malformed_logged_at = Some(now);
            warn!(topic = %self.topic, partition = self.tp.1, malformed = n, total,
                "sluice.pos headers that do not parse; ignored for source positions");
        }
    }

    fn ask_bytes(&self) -> u32 {
        if self.caught_up {
            FOLLOW_FETCH_BYTES.min(self.partition_max_bytes)
        } else {
            self.partition_max_bytes
        }
    }

    async fn fetch_once(&self, ask: u32) -> Result<v1::FetchPartitionResponse, Error> {
        let addr = self
            .cluster
            .leader_addr_refreshed(&self.topic, self.tp.1)
            .await?;
        let mut client = self.cluster.broker_client(&addr)?;
        let req = v1::FetchRequest {
            max_wait_ms: self.max_wait.as_millis() as u32,
            min_bytes: 1,
            max_bytes: ask,
            partitions: vec![v1::FetchPartition {
                topic: self.topic.clone(),
                partition: self.tp.1,
                fetch_offset: self.next_offset as i64,
                partition_max_bytes: ask,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                topic_id: self.cluster.topic_id(&self.topic),
            }],
            replica_id: -1,
            isolation_level: 0,
        };
        let resp = client
            .fetch(req)
            .await
            .map_err(|s| Error::from_status(&addr, s))?
            .into_inner();
        resp.partitions
            .into_iter()
            .find(|p| p.topic == self.topic && p.partition == self.tp.1)
            .ok_or_else(|| Error::broker(-1, format!("{addr}: fetch answer without the partition")))
    }

    /// Handles one partition answer. `Err` means: back off, then fetch again.
    async fn absorb(
        &mut self,
        p: v1::FetchPartitionResponse,
        permit: OwnedSemaphorePermit,
        decode_failures: &mut u32,
    ) -> Result<Step, Error> {
        let delivery = match ErrorCode::from_code(p.error_code) {
            ErrorCode::None => match decode(
                &self.topic,
                self.tp.1,
                p.records,
                self.next_offset,
                self.row_images,
            ) {
                Ok(Decoded {
                    records,
                    next_offset: next,
                    malformed_positions,
                }) => {
                    *decode_failures = 0;
                    self.count_malformed(malformed_positions);
                    self.next_offset = next;
                    // At the high watermark the next fetch long-polls: ask small.
                    self.caught_up = next >= p.high_watermark.max(0) as u64;
                    Delivery::Records {
                        tp: self.tp,
                        records,
                        next_offset: next,
                        high_watermark: p.high_watermark.max(0) as u64,
                        _permit: permit,
                    }
                }
                Err(e) if *decode_failures + 1 < DECODE_FAILURES_MAX => {
                    *decode_failures += 1;
                    warn!(topic = %self.topic, partition = self.tp.1, error = %e, "undecodable fetch answer; fetching again");
                    return Err(e);
                }
                Err(error) => Delivery::Failed { error },
            },
            ErrorCode::OffsetOutOfRange => {
                // The error answer need not carry offsets: ask the leader.
                let start = self.log_start_offset().await?;
                info!(topic = %self.topic, partition = self.tp.1, position = self.next_offset,
                    log_start_offset = start, "position out of range; starting over at the log start");
                self.next_offset = start;
                Delivery::Reset {
                    tp: self.tp,
                    offset: start,
                }
            }
            code if code.is_retriable() => {
                self.cluster.invalidate(&self.topic);
                return Err(Error::broker(p.error_code, p.error_message));
            }
            _ => Delivery::Failed {
                error: Error::broker(
                    p.error_code,
                    format!("{}-{}: {}", self.topic, self.tp.1, p.error_message),
                ),
            },
        };
        let stop = matches!(delivery, Delivery::Failed { .. });
        if self.tx.send(delivery).await.is_err() || stop {
            return Ok(Step::Stop);
        }
        Ok(Step::Continue)
    }
}

/// One fetch answer, decoded.
pub(crate) struct Decoded {
    pub records: Vec<Rec>,
    /// The offset to fetch next.
    pub next_offset: u64,
    /// `sluice.pos` headers that did not parse (ignored for positions).
    pub malformed_positions: u64,
}

/// Decodes a fetch answer's batches into records at or after `from`.
///
/// A heartbeat (any record with [`HEARTBEAT_HEADER`]) becomes a keyless record that
/// only carries its position: never a row, never held (its `sluice.txn`, which a
/// connector never writes, is ignored). A truncate marker ([`TRUNCATE_HEADER`]) is
/// decoded without its key: it is no row, but it keeps its transaction and position.
/// With `row_images`, a CDC record (one with `sluice.pos`) in the envelope format (no
/// `sluice.format: row`) keeps only its `after` image ([`super::TableConfig::row_images`]).
pub(crate) fn decode(
    topic: &str,
    partition: u32,
    data: Bytes,
    from: u64,
    row_images: bool,
) -> Result<Decoded, Error> {
    let corrupt = |e: sluice_proto::BatchError| {
        Error::broker(
            ErrorCode::CorruptMessage.code(),
            format!("{topic}-{partition}: {e}"),
        )
    };
    let mut out = Vec::new();
    let mut next = from;
    let mut malformed_positions = 0;
    for batch in Batches::new(data) {
        let batch = batch.map_err(corrupt)?;
        let batch_next = batch.next_offset().max(0) as u64;
        if batch.is_control() || batch_next <= from {
            next = next.max(batch_next);
            continue;
        }
        let base = batch.base_offset().max(0) as u64;
        let records = batch.records().map_err(corrupt)?;
        out.reserve(records.len());
        for r in records {
            let offset = base + r.offset_delta.max(0) as u64;
            if offset < from {
                continue;
            }
            let mut id = None;
            let mut end = None;
            let mut pos = None;
            let mut heartbeat = false;
            let mut copy_row = false;
            let mut truncate = false;
            let mut cdc = false;
            let mut row_format = false;
            for h in r.headers {
                if h.key == TXN_HEADER {
                    id = Some(h.value.unwrap_or_default());
                } else if h.key == TXN_END_HEADER {
                    end = Some(h.value.unwrap_or_default());
                } else if h.key == POS_HEADER {
                    cdc = true;
                    match RecordPos::from_header(h.value.as_deref().unwrap_or_default()) {
                        Ok(p) => pos = Some(p.pos),
                        Err(_) => malformed_positions += 1,
                    }
                } else if h.key == HEARTBEAT_HEADER {
                    heartbeat = true;
                } else if h.key == SNAPSHOT_HEADER {
                    copy_row = true;
                } else if h.key == TRUNCATE_HEADER {
                    truncate = true;
                } else if h.key == FORMAT_HEADER {
                    row_format = h.value.as_deref() == Some(b"row");
                }
            }
            let mut value = r.value;
            if row_images && cdc && !row_format && !heartbeat && !truncate {
                if let Some(after) = value.as_ref().and_then(super::row_image::envelope_after) {
                    value = after;
                }
            }
            // A copy's rows all carry the copy's position, reached only when the copy
            // is complete: the heartbeat written after it moves the position.
            if copy_row {
                pos = None;
            }
            let pos = pos.map(|pos| Box::new(RecPos { pos, heartbeat }));
            let rec = match heartbeat {
                // A truncate marker is no row (the tombstones before it remove the
                // table's rows) but stays a record of its transaction.
                false => Rec {
                    offset,
                    key: if truncate { None } else { r.key },
                    value,
                    txn: id.map(|id| Box::new(TxnTag { id, end })),
                    pos,
                },
                true => Rec {
                    offset,
                    key: None,
                    value: None,
                    txn: None,
                    pos,
                },
            };
            out.push(rec);
        }
        next = next.max(batch_next);
    }
    Ok(Decoded {
        records: out,
        next_offset: next,
        malformed_positions,
    })
}
