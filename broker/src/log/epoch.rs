//! The leader-epoch cache: for each leader epoch, the first offset written in it.
//! Followers use [`EpochCache::end_offset_for`] answers from the leader to find where
//! their log diverged (KIP-101/279). Kept consistent with `truncate_to` (entries at or
//! past the new end go) and `truncate_prefix_to` (entries before the new start are
//! folded into one starting at it). Persisted to `leader-epoch-checkpoint` on change.
//!
//! Invariant: epochs and start offsets both strictly increase along `entries`.

use std::path::PathBuf;

use super::checkpoint;
use super::error::{io_err, LogError};

/// One cache entry: `epoch` began at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start_offset: u64,
}

/// The epoch entries themselves, with no file behind them: the rules of the cache, shared
/// by the on-disk [`EpochCache`] and the replication simulator's in-memory log.
///
/// Invariant: epochs and start offsets both strictly increase along `entries`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochEntries {
    entries: Vec<EpochEntry>,
}

impl EpochEntries {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest; an
    /// older or equal epoch is ignored (batches of the current epoch arrive often).
    /// Returns whether anything changed.
    pub fn assign(&mut self, epoch: u32, start_offset: u64) -> bool {
        if self.latest().is_some_and(|l| epoch <= l.epoch) {
            return false;
        }
        // A start offset at or below an older entry's means those entries' ranges were
        // truncated away; drop them so offsets keep increasing.
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// After `truncate_to(end)`: every entry starting at or past `end` goes, even when no
    /// bytes were removed (an epoch begun at the log end by a leader deposed before it
    /// appended anything). Kafka does the same; keeping such an entry makes a follower
    /// ask its leader the same divergence question forever. Returns whether anything
    /// changed.
    pub fn truncate_from_end(&mut self, end: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        self.entries.len() != before
    }

    /// After `truncate_prefix_to(start)`: the epoch covering `start` now starts there.
    pub fn truncate_from_start(&mut self, start: u64) -> bool {
        let covering = self.entries.iter().rposition(|e| e.start_offset <= start);
        let Some(i) = covering else { return false };
        if i == 0 && self.entries[0].start_offset == start {
            return false;
        }
        self.entries.drain(..i);
        self.entries[0].start_offset = start;
        true
    }

    /// Kafka's OffsetsForLeaderEpoch answer: the largest epoch `<= epoch` that this log
    /// knows, and the offset where it ended (the next epoch's start, or
    /// `log_end_offset` for the latest). `None` if `epoch` precedes every entry.
    pub fn end_offset_for(&self, epoch: u32, log_end_offset: u64) -> Option<(u32, u64)> {
        let i = self.entries.iter().rposition(|e| e.epoch <= epoch)?;
        let end = self
            .entries
            .get(i + 1)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((self.entries[i].epoch, end))
    }
}

/// [`EpochEntries`] persisted to `leader-epoch-checkpoint` on every change.
#[derive(Debug)]
pub(crate) struct EpochCache {
    path: PathBuf,
    entries: EpochEntries,
}

impl EpochCache {
    pub(crate) fn open(path: PathBuf) -> Result<EpochCache, LogError> {
        let rows = checkpoint::read(&path)
            .map_err(io_err(&path))?
            .unwrap_or_default();
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let parsed = match row.as_slice() {
                [e, o] => e.parse().ok().zip(o.parse().ok()),
                _ => None,
            };
            let Some((epoch, start_offset)) = parsed else {
                return Err(LogError::Corrupt {
                    path,
                    position: 0,
                    reason: "bad epoch entry".into(),
                });
            };
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        let ordered = entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset);
        if !ordered {
            return Err(LogError::Corrupt {
                path,
                position: 0,
                reason: "epochs out of order".into(),
            });
        }
        Ok(EpochCache {
            path,
            entries: EpochEntries { entries },
        })
    }

    fn persist(&self) -> Result<(), LogError> {
        let lines: Vec<String> = self
            .entries
            .entries()
            .iter()
            .map(|e| format!("{} {}", e.epoch, e.start_offset))
            .collect();
        checkpoint::write(&self.path, &lines).map_err(io_err(&self.path))
    }

    fn persist_if(&self, changed: bool) -> Result<(), LogError> {
        if changed {
            self.persist()
        } else {
            Ok(())
        }
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        self.entries.entries()
    }

    pub(crate) fn snapshot(&self) -> EpochEntries {
        self.entries.clone()
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.latest()
    }

    pub(crate) fn assign(&mut self, epoch: u32, start_offset: u64) -> Result<(), LogError> {
        let changed = self.entries.assign(epoch, start_offset);
        self.persist_if(changed)
    }

    pub(crate) fn truncate_from_end(&mut self, end: u64) -> Result<(), LogError> {
        let changed = self.entries.truncate_from_end(end);
        self.persist_if(changed)
    }

    pub(crate) fn truncate_from_start(&mut self, start: u64) -> Result<(), LogError> {
        let changed = self.entries.truncate_from_start(start);
        self.persist_if(changed)
    }

    pub(crate) fn end_offset_for(&self, epoch: u32, log_end_offset: u64) -> Option<(u32, u64)> {
        self.entries.end_offset_for(epoch, log_end_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, EpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = EpochCache::open(dir.path().join("leader-epoch-checkpoint")).unwrap();
        (dir, c)
    }

    #[test]
    fn end_offsets_follow_kafka_semantics() {
        let (_d, mut c) = cache();
        c.assign(1, 0).unwrap();
        c.assign(1, 5).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(4, 20).unwrap();
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(9, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(0, 30), None);
    }

    #[test]
    fn truncating_at_the_log_end_drops_an_epoch_begun_there() {
        // A replica became leader in epoch 7 at its log end 268200 and was deposed before
        // appending; the new leader says it diverged at 268200. Truncating to its own log
        // end must still drop the empty epoch, or it asks the same question forever.
        let mut e = EpochEntries::default();
        e.assign(2, 217_400);
        e.assign(7, 268_200);
        assert!(e.truncate_from_end(268_200));
        assert_eq!(e.latest().map(|l| l.epoch), Some(2));
        assert!(!e.truncate_from_end(268_200), "nothing more to drop");
    }

    #[test]
    fn truncation_keeps_both_ends_consistent_and_persists() {
        let (d, mut c) = cache();
        for (e, o) in [(1, 0), (2, 10), (3, 20)] {
            c.assign(e, o).unwrap();
        }
        c.truncate_from_end(15).unwrap();
        assert_eq!(
            c.latest(),
            Some(EpochEntry {
                epoch: 2,
                start_offset: 10
            })
        );
        c.truncate_from_start(12).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 12
            }]
        );
        let reopened = EpochCache::open(d.path().join("leader-epoch-checkpoint")).unwrap();
        assert_eq!(reopened.entries(), c.entries());
        // A new epoch starting below an old start offset replaces it.
        c.assign(5, 12).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 5,
                start_offset: 12
            }]
        );
    }
}
