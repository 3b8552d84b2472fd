//! Opening a table set: check the topics, capture every partition's log start and
//! high watermark (the bootstrap target), load a usable local snapshot, pre-size the
//! stores, then spawn one fetch task per partition and the applier. Runs on the
//! caller's task; everything after it runs in the background.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_proto::{v1, ErrorCode};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tracing::{info, warn};

use super::applier::Applier;
use super::fetch::{decode, Fetcher, PERMIT_BYTES};
use super::raw::{Readiness, SetShared, TopicShared};
use super::snapshot;
use super::source::SourceState;
use super::store::Store;
use super::txn::{Assembler, Tp};
use super::TableConfig;
use crate::cluster::Cluster;
use crate::{Admin, ClientConfig, Error};

/// Default `delete.retention.ms` (Kafka's): a snapshot older than a topic's
/// tombstone lifetime may have missed deletes.
const DELETE_RETENTION_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// Bytes read from one partition at open to estimate the record size.
const SAMPLE_BYTES: u32 = 256 * 1024;
/// Pre-sizing never assumes more rows than this (a bad estimate must not allocate
/// gigabytes up front).
const ROWS_HINT_MAX: usize = 50_000_000;

/// One partition's offsets at open.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    log_start_offset: u64,
    high_watermark: u64,
}

#[derive(Clone)]
struct TopicPlan {
    topic: String,
    topic_id: String,
    offsets: Vec<(u32, Offsets)>,
    delete_retention_ms: u64,
}

pub(crate) async fn start(
    client: &ClientConfig,
    topics: &[String],
    config: TableConfig,
    snapshot_dir: Option<&Path>,
) -> Result<Arc<SetShared>, Error> {
    config.validate()?;
    if topics.is_empty() {
        return Err(Error::Invalid(
            "a table set needs at least one topic".into(),
        ));
    }
    for (i, t) in topics.iter().enumerate() {
        if topics[..i].contains(t) {
            return Err(Error::Invalid(format!("topic {t} given twice")));
        }
    }
    let opened_at = Instant::now();
    let cluster = Cluster::new(client);
    let admin = Admin::new(client);
    let mut plans = Vec::new();
    for topic in topics {
        plans.push(plan_topic(&cluster, &admin, topic).await?);
    }
    let mut starts: Vec<(Tp, u64)> = Vec::new();
    let mut shared_topics = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        shared_topics
            .push(open_topic(&cluster, plan, i, &config, snapshot_dir, &mut starts).await?);
    }
    let partitions: Vec<usize> = plans.iter().map(|p| p.offsets.len()).collect();
    let shared = Arc::new(SetShared {
        topics: shared_topics,
        source: watch::channel(SourceState::new(partitions)).0,
        readiness: watch::channel(Readiness::Bootstrapping).0,
        opened_at,
        bootstrap_ms: OnceLock::new(),
        shutdown: watch::channel(false).0,
        finished: watch::channel(false).0,
        apply_lock_max_us: Default::default(),
        snapshot_dir: snapshot_dir.map(Path::to_path_buf),
        apply_chunk_records: config.apply_chunk_records,
        large_unit_records: config.large_unit_records.max(config.apply_chunk_records),
    });
    spawn_tasks(&shared, &cluster, &plans, starts, &config);
    Ok(shared)
}

/// One topic's shared state: a usable snapshot loaded (off the runtime threads), the
/// store pre-sized, positions at the snapshot's or the log start; `starts` gets
/// where each partition's fetcher begins.
async fn open_topic(
    cluster: &Cluster,
    plan: &TopicPlan,
    i: usize,
    config: &TableConfig,
    snapshot_dir: Option<&Path>,
    starts: &mut Vec<(Tp, u64)>,
) -> Result<Arc<TopicShared>, Error> {
    let loaded = match snapshot_dir {
        Some(dir) => read_snapshot(dir, plan, config.row_images).await,
        None => None,
    };
    let mut store = presized_store(cluster, plan, config, loaded.as_ref()).await;
    let mut position = BTreeMap::new();
    for (p, o) in &plan.offsets {
        let from = loaded
            .as_ref()
            .and_then(|l| l.position.get(p).copied())
            .unwrap_or(o.log_start_offset);
        position.insert(*p, from);
        starts.push(((i, *p), from));
    }
    let snapshot_rows = loaded.as_ref().map(|l| l.rows as usize);
    if let Some(l) = loaded {
        // The file's bytes are dropped once its rows are in the store.
        store = tokio::task::spawn_blocking(move || load_rows(&store, &l).map(|()| store))
            .await
            .map_err(|e| Error::Invalid(format!("loading a table snapshot failed: {e}")))??;
    }
    Ok(Arc::new(TopicShared {
        topic: plan.topic.clone(),
        topic_id: plan.topic_id.clone(),
        store,
        snapshot_rows,
        position: watch::channel(position).0,
        changes: broadcast::channel(config.changes_capacity).0,
        malformed_positions: Default::default(),
        row_images: config.row_images,
    }))
}

fn spawn_tasks(
    shared: &Arc<SetShared>,
    cluster: &Cluster,
    plans: &[TopicPlan],
    starts: Vec<(Tp, u64)>,
    config: &TableConfig,
) {
    let permits = Arc::new(Semaphore::new(
        (config.fetch_max_bytes / PERMIT_BYTES) as usize,
    ));
    // Bounded; the permits already bound what waits in it.
    let (tx, rx) = mpsc::channel(2 * starts.len() + 16);
    for &(tp, from) in &starts {
        let high_watermark = plans[tp.0]
            .offsets
            .iter()
            .find(|(p, _)| *p == tp.1)
            .map_or(0, |(_, o)| o.high_watermark);
        let fetcher = Fetcher {
            cluster: cluster.clone(),
            topic: plans[tp.0].topic.clone(),
            tp,
            next_offset: from,
            partition_max_bytes: config.partition_max_bytes,
            max_wait: config.fetch_max_wait,
            permits: permits.clone(),
            caught_up: from >= high_watermark,
            tx: tx.clone(),
            shutdown: shared.shutdown.subscribe(),
            malformed_positions: shared.topics[tp.0].malformed_positions.clone(),
            malformed_logged_at: None,
            row_images: config.row_images,
        };
        tokio::spawn(fetcher.run());
    }
    let targets = plans
        .iter()
        .enumerate()
        .flat_map(|(i, plan)| {
            plan.offsets
                .iter()
                .map(move |(p, o)| ((i, *p), o.high_watermark))
        })
        .collect();
    let topics: Vec<String> = plans.iter().map(|p| p.topic.clone()).collect();
    let applier = Applier {
        shared: shared.clone(),
        assembler: Assembler::new(
            &topics,
            starts,
            config.apply_chunk_records,
            config.missing_piece_wait,
        ),
        targets,
        rx,
        snapshot_interval: shared
            .snapshot_dir
            .as_ref()
            .and(config.snapshot_interval)
            .filter(|d| !d.is_zero()),
    };
    tokio::spawn(applier.run());
}

async fn plan_topic(cluster: &Cluster, admin: &Admin, topic: &str) -> Result<TopicPlan, Error> {
    let described = admin.describe_topic(topic).await?;
    let delete_retention_ms = described
        .configs
        .get("delete.retention.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DELETE_RETENTION_MS_DEFAULT);
    let count = cluster.partition_count(topic).await?;
    let mut offsets = Vec::new();
    for p in 0..count {
        offsets.push((p, list_offsets(cluster, topic, p).await?));
    }
    Ok(TopicPlan {
        topic: topic.to_string(),
        topic_id: described.topic_id,
        offsets,
        delete_retention_ms,
    })
}

/// Log start and high watermark of one partition, asked of its leader; retriable
/// answers (no leader yet, a leader move) are retried until the api timeout.
async fn list_offsets(cluster: &Cluster, topic: &str, partition: u32) -> Result<Offsets, Error> {
    let deadline = tokio::time::Instant::now() + cluster.config().api_timeout;
    loop {
        match list_offsets_once(cluster, topic, partition).await {
            Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                cluster.invalidate(topic);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

async fn list_offsets_once(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
) -> Result<Offsets, Error> {
    let p = cluster.list_offset(topic, partition, -1).await?;
    Ok(Offsets {
        log_start_offset: p.log_start_offset.max(0) as u64,
        high_watermark: p.high_watermark.max(0) as u64,
    })
}

/// [`usable_snapshot`] on a blocking thread (the file may be hundreds of MB).
async fn read_snapshot(dir: &Path, plan: &TopicPlan, row_images: bool) -> Option<snapshot::Loaded> {
    let (dir, plan) = (dir.to_path_buf(), plan.clone());
    tokio::task::spawn_blocking(move || usable_snapshot(&dir, &plan, row_images))
        .await
        .ok()
        .flatten()
}

/// The snapshot in `dir` for `plan`'s topic, when it may be used: same topic id and
/// partitions, younger than `delete.retention.ms` (else deletes may have been missed),
/// and every position between the partition's log start and high watermark.
fn usable_snapshot(dir: &Path, plan: &TopicPlan, row_images: bool) -> Option<snapshot::Loaded> {
    let path = snapshot::path_for(dir, &plan.topic, row_images);
    if !path.exists() {
        return None;
    }
    let ignore = |why: String| {
        warn!(topic = %plan.topic, path = %path.display(), why, "table snapshot ignored; bootstrapping from the log");
        None
    };
    let loaded = match snapshot::read(&path) {
        Ok(l) => l,
        Err(why) => return ignore(why),
    };
    if loaded.topic != plan.topic || loaded.topic_id != plan.topic_id {
        return ignore("written for another topic (or the topic was re-created)".into());
    }
    let age_ms = snapshot::now_ms().saturating_sub(loaded.written_at_ms);
    if age_ms >= plan.delete_retention_ms {
        return ignore(format!(
            "{age_ms} ms old, not younger than delete.retention.ms {}",
            plan.delete_retention_ms
        ));
    }
    if loaded.position.len() != plan.offsets.len() {
        return ignore("the topic's partition count changed".into());
    }
    for (p, o) in &plan.offsets {
        match loaded.position.get(p) {
            Some(&pos) if o.log_start_offset <= pos && pos <= o.high_watermark => {}
            Some(&pos) => {
                return ignore(format!(
                    "partition {p}: position {pos} outside log start {} .. high watermark {}",
                    o.log_start_offset, o.high_watermark
                ))
            }
            None => return ignore(format!("partition {p} missing")),
        }
    }
    info!(topic = %plan.topic, rows = loaded.rows, age_ms, "starting from the table snapshot");
    Some(loaded)
}

fn load_rows(store: &Store, loaded: &snapshot::Loaded) -> Result<(), Error> {
    let mut failed = None;
    loaded
        .for_each_row(|k, v| {
            if failed.is_none() {
                let hash = store.hash(k);
                let mut shard = store.shards()[store.shard_of(hash)].write();
                if let Err(e) = shard.apply(store.hasher(), hash, k, Some(v), None) {
                    failed = Some(e);
                }
            }
        })
        .map_err(|why| Error::Invalid(format!("table snapshot of {}: {why}", loaded.topic)))?;
    match failed {
        Some(e) => Err(Error::Invalid(format!("{}: {e}", loaded.topic))),
        None => Ok(()),
    }
}

/// A store sized for the rows expected: `config.expected_rows`, the snapshot's rows,
/// or the offsets to read (an upper bound on keys), times a record size sampled from
/// the fullest partition. The estimate only sizes allocations; it is trimmed at ready.
async fn presized_store(
    cluster: &Cluster,
    plan: &TopicPlan,
    config: &TableConfig,
    loaded: Option<&snapshot::Loaded>,
) -> Store {
    let to_read: u64 = plan
        .offsets
        .iter()
        .map(|(_, o)| o.high_watermark.saturating_sub(o.log_start_offset))
        .sum();
    let rows = config
        .expected_rows
        .or(loaded.map(|l| l.rows as usize))
        .unwrap_or(to_read as usize)
        .min(ROWS_HINT_MAX);
    let fullest = plan
        .offsets
        .iter()
        .max_by_key(|(_, o)| o.high_watermark.saturating_sub(o.log_start_offset));
    let per_row = match fullest {
        Some((p, o)) if rows > 0 => sample_row_bytes(
            cluster,
            &plan.topic,
            *p,
            o.log_start_offset,
            config.row_images,
        )
        .await
        .unwrap_or(0),
        _ => 0,
    };
    Store::new(config.shards, rows, rows.saturating_mul(per_row))
}

/// Average key + value bytes of the first records of a partition; `None` when they
/// cannot be read (the estimate is then skipped, not fatal).
async fn sample_row_bytes(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    from: u64,
    row_images: bool,
) -> Option<usize> {
    let addr = cluster.leader_addr_refreshed(topic, partition).await.ok()?;
    let req = v1::FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: SAMPLE_BYTES,
        partitions: vec![v1::FetchPartition {
            topic: topic.to_string(),
            partition,
            fetch_offset: from as i64,
            partition_max_bytes: SAMPLE_BYTES,
            current_leader_epoch: -1,
            topic_id: cluster.topic_id(topic),
            last_fetched_epoch: -1,
        }],
        replica_id: -1,
        isolation_level: 0,
    };
    let resp = cluster.broker_client(&addr).ok()?.fetch(req).await.ok()?;
    let p = resp.into_inner().partitions.into_iter().next()?;
    if ErrorCode::from_code(p.error_code) != ErrorCode::None {
        return None;
    }
    let records = decode(topic, partition, p.records, from, row_images)
        .ok()?
        .records;
    let live: Vec<_> = records.iter().filter(|r| r.value.is_some()).collect();
    if live.is_empty() {
        return None;
    }
    let bytes: usize = live
        .iter()
        .map(|r| r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    Some(bytes / live.len())
}
