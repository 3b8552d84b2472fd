//! The groups of one `__consumer_offsets` partition, sans-IO: heartbeats, offset commits
//! and fetches, expiry, describe/list/delete. Every change comes back as records to
//! append to the partition ([`Write`]); a coordinator that takes the partition over
//! replays them ([`Coordinator::replay`]) and carries on with the same groups, epochs,
//! assignments and committed offsets.
//!
//! Records are keyed so compaction keeps only the latest per key: one per group (its
//! [`GroupSnapshot`]) and one per committed partition. A deleted group or expired offset
//! is a tombstone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::assignor::{MemberId, Tp};
use super::state::{
    Group, GroupConfig, GroupError, GroupSnapshot, Heartbeat, HeartbeatReply, MemberView,
};

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Defaults for new groups (`group.consumer.*`).
    pub group: GroupConfig,
    /// Bounds on the session timeout a member asks for.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// `offsets.retention.minutes`: committed offsets of a group without members are
    /// removed this long after it became empty (or after its last commit, if later).
    pub offsets_retention: Duration,
    /// Most groups one broker coordinates (over every partition it leads).
    pub max_groups: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> CoordinatorConfig {
        CoordinatorConfig {
            group: GroupConfig::default(),
            min_session_timeout: Duration::from_millis(500),
            max_session_timeout: Duration::from_secs(300),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            max_groups: sluice_proto::limits::GROUPS_PER_BROKER_MAX,
        }
    }
}

/// Longest metadata a commit may carry (Kafka's `offset.metadata.max.bytes`).
pub const MAX_METADATA: usize = 4096;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// A record to append: key, and value (`None`: a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Key {
    Group {
        group: String,
    },
    Offset {
        group: String,
        topic: String,
        partition: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupValue {
    snapshot: GroupSnapshot,
    /// Wall-clock ms since which the group has had no members.
    empty_since_ms: Option<i64>,
}

fn key_bytes(k: &Key) -> Vec<u8> {
    serde_json::to_vec(k).expect("keys serialize")
}

struct Entry {
    group: Group,
    offsets: BTreeMap<Tp, Committed>,
    empty_since_ms: Option<i64>,
    /// What the log holds for this group now.
    persisted: Option<GroupValue>,
}

/// A group as `describe` shows it.
#[derive(Debug, Clone)]
pub struct Description {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<MemberView>,
    pub offsets: BTreeMap<Tp, Committed>,
}

/// The groups of one offsets partition.
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: BTreeMap<String, Entry>,
    /// Every topic's partition count (from metadata).
    partitions: BTreeMap<String, u32>,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            partitions: BTreeMap::new(),
        }
    }

    /// Applies one record of the partition (loading). A record that does not decode is
    /// reported and skipped: it cannot have been written by a coordinator.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>, now: Instant) -> Result<(), String> {
        let k: Key = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
        match k {
            Key::Offset {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => {
                    let c: Committed =
                        serde_json::from_slice(v).map_err(|e| format!("bad offset: {e}"))?;
                    self.entry(&group).offsets.insert((topic, partition), c);
                }
                None => {
                    if let Some(e) = self.groups.get_mut(&group) {
                        e.offsets.remove(&(topic, partition));
                    }
                }
            },
            Key::Group { group } => match value {
                Some(v) => {
                    let gv: GroupValue =
                        serde_json::from_slice(v).map_err(|e| format!("bad group: {e}"))?;
                    let restored = Group::restore(
                        self.config.group.clone(),
                        gv.snapshot.clone(),
                        self.partitions.clone(),
                        now,
                    );
                    let e = self.entry(&group);
                    e.group = restored;
                    e.empty_since_ms = gv.empty_since_ms;
                    e.persisted = Some(gv);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
        }
        Ok(())
    }

    fn entry(&mut self, group: &str) -> &mut Entry {
        let (config, partitions) = (&self.config, &self.partitions);
        self.groups.entry(group.to_string()).or_insert_with(|| {
            let mut g = Group::new(config.group.clone());
            g.set_partitions(partitions.clone());
            Entry {
                group: g,
                offsets: BTreeMap::new(),
                empty_since_ms: None,
                persisted: None,
            }
        })
    }

    /// The cluster's topics changed: groups subscribed to them move to a new epoch.
    pub fn set_partitions(&mut self, partitions: BTreeMap<String, u32>, now_ms: i64) -> Vec<Write> {
        if partitions == self.partitions {
            return Vec::new();
        }
        self.partitions = partitions;
        let mut out = Vec::new();
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let e = self.groups.get_mut(&id).expect("listed");
            e.group.set_partitions(self.partitions.clone());
            out.extend(persist(&id, e, now_ms));
        }
        out
    }

    /// The assignor a joining member asks for, taken while the group has no members.
    pub fn set_assignor_if_empty(&mut self, group_id: &str, kind: super::state::AssignorKind) {
        if group_id.is_empty() {
            return;
        }
        let e = self.entry(group_id);
        if e.group.is_empty() {
            e.group.config.assignor = kind;
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        mut hb: Heartbeat,
        now: Instant,
        now_ms: i64,
        new_member_id: impl FnOnce() -> MemberId,
    ) -> (Result<HeartbeatReply, GroupError>, Vec<Write>) {
        if group_id.is_empty() {
            return (
                Err(GroupError::InvalidRequest("the group id is empty".into())),
                Vec::new(),
            );
        }
        if hb.member_epoch != 0 && !self.groups.contains_key(group_id) {
            return (Err(GroupError::UnknownMemberId), Vec::new());
        }
        let (lo, hi) = (
            self.config.min_session_timeout,
            self.config.max_session_timeout,
        );
        hb.session_timeout = hb.session_timeout.map(|t| t.clamp(lo, hi));
        let e = self.entry(group_id);
        let reply = e.group.heartbeat(hb, now, new_member_id);
        let writes = persist(group_id, e, now_ms).into_iter().collect();
        (reply, writes)
    }

    /// Commits offsets for `member_id` at `member_epoch`; an admin commit (empty member,
    /// epoch -1) is accepted only while the group has no members.
    pub fn commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(Tp, i64, String)>,
        now_ms: i64,
    ) -> Result<Vec<Write>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidRequest("the group id is empty".into()));
        }
        let members = self
            .groups
            .get(group_id)
            .map(|e| e.group.members())
            .unwrap_or_default();
        if member_id.is_empty() {
            if !members.is_empty() {
                return Err(GroupError::NonEmptyGroup);
            }
        } else {
            let (epoch, _) = members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
            if *epoch != member_epoch {
                return Err(GroupError::StaleMemberEpoch);
            }
        }
        if let Some((tp, _, m)) = offsets.iter().find(|(_, _, m)| m.len() > MAX_METADATA) {
            return Err(GroupError::InvalidRequest(format!(
                "metadata of {}-{} is {} bytes; at most {MAX_METADATA}",
                tp.0,
                tp.1,
                m.len()
            )));
        }
        if let Some((_, offset, _)) = offsets.iter().find(|(_, o, _)| *o < 0) {
            return Err(GroupError::InvalidRequest(format!(
                "offset {offset} is negative"
            )));
        }
        let e = self.entry(group_id);
        let mut out = Vec::with_capacity(offsets.len() + 1);
        for ((topic, partition), offset, metadata) in offsets {
            let c = Committed {
                offset,
                metadata,
                commit_ms: now_ms,
            };
            out.push(Write {
                key: key_bytes(&Key::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition,
                }),
                value: Some(serde_json::to_vec(&c).expect("serializes")),
            });
            e.offsets.insert((topic, partition), c);
        }
        // No group record: a commit changes no membership (an admin's commit into a
        // group that never had members starts its empty time).
        if e.group.is_empty() {
            e.empty_since_ms.get_or_insert(now_ms);
        }
        Ok(out)
    }

    /// Committed offsets of `group_id`: those asked for (`None` where nothing is
    /// committed), or every one when `only` is empty.
    pub fn fetch(&self, group_id: &str, only: &[Tp]) -> Vec<(Tp, Option<Committed>)> {
        let offsets = self.groups.get(group_id).map(|e| &e.offsets);
        if only.is_empty() {
            return offsets
                .into_iter()
                .flatten()
                .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                .collect();
        }
        only.iter()
            .map(|tp| (tp.clone(), offsets.and_then(|o| o.get(tp)).cloned()))
            .collect()
    }

    /// Fences silent members, and removes groups that have been empty past the offsets
    /// retention (with their offsets).
    pub fn tick(&mut self, now: Instant, now_ms: i64) -> (Vec<Write>, Vec<(String, MemberId)>) {
        let retention = self.config.offsets_retention.as_millis() as i64;
        let mut out = Vec::new();
        let mut fenced = Vec::new();
        let mut expired = Vec::new();
        for (id, e) in self.groups.iter_mut() {
            for m in e.group.tick(now) {
                fenced.push((id.clone(), m));
            }
            out.extend(persist(id, e, now_ms));
            if e.group.is_empty() {
                let last_commit = e.offsets.values().map(|c| c.commit_ms).max();
                let since = e.empty_since_ms.into_iter().chain(last_commit).max();
                if since.is_some_and(|s| now_ms - s >= retention) {
                    expired.push(id.clone());
                }
            }
        }
        for id in expired {
            out.extend(self.remove(&id));
        }
        (out, fenced)
    }

    /// Removes a group without members and its offsets.
    pub fn delete(&mut self, group_id: &str) -> Result<Vec<Write>, GroupError> {
        let e = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if !e.group.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        Ok(self.remove(group_id))
    }

    fn remove(&mut self, group_id: &str) -> Vec<Write> {
        let Some(e) = self.groups.remove(group_id) else {
            return Vec::new();
        };
        let mut out: Vec<Write> = e
            .offsets
            .into_keys()
            .map(|(topic, partition)| Write {
                key: key_bytes(&Key::Offset {
                    group: group_id.to_string(),
                    topic,
                    partition,
                }),
                value: None,
            })
            .collect();
        out.push(Write {
            key: key_bytes(&Key::Group {
                group: group_id.to_string(),
            }),
            value: None,
        });
        out
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn has_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// (group, state, members) of every group.
    pub fn list(&self) -> Vec<(String, &'static str, usize)> {
        self.groups
            .iter()
            .map(|(id, e)| (id.clone(), e.group.state(), e.group.members().len()))
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<Description> {
        let e = self.groups.get(group_id)?;
        Some(Description {
            group_id: group_id.to_string(),
            state: e.group.state(),
            group_epoch: e.group.epoch,
            assignment_epoch: e.group.target_epoch(),
            assignor: match e.group.config.assignor {
                super::state::AssignorKind::Uniform => "uniform",
                super::state::AssignorKind::Range => "range",
            },
            members: e.group.describe(),
            offsets: e.offsets.clone(),
        })
    }

    /// Every group's epoch (for metrics).
    pub fn epochs(&self) -> impl Iterator<Item = (String, i32)> + '_ {
        self.groups
            .iter()
            .map(|(id, e)| (id.clone(), e.group.epoch))
    }

    /// Members across every group (for metrics).
    pub fn member_count(&self) -> usize {
        self.groups.values().map(|e| e.group.members().len()).sum()
    }

    /// Topics any member of any group subscribes to or any group committed for.
    pub fn topics_of_interest(&self) -> BTreeSet<String> {
        self.groups
            .values()
            .flat_map(|e| {
                e.group
                    .subscribed_topics()
                    .into_iter()
                    .chain(e.offsets.keys().map(|(t, _)| t.clone()))
            })
            .collect()
    }
}

/// The group record, if what the log holds for `id` is out of date.
fn persist(id: &str, e: &mut Entry, now_ms: i64) -> Option<Write> {
    if e.group.is_empty() {
        e.empty_since_ms.get_or_insert(now_ms);
    } else {
        e.empty_since_ms = None;
    }
    if e.persisted.is_none() && e.group.is_empty() && e.group.epoch == 0 {
        // Never had a member (offsets committed by an admin): nothing to record.
        return None;
    }
    let value = GroupValue {
        snapshot: e.group.snapshot(),
        empty_since_ms: e.empty_since_ms,
    };
    if e.persisted.as_ref() == Some(&value) {
        return None;
    }
    let bytes = serde_json::to_vec(&value).expect("serializes");
    e.persisted = Some(value);
    Some(Write {
        key: key_bytes(&Key::Group {
            group: id.to_string(),
        }),
        value: Some(bytes),
    })
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
