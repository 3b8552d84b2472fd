//! The classic group protocol's IO (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! DescribeGroups), over the same coordinator and `__consumer_offsets` as KIP-848's
//! groups ([`super::groups`]); the state machine is `crate::group::classic`. Only the
//! Kafka listener speaks it. A JoinGroup or SyncGroup that must wait for other members
//! leaves a waiter with the loaded coordinator and is answered when a later request or
//! the maintenance tick completes it; answers that follow a change go out only once the
//! change is written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, info};

use super::groups::{coordinator_for, now_ms, Failure, Loaded};
use super::groups_api::{group_failure, new_member_id};
use super::Shared;
use crate::group::classic::{Delivery, JoinAnswer, JoinReply, JoinRequest, SyncAnswer, SyncReply};
use crate::group::coordinator::ClassicDescription;
use crate::group::state::GroupError;

/// How long past its rebalance timeout a waiting request gives up (the tick answers it
/// at the timeout; this only bounds a coordinator that stopped ticking).
const WAIT_MARGIN: Duration = Duration::from_secs(30);

async fn wait<T>(
    rx: oneshot::Receiver<Result<T, GroupError>>,
    limit: Duration,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit + WAIT_MARGIN, rx).await {
        Ok(Ok(r)) => r.map_err(group_failure),
        // The coordinator was unloaded (leadership moved): find it again.
        Ok(Err(_)) => Err(super::groups::not_coordinator()),
        Err(_) => Err(group_failure(GroupError::RebalanceInProgress)),
    }
}

fn deliver(loaded: &Loaded, group: &str, deliveries: Vec<Delivery>) {
    if !deliveries.is_empty() {
        loaded.waiters.lock().deliver(group, deliveries);
    }
}

pub(crate) async fn join(
    shared: &Arc<Shared>,
    group: String,
    req: JoinRequest,
) -> Result<JoinReply, Failure> {
    let loaded = coordinator_for(shared, &group).await?;
    let limit = req.rebalance_timeout.max(req.session_timeout);
    debug!(group, member = req.member_id, "JoinGroup");
    let client_id = req.client_id.clone();
    let (tx, rx) = oneshot::channel();
    let (now_answer, deliveries) = loaded
        .run(|core| {
            if let Err(e) = shared.groups.admit(core, &group) {
                return (Err(group_failure(e)), Vec::new());
            }
            let new_id = || {
                let prefix = if client_id.is_empty() {
                    "member"
                } else {
                    &client_id
                };
                format!("{prefix}-{}", new_member_id())
            };
            let (answer, deliveries, writes) =
                core.join(&group, req, Instant::now(), now_ms(), new_id);
            let now_answer = match answer {
                JoinAnswer::Now(r) => Some(r),
                JoinAnswer::Later(id) => {
                    loaded.waiters.lock().joins.insert((group.clone(), id), tx);
                    None
                }
            };
            (Ok((now_answer, deliveries)), writes)
        })
        .await?;
    deliver(&loaded, &group, deliveries);
    let answer = match now_answer {
        Some(r) => r.map_err(group_failure),
        None => wait(rx, limit.max(Duration::from_secs(300))).await,
    };
    match &answer {
        Ok(r) if r.leader == r.member_id && !r.members.is_empty() => info!(
            group,
            generation = r.generation,
            members = r.members.len(),
            protocol = r.protocol,
            leader = r.leader,
            "classic group joined"
        ),
        Ok(r) => debug!(
            group,
            member = r.member_id,
            generation = r.generation,
            "JoinGroup answered"
        ),
        Err((code, _)) => debug!(group, %code, "JoinGroup refused"),
    }
    answer
}

/// A SyncGroup: `protocol` is (type, name) as v5+ sends them.
pub(crate) async fn sync(
    shared: &Arc<Shared>,
    group: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
    protocol: (Option<String>, Option<String>),
    assignments: Vec<(String, Vec<u8>)>,
) -> Result<SyncReply, Failure> {
    let loaded = coordinator_for(shared, &group).await?;
    debug!(
        group,
        member = member_id,
        generation,
        leader = !assignments.is_empty(),
        "SyncGroup"
    );
    let (tx, rx) = oneshot::channel();
    let (now_answer, deliveries) = loaded
        .run(|core| {
            let (answer, deliveries, writes) = core.sync(
                &group,
                &member_id,
                instance_id.as_deref(),
                generation,
                (protocol.0.as_deref(), protocol.1.as_deref()),
                assignments,
                Instant::now(),
                now_ms(),
            );
            let now_answer = match answer {
                SyncAnswer::Now(r) => Some(r),
                SyncAnswer::Later => {
                    loaded
                        .waiters
                        .lock()
                        .syncs
                        .insert((group.clone(), member_id.clone()), tx);
                    None
                }
            };
            (Ok((now_answer, deliveries)), writes)
        })
        .await?;
    deliver(&loaded, &group, deliveries);
    let answer = match now_answer {
        Some(r) => r.map_err(group_failure),
        // The leader syncs within the rebalance timeout, or the tick gives up on it.
        None => wait(rx, Duration::from_secs(300)).await,
    };
    match &answer {
        Ok(r) => debug!(
            group,
            member = member_id,
            generation,
            bytes = r.assignment.len(),
            "SyncGroup answered"
        ),
        Err((code, _)) => debug!(group, member = member_id, generation, %code, "SyncGroup refused"),
    }
    answer
}

pub(crate) async fn heartbeat(
    shared: &Arc<Shared>,
    group: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
) -> Result<(), Failure> {
    let loaded = coordinator_for(shared, &group).await?;
    let answer = loaded
        .run(|core| {
            let r = core.classic_heartbeat(
                &group,
                &member_id,
                instance_id.as_deref(),
                generation,
                Instant::now(),
            );
            (r.map_err(group_failure), Vec::new())
        })
        .await;
    if let Err((code, _)) = &answer {
        debug!(group, member = member_id, generation, %code, "Heartbeat refused");
    }
    answer
}

/// A LeaveGroup of (member id, instance id) pairs: the group's error, or one result per
/// member.
pub(crate) async fn leave(
    shared: &Arc<Shared>,
    group: String,
    leaving: Vec<(String, Option<String>)>,
) -> Result<Vec<Result<String, Failure>>, Failure> {
    let loaded = coordinator_for(shared, &group).await?;
    debug!(group, ?leaving, "LeaveGroup");
    let (results, deliveries) = loaded
        .run(|core| {
            let (results, deliveries, writes) =
                core.leave(&group, &leaving, Instant::now(), now_ms());
            (Ok((results, deliveries)), writes)
        })
        .await?;
    deliver(&loaded, &group, deliveries);
    Ok(results
        .into_iter()
        .map(|r| r.map_err(group_failure))
        .collect())
}

/// DescribeGroups of one group: `Ok(None)` when the coordinator has no such group.
pub(crate) async fn describe(
    shared: &Arc<Shared>,
    group: String,
) -> Result<Option<ClassicDescription>, Failure> {
    let loaded = coordinator_for(shared, &group).await?;
    loaded
        .run(|core| {
            (
                core.describe_classic(&group).map_err(group_failure),
                Vec::new(),
            )
        })
        .await
}
