//! Errors of the storage layer. Each carries the path or offsets needed to act on it.

use std::io;
use std::path::{Path, PathBuf};

use sluice_proto::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk full while writing {path}; the append was rolled back and the log is unchanged")]
    DiskFull { path: PathBuf },
    #[error("permission denied on {path}: {source}")]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "offset {requested} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        requested: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    #[error("batch of {size} bytes exceeds max.message.bytes={max}")]
    RecordTooLarge { size: usize, max: usize },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch base offset {base_offset} is below the log end offset {log_end_offset}")]
    NonMonotonicOffset {
        base_offset: i64,
        log_end_offset: u64,
    },
    /// A batch whose CRC holds but whose header cannot be stored (a negative base
    /// offset or last offset delta): refused, the log unchanged.
    #[error("batch at base offset {base_offset} has an impossible header: {reason}")]
    BadHeader { base_offset: i64, reason: String },
    #[error("partition {partition} is offline after an earlier error: {reason}")]
    Offline { partition: String, reason: String },
    /// One batch has more new keys than `log.cleaner.dedupe.buffer.size` can map.
    #[error("a batch holds {keys} new keys, more than the cleaner's dedupe buffer can map; raise log.cleaner.dedupe.buffer.size")]
    CleanerBufferTooSmall { keys: usize },
    /// Another process holds the data directory's lock (see `LogManager::lock_dir`).
    #[error("data dir {dir} is in use by another sluice (pid {pid}); stop that one first, or use another data directory")]
    DirInUse { dir: PathBuf, pid: String },
}

impl LogError {
    /// Maps an I/O error on `path` to the variant an operator acts on.
    pub(crate) fn io(path: &Path, source: io::Error) -> LogError {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => LogError::DiskFull { path },
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                LogError::PermissionDenied { path, source }
            }
            _ => LogError::Io { path, source },
        }
    }

    /// Errors after which the log's in-memory state may no longer match its files.
    pub(crate) fn takes_log_offline(&self) -> bool {
        matches!(self, LogError::Corrupt { .. } | LogError::Io { .. })
    }
}

/// `map_err` helper: `.map_err(io_err(&path))`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |e| LogError::io(path, e)
}
