//! The fence: at most one connector per slot, for the connector's whole run.
//!
//! The slot alone does not fence: Postgres lets one walsender use a slot at a time, but
//! a slot is inactive between `CREATE_REPLICATION_SLOT` and `START_REPLICATION` — the
//! whole initial copy — and a second connector starting then (a rolling update with
//! surge) would find it free, drop it and copy concurrently. So every run first takes
//! a session-level advisory lock keyed by the slot name, on a plain session of its
//! own that stays open (and is pinged) until the run ends. The lock goes with the
//! session: a connector killed -9 releases it as soon as Postgres sees the socket
//! close, and a database restart releases it too.
//!
//! A run whose fence session is lost ends (a source error: the supervisor restarts it,
//! and the restart takes the lock again, or is refused if another connector took it
//! meanwhile). A run that finds the lock held by another process is refused at once with
//! an [`Error::Config`]: the command exits non-zero instead of retrying. Held by this
//! process (the session of a run that just failed, not yet ended on the server; the
//! session's `application_name` names the process), it waits up to [`TAKE_WAIT`].

use std::time::Duration;

use super::{connect, pg_text};
use crate::Error;

/// How long a run waits for this process's own earlier session to let go.
const TAKE_WAIT: Duration = Duration::from_secs(5);

/// How often the fence session is pinged: a lost session ends the run within this
/// (plus [`PING_TIMEOUT`]).
const PING_EVERY: Duration = Duration::from_secs(1);

/// A ping not answered within this counts as a lost session.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock key of a slot: FNV-1a (64 bits) of a fixed prefix and the slot
/// name, so every version of the connector computes the same key.
pub(super) fn key_of(slot: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "sluice.cdc.fence:".bytes().chain(slot.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// `sluice cdc fence <pid>.<start ns>`: unique to this process.
fn application_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("sluice cdc fence {}.{started}", std::process::id())
    })
    .clone()
}

/// A held fence. Dropping it closes its session, which releases the lock.
pub(super) struct Fence {
    client: tokio_postgres::Client,
    slot: String,
}

impl Fence {
    /// Takes the lock for `slot`, or says who holds it.
    pub(super) async fn take(dsn: &str, slot: &str) -> Result<Fence, Error> {
        let client = connect(dsn).await?;
        let fence_err = |what: &'static str| {
            move |e: tokio_postgres::Error| {
                Error::Source(format!("postgres: fence: {what}: {}", pg_text(&e)))
            }
        };
        // Visible to a DBA in pg_stat_activity beside the lock in pg_locks, and how a
        // run tells this process's own earlier session from another connector's.
        let me = application_name();
        client
            .execute("SELECT set_config('application_name', $1, false)", &[&me])
            .await
            .map_err(fence_err("set application_name"))?;
        // A connector whose host vanishes without closing the socket leaves no one to
        // close the session; the server's TCP keepalives (off for ~2 h by default) end
        // it, and free the lock, within about half a minute instead.
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                 SET tcp_keepalives_count = 3",
            )
            .await
            .map_err(fence_err("set tcp keepalives"))?;
        let key = key_of(slot);
        let deadline = tokio::time::Instant::now() + TAKE_WAIT;
        let holder = loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(fence_err("pg_try_advisory_lock"))?
                .get(0);
            if got {
                return Ok(Fence {
                    client,
                    slot: slot.to_string(),
                });
            }
            // A bigint advisory lock shows in pg_locks as classid (high half), objid
            // (low half), objsubid 1.
            let holder = client
                .query_opt(
                    "SELECT l.pid, a.application_name::text FROM pg_locks l \
                     LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted \
                     AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2 \
                     AND l.database = (SELECT oid FROM pg_database \
                                       WHERE datname = current_database())",
                    &[&((key as u64 >> 32) as u32), &(key as u64 as u32)],
                )
                .await
                .map_err(fence_err("read pg_locks"))?
                .map(|r| (r.get::<_, i32>(0), r.get::<_, Option<String>>(1)));
            let mine = matches!(&holder, Some((_, Some(name))) if *name == me);
            if !mine || tokio::time::Instant::now() >= deadline {
                break holder.map(|(pid, _)| pid);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Err(Error::Config(format!(
            "postgres: another connector for slot {slot} is running: its fence (an advisory \
             lock) is in use by session pid {}; stop that connector first, or give this one \
             its own --slot and --topic-prefix",
            holder.map_or("?".to_string(), |p| p.to_string())
        )))
    }

    /// Returns (an error) once the fence session is gone or stops answering.
    pub(super) async fn lost(&self) -> Error {
        loop {
            tokio::time::sleep(PING_EVERY).await;
            match tokio::time::timeout(PING_TIMEOUT, self.client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Error::Source(format!(
                        "postgres: the fence session of slot {} was lost ({}); the run stops \
                         so that no other connector can copy or stream beside it",
                        self.slot,
                        pg_text(&e)
                    ))
                }
                Err(_) => {
                    return Error::Source(format!(
                        "postgres: the fence session of slot {} did not answer within {:?}",
                        self.slot, PING_TIMEOUT
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_and_differs_by_slot() {
        // Pinned (FNV-1a computed independently): a connector of another version
        // must compute the same key, or two versions would not fence each other.
        assert_eq!(key_of("sluice_cdc"), 0x323a_8b63_6ea2_1c8b_u64 as i64);
        assert_ne!(key_of("sluice_cdc"), key_of("sluice_cdd"));
    }
}
