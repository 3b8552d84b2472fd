//! The logs of one data directory, and the files that describe the directory as a
//! whole: the recovery-point checkpoint and the clean-shutdown marker.
//!
//! Open: if `.clean-shutdown` exists, every log's recovery point equals its end and no
//! log bytes are read; the marker is removed (and the removal fsynced) before anything
//! else so that a crash from here on is seen as one. Shutdown: close every log (flush,
//! trim indexes), write the checkpoint, then the marker. A partition that fails to open
//! is reported and left out; the others are served.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sluice_proto::TopicPartition;
use tracing::{error, info};

use super::checkpoint;
use super::error::{io_err, LogError};
use super::io_util::{fsync_dir, write_atomically};
use super::log::OpenHint;
use super::{Log, LogConfig};

const CLEAN_MARKER: &str = ".clean-shutdown";
const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";

#[derive(Debug)]
pub struct LogManager {
    dir: PathBuf,
    defaults: LogConfig,
    logs: Arc<LogMap>,
    /// Serializes checkpoint writes, which may come from truncating logs concurrently.
    checkpoint_lock: Arc<Mutex<()>>,
    /// Whether the previous process shut down cleanly.
    was_clean: bool,
}

type LogMap = RwLock<BTreeMap<TopicPartition, Arc<Log>>>;

/// Writes every log's flushed offset as its recovery point.
fn write_checkpoint(dir: &Path, logs: &LogMap, lock: &Mutex<()>) -> Result<(), LogError> {
    let _guard = lock.lock();
    let lines: Vec<String> = logs
        .read()
        .iter()
        .map(|(tp, log)| format!("{} {} {}", tp.topic, tp.partition, log.flushed_offset()))
        .collect();
    let path = dir.join(RECOVERY_CHECKPOINT);
    checkpoint::write(&path, &lines).map_err(io_err(&path))
}

fn read_recovery_points(path: &Path) -> HashMap<TopicPartition, u64> {
    let rows = match checkpoint::read(path) {
        Ok(rows) => rows.unwrap_or_default(),
        Err(e) => {
            // Untrusted checkpoint: recover every log from its start.
            error!(path = %path.display(), error = %e, "ignoring unreadable recovery checkpoint");
            return HashMap::new();
        }
    };
    rows.into_iter()
        .filter_map(|r| match r.as_slice() {
            [t, p, o] => Some((
                TopicPartition::new(t.clone(), p.parse().ok()?),
                o.parse().ok()?,
            )),
            _ => None,
        })
        .collect()
}

impl LogManager {
    /// Opens every partition directory under `dir`. Returns the manager and the
    /// partitions that could not be opened, each with its error.
    pub fn open(
        dir: impl Into<PathBuf>,
        defaults: LogConfig,
    ) -> Result<(LogManager, Vec<(TopicPartition, LogError)>), LogError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let marker = dir.join(CLEAN_MARKER);
        let was_clean = marker.exists();
        if was_clean {
            fs::remove_file(&marker).map_err(io_err(&marker))?;
            fsync_dir(&dir).map_err(io_err(&dir))?;
        }
        let points = read_recovery_points(&dir.join(RECOVERY_CHECKPOINT));
        let mut logs = BTreeMap::new();
        let mut failed = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let Some(tp) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(TopicPartition::parse_dir_name)
            else {
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            let hint = OpenHint {
                clean: was_clean,
                recovery_point: points.get(&tp).copied(),
            };
            match Log::open(path, tp.clone(), defaults.clone(), hint) {
                Ok(log) => {
                    logs.insert(tp, Arc::new(log));
                }
                Err(e) => {
                    error!(partition = %tp, error = %e, "partition log could not be opened; it stays offline");
                    failed.push((tp, e));
                }
            }
        }
        info!(dir = %dir.display(), logs = logs.len(), clean = was_clean, "opened data directory");
        let m = LogManager {
            dir,
            defaults,
            logs: Arc::new(RwLock::new(logs)),
            checkpoint_lock: Arc::new(Mutex::new(())),
            was_clean,
        };
        for log in m.all() {
            m.install_hook(&log);
        }
        Ok((m, failed))
    }

    fn install_hook(&self, log: &Log) {
        let (dir, lock) = (self.dir.clone(), self.checkpoint_lock.clone());
        let logs = Arc::downgrade(&self.logs);
        log.set_truncation_hook(Arc::new(move || match logs.upgrade() {
            Some(logs) => write_checkpoint(&dir, &logs, &lock),
            None => Ok(()),
        }));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn defaults(&self) -> &LogConfig {
        &self.defaults
    }
    /// Whether the previous process left a clean-shutdown marker.
    pub fn was_clean(&self) -> bool {
        self.was_clean
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Log>> {
        self.logs.read().get(tp).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Log>> {
        self.logs.read().values().cloned().collect()
    }

    /// The log for `tp`, created empty with `config` if it does not exist yet.
    pub fn get_or_create(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        let mut logs = self.logs.write();
        if let Some(log) = logs.get(tp) {
            return Ok(log.clone());
        }
        let path = self.dir.join(tp.dir_name());
        let log = Arc::new(Log::open(
            path,
            tp.clone(),
            config,
            OpenHint {
                clean: false,
                recovery_point: Some(0),
            },
        )?);
        fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.install_hook(&log);
        logs.insert(tp.clone(), log.clone());
        Ok(log)
    }

    /// Removes `tp`'s log and its files.
    pub fn delete(&self, tp: &TopicPartition) -> Result<bool, LogError> {
        let Some(log) = self.logs.write().remove(tp) else {
            return Ok(false);
        };
        log.delete()?;
        fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok(true)
    }

    /// Writes every log's flushed offset as its recovery point.
    pub fn checkpoint_recovery_points(&self) -> Result<(), LogError> {
        write_checkpoint(&self.dir, &self.logs, &self.checkpoint_lock)
    }

    /// Closes every log, writes the checkpoint, then the clean-shutdown marker. If any
    /// log fails to close, no marker is written and the next open recovers.
    pub fn shutdown(&self) -> Result<(), LogError> {
        let mut first_error = None;
        for log in self.all() {
            if log.offline_reason().is_some() {
                first_error.get_or_insert(LogError::Offline {
                    partition: log.topic_partition().to_string(),
                    reason: log.offline_reason().unwrap_or_default(),
                });
                continue;
            }
            if let Err(e) = log.close() {
                first_error.get_or_insert(e);
            }
        }
        self.checkpoint_recovery_points()?;
        if let Some(e) = first_error {
            return Err(e);
        }
        let marker = self.dir.join(CLEAN_MARKER);
        write_atomically(&marker, b"").map_err(io_err(&marker))
    }
}
