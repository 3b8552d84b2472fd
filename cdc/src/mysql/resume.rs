//! Where a restarted MariaDB connector resumes, and whether the server can place it.
//!
//! The topics' last positions span from the oldest (streaming starts there) to the newest
//! ([`resume_position`]). Both must be placed on the server ([`place`]): by GTID when they
//! carry one (every domain in the server's binlog, and the server agrees to stream from
//! it), else by file:offset (the file exists, and on MariaDB its GTID state there is
//! empty). A position the server cannot place is a setup error naming the choice:
//! another `--dsn`, or start over with `--snapshot initial`.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow};
use sluice_proto::source_pos::{BinlogPos, Gtid, GtidSet, SourcePos};

use super::{binlog, gtids_at, my_err, variable, MySourceConfig};
use crate::position::Resume;
use crate::Error;

/// The span of the partitions' last positions: a restart streams from the oldest, and
/// the server must know the newest too (its binlog must hold every change the topics
/// hold, or the sink would drop the server's different changes that sort before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFrom {
    pub oldest: SourcePos,
    pub newest: SourcePos,
}

/// The oldest and newest last positions over the given partitions (topic, partition
/// count): a restarted connector reads the binlog from the oldest. Every partition's
/// last record is recent (heartbeats go to every partition), and the sink skips what a
/// partition already holds, so re-reading from the oldest is safe. `None` when no
/// partition holds one.
pub fn resume_position(resume: &Resume, partitions: &[(String, u32)]) -> Option<ResumeFrom> {
    use std::cmp::Ordering;
    let mut span: Option<(&SourcePos, &SourcePos)> = None;
    for (topic, n) in partitions {
        for p in 0..*n {
            let Some(last) = resume.last(topic, p) else {
                continue;
            };
            let pos = &last.pos;
            span = Some(match span {
                None => (pos, pos),
                Some((old, new)) => (
                    if pos.compare(old) == Some(Ordering::Less) {
                        pos
                    } else {
                        old
                    },
                    if pos.compare(new) == Some(Ordering::Greater) {
                        pos
                    } else {
                        new
                    },
                ),
            });
        }
    }
    span.map(|(oldest, newest)| ResumeFrom {
        oldest: oldest.clone(),
        newest: newest.clone(),
    })
}

/// Refuses a position of the topics that this server cannot place in its binlog, one
/// line naming the choice ([`unplaceable`]). With a GTID state: every domain of it is in
/// the server's binlog (MariaDB accepts a state of a domain it never had, and would
/// send that domain's changes from wherever), and the server agrees to stream from it
/// (its binlog holds those very GTIDs). Without: the file is still there ([`binlog_kept`])
/// and, on MariaDB, the server's GTID state at that offset is empty too (a file of the
/// same name written after a `RESET MASTER` has GTIDs there, or no event boundary).
pub(super) async fn place(
    cfg: &MySourceConfig,
    conn: &mut Conn,
    pos: &SourcePos,
) -> Result<(), Error> {
    let SourcePos::Mysql { binlog, gtids } = pos else {
        return Ok(());
    };
    if gtids.is_empty() {
        binlog_kept(conn, binlog).await?;
        let there: Result<Option<Option<String>>, _> = conn
            .exec_first(
                "SELECT BINLOG_GTID_POS(?, ?)",
                (&binlog.file, binlog.offset),
            )
            .await;
        return match there {
            // Not MariaDB: file:offset is all there is.
            Err(_) => Ok(()),
            Ok(v) => match v.flatten() {
                Some(state) if state.is_empty() => Ok(()),
                Some(state) => Err(unplaceable(
                    pos,
                    &format!("the server's binlog has GTIDs {state} at that offset"),
                )),
                None => Err(unplaceable(
                    pos,
                    "no event of the binlog ends at that offset",
                )),
            },
        };
    }
    let state: String = variable(conn, "gtid_binlog_state")
        .await?
        .unwrap_or_default();
    let domains: Vec<u32> = state
        .split(',')
        .filter_map(|g| g.trim().parse::<Gtid>().ok())
        .map(|g| g.domain)
        .collect();
    if let Some(g) = gtids.gtids().iter().find(|g| !domains.contains(&g.domain)) {
        return Err(unplaceable(
            pos,
            &format!(
                "the server's binlog has no GTID of domain {} (its GTID state: {})",
                g.domain,
                if state.is_empty() { "empty" } else { &state }
            ),
        ));
    }
    let Err(refusal) = binlog::can_stream_from(cfg, gtids).await? else {
        return Ok(());
    };
    // A binlog that begins after the position: the files that held it are gone.
    let files: Vec<MyRow> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(my_err("SHOW BINARY LOGS"))?;
    if let Some(first) = files.first().and_then(|r| r.get::<String, _>(0)) {
        let from = BinlogPos {
            file: first,
            offset: 4,
        };
        let begins = gtids_at(conn, &from).await;
        if !begins.is_empty() && gtids.compare(&begins) == Some(std::cmp::Ordering::Less) {
            return Err(purged_gtids(pos, &from.file, &begins));
        }
    }
    Err(unplaceable(pos, &refusal))
}

/// The setup error of a GTID position before everything the server's binlog holds.
fn purged_gtids(pos: &SourcePos, first: &str, begins: &GtidSet) -> Error {
    Error::Config(format!(
        "mysql: the topics resume from {pos}, which the server's binlog no longer has (it \
         begins at GTID state {begins} in {first}: purged, or reset keeping a later GTID \
         state): the changes since are lost to streaming; delete this connector's topics \
         (sluice topic delete PREFIX.DB.TABLE) and run it again with --snapshot initial to \
         copy the tables anew, and keep binlogs longer than any outage \
         (binlog_expire_logs_seconds)"
    ))
}

/// The setup error of a position the server cannot place: the choice is the user's.
pub(super) fn unplaceable(pos: &SourcePos, why: &str) -> Error {
    Error::Config(format!(
        "mysql: the server cannot place the topics' position {pos} ({why}): its binlog was \
         reset (RESET MASTER), or it is another server than the topics were captured from, \
         or a replica that lacks changes the topics hold; streaming from anywhere else would \
         skip or repeat changes. Point --dsn at the server that has them, or start over: \
         delete this connector's topics (sluice topic delete PREFIX.DB.TABLE) and run it \
         with --snapshot initial to copy the tables anew"
    ))
}

/// Refuses to resume from a binlog file the server no longer has (purged by
/// `binlog_expire_logs_seconds` or `PURGE BINARY LOGS`): the changes in it are gone, and
/// asking for it again would fail the same way forever.
async fn binlog_kept(conn: &mut Conn, from: &BinlogPos) -> Result<(), Error> {
    let files: Vec<MyRow> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(my_err("SHOW BINARY LOGS"))?;
    let names: Vec<String> = files.iter().filter_map(|r| r.get(0)).collect();
    if names.contains(&from.file) {
        return Ok(());
    }
    Err(purged(from, names.first().map(String::as_str)))
}

/// The setup error of a resume position whose binlog file is gone.
fn purged(from: &BinlogPos, oldest: Option<&str>) -> Error {
    Error::Config(format!(
        "mysql: the topics resume from binlog file {} which the server no longer has (purged; \
         oldest kept: {}): the changes since are lost to streaming; delete this connector's \
         topics (sluice topic delete PREFIX.DB.TABLE) and run it again with --snapshot \
         initial to copy the tables anew, and keep binlogs longer than any outage \
         (binlog_expire_logs_seconds)",
        from.file,
        oldest.unwrap_or("none")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::source_pos::RecordPos;

    #[test]
    fn resume_takes_the_oldest_last_position_over_every_partition() {
        let mut r = Resume::new();
        let rp = |s: &str| s.parse::<RecordPos>().unwrap();
        r.insert("p.db.a", 0, rp("my:bin.000002:400:0-1-9#3"));
        r.insert("p.db.a", 1, rp("my:bin.000001:900:0-1-5#0"));
        r.insert("p.db.b", 0, rp("my:bin.000002:100:0-1-7#1"));
        let parts = vec![("p.db.a".to_string(), 2), ("p.db.b".to_string(), 1)];
        let span = |old: &str, new: &str| {
            Some(ResumeFrom {
                oldest: old.parse().unwrap(),
                newest: new.parse().unwrap(),
            })
        };
        assert_eq!(
            resume_position(&r, &parts),
            span("my:bin.000001:900:0-1-5", "my:bin.000002:400:0-1-9")
        );
        // Only the listed topics count.
        assert_eq!(
            resume_position(&r, &parts[1..]),
            span("my:bin.000002:100:0-1-7", "my:bin.000002:100:0-1-7")
        );
        // By GTID: after a failover or RESET MASTER the files start again lower.
        r.insert("p.db.b", 0, rp("my:bin.000001:300:0-1-12#0"));
        assert_eq!(
            resume_position(&r, &parts),
            span("my:bin.000001:900:0-1-5", "my:bin.000001:300:0-1-12")
        );
        assert_eq!(resume_position(&Resume::new(), &parts), None);
    }
}
