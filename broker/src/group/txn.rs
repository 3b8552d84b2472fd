//! The transaction coordinator of one `__consumer_offsets` partition, sans-IO: the
//! transactional ids that hash to it (Kafka's choice of partition, as for groups),
//! each with its producer id and epoch, its state and the partitions of its open
//! transaction. Every change comes back as a record to append ([`Write`], one key per
//! transactional id, so compaction keeps the latest); a coordinator that takes the
//! partition over replays them and carries on, re-sending the markers of any
//! transaction that was prepared and not completed.
//!
//! States as Kafka's: Empty → Ongoing (AddPartitionsToTxn) → PrepareCommit or
//! PrepareAbort (EndTxn, a timeout, or an InitProducerId that fences an open one) →
//! CompleteCommit / CompleteAbort once every partition has its marker
//! ([`TxnCoordinator::markers_written`]). docs/transactions.md has the design.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_proto::ErrorCode;

use super::assignor::Tp;
use super::coordinator::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    /// Kafka's name (DescribeTransactions, ListTransactions' state filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    fn preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

/// One transactional id's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1: none), as Kafka keeps it.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    pub partitions: BTreeSet<Tp>,
    /// Wall-clock ms the open transaction started (-1: none).
    pub start_ms: i64,
    pub update_ms: i64,
}

#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id idle this long (and not in a
    /// transaction) is forgotten.
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig {
            max_timeout_ms: 15 * 60 * 1000,
            id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// What an InitProducerId leads to.
#[derive(Debug, PartialEq)]
pub enum InitOutcome {
    /// The producer id and epoch to answer, once `writes` are appended.
    Ready {
        producer_id: i64,
        producer_epoch: i16,
        writes: Vec<Write>,
    },
    /// An open transaction of the id was fenced and is being aborted: append `writes`
    /// and answer CONCURRENT_TRANSACTIONS (the producer asks again).
    Aborting { writes: Vec<Write> },
}

/// Markers to write for a prepared transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<Tp>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    config: TxnConfig,
    txns: BTreeMap<String, TxnMeta>,
    /// Prepared transactions whose markers the IO is writing now.
    sending: BTreeSet<String>,
}

fn fenced() -> ErrorCode {
    ErrorCode::ProducerFenced
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator {
            config,
            ..TxnCoordinator::default()
        }
    }

    /// Applies one persisted record (loading).
    pub fn replay(&mut self, txn: &str, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            Some(v) => {
                let meta: TxnMeta =
                    serde_json::from_slice(v).map_err(|e| format!("bad transaction: {e}"))?;
                self.txns.insert(txn.to_string(), meta);
            }
            None => {
                self.txns.remove(txn);
            }
        }
        Ok(())
    }

    fn write(&self, txn: &str) -> Write {
        Write {
            key: super::coordinator::txn_key(txn),
            value: self
                .txns
                .get(txn)
                .map(|m| serde_json::to_vec(m).expect("serializes")),
        }
    }

    /// InitProducerId with a transactional id. `fresh_producer_id` is used when the id
    /// is new or its epochs are used up; `expected` is the producer's own id and epoch
    /// (KIP-360, v3+), if it has them.
    pub fn init(
        &mut self,
        txn: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: i64,
        now_ms: i64,
    ) -> Result<InitOutcome, ErrorCode> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        let Some(meta) = self.txns.get_mut(txn) else {
            self.txns.insert(
                txn.to_string(),
                TxnMeta {
                    producer_id: fresh_producer_id,
                    producer_epoch: 0,
                    last_producer_epoch: -1,
                    timeout_ms,
                    status: TxnStatus::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    update_ms: now_ms,
                },
            );
            return Ok(InitOutcome::Ready {
                producer_id: fresh_producer_id,
                producer_epoch: 0,
                writes: vec![self.write(txn)],
            });
        };
        if meta.status.preparing() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if let Some((pid, epoch)) = expected.filter(|(pid, _)| *pid >= 0) {
            // Only the current instance may bump its own epoch (KIP-360); Kafka 4.4
            // answers a retry naming the previous epoch PRODUCER_FENCED too.
            if pid != meta.producer_id || epoch != meta.producer_epoch {
                return Err(fenced());
            }
        }
        if meta.status == TxnStatus::Ongoing {
            // A new instance fences the old one: its transaction is aborted under the
            // next epoch, and the new instance retries until that is done.
            bump(meta, fresh_producer_id);
            meta.status = TxnStatus::PrepareAbort;
            meta.update_ms = now_ms;
            return Ok(InitOutcome::Aborting {
                writes: vec![self.write(txn)],
            });
        }
        bump(meta, fresh_producer_id);
        meta.status = TxnStatus::Empty;
        meta.timeout_ms = timeout_ms;
        meta.partitions.clear();
        meta.start_ms = -1;
        meta.update_ms = now_ms;
        let (producer_id, producer_epoch) = (meta.producer_id, meta.producer_epoch);
        Ok(InitOutcome::Ready {
            producer_id,
            producer_epoch,
            writes: vec![self.write(txn)],
        })
    }

    fn current(&mut self, txn: &str, pid: i64, epoch: i16) -> Result<&mut TxnMeta, ErrorCode> {
        let meta = self
            .txns
            .get_mut(txn)
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if meta.producer_id != pid {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if meta.producer_epoch != epoch {
            return Err(fenced());
        }
        Ok(meta)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    pub fn add_partitions(
        &mut self,
        txn: &str,
        pid: i64,
        epoch: i16,
        tps: &[Tp],
        now_ms: i64,
    ) -> Result<Vec<Write>, ErrorCode> {
        let meta = self.current(txn, pid, epoch)?;
        if meta.status.preparing() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if meta.status == TxnStatus::Ongoing && tps.iter().all(|tp| meta.partitions.contains(tp)) {
            return Ok(Vec::new());
        }
        if meta.status != TxnStatus::Ongoing {
            meta.partitions.clear();
            meta.start_ms = now_ms;
            meta.status = TxnStatus::Ongoing;
        }
        meta.partitions.extend(tps.iter().cloned());
        meta.update_ms = now_ms;
        Ok(vec![self.write(txn)])
    }

    /// EndTxn: prepares the commit or abort (the markers follow, [`Self::due`]). A
    /// retry of a transaction already completed the same way is answered at once.
    pub fn end(
        &mut self,
        txn: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<Vec<Write>, ErrorCode> {
        let meta = self.current(txn, pid, epoch)?;
        let (prepare, complete) = if commit {
            (TxnStatus::PrepareCommit, TxnStatus::CompleteCommit)
        } else {
            (TxnStatus::PrepareAbort, TxnStatus::CompleteAbort)
        };
        match meta.status {
            TxnStatus::Ongoing => {
                meta.status = prepare;
                meta.update_ms = now_ms;
                Ok(vec![self.write(txn)])
            }
            s if s == complete => Ok(Vec::new()),
            s if s == prepare => Err(ErrorCode::ConcurrentTransactions),
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// Prepared transactions whose markers nobody is writing: each is marked as being
    /// written until [`Self::markers_written`] or [`Self::markers_failed`].
    pub fn due(&mut self) -> Vec<MarkerJob> {
        let mut out = Vec::new();
        for (id, m) in &self.txns {
            if m.status.preparing() && !self.sending.contains(id) {
                out.push(MarkerJob {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    commit: m.status == TxnStatus::PrepareCommit,
                    partitions: m.partitions.iter().cloned().collect(),
                });
            }
        }
        for j in &out {
            self.sending.insert(j.transactional_id.clone());
        }
        out
    }

    /// Every marker of `job` is written: the transaction completes.
    pub fn markers_written(&mut self, job: &MarkerJob, now_ms: i64) -> Vec<Write> {
        self.sending.remove(&job.transactional_id);
        let Some(meta) = self.txns.get_mut(&job.transactional_id) else {
            return Vec::new();
        };
        if !meta.status.preparing()
            || meta.producer_id != job.producer_id
            || meta.producer_epoch != job.producer_epoch
        {
            return Vec::new();
        }
        meta.status = if job.commit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        };
        // The start time stays, as DescribeTransactions shows it in Kafka.
        meta.partitions.clear();
        meta.update_ms = now_ms;
        vec![self.write(&job.transactional_id)]
    }

    /// Writing the markers of `job` failed: it is due again.
    pub fn markers_failed(&mut self, job: &MarkerJob) {
        self.sending.remove(&job.transactional_id);
    }

    /// Aborts transactions open past their timeout (under a new epoch, fencing the
    /// producer) and forgets ids idle past `transactional.id.expiration.ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Write> {
        let mut changed = Vec::new();
        let mut expired = Vec::new();
        for (id, m) in self.txns.iter_mut() {
            match m.status {
                TxnStatus::Ongoing if now_ms - m.start_ms > i64::from(m.timeout_ms) => {
                    m.producer_epoch = m.producer_epoch.saturating_add(1);
                    m.last_producer_epoch = -1;
                    m.status = TxnStatus::PrepareAbort;
                    m.update_ms = now_ms;
                    changed.push(id.clone());
                }
                TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                    if now_ms - m.update_ms > self.config.id_expiration_ms =>
                {
                    expired.push(id.clone());
                }
                _ => {}
            }
        }
        for id in &expired {
            self.txns.remove(id);
        }
        changed
            .iter()
            .chain(&expired)
            .map(|id| self.write(id))
            .collect()
    }

    pub fn describe(&self, txn: &str) -> Option<&TxnMeta> {
        self.txns.get(txn)
    }

    pub fn list(&self) -> impl Iterator<Item = (&String, &TxnMeta)> {
        self.txns.iter()
    }
}

/// The next epoch; a producer id whose epochs are used up is replaced.
fn bump(meta: &mut TxnMeta, fresh_producer_id: i64) {
    if meta.producer_epoch >= i16::MAX - 1 {
        meta.producer_id = fresh_producer_id;
        meta.producer_epoch = 0;
        meta.last_producer_epoch = -1;
    } else {
        meta.last_producer_epoch = meta.producer_epoch;
        meta.producer_epoch += 1;
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
