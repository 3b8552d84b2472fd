//! The embedded lease and metadata store (`embedded:DIR`): no external service.
//!
//! - Lease: an exclusive `flock` on `DIR/controller.lock`, held for the life of the
//!   process and released by the kernel when it dies, however it dies. Several
//!   controller processes on one machine share DIR; the one holding the lock is active.
//! - Controller epoch: `DIR/controller-epoch`, incremented by each new holder before it
//!   acts, so every epoch is used by at most one controller.
//! - Metadata: `DIR/metadata.json`, a [`Snapshot`] followed by a line with its CRC-32;
//!   written by write-fsync-rename, so a reader sees a whole snapshot or the previous.
//!
//! Writes happen only while the lock is held (`bump_epoch` and `save` check it), so
//! sharing DIR is safe: a standby — or any second process pointed at DIR by mistake —
//! only creates DIR and opens the lock file, and reads. That is why DIR gets no
//! exclusive process lock of its own, unlike a broker's data directory: standbys must be
//! able to share it. The holder writes its pid into `controller.lock` (informational:
//! which process is active).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::error;

use super::{decode_snapshot, encode_snapshot, StoreError};
use crate::state::Snapshot;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

pub struct EmbeddedStore {
    dir: PathBuf,
    /// Holds the flock while `Some`.
    lock: Option<File>,
}

impl EmbeddedStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<EmbeddedStore, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(EmbeddedStore { dir, lock: None })
    }

    /// Whether DIR can be created and written, without writing anything a standby may
    /// not write: creates DIR and the lock file (what any candidate does) and asks the
    /// kernel whether DIR is writable (`access(2)`, which also sees read-only mounts and
    /// immutable directories, even for root).
    pub fn check_usable(dir: &Path) -> Result<(), StoreError> {
        let unusable = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Unusable { path, source }
        };
        fs::create_dir_all(dir).map_err(unusable(dir))?;
        let lock = dir.join("controller.lock");
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(unusable(&lock))?;
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|e| unusable(dir)(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: access(2) on a NUL-terminated path we own.
        if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
            return Err(unusable(dir)(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Parses `embedded:DIR`.
    pub fn from_spec(spec: &str) -> Result<EmbeddedStore, StoreError> {
        match spec.strip_prefix("embedded:") {
            Some(dir) if !dir.is_empty() => EmbeddedStore::open(dir),
            _ => Err(StoreError::Unsupported(spec.to_string())),
        }
    }

    /// Tries to take the lease without blocking; `true` once held.
    pub fn try_acquire(&mut self) -> Result<bool, StoreError> {
        if self.lock.is_some() {
            return Ok(true);
        }
        let path = self.dir.join("controller.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            let mut f = f;
            f.set_len(0)
                .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
                .map_err(io_err(&path))?;
            self.lock = Some(f);
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(StoreError::Io { path, source: e })
        }
    }

    /// Increments and returns the controller epoch. Call once per lease acquisition.
    pub fn bump_epoch(&self) -> Result<i64, StoreError> {
        if self.lock.is_none() {
            return Err(StoreError::LeaseLost);
        }
        let path = self.dir.join("controller-epoch");
        let current = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|_| StoreError::Corrupt {
                path: path.clone(),
                reason: "not a number".into(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let next = current + 1;
        write_atomically(&path, next.to_string().as_bytes())?;
        Ok(next)
    }

    pub fn load(&self) -> Result<Option<Snapshot>, StoreError> {
        let path = self.dir.join("metadata.json");
        match fs::read_to_string(&path) {
            Ok(text) => decode_snapshot(&text, path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    pub fn save(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        if self.lock.is_none() {
            return Err(StoreError::LeaseLost);
        }
        let text = encode_snapshot(snapshot);
        write_atomically(&self.dir.join("metadata.json"), text.as_bytes())
    }

    /// [`EmbeddedStore::save`] on a blocking thread: encoding and writing a whole
    /// snapshot (fsync of the file and the directory) must not hold an async worker,
    /// which also serves the controller's heartbeats and RPCs.
    pub async fn save_blocking(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        if self.lock.is_none() {
            return Err(StoreError::LeaseLost);
        }
        let (path, snapshot) = (self.dir.join("metadata.json"), snapshot.clone());
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, encode_snapshot(&snapshot).as_bytes())
        })
        .await
        .map_err(|e| StoreError::Io {
            path: self.dir.join("metadata.json"),
            source: io::Error::other(e.to_string()),
        })?
    }

    /// Polls for the lock every `retry` until held, then takes the next epoch. Errors
    /// (an unwritable DIR, say) are logged and retried: a standby stays a standby.
    pub async fn acquire(&mut self, retry: Duration) -> i64 {
        loop {
            match self.try_acquire().and_then(|held| {
                if held {
                    self.bump_epoch().map(Some)
                } else {
                    Ok(None)
                }
            }) {
                Ok(Some(epoch)) => return epoch,
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, "lease attempt failed");
                    self.release();
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Drops the lock; another process can take the lease.
    pub fn release(&mut self) {
        self.lock = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_holder_and_epochs_increase() {
        let d = tempfile::tempdir().unwrap();
        let mut a = EmbeddedStore::open(d.path()).unwrap();
        let mut b = EmbeddedStore::open(d.path()).unwrap();
        assert!(a.try_acquire().unwrap());
        assert!(
            !b.try_acquire().unwrap(),
            "flock is per open file description"
        );
        assert_eq!(a.bump_epoch().unwrap(), 1);
        let holder = fs::read_to_string(d.path().join("controller.lock")).unwrap();
        assert_eq!(holder.trim(), std::process::id().to_string());
        // A standby's failed attempt leaves the holder's files alone.
        assert!(!b.try_acquire().unwrap());
        assert!(matches!(
            b.save(&Snapshot::default()),
            Err(StoreError::LeaseLost)
        ));
        assert!(matches!(b.bump_epoch(), Err(StoreError::LeaseLost)));
        drop(a);
        assert!(b.try_acquire().unwrap());
        assert_eq!(b.bump_epoch().unwrap(), 2);
    }

    #[test]
    fn snapshots_round_trip_and_corruption_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let mut s = EmbeddedStore::open(d.path()).unwrap();
        s.try_acquire().unwrap();
        assert!(s.load().unwrap().is_none());
        let snap = Snapshot {
            next_broker_epoch: 7,
            ..Snapshot::default()
        };
        s.save(&snap).unwrap();
        assert_eq!(s.load().unwrap().unwrap().next_broker_epoch, 7);
        let p = d.path().join("metadata.json");
        let text = fs::read_to_string(&p).unwrap().replace('7', "8");
        fs::write(&p, text).unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            EmbeddedStore::from_spec("etcd://x:1"),
            Err(StoreError::Unsupported(_))
        ));
        s.release();
        assert!(matches!(s.save(&snap), Err(StoreError::LeaseLost)));
    }
}
