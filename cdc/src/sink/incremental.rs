//! The writer's side of incremental snapshots (crate::incremental): the keys a pass
//! must tombstone if it does not write them, its chunks, and its progress in
//! `<prefix>.__sluice_snapshots`.

use std::collections::HashMap;

use sluice_client::partitioner::partition_for_key;
use sluice_client::{Admin, Error};
use sluice_proto::source_pos::{RecordPos, POS_HEADER};
use sluice_proto::ErrorCode;
use tracing::info;

use super::copy::is_marker;
use super::{header, now_ms, Pending, Sink};
use crate::change::{IncrementalChunk, Op, Row, TableId, Transaction};
use crate::envelope::key_bytes;
use crate::incremental::{progress_topic, PassState, Progress};
use crate::position::StaleKeys;
use crate::Error as CdcError;

/// A pass in progress in this run.
pub(super) struct Pass {
    /// Keys the topic held when the pass started that nothing has written since.
    stale: StaleKeys,
    progress: Progress,
}

impl Sink {
    /// The passes `<prefix>.__sluice_snapshots` records, by table (read at open).
    pub fn passes(&self) -> &HashMap<String, Progress> {
        &self.progress
    }

    /// Reads `<prefix>.__sluice_snapshots`, if it exists: the latest record per table.
    pub(super) async fn read_progress(&mut self) -> Result<(), CdcError> {
        self.progress = crate::incremental::read_progress(&self.client, &self.prefix).await?;
        Ok(())
    }

    /// A pass over `table` starts (or resumes after `after`): reads the keys its topic
    /// holds, and records the pass as copying. Returns the progress record's delivery.
    pub async fn begin_incremental(
        &mut self,
        table: &TableId,
        id: &str,
        requested_at: &str,
        after: Option<Vec<String>>,
    ) -> Result<Pending, CdcError> {
        let topic = self.topic_state(table)?.name.clone();
        let mut stale = StaleKeys::default();
        self.scan_topic(&topic, |r| {
            let Some(key) = r.key else { return };
            if !is_marker(&r.headers) {
                stale.observe(&topic, key, r.value.is_some());
            }
        })
        .await?;
        let name = table.to_string();
        let rows = match self.progress.get(&name) {
            Some(p) if p.id == id && after.is_some() => p.rows,
            _ => 0,
        };
        info!(table = %table, id, keys = stale.len(), resumed_after = ?after, "incremental snapshot started");
        let progress = Progress {
            table: name.clone(),
            id: id.to_string(),
            state: PassState::Copying,
            after,
            rows,
            tombstones: 0,
            requested_at: requested_at.to_string(),
            finished_at: None,
            ts_ms: now_ms(),
        };
        self.passes.insert(
            table.clone(),
            Pass {
                stale,
                progress: progress.clone(),
            },
        );
        Ok(vec![self.write_progress(&progress).await?])
    }

    /// Rows a resumed pass copied before it was cut: no tombstone candidates.
    pub fn incremental_keys(&mut self, table: &TableId, keys: &[Row]) {
        let Some(topic) = self.topics.get(table).map(|t| t.name.clone()) else {
            return;
        };
        if let Some(pass) = self.passes.get_mut(table) {
            for k in keys {
                pass.stale.copied(&topic, &key_bytes(k));
            }
        }
    }

    /// A streamed transaction was written: the keys it wrote are no tombstone
    /// candidates of a pass over their table (a `TRUNCATE` tombstoned every key).
    pub(super) fn forget_written(&mut self, txn: &Transaction) {
        if self.passes.is_empty() {
            return;
        }
        for c in &txn.changes {
            let Some(pass) = self.passes.get_mut(&*c.table) else {
                continue;
            };
            if c.op == Op::Truncate {
                pass.stale = StaleKeys::default();
                continue;
            }
            if let Some(t) = self.topics.get(&*c.table) {
                pass.stale.copied(&t.name, &key_bytes(&c.key));
            }
        }
    }

    /// One chunk of a pass: its rows as one transaction at the chunk's position; after
    /// the last, a tombstone for every key the topic held that nothing wrote since the
    /// pass began (rows the table no longer has). Then the progress record.
    pub async fn write_incremental_chunk(
        &mut self,
        chunk: &IncrementalChunk,
    ) -> Result<Pending, CdcError> {
        if !self.passes.contains_key(&chunk.table) {
            return Err(CdcError::Source(format!(
                "a chunk of an incremental snapshot of {} that was not started",
                chunk.table
            )));
        }
        let txn = Transaction {
            pos: chunk.pos.clone(),
            // Unique per chunk: a Table assembles transactions by id.
            id: format!("snapshot-{}@{}", chunk.id, chunk.pos),
            commit_ms: chunk.commit_ms,
            changes: chunk.rows.clone(),
        };
        let mut pending = if txn.changes.is_empty() {
            Vec::new()
        } else {
            self.write_transaction(&txn).await?
        };
        let topic = self.topic_state(&chunk.table)?;
        let (topic, partitions) = (topic.name.clone(), topic.partitions);
        let pass = self.passes.get_mut(&chunk.table).expect("checked above");
        for c in &chunk.rows {
            pass.stale.copied(&topic, &key_bytes(&c.key));
        }
        pass.progress.rows += chunk.rows.len() as u64;
        if chunk.after.is_some() {
            pass.progress.after = chunk.after.clone();
        }
        pass.progress.ts_ms = now_ms();
        if !chunk.last {
            let progress = pass.progress.clone();
            pending.push(self.write_progress(&progress).await?);
            return Ok(pending);
        }
        let pass = self.passes.remove(&chunk.table).expect("checked above");
        let mut tombstones = 0u64;
        let first = chunk.rows.len() as u64;
        for (ordinal, (_, key)) in (first..).zip(pass.stale.into_remaining()) {
            let rp = RecordPos {
                pos: chunk.pos.clone(),
                ordinal,
            };
            let partition = partition_for_key(&key, partitions);
            if !self.resume.should_write(&topic, partition, &rp) {
                continue;
            }
            let mut headers = vec![header(POS_HEADER, rp.to_header())];
            self.mark_format(&mut headers);
            pending.push(
                self.send(&topic, partition, key.to_vec(), None, headers)
                    .await?,
            );
            tombstones += 1;
        }
        let mut progress = pass.progress;
        progress.state = PassState::Done;
        progress.tombstones = tombstones;
        progress.finished_at = Some(chunk.pos.to_string());
        info!(table = %chunk.table, id = %chunk.id, rows = progress.rows, tombstones, at = %chunk.pos, "incremental snapshot finished");
        pending.push(self.write_progress(&progress).await?);
        self.progress.insert(progress.table.clone(), progress);
        Ok(pending)
    }

    /// Writes a table's progress record (creating the progress topic the first time).
    async fn write_progress(
        &mut self,
        p: &Progress,
    ) -> Result<sluice_client::DeliveryFuture, Error> {
        let name = progress_topic(&self.prefix);
        if !self.progress_topic_ready {
            let admin = Admin::new(&self.client);
            let mut configs = std::collections::BTreeMap::new();
            configs.insert("cleanup.policy".to_string(), "compact".to_string());
            if self.replication_factor >= 3 {
                configs.insert("min.insync.replicas".to_string(), "2".to_string());
            }
            match admin
                .create_topic(&name, 1, self.replication_factor, configs)
                .await
            {
                Ok(()) => {
                    info!(topic = %name, "created the topic of incremental snapshot progress")
                }
                Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
                Err(e) => return Err(e),
            }
            super::describe_settled(&admin, &name).await?;
            self.progress_topic_ready = true;
        }
        self.progress.insert(p.table.clone(), p.clone());
        let value = serde_json::to_vec(p).expect("progress serializes");
        self.send(
            &name,
            0,
            p.table.clone().into_bytes(),
            Some(value),
            Vec::new(),
        )
        .await
    }
}
