//! The simulated world: brokers, controller, producer, consumer, network, faults, and
//! the step loop that delivers one message or fires one timer at a time in time order.
//!
//! Brokers host one partition (topic `t`, partition 0) with the real `ReplicaManager`
//! over an in-memory log (`memlog.rs`) and simulated time. The controller is the real
//! `ClusterState`. The glue here stands in for gRPC: what the broker's services, its
//! fetch loop and the controller's pusher send, message for message.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use sluice_broker::replica::{FollowerFetched, IsrProposal, ToFetch};
use sluice_controller::state::{Action as Ctl, ClusterState, Reported, Snapshot};
use sluice_proto::{v1, BrokerId, ErrorCode, LeaderEpoch, Offset, TopicPartition};
use tokio::sync::oneshot;

use crate::check::{Checker, Entry, Violation};
use crate::memlog::{MemStore, SimClock};
use crate::rng::Rng;

mod broker;
mod clients;
mod faults;

const TOPIC: &str = "t";
/// The simulated topic's id (it is never deleted and created again here).
const TOPIC_ID: &str = "id";
const CONTROLLER_ID: u32 = 100;
const NODE_TICK_MS: u64 = 100;
const FETCH_TIMEOUT_MS: u64 = 3000;
const PRODUCE_TIMEOUT_MS: u64 = 4000;
const CLIENT_TIMEOUT_MS: u64 = 6000;
const CLIENT_INFLIGHT_MAX: usize = 16;
/// A follower whose fetch came back empty asks again after this (a long-poll's wait).
const FETCH_IDLE_MS: u64 = 10;
/// The pusher's retry budget for one push (`controller/src/pusher.rs`, PUSH_DEADLINE).
const PUSH_DEADLINE_MS: u64 = 10_000;
const TRACE_LINES: usize = 120;
const STEPS_MAX: u64 = 5_000_000;

/// What one simulated run looks like.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub brokers: u32,
    pub min_insync_replicas: usize,
    /// Simulated time with faults, then the world heals.
    pub fault_ms: u64,
    /// After healing, every replica must be back in the ISR (and the logs equal) within this.
    pub heal_bound_ms: u64,
    pub drop: f64,
    pub duplicate: f64,
    /// Chance that a message is slow (100–1500 ms), which reorders it.
    pub slow: f64,
    pub session_timeout_ms: u64,
    pub replica_lag_max_ms: u64,
    /// The topic's `flush.messages` (`Some(1)`: every acknowledgement waits for a flush
    /// covering it, on the leader and, before they fetch again, on the followers).
    pub flush_messages: Option<u64>,
    /// Power loss of one broker is a fault kind (it loses every unflushed record).
    pub power_loss: bool,
    /// Half the power losses take every live broker down at once.
    pub power_loss_all: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            brokers: 3,
            min_insync_replicas: 2,
            fault_ms: 30_000,
            heal_bound_ms: 30_000,
            drop: 0.02,
            duplicate: 0.02,
            slow: 0.03,
            session_timeout_ms: 2000,
            replica_lag_max_ms: 2000,
            flush_messages: None,
            power_loss: false,
            power_loss_all: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub steps: u64,
    pub acked: u64,
    pub faults: u64,
    pub leader_epochs: u32,
    pub truncations: u64,
    /// Control pushes the controller gave up on.
    pub pushes_lost: u64,
    /// Power losses (one broker, or all at once).
    pub power_losses: u64,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub time_ms: u64,
    pub violation: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at step {} (t={} ms): {}",
            self.seed, self.step, self.time_ms, self.violation
        )?;
        writeln!(
            f,
            "replay: SIM_SEED={} cargo test -p sluice-sim --release",
            self.seed
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addr {
    Controller,
    Broker(usize),
    Client,
}

/// One partition's answer to a follower fetch: the leader's data, or the error code
/// with the leader's log start and end (as the fetch response carries them).
type FetchResult = Result<FollowerFetched, (ErrorCode, u64, u64)>;

#[derive(Debug, Clone)]
enum Msg {
    Register {
        incarnation: u64,
    },
    Registered {
        incarnation: u64,
        epoch: i64,
    },
    Heartbeat {
        epoch: i64,
        /// The roles the broker holds (`sluice_proto::digest`), as the real heartbeat.
        roles_digest: u64,
    },
    HeartbeatRefused,
    AlterPartition {
        broker_epoch: i64,
        proposals: Vec<IsrProposal>,
    },
    LeaderAndIsr {
        controller_epoch: i64,
        broker_epoch: i64,
        partitions: Vec<v1::PartitionState>,
        full_state: bool,
    },
    Fetch {
        req: u64,
        parts: Vec<ToFetch>,
    },
    FetchAnswer {
        req: u64,
        results: Vec<FetchResult>,
    },
    Produce {
        req: u64,
        id: u64,
    },
    Produced {
        req: u64,
        result: Result<u64, ErrorCode>,
    },
}

#[derive(Debug, Clone)]
struct Envelope {
    from: Addr,
    to: Addr,
    /// The broker incarnation a message to a broker was sent to: a restarted broker has
    /// new connections, so what was in flight to the old one is lost.
    to_incarnation: u64,
    msg: Msg,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Node(usize),
    /// A follower's next fetch after an empty answer.
    Fetch(usize),
    Controller,
    Client,
    Consumer,
    Fault,
    Restart(usize),
    Heal(usize),
}

#[derive(Debug)]
enum Item {
    Deliver(Envelope),
    Timer(Timer),
}

/// An acks=all produce appended on a leader, waiting for its answer.
struct Waiting {
    req: u64,
    offset: u64,
    id: u64,
    /// The leader epoch it was appended in.
    epoch: LeaderEpoch,
    rx: oneshot::Receiver<Result<(), ErrorCode>>,
}

/// A follower's fetch in flight to `leader` (a broker index).
struct OutstandingFetch {
    req: u64,
    sent_ms: u64,
    leader: usize,
    parts: Vec<ToFetch>,
}

struct Node {
    id: BrokerId,
    up: bool,
    incarnation: u64,
    paused_until: u64,
    isolated: Option<bool>,
    /// Until then, every control push to this broker is lost (the controller's
    /// connections to it drop while its own heartbeats get through).
    pushes_cut_until: u64,
    broker_epoch: Option<i64>,
    controller_epoch: i64,
    /// The broker's logs: they outlive its incarnations (a power loss cuts them back).
    store: MemStore,
    /// This incarnation's replica manager; `None` while the broker is down.
    rm: Option<broker::Manager>,
    waiters: Vec<Waiting>,
    fetch: Option<OutstandingFetch>,
    next_req: u64,
    ticks: u64,
}

struct World {
    cfg: SimConfig,
    rng: Rng,
    now_ms: u64,
    base: Instant,
    clock: SimClock,
    step: u64,
    /// [`STEPS_MAX`], or `SIM_STEPS_MAX` (to look at a run that does not end).
    steps_max: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    items: BTreeMap<u64, Item>,
    controller: ClusterState,
    controller_epoch: i64,
    nodes: Vec<Node>,
    /// A broker whose next delivered message is interrupted by a crash mid-write.
    tear_next: Option<usize>,
    client_inflight: BTreeMap<u64, (u64, u64)>,
    next_record: u64,
    next_client_req: u64,
    acked_after_heal: u64,
    consumer_read_upto: u64,
    healing_since: Option<u64>,
    checker: Checker,
    trace: VecDeque<String>,
    report: Report,
}

/// Runs one seed; `Ok` with what happened, or the first violated invariant.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<Report, Failure> {
    let mut w = World::new(seed, cfg.clone());
    match w.run() {
        Ok(()) => Ok(w.report),
        Err(violation) => Err(Failure {
            seed,
            step: w.step,
            time_ms: w.now_ms,
            violation: format!("{violation}\nstate: {}", w.describe()),
            trace: w.trace.into_iter().collect(),
        }),
    }
}

impl World {
    fn new(seed: u64, cfg: SimConfig) -> World {
        let base = Instant::now();
        let controller = ClusterState::new(
            Snapshot::default(),
            base,
            Duration::from_millis(cfg.session_timeout_ms),
            CONTROLLER_ID,
            1,
        );
        let nodes = (1..=cfg.brokers)
            .map(|id| Node {
                id: BrokerId(id),
                up: true,
                incarnation: 1,
                paused_until: 0,
                isolated: None,
                pushes_cut_until: 0,
                broker_epoch: None,
                controller_epoch: 0,
                store: MemStore::default(),
                rm: None,
                waiters: Vec::new(),
                fetch: None,
                next_req: 0,
                ticks: 0,
            })
            .collect();
        let mut w = World {
            rng: Rng::new(seed),
            cfg,
            now_ms: 0,
            base,
            clock: SimClock::new(base),
            step: 0,
            steps_max: std::env::var("SIM_STEPS_MAX")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(STEPS_MAX),
            seq: 0,
            queue: BinaryHeap::new(),
            items: BTreeMap::new(),
            controller,
            controller_epoch: 1,
            nodes,
            tear_next: None,
            client_inflight: BTreeMap::new(),
            next_record: 1,
            next_client_req: 1,
            acked_after_heal: 0,
            consumer_read_upto: 0,
            healing_since: None,
            checker: Checker::default(),
            trace: VecDeque::new(),
            report: Report::default(),
        };
        for i in 0..w.nodes.len() {
            w.nodes[i].rm = Some(w.start_manager(i));
        }
        w
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn trace(&mut self, what: impl FnOnce() -> String) {
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        let line = format!("[{} ms #{}] {}", self.now_ms, self.step, what());
        self.trace.push_back(line);
    }

    fn schedule(&mut self, at_ms: u64, item: Item) {
        self.seq += 1;
        self.queue.push(Reverse((at_ms, self.seq)));
        self.items.insert(self.seq, item);
    }

    fn timer(&mut self, after_ms: u64, t: Timer) {
        self.schedule(self.now_ms + after_ms, Item::Timer(t));
    }

    fn cut(&self, a: Addr, b: Addr) -> bool {
        let isolated = |x: Addr, other: Addr| match x {
            Addr::Broker(i) => match self.nodes[i].isolated {
                Some(from_controller) => matches!(other, Addr::Broker(_)) || from_controller,
                None => false,
            },
            _ => false,
        };
        isolated(a, b) || isolated(b, a)
    }

    fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        if self.cut(from, to) || self.rng.chance(self.cfg.drop) {
            return;
        }
        let to_incarnation = match to {
            Addr::Broker(i) => self.nodes[i].incarnation,
            _ => 0,
        };
        let copies = if self.rng.chance(self.cfg.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(self.cfg.slow) {
                self.rng.range(100, 1500)
            } else {
                self.rng.range(1, 15)
            };
            let env = Envelope {
                from,
                to,
                to_incarnation,
                msg: msg.clone(),
            };
            self.schedule(self.now_ms + delay, Item::Deliver(env));
        }
    }

    fn run(&mut self) -> Result<(), Violation> {
        let ts = self.cfg.session_timeout_ms;
        for i in 0..self.nodes.len() {
            let jitter = self.rng.range(0, NODE_TICK_MS);
            self.timer(jitter, Timer::Node(i));
        }
        self.timer(50, Timer::Controller);
        self.timer(500, Timer::Client);
        self.timer(700, Timer::Consumer);
        self.timer(ts + 1000, Timer::Fault);
        let mut created = false;
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            let item = self.items.remove(&seq).expect("queued items are stored");
            self.now_ms = at;
            self.clock.set_ms(at);
            self.step += 1;
            if self.step > self.steps_max {
                return Err(format!("no end after {STEPS_MAX} steps"));
            }
            if !created && self.controller.live_brokers().len() == self.nodes.len() {
                created = self.create_topic()?;
            }
            if self.healing_since.is_none() && self.now_ms >= self.cfg.fault_ms {
                self.heal_all();
            }
            match item {
                Item::Deliver(env) => self.deliver(env)?,
                Item::Timer(t) => self.fire(t)?,
            }
            self.check_step()?;
            if let Some(since) = self.healing_since {
                if self.healed()? {
                    self.report.steps = self.step;
                    self.report.acked = self.checker.acked;
                    self.report.leader_epochs = self.leader_epoch().0;
                    return self.final_check();
                }
                if self.now_ms > since + self.cfg.heal_bound_ms {
                    return Err(format!(
                        "not whole {} ms after healing: {}",
                        self.cfg.heal_bound_ms,
                        self.describe()
                    ));
                }
            }
        }
        Err("the event queue ran dry".into())
    }

    fn create_topic(&mut self) -> Result<bool, Violation> {
        let mut configs = BTreeMap::from([(
            "min.insync.replicas".to_string(),
            self.cfg.min_insync_replicas.to_string(),
        )]);
        if let Some(n) = self.cfg.flush_messages {
            configs.insert("flush.messages".to_string(), n.to_string());
        }
        match self.controller.create_topic(
            TOPIC,
            1,
            self.cfg.brokers,
            configs,
            TOPIC_ID.into(),
            Vec::new(),
        ) {
            Ok(actions) => {
                self.trace(|| "topic created".into());
                self.controller_actions(actions);
                Ok(true)
            }
            Err((code, msg)) => Err(format!("create topic: {code:?} {msg}")),
        }
    }

    fn partition_record(&self) -> Option<&sluice_controller::state::PartitionRecord> {
        self.controller
            .snap
            .topics
            .get(TOPIC)
            .map(|t| &t.partitions[0])
    }

    fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(
            self.partition_record()
                .map_or(0, |p| p.leader_epoch.max(0) as u32),
        )
    }

    fn describe(&self) -> String {
        let p = self.partition_record();
        let nodes: Vec<String> = (0..self.nodes.len())
            .map(|i| {
                let n = &self.nodes[i];
                let log = self.entries(i);
                let flushed = n
                    .store
                    .get(&Self::tp())
                    .map(|l| sluice_broker::replica::ReplicaLog::flushed_offset(&*l));
                let role = n
                    .rm
                    .as_ref()
                    .and_then(|rm| rm.partition(&Self::tp()))
                    .map(|p| {
                        let r = p.role();
                        (r.leader, r.leader_epoch.0, r.isr)
                    });
                format!(
                    "\n  b{}(up={} leo={} flushed={flushed:?} hw={:?} epochs={:?} tail={:?} role={role:?})",
                    n.id,
                    n.up,
                    log.len(),
                    self.high_watermark(i),
                    n.store.get(&Self::tp()).map(|l| l.epochs()),
                    log.iter()
                        .enumerate()
                        .rev()
                        .take(12)
                        .map(|(o, e)| (o, e.epoch, e.id))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        format!("controller: {p:?}; {}", nodes.join(" "))
    }

    // ---- delivery -------------------------------------------------------------------

    fn deliver(&mut self, env: Envelope) -> Result<(), Violation> {
        match env.to {
            Addr::Controller => self.controller_receive(env.from, env.msg),
            Addr::Client => self.client_receive(env.msg),
            Addr::Broker(i) => {
                let n = &self.nodes[i];
                if !n.up || n.incarnation != env.to_incarnation {
                    return Ok(());
                }
                if n.paused_until > self.now_ms {
                    let at = n.paused_until;
                    self.schedule(at, Item::Deliver(env));
                    return Ok(());
                }
                if self.tear_next == Some(i) {
                    self.tear_next = None;
                    return self.torn_delivery(i, env);
                }
                self.broker_receive(i, env.from, env.msg)
            }
        }
    }

    /// A crash in the middle of handling a message: a random prefix of what it appended
    /// (whole batches, never less than was flushed) reaches the log, nothing it would
    /// have sent leaves, and the process is gone.
    fn torn_delivery(&mut self, i: usize, env: Envelope) -> Result<(), Violation> {
        let before = self.entries(i).len() as u64;
        let queued = self.seq;
        self.broker_receive(i, env.from, env.msg)?;
        // Drop everything this handling sent.
        let sent: Vec<u64> = self.items.range(queued + 1..).map(|(s, _)| *s).collect();
        for s in sent {
            self.items.remove(&s);
        }
        self.queue.retain(|Reverse((_, s))| *s <= queued);
        let after = self.entries(i).len() as u64;
        if after > before {
            let keep = before + self.rng.range(0, after - before + 1);
            // Only what this very step appended is lost: the replica never reported it
            // (its next fetch was never sent), so no acknowledgement counted on it.
            if let Some(log) = self.nodes[i].store.get(&Self::tp()) {
                log.tear_to(keep);
            }
            let kept = self.entries(i).len() as u64;
            self.trace(|| {
                format!(
                    "b{} loses the last {} entries it was writing",
                    i + 1,
                    after - kept
                )
            });
        }
        self.crash(i, "crash mid-write");
        Ok(())
    }

    fn fire(&mut self, t: Timer) -> Result<(), Violation> {
        match t {
            Timer::Node(i) => {
                let paused_until = self.nodes[i].paused_until;
                if paused_until > self.now_ms {
                    self.schedule(paused_until, Item::Timer(t));
                    return Ok(());
                }
                self.timer(NODE_TICK_MS, t);
                if self.nodes[i].up {
                    self.node_tick(i)?;
                }
            }
            Timer::Fetch(i) => {
                let n = &self.nodes[i];
                if n.paused_until > self.now_ms {
                    let at = n.paused_until;
                    self.schedule(at, Item::Timer(t));
                } else if n.up && n.fetch.is_none() {
                    self.send_fetch(i);
                }
            }
            Timer::Controller => {
                self.timer(100, t);
                let actions = self.controller.tick(self.now());
                self.controller_actions(actions);
                // No periodic re-send of everything: a lost push is repaired only by
                // what the real controller does, reconciliation from heartbeat digests.
            }
            Timer::Client => {
                self.timer(10, t);
                self.client_tick();
            }
            Timer::Consumer => {
                self.timer(200, t);
                self.consume()?;
            }
            Timer::Fault => {
                if self.healing_since.is_none() {
                    let next = self.rng.range(300, 2500);
                    self.timer(next, t);
                    self.fault();
                }
            }
            Timer::Restart(i) => {
                if !self.nodes[i].up {
                    self.restart(i);
                }
            }
            Timer::Heal(i) => {
                if self.nodes[i].isolated.take().is_some() {
                    self.trace(|| format!("b{} network healed", i + 1));
                }
            }
        }
        Ok(())
    }

    // ---- controller -----------------------------------------------------------------

    /// The pusher: one LeaderAndIsr per action, stamped with the epochs. A push to a
    /// broker whose control connection is cut is retried, as the real pusher does, for
    /// up to `PUSH_DEADLINE_MS` and then given up (lost); one retried past the cut
    /// arrives after it heals.
    fn controller_actions(&mut self, actions: Vec<Ctl>) {
        for a in actions {
            let (broker, partitions, full_state) = match a {
                Ctl::LeaderAndIsr { broker, partitions } => (broker, partitions, false),
                Ctl::FullState { broker, partitions } => (broker, partitions, true),
                _ => continue,
            };
            let Some(broker_epoch) = self.controller.broker_epoch(broker) else {
                continue;
            };
            let i = broker as usize - 1;
            let msg = Msg::LeaderAndIsr {
                controller_epoch: self.controller_epoch,
                broker_epoch,
                partitions,
                full_state,
            };
            let cut_until = self.nodes[i].pushes_cut_until;
            if cut_until <= self.now_ms {
                self.send(Addr::Controller, Addr::Broker(i), msg);
            } else if cut_until < self.now_ms + PUSH_DEADLINE_MS {
                let at = cut_until + self.rng.range(1, 100);
                let to_incarnation = self.nodes[i].incarnation;
                let env = Envelope {
                    from: Addr::Controller,
                    to: Addr::Broker(i),
                    to_incarnation,
                    msg,
                };
                self.schedule(at, Item::Deliver(env));
            } else {
                self.report.pushes_lost += 1;
                self.trace(|| format!("controller gives up a push to b{broker}"));
            }
        }
    }

    fn controller_receive(&mut self, from: Addr, msg: Msg) -> Result<(), Violation> {
        let Addr::Broker(i) = from else {
            return Ok(());
        };
        let id = i as u32 + 1;
        let now = self.now();
        match msg {
            Msg::Register { incarnation } => {
                let (epoch, actions) =
                    self.controller
                        .register(id, format!("b{id}"), None, incarnation, now);
                self.send(
                    Addr::Controller,
                    from,
                    Msg::Registered { incarnation, epoch },
                );
                self.controller_actions(actions);
            }
            Msg::Heartbeat {
                epoch,
                roles_digest,
            } => {
                if self.controller.heartbeat(id, epoch, now).is_err() {
                    self.send(Addr::Controller, from, Msg::HeartbeatRefused);
                } else {
                    let reported = Reported {
                        roles_digest,
                        metadata_digest: None,
                    };
                    let actions = self.controller.reconcile(id, reported, now);
                    if !actions.is_empty() {
                        self.trace(|| {
                            format!("controller re-sends b{id}'s state (reconciliation)")
                        });
                    }
                    self.controller_actions(actions);
                }
            }
            Msg::AlterPartition {
                broker_epoch,
                proposals,
            } => {
                let Some(proposal) = proposals.into_iter().next_back() else {
                    return Ok(());
                };
                let result = self.controller.alter_partition(
                    id,
                    broker_epoch,
                    TOPIC,
                    0,
                    proposal.leader_epoch.to_wire(),
                    proposal.partition_epoch,
                    proposal.new_isr.iter().map(|b| b.0).collect(),
                );
                if let Ok((_, actions)) = result {
                    self.trace(|| {
                        format!("controller committed ISR {:?} from b{id}", proposal.new_isr)
                    });
                    self.controller_actions(actions);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
