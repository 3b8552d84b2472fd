//! The sink's side of `TRUNCATE`: the keys a truncated table's topic holds, read back
//! from the topic itself, so that the transaction can tombstone every one of them
//! (docs/cdc.md, "TRUNCATE"). Called by the runner's task from
//! `Sink::write_transaction`, only for transactions that truncate.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use sluice_proto::source_pos::{RecordPos, SourcePos, POS_HEADER};
use tracing::info;

use super::copy::is_marker;
use super::Sink;
use crate::change::TableId;
use crate::Error as CdcError;

/// Keys of one table's topic, sorted: the tombstones of a truncate are written in key
/// order, so a transaction written again after a crash numbers them the same way.
pub(super) type Keys = BTreeSet<Vec<u8>>;

impl Sink {
    /// For each of `tables` (those a transaction at `pos` truncates): the keys whose
    /// latest record before `pos` is a row. Waits first until every record written so
    /// far is acknowledged (acks=all: then readable below the high watermark). Records
    /// at `pos` or later —
    /// what an earlier run wrote of this same transaction before it stopped — are left
    /// out, so a transaction written again finds the same keys and numbers its records
    /// as the first run did (the resume rule skips those already written by number).
    pub(super) async fn keys_before(
        &mut self,
        tables: BTreeSet<&TableId>,
        pos: &SourcePos,
    ) -> Result<HashMap<TableId, Keys>, CdcError> {
        let mut out = HashMap::new();
        if tables.is_empty() {
            return Ok(out);
        }
        self.producer.flush().await;
        for table in tables {
            let Some(name) = self.topics.get(table).map(|t| t.name.clone()) else {
                continue;
            };
            let mut keys = Keys::new();
            self.scan_topic(&name, |r| {
                let Some(key) = r.key else { return };
                if is_marker(&r.headers) || !before(&r.headers, pos) {
                    return;
                }
                if r.value.is_some() {
                    keys.insert(key.to_vec());
                } else {
                    keys.remove(&key[..]);
                }
            })
            .await?;
            info!(%table, topic = %name, keys = keys.len(), %pos, "TRUNCATE: the topic's keys get tombstones");
            out.insert(table.clone(), keys);
        }
        Ok(out)
    }
}

/// Whether a record (by its `sluice.pos`) comes before `pos`. A record without a
/// position, or of another kind of source (an earlier connector), counts as before.
fn before(headers: &[sluice_proto::Header], pos: &SourcePos) -> bool {
    let Some(value) = headers
        .iter()
        .find(|h| h.key == POS_HEADER)
        .and_then(|h| h.value.as_ref())
    else {
        return true;
    };
    match RecordPos::from_header(value) {
        Ok(rp) => !matches!(
            rp.pos.compare(pos),
            Some(Ordering::Equal | Ordering::Greater)
        ),
        Err(_) => true,
    }
}
