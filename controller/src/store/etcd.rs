//! The etcd lease store (`etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`), for controllers on
//! several machines.
//!
//! - Lease: a candidate grants an etcd lease of the configured TTL and puts
//!   `/PREFIX/controller` bound to it only if the key is absent (`create_revision == 0`).
//!   The winner keeps the lease alive every TTL/3. When the holder dies, or stops (SIGSTOP)
//!   for longer than the TTL, etcd deletes the key and a standby wins.
//! - Controller epoch: the revision at which the winner created the key. etcd revisions
//!   only grow, so every holder's epoch is greater than every earlier holder's.
//! - Metadata: `/PREFIX/metadata`, the same CRC-checked snapshot text as the embedded
//!   store, written in a transaction that succeeds only while the leader key still has
//!   the holder's create revision. A deposed holder that wakes up can write nothing.
//! - The holder also counts the lease down locally from each keep-alive it *sent*; once
//!   that runs out it treats the lease as lost, even before etcd says so.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use tracing::{info, warn};

use super::{decode_snapshot, encode_snapshot, StoreError};
use crate::state::Snapshot;

/// A parsed `etcd://` spec.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EtcdSpec {
    endpoints: Vec<String>,
    prefix: String,
}

impl EtcdSpec {
    pub(crate) fn parse(spec: &str) -> Result<EtcdSpec, StoreError> {
        let bad = |why: &str| StoreError::Unsupported(format!("{spec} ({why})"));
        let rest = spec
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("must start with etcd://"))?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { "sluice" } else { prefix };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad("each endpoint is HOST:PORT"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("each endpoint is HOST:PORT"));
            }
            endpoints.push(format!("http://{host}"));
        }
        Ok(EtcdSpec {
            endpoints,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("/{}/{name}", self.prefix)
    }
}

fn etcd_err(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e.to_string())
}

/// Runs one etcd call with a deadline, so a dead etcd cannot hang the controller.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(etcd_err),
        Err(_) => Err(StoreError::Etcd(format!(
            "{what} timed out after {limit:?}"
        ))),
    }
}

/// The lease while held.
struct Held {
    lease_id: i64,
    /// Revision of the leader key's creation: the controller epoch, and the guard of
    /// every metadata write.
    create_revision: i64,
    lost: Arc<AtomicBool>,
    /// When the lease runs out unless renewed, counted from the last renewal sent.
    expires: Arc<Mutex<Instant>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Whether the lease held when it was taken is lost; `None` inside: none was held.
#[derive(Clone)]
pub struct EtcdLeaseProbe(Option<(Arc<AtomicBool>, Arc<Mutex<Instant>>)>);

impl EtcdLeaseProbe {
    pub fn lease_lost(&self) -> bool {
        match &self.0 {
            None => true,
            Some((lost, expires)) => {
                lost.load(Ordering::Acquire)
                    || Instant::now() >= *expires.lock().unwrap_or_else(|p| p.into_inner())
            }
        }
    }
}

pub struct EtcdStore {
    spec: EtcdSpec,
    ttl: Duration,
    /// The member calls go to; the next one is tried when a call fails.
    member: usize,
    client: Option<Client>,
    held: Option<Held>,
}

/// A client talking to one member. One member at a time, not etcd-client's balanced
/// channel: that one hands a request to a dead member and returns its connection error,
/// where the store wants to move on to a live one.
async fn connect(endpoint: &str, limit: Duration) -> Result<Client, StoreError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_keep_alive(Duration::from_millis(500), Duration::from_secs(1));
    bounded(
        limit,
        "connecting to etcd",
        Client::connect([endpoint], Some(options)),
    )
    .await
}

impl EtcdStore {
    pub(crate) fn new(spec: EtcdSpec, ttl: Duration) -> EtcdStore {
        EtcdStore {
            spec,
            ttl: ttl.max(Duration::from_secs(1)),
            member: 0,
            client: None,
            held: None,
        }
    }

    /// Per-call deadline: one TTL, so a call cannot outlive the lease it guards.
    fn op_timeout(&self) -> Duration {
        self.ttl
    }

    async fn client(&mut self) -> Result<Client, StoreError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = connect(&self.spec.endpoints[self.member], self.op_timeout()).await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the current member, moving to the next member after a failure,
    /// until one answers or each has failed once. Every call the store makes is safe to
    /// repeat: reads, lease grants and revokes, and transactions guarded by a compare.
    async fn call<T, F, Fut>(&mut self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = StoreError::Etcd(format!("{what}: no etcd endpoint"));
        for _ in 0..self.spec.endpoints.len() {
            let attempt = match self.client().await {
                Ok(c) => bounded(self.op_timeout(), what, op(c)).await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) => {
                    last = e;
                    self.client = None;
                    self.member = (self.member + 1) % self.spec.endpoints.len();
                }
            }
        }
        Err(last)
    }

    pub async fn acquire(&mut self, id: u32, retry: Duration) -> i64 {
        self.held = None;
        let mut last_error = String::new();
        loop {
            match self.try_acquire(id).await {
                Ok(Some(epoch)) => return epoch,
                Ok(None) => last_error.clear(),
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        warn!(error = %text, "etcd lease attempt failed; retrying");
                        last_error = text;
                    }
                    self.client = None;
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    async fn try_acquire(&mut self, id: u32) -> Result<Option<i64>, StoreError> {
        let key = self.spec.key("controller");
        // Look before granting, so standbys do not create a lease per retry.
        let current = self
            .call("reading the leader key", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        if !current.kvs().is_empty() {
            return Ok(None);
        }
        let ttl_secs = self.ttl.as_millis().div_ceil(1000) as i64;
        let granted_at = Instant::now();
        let lease_id = self
            .call("granting a lease", |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?
            .id();
        let resp = self
            .call("putting the leader key", |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        id.to_string(),
                        Some(PutOptions::new().with_lease(lease_id)),
                    )]);
                async move { c.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            let _ = self
                .call("revoking a lease", |mut c| async move {
                    c.lease_revoke(lease_id).await
                })
                .await;
            return Ok(None);
        }
        let create_revision = resp
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Etcd("transaction answer without a header".into()))?;
        let lost = Arc::new(AtomicBool::new(false));
        let expires = Arc::new(Mutex::new(granted_at + self.ttl));
        let keeper = tokio::spawn(keep_alive(
            self.spec.endpoints.clone(),
            self.member,
            lease_id,
            self.ttl,
            lost.clone(),
            expires.clone(),
        ));
        info!(
            lease = lease_id,
            create_revision, "holding the etcd controller key"
        );
        self.held = Some(Held {
            lease_id,
            create_revision,
            lost,
            expires,
            keeper,
        });
        Ok(Some(create_revision))
    }

    pub fn lease_lost(&self) -> bool {
        self.lease_probe().lease_lost()
    }

    /// What [`EtcdStore::lease_lost`] reads, shareable with tasks that must not wait
    /// for the store (a write may be in flight).
    pub fn lease_probe(&self) -> EtcdLeaseProbe {
        EtcdLeaseProbe(
            self.held
                .as_ref()
                .map(|h| (h.lost.clone(), h.expires.clone())),
        )
    }

    pub async fn load(&mut self) -> Result<Option<Snapshot>, StoreError> {
        let key = self.spec.key("metadata");
        let resp = self
            .call("reading metadata", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let origin = PathBuf::from(format!("etcd:{key}"));
        let text = std::str::from_utf8(kv.value()).map_err(|_| StoreError::Corrupt {
            path: origin.clone(),
            reason: "not UTF-8".into(),
        })?;
        decode_snapshot(text, origin).map(Some)
    }

    pub async fn save(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        if self.lease_lost() {
            return Err(StoreError::LeaseLost);
        }
        let Some(create_revision) = self.held.as_ref().map(|h| h.create_revision) else {
            return Err(StoreError::LeaseLost);
        };
        let (leader_key, metadata_key) = (self.spec.key("controller"), self.spec.key("metadata"));
        let text = encode_snapshot(snapshot);
        let resp = self
            .call("writing metadata", |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        leader_key.as_str(),
                        CompareOp::Equal,
                        create_revision,
                    )])
                    .and_then([TxnOp::put(metadata_key.as_str(), text.as_str(), None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            Ok(())
        } else {
            if let Some(h) = &self.held {
                h.lost.store(true, Ordering::Release);
            }
            Err(StoreError::LeaseLost)
        }
    }

    pub async fn resign(&mut self) {
        if let Some(h) = self.held.take() {
            let _ = self
                .call("revoking the lease", |mut c| async move {
                    c.lease_revoke(h.lease_id).await
                })
                .await;
        }
    }
}

/// Renews the lease every TTL/3 until it is lost, recording the local expiry. A member
/// that fails a renewal is left for the next one.
async fn keep_alive(
    endpoints: Vec<String>,
    mut member: usize,
    lease_id: i64,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    expires: Arc<Mutex<Instant>>,
) {
    let period = ttl / 3;
    let mut channel = None;
    loop {
        let deadline = *expires.lock().unwrap_or_else(|p| p.into_inner());
        if Instant::now() >= deadline {
            warn!(
                lease = lease_id,
                "controller lease expired before it could be renewed"
            );
            lost.store(true, Ordering::Release);
            return;
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout(period, async {
            if channel.is_none() {
                let mut client = connect(&endpoints[member], period)
                    .await
                    .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
                channel = Some(client.lease_keep_alive(lease_id).await?);
            }
            let (keeper, stream) = channel.as_mut().expect("opened above");
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                let granted = Duration::from_secs(resp.ttl() as u64);
                *expires.lock().unwrap_or_else(|p| p.into_inner()) = sent + granted.min(ttl);
            }
            Ok(Ok(Some(_))) => {
                warn!(lease = lease_id, "etcd says the controller lease is gone");
                lost.store(true, Ordering::Release);
                return;
            }
            // A broken stream, a dead member or a slow answer: try the next member at
            // once, until the lease runs out.
            _ => {
                channel = None;
                member = (member + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        tokio::time::sleep_until((sent + period).into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = EtcdSpec::parse("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(s.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(s.key("controller"), "/sluice/controller");
        let s = EtcdSpec::parse("etcd://a:1,b:2/prod/east/").unwrap();
        assert_eq!(s.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(s.key("metadata"), "/prod/east/metadata");
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://h:notaport",
            "etcd://:1",
            "etcd://a:1,",
        ] {
            assert!(EtcdSpec::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
