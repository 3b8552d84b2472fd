//! Topic identity on disk (as Kafka's KIP-516 `partition.metadata`): which topic a
//! partition directory belongs to, so that a topic deleted and re-created under the
//! same name is never served from the old one's files.
//!
//! A directory is named `<topic>-<partition>`; the name alone cannot tell two topics of
//! the same name apart. The controller gives every topic a random id at creation and
//! sends it with every LeaderAndIsr; the directory records it in `partition.metadata`:
//!
//! ```text
//! version: 0
//! topic_id: 6f1c0d2e9b8a4c3d2e1f0a9b8c7d6e5f
//! ```
//!
//! Written once, when the log is created for a role (or adopted by a directory made
//! before ids were recorded), through write-fsync-rename-fsync, so a crash leaves the
//! file whole or absent. Read and checked when the log is opened: an unreadable file
//! keeps the partition offline (its identity is unknown, so serving it could serve
//! another topic's records). A role whose id differs from the recorded one means the
//! topic was deleted and re-created while this copy missed it: the old log is deleted
//! and a fresh one created (`LogManager::get_or_create_for`).

use std::fmt;
use std::fs;
use std::path::Path;

use super::error::{io_err, LogError};
use super::io_util::write_atomically;

pub(crate) const PARTITION_METADATA_FILE: &str = "partition.metadata";
const VERSION: &str = "0";
/// Longer ids are refused: the controller's are 32 hex digits.
const TOPIC_ID_CHARS_MAX: usize = 64;

/// A topic's id as the controller assigned it.
/// Invariant: 1..=64 ASCII letters, digits, `-` or `_` (safe on one line of a file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicId(String);

impl TopicId {
    /// `None` for an empty or malformed id (a controller that sends none: identity
    /// is then not checked).
    pub fn parse(s: &str) -> Option<TopicId> {
        let ok = !s.is_empty()
            && s.len() <= TOPIC_ID_CHARS_MAX
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| TopicId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id recorded in `dir`, `None` when there is no file (a directory made before
/// ids were recorded, or a crash between creating the directory and writing it).
pub(crate) fn read(dir: &Path) -> Result<Option<TopicId>, LogError> {
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.clone(),
        position: 0,
        reason: format!(
            "{reason}; expected \"version: 0\" and \"topic_id: ID\" lines. Restore the \
             file, or delete the partition directory to have it re-replicated"
        ),
    };
    let (mut version, mut id) = (None, None);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("version", v)) => version = Some(v),
            Some(("topic_id", v)) => id = Some(v),
            _ => return Err(corrupt("unreadable line")),
        }
    }
    if version != Some(VERSION) {
        return Err(corrupt("unknown version"));
    }
    match id.map(TopicId::parse) {
        Some(Some(id)) => Ok(Some(id)),
        _ => Err(corrupt("missing or malformed topic id")),
    }
}

/// Records `id` in `dir`, atomically and durably.
pub(crate) fn write(dir: &Path, id: &TopicId) -> Result<(), LogError> {
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = format!("version: {VERSION}\ntopic_id: {id}\n");
    write_atomically(&path, text.as_bytes()).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None, "no file: no recorded id");
        let id = TopicId::parse("6f1c0d2e9b8a4c3d2e1f0a9b8c7d6e5f").unwrap();
        write(d.path(), &id).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(id));
        let path = d.path().join(PARTITION_METADATA_FILE);
        for bad in [
            "",
            "version: 1\ntopic_id: abc\n",
            "version: 0\n",
            "version: 0\ntopic_id: a b\n",
            "garbage",
        ] {
            fs::write(&path, bad).unwrap();
            assert!(
                matches!(read(d.path()), Err(LogError::Corrupt { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn ids_are_one_safe_word() {
        assert!(TopicId::parse("").is_none());
        assert!(TopicId::parse("a\nb").is_none());
        assert!(TopicId::parse(&"a".repeat(65)).is_none());
        assert!(TopicId::parse("AbC-09_x").is_some());
    }
}

#[cfg(test)]
mod manager_tests {
    use sluice_proto::TopicPartition;

    use super::*;
    use crate::log::{LogConfig, LogManager};

    #[test]
    fn an_unreadable_identity_keeps_the_partition_offline() {
        let d = tempfile::tempdir().unwrap();
        let tp = TopicPartition::new("t", 0);
        {
            let (logs, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
            logs.get_or_create_for(&tp, LogConfig::default(), TopicId::parse("ab").as_ref())
                .unwrap();
        }
        fs::write(d.path().join("t-0").join(PARTITION_METADATA_FILE), "junk").unwrap();
        let (logs, failed) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        assert!(logs.get(&tp).is_none());
        assert!(
            matches!(failed.as_slice(), [(p, LogError::Corrupt { .. })] if *p == tp),
            "{failed:?}"
        );
    }

    #[test]
    fn a_deletion_cut_short_by_a_crash_is_finished_at_open() {
        let d = tempfile::tempdir().unwrap();
        let doomed = d.path().join("t-0.12345.deleted");
        fs::create_dir_all(&doomed).unwrap();
        fs::write(doomed.join("00000000000000000000.log"), b"old bytes").unwrap();
        let (logs, failed) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        assert!(failed.is_empty() && logs.all().is_empty());
        assert!(!doomed.exists());
    }
}
