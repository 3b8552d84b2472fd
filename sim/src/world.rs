//! The simulated world: brokers, controller, producer, consumer, network, faults, and
//! the step loop that delivers one message or fires one timer at a time in time order.
//!
//! Brokers host one partition (topic `t`, partition 0) with the real `PartitionState`;
//! the log is a `Vec<Entry>` plus the real `EpochEntries`. The controller is the real
//! `ClusterState`. The glue here mirrors what `ReplicaManager`, the fetcher and the
//! controller's driver do with real sockets and files, message for message.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use sluice_broker::log::EpochEntries;
use sluice_broker::replica::state::{
    self, Action, Event, IsrProposal, NewWaiter, PartitionState, Refusal, Role, StateConfig,
    WaiterId,
};
use sluice_controller::state::{Action as Ctl, ClusterState, Snapshot};
use sluice_proto::{v1, BrokerId, ErrorCode, LeaderEpoch, Offset};

use crate::check::{Checker, Entry, Violation};
use crate::rng::Rng;

const TOPIC: &str = "t";
const CONTROLLER_ID: u32 = 100;
const NODE_TICK_MS: u64 = 100;
const FETCH_TIMEOUT_MS: u64 = 3000;
const FETCH_MAX_ENTRIES: usize = 64;
const PRODUCE_TIMEOUT_MS: u64 = 4000;
const CLIENT_TIMEOUT_MS: u64 = 6000;
const CLIENT_INFLIGHT_MAX: usize = 16;
/// A follower whose fetch came back empty asks again after this (a long-poll's wait).
const FETCH_IDLE_MS: u64 = 10;
const TRACE_LINES: usize = 60;
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

#[derive(Debug, Clone)]
struct FetchData {
    base: u64,
    entries: Vec<Entry>,
    hw: Offset,
    diverging: Option<(Option<LeaderEpoch>, Offset)>,
}

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
    },
    HeartbeatRefused,
    AlterPartition {
        broker_epoch: i64,
        proposal: IsrProposal,
    },
    LeaderAndIsr {
        controller_epoch: i64,
        broker_epoch: i64,
        state: v1::PartitionState,
    },
    Fetch {
        req: u64,
        fetch_offset: Offset,
        current_epoch: LeaderEpoch,
        last_fetched_epoch: Option<LeaderEpoch>,
    },
    FetchAnswer {
        req: u64,
        answer: Result<FetchData, (ErrorCode, u64)>,
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

struct Node {
    id: BrokerId,
    up: bool,
    incarnation: u64,
    paused_until: u64,
    isolated: Option<bool>,
    broker_epoch: Option<i64>,
    controller_epoch: i64,
    log: Vec<Entry>,
    epochs: EpochEntries,
    part: Option<PartitionState>,
    /// waiter -> (client request, offset, record id)
    waiters: BTreeMap<WaiterId, (u64, u64, u64)>,
    next_waiter: u64,
    /// Outstanding follower fetch: (request, sent at, offset, leader epoch).
    fetch: Option<(u64, u64, Offset, LeaderEpoch)>,
    next_req: u64,
    ticks: u64,
}

impl Node {
    fn leo(&self) -> Offset {
        Offset(self.log.len() as u64)
    }
    fn leads(&self) -> bool {
        self.up && self.part.as_ref().is_some_and(|p| p.is_leader())
    }
}

struct World {
    cfg: SimConfig,
    rng: Rng,
    now_ms: u64,
    base: Instant,
    step: u64,
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
                broker_epoch: None,
                controller_epoch: 0,
                log: Vec::new(),
                epochs: EpochEntries::default(),
                part: None,
                waiters: BTreeMap::new(),
                next_waiter: 0,
                fetch: None,
                next_req: 0,
                ticks: 0,
            })
            .collect();
        World {
            rng: Rng::new(seed),
            cfg,
            now_ms: 0,
            base,
            step: 0,
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
        }
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
            self.step += 1;
            if self.step > STEPS_MAX {
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
        let configs = BTreeMap::from([(
            "min.insync.replicas".to_string(),
            self.cfg.min_insync_replicas.to_string(),
        )]);
        match self
            .controller
            .create_topic(TOPIC, 1, self.cfg.brokers, configs, "id".into())
        {
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
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "\n  b{}(up={} leo={} hw={:?} epochs={:?} tail={:?} role={:?})",
                    n.id,
                    n.up,
                    n.log.len(),
                    n.part.as_ref().map(|p| p.high_watermark().0),
                    n.epochs
                        .entries()
                        .iter()
                        .map(|e| (e.epoch, e.start_offset))
                        .collect::<Vec<_>>(),
                    n.log
                        .iter()
                        .enumerate()
                        .rev()
                        .take(12)
                        .map(|(o, e)| (o, e.epoch, e.id))
                        .collect::<Vec<_>>(),
                    n.part.as_ref().map(|p| (
                        p.role().leader,
                        p.role().leader_epoch.0,
                        p.role().isr.clone()
                    ))
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
    /// reaches the log, nothing it would have sent leaves, and the process is gone.
    fn torn_delivery(&mut self, i: usize, env: Envelope) -> Result<(), Violation> {
        let before = self.nodes[i].log.len();
        let queued = self.seq;
        self.broker_receive(i, env.from, env.msg)?;
        // Drop everything this handling sent.
        let sent: Vec<u64> = self.items.range(queued + 1..).map(|(s, _)| *s).collect();
        for s in sent {
            self.items.remove(&s);
        }
        self.queue.retain(|Reverse((_, s))| *s <= queued);
        let after = self.nodes[i].log.len();
        if after > before {
            let keep = before + self.rng.range(0, (after - before) as u64 + 1) as usize;
            // Only what this very step appended is lost: the replica never reported it
            // (its next fetch was never sent), so no acknowledgement counted on it.
            let lost = after - keep;
            self.trace(|| format!("b{} loses the last {lost} entries it was writing", i + 1));
            let n = &mut self.nodes[i];
            n.log.truncate(keep);
            n.epochs.truncate_from_end(keep as u64);
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
                if self.now_ms % 1000 < 100 {
                    // The pusher retries until a broker acknowledges: resend everything.
                    let actions = self.controller.all_leader_and_isr();
                    self.controller_actions(actions);
                }
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

    fn controller_actions(&mut self, actions: Vec<Ctl>) {
        for a in actions {
            if let Ctl::LeaderAndIsr { broker, partitions } = a {
                let Some(broker_epoch) = self.controller.broker_epoch(broker) else {
                    continue;
                };
                for state in partitions {
                    let msg = Msg::LeaderAndIsr {
                        controller_epoch: self.controller_epoch,
                        broker_epoch,
                        state,
                    };
                    self.send(Addr::Controller, Addr::Broker(broker as usize - 1), msg);
                }
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
            Msg::Heartbeat { epoch } => {
                if self.controller.heartbeat(id, epoch, now).is_err() {
                    self.send(Addr::Controller, from, Msg::HeartbeatRefused);
                }
            }
            Msg::AlterPartition {
                broker_epoch,
                proposal,
            } => {
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

    // ---- brokers --------------------------------------------------------------------

    fn broker_receive(&mut self, i: usize, from: Addr, msg: Msg) -> Result<(), Violation> {
        match msg {
            Msg::Registered { incarnation, epoch } => {
                if incarnation == self.nodes[i].incarnation {
                    self.nodes[i].broker_epoch = Some(epoch);
                }
            }
            Msg::HeartbeatRefused => self.nodes[i].broker_epoch = None,
            Msg::LeaderAndIsr {
                controller_epoch,
                broker_epoch,
                state,
            } => self.leader_and_isr(i, controller_epoch, broker_epoch, state)?,
            Msg::Fetch {
                req,
                fetch_offset,
                current_epoch,
                last_fetched_epoch,
            } => {
                let answer =
                    self.answer_fetch(i, from, fetch_offset, current_epoch, last_fetched_epoch)?;
                self.send(Addr::Broker(i), from, Msg::FetchAnswer { req, answer });
            }
            Msg::FetchAnswer { req, answer } => self.apply_fetch(i, req, answer)?,
            Msg::Produce { req, id } => self.produce(i, req, id)?,
            _ => {}
        }
        Ok(())
    }

    fn leader_and_isr(
        &mut self,
        i: usize,
        controller_epoch: i64,
        broker_epoch: i64,
        ps: v1::PartitionState,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        if controller_epoch < n.controller_epoch || broker_epoch < n.broker_epoch.unwrap_or(-1) {
            return Ok(());
        }
        n.controller_epoch = controller_epoch;
        let Some(leader_epoch) = LeaderEpoch::from_wire(ps.leader_epoch) else {
            return Ok(());
        };
        let role = Role {
            leader: (ps.leader >= 0).then_some(BrokerId(ps.leader as u32)),
            leader_epoch,
            replicas: ps.replicas.iter().copied().map(BrokerId).collect(),
            isr: ps.isr.iter().copied().map(BrokerId).collect(),
            partition_epoch: ps.partition_epoch,
        };
        if !role.replicas.contains(&n.id) {
            return Ok(());
        }
        let config = self.state_config();
        let n = &mut self.nodes[i];
        let (me, leo) = (n.id, n.leo());
        let part = n
            .part
            .get_or_insert_with(|| PartitionState::new(me, config));
        let was_leader = part.is_leader();
        let old_epoch = part.role().leader_epoch;
        let event = Event::Role {
            role,
            log_end_offset: leo,
            now: self.base + Duration::from_millis(self.now_ms),
        };
        let actions = part.handle(event);
        let (leads, epoch) = (part.is_leader(), part.role().leader_epoch);
        if leads != was_leader || epoch != old_epoch {
            self.trace(|| format!("b{} role: leader={leads} epoch={epoch}", i + 1));
        }
        if leads {
            let me = BrokerId(i as u32 + 1);
            self.checker.on_leader(epoch, me)?;
            if !was_leader || epoch != old_epoch {
                self.checker
                    .leader_complete(me, epoch, &self.nodes[i].log)?;
            }
        }
        self.node_actions(i, actions)
    }

    fn state_config(&self) -> StateConfig {
        StateConfig {
            min_insync_replicas: self.cfg.min_insync_replicas,
            replica_lag_max: Duration::from_millis(self.cfg.replica_lag_max_ms),
            isr_proposal_interval: Duration::from_millis(1000),
        }
    }

    fn node_actions(&mut self, i: usize, actions: Vec<Action>) -> Result<(), Violation> {
        for a in actions {
            match a {
                Action::AssignLeaderEpoch { epoch, .. } => {
                    let n = &mut self.nodes[i];
                    let end = n.log.len() as u64;
                    n.epochs.assign(epoch.0, end);
                }
                Action::PublishHighWatermark(hw) => {
                    let n = &self.nodes[i];
                    if hw > n.leo() {
                        return Err(format!(
                            "b{} published HW {hw} above its log end {}",
                            n.id,
                            n.leo()
                        ));
                    }
                    if let Some(p) = n.part.as_ref().filter(|p| p.is_leader()) {
                        let epoch = p.role().leader_epoch;
                        self.checker.on_leader_hw(n.id, epoch, hw)?;
                    }
                }
                Action::Complete { waiter, result } => {
                    let Some((req, offset, id)) = self.nodes[i].waiters.remove(&waiter) else {
                        continue;
                    };
                    let epoch = self.nodes[i]
                        .part
                        .as_ref()
                        .map_or(LeaderEpoch(0), |p| p.role().leader_epoch);
                    if result.is_ok() {
                        let holders = self
                            .nodes
                            .iter()
                            .filter(|n| n.log.get(offset as usize).map(|e| e.id) == Some(id))
                            .count();
                        self.checker.on_ack(
                            offset,
                            id,
                            epoch,
                            holders,
                            self.cfg.min_insync_replicas,
                        )?;
                        self.trace(|| {
                            format!(
                                "b{} acks record {id} at {offset} ({holders} holders)",
                                i + 1
                            )
                        });
                    }
                    let result = result.map(|()| offset);
                    self.send(Addr::Broker(i), Addr::Client, Msg::Produced { req, result });
                }
                Action::ProposeIsr(proposal) => {
                    if let Some(broker_epoch) = self.nodes[i].broker_epoch {
                        let msg = Msg::AlterPartition {
                            broker_epoch,
                            proposal,
                        };
                        self.send(Addr::Broker(i), Addr::Controller, msg);
                    }
                }
            }
        }
        Ok(())
    }

    fn node_tick(&mut self, i: usize) -> Result<(), Violation> {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.ticks += 1;
        let every_half_second = n.ticks % 5 == 0;
        match n.broker_epoch {
            None if every_half_second || n.ticks == 1 => {
                let incarnation = n.incarnation;
                self.send(
                    Addr::Broker(i),
                    Addr::Controller,
                    Msg::Register { incarnation },
                );
            }
            Some(epoch) if every_half_second => {
                self.send(Addr::Broker(i), Addr::Controller, Msg::Heartbeat { epoch });
            }
            _ => {}
        }
        let n = &mut self.nodes[i];
        if let Some(part) = n.part.as_mut() {
            let actions = part.handle(Event::Tick { now });
            self.node_actions(i, actions)?;
        }
        let n = &self.nodes[i];
        let stale = n
            .fetch
            .is_none_or(|(_, at, _, _)| at + FETCH_TIMEOUT_MS <= self.now_ms);
        if stale {
            self.send_fetch(i);
        }
        Ok(())
    }

    fn send_fetch(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(part) = n.part.as_ref() else { return };
        let Some(leader) = part.role().leader.filter(|&l| l != n.id) else {
            return;
        };
        let epoch = part.role().leader_epoch;
        n.next_req += 1;
        let req = n.next_req;
        n.fetch = Some((req, self.now_ms, n.leo(), epoch));
        let msg = Msg::Fetch {
            req,
            fetch_offset: n.leo(),
            current_epoch: epoch,
            last_fetched_epoch: n.epochs.latest().map(|e| LeaderEpoch(e.epoch)),
        };
        self.send(Addr::Broker(i), Addr::Broker(leader.0 as usize - 1), msg);
    }

    /// Leader side of a follower fetch, as `ReplicaManager::fetch_for_follower` does it.
    fn answer_fetch(
        &mut self,
        i: usize,
        from: Addr,
        fetch_offset: Offset,
        current_epoch: LeaderEpoch,
        last_fetched_epoch: Option<LeaderEpoch>,
    ) -> Result<Result<FetchData, (ErrorCode, u64)>, Violation> {
        let Addr::Broker(f) = from else {
            return Ok(Err((ErrorCode::InvalidRequest, 0)));
        };
        let now = self.now();
        let n = &mut self.nodes[i];
        let leo = n.leo();
        let Some(part) = n.part.as_mut().filter(|p| p.is_leader()) else {
            return Ok(Err((ErrorCode::NotLeaderOrFollower, leo.0)));
        };
        let follower = BrokerId(f as u32 + 1);
        if !part.role().replicas.contains(&follower) {
            return Ok(Err((ErrorCode::NotLeaderOrFollower, leo.0)));
        }
        if current_epoch != part.role().leader_epoch {
            return Ok(Err((ErrorCode::FencedLeaderEpoch, leo.0)));
        }
        if let Some(d) = state::divergence(
            &n.epochs,
            Offset::ZERO,
            leo,
            last_fetched_epoch,
            fetch_offset,
        ) {
            let hw = part.high_watermark();
            return Ok(Ok(FetchData {
                base: fetch_offset.0,
                entries: Vec::new(),
                hw,
                diverging: Some(d),
            }));
        }
        if fetch_offset > leo {
            return Ok(Err((ErrorCode::OffsetOutOfRange, leo.0)));
        }
        let actions = part.handle(Event::FollowerFetch {
            replica: follower,
            fetch_offset,
            log_end_offset: leo,
            now,
        });
        self.node_actions(i, actions)?;
        let n = &self.nodes[i];
        let start = fetch_offset.0 as usize;
        let end = n.log.len().min(start + FETCH_MAX_ENTRIES);
        let hw = n.part.as_ref().map_or(Offset::ZERO, |p| p.high_watermark());
        Ok(Ok(FetchData {
            base: fetch_offset.0,
            entries: n.log[start..end].to_vec(),
            hw,
            diverging: None,
        }))
    }

    fn truncate(&mut self, i: usize, to: u64, why: &str) -> Result<(), Violation> {
        let n = &self.nodes[i];
        let removed: Vec<(u64, Entry)> = (to as usize..n.log.len())
            .map(|o| (o as u64, n.log[o]))
            .collect();
        let following = n
            .part
            .as_ref()
            .map_or(LeaderEpoch(0), |p| p.role().leader_epoch);
        self.checker.on_truncate(n.id, following, &removed, why)?;
        if !removed.is_empty() {
            self.report.truncations += 1;
            self.trace(|| {
                format!(
                    "b{} truncates {} -> {to} ({why})",
                    i + 1,
                    removed.len() + to as usize
                )
            });
        }
        let n = &mut self.nodes[i];
        n.log.truncate(to as usize);
        n.epochs.truncate_from_end(to);
        let leo = n.leo();
        if let Some(part) = n.part.as_mut() {
            let actions = part.handle(Event::Truncated {
                log_end_offset: leo,
            });
            self.node_actions(i, actions)?;
        }
        Ok(())
    }

    /// Follower side, as `ReplicaManager::apply_fetched` does it.
    fn apply_fetch(
        &mut self,
        i: usize,
        req: u64,
        answer: Result<FetchData, (ErrorCode, u64)>,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[i];
        let Some((sent, _, offset, epoch)) = n.fetch else {
            return Ok(());
        };
        if sent != req {
            return Ok(());
        }
        n.fetch = None;
        let Some(part) = n.part.as_ref() else {
            return Ok(());
        };
        if part.role().leader_epoch != epoch || part.is_leader() || n.leo() != offset {
            return Ok(());
        }
        match answer {
            Err((ErrorCode::OffsetOutOfRange, leader_end)) if n.log.len() as u64 > leader_end => {
                self.truncate(i, leader_end, "past the leader's end")
            }
            Err(_) => Ok(()),
            Ok(FetchData {
                diverging: Some(d), ..
            }) => {
                let target = state::truncation_target(&n.epochs, n.leo(), d);
                // As `Log::truncate_to`: also drops an epoch begun at the cut.
                self.truncate(i, target.0, "divergence")
            }
            Ok(data) => {
                let got = !data.entries.is_empty();
                for (k, e) in data.entries.iter().enumerate() {
                    let offset = data.base + k as u64;
                    if offset >= n.log.len() as u64 {
                        n.epochs.assign(e.epoch, offset);
                        n.log.push(*e);
                    }
                }
                let leo = n.leo();
                let part = n.part.as_mut().expect("checked above");
                let actions = part.handle(Event::Replicated {
                    leader_high_watermark: data.hw,
                    log_end_offset: leo,
                });
                self.node_actions(i, actions)?;
                if got {
                    self.send_fetch(i);
                } else {
                    self.timer(FETCH_IDLE_MS, Timer::Fetch(i));
                }
                Ok(())
            }
        }
    }

    fn produce(&mut self, i: usize, req: u64, id: u64) -> Result<(), Violation> {
        let now = self.now();
        let n = &mut self.nodes[i];
        let Some(part) = n.part.as_mut() else {
            self.send(
                Addr::Broker(i),
                Addr::Client,
                Msg::Produced {
                    req,
                    result: Err(ErrorCode::NotLeaderOrFollower),
                },
            );
            return Ok(());
        };
        let epoch = match part.check_produce(true) {
            Ok(e) => e,
            Err(refusal) => {
                let code = match refusal {
                    Refusal::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
                    Refusal::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
                };
                self.send(
                    Addr::Broker(i),
                    Addr::Client,
                    Msg::Produced {
                        req,
                        result: Err(code),
                    },
                );
                return Ok(());
            }
        };
        let offset = n.log.len() as u64;
        n.epochs.assign(epoch.0, offset);
        n.log.push(Entry { epoch: epoch.0, id });
        n.next_waiter += 1;
        let waiter = WaiterId(n.next_waiter);
        n.waiters.insert(waiter, (req, offset, id));
        let actions = part.handle(Event::Appended {
            log_end_offset: Offset(offset + 1),
            waiter: Some(NewWaiter {
                id: waiter,
                required_end: Offset(offset + 1),
                deadline: now + Duration::from_millis(PRODUCE_TIMEOUT_MS),
            }),
            now,
        });
        self.node_actions(i, actions)
    }

    // ---- producer and consumer ------------------------------------------------------

    fn client_tick(&mut self) {
        let now = self.now_ms;
        self.client_inflight
            .retain(|_, (_, sent)| *sent + CLIENT_TIMEOUT_MS > now);
        let done = self.healing_since.is_some() && self.acked_after_heal >= 20;
        if done || self.client_inflight.len() >= CLIENT_INFLIGHT_MAX {
            return;
        }
        let Some(leader) = self.partition_record().and_then(|p| p.leader) else {
            return;
        };
        let (req, id) = (self.next_client_req, self.next_record);
        self.next_client_req += 1;
        self.next_record += 1;
        self.client_inflight.insert(req, (id, now));
        self.send(
            Addr::Client,
            Addr::Broker(leader as usize - 1),
            Msg::Produce { req, id },
        );
    }

    fn client_receive(&mut self, msg: Msg) -> Result<(), Violation> {
        if let Msg::Produced { req, result } = msg {
            if self.client_inflight.remove(&req).is_some()
                && result.is_ok()
                && self.healing_since.is_some()
            {
                self.acked_after_heal += 1;
            }
        }
        Ok(())
    }

    /// A consumer reading from whichever broker leads the newest epoch, below its HW.
    fn consume(&mut self) -> Result<(), Violation> {
        let leader = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].leads() && self.nodes[i].paused_until <= self.now_ms)
            .max_by_key(|&i| self.nodes[i].part.as_ref().map(|p| p.role().leader_epoch));
        let Some(i) = leader else { return Ok(()) };
        let n = &self.nodes[i];
        let hw = n.part.as_ref().map_or(0, |p| p.high_watermark().0);
        let epoch = n
            .part
            .as_ref()
            .map_or(LeaderEpoch(0), |p| p.role().leader_epoch);
        if hw > n.log.len() as u64 {
            return Err(format!(
                "b{} high watermark {hw} above its log end {}",
                n.id,
                n.log.len()
            ));
        }
        let reads: Vec<(u64, u64)> = (self.consumer_read_upto..hw)
            .map(|o| (o, n.log[o as usize].id))
            .collect();
        for (o, id) in reads {
            self.checker.on_read(o, id, epoch)?;
        }
        self.consumer_read_upto = self.consumer_read_upto.max(hw);
        Ok(())
    }

    // ---- faults ---------------------------------------------------------------------

    fn crash(&mut self, i: usize, why: &str) {
        let n = &mut self.nodes[i];
        n.up = false;
        n.part = None;
        n.waiters.clear();
        n.fetch = None;
        n.broker_epoch = None;
        n.paused_until = 0;
        let after = self.rng.range(200, 4000);
        self.timer(after, Timer::Restart(i));
        self.trace(|| format!("b{} crashes ({why}); restarts in {after} ms", i + 1));
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = true;
        n.incarnation += 1;
        n.ticks = 0;
        self.trace(|| format!("b{} restarts", i + 1));
    }

    fn fault(&mut self) {
        self.report.faults += 1;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        let Some(&i) = self.rng.pick(&up) else { return };
        match self.rng.range(0, 7) {
            0 => self.crash(i, "kill -9"),
            1 => {
                self.tear_next = Some(i);
                self.trace(|| format!("b{} will crash mid-write", i + 1));
            }
            2 => {
                let ms = self.rng.range(1000, 4000);
                self.nodes[i].paused_until = self.now_ms + ms;
                self.trace(|| format!("b{} paused for {ms} ms", i + 1));
            }
            3 => {
                let from_controller = self.rng.chance(0.5);
                self.nodes[i].isolated = Some(from_controller);
                let ms = self.rng.range(1000, 5000);
                self.timer(ms, Timer::Heal(i));
                self.trace(|| format!("b{} cut from its peers (and the controller: {from_controller}) for {ms} ms", i + 1));
            }
            4 => {
                self.controller_epoch += 1;
                let snap = self.controller.snap.clone();
                self.controller = ClusterState::new(
                    snap,
                    self.now(),
                    Duration::from_millis(self.cfg.session_timeout_ms),
                    CONTROLLER_ID,
                    self.controller_epoch,
                );
                let epoch = self.controller_epoch;
                self.trace(|| format!("controller fails over to epoch {epoch}"));
                let actions = self.controller.all_leader_and_isr();
                self.controller_actions(actions);
            }
            _ => self.move_leadership(),
        }
    }

    /// Reorders the replica list so another replica is preferred, then elects it.
    fn move_leadership(&mut self) {
        let Some(p) = self.partition_record().cloned() else {
            return;
        };
        let mut order = p.replicas.clone();
        let k = self.rng.range(1, order.len() as u64) as usize;
        order.rotate_left(k);
        if let Ok(actions) = self.controller.reassign(TOPIC, 0, order.clone()) {
            self.controller_actions(actions);
        }
        if let Ok((moved, actions)) = self.controller.elect_preferred(Some(TOPIC)) {
            self.trace(|| format!("leadership moved to {order:?}[0]: {moved} partition(s)"));
            self.controller_actions(actions);
        }
    }

    fn heal_all(&mut self) {
        self.healing_since = Some(self.now_ms);
        self.tear_next = None;
        self.trace(|| "healing: no more faults".into());
        for i in 0..self.nodes.len() {
            self.nodes[i].isolated = None;
            self.nodes[i].paused_until = self.nodes[i].paused_until.min(self.now_ms);
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
    }

    // ---- invariants -----------------------------------------------------------------

    fn check_step(&mut self) -> Result<(), Violation> {
        if self.step % 16 != 0 {
            return Ok(());
        }
        let logs: Vec<(BrokerId, &[Entry], Offset)> = self
            .nodes
            .iter()
            .filter_map(|n| {
                n.part
                    .as_ref()
                    .map(|p| (n.id, n.log.as_slice(), p.high_watermark()))
            })
            .collect();
        self.checker.agree(&logs)
    }

    /// Whole again: every replica in the ISR, every log equal to the leader's and
    /// committed, and the producer got acks after healing.
    fn healed(&self) -> Result<bool, Violation> {
        let Some(p) = self.partition_record() else {
            return Ok(false);
        };
        if p.isr.len() != p.replicas.len() || self.acked_after_heal < 20 {
            return Ok(false);
        }
        let Some(leader) = p.leader else {
            return Ok(false);
        };
        let l = &self.nodes[leader as usize - 1];
        let whole = self.nodes.iter().all(|n| {
            n.up && n.log == l.log
                && n.part
                    .as_ref()
                    .is_some_and(|p| p.high_watermark() == l.leo())
        });
        Ok(whole)
    }

    fn final_check(&mut self) -> Result<(), Violation> {
        for n in &self.nodes {
            self.checker.holds_all(n.id, &n.log)?;
        }
        Ok(())
    }
}
