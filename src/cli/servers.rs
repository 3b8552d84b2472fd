//! `sluice dev`, `sluice controller`, `sluice broker`: bind, run, stop cleanly on
//! Ctrl-C or SIGTERM (stop accepting, finish in-flight requests, flush, write the
//! clean-shutdown marker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use sluice_broker::server::{Broker, BrokerConfig, Readiness};
use sluice_controller::state::Snapshot;
use sluice_controller::store::EmbeddedStore;
use sluice_controller::{Controller, ControllerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

// Status lines never abort a server: these ignore a closed stdout or stderr
// (`sluice dev | head -1`, Ctrl-C under `| tee`), so shutdown always completes.
use super::output::{status_eprintln as eprintln, status_println as println};
use super::{default_data_dir, parse_addr};

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the controller's store and every broker's logs live.
    #[arg(long, default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Number of brokers.
    #[arg(long, default_value_t = 1)]
    pub brokers: u32,
    /// Broker 1's address; the other listeners take the next free ports.
    #[arg(long, value_parser = parse_addr, default_value = "127.0.0.1:9392")]
    pub listen: SocketAddr,
    /// Broker 1's Kafka listener (the others take the next free ports). Default:
    /// 127.0.0.1:9092, or the next free port if that one is taken.
    #[arg(long, value_parser = parse_addr)]
    pub kafka_listen: Option<SocketAddr>,
    /// `num.partitions`: partitions of a topic a Kafka client's Metadata request creates
    /// (`auto.create.topics.enable` is on in dev).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub num_partitions: u32,
    /// `group.consumer.session.timeout.ms`: a group member's session timeout when it
    /// does not ask for one (the heartbeat interval is a third of it, at most 5 s).
    #[arg(long, value_name = "MS", default_value_t = 45_000)]
    pub group_session_timeout_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a classic-protocol group that had no
    /// members waits for more to join before its first generation (0 in dev, as in
    /// Kafka's and Redpanda's development setups).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub group_initial_rebalance_delay_ms: u64,
    #[command(flatten)]
    pub cleaner: CleanerArgs,
    #[command(flatten)]
    pub authorizer: AuthorizerArgs,
}

/// Kafka ACL enforcement on the Kafka listener (docs/authorization.md).
#[derive(Args, Debug, Clone)]
pub struct AuthorizerArgs {
    /// Authorize Kafka-listener requests against the cluster's ACLs (Kafka's
    /// `authorizer.class.name`). Off: everything is allowed and the ACL APIs answer
    /// SECURITY_DISABLED. Without SASL every Kafka client is `User:ANONYMOUS`.
    #[arg(long)]
    pub authorizer: bool,
    /// `allow.everyone.if.no.acl.found`: with --authorizer, a resource no ACL applies to
    /// is open to everyone (Kafka's default, and this one's: false).
    #[arg(long, requires = "authorizer")]
    pub allow_everyone_if_no_acl_found: bool,
    /// `super.users`: principals allowed everything, `;`-separated (e.g. `User:admin`).
    #[arg(long, value_name = "PRINCIPALS", requires = "authorizer")]
    pub super_users: Option<String>,
}

impl AuthorizerArgs {
    pub fn config(&self) -> sluice_proto::acl::AuthorizerConfig {
        sluice_proto::acl::AuthorizerConfig {
            enabled: self.authorizer,
            allow_if_no_acl: self.allow_everyone_if_no_acl_found,
            super_users: self
                .super_users
                .iter()
                .flat_map(|s| s.split(';'))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

/// The log cleaner (compaction of `cleanup.policy=compact` topics), per broker.
#[derive(Args, Debug, Clone)]
pub struct CleanerArgs {
    /// `log.cleaner.backoff.ms`: how long the cleaner sleeps when no partition is due.
    #[arg(long, default_value_t = 15_000)]
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for one pass's key -> offset map
    /// (24 bytes per key); larger key sets take several passes.
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    pub log_cleaner_dedupe_buffer_size: usize,
    /// `log.cleaner.io.max.bytes.per.second`: bytes read plus written; 0 = unthrottled.
    #[arg(long, default_value_t = 0)]
    pub log_cleaner_io_max_bytes_per_second: u64,
    /// `log.cleaner.enable`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub log_cleaner_enable: bool,
}

impl CleanerArgs {
    fn config(&self) -> sluice_broker::log::CleanerConfig {
        sluice_broker::log::CleanerConfig {
            enabled: self.log_cleaner_enable,
            dedupe_buffer_bytes: self.log_cleaner_dedupe_buffer_size,
            io_max_bytes_per_second: (self.log_cleaner_io_max_bytes_per_second > 0)
                .then_some(self.log_cleaner_io_max_bytes_per_second),
            backoff: Duration::from_millis(self.log_cleaner_backoff_ms),
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// This controller's id (distinct among the controllers sharing a store).
    #[arg(long)]
    pub id: u32,
    /// Address brokers and admin clients reach this controller at (HOST:PORT).
    #[arg(long, value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// `embedded:DIR` (flock lease + files) or `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`
    /// (etcd lease; needs a build with `--features etcd`).
    #[arg(long)]
    pub store: String,
    /// `broker.session.timeout.ms`.
    #[arg(long, default_value_t = 2000)]
    pub session_timeout_ms: u64,
    /// TTL of the etcd controller lease, rounded up to whole seconds: how long a dead or
    /// stopped controller keeps the lease.
    #[arg(long, default_value_t = 2000)]
    pub lease_ttl_ms: u64,
    /// Prometheus endpoint address (`/metrics`): whether this controller is active, its
    /// epoch, offline partitions, fenced brokers.
    #[arg(long, value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// This broker's id, unique in the cluster; a second live process with it is refused.
    #[arg(long)]
    pub id: u32,
    /// Address clients, peers and the controller reach this broker at (HOST:PORT).
    #[arg(long, value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// Also serve the Kafka wire protocol on this address (docs/kafka-compatibility.md).
    #[arg(long, value_parser = parse_addr)]
    pub kafka_listen: Option<SocketAddr>,
    /// HOST:PORT Kafka clients are told to reach this broker's Kafka listener at
    /// (default: the --kafka-listen address).
    #[arg(long, requires = "kafka_listen")]
    pub kafka_advertise: Option<String>,
    /// `auto.create.topics.enable`: a Kafka client's Metadata request for a topic that
    /// does not exist creates it (`--num-partitions` partitions, three replicas or every
    /// live broker when fewer), unless the client says not to.
    #[arg(long, requires = "kafka_listen")]
    pub auto_create_topics: bool,
    #[command(flatten)]
    pub authorizer: AuthorizerArgs,
    /// `num.partitions`: partitions of an auto-created topic.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub num_partitions: u32,
    /// Controller address(es), comma-separated.
    #[arg(long)]
    pub controller: String,
    /// This broker's log directory, locked for the life of the process.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Rack (or zone) of this broker: replicas of a partition are spread across racks.
    #[arg(long)]
    pub rack: Option<String>,
    /// Prometheus endpoint address (`/metrics`).
    #[arg(long, value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    #[arg(long, default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// `producer.id.expiration.ms`: an idempotent producer id idle this long is
    /// forgotten (its next batch is taken as a new producer's).
    #[arg(long, default_value_t = sluice_proto::limits::PRODUCER_ID_EXPIRATION_MS_DEFAULT)]
    pub producer_id_expiration_ms: u64,
    /// Heartbeat interval to the controller.
    #[arg(long, default_value_t = 500)]
    pub heartbeat_ms: u64,
    #[command(flatten)]
    pub cleaner: CleanerArgs,
    /// `offsets.retention.minutes`: committed offsets of a consumer group without
    /// members are removed this long after it became empty (or after its last commit).
    #[arg(long, value_name = "MIN", default_value_t = 7 * 24 * 60)]
    pub offsets_retention_minutes: u64,
    /// `group.consumer.session.timeout.ms`: a group member's session timeout when it
    /// does not ask for one.
    #[arg(long, value_name = "MS", default_value_t = 45_000)]
    pub group_session_timeout_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a classic-protocol group that had no
    /// members waits for more to join before its first generation (Kafka's default).
    #[arg(long, value_name = "MS", default_value_t = 3_000)]
    pub group_initial_rebalance_delay_ms: u64,
}

/// Resolves when the process gets Ctrl-C or SIGTERM. The handlers are installed when
/// this is called, not when it is first awaited: call it before printing anything a
/// script may react to with a signal (a SIGTERM right after `ready` must still stop
/// the server cleanly, not kill it).
fn termination() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

fn shutdown_future(
    rx: &watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Binds `addr`, or the next free port after it when `next_free` is set.
async fn bind(addr: SocketAddr, next_free: bool) -> anyhow::Result<TcpListener> {
    bind_avoiding(addr, next_free, &[]).await
}

/// Like [`bind`], skipping `avoid` when looking for the next free port: addresses the
/// cluster metadata still gives brokers this `sluice dev` does not start.
async fn bind_avoiding(
    addr: SocketAddr,
    next_free: bool,
    avoid: &[SocketAddr],
) -> anyhow::Result<TcpListener> {
    let mut candidate = addr;
    for _ in 0..200 {
        if next_free && avoid.contains(&candidate) {
            candidate.set_port(candidate.port() + 1);
            continue;
        }
        match TcpListener::bind(candidate).await {
            Ok(l) => return Ok(l),
            Err(e) if next_free && e.kind() == std::io::ErrorKind::AddrInUse => {
                candidate.set_port(candidate.port() + 1)
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {candidate}")),
        }
    }
    bail!("no free port after {addr}")
}

/// Fails unless the kernel lets this process create files in `dir` (`access(2)` sees
/// permissions, read-only mounts and immutable directories, even for root).
fn check_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("bad path {}", dir.display()))?;
    // SAFETY: access(2) on a NUL-terminated path we own.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("data dir {} is not writable: {e}", dir.display());
    }
    Ok(())
}

pub(crate) fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))
}

pub async fn dev(a: DevArgs) -> anyhow::Result<ExitCode> {
    if a.brokers == 0 {
        bail!("--brokers must be at least 1");
    }
    let terminated = termination();
    tokio::pin!(terminated);
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create {}", a.data_dir.display()))?;
    // One dev per data dir, refused before it binds or opens anything (docs/cli.md).
    let _lock = sluice_broker::log::LogManager::lock_dir(&a.data_dir)?;
    // Last run's metadata: brokers this run does not start keep their old addresses
    // there (fenced, but still listed), so no new listener may take one of them.
    let previous = previous_metadata(&a.data_dir.join("controller"));
    let not_started: Vec<(u32, String)> = previous
        .iter()
        .flat_map(|snap| &snap.brokers)
        .filter(|(id, _)| **id > a.brokers)
        .map(|(id, b)| (*id, b.addr.clone()))
        .collect();
    let avoid: Vec<SocketAddr> = not_started
        .iter()
        .filter_map(|(_, addr)| addr.parse().ok())
        .collect();
    let mut broker_listeners = vec![bind(a.listen, false).await?];
    let mut next = a.listen;
    for _ in 1..a.brokers {
        next.set_port(broker_listeners.last().expect("one").local_addr()?.port() + 1);
        broker_listeners.push(bind_avoiding(next, true, &avoid).await?);
    }
    next.set_port(broker_listeners.last().expect("one").local_addr()?.port() + 1);
    let controller_listener = bind_avoiding(next, true, &avoid).await?;
    let controller_addr = controller_listener.local_addr()?;
    next.set_port(controller_addr.port() + 1);
    let metrics_addr = bind_avoiding(next, true, &avoid).await?.local_addr()?;
    install_metrics(metrics_addr)?;
    let mut kafka_listeners = vec![match a.kafka_listen {
        Some(addr) => bind(addr, false).await?,
        None => bind_avoiding(SocketAddr::from(([127, 0, 0, 1], 9092)), true, &avoid).await?,
    }];
    for _ in 1..a.brokers {
        let mut next = kafka_listeners.last().expect("one").local_addr()?;
        next.set_port(next.port() + 1);
        kafka_listeners.push(bind_avoiding(next, true, &avoid).await?);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let store = format!("embedded:{}", a.data_dir.join("controller").display());
    let controller = Controller::new(ControllerConfig {
        id: 0,
        store,
        ..ControllerConfig::default()
    })?;
    let controller_task =
        tokio::spawn(controller.run(controller_listener, shutdown_future(&stop_rx)));

    println!("sluice dev: data in {}", a.data_dir.display());
    let mut broker_addrs = Vec::new();
    for l in &broker_listeners {
        broker_addrs.push(l.local_addr()?.to_string());
    }
    let mut broker_tasks = Vec::new();
    let mut readiness = Vec::new();
    let mut kafka_addrs = Vec::new();
    for (i, (listener, kafka)) in broker_listeners
        .into_iter()
        .zip(kafka_listeners)
        .enumerate()
    {
        let id = i as u32 + 1;
        let addr = listener.local_addr()?;
        let kafka_addr = kafka.local_addr()?;
        kafka_addrs.push((id, kafka_addr));
        let mut config = BrokerConfig::new(
            id,
            addr.to_string(),
            vec![controller_addr.to_string()],
            a.data_dir.join(format!("broker-{id}")),
        );
        // Every broker and the controller stop together: no leadership to move, and
        // ISRs left whole let a restart with fewer brokers elect from any of them.
        config.controlled_shutdown = false;
        config.cleaner = a.cleaner.config();
        config.kafka_advertised = Some(kafka_addr.to_string());
        config.kafka_auto_create_partitions = Some(a.num_partitions);
        config.authorizer = a.authorizer.config();
        config.groups.group.session_timeout = Duration::from_millis(
            a.group_session_timeout_ms
                .clamp(500, config.groups.max_session_timeout.as_millis() as u64),
        );
        config.groups.initial_rebalance_delay =
            Duration::from_millis(a.group_initial_rebalance_delay_ms);
        let broker = tokio::task::spawn_blocking(move || Broker::open(config)).await??;
        broker.serve_kafka(kafka);
        // Clients hear "not ready" (and retry) until the whole dev cluster is up, so a
        // script that creates a replicated topic as soon as the port opens succeeds.
        let r = broker.readiness();
        r.hold_clients();
        readiness.push((id, r));
        println!("  broker {id:<4}     {addr}");
        broker_tasks.push(tokio::spawn(
            broker.run(listener, shutdown_future(&stop_rx)),
        ));
    }
    for (id, kafka_addr) in &kafka_addrs {
        println!("  kafka {id:<5}     {kafka_addr}");
    }
    println!("  controller      {controller_addr}");
    println!("  metrics         http://{metrics_addr}/metrics");
    if let Some(snap) = &previous {
        for line in offline_report(snap, a.brokers, &not_started) {
            eprintln!("{line}");
        }
    }
    let brokers: Vec<(u32, String)> = readiness
        .iter()
        .zip(&broker_addrs)
        .map(|((id, _), addr)| (*id, addr.clone()))
        .collect();
    let controller_at = controller_addr.to_string();
    let up = dev_cluster_up(&controller_at, &readiness, &brokers);
    // Ctrl-C while starting stops at once rather than after the wait.
    let (timed_out, stopped) = tokio::select! {
        up = tokio::time::timeout(Duration::from_secs(30), up) => (up.is_err(), false),
        () = &mut terminated => (false, true),
    };
    // Released together, so a client's first answer already comes from the whole cluster.
    for (_, r) in &readiness {
        r.release_clients();
    }
    if !stopped {
        if timed_out {
            eprintln!("warning: brokers did not all register within 30 s");
        } else {
            println!("ready: {} broker(s); Ctrl-C stops", a.brokers);
        }
        terminated.await;
    }
    println!("stopping");
    let _ = stop_tx.send(true);
    let mut clean = true;
    for t in broker_tasks {
        if let Err(e) = t.await? {
            eprintln!("error: broker shutdown: {e}");
            clean = false;
        }
    }
    controller_task.await??;
    println!("stopped");
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The metadata a previous run left in the embedded store at `dir`, if any; a store
/// that cannot be read is left for the controller to report.
fn previous_metadata(dir: &std::path::Path) -> Option<Snapshot> {
    if !dir.join("metadata.json").exists() {
        return None;
    }
    EmbeddedStore::open(dir).ok()?.load().ok().flatten()
}

/// Warnings for a dev restarted with fewer brokers than its data dir holds: one line per
/// topic with partitions that stay offline (no in-sync replica among the brokers
/// started; unclean election is off by default), and one for partitions that will run
/// under-replicated.
fn offline_report(snap: &Snapshot, started: u32, not_started: &[(u32, String)]) -> Vec<String> {
    if not_started.is_empty() {
        return Vec::new();
    }
    let is_started = |b: &u32| *b >= 1 && *b <= started;
    let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let absent: Vec<u32> = not_started.iter().map(|(id, _)| *id).collect();
    let mut lines = Vec::new();
    let mut under_replicated = 0;
    for (name, t) in &snap.topics {
        let mut offline = Vec::new();
        let mut on = std::collections::BTreeSet::new();
        for (i, p) in t.partitions.iter().enumerate() {
            if !p.isr.iter().any(is_started) {
                offline.push(i.to_string());
                on.extend(p.isr.iter().copied().filter(|b| !is_started(b)));
            } else if !p.replicas.iter().all(is_started) {
                under_replicated += 1;
            }
        }
        if !offline.is_empty() {
            let on: Vec<u32> = on.into_iter().collect();
            lines.push(format!(
                "warning: topic {name}: partition(s) {} offline: their in-sync replicas are on broker(s) {}, not started (--brokers {started})",
                offline.join(","),
                ids(&on)
            ));
        }
    }
    if under_replicated > 0 {
        lines.push(format!(
            "warning: {under_replicated} partition(s) under-replicated: replicas on broker(s) {} not started",
            ids(&absent)
        ));
    }
    if !lines.is_empty() {
        lines.push(format!(
            "warning: the data dir holds brokers 1-{}; start with --brokers {} to bring them back",
            absent.iter().max().copied().unwrap_or(started),
            absent.iter().max().copied().unwrap_or(started)
        ));
    }
    lines
}

/// Resolves once the dev cluster is up: every broker registered and holds metadata
/// listing every broker alive at the address it has now (a restarted dev may still
/// hold last run's addresses in its store), and the controller counts every broker
/// live, since it is the controller that answers topic creation from live brokers.
/// The controller pushes a broker's partitions before that metadata, in order, so a
/// broker that shows it already serves its partitions.
async fn dev_cluster_up(
    controller: &str,
    readiness: &[(u32, Readiness)],
    brokers: &[(u32, String)],
) {
    let client = sluice_client::Cluster::new(&sluice_client::ClientConfig::new(controller));
    loop {
        let registered = readiness.iter().all(|(_, r)| {
            let live = r.live_broker_addrs();
            r.is_registered() && brokers.iter().all(|(_, addr)| live.contains(addr))
        });
        if registered && controller_counts_live(&client, controller, brokers).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the active controller at `addr` lists every one of `brokers` alive.
async fn controller_counts_live(
    client: &sluice_client::Cluster,
    addr: &str,
    brokers: &[(u32, String)],
) -> bool {
    let Ok(mut admin) = client.admin_client(addr) else {
        return false;
    };
    let request = sluice_proto::v1::DescribeClusterRequest {};
    let Ok(cluster) = admin.describe_cluster(request).await else {
        return false;
    };
    let cluster = cluster.into_inner();
    brokers.iter().all(|(id, addr)| {
        cluster
            .brokers
            .iter()
            .any(|b| b.id == *id && b.alive && &b.addr == addr)
    })
}

pub async fn controller(a: ControllerArgs) -> anyhow::Result<ExitCode> {
    let terminated = termination();
    let listener = bind(a.listen, false).await?;
    if let Some(m) = a.metrics {
        install_metrics(m)?;
    }
    let config = ControllerConfig {
        id: a.id,
        store: a.store,
        session_timeout: Duration::from_millis(a.session_timeout_ms),
        lease_ttl: Duration::from_millis(a.lease_ttl_ms),
        ..ControllerConfig::default()
    };
    let controller = Controller::new(config)?;
    println!(
        "controller {} listening on {}",
        a.id,
        listener.local_addr()?
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(listener, shutdown_future(&stop_rx)));
    terminated.await;
    let _ = stop_tx.send(true);
    task.await??;
    Ok(ExitCode::SUCCESS)
}

pub async fn broker(a: BrokerArgs) -> anyhow::Result<ExitCode> {
    let listener = bind(a.listen, false).await?;
    let addr = listener.local_addr()?;
    if let Some(m) = a.metrics {
        install_metrics(m)?;
        println!("metrics on http://{m}/metrics");
    }
    let controllers: Vec<String> = a
        .controller
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if controllers.is_empty() {
        bail!("--controller needs at least one address");
    }
    let kafka = match a.kafka_listen {
        Some(at) => Some(bind(at, false).await?),
        None => None,
    };
    let mut config = BrokerConfig::new(a.id, addr.to_string(), controllers, a.data_dir);
    if let Some(k) = &kafka {
        config.kafka_advertised = Some(match a.kafka_advertise {
            Some(adv) => adv,
            None => k.local_addr()?.to_string(),
        });
    }
    config.kafka_auto_create_partitions = a.auto_create_topics.then_some(a.num_partitions);
    config.authorizer = a.authorizer.config();
    config.rack = a.rack;
    config.replica_lag_time_max = Duration::from_millis(a.replica_lag_time_max_ms);
    config.producer_id_expiration = Duration::from_millis(a.producer_id_expiration_ms.max(1));
    config.heartbeat_interval = Duration::from_millis(a.heartbeat_ms);
    config.cleaner = a.cleaner.config();
    config.groups.offsets_retention = Duration::from_secs(a.offsets_retention_minutes.max(1) * 60);
    config.groups.group.session_timeout = Duration::from_millis(
        a.group_session_timeout_ms
            .clamp(500, config.groups.max_session_timeout.as_millis() as u64),
    );
    config.groups.initial_rebalance_delay =
        Duration::from_millis(a.group_initial_rebalance_delay_ms);
    let data_dir = config.data_dir.clone();
    // Broker::open's errors name the path already (`data dir … is in use …`).
    let broker = tokio::task::spawn_blocking(move || Broker::open(config)).await??;
    // Opening may succeed in a directory it cannot write (an existing lock file, no
    // partitions yet); the first partition would then fail, forever. Fail now instead.
    check_writable(&data_dir)?;
    // Installed after opening the logs, so Ctrl-C during a long recovery still stops
    // the process at once (recovery is safe to interrupt), and before the first line
    // a script may react to.
    let terminated = termination();
    println!("broker {} listening on {addr}", a.id);
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(k) = kafka {
        println!(
            "broker {} serving Kafka clients on {}",
            a.id,
            k.local_addr()?
        );
        broker.serve_kafka(k);
    }
    let mut task = tokio::spawn(broker.run(listener, shutdown_future(&stop_rx)));
    // The broker also stops by itself when the controller refuses it for good (a
    // duplicate id): its reason is then the error line.
    let ended = tokio::select! {
        () = terminated => None,
        ended = &mut task => Some(ended),
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            let _ = stop_tx.send(true);
            task.await
        }
    };
    ended?.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
