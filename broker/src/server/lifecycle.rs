//! Background tasks of a broker: registration and heartbeats to the active
//! controller, and log maintenance (retention, `flush.ms`, recovery checkpoints).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::digest;
use sluice_proto::v1;
use sluice_proto::v1::controller_api_client::ControllerApiClient;
use sluice_proto::ErrorCode;
use tracing::{debug, info, warn};

use super::admin::channel;
use super::Shared;
use crate::ratelimit::LogLimiter;

/// How long registration may fail before it is worth a WARN: a cold `sluice dev`
/// starts its brokers while its controller is still taking the lease.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(1);
/// How long after registering a broker waits for the controller's metadata push
/// before it registers again to have it sent again.
const METADATA_WAIT: Duration = Duration::from_secs(5);
/// At most one line per this interval for each failure that repeats in a loop.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why registration failed.
enum RegisterError {
    /// No controller reachable, none active, or a retriable refusal: try again.
    Retry(String),
    /// The active controller refused for good (another live process holds this
    /// broker id): retrying cannot help, the broker stops.
    Fatal(String),
}

/// Registers with whichever controller is active, then heartbeats to it; on any
/// sign that it is no longer active (or that this registration is stale), registers
/// again. Runs until aborted, or returns why the controller refused this broker for
/// good (then the broker stops).
pub(crate) async fn register_and_heartbeat(shared: Arc<Shared>) -> String {
    let incarnation: u64 = rand::random();
    let config = &shared.config;
    let unreachable = LogLimiter::new(REPEAT_LOG_INTERVAL);
    let refused = LogLimiter::new(REPEAT_LOG_INTERVAL);
    let mut failing_since: Option<Instant> = None;
    loop {
        let (idx, epoch) = match register(&shared, incarnation).await {
            Ok(registered) => registered,
            Err(RegisterError::Fatal(reason)) => return reason,
            Err(RegisterError::Retry(reason)) => {
                *shared.registration_failure.lock() = Some(reason.clone());
                let now = Instant::now();
                let since = *failing_since.get_or_insert(now);
                if now.duration_since(since) >= UNREACHABLE_GRACE {
                    if let Some(suppressed) = unreachable.allow(now) {
                        warn!(
                            broker = config.id,
                            controllers = config.controllers.join(","),
                            failing_for_s = now.duration_since(since).as_secs(),
                            last_error = reason,
                            suppressed,
                            "cannot register with a controller; retrying"
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        *shared.registration_failure.lock() = None;
        if let Some(since) = failing_since.take() {
            let suppressed = unreachable.reset();
            if since.elapsed() >= UNREACHABLE_GRACE {
                info!(
                    broker = config.id,
                    after_s = since.elapsed().as_secs(),
                    suppressed,
                    "reached the active controller again"
                );
            }
        }
        shared.broker_epoch.store(epoch, Ordering::Release);
        shared.controller_hint.store(idx, Ordering::Relaxed);
        let Ok(ch) = channel(&config.controllers[idx]) else {
            continue;
        };
        let mut client = ControllerApiClient::new(ch);
        let registered_at = Instant::now();
        let mut digesting: Option<tokio::task::JoinHandle<(u64, u64)>> = None;
        let mut straying: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::time::sleep(config.heartbeat_interval).await;
            // Off the heartbeat's path: the stray check (once per process, after the
            // first metadata) waits for the roles lock, which the registration's
            // full-state LeaderAndIsr holds while it applies every partition — seconds
            // for thousands of them on a slow disk, past the session timeout. The
            // heartbeat reports `strays_deleted` as it stands.
            if straying.as_ref().is_none_or(|t| t.is_finished()) {
                let shared = shared.clone();
                straying = Some(tokio::spawn(async move {
                    super::control::check_strays(&shared).await
                }));
            }
            // The digests take every partition's lock, which a blocking thread may hold
            // across slow disk work: computed on a blocking thread, and a heartbeat
            // never waits long for them (the controller fences a broker whose
            // heartbeats stop). Without them it reports no state this time, and the
            // same computation is awaited again at the next beat.
            let mut task = digesting.take().unwrap_or_else(|| {
                let s = shared.clone();
                tokio::task::spawn_blocking(move || held_state_digests(&s))
            });
            let digests = match tokio::time::timeout(DIGEST_WAIT_MAX, &mut task).await {
                Ok(Ok(d)) => Some(d),
                Ok(Err(_)) => None,
                Err(_) => {
                    digesting = Some(task);
                    None
                }
            };
            let (roles_digest, metadata_digest) = digests.unwrap_or_default();
            let req = v1::HeartbeatRequest {
                broker_id: config.id,
                broker_epoch: epoch,
                reports_state: digests.is_some(),
                roles_digest,
                metadata_digest,
                strays_deleted: shared.replicas.strays_deleted(),
            };
            let limit = (config.heartbeat_interval * 2).max(Duration::from_secs(1));
            let answer = match tokio::time::timeout(limit, client.heartbeat(req)).await {
                Ok(answer) => answer,
                Err(_) => Err(tonic::Status::deadline_exceeded("heartbeat timed out")),
            };
            match answer {
                Ok(r) if r.get_ref().error_code == 0 => {
                    shared
                        .gate
                        .set_missed_pushes(config.id, r.get_ref().missed_pushes);
                    // The controller's metadata push after a registration can be lost
                    // (given up after its retries); without it this broker never serves
                    // clients. Registering again with the same incarnation keeps the
                    // broker epoch and makes the controller push everything again.
                    if !super::readiness::registered(&shared)
                        && registered_at.elapsed() >= METADATA_WAIT
                    {
                        info!(
                            broker = config.id,
                            "no metadata from the controller since registering; registering again"
                        );
                        break;
                    }
                }
                Ok(r) => {
                    let r = r.into_inner();
                    if let Some(suppressed) = refused.allow(Instant::now()) {
                        info!(
                            broker = config.id,
                            code = %ErrorCode::from_code(r.error_code),
                            message = r.error_message,
                            suppressed,
                            "heartbeat refused; registering again"
                        );
                    }
                    break;
                }
                Err(status) => {
                    debug!(%status, "heartbeat failed; looking for the active controller");
                    // One miss is enough to look for the active controller again: a new
                    // controller gives brokers only one session timeout to find it.
                    // Start with the next one: this one may be stopped, not dead.
                    let next = (idx + 1) % config.controllers.len();
                    shared.controller_hint.store(next, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Tries each controller once, starting with the last one that answered as active.
/// On failure, says why each one failed.
async fn register(shared: &Shared, incarnation: u64) -> Result<(usize, i64), RegisterError> {
    let config = &shared.config;
    let start = shared.controller_hint.load(Ordering::Relaxed);
    // Why each controller failed, in the order tried: what a client is told.
    let mut failures: Vec<String> = Vec::new();
    for i in 0..config.controllers.len() {
        let idx = (start + i) % config.controllers.len();
        let addr = &config.controllers[idx];
        let ch = match channel(addr) {
            Ok(ch) => ch,
            Err(status) => {
                failures.push(format!("controller {addr} unusable ({})", status.message()));
                continue;
            }
        };
        let req = v1::RegisterBrokerRequest {
            broker_id: config.id,
            addr: config.advertised_addr.clone(),
            rack: config.rack.clone().unwrap_or_default(),
            incarnation,
            kafka_addr: config.kafka_advertised.clone().unwrap_or_default(),
        };
        match ControllerApiClient::new(ch).register_broker(req).await {
            Ok(r) if r.get_ref().error_code == 0 => {
                let r = r.into_inner();
                info!(
                    broker = config.id,
                    broker_epoch = r.broker_epoch,
                    controller = r.controller_id,
                    controller_epoch = r.controller_epoch,
                    "registered with the controller"
                );
                return Ok((idx, r.broker_epoch));
            }
            Ok(r) if r.get_ref().error_code == ErrorCode::DuplicateBrokerRegistration.code() => {
                let r = r.into_inner();
                return Err(RegisterError::Fatal(format!(
                    "controller {addr} refused broker {}: {}: {}",
                    config.id,
                    ErrorCode::from_code(r.error_code),
                    r.error_message
                )));
            }
            Ok(r) => {
                let r = r.into_inner();
                debug!(
                    controller = addr,
                    message = r.error_message,
                    "registration refused"
                );
                failures.push(format!(
                    "controller {addr} refused: {} {}",
                    ErrorCode::from_code(r.error_code),
                    r.error_message
                ));
            }
            Err(status) => {
                debug!(controller = addr, %status, "controller unreachable");
                failures.push(format!(
                    "controller {addr} unreachable ({})",
                    status.message()
                ));
            }
        }
    }
    if failures.is_empty() {
        failures.push("no controller address configured".into());
    }
    Err(RegisterError::Retry(failures.join("; ")))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Retention (never past a partition's high watermark), time-based flushing, flushing
/// of rolled segments and the recovery-point checkpoint, every `maintenance_interval`.
pub(crate) async fn maintenance(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.maintenance_interval);
    loop {
        ticker.tick().await;
        let s = shared.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let partitions = s.replicas.partitions();
            let (mut leading, mut under_replicated) = (0, 0);
            for p in &partitions {
                let role = p.role();
                if role.leader == Some(sluice_proto::BrokerId(s.config.id)) {
                    leading += 1;
                    if role.isr.len() < role.replicas.len() {
                        under_replicated += 1;
                    }
                }
                let hw = p.high_watermark();
                if let Err(e) = p.log.apply_retention(now, hw) {
                    warn!(partition = %p.tp, error = %e, "retention failed");
                }
                if let Err(e) = p.log.maybe_flush_by_time(now) {
                    warn!(partition = %p.tp, error = %e, "flush failed");
                }
                // Rolled segments are flushed here, so the checkpoint below moves past
                // them and a crash rescans only the active segment's unflushed tail.
                if let Err(e) = p.log.flush_rolled() {
                    warn!(partition = %p.tp, error = %e, "flushing rolled segments failed");
                }
                metrics::gauge!("sluice_log_end_offset", "topic" => p.tp.topic.clone(), "partition" => p.tp.partition.to_string()).set(p.log.log_end_offset() as f64);
                metrics::gauge!("sluice_high_watermark", "topic" => p.tp.topic.clone(), "partition" => p.tp.partition.to_string()).set(hw as f64);
            }
            let broker = s.config.id.to_string();
            metrics::gauge!("sluice_partitions", "broker" => broker.clone()).set(partitions.len() as f64);
            metrics::gauge!("sluice_leader_partitions", "broker" => broker.clone()).set(leading as f64);
            // Kafka's UnderReplicatedPartitions: led here, ISR smaller than the replica set.
            metrics::gauge!("sluice_under_replicated_partitions", "broker" => broker).set(under_replicated as f64);
            if let Err(e) = s.replicas.logs().checkpoint_recovery_points() {
                warn!(error = %e, "recovery checkpoint failed");
            }
        })
        .await;
        if let Err(e) = done {
            warn!(error = %e, "maintenance task failed");
        }
    }
}

/// Asks the active controller to move this broker's leaderships elsewhere before it
/// stops. Bounded: a missing controller must not hold the shutdown.
pub(crate) async fn controlled_shutdown(shared: &Shared) {
    let config = &shared.config;
    let epoch = shared.broker_epoch.load(Ordering::Acquire);
    if epoch < 0 {
        return;
    }
    let attempt = async {
        for i in 0..config.controllers.len() {
            let idx =
                (shared.controller_hint.load(Ordering::Relaxed) + i) % config.controllers.len();
            let Ok(ch) = channel(&config.controllers[idx]) else {
                continue;
            };
            let req = v1::ControlledShutdownRequest {
                broker_id: config.id,
                broker_epoch: epoch,
            };
            if let Ok(r) = ControllerApiClient::new(ch).controlled_shutdown(req).await {
                let r = r.into_inner();
                if r.error_code == 0 {
                    info!(
                        broker = config.id,
                        remaining_leaderships = r.remaining_leaderships,
                        "controlled shutdown: leadership moved"
                    );
                    return;
                }
            }
        }
        warn!(
            broker = config.id,
            "controlled shutdown: no active controller answered"
        );
    };
    if tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .is_err()
    {
        warn!(
            broker = config.id,
            "controlled shutdown timed out; stopping anyway"
        );
    }
}

/// How long a heartbeat waits for [`held_state_digests`] before it goes without them.
const DIGEST_WAIT_MAX: Duration = Duration::from_millis(100);

/// What this broker holds, as the controller's reconciliation compares it
/// (`sluice_proto::digest`): the role of every hosted partition, and the metadata view
/// it answers clients from. Taken per partition under its own lock, never all at once.
fn held_state_digests(shared: &Shared) -> (u64, u64) {
    let roles = shared.replicas.roles_digest();
    let metadata = digest::metadata_digest(&shared.metadata.read());
    (roles, metadata)
}
