//! The heartbeat task beside a Postgres stream: it asks the server for a heartbeat
//! message every `--heartbeat-ms` (so a Table's source position moves while nothing
//! captured changes), publishes the slot's lag, and watches the replication connection
//! for a stall the stream library cannot see. It runs on its own connection, in its own
//! task, for one run of the stream loop; the loop marks when it waits on the stream
//! ([`StallWatch::reading`]) and returns an error when told the connection stalled.

use std::time::Duration;

use pg_walstream::CancellationToken;
use tracing::warn;

use super::{connect, pg_text};

/// How long the server may wait to send while the connector waits to read before the
/// replication connection counts as stalled.
const STALL_AFTER: Duration = Duration::from_secs(10);

/// Detects a replication connection whose reader stopped reading although data waits in
/// its socket: the walsender blocked writing (`WalSenderWriteData`) while the stream
/// loop waits on the stream. pg_walstream 0.10 can get there on large messages under
/// load (it waits for a new readiness edge with data still in the socket, and the
/// server, its window full, sends nothing new), and the walsender is then killed by
/// `wal_sender_timeout` while the connector waits forever. The run restarts instead.
#[derive(Default)]
pub(super) struct StallWatch {
    /// When the stream loop began waiting on the stream (ms since the epoch; 0: it is
    /// not waiting — handing events on, which may block on a slow writer, is not a stall).
    reading_since_ms: std::sync::atomic::AtomicI64,
    pub(super) stalled: tokio::sync::Notify,
}

impl StallWatch {
    pub(super) fn reading(&self, yes: bool) {
        let v = if yes { now_ms().max(1) } else { 0 };
        self.reading_since_ms
            .store(v, std::sync::atomic::Ordering::Release);
    }

    fn reading_for(&self) -> Option<Duration> {
        let since = self
            .reading_since_ms
            .load(std::sync::atomic::Ordering::Acquire);
        (since > 0).then(|| Duration::from_millis((now_ms() - since).max(0) as u64))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Asks for a heartbeat every `every`, and publishes the slot's lag in bytes
/// (`sluice_cdc_lag_bytes`: the server's WAL position minus `confirmed_flush_lsn`).
/// Also watches for a stalled replication connection (see [`StallWatch`]).
pub(super) async fn heartbeats(
    dsn: &str,
    slot: &str,
    every: Duration,
    stop: CancellationToken,
    watch: &StallWatch,
) {
    let mut client = None;
    let mut server_blocked_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if client.is_none() {
            client = connect(dsn).await.ok();
        }
        let mut lost = false;
        if let Some(c) = &client {
            if let Err(e) = c
                .execute(
                    "SELECT pg_logical_emit_message(true, 'sluice.heartbeat', '')",
                    &[],
                )
                .await
            {
                warn!(error = %pg_text(&e), "heartbeat message failed");
                lost = true;
            } else if let Ok(row) = c
                .query_one(
                    "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8 \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
            {
                if let Ok(Some(lag)) = row.try_get::<_, Option<f64>>(0) {
                    metrics::gauge!("sluice_cdc_lag_bytes").set(lag);
                }
            }
            // The walsender waiting to write to us while we wait to read it.
            let blocked = c
                .query_opt(
                    "SELECT a.wait_event FROM pg_replication_slots s \
                     JOIN pg_stat_activity a ON a.pid = s.active_pid \
                     WHERE s.slot_name = $1 AND a.wait_event = 'WalSenderWriteData'",
                    &[&slot],
                )
                .await
                .is_ok_and(|r| r.is_some());
            let reading = watch.reading_for().is_some_and(|d| d >= STALL_AFTER);
            if blocked && reading {
                let since = *server_blocked_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= STALL_AFTER {
                    warn!(slot, "the replication connection stalled (the server waits to send, the connector to read): reconnecting");
                    watch.stalled.notify_one();
                    server_blocked_since = None;
                }
            } else {
                server_blocked_since = None;
            }
        }
        if lost {
            client = None;
        }
    }
}
