//! Incremental snapshots: a table re-copied on demand in chunks, while every table keeps
//! streaming (docs/cdc.md, "Re-copying a table: `sluice cdc snapshot`").
//!
//! The algorithm is DBLog's watermarks. For each chunk the source writes a low
//! watermark into its own change stream, reads the next `chunk` rows of the table in
//! key order with a plain `SELECT`, and writes a high watermark. Every change the
//! stream carries between the two watermarks is newer than, or as new as, what the
//! `SELECT` saw, so the chunk's rows whose key such a change touched are dropped
//! ([`Window`]); the others are still the table's current values at the high
//! watermark, and are written there, in stream order, as one transaction. No snapshot
//! is held across chunks and streaming never stops.
//!
//! Rows the topic holds that the table no longer has (deleted while nothing recorded
//! it) are found by the writer: when a pass starts it reads the keys the topic holds;
//! every key written afterwards (a chunk row, a streamed change) is forgotten; what is
//! left when the last chunk is written gets a tombstone there.
//!
//! The request travels through the source too (a signal in the stream: Postgres'
//! `pg_logical_emit_message`), so it is acted on at its place in the stream by the
//! connector that owns the slot, whether it runs when asked or starts later. Progress
//! (the last key copied) is kept in a compacted topic of the connector,
//! `<prefix>.__sluice_snapshots`: a pass cut by a crash resumes after its last
//! finished chunk.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::change::TableId;

/// Prefix of the signal message that asks for a pass.
pub const SIGNAL_PREFIX: &str = "sluice.cdc.snapshot";
/// Prefix of the watermark messages around each chunk.
pub const WATERMARK_PREFIX: &str = "sluice.cdc.wm";

/// The topic holding the progress of a connector's passes.
pub fn progress_topic(prefix: &str) -> String {
    format!("{prefix}.__sluice_snapshots")
}

/// "Re-copy these tables", written into the source's stream by `sluice cdc snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The replication slot of the connector asked (other connectors on the database
    /// see the message too and ignore it).
    pub slot: String,
    /// Unique per request: a signal read again after a restart is recognised by it.
    pub id: String,
    /// `schema.table` each.
    pub tables: Vec<String>,
}

/// A low or high watermark around one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub slot: String,
    /// The run of the connector that wrote it: watermarks of an earlier run, read again
    /// after a restart, belong to no chunk of this one.
    pub run: String,
    /// The chunk's number within the run.
    pub chunk: u64,
    /// `schema.table` of the chunk.
    pub table: String,
    pub high: bool,
}

/// What `<prefix>.__sluice_snapshots` holds for a table (its key: `schema.table`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub table: String,
    /// The request's id.
    pub id: String,
    pub state: PassState,
    /// The key of the last row copied (the key columns' text, in key order); `None`
    /// before the first chunk.
    pub after: Option<Vec<String>>,
    /// Rows written by the pass so far.
    pub rows: u64,
    /// Tombstones for rows the table no longer had (when done).
    #[serde(default)]
    pub tombstones: u64,
    /// Source position the pass was asked at, and where it ended (text form).
    pub requested_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub ts_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassState {
    Copying,
    Done,
}

impl Progress {
    pub fn table_id(&self) -> Option<TableId> {
        TableId::parse(&self.table).ok()
    }
}

/// The keys streamed changes touched between a chunk's watermarks.
#[derive(Debug, Default)]
pub struct Window {
    keys: HashSet<Vec<u8>>,
    /// A `TRUNCATE` of the table inside the window: every row of the chunk is older.
    truncated: bool,
}

impl Window {
    /// A change to `key` (its record key bytes) committed inside the window.
    pub fn touched(&mut self, key: Vec<u8>) {
        self.keys.insert(key);
    }

    /// The table was truncated inside the window.
    pub fn truncated(&mut self) {
        self.truncated = true;
    }

    /// Whether a chunk row keyed `key` is still the table's value at the high watermark.
    pub fn keeps(&self, key: &[u8]) -> bool {
        !self.truncated && !self.keys.contains(key)
    }
}

/// What `<prefix>.__sluice_snapshots` holds: the latest progress record per table
/// (empty when the topic does not exist: no pass was ever asked for).
pub async fn read_progress(
    client: &sluice_client::ClientConfig,
    prefix: &str,
) -> Result<HashMap<String, Progress>, sluice_client::Error> {
    use sluice_client::{Admin, Consumer, ConsumerConfig, Seek};
    let name = progress_topic(prefix);
    let admin = Admin::new(client);
    let mut out = HashMap::new();
    if !admin.list_topics().await?.contains(&name) {
        return Ok(out);
    }
    for p in admin.describe_topic(&name).await?.partitions {
        let (start, hw) = (
            p.log_start_offset.unwrap_or(0),
            p.high_watermark.unwrap_or(0),
        );
        if hw <= start {
            continue;
        }
        let tp = sluice_proto::TopicPartition::new(&*name, p.partition);
        let mut consumer = Consumer::new(client, ConsumerConfig::default());
        consumer.assign(vec![tp.clone()]);
        consumer.seek(&tp, Seek::Offset(start));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while consumer.position(&tp).is_none_or(|at| at < hw) {
            if std::time::Instant::now() > deadline {
                return Err(sluice_client::Error::broker(
                    sluice_proto::ErrorCode::RequestTimedOut.code(),
                    format!(
                        "{tp}: reading incremental snapshot progress made no progress for 30 s"
                    ),
                ));
            }
            for r in consumer.poll(std::time::Duration::from_millis(500)).await? {
                let (Some(key), Some(value)) = (r.key, r.value) else {
                    continue;
                };
                if r.offset >= hw {
                    continue;
                }
                if let Ok(p) = serde_json::from_slice::<Progress>(&value) {
                    out.insert(String::from_utf8_lossy(&key).into_owned(), p);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod sim;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_drops_rows_a_change_touched_and_everything_after_a_truncate() {
        let mut w = Window::default();
        w.touched(b"{\"id\":1}".to_vec());
        assert!(!w.keeps(b"{\"id\":1}"));
        assert!(w.keeps(b"{\"id\":2}"));
        w.truncated();
        assert!(!w.keeps(b"{\"id\":2}"));
    }

    #[test]
    fn signals_and_progress_read_back_as_written() {
        let s = Signal {
            slot: "sluice_cdc".into(),
            id: "r1".into(),
            tables: vec!["public.users".into()],
        };
        let back: Signal = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let p = Progress {
            table: "public.users".into(),
            id: "r1".into(),
            state: PassState::Copying,
            after: Some(vec!["42".into()]),
            rows: 2000,
            tombstones: 0,
            requested_at: "pg:0/16B3748".into(),
            finished_at: None,
            ts_ms: 1,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"state\":\"copying\""), "{text}");
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), p);
    }
}
