//! Lease and metadata stores (DESIGN §6). A controller candidate campaigns for the
//! lease; the holder gets a controller epoch that no other holder ever had, loads the
//! metadata snapshot, and from then on every write is conditional on still holding the
//! lease. A holder that loses the lease (or cannot write) resigns and campaigns again.
//!
//! - `embedded:DIR` ([`EmbeddedStore`]): flock lease + atomically renamed files.
//! - `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` ([`etcd::EtcdStore`], cargo feature
//!   `etcd`): an etcd lease kept alive at TTL/3, the leader key put only if absent, and
//!   metadata writes in transactions guarded by the leader key's create revision.

mod embedded;
#[cfg(feature = "etcd")]
mod etcd;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use embedded::EmbeddedStore;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdLeaseProbe, EtcdStore};

use crate::state::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("metadata store {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("unsupported store {0}: use embedded:DIR or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")]
    Unsupported(String),
    #[error(
        "store {0} needs etcd support: install protobuf-compiler and build with `cargo build --release --features etcd`"
    )]
    EtcdNotBuilt(String),
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("controller store: cannot write {path}: {source}")]
    Unusable { path: PathBuf, source: io::Error },
    #[error("the controller lease was lost; this controller no longer writes metadata")]
    LeaseLost,
    #[error("an earlier metadata write failed; this controller is resigning")]
    TermEnded,
}

/// Serializes a snapshot followed by a line with its CRC-32, so a torn or edited copy is
/// detected on load wherever it is stored.
pub(crate) fn encode_snapshot(snapshot: &Snapshot) -> String {
    let body = serde_json::to_string_pretty(snapshot).expect("snapshot serializes");
    format!("{body}\ncrc32 {}\n", crc32fast::hash(body.as_bytes()))
}

/// Inverse of [`encode_snapshot`]; `path` names where the text came from in errors.
pub(crate) fn decode_snapshot(text: &str, path: PathBuf) -> Result<Snapshot, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.clone(),
        reason: reason.into(),
    };
    let (body, crc_line) = text
        .trim_end()
        .rsplit_once('\n')
        .ok_or_else(|| corrupt("no checksum line"))?;
    let crc: u32 = crc_line
        .strip_prefix("crc32 ")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| corrupt("bad checksum line"))?;
    if crc32fast::hash(body.as_bytes()) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    serde_json::from_str(body).map_err(|e| corrupt(&e.to_string()))
}

/// One of the lease stores. An enum rather than a trait object: the set is closed and
/// the methods are async.
pub enum Store {
    Embedded(EmbeddedStore),
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdStore>),
}

/// Whether the lease a [`Store`] held when the probe was taken is lost.
#[derive(Clone)]
pub enum LeaseProbe {
    /// The embedded lease cannot be lost while the process lives.
    Embedded,
    #[cfg(feature = "etcd")]
    Etcd(etcd::EtcdLeaseProbe),
}

impl LeaseProbe {
    pub fn lease_lost(&self) -> bool {
        match self {
            LeaseProbe::Embedded => false,
            #[cfg(feature = "etcd")]
            LeaseProbe::Etcd(p) => p.lease_lost(),
        }
    }
}

impl Store {
    /// Parses a store spec without connecting to anything, so a bad spec fails at
    /// start-up rather than in the campaign.
    pub fn check_spec(spec: &str) -> Result<(), StoreError> {
        if let Some(dir) = spec.strip_prefix("embedded:") {
            return if dir.is_empty() {
                Err(StoreError::Unsupported(spec.into()))
            } else {
                Ok(())
            };
        }
        if spec.starts_with("etcd://") {
            #[cfg(feature = "etcd")]
            return etcd::EtcdSpec::parse(spec).map(|_| ());
            #[cfg(not(feature = "etcd"))]
            return Err(StoreError::EtcdNotBuilt(spec.into()));
        }
        Err(StoreError::Unsupported(spec.into()))
    }

    /// Checks at start-up what can never fix itself while the process runs: an
    /// embedded store's directory must be creatable and writable (it would otherwise
    /// retry the lease forever). An etcd store is checked by connecting, later: an
    /// unreachable etcd may come back.
    pub fn preflight(spec: &str) -> Result<(), StoreError> {
        Store::check_spec(spec)?;
        match spec.strip_prefix("embedded:") {
            Some(dir) => EmbeddedStore::check_usable(std::path::Path::new(dir)),
            None => Ok(()),
        }
    }

    /// Opens the store named by `spec`. `lease_ttl` applies to etcd (the embedded lease
    /// lives as long as the process).
    pub fn open(spec: &str, lease_ttl: Duration) -> Result<Store, StoreError> {
        Store::check_spec(spec)?;
        if spec.starts_with("embedded:") {
            return EmbeddedStore::from_spec(spec).map(Store::Embedded);
        }
        #[cfg(feature = "etcd")]
        return Ok(Store::Etcd(Box::new(EtcdStore::new(
            etcd::EtcdSpec::parse(spec)?,
            lease_ttl,
        ))));
        #[cfg(not(feature = "etcd"))]
        {
            let _ = lease_ttl;
            Err(StoreError::EtcdNotBuilt(spec.into()))
        }
    }

    /// Waits until `id` holds the lease, retrying every `retry`; returns the new
    /// controller epoch, greater than any earlier holder's.
    pub async fn acquire(&mut self, id: u32, retry: Duration) -> i64 {
        match self {
            Store::Embedded(s) => {
                let _ = id; // the flock needs no holder name
                s.acquire(retry).await
            }
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => s.acquire(id, retry).await,
        }
    }

    pub async fn load(&mut self) -> Result<Option<Snapshot>, StoreError> {
        match self {
            Store::Embedded(s) => s.load(),
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => s.load().await,
        }
    }

    /// Writes the snapshot if and only if this holder still has the lease.
    pub async fn save(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.save_blocking(snapshot).await,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => s.save(snapshot).await,
        }
    }

    /// Whether the lease is known to be lost (expired, revoked, or a guarded write
    /// failed). The embedded lease cannot be lost while the process lives.
    pub fn lease_lost(&self) -> bool {
        match self {
            Store::Embedded(_) => false,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => s.lease_lost(),
        }
    }

    /// A probe of [`Store::lease_lost`] for the lease held now, readable without the
    /// store (while a write is in flight).
    pub fn lease_probe(&self) -> LeaseProbe {
        match self {
            Store::Embedded(_) => LeaseProbe::Embedded,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => LeaseProbe::Etcd(s.lease_probe()),
        }
    }

    /// Gives the lease up (best effort), so that another candidate can win at once.
    pub async fn resign(&mut self) {
        match self {
            Store::Embedded(s) => s.release(),
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => s.resign().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_before_anything_connects() {
        assert!(Store::check_spec("embedded:/tmp/x").is_ok());
        for bad in ["embedded:", "zookeeper://a:1", "", "etcd:/a:1"] {
            assert!(
                matches!(Store::check_spec(bad), Err(StoreError::Unsupported(_))),
                "{bad:?} accepted"
            );
        }
        let etcd = Store::check_spec("etcd://127.0.0.1:2379");
        #[cfg(feature = "etcd")]
        assert!(etcd.is_ok());
        #[cfg(not(feature = "etcd"))]
        {
            let e = etcd.unwrap_err();
            assert!(matches!(e, StoreError::EtcdNotBuilt(_)));
            assert!(e.to_string().contains("--features etcd"), "{e}");
        }
    }

    /// Issue 18: the embedded store wrote (and fsynced) the whole snapshot on the
    /// async worker running the controller's writer, so a slow disk stalled every task
    /// of that worker — heartbeats included. Here the write cannot finish (its temp
    /// file is a FIFO nobody reads yet: `open` blocks as on a disk that does not answer)
    /// until another task on the same single-threaded runtime has run five timer ticks.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_metadata_write_does_not_stall_the_runtime() {
        let d = tempfile::tempdir().unwrap();
        let spec = format!("embedded:{}", d.path().display());
        let mut store = Store::open(&spec, Duration::from_secs(1)).unwrap();
        store.acquire(1, Duration::from_millis(10)).await;
        let fifo = d.path().join("metadata.tmp");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (ticked_tx, ticked_rx) = std::sync::mpsc::channel();
        let disk = std::thread::spawn(move || {
            let ticked = ticked_rx.recv_timeout(Duration::from_secs(5)).is_ok();
            // Answer the write either way, so the test ends.
            let mut written = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::open(&fifo).unwrap(), &mut written)
                .unwrap();
            (ticked, written.len())
        });
        let ticker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = ticked_tx.send(());
        });
        // Fails at the fsync (a FIFO has none); only the waiting matters here.
        let _ = store.save(&crate::state::Snapshot::default()).await;
        ticker.await.unwrap();
        let (ticked, written) = disk.join().unwrap();
        assert!(written > 0, "the snapshot reached the file");
        assert!(
            ticked,
            "the runtime stood still while the store wrote the snapshot"
        );
    }
}
