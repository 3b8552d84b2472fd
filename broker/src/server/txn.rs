//! The transaction coordinator's IO (docs/transactions.md). A transactional id lives
//! where a group of the same name would: on the leader of its `__consumer_offsets`
//! partition, in the same loaded [`Coordinator`] and written through the same writer
//! (acks=all) before a request is answered. Markers go from there to each partition's
//! leader: appended here when this broker leads, else through the leader's
//! `WriteTxnMarkers` gRPC call; a transaction completes once all are on the in-sync
//! replicas. Prepared transactions of a coordinator that failed over are found by the
//! next one when it loads, and their markers sent again (a marker for a transaction a
//! partition already closed changes nothing there).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1::admin_server::Admin as _;
use sluice_proto::{v1, ErrorCode, TopicPartition};
use tonic::Request;
use tracing::{debug, warn};

use super::groups::{
    coordinator_for, now_ms, partition_for, Failure, Loaded, Pending, OFFSETS_TOPIC,
};
use super::Shared;
use crate::group::assignor::Tp;
use crate::group::coordinator::NewOffset;
use crate::group::txn::{InitOutcome, MarkerJob, TxnMeta};
use crate::replica::txns::Marker;

/// How long a marker append waits for the in-sync replicas.
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before a transaction whose markers could not all be written is tried again.
const MARKER_RETRY: Duration = Duration::from_millis(250);

fn code_failure(code: ErrorCode, txn: &str) -> Failure {
    let msg = match code {
        ErrorCode::ProducerFenced => format!(
            "transactional id {txn}: another producer instance has a newer epoch (this one is fenced)"
        ),
        ErrorCode::InvalidProducerIdMapping => {
            format!("transactional id {txn} does not have this producer id")
        }
        ErrorCode::ConcurrentTransactions => {
            format!("transactional id {txn}: the previous transaction is still completing; retry")
        }
        ErrorCode::InvalidTxnState => {
            format!("transactional id {txn}: no transaction in a state that allows this")
        }
        ErrorCode::InvalidTransactionTimeout => {
            format!("transactional id {txn}: transaction timeout out of range")
        }
        other => format!("transactional id {txn}: {}", other.name()),
    };
    (code, msg)
}

async fn coordinator_of(shared: &Arc<Shared>, txn: &str) -> Result<Arc<Loaded>, Failure> {
    if txn.is_empty() {
        return Err((
            ErrorCode::InvalidRequest,
            "the transactional id is empty".into(),
        ));
    }
    coordinator_for(shared, txn).await
}

/// A producer id from the controller (the one it hands idempotent producers).
async fn fresh_producer_id(shared: &Arc<Shared>) -> Result<i64, Failure> {
    let resp = super::admin::AdminProxy(shared.clone())
        .init_producer_id(Request::new(v1::InitProducerIdRequest {}))
        .await
        .map_err(|s| (ErrorCode::CoordinatorNotAvailable, s.message().to_string()))?
        .into_inner();
    let result = resp.result.unwrap_or_default();
    if result.error_code != 0 {
        return Err((
            ErrorCode::from_code(result.error_code),
            result.error_message,
        ));
    }
    Ok(resp.producer_id)
}

/// InitProducerId with a transactional id: (producer id, epoch).
pub(crate) async fn init_producer_id(
    shared: &Arc<Shared>,
    txn: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), Failure> {
    let loaded = coordinator_of(shared, txn).await?;
    let needs_id = {
        let core = loaded.core.lock();
        core.txns
            .describe(txn)
            .is_none_or(|m| m.producer_epoch >= i16::MAX - 1)
    };
    let fresh = if needs_id {
        fresh_producer_id(shared).await?
    } else {
        -1
    };
    loaded
        .run(
            |core| match core.txns.init(txn, timeout_ms, expected, fresh, now_ms()) {
                Ok(InitOutcome::Ready {
                    producer_id,
                    producer_epoch,
                    writes,
                }) => (Ok((producer_id, producer_epoch)), writes),
                Ok(InitOutcome::Aborting { writes }) => (
                    Err(code_failure(ErrorCode::ConcurrentTransactions, txn)),
                    writes,
                ),
                Err(code) => (Err(code_failure(code, txn)), Vec::new()),
            },
        )
        .await
}

/// AddPartitionsToTxn (AddOffsetsToTxn passes the group's offsets partition).
pub(crate) async fn add_partitions(
    shared: &Arc<Shared>,
    txn: &str,
    producer_id: i64,
    epoch: i16,
    tps: Vec<Tp>,
) -> Result<(), Failure> {
    let loaded = coordinator_of(shared, txn).await?;
    loaded
        .run(|core| {
            match core
                .txns
                .add_partitions(txn, producer_id, epoch, &tps, now_ms())
            {
                Ok(writes) => (Ok(()), writes),
                Err(code) => (Err(code_failure(code, txn)), Vec::new()),
            }
        })
        .await
}

/// The `__consumer_offsets` partition of `group` (AddOffsetsToTxn).
pub(crate) fn offsets_partition_of(shared: &Shared, group: &str) -> Option<Tp> {
    let n = super::groups::offsets_partitions(shared)?;
    Some((OFFSETS_TOPIC.to_string(), partition_for(group, n)))
}

/// EndTxn: answered once the commit or abort is prepared (persisted); the markers
/// follow ([`send_due_markers`]).
pub(crate) async fn end_txn(
    shared: &Arc<Shared>,
    txn: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), Failure> {
    let loaded = coordinator_of(shared, txn).await?;
    let result = loaded
        .run(
            |core| match core.txns.end(txn, producer_id, epoch, commit, now_ms()) {
                Ok(writes) => (Ok(()), writes),
                Err(code) => (Err(code_failure(code, txn)), Vec::new()),
            },
        )
        .await;
    if result.is_ok() {
        send_due_markers(shared, &loaded);
    }
    result
}

/// TxnOffsetCommit, on the group's coordinator.
pub(crate) async fn txn_offset_commit(
    shared: &Arc<Shared>,
    group: &str,
    producer: (i64, i16),
    member_id: &str,
    generation: i32,
    offsets: Vec<NewOffset>,
) -> Result<(), Failure> {
    let loaded = coordinator_for(shared, group).await?;
    let groups = &shared.groups;
    loaded
        .run(|core| {
            let result = groups.admit(core, group).and_then(|()| {
                core.txn_commit(group, producer, member_id, generation, offsets, now_ms())
            });
            match result {
                Ok(writes) => (Ok(()), writes),
                Err(e) => (Err(super::groups_api::group_failure(e)), Vec::new()),
            }
        })
        .await
}

/// The partitions of `group` with a transactional commit awaiting its marker.
pub(crate) async fn pending_commits(
    shared: &Arc<Shared>,
    group: &str,
) -> Result<std::collections::BTreeSet<Tp>, Failure> {
    let loaded = coordinator_for(shared, group).await?;
    let pending = loaded.core.lock().pending_commits(group);
    Ok(pending)
}

/// DescribeTransactions: the id's state, or TRANSACTIONAL_ID_NOT_FOUND.
pub(crate) async fn describe(shared: &Arc<Shared>, txn: &str) -> Result<TxnMeta, Failure> {
    let loaded = coordinator_of(shared, txn).await?;
    let meta = loaded.core.lock().txns.describe(txn).cloned();
    meta.ok_or_else(|| {
        (
            ErrorCode::TransactionalIdNotFound,
            format!("transactional id {txn} is not known"),
        )
    })
}

/// ListTransactions: every transactional id this broker coordinates.
pub(crate) fn list(shared: &Arc<Shared>) -> Vec<(String, TxnMeta)> {
    let loaded: Vec<Arc<Loaded>> = shared.groups.loaded.lock().values().cloned().collect();
    let mut out = Vec::new();
    for l in loaded {
        let core = l.core.lock();
        out.extend(core.txns.list().map(|(id, m)| (id.clone(), m.clone())));
    }
    out
}

/// Appends the markers this broker leads the partitions of, each acks=all. A marker on
/// a `__consumer_offsets` partition also settles the transaction's pending offset
/// commits in that partition's loaded coordinator.
pub(crate) async fn write_markers_here(
    shared: &Arc<Shared>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    tps: Vec<TopicPartition>,
) -> Vec<(TopicPartition, Result<(), Failure>)> {
    let marker = if commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    let mut out = Vec::with_capacity(tps.len());
    for tp in tps {
        let (s, at) = (shared.clone(), tp.clone());
        let started = tokio::task::spawn_blocking(move || {
            s.replicas.start_marker(
                &at,
                producer_id,
                epoch,
                marker,
                coordinator_epoch,
                MARKER_TIMEOUT,
            )
        })
        .await
        .unwrap_or_else(|e| Err((ErrorCode::UnknownServerError, e.to_string())));
        let result = match started {
            Ok(started) => shared.replicas.finish_produce(started).await.map(|_| ()),
            Err(f) => Err(f),
        };
        if result.is_ok() && tp.topic == OFFSETS_TOPIC {
            let loaded = shared.groups.loaded.lock().get(&tp.partition).cloned();
            if let Some(l) = loaded {
                l.core
                    .lock()
                    .complete_txn(producer_id, epoch, commit, now_ms());
            }
        }
        out.push((tp, result));
    }
    out
}

/// Writes every marker of `job`: those of partitions led here directly, the others
/// through their leaders. A partition whose topic is gone needs none.
async fn write_job(shared: &Arc<Shared>, job: &MarkerJob, coordinator_epoch: i32) -> bool {
    let mut here = Vec::new();
    let mut remote: HashMap<String, Vec<TopicPartition>> = HashMap::new();
    {
        let md = shared.metadata.read();
        for (topic, partition) in &job.partitions {
            let Some(t) = md.topics.iter().find(|t| t.name == *topic) else {
                continue;
            };
            let Some(p) = t.partitions.iter().find(|p| p.partition == *partition) else {
                continue;
            };
            let tp = TopicPartition::new(topic.clone(), *partition);
            if p.leader < 0 {
                debug!(partition = %tp, "transaction marker waits for a leader");
                return false;
            }
            if p.leader as u32 == shared.config.id {
                here.push(tp);
            } else if let Some(b) = md.brokers.iter().find(|b| b.id == p.leader as u32) {
                remote.entry(b.addr.clone()).or_default().push(tp);
            } else {
                return false;
            }
        }
    }
    let mut ok = true;
    let epoch = job.producer_epoch;
    for (tp, r) in write_markers_here(
        shared,
        job.producer_id,
        epoch,
        job.commit,
        coordinator_epoch,
        here,
    )
    .await
    {
        if let Err((code, msg)) = r {
            debug!(partition = %tp, %code, msg, "transaction marker not written");
            ok = false;
        }
    }
    for (addr, tps) in remote {
        let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for tp in tps {
            by_topic.entry(tp.topic).or_default().push(tp.partition);
        }
        let req = v1::WriteTxnMarkersRequest {
            producer_id: job.producer_id,
            producer_epoch: i32::from(epoch),
            commit: job.commit,
            coordinator_epoch,
            partitions: by_topic
                .into_iter()
                .map(|(topic, partitions)| v1::TopicPartitions { topic, partitions })
                .collect(),
        };
        let answered = match super::admin::channel(&addr) {
            Ok(channel) => {
                let mut client = v1::broker_client::BrokerClient::new(channel);
                tokio::time::timeout(
                    MARKER_TIMEOUT + Duration::from_secs(2),
                    client.write_txn_markers(req),
                )
                .await
            }
            Err(_) => return false,
        };
        match answered {
            Ok(Ok(resp)) => {
                for p in resp.into_inner().partitions {
                    if p.error_code != 0 {
                        debug!(
                            topic = p.topic,
                            partition = p.partition,
                            code = p.error_code,
                            msg = p.error_message,
                            "transaction marker not written"
                        );
                        ok = false;
                    }
                }
            }
            _ => ok = false,
        }
    }
    ok
}

/// Starts writing the markers of every prepared transaction of `loaded` that nobody is
/// writing; each completes (or is tried again) in its own task.
pub(super) fn send_due_markers(shared: &Arc<Shared>, loaded: &Arc<Loaded>) {
    let jobs = loaded.core.lock().txns.due();
    let coordinator_epoch = loaded.leader_epoch.0 as i32;
    for job in jobs {
        let (shared, loaded) = (shared.clone(), loaded.clone());
        tokio::spawn(async move {
            let ok = write_job(&shared, &job, coordinator_epoch).await;
            if !ok {
                tokio::time::sleep(MARKER_RETRY).await;
                loaded.core.lock().txns.markers_failed(&job);
                return;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            {
                let mut core = loaded.core.lock();
                let writes = core.txns.markers_written(&job, now_ms());
                if writes.is_empty() {
                    return;
                }
                if loaded.tx.try_send(Pending { writes, done: tx }).is_err() {
                    loaded.failed.store(true, Ordering::Release);
                    return;
                }
            }
            if !matches!(rx.await, Ok(Ok(()))) {
                warn!(
                    transactional_id = job.transactional_id,
                    "could not record the transaction's completion; the next coordinator completes it"
                );
            }
        });
    }
}
