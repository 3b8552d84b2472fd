//! The invariants the simulator checks after every step, and what they remember.
//!
//! - at most one leader per leader epoch;
//! - a leader's high watermark never decreases within its epoch (and process: a leader
//!   that restarts and is given the same epoch again starts from 0, as the real one);
//! - an acks=all record is, when the leader acknowledges it, on at least
//!   `min.insync.replicas` replicas at its offset;
//! - a committed record (acknowledged, or read by a consumer below a leader's high
//!   watermark, in leader epoch E) is never replaced by another, every leader of an
//!   epoch after E holds it when it takes over (leader completeness), and no replica
//!   truncates it while following a leader of epoch E or later (a replica still
//!   following an older leader may cut it and fetch it again later);
//! - replicas agree below their high watermarks.

use std::collections::BTreeMap;

use sluice_proto::{BrokerId, LeaderEpoch, Offset};

/// One record in a simulated log: the epoch it was written in and a unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub epoch: u32,
    pub id: u64,
}

#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<LeaderEpoch, BrokerId>,
    /// (broker, incarnation, epoch) -> the leader's high watermark.
    leader_hw: BTreeMap<(BrokerId, u64, LeaderEpoch), Offset>,
    /// offset -> (id, leader epoch it was committed in) of every committed record.
    pub committed: BTreeMap<u64, (u64, LeaderEpoch)>,
    pub acked: u64,
}

pub type Violation = String;

impl Checker {
    pub fn on_leader(&mut self, epoch: LeaderEpoch, node: BrokerId) -> Result<(), Violation> {
        match self.leaders.insert(epoch, node) {
            Some(other) if other != node => Err(format!(
                "two leaders in leader epoch {epoch}: broker {other} and broker {node}"
            )),
            _ => Ok(()),
        }
    }

    pub fn on_leader_hw(
        &mut self,
        node: BrokerId,
        incarnation: u64,
        epoch: LeaderEpoch,
        hw: Offset,
    ) -> Result<(), Violation> {
        let last = self
            .leader_hw
            .entry((node, incarnation, epoch))
            .or_insert(hw);
        if hw < *last {
            return Err(format!(
                "leader {node} moved its high watermark back in epoch {epoch}: {last} -> {hw}"
            ));
        }
        *last = hw;
        Ok(())
    }

    fn commit(
        &mut self,
        offset: u64,
        id: u64,
        epoch: LeaderEpoch,
        how: &str,
    ) -> Result<(), Violation> {
        match self.committed.get(&offset) {
            Some(&(other, _)) if other != id => Err(format!(
                "offset {offset} committed twice with different records: {other} and {id} ({how})"
            )),
            Some(&(_, first)) if first <= epoch => Ok(()),
            _ => {
                self.committed.insert(offset, (id, epoch));
                Ok(())
            }
        }
    }

    pub fn on_ack(
        &mut self,
        offset: u64,
        id: u64,
        epoch: LeaderEpoch,
        holders: usize,
        min_isr: usize,
    ) -> Result<(), Violation> {
        if holders < min_isr {
            return Err(format!(
                "record {id} acknowledged at offset {offset} while on {holders} replicas (min.insync.replicas={min_isr})"
            ));
        }
        self.acked += 1;
        self.commit(offset, id, epoch, "acknowledged")
    }

    pub fn on_read(&mut self, offset: u64, id: u64, epoch: LeaderEpoch) -> Result<(), Violation> {
        self.commit(offset, id, epoch, "read by a consumer")
    }

    /// `removed` are the (offset, entry) pairs a replica following a leader of
    /// `following` just dropped.
    pub fn on_truncate(
        &self,
        node: BrokerId,
        following: LeaderEpoch,
        removed: &[(u64, Entry)],
        why: &str,
    ) -> Result<(), Violation> {
        for (offset, e) in removed {
            if let Some(&(id, epoch)) = self.committed.get(offset) {
                if id == e.id && following >= epoch {
                    return Err(format!(
                        "broker {node}, following epoch {following}, truncated record {id} at offset {offset} committed in epoch {epoch} ({why})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Leader completeness: a leader of `epoch` holds every record committed before it.
    pub fn leader_complete(
        &self,
        node: BrokerId,
        epoch: LeaderEpoch,
        log: &[Entry],
    ) -> Result<(), Violation> {
        for (&offset, &(id, committed_in)) in &self.committed {
            if committed_in < epoch && log.get(offset as usize).map(|e| e.id) != Some(id) {
                return Err(format!(
                    "broker {node} leads epoch {epoch} without record {id} committed at offset {offset} in epoch {committed_in} (has {:?})",
                    log.get(offset as usize)
                ));
            }
        }
        Ok(())
    }

    /// Replicas agree below the smaller of their high watermarks.
    pub fn agree(&self, logs: &[(BrokerId, &[Entry], Offset)]) -> Result<(), Violation> {
        for (i, (a, la, hwa)) in logs.iter().enumerate() {
            for (b, lb, hwb) in &logs[i + 1..] {
                let below = hwa.min(hwb).0 as usize;
                let below = below.min(la.len()).min(lb.len());
                if let Some(o) = (0..below).find(|&o| la[o].id != lb[o].id) {
                    return Err(format!(
                        "brokers {a} and {b} disagree at offset {o} below their high watermarks ({hwa}, {hwb}): {:?} vs {:?}",
                        la[o], lb[o]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every committed record is on this replica at its offset.
    pub fn holds_all(&self, node: BrokerId, log: &[Entry]) -> Result<(), Violation> {
        for (&offset, &(id, _)) in &self.committed {
            if log.get(offset as usize).map(|e| e.id) != Some(id) {
                return Err(format!(
                    "broker {node} lacks committed record {id} at offset {offset} (has {:?})",
                    log.get(offset as usize)
                ));
            }
        }
        Ok(())
    }
}
