//! Source positions of a set (CDC, issue 11): how far into the database's change stream
//! the applied rows reach, per partition, per topic and for the whole set. Pure state,
//! no IO; the applier advances it while it holds an apply unit's shard write locks
//! (`applier.rs`), so a reader that sees a position also sees the rows it covers.
//!
//! A partition's source position is the `sluice.pos` of the last positioned record
//! applied in it — a record of a held transaction counts only once the transaction is
//! applied. Heartbeats (`sluice.heartbeat`) carry one and are applied as keyless
//! records, so they move the position and never become rows. Records of a partition
//! come in increasing position order (docs/table.md), so the last is the greatest; a
//! smaller one (a partition restarted at its log start) leaves the position as it was.
//!
//! A topic's position is the minimum over its partitions, and exists only once every
//! partition has one; the set's is the minimum over its topics (a source transaction
//! spans topics). Positions of two kinds of source (Postgres and MariaDB) have no
//! order: a minimum over both is `None`.
//!
//! Invariant: `SourcePositions::min` is the minimum of `by_partition` when it holds all
//! `partitions`, else `None`; `SourceState::min` is the minimum of the topics' `min`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use sluice_proto::source_pos::SourcePos;

/// One topic's source positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SourcePositions {
    /// Partitions of the topic (those the set follows).
    partitions: usize,
    /// Position of the last applied positioned record, per partition.
    by_partition: BTreeMap<u32, SourcePos>,
    /// Invariant: the minimum of `by_partition` once it holds every partition.
    min: Option<SourcePos>,
}

impl SourcePositions {
    pub(crate) fn new(partitions: usize) -> SourcePositions {
        SourcePositions {
            partitions,
            ..SourcePositions::default()
        }
    }

    /// Partition `p` applied a record at `pos`. Returns whether anything changed.
    pub(crate) fn advance(&mut self, p: u32, pos: &SourcePos) -> bool {
        let moved = match self.by_partition.get(&p) {
            None => true,
            Some(old) => match old.compare(pos) {
                Some(Ordering::Less) => true,
                Some(_) => false,
                // Another kind of source wrote to this partition: the newest counts.
                None => true,
            },
        };
        if !moved {
            return false;
        }
        self.by_partition.insert(p, pos.clone());
        self.min = match self.by_partition.len() >= self.partitions {
            true => min_of(self.by_partition.values()),
            false => None,
        };
        true
    }

    pub(crate) fn min(&self) -> Option<&SourcePos> {
        self.min.as_ref()
    }
}

/// Every topic's positions and the set's minimum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SourceState {
    /// Indexed like the set's topics.
    pub(crate) topics: Vec<SourcePositions>,
    /// Invariant: the minimum of every topic's `min` (`None` while any is `None`).
    min: Option<SourcePos>,
}

impl SourceState {
    /// `partitions[t]`: how many partitions topic `t` has.
    pub(crate) fn new(partitions: impl IntoIterator<Item = usize>) -> SourceState {
        SourceState {
            topics: partitions.into_iter().map(SourcePositions::new).collect(),
            min: None,
        }
    }

    /// Partition `p` of topic `t` applied a record at `pos`; whether anything changed.
    pub(crate) fn advance(&mut self, t: usize, p: u32, pos: &SourcePos) -> bool {
        let Some(topic) = self.topics.get_mut(t) else {
            return false;
        };
        if !topic.advance(p, pos) {
            return false;
        }
        self.min = match self.topics.iter().all(|t| t.min.is_some()) {
            true => min_of(self.topics.iter().filter_map(|t| t.min.as_ref())),
            false => None,
        };
        true
    }

    pub(crate) fn min(&self) -> Option<&SourcePos> {
        self.min.as_ref()
    }

    pub(crate) fn topic_min(&self, t: usize) -> Option<&SourcePos> {
        self.topics.get(t).and_then(SourcePositions::min)
    }
}

/// The least position, `None` for none or for positions of different kinds of source.
fn min_of<'a>(mut positions: impl Iterator<Item = &'a SourcePos>) -> Option<SourcePos> {
    let mut least = positions.next()?;
    for pos in positions {
        match pos.compare(least)? {
            Ordering::Less => least = pos,
            Ordering::Equal | Ordering::Greater => {}
        }
    }
    Some(least.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(s: &str) -> SourcePos {
        format!("pg:{s}").parse().unwrap()
    }

    #[test]
    fn a_topic_has_a_position_once_every_partition_has_one_and_it_is_the_least() {
        let mut t = SourcePositions::new(3);
        assert!(t.advance(0, &pg("0/30")));
        assert!(t.advance(2, &pg("0/10")));
        assert_eq!(t.min(), None, "partition 1 has none yet");
        assert!(t.advance(1, &pg("0/20")));
        assert_eq!(t.min(), Some(&pg("0/10")));
        assert!(t.advance(2, &pg("0/40")));
        assert_eq!(t.min(), Some(&pg("0/20")));
    }

    #[test]
    fn a_partition_position_never_moves_back() {
        let mut t = SourcePositions::new(1);
        assert!(t.advance(0, &pg("0/30")));
        assert!(!t.advance(0, &pg("0/30")), "equal: nothing changed");
        assert!(!t.advance(0, &pg("0/20")), "a restart at the log start");
        assert_eq!(t.min(), Some(&pg("0/30")));
    }

    #[test]
    fn the_set_position_is_the_least_of_its_topics() {
        let mut s = SourceState::new([1, 2]);
        assert!(s.advance(0, 0, &pg("0/50")));
        assert_eq!(s.topic_min(0), Some(&pg("0/50")));
        assert_eq!(s.min(), None, "topic 1 has none yet");
        s.advance(1, 0, &pg("0/60"));
        assert_eq!(s.min(), None, "topic 1 partition 1 has none yet");
        s.advance(1, 1, &pg("0/40"));
        assert_eq!(s.min(), Some(&pg("0/40")));
        s.advance(1, 1, &pg("0/70"));
        assert_eq!(s.min(), Some(&pg("0/50")));
        assert!(!s.advance(5, 0, &pg("1/0")), "no such topic");
    }

    #[test]
    fn positions_of_two_kinds_of_source_have_no_minimum() {
        let my: SourcePos = "my:bin.000001:4:0-1-1".parse().unwrap();
        let mut s = SourceState::new([1, 1]);
        s.advance(0, 0, &pg("0/10"));
        s.advance(1, 0, &my);
        assert_eq!(s.topic_min(0), Some(&pg("0/10")));
        assert_eq!(s.topic_min(1), Some(&my));
        assert_eq!(s.min(), None);
    }
}
