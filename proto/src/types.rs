//! Typed identifiers. Raw integers appear only at the wire edge (where Kafka uses
//! `-1` for "none"); inside Sluice an absent value is an `Option`.

use std::fmt;

/// Position of a record in a partition. Dense, assigned by the leader, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    pub const ZERO: Offset = Offset(0);
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
    /// The wire form (`i64`). Offsets never exceed `i64::MAX` because they are assigned
    /// one by one from zero.
    pub fn to_wire(self) -> i64 {
        self.0 as i64
    }
    /// `None` for the wire's negative "unknown" values.
    pub fn from_wire(v: i64) -> Option<Offset> {
        (v >= 0).then_some(Offset(v as u64))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Incremented on every leader change of a partition; stamped into each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub u32);

impl LeaderEpoch {
    /// `None` for the wire's `-1` ("no epoch", as in batches from old clients).
    pub fn from_wire(v: i32) -> Option<LeaderEpoch> {
        (v >= 0).then_some(LeaderEpoch(v as u32))
    }
    pub fn to_wire(self) -> i32 {
        self.0 as i32
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A broker's configured id (`--id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerId(pub u32);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A topic name and partition index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
    /// The partition's directory name under a data directory: `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
    /// Parses a directory name written by [`TopicPartition::dir_name`]. Topic names may
    /// themselves contain `-`, so the partition is what follows the last one.
    pub fn parse_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        if topic.is_empty() {
            return None;
        }
        Some(TopicPartition::new(topic, partition.parse().ok()?))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip_with_dashes_in_topic() {
        let tp = TopicPartition::new("user-events", 12);
        assert_eq!(TopicPartition::parse_dir_name(&tp.dir_name()), Some(tp));
        assert_eq!(TopicPartition::parse_dir_name("nodash"), None);
        assert_eq!(TopicPartition::parse_dir_name("-3"), None);
        assert_eq!(TopicPartition::parse_dir_name("t-x"), None);
    }

    #[test]
    fn wire_sentinels_become_none() {
        assert_eq!(Offset::from_wire(-1), None);
        assert_eq!(Offset::from_wire(7), Some(Offset(7)));
        assert_eq!(LeaderEpoch::from_wire(-1), None);
    }
}
