//! A connector's liveness, for `/healthz` beside `/metrics`.
//!
//! The runner marks what it does ([`Health::event`], [`Health::acked`], the phase from
//! the events it sees); the supervisor marks a run that failed and one that starts.
//! [`Health::judge`] turns that into healthy or not, at a given time: healthy while the
//! connector copies or streams, has not failed since, and is not stuck — records in
//! flight with no acknowledgement for `stale_after`, or (for a source that sends
//! heartbeats while idle, as Postgres does every `--heartbeat-ms`) no event from the
//! source for `stale_after`. A MariaDB source sends nothing while the server is idle,
//! so only its failures (a silent binlog connection fails the run after three heartbeat
//! periods) and stuck writes count.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

use crate::sink::now_ms;

/// What a connector is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// A run is starting: fence, setup, reading the topics' positions.
    Starting = 0,
    /// A copy of tables is being written.
    Copying = 1,
    /// Streaming changes (also between the start of a run's stream and its first event).
    Streaming = 2,
    /// The last run failed; the supervisor waits to start the next.
    Failed = 3,
    /// Stopped (Ctrl-C, or a setup error).
    Stopped = 4,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Copying => "copying",
            Phase::Streaming => "streaming",
            Phase::Failed => "failed",
            Phase::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Copying,
            2 => Phase::Streaming,
            3 => Phase::Failed,
            4 => Phase::Stopped,
            _ => Phase::Starting,
        }
    }
}

/// Shared between the runner, the supervisor and the `/healthz` handler.
#[derive(Debug, Default)]
pub struct Health {
    phase: AtomicU8,
    /// When the runner last took an event from the source (ms since the epoch; 0: never).
    last_event_ms: AtomicI64,
    /// When the broker last acknowledged a unit (or the run started).
    last_ack_ms: AtomicI64,
    /// Units handed to the producer and not acknowledged yet.
    in_flight: AtomicU64,
    /// Runs that failed and were restarted.
    pub restarts: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
}

/// The verdict `/healthz` serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub healthy: bool,
    pub phase: Phase,
    /// Since the last event from the source (ms), if any came.
    pub since_event_ms: Option<i64>,
    /// Since the last acknowledgement (ms), if any came.
    pub since_ack_ms: Option<i64>,
    /// Why it is not healthy (or the last failure's error while starting again).
    pub reason: Option<String>,
}

impl Health {
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The runner took an event from the source.
    pub fn event(&self) {
        self.last_event_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn sent(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The broker acknowledged a unit.
    pub fn acked(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_ack_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A run starts: nothing of the last run is in flight any more (and its writes
    /// count as stuck only `stale_after` from now).
    pub fn run_starting(&self) {
        self.in_flight.store(0, Ordering::Relaxed);
        self.last_ack_ms.store(now_ms(), Ordering::Relaxed);
        self.set_phase(Phase::Starting);
    }

    /// A run failed (the supervisor restarts it after a backoff).
    pub fn run_failed(&self, error: String) {
        *self.last_error.lock() = Some(error);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.set_phase(Phase::Failed);
    }

    /// Healthy or not at `now_ms` (see the module doc).
    pub fn judge(&self, now_ms: i64, idle_events: bool, stale_after_ms: i64) -> Verdict {
        let phase = self.phase();
        let since = |at: &AtomicI64| match at.load(Ordering::Relaxed) {
            0 => None,
            t => Some((now_ms - t).max(0)),
        };
        let since_event_ms = since(&self.last_event_ms);
        let since_ack_ms = since(&self.last_ack_ms);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let reason = match phase {
            Phase::Copying | Phase::Streaming => {
                if in_flight > 0 && since_ack_ms.is_none_or(|s| s > stale_after_ms) {
                    Some(format!(
                        "{in_flight} unit(s) written to Sluice and not acknowledged for over {stale_after_ms} ms"
                    ))
                } else if idle_events && since_event_ms.is_none_or(|s| s > stale_after_ms) {
                    Some(format!(
                        "no event (change or heartbeat) from the source for over {stale_after_ms} ms"
                    ))
                } else {
                    None
                }
            }
            Phase::Failed => Some(
                self.last_error
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "the last run failed".into()),
            ),
            Phase::Starting => Some(match self.last_error.lock().clone() {
                Some(e) => format!("starting again after: {e}"),
                None => "starting".into(),
            }),
            Phase::Stopped => Some("stopped".into()),
        };
        Verdict {
            healthy: reason.is_none(),
            phase,
            since_event_ms,
            since_ack_ms,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_copying_or_streaming_and_moving() {
        let h = Health::default();
        h.run_starting();
        let now = now_ms();
        assert!(!h.judge(now, true, 1000).healthy, "starting");
        h.set_phase(Phase::Streaming);
        h.event();
        assert!(h.judge(now, true, 1000).healthy);
        // A Postgres source is silent for too long: unhealthy; MariaDB may be idle.
        assert!(!h.judge(now + 5000, true, 1000).healthy);
        assert!(h.judge(now + 5000, false, 1000).healthy);
        // Writes in flight and nothing acknowledged for too long: stuck.
        h.sent();
        assert!(!h.judge(now + 5000, false, 1000).healthy);
        h.acked();
        assert!(h.judge(now_ms(), false, 1000).healthy);
        h.run_failed("postgres: connect: refused".into());
        let v = h.judge(now_ms(), true, 1000);
        assert!(!v.healthy);
        assert_eq!(v.phase, Phase::Failed);
        assert!(v.reason.unwrap().contains("refused"));
        h.run_starting();
        assert!(!h.judge(now_ms(), true, 1000).healthy);
        h.set_phase(Phase::Copying);
        h.event();
        assert!(h.judge(now_ms(), true, 1000).healthy);
    }
}
