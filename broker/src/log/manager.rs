//! The logs of one data directory, and the files that describe the directory as a
//! whole: the recovery-point checkpoint and the clean-shutdown marker.
//!
//! Open: if `.clean-shutdown` exists, every log's recovery point equals its end and no
//! log bytes are read; the marker is removed (and the removal fsynced) before anything
//! else so that a crash from here on is seen as one. Shutdown: close every log (flush,
//! trim indexes), write the checkpoint, then the marker. A partition that fails to open
//! is reported and left out; the others are served.
//!
//! One process per directory: `open` first takes an exclusive `flock` on `DIR/.lock`
//! (the holder's pid inside) and keeps it for the manager's life. A second process on a
//! live directory is refused before it reads or writes anything — without this, its
//! recovery could truncate logs the first is appending to, and its clean shutdown would
//! leave `.clean-shutdown` and a checkpoint behind, so the first one's crash would later
//! be recovered as if clean. The kernel drops the lock when the holder dies, however it
//! dies: a kill -9 leaves no stale lock to clean up.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sluice_proto::TopicPartition;
use tracing::{error, info};

use super::checkpoint;
use super::error::{io_err, LogError};
use super::io_util::{fsync_dir, write_atomically};
use super::log::{OpenHint, DELETED_SUFFIX};
use super::{Log, LogConfig, TopicId};

const CLEAN_MARKER: &str = ".clean-shutdown";
const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Threads opening logs at start.
const OPEN_THREADS: usize = 8;
const LOCK_FILE: &str = ".lock";

/// An exclusive `flock` on `DIR/.lock`, held while this value lives. Only the lock
/// matters; the pid written into the file is there to name the holder in the refusal.
#[derive(Debug)]
pub struct DirLock {
    /// The open file description that holds the lock.
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, LogError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LogError::io(&path, e));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => "unknown".to_string(),
                p => p.to_string(),
            };
            return Err(LogError::DirInUse {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io_err(&path))?;
        Ok(DirLock { _file: file })
    }
}

#[derive(Debug)]
pub struct LogManager {
    dir: PathBuf,
    defaults: LogConfig,
    logs: Arc<LogMap>,
    /// Serializes checkpoint writes, which may come from truncating logs concurrently.
    checkpoint_lock: Arc<Mutex<()>>,
    /// Whether the previous process shut down cleanly.
    was_clean: bool,
    /// This process's exclusive claim on `dir`, released when the manager is dropped.
    _lock: DirLock,
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

/// Removes what is left of logs whose deletion a crash interrupted (see
/// [`Log::delete`]).
fn remove_deleted_dirs(dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let doomed = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(DELETED_SUFFIX));
        if doomed && path.is_dir() {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
            info!(dir = %path.display(), "removed the rest of a deleted log");
        }
    }
    Ok(())
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
        let lock = DirLock::acquire(&dir)?;
        let marker = dir.join(CLEAN_MARKER);
        let was_clean = marker.exists();
        if was_clean {
            fs::remove_file(&marker).map_err(io_err(&marker))?;
            fsync_dir(&dir).map_err(io_err(&dir))?;
        }
        remove_deleted_dirs(&dir)?;
        let points = read_recovery_points(&dir.join(RECOVERY_CHECKPOINT));
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let Some(tp) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(TopicPartition::parse_dir_name)
            else {
                continue;
            };
            if path.is_dir() {
                found.push((path, tp));
            }
        }
        // Opened by a few threads: each open is a handful of small reads, maps and (after
        // a crash) a scan, mostly waiting on the disk, and ten thousand of them one after
        // another took 30 s here.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let opened = Mutex::new((BTreeMap::new(), Vec::new()));
        let workers = found.len().clamp(1, OPEN_THREADS);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((path, tp)) = found.get(i) else {
                        return;
                    };
                    let hint = OpenHint {
                        clean: was_clean,
                        recovery_point: points.get(tp).copied(),
                    };
                    let result = Log::open(path.clone(), tp.clone(), defaults.clone(), hint);
                    let mut opened = opened.lock();
                    match result {
                        Ok(log) => {
                            opened.0.insert(tp.clone(), Arc::new(log));
                        }
                        Err(e) => {
                            error!(partition = %tp, error = %e, "partition log could not be opened; it stays offline");
                            opened.1.push((tp.clone(), e));
                        }
                    }
                });
            }
        });
        let (logs, failed) = opened.into_inner();
        info!(dir = %dir.display(), logs = logs.len(), clean = was_clean, "opened data directory");
        let m = LogManager {
            dir,
            defaults,
            logs: Arc::new(RwLock::new(logs)),
            checkpoint_lock: Arc::new(Mutex::new(())),
            was_clean,
            _lock: lock,
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

    /// Takes the exclusive lock `open` takes, for a process that keeps several data
    /// directories under `dir` (`sluice dev`) and must be refused before it starts
    /// anything. Do not call it on a directory this process will also `open`: the lock
    /// is per open file, so the process would refuse itself.
    pub fn lock_dir(dir: &Path) -> Result<DirLock, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        DirLock::acquire(dir)
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

    /// The log for `tp`, created empty with `config` if it does not exist yet. No
    /// topic identity is checked or recorded: see [`LogManager::get_or_create_for`].
    pub fn get_or_create(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        self.get_or_create_for(tp, config, None)
    }

    /// The log for `tp` of the topic `topic_id`. A log recorded as another topic's (one
    /// deleted while this copy missed it, then re-created under the same name) is
    /// deleted and replaced by an empty one; a log with no recorded id adopts
    /// `topic_id`; a new log records it before anything is written to it. With no
    /// `topic_id`, identity is not checked.
    pub fn get_or_create_for(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
        topic_id: Option<&TopicId>,
    ) -> Result<Arc<Log>, LogError> {
        if let Some(log) = self.get(tp) {
            if topic_id.is_none_or(|id| log.topic_id().as_ref() == Some(id)) {
                return Ok(log);
            }
        }
        let mut logs = self.logs.write();
        if let Some(log) = logs.get(tp).cloned() {
            match (topic_id, log.topic_id()) {
                (Some(want), Some(held)) if *want != held => {
                    info!(partition = %tp, old_topic_id = %held, topic_id = %want, "deleting the log of an earlier topic of the same name");
                    logs.remove(tp);
                    log.delete()?;
                }
                (Some(want), None) => {
                    log.set_topic_id(want)?;
                    info!(partition = %tp, topic_id = %want, "recorded the topic id of a log that had none");
                    return Ok(log);
                }
                _ => return Ok(log),
            }
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
        if let Some(id) = topic_id {
            log.set_topic_id(id)?;
        }
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

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_live_directory_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let (first, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        match LogManager::open(d.path(), LogConfig::default()) {
            Err(LogError::DirInUse { dir, pid }) => {
                assert_eq!(dir, d.path());
                assert_eq!(pid, std::process::id().to_string());
            }
            other => panic!("expected DirInUse, got {other:?}"),
        }
        assert!(matches!(
            LogManager::lock_dir(d.path()),
            Err(LogError::DirInUse { .. })
        ));
        first.shutdown().unwrap();
        drop(first);
        let (again, _) = LogManager::open(d.path(), LogConfig::default()).unwrap();
        assert!(again.was_clean(), "the refused opens touched nothing");
    }
}
