//! The sink's side of copies: marking partitions that must read as a copy cut short,
//! the keys a copy over rows must tombstone, and the end of a copy. Called by the
//! runner's task (docs/cdc.md, "The initial copy" and "Adding and removing tables").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::partitioner::partition_for_key;
use sluice_client::{Admin, Consumer, ConsumerConfig, Error, Seek};
use sluice_proto::source_pos::{
    RecordPos, SourcePos, HEARTBEAT_HEADER, HEARTBEAT_KEY, POS_HEADER, TRUNCATE_HEADER,
};
use sluice_proto::{ErrorCode, TopicPartition};
use tracing::info;

use super::{
    describe_settled, header, last_record_pos, now_ms, Pending, Sink, SnapshotState,
    SNAPSHOT_HEADER,
};
use crate::change::TableId;
use crate::position::StaleKeys;
use crate::Error as CdcError;

/// A heartbeat, a copy-pending marker or a truncate marker: no key of a row.
pub(super) fn is_marker(headers: &[sluice_proto::Header]) -> bool {
    headers
        .iter()
        .any(|h| h.key == HEARTBEAT_HEADER || h.key == TRUNCATE_HEADER)
}

impl Sink {
    /// Marks partitions whose last record must read as a copy cut short, with a
    /// copy-pending marker (a heartbeat-keyed record with `sluice.snapshot`, at the
    /// partition's own last position; Tables skip it):
    ///
    /// - every non-empty partition of a topic under the prefix whose table is not
    ///   captured (`<prefix>.<schema>.<table>`, written by a connector, not already
    ///   ending with a copy record): its table was left out of `--tables`, and this
    ///   run's slot (Postgres) or stream (MariaDB) moves past its changes. Added back
    ///   later, its topic then reads as a
    ///   copy cut short and the table is copied again on its own (with tombstones for
    ///   rows deleted meanwhile), instead of streaming on with the changes it missed
    ///   lost for good.
    /// - with `copy_pending` (the run is about to copy every table over topics that
    ///   hold rows: the slot was lost, or an earlier copy was cut short, and the source
    ///   creates the slot the copy starts from only after this is acknowledged): every
    ///   non-empty captured partition. Until this copy's end heartbeat lands there, the
    ///   partition then reads as a copy cut short — also when a crash keeps every record
    ///   of the copy from reaching it, which would otherwise leave its old rows looking
    ///   finished while the new slot streams on from past them ([`crate::position::copy_state`]).
    pub async fn mark_topics(&mut self, copy_pending: bool) -> Result<Pending, CdcError> {
        let mut targets: Vec<(Arc<str>, u32, RecordPos)> = Vec::new();
        if copy_pending {
            for t in self.topics.values() {
                for p in 0..t.partitions {
                    if let Some(last) = self.resume.last(&t.name, p) {
                        targets.push((t.name.clone(), p, last.clone()));
                    }
                }
            }
        }
        let uncaptured = self.uncaptured_topics().await?;
        for name in &uncaptured {
            let admin = Admin::new(&self.client);
            for p in describe_settled(&admin, name).await? {
                let hw = p.high_watermark.unwrap_or(0);
                if hw == 0 || hw <= p.log_start_offset.unwrap_or(0) {
                    continue;
                }
                let tp = TopicPartition::new(&**name, p.partition);
                match last_record_pos(&self.client, &tp, hw).await {
                    Ok((last, false, _)) => targets.push((name.clone(), p.partition, last)),
                    Ok((_, true, _)) => {}
                    // Not written by a connector: not ours to mark.
                    Err(CdcError::Config(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let value = serde_json::to_vec(&serde_json::json!({
            "copy": "pending",
            "ts_ms": now_ms(),
        }))
        .expect("a JSON value serializes");
        let mut pending = Vec::new();
        for (name, partition, last) in targets {
            let mut headers = vec![
                header(POS_HEADER, last.to_header()),
                header(HEARTBEAT_HEADER, b"1".to_vec()),
                header(SNAPSHOT_HEADER, b"1".to_vec()),
            ];
            self.mark_format(&mut headers);
            pending.push(
                self.send(
                    &name,
                    partition,
                    HEARTBEAT_KEY.to_vec(),
                    Some(value.clone()),
                    headers,
                )
                .await?,
            );
        }
        if !pending.is_empty() {
            info!(
                partitions = pending.len(),
                copy_pending,
                uncaptured = ?uncaptured,
                "partitions marked as holding no finished copy"
            );
        }
        Ok(pending)
    }

    /// Topics `<prefix>.<schema>.<table>` (one dot after the prefix) of tables not
    /// captured.
    async fn uncaptured_topics(&self) -> Result<Vec<Arc<str>>, CdcError> {
        let captured: std::collections::HashSet<&str> =
            self.topics.values().map(|t| &*t.name).collect();
        let mut out = Vec::new();
        for name in Admin::new(&self.client).list_topics().await? {
            let Some(rest) = name.strip_prefix(&self.topic_prefix) else {
                continue;
            };
            if rest.matches('.').count() == 1 && !captured.contains(name.as_str()) {
                out.push(Arc::from(name));
            }
        }
        Ok(out)
    }

    /// A copy of `tables` starts. If their topics already hold rows (a copy cut short,
    /// or a new copy because the stream cannot continue), reads those partitions and
    /// remembers the keys whose latest record is a row: the copy forgets each key it
    /// writes, and [`Sink::finish_copy`] tombstones the rest — rows deleted in the
    /// source since they were written, which a copy alone would leave in the topics
    /// (and every Table) for good. Returns how many keys the topics held.
    pub async fn begin_copy(&mut self, tables: &[TableId]) -> Result<u64, CdcError> {
        self.stale_keys = None;
        let copied: Vec<Arc<str>> = tables
            .iter()
            .filter(|t| self.table_states.get(*t) != Some(&SnapshotState::Empty))
            .filter_map(|t| self.topics.get(t).map(|s| s.name.clone()))
            .collect();
        if copied.is_empty() {
            return Ok(0);
        }
        let mut stale = StaleKeys::default();
        for name in &copied {
            self.read_live_keys(name, &mut stale).await?;
        }
        let total = stale.len();
        info!(
            keys = total,
            "the topics hold rows: keys the copy does not write get tombstones"
        );
        self.stale_keys = Some(stale);
        Ok(total)
    }

    /// Every key of a topic whose latest record is a row, into `stale`.
    async fn read_live_keys(&self, name: &Arc<str>, stale: &mut StaleKeys) -> Result<(), CdcError> {
        self.scan_topic(name, |r| {
            let Some(key) = r.key else { return };
            if is_marker(&r.headers) {
                return;
            }
            stale.observe(name, key, r.value.is_some());
        })
        .await
    }

    /// Every record of every partition of `name` below its high watermark (once settled),
    /// in offset order per partition, to `f`.
    pub(super) async fn scan_topic(
        &self,
        name: &Arc<str>,
        mut f: impl FnMut(sluice_client::ConsumerRecord),
    ) -> Result<(), CdcError> {
        let admin = Admin::new(&self.client);
        for p in describe_settled(&admin, name).await? {
            let hw = p.high_watermark.unwrap_or(0);
            let start = p.log_start_offset.unwrap_or(0);
            if hw <= start {
                continue;
            }
            let tp = TopicPartition::new(&**name, p.partition);
            let mut consumer = Consumer::new(&self.client, ConsumerConfig::default());
            consumer.assign(vec![tp.clone()]);
            consumer.seek(&tp, Seek::Offset(start));
            let mut idle_since = Instant::now();
            while consumer.position(&tp).is_none_or(|at| at < hw) {
                let records = consumer.poll(Duration::from_millis(500)).await?;
                if records.is_empty() {
                    if idle_since.elapsed() > Duration::from_secs(30) {
                        return Err(Error::broker(
                            ErrorCode::RequestTimedOut.code(),
                            format!("{tp}: reading the keys it holds made no progress for 30 s"),
                        )
                        .into());
                    }
                    continue;
                }
                idle_since = Instant::now();
                for r in records.into_iter().filter(|r| r.offset < hw) {
                    f(r);
                }
            }
        }
        Ok(())
    }

    /// The copy's rows are all written: a tombstone for every key the topics held that
    /// the copy did not write (see [`Sink::begin_copy`]), numbered on from
    /// `first_ordinal` at the copy's position and marked as copy records (a restart
    /// before the heartbeat that ends the copy copies again). Returns them and their count.
    pub async fn finish_copy(
        &mut self,
        pos: &SourcePos,
        first_ordinal: u64,
    ) -> Result<(Pending, u64), CdcError> {
        let Some(stale) = self.stale_keys.take() else {
            return Ok((Vec::new(), 0));
        };
        let mut pending = Vec::new();
        let mut ordinal = first_ordinal;
        let partitions: HashMap<Arc<str>, u32> = self
            .topics
            .values()
            .map(|t| (t.name.clone(), t.partitions))
            .collect();
        for (topic, key) in stale.into_remaining() {
            let count = partitions.get(&topic).copied().unwrap_or(1);
            let rp = RecordPos {
                pos: pos.clone(),
                ordinal,
            };
            ordinal += 1;
            let mut headers = vec![
                header(POS_HEADER, rp.to_header()),
                header(SNAPSHOT_HEADER, b"1".to_vec()),
            ];
            self.mark_format(&mut headers);
            let partition = partition_for_key(&key, count);
            pending.push(
                self.send(&topic, partition, key.to_vec(), None, headers)
                    .await?,
            );
        }
        let n = ordinal - first_ordinal;
        if n > 0 {
            info!(
                tombstones = n,
                "rows deleted in the source since the topics were written: tombstoned"
            );
        }
        Ok((pending, n))
    }

    /// The copy of `tables` at `pos` is written: a heartbeat at `pos` to each of their
    /// partitions (a restart then knows the copy finished). From here on their
    /// partitions take only records after `pos`: a copy of tables added to a running
    /// capture is ahead of the stream that follows it, which replays changes the copy
    /// already holds.
    pub async fn write_copy_end(
        &mut self,
        pos: &SourcePos,
        tables: &[TableId],
    ) -> Result<Pending, Error> {
        let targets: Vec<(Arc<str>, u32)> = tables
            .iter()
            .filter_map(|t| self.topics.get(t))
            .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
            .collect();
        let pending = self.heartbeat_to(pos, targets.clone()).await?;
        for (topic, partition) in targets {
            let end = RecordPos {
                pos: pos.clone(),
                ordinal: u64::MAX,
            };
            if self.resume.should_write(&topic, partition, &end) {
                self.resume.insert(&topic, partition, end);
            }
        }
        Ok(pending)
    }
}
