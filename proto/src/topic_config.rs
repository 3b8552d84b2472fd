//! Topic configuration under Kafka's names, shared by the controller (which validates
//! and stores it) and the broker (whose logs obey it). A topic's configs override
//! the broker's defaults key by key ([`LogConfig::with_overrides`]).

use std::collections::BTreeMap;

/// What happens to old segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// A rejected config key or value, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config {name}={value}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// Settings of one partition log. `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would pass this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: i64,
    /// `segment.index.bytes`: preallocated size of each index file; a full index rolls.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: log bytes between two offset-index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete sealed segments whose newest record is older; `None` = forever.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete oldest sealed segments while the log is larger; `None` = no limit.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: u64,
    /// `min.insync.replicas`: ISR size below which acks=all writes are refused.
    pub min_insync_replicas: u32,
    /// `flush.messages`: fsync once this many records are unflushed; `None` = leave it to the OS.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync data older than this; `None` = leave it to the OS.
    pub flush_ms: Option<i64>,
    /// `message.timestamp.type`: `true` for LogAppendTime.
    pub log_append_time: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// `min.cleanable.dirty.ratio`: compact once this share of the log (by bytes, active
    /// segment excluded) has not been compacted yet. Invariant: within `0.0..=1.0`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record is compacted within about this long, whatever
    /// the dirty ratio (the active segment also rolls once it holds older records).
    pub max_compaction_lag_ms: i64,
    /// `compression.type`: the codec the leader stores batches in (`None`: `producer`,
    /// as they arrive; `Some(Compression::None)`: `uncompressed`).
    pub compression_type: Option<crate::Compression>,
    /// Kafka topic configs Sluice accepts, validates, stores and describes but does not
    /// act on ([`PASSIVE_CONFIGS`]; docs/kafka-compatibility.md, "Topic configs accepted
    /// without effect"). Invariant: holds exactly the names of `PASSIVE_CONFIGS`.
    pub passive: BTreeMap<&'static str, String>,
}

/// How a passive config's value is checked (as Kafka's `LogConfig` checks it).
#[derive(Debug, Clone, Copy)]
enum Passive {
    /// A long in `min..=max`.
    Long(i64, i64),
    /// `true` or `false`.
    Bool,
    /// Only `false`: `true` would ask for something Sluice does not do (tiered storage).
    FalseOnly,
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker` pairs.
    ReplicaList,
}

/// Kafka 4.4's topic configs that Sluice takes without acting on them, with Kafka's
/// defaults: a Kafka tool may set them (librdkafka's 0077 creates its topic with
/// `file.delete.delay.ms`), and `kafka-configs --describe` lists them. Why each has no
/// effect is in docs/kafka-compatibility.md.
const PASSIVE_CONFIGS: &[(&str, &str, Passive)] = &[
    ("compression.gzip.level", "-1", Passive::Long(-1, 9)),
    ("compression.lz4.level", "9", Passive::Long(1, 17)),
    ("compression.zstd.level", "3", Passive::Long(-131072, 22)),
    ("file.delete.delay.ms", "60000", Passive::Long(0, i64::MAX)),
    (
        "follower.replication.throttled.replicas",
        "",
        Passive::ReplicaList,
    ),
    (
        "leader.replication.throttled.replicas",
        "",
        Passive::ReplicaList,
    ),
    ("local.retention.bytes", "-2", Passive::Long(-2, i64::MAX)),
    ("local.retention.ms", "-2", Passive::Long(-2, i64::MAX)),
    (
        "message.timestamp.after.max.ms",
        "3600000",
        Passive::Long(0, i64::MAX),
    ),
    (
        "message.timestamp.before.max.ms",
        "9223372036854775807",
        Passive::Long(0, i64::MAX),
    ),
    ("preallocate", "false", Passive::Bool),
    ("remote.log.copy.disable", "false", Passive::Bool),
    ("remote.log.delete.on.disable", "false", Passive::Bool),
    ("remote.storage.enable", "false", Passive::FalseOnly),
    ("segment.jitter.ms", "0", Passive::Long(0, i64::MAX)),
];

fn check_passive(name: &str, value: &str, kind: Passive) -> Result<String, ConfigError> {
    let value = value.trim();
    match kind {
        Passive::Long(min, max) => {
            let v: i64 = value
                .parse()
                .map_err(|_| err(name, value, "not an integer"))?;
            if !(min..=max).contains(&v) {
                return Err(err(name, value, format!("must be in {min}..={max}")));
            }
        }
        Passive::Bool if value == "true" || value == "false" => {}
        Passive::Bool => return Err(err(name, value, "expected true or false")),
        Passive::FalseOnly if value == "false" => {}
        Passive::FalseOnly => {
            return Err(err(name, value, "Sluice has no tiered storage: only false"))
        }
        Passive::ReplicaList => {
            let ok = value.is_empty()
                || value == "*"
                || value.split(',').all(|pair| {
                    let mut it = pair.trim().split(':');
                    let num = |s: Option<&str>| s.is_some_and(|s| s.parse::<u32>().is_ok());
                    num(it.next()) && num(it.next()) && it.next().is_none()
                });
            if !ok {
                return Err(err(
                    name,
                    value,
                    "expected *, or partition:broker pairs separated by commas",
                ));
            }
        }
    }
    Ok(value.to_string())
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::Delete,
            max_message_bytes: 1024 * 1024 + 12,
            min_insync_replicas: 1,
            flush_messages: None,
            flush_ms: None,
            log_append_time: false,
            delete_retention_ms: 24 * 3600 * 1000,
            unclean_leader_election: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            compression_type: None,
            passive: PASSIVE_CONFIGS
                .iter()
                .map(|(name, default, _)| (*name, default.to_string()))
                .collect(),
        }
    }
}

/// Every config name this broker understands.
pub const CONFIG_NAMES: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "max.message.bytes",
    "min.insync.replicas",
    "flush.messages",
    "flush.ms",
    "message.timestamp.type",
    "delete.retention.ms",
    "unclean.leader.election.enable",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "compression.type",
    // Accepted without effect (PASSIVE_CONFIGS).
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "file.delete.delay.ms",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "segment.jitter.ms",
];

fn err(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn int(name: &str, value: &str, min: i64) -> Result<i64, ConfigError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| err(name, value, "not an integer"))?;
    if v < min {
        return Err(err(name, value, format!("must be at least {min}")));
    }
    Ok(v)
}

/// Kafka spells "no limit" as -1 for retention and as Long.MAX_VALUE for flushing.
fn optional(name: &str, value: &str, min: i64) -> Result<Option<i64>, ConfigError> {
    if value.trim() == "-1" {
        return Ok(None);
    }
    let v = int(name, value, min)?;
    Ok((v != i64::MAX).then_some(v))
}

impl LogConfig {
    /// Applies one `name=value`; unknown names and bad values are errors.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        match name {
            "segment.bytes" => self.segment_bytes = int(name, value, 14)? as u64,
            "segment.ms" => self.segment_ms = int(name, value, 1)?,
            "segment.index.bytes" => self.segment_index_bytes = int(name, value, 64)? as u64,
            "index.interval.bytes" => self.index_interval_bytes = int(name, value, 0)? as u64,
            "retention.ms" => self.retention_ms = optional(name, value, 0)?,
            "retention.bytes" => self.retention_bytes = optional(name, value, 0)?.map(|v| v as u64),
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                self.cleanup_policy = match parts.as_slice() {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => {
                        return Err(err(
                            name,
                            value,
                            "expected delete, compact or compact,delete",
                        ))
                    }
                }
            }
            "max.message.bytes" => self.max_message_bytes = int(name, value, 0)? as u64,
            "min.insync.replicas" => self.min_insync_replicas = int(name, value, 1)? as u32,
            "flush.messages" => self.flush_messages = optional(name, value, 1)?.map(|v| v as u64),
            "flush.ms" => self.flush_ms = optional(name, value, 0)?,
            "message.timestamp.type" => {
                self.log_append_time = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(err(name, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "delete.retention.ms" => self.delete_retention_ms = int(name, value, 0)?,
            "compression.type" => {
                use crate::Compression as C;
                self.compression_type = match value {
                    "producer" => None,
                    "uncompressed" => Some(C::None),
                    "gzip" => Some(C::Gzip),
                    "snappy" => Some(C::Snappy),
                    "lz4" => Some(C::Lz4),
                    "zstd" => Some(C::Zstd),
                    _ => {
                        return Err(err(
                            name,
                            value,
                            "expected producer, uncompressed, gzip, snappy, lz4 or zstd",
                        ))
                    }
                }
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(err(name, value, "expected true or false")),
                }
            }
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = match value.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => return Err(err(name, value, "expected a number from 0 to 1")),
                }
            }
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = int(name, value, 0)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = int(name, value, 1)?,
            _ => match PASSIVE_CONFIGS.iter().find(|(n, _, _)| *n == name) {
                Some((n, _, kind)) => {
                    let v = check_passive(name, value, *kind)?;
                    self.passive.insert(n, v);
                }
                None => return Err(err(name, value, "unknown config name")),
            },
        }
        Ok(())
    }

    /// This config with `overrides` applied in order, validated.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogConfig, ConfigError> {
        let mut c = self.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes > u32::MAX as u64 {
            return Err(err(
                "segment.bytes",
                &self.segment_bytes.to_string(),
                "index positions are 32-bit: at most 4294967295",
            ));
        }
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            let v = self.min_compaction_lag_ms.to_string();
            return Err(err(
                "min.compaction.lag.ms",
                &v,
                "must not exceed max.compaction.lag.ms",
            ));
        }
        if self.segment_index_bytes < 24 {
            let v = self.segment_index_bytes.to_string();
            return Err(err("segment.index.bytes", &v, "too small for one entry"));
        }
        Ok(())
    }

    /// Every setting as Kafka names and spells it, for `topic describe`.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let opt = |v: Option<i64>| v.map_or("-1".to_string(), |v| v.to_string());
        let flush = |v: Option<i64>| v.map_or(i64::MAX.to_string(), |v| v.to_string());
        let ts = if self.log_append_time {
            "LogAppendTime"
        } else {
            "CreateTime"
        };
        [
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("segment.index.bytes", self.segment_index_bytes.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("retention.ms", opt(self.retention_ms)),
            (
                "retention.bytes",
                opt(self.retention_bytes.map(|v| v as i64)),
            ),
            ("cleanup.policy", self.cleanup_policy.name().to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "flush.messages",
                flush(self.flush_messages.map(|v| v as i64)),
            ),
            ("flush.ms", flush(self.flush_ms)),
            ("message.timestamp.type", ts.to_string()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            (
                "unclean.leader.election.enable",
                self.unclean_leader_election.to_string(),
            ),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.to_string(),
            ),
            (
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms.to_string(),
            ),
            (
                "max.compaction.lag.ms",
                self.max_compaction_lag_ms.to_string(),
            ),
            (
                "compression.type",
                match self.compression_type {
                    None => "producer",
                    Some(crate::Compression::None) => "uncompressed",
                    Some(crate::Compression::Gzip) => "gzip",
                    Some(crate::Compression::Snappy) => "snappy",
                    Some(crate::Compression::Lz4) => "lz4",
                    Some(crate::Compression::Zstd) => "zstd",
                }
                .to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.passive.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_to_map() {
        let c = LogConfig::default();
        let map = c.to_map();
        assert_eq!(map.len(), CONFIG_NAMES.len());
        assert!(CONFIG_NAMES.iter().all(|n| map.contains_key(*n)));
        let again = c
            .with_overrides(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_the_key_and_reason() {
        let c = LogConfig::default();
        let e = c.with_overrides([("retention.ms", "soon")]).unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.reason.as_str()),
            ("retention.ms", "not an integer")
        );
        let e = c.with_overrides([("no.such", "1")]).unwrap_err();
        assert_eq!(e.reason, "unknown config name");
        assert!(c.with_overrides([("cleanup.policy", "shred")]).is_err());
        assert!(c.with_overrides([("min.insync.replicas", "0")]).is_err());
        assert!(c
            .with_overrides([("segment.bytes", "99999999999")])
            .is_err());
        let ok = c.with_overrides([
            ("cleanup.policy", "delete,compact"),
            ("flush.messages", "1"),
        ]);
        let ok = ok.unwrap();
        assert_eq!(
            (ok.cleanup_policy, ok.flush_messages),
            (CleanupPolicy::CompactDelete, Some(1))
        );
    }

    #[test]
    fn passive_configs_are_checked_and_kept_as_kafka_spells_them() {
        let c = LogConfig::default();
        assert_eq!(c.to_map()["file.delete.delay.ms"], "60000");
        let set = c
            .with_overrides([
                ("file.delete.delay.ms", "10000"),
                ("leader.replication.throttled.replicas", "0:1,1:2"),
                ("preallocate", "true"),
            ])
            .unwrap();
        let map = set.to_map();
        assert_eq!(map["file.delete.delay.ms"], "10000");
        assert_eq!(map["leader.replication.throttled.replicas"], "0:1,1:2");
        assert_eq!(map["preallocate"], "true");
        for (k, v) in [
            ("file.delete.delay.ms", "-1"),
            ("compression.gzip.level", "10"),
            ("preallocate", "yes"),
            ("remote.storage.enable", "true"),
            ("follower.replication.throttled.replicas", "0-1"),
        ] {
            let e = c.with_overrides([(k, v)]).unwrap_err();
            assert_eq!(e.name, k, "{k}={v}: {e}");
        }
    }
}
