//! What a connector's topics say about it, for `sluice cdc status`: per table, whether
//! its copy is pending, running or done, how many rows the running copy wrote, the
//! source position the topics hold and when they last moved.
//!
//! Everything here is read back from what the connector already writes (docs/cdc.md):
//! every record's `sluice.pos`, copy rows (`sluice.snapshot`), copy-pending markers
//! (heartbeat-keyed records with `sluice.snapshot`) and heartbeats. Nothing is asked of
//! the connector itself, so it works for a stopped connector as for a running one, from
//! any host that reaches the brokers. The state of one table is a pure function of its
//! partitions' last records ([`table_state`]); reading them is [`read_topics`].

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use sluice_client::{Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Seek};
use sluice_proto::source_pos::{
    RecordPos, SourcePos, HEARTBEAT_HEADER, HEARTBEAT_KEY, POS_HEADER, SNAPSHOT_HEADER,
};
use sluice_proto::{ErrorCode, TopicPartition};

use crate::Error;

/// How long one read of a record at a known offset may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// What a partition's last record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A change (row or tombstone) of a streamed transaction.
    Change,
    /// A row of a copy (`sluice.snapshot`).
    CopyRow,
    /// A copy-pending marker: the partition reads as a copy cut short until the next
    /// copy's end heartbeat lands (a re-copy started, or the table left `--tables`).
    CopyMarker,
    /// A heartbeat: everything of the source up to its position is here.
    Heartbeat,
}

/// A partition's last record.
#[derive(Debug, Clone)]
pub struct LastRecord {
    pub offset: u64,
    pub pos: RecordPos,
    pub kind: RecordKind,
    /// When the connector wrote it (the record's timestamp, ms since the epoch).
    pub written_ms: i64,
}

/// One partition of a connector's topic.
#[derive(Debug, Clone)]
pub struct PartitionTail {
    pub partition: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// `None`: the partition holds no record.
    pub last: Option<LastRecord>,
}

/// A table's state as its topic shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    /// Nothing written yet.
    Empty,
    /// A copy is marked pending (or was cut before its rows reached every partition):
    /// the next run copies the table.
    CopyPending,
    /// Copy rows are the last records: a copy is running, or was cut short.
    Copying,
    /// A finished copy and changes after it.
    Streaming,
}

impl TableState {
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Empty => "empty",
            TableState::CopyPending => "copy-pending",
            TableState::Copying => "copying",
            TableState::Streaming => "streaming",
        }
    }
}

/// The state of a table from its partitions' last records (the same reading a
/// restarted connector makes, `position::copy_state`, with the marker told apart).
pub fn table_state(parts: &[PartitionTail]) -> TableState {
    let kinds: Vec<Option<RecordKind>> = parts
        .iter()
        .map(|p| p.last.as_ref().map(|l| l.kind))
        .collect();
    if kinds.iter().all(Option::is_none) {
        TableState::Empty
    } else if kinds.contains(&Some(RecordKind::CopyRow)) {
        TableState::Copying
    } else if kinds
        .iter()
        .any(|k| matches!(k, None | Some(RecordKind::CopyMarker)))
    {
        TableState::CopyPending
    } else {
        TableState::Streaming
    }
}

/// The position a table's topic holds: the least over its partitions' last records (a
/// Table's position is its partitions' minimum). `None` when nothing is written.
pub fn table_position(parts: &[PartitionTail]) -> Option<SourcePos> {
    let mut least: Option<&SourcePos> = None;
    for l in parts.iter().filter_map(|p| p.last.as_ref()) {
        least = match least {
            Some(x) if x.compare(&l.pos.pos) != Some(Ordering::Greater) => Some(x),
            _ => Some(&l.pos.pos),
        };
    }
    least.cloned()
}

/// When the table's topic last learned of the source's progress: the oldest of its
/// partitions' last writes (every partition gets heartbeats).
pub fn table_written_ms(parts: &[PartitionTail]) -> Option<i64> {
    parts
        .iter()
        .filter_map(|p| p.last.as_ref().map(|l| l.written_ms))
        .min()
}

/// The position of a running (or cut) copy: the newest copy row's.
pub fn copy_position(parts: &[PartitionTail]) -> Option<SourcePos> {
    let mut newest: Option<&SourcePos> = None;
    for l in parts
        .iter()
        .filter_map(|p| p.last.as_ref())
        .filter(|l| l.kind == RecordKind::CopyRow)
    {
        newest = match newest {
            Some(x) if x.compare(&l.pos.pos) != Some(Ordering::Less) => Some(x),
            _ => Some(&l.pos.pos),
        };
    }
    newest.cloned()
}

/// One table of a connector, as its topic shows it.
#[derive(Debug, Clone)]
pub struct TopicStatus {
    pub topic: String,
    /// `schema.table` (`db.table`): the topic's name after the prefix.
    pub table: String,
    pub partitions: Vec<PartitionTail>,
    pub state: TableState,
    /// While copying: rows the running copy wrote so far (over every partition).
    pub copied_rows: Option<u64>,
}

/// Reads every topic named `<prefix>.*`: each partition's last record, and for a table
/// being copied how many rows the copy wrote.
pub async fn read_topics(bootstrap: &str, prefix: &str) -> Result<Vec<TopicStatus>, Error> {
    let client = ClientConfig::new(bootstrap);
    let admin = Admin::new(&client);
    let dotted = format!("{prefix}.");
    let mut names: Vec<String> = admin
        .list_topics()
        .await?
        .into_iter()
        .filter(|t| t.starts_with(&dotted) && t.len() > dotted.len())
        // The connector's own topics (`<prefix>.__sluice_snapshots`) are no table's.
        .filter(|t| !t[dotted.len()..].starts_with("__"))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for topic in names {
        let d = admin.describe_topic(&topic).await?;
        let mut partitions = Vec::with_capacity(d.partitions.len());
        for p in &d.partitions {
            let log_start_offset = p.log_start_offset.unwrap_or(0);
            let high_watermark = p.high_watermark.unwrap_or(0);
            let tp = TopicPartition::new(&*topic, p.partition);
            let last = if high_watermark > log_start_offset {
                let r = read_at(&client, &tp, high_watermark - 1).await?;
                Some(last_record(&tp, &r)?)
            } else {
                None
            };
            partitions.push(PartitionTail {
                partition: p.partition,
                log_start_offset,
                high_watermark,
                last,
            });
        }
        partitions.sort_by_key(|p| p.partition);
        let state = table_state(&partitions);
        let copied_rows = match (state, copy_position(&partitions)) {
            (TableState::Copying, Some(pos)) => {
                Some(copied_rows(&client, &topic, &partitions, &pos).await?)
            }
            _ => None,
        };
        out.push(TopicStatus {
            table: topic[dotted.len()..].to_string(),
            topic,
            partitions,
            state,
            copied_rows,
        });
    }
    Ok(out)
}

/// Rows of the copy at `pos` in the partitions that end with its rows: from the first
/// record at or past `pos` (found by bisection over offsets: positions only grow in a
/// partition) to the high watermark. Compaction never touches the active segment, so
/// this counts the copy's records while it runs.
async fn copied_rows(
    client: &ClientConfig,
    topic: &str,
    parts: &[PartitionTail],
    pos: &SourcePos,
) -> Result<u64, Error> {
    let mut rows = 0;
    for p in parts {
        let Some(last) = &p.last else { continue };
        if last.kind != RecordKind::CopyRow || last.pos.pos.compare(pos) != Some(Ordering::Equal) {
            continue;
        }
        let tp = TopicPartition::new(topic, p.partition);
        // Invariant: the record at `hi` is at `pos`; everything below `lo` is before it.
        let (mut lo, mut hi) = (p.log_start_offset, last.offset);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = read_at(client, &tp, mid).await?;
            let at = record_pos(&tp, &r)?;
            if at.pos.compare(pos) == Some(Ordering::Less) {
                lo = r.offset.max(mid) + 1;
            } else {
                hi = mid.min(r.offset);
            }
        }
        rows += p.high_watermark - lo;
    }
    Ok(rows)
}

/// The first record at or after `offset` (below the high watermark, which the caller
/// knows is past it).
async fn read_at(
    client: &ClientConfig,
    tp: &TopicPartition,
    offset: u64,
) -> Result<ConsumerRecord, Error> {
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign(vec![tp.clone()]);
    consumer.seek(tp, Seek::Offset(offset));
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if let Some(r) = records.into_iter().find(|r| r.offset >= offset) {
            return Ok(r);
        }
        if Instant::now() >= deadline {
            return Err(sluice_client::Error::broker(
                ErrorCode::RequestTimedOut.code(),
                format!("{tp}: could not read the record at offset {offset} in {READ_TIMEOUT:?}"),
            )
            .into());
        }
    }
}

fn record_pos(tp: &TopicPartition, r: &ConsumerRecord) -> Result<RecordPos, Error> {
    let value = r
        .headers
        .iter()
        .find(|h| h.key == POS_HEADER)
        .and_then(|h| h.value.as_ref())
        .ok_or_else(|| {
            Error::Config(format!(
                "{tp}: the record at offset {} has no {POS_HEADER} header: the topic is \
                 not a connector's (give the prefix of a connector's topics)",
                r.offset
            ))
        })?;
    RecordPos::from_header(value).map_err(|e| {
        Error::Config(format!(
            "{tp}: the record at offset {} has a bad {POS_HEADER} header ({e})",
            r.offset
        ))
    })
}

fn last_record(tp: &TopicPartition, r: &ConsumerRecord) -> Result<LastRecord, Error> {
    let has = |name: &str| r.headers.iter().any(|h| h.key == name);
    let marker_key = r.key.as_deref() == Some(HEARTBEAT_KEY);
    let kind = match (has(SNAPSHOT_HEADER), has(HEARTBEAT_HEADER) || marker_key) {
        (true, true) => RecordKind::CopyMarker,
        (true, false) => RecordKind::CopyRow,
        (false, true) => RecordKind::Heartbeat,
        (false, false) => RecordKind::Change,
    };
    Ok(LastRecord {
        offset: r.offset,
        pos: record_pos(tp, r)?,
        kind,
        written_ms: r.timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::source_pos::Lsn;

    fn tail(partition: u32, last: Option<(u64, RecordKind)>) -> PartitionTail {
        PartitionTail {
            partition,
            log_start_offset: 0,
            high_watermark: 10,
            last: last.map(|(lsn, kind)| LastRecord {
                offset: 9,
                pos: RecordPos {
                    pos: SourcePos::Postgres(Lsn(lsn)),
                    ordinal: 0,
                },
                kind,
                written_ms: lsn as i64,
            }),
        }
    }

    #[test]
    fn the_state_follows_the_last_records() {
        use RecordKind::*;
        assert_eq!(
            table_state(&[tail(0, None), tail(1, None)]),
            TableState::Empty
        );
        assert_eq!(table_state(&[]), TableState::Empty);
        // A copy running in one partition, not yet in the other.
        assert_eq!(
            table_state(&[tail(0, Some((5, CopyRow))), tail(1, None)]),
            TableState::Copying
        );
        assert_eq!(
            table_state(&[tail(0, Some((5, CopyRow))), tail(1, Some((3, CopyMarker)))]),
            TableState::Copying
        );
        // Marked for a re-copy (or left out of --tables), or one partition never written.
        assert_eq!(
            table_state(&[
                tail(0, Some((5, Heartbeat))),
                tail(1, Some((3, CopyMarker)))
            ]),
            TableState::CopyPending
        );
        assert_eq!(
            table_state(&[tail(0, Some((5, Heartbeat))), tail(1, None)]),
            TableState::CopyPending
        );
        assert_eq!(
            table_state(&[tail(0, Some((5, Heartbeat))), tail(1, Some((7, Change)))]),
            TableState::Streaming
        );
    }

    #[test]
    fn position_is_the_least_and_copy_position_the_newest() {
        use RecordKind::*;
        let parts = [
            tail(0, Some((9, CopyRow))),
            tail(1, Some((4, CopyMarker))),
            tail(2, None),
        ];
        assert_eq!(table_position(&parts), Some(SourcePos::Postgres(Lsn(4))));
        assert_eq!(copy_position(&parts), Some(SourcePos::Postgres(Lsn(9))));
        assert_eq!(table_written_ms(&parts), Some(4));
        assert_eq!(table_position(&[tail(0, None)]), None);
    }
}
