//! Offsets committed inside transactions (TxnOffsetCommit), a child of `coordinator`:
//! each is persisted as its own record (keyed by group, partition, producer id and
//! epoch) and held pending until the transaction's marker reaches this partition. A
//! commit marker makes the producer's pending offsets of that epoch the group's
//! committed offsets and writes them as plain commits; an abort drops them. Either way
//! the pending records get tombstones, so compaction never leaves one behind.
//!
//! Epochs fence zombies: a commit from an epoch older than one already seen for the
//! producer is refused, and a marker settles only its own epoch's offsets (older ones,
//! a fenced instance's, are dropped). An entry no marker settles (the coordinator that
//! would have sent it is gone for good) is dropped after [`STALE_AFTER_MS`].

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// Longer than any transaction may stay open (`transaction.max.timeout.ms`, 15
/// minutes) with room for its markers.
const STALE_AFTER_MS: i64 = 30 * 60 * 1000;

#[derive(Debug, Clone)]
struct Pending {
    group: String,
    tp: Tp,
    epoch: i16,
    committed: Committed,
}

#[derive(Debug, Default)]
pub(super) struct TxnOffsets {
    /// By producer id.
    pending: BTreeMap<i64, Vec<Pending>>,
    /// The newest epoch seen per producer (commits and markers), with when: older
    /// epochs are fenced. Forgotten after [`STALE_AFTER_MS`] without news.
    epochs: BTreeMap<i64, (i16, i64)>,
    /// Records settled transactions leave to write; [`Coordinator::tick`] hands them out.
    followups: Vec<Write>,
}

fn pending_key(p: &Pending, producer_id: i64) -> Vec<u8> {
    key_bytes(&Key::TxnOffset {
        group: p.group.clone(),
        topic: p.tp.0.clone(),
        partition: p.tp.1,
        producer_id,
        producer_epoch: p.epoch,
    })
}

impl TxnOffsets {
    /// A persisted pending commit (`None`: its tombstone).
    pub(super) fn replay(
        &mut self,
        group: String,
        tp: Tp,
        (producer_id, epoch): (i64, i16),
        committed: Option<Committed>,
    ) {
        let list = self.pending.entry(producer_id).or_default();
        list.retain(|p| !(p.group == group && p.tp == tp && p.epoch == epoch));
        match committed {
            Some(committed) => {
                let at = committed.commit_ms;
                list.push(Pending {
                    group,
                    tp,
                    epoch,
                    committed,
                });
                self.note_epoch(producer_id, epoch, at);
            }
            None if list.is_empty() => {
                self.pending.remove(&producer_id);
            }
            None => {}
        }
    }

    fn note_epoch(&mut self, producer_id: i64, epoch: i16, now_ms: i64) {
        let e = self.epochs.entry(producer_id).or_insert((epoch, now_ms));
        if epoch >= e.0 {
            *e = (epoch, now_ms.max(e.1));
        }
    }

    /// Drops pending commits and epochs nothing settled for [`STALE_AFTER_MS`]; returns
    /// the records to write (tombstones, and what settled transactions left).
    pub(super) fn tick(&mut self, now_ms: i64) -> Vec<Write> {
        let mut out = std::mem::take(&mut self.followups);
        for (pid, list) in self.pending.iter_mut() {
            list.retain(|p| {
                let stale = now_ms - p.committed.commit_ms > STALE_AFTER_MS;
                if stale {
                    out.push(Write {
                        key: pending_key(p, *pid),
                        value: None,
                    });
                }
                !stale
            });
        }
        self.pending.retain(|_, l| !l.is_empty());
        let pending = &self.pending;
        self.epochs
            .retain(|pid, (_, at)| pending.contains_key(pid) || now_ms - *at <= STALE_AFTER_MS);
        out
    }
}

impl Coordinator {
    /// TxnOffsetCommit: offsets committed by the transaction of `producer_id` at
    /// `epoch`, held pending (and persisted as such) until its marker reaches this
    /// partition ([`Coordinator::complete_txn`]). Without a member (TxnOffsetCommit
    /// before v3) any producer may commit; with one, as [`Coordinator::commit`] checks.
    /// An epoch older than one seen for the producer is a fenced instance's:
    /// [`GroupError::ProducerFenced`].
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit(
        &mut self,
        group_id: &str,
        (producer_id, epoch): (i64, i16),
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<NewOffset>,
        now_ms: i64,
    ) -> Result<Vec<Write>, GroupError> {
        if !member_id.is_empty() || member_epoch >= 0 {
            self.check_commit(group_id, member_id, member_epoch, &offsets)?;
        } else if group_id.is_empty() {
            return Err(GroupError::InvalidRequest("the group id is empty".into()));
        }
        check_offsets(&offsets)?;
        let t = &mut self.txn_offsets;
        if t.epochs.get(&producer_id).is_some_and(|(e, _)| *e > epoch) {
            return Err(GroupError::ProducerFenced);
        }
        t.note_epoch(producer_id, epoch, now_ms);
        let list = t.pending.entry(producer_id).or_default();
        let mut out = Vec::with_capacity(offsets.len());
        for o in offsets {
            let (tp, committed) = o.committed(now_ms);
            list.retain(|p| !(p.group == group_id && p.tp == tp && p.epoch == epoch));
            let p = Pending {
                group: group_id.to_string(),
                tp,
                epoch,
                committed,
            };
            out.push(Write {
                key: pending_key(&p, producer_id),
                value: Some(serde_json::to_vec(&p.committed).expect("serializes")),
            });
            list.push(p);
        }
        Ok(out)
    }

    /// A transaction marker of `producer_id` at `epoch` reached this partition: its
    /// pending offsets of that epoch become the groups' committed offsets (`commit`) or
    /// are dropped, and those of older epochs (a fenced instance's) are dropped. The
    /// records saying so follow with the next [`Coordinator::tick`]. `now_ms`: the
    /// marker's time.
    pub fn complete_txn(&mut self, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) {
        let t = &mut self.txn_offsets;
        t.note_epoch(producer_id, epoch, now_ms);
        let Some(list) = t.pending.remove(&producer_id) else {
            return;
        };
        let (settled, kept): (Vec<Pending>, Vec<Pending>) =
            list.into_iter().partition(|p| p.epoch <= epoch);
        if !kept.is_empty() {
            t.pending.insert(producer_id, kept);
        }
        let mut applied = Vec::new();
        for p in settled {
            t.followups.push(Write {
                key: pending_key(&p, producer_id),
                value: None,
            });
            if commit && p.epoch == epoch {
                t.followups.push(Write {
                    key: key_bytes(&Key::Offset {
                        group: p.group.clone(),
                        topic: p.tp.0.clone(),
                        partition: p.tp.1,
                    }),
                    value: Some(serde_json::to_vec(&p.committed).expect("serializes")),
                });
                applied.push(p);
            }
        }
        for p in applied {
            self.entry(&p.group).offsets.insert(p.tp, p.committed);
        }
    }

    /// The partitions of `group_id` whose transactional commit awaits its marker
    /// (OffsetFetch `require_stable`: UNSTABLE_OFFSET_COMMIT).
    pub fn pending_commits(&self, group_id: &str) -> BTreeSet<Tp> {
        self.txn_offsets
            .pending
            .values()
            .flatten()
            .filter(|p| p.group == group_id)
            .map(|p| p.tp.clone())
            .collect()
    }
}
