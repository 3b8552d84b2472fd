//! Writing a committed transaction: whole ([`Sink::write_transaction`]) or, when the
//! source spilled it (`crate::spill`), part by part ([`Sink::write_transaction_part`],
//! then `write_transaction` with the last part). Both write the same records with the
//! same headers and numbers: the transaction's records contiguous in each partition,
//! each carrying `sluice.pos` (the commit's position and the record's ordinal in the
//! transaction) and `sluice.txn`, and the last record of each partition
//! `sluice.txn.end` with the list of every partition the transaction wrote.
//!
//! That last record is only known at the end, so each partition's latest record is
//! held back until the next one of that partition comes (then sent as it is) or the
//! transaction ends (then sent with the end header): memory is one record per
//! partition, whatever the transaction's size. Records a previous run already wrote
//! (by position) are skipped, held-back ones included.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sluice_client::partitioner::partition_for_key;
use sluice_proto::source_pos::{RecordPos, SourcePos, POS_HEADER, TRUNCATE_HEADER, TRUNCATE_KEY};
use sluice_proto::Header;

use super::truncate::Keys;
use super::{check_size, header, now_ms, truncate_marker_value, Pending, Sink};
use super::{TXN_END_HEADER, TXN_HEADER};
use crate::change::{Op, TableId, Transaction};
use crate::envelope::{source_block, write_change, TxnOrder, ValueFormat};
use crate::Error as CdcError;

/// A transaction being written, between its first change and its end.
pub(super) struct OpenTxn {
    id: String,
    pos: SourcePos,
    /// `ts_ms` of its envelopes: one for the whole transaction.
    now: i64,
    /// Per table it truncates: the keys its topic holds at this point of the
    /// transaction (read before the first change, then kept up to date).
    live: HashMap<TableId, Keys>,
    /// Debezium's `data_collection_order`: changes of each table so far.
    per_table: HashMap<Arc<TableId>, u64>,
    /// The envelope's `source` block per table (the same for the whole transaction).
    sources: HashMap<Arc<TableId>, Vec<u8>>,
    /// Changes so far (`total_order` of the next is one more).
    changes: u64,
    /// The next record's ordinal.
    ordinal: u64,
    /// Every partition written, in the order first written (the end list).
    pieces: Vec<(Arc<str>, u32)>,
    /// Each partition's latest record, not sent yet.
    held: HashMap<(Arc<str>, u32), Out>,
}

/// One record of the transaction.
struct Out {
    table: Arc<TableId>,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    ordinal: u64,
    truncate: bool,
}

impl Sink {
    /// A committed transaction, or the last part of one that came in parts.
    /// A `TRUNCATE` in it becomes, at its place in the transaction, a tombstone for
    /// every key the table's topic holds at that point (read back from the topic, plus
    /// the keys the transaction set before it) and a truncate marker in every partition.
    pub async fn write_transaction(&mut self, txn: &Transaction) -> Result<Pending, CdcError> {
        let truncated: BTreeSet<&TableId> = txn
            .changes
            .iter()
            .filter(|c| c.op == Op::Truncate)
            .map(|c| &*c.table)
            .collect();
        let mut open = self.open_or_continue(txn, truncated).await?;
        let mut pending = self.write_changes(&mut open, txn).await?;
        let end_list = open
            .pieces
            .iter()
            .map(|(t, p)| format!("{t}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        for piece in std::mem::take(&mut open.pieces) {
            let out = open
                .held
                .remove(&piece)
                .expect("every piece holds its last record");
            pending.extend(self.send_out(&open, &piece, out, Some(&end_list)).await?);
        }
        self.forget_written(txn);
        Ok(pending)
    }

    /// Changes of a transaction whose last part follows (`SourceEvent::TransactionPart`):
    /// written as they come, but for each partition's latest record, held until the
    /// next one or the end. `truncated`: the tables a `TRUNCATE` anywhere in the
    /// transaction empties (their keys are read before the first part).
    pub async fn write_transaction_part(
        &mut self,
        txn: &Transaction,
        truncated: &[TableId],
    ) -> Result<Pending, CdcError> {
        let mut open = self
            .open_or_continue(txn, truncated.iter().collect())
            .await?;
        let pending = self.write_changes(&mut open, txn).await;
        self.open_txn = Some(open);
        self.forget_written(txn);
        pending
    }

    /// Whether a transaction's parts are being written (its end not yet).
    pub fn transaction_open(&self) -> bool {
        self.open_txn.is_some()
    }

    async fn open_or_continue(
        &mut self,
        txn: &Transaction,
        truncated: BTreeSet<&TableId>,
    ) -> Result<OpenTxn, CdcError> {
        if let Some(open) = self.open_txn.take() {
            if open.id != txn.id || open.pos != txn.pos {
                return Err(CdcError::Source(format!(
                    "transaction {} at {} came while transaction {} at {} was written in parts",
                    txn.id, txn.pos, open.id, open.pos
                )));
            }
            return Ok(open);
        }
        Ok(OpenTxn {
            id: txn.id.clone(),
            pos: txn.pos.clone(),
            now: now_ms(),
            live: self.keys_before(truncated, &txn.pos).await?,
            per_table: HashMap::new(),
            sources: HashMap::new(),
            changes: 0,
            ordinal: 0,
            pieces: Vec::new(),
            held: HashMap::new(),
        })
    }

    async fn write_changes(
        &mut self,
        open: &mut OpenTxn,
        txn: &Transaction,
    ) -> Result<Pending, CdcError> {
        let mut pending = Vec::with_capacity(txn.changes.len());
        for change in &txn.changes {
            open.changes += 1;
            let order = open.per_table.entry(change.table.clone()).or_insert(0);
            *order += 1;
            let order = Some(TxnOrder {
                id: &txn.id,
                total_order: open.changes,
                data_collection_order: *order,
            });
            // A row-format value (a truncate marker's too) has no `source` block.
            let source: &[u8] = if self.format == ValueFormat::Envelope {
                open.sources.entry(change.table.clone()).or_insert_with(|| {
                    source_block(
                        &self.info,
                        &change.table,
                        &txn.pos,
                        txn.commit_ms,
                        Some(&txn.id),
                        false,
                    )
                })
            } else {
                &[]
            };
            let mut outs = Vec::new();
            if change.op == Op::Truncate {
                let value =
                    truncate_marker_value(self.format, change, source, order, &txn.pos, open.now);
                let t = self.topic_state(&change.table)?;
                let (topic, partitions) = (t.name.clone(), t.partitions);
                let keys = std::mem::take(open.live.entry((*change.table).clone()).or_default());
                for key in keys {
                    outs.push((
                        topic.clone(),
                        partition_for_key(&key, partitions),
                        key,
                        None,
                        false,
                    ));
                }
                for partition in 0..partitions {
                    let marker = (TRUNCATE_KEY.to_vec(), Some(value.clone()));
                    outs.push((topic.clone(), partition, marker.0, marker.1, true));
                }
            } else {
                let value = write_change(self.format, change, source, order, open.now);
                let (topic, partition, key) = self.route(change)?;
                if let Some(keys) = open.live.get_mut(&*change.table) {
                    match change.op {
                        Op::Delete => keys.remove(&key),
                        _ => keys.insert(key.clone()),
                    };
                }
                let tombstone = (change.op == Op::Delete).then(|| key.clone());
                // A row-format delete has no record of its own, only the tombstone; its
                // ordinal is kept, so both formats number a transaction's records alike.
                match value {
                    Some(value) => outs.push((topic.clone(), partition, key, Some(value), false)),
                    None => open.ordinal += 1,
                }
                if let Some(key) = tombstone {
                    outs.push((topic, partition, key, None, false));
                }
            }
            for (topic, partition, key, value, truncate) in outs {
                let out = Out {
                    table: change.table.clone(),
                    key,
                    value,
                    ordinal: open.ordinal,
                    truncate,
                };
                open.ordinal += 1;
                let piece = (topic, partition);
                match open.held.insert(piece.clone(), out) {
                    Some(before) => {
                        pending.extend(self.send_out(open, &piece, before, None).await?);
                    }
                    None => open.pieces.push(piece),
                }
            }
        }
        Ok(pending)
    }

    /// Sends one record of the transaction, unless a previous run wrote it already.
    async fn send_out(
        &mut self,
        open: &OpenTxn,
        (topic, partition): &(Arc<str>, u32),
        out: Out,
        end_list: Option<&str>,
    ) -> Result<Option<sluice_client::DeliveryFuture>, CdcError> {
        let rp = RecordPos {
            pos: open.pos.clone(),
            ordinal: out.ordinal,
        };
        if !self.resume.should_write(topic, *partition, &rp) {
            return Ok(None);
        }
        let mut headers: Vec<Header> = vec![
            header(POS_HEADER, rp.to_header()),
            header(TXN_HEADER, open.id.clone().into_bytes()),
        ];
        self.mark_format(&mut headers);
        if out.truncate {
            headers.push(header(TRUNCATE_HEADER, b"1".to_vec()));
        }
        if let Some(list) = end_list {
            headers.push(header(TXN_END_HEADER, list.as_bytes().to_vec()));
        }
        check_size(
            self.max_record_bytes,
            &out.table,
            &out.key,
            out.value.as_deref(),
            &headers,
        )?;
        Ok(Some(
            self.send(topic, *partition, out.key, out.value, headers)
                .await?,
        ))
    }
}
