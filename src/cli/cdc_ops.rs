//! Operating connectors: `sluice cdc status`, `sluice cdc drop`, and the
//! `/metrics` + `/healthz` endpoint a running connector serves (docs/cdc.md, Operations).
//!
//! Status reads what the connector writes to Sluice (`sluice_cdc::status`) and, with a
//! DSN, what the database says about the connector (its slot or binlog, and whether its
//! fence is held: whether one runs). Drop removes what the connector made in the
//! database, refused while one runs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Args;
use serde_json::{json, Value};
use sluice_cdc::status::{TableState, TopicStatus};
use sluice_cdc::TableId;
use sluice_proto::source_pos::SourcePos;

use super::cdc::DsnArgs;
use super::output::{outln, table};
use super::{ClientArgs, Output};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The connector's --topic-prefix: its topics are PREFIX.SCHEMA.TABLE.
    #[arg(long)]
    pub topic_prefix: String,
    /// Optional: with a connection string (--dsn, --dsn-file or SLUICE_CDC_DSN) the
    /// status adds the slot or binlog, the lag, and whether a connector runs.
    #[command(flatten)]
    pub source: DsnArgs,
    /// Postgres: the connector's --slot (default: sluice_<prefix>).
    #[arg(long)]
    pub slot: Option<String>,
    /// Postgres: the connector's --publication (default: sluice_<prefix>).
    #[arg(long)]
    pub publication: Option<String>,
}

#[derive(Args, Debug)]
pub struct DropArgs {
    /// The connector's --topic-prefix (its topics are kept).
    #[arg(long)]
    pub topic_prefix: String,
    /// The database: postgres://… drops the slot and publication; mysql://… checks
    /// that no connector runs (MariaDB keeps nothing of it).
    #[command(flatten)]
    pub source: DsnArgs,
    /// Postgres: the connector's --slot (default: sluice_<prefix>).
    #[arg(long)]
    pub slot: Option<String>,
    /// Postgres: the connector's --publication (default: sluice_<prefix>).
    #[arg(long)]
    pub publication: Option<String>,
}

/// The source a DSN names, by its scheme (libpq's `key=value` form is Postgres).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Postgres,
    Mysql,
}

pub(crate) fn kind_of(dsn: &str) -> anyhow::Result<Kind> {
    let scheme = dsn.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Ok(Kind::Postgres),
        Some("mysql") => Ok(Kind::Mysql),
        None if dsn.contains('=') => Ok(Kind::Postgres),
        _ => anyhow::bail!(
            "cannot tell the database from the connection string {}: give postgres://… or mysql://…",
            sluice_cdc::redact_dsn(dsn)
        ),
    }
}

/// The connector's default slot and publication name for a prefix.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn default_pg_name(prefix: &str) -> String {
    format!("sluice_{}", prefix.replace(['.', '-'], "_"))
}

pub async fn status(a: StatusArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let dsn = a.source.resolve_optional()?;
    let topics = sluice_cdc::status::read_topics(&c.bootstrap, &a.topic_prefix)
        .await
        .map_err(|e| match e {
            sluice_cdc::Error::Sluice(e) => super::output::explain(&e, &c.bootstrap),
            e => anyhow::anyhow!("{e}"),
        })?;
    let tables: Vec<TableId> = topics
        .iter()
        .filter_map(|t| TableId::parse(&t.table).ok())
        .collect();
    let db = match &dsn {
        None => None,
        Some(dsn) => Some(db_status(dsn, &a, &tables).await?),
    };
    let passes = sluice_cdc::incremental::read_progress(
        &sluice_client::ClientConfig::new(&c.bootstrap),
        &a.topic_prefix,
    )
    .await
    .map_err(|e| super::output::explain(&e, &c.bootstrap))?;
    let mut doc = status_doc(
        &a.topic_prefix,
        &topics,
        db.as_ref(),
        sluice_cdc::sink::now_ms(),
    );
    // `sluice cdc snapshot`: the last re-copy of each table, and one in progress.
    for t in doc["tables"].as_array_mut().into_iter().flatten() {
        let p = t["table"].as_str().and_then(|name| passes.get(name));
        t["recopy"] = p.map_or(Value::Null, |p| {
            serde_json::to_value(p).unwrap_or(Value::Null)
        });
        if p.is_some_and(|p| p.state == sluice_cdc::incremental::PassState::Copying)
            && t["state"] == "streaming"
        {
            t["state"] = json!("recopying");
        }
    }
    match c.output {
        Output::Json => outln!("{doc}"),
        Output::Table => print_status(&doc),
    }
    Ok(ExitCode::SUCCESS)
}

/// What the database says, for either source.
enum DbStatus {
    #[cfg(feature = "postgres")]
    Postgres {
        st: sluice_cdc::postgres::ops::PgStatus,
        publication: String,
    },
    Mysql(sluice_cdc::mysql::ops::MyStatus),
}

async fn db_status(dsn: &str, a: &StatusArgs, tables: &[TableId]) -> anyhow::Result<DbStatus> {
    match kind_of(dsn)? {
        Kind::Postgres => pg_status(dsn, a, tables).await,
        Kind::Mysql => Ok(DbStatus::Mysql(
            sluice_cdc::mysql::ops::status(dsn, &a.topic_prefix, tables).await?,
        )),
    }
}

#[cfg(feature = "postgres")]
async fn pg_status(dsn: &str, a: &StatusArgs, tables: &[TableId]) -> anyhow::Result<DbStatus> {
    let name = default_pg_name(&a.topic_prefix);
    let slot = a.slot.clone().unwrap_or_else(|| name.clone());
    let publication = a.publication.clone().unwrap_or(name);
    let st = sluice_cdc::postgres::ops::status(dsn, &slot, &publication, tables).await?;
    Ok(DbStatus::Postgres { st, publication })
}

#[cfg(not(feature = "postgres"))]
async fn pg_status(_: &str, _: &StatusArgs, _: &[TableId]) -> anyhow::Result<DbStatus> {
    anyhow::bail!("this sluice was built without Postgres capture (--no-default-features)")
}

impl DbStatus {
    fn running(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            DbStatus::Postgres { st, .. } => st.fence.is_some() || st.slot.active,
            DbStatus::Mysql(st) => st.fence_connection.is_some(),
        }
    }

    fn estimated_rows(&self, table: &str) -> Option<u64> {
        let rows = match self {
            #[cfg(feature = "postgres")]
            DbStatus::Postgres { st, .. } => &st.estimated_rows,
            DbStatus::Mysql(st) => &st.estimated_rows,
        };
        rows.iter().find(|(t, _)| t == table).map(|(_, n)| *n)
    }

    /// Source bytes written after `pos`.
    fn lag_bytes(&self, pos: &SourcePos) -> Option<u64> {
        match (self, pos) {
            #[cfg(feature = "postgres")]
            (DbStatus::Postgres { st, .. }, SourcePos::Postgres(lsn)) => {
                Some(st.slot.current_lsn.saturating_sub(lsn.0))
            }
            (DbStatus::Mysql(st), SourcePos::Mysql { binlog, .. }) => st.lag_bytes(binlog),
            _ => None,
        }
    }

    fn doc(&self) -> Value {
        match self {
            #[cfg(feature = "postgres")]
            DbStatus::Postgres { st, publication } => {
                let lsn = |l: Option<u64>| l.map(|l| sluice_proto::source_pos::Lsn(l).to_string());
                json!({
                    "source": "postgres",
                    "connector": {
                        "running": self.running(),
                        "fence_pid": st.fence.as_ref().map(|f| f.pid),
                    },
                    "slot": {
                        "name": st.slot.name,
                        "exists": st.slot.exists,
                        "active": st.slot.active,
                        "active_pid": st.slot.active_pid,
                        "confirmed_flush_lsn": lsn(st.slot.confirmed_flush_lsn),
                        "restart_lsn": lsn(st.slot.restart_lsn),
                        "wal_status": st.slot.wal_status,
                        "current_lsn": lsn(Some(st.slot.current_lsn)),
                        "lag_bytes": st.slot.lag_bytes(),
                        "retained_bytes": st.slot.retained_bytes(),
                    },
                    "publication": {"name": publication, "exists": st.publication_exists},
                })
            }
            DbStatus::Mysql(st) => json!({
                "source": "mysql",
                "connector": {
                    "running": self.running(),
                    "fence_connection": st.fence_connection,
                },
                "binlog": {
                    "file": st.binlog_end.file,
                    "position": st.binlog_end.offset,
                    "gtid_binlog_pos": st.gtid_binlog_pos,
                },
            }),
        }
    }
}

/// The JSON document `status --output json` prints (and the table is made from).
fn status_doc(prefix: &str, topics: &[TopicStatus], db: Option<&DbStatus>, now_ms: i64) -> Value {
    let running = db.map(DbStatus::running);
    let tables: Vec<Value> = topics
        .iter()
        .map(|t| {
            let pos = sluice_cdc::status::table_position(&t.partitions);
            let written = sluice_cdc::status::table_written_ms(&t.partitions);
            let age_ms = written.map(|w| (now_ms - w).max(0));
            let state = match (t.state, running) {
                (TableState::Streaming, Some(false)) => "stopped",
                (TableState::Copying, Some(false)) => "copy-interrupted",
                (s, _) => s.as_str(),
            };
            let lag_bytes = match (db, &pos) {
                (Some(db), Some(p)) => db.lag_bytes(p),
                _ => None,
            };
            // Behind by bytes: as old as the topics' last news of the source.
            let lag_seconds = match lag_bytes {
                Some(0) => Some(0.0),
                Some(_) => age_ms.map(|a| a as f64 / 1000.0),
                None => None,
            };
            let expected = db.and_then(|d| d.estimated_rows(&t.table));
            json!({
                "table": t.table,
                "topic": t.topic,
                "state": state,
                "partitions": t.partitions.len(),
                "copy": {
                    "done": t.state == TableState::Streaming,
                    "rows": t.copied_rows,
                    "expected_rows": expected,
                },
                "position": pos.map(|p| p.to_string()),
                "last_write_ms_ago": age_ms,
                "lag_bytes": lag_bytes,
                "lag_seconds": lag_seconds,
            })
        })
        .collect();
    let mut doc =
        json!({"topic_prefix": prefix, "source": null, "connector": null, "tables": tables});
    if let Some(db) = db {
        for (k, v) in db.doc().as_object().expect("an object") {
            doc[k] = v.clone();
        }
    }
    doc
}

fn print_status(doc: &Value) {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let rows: Vec<Vec<String>> = doc["tables"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let copy = &t["copy"];
            let progress = match (t["state"].as_str(), copy["rows"].as_u64()) {
                (Some("recopying"), _) => format!(
                    "re-copy at {} rows",
                    t["recopy"]["rows"].as_u64().unwrap_or(0)
                ),
                (_, _) if copy["done"] == true => "done".to_string(),
                (Some("empty"), _) => "-".to_string(),
                (Some("copy-pending"), _) => "pending".to_string(),
                (_, Some(rows)) => match copy["expected_rows"].as_u64() {
                    Some(n) if n > 0 => format!(
                        "{rows}/~{n} rows ({:.0} %)",
                        (100.0 * rows as f64 / n as f64).min(100.0)
                    ),
                    _ => format!("{rows} rows"),
                },
                _ => "-".to_string(),
            };
            let age = t["last_write_ms_ago"]
                .as_i64()
                .map_or("-".into(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0));
            vec![
                s(&t["table"]),
                s(&t["state"]),
                progress,
                s(&t["position"]),
                s(&t["lag_bytes"]),
                t["lag_seconds"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.1}")),
                age,
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!(
            "no topics named {}.*: no connector has written with this --topic-prefix",
            s(&doc["topic_prefix"])
        );
    } else {
        outln!(
            "{}",
            table(
                &[
                    "TABLE",
                    "STATE",
                    "COPY",
                    "POSITION",
                    "LAG BYTES",
                    "LAG S",
                    "LAST WRITE"
                ],
                rows
            )
        );
    }
    let connector = &doc["connector"];
    if connector.is_null() {
        outln!("(give --dsn for the slot or binlog, the lag, and whether a connector runs)");
        return;
    }
    let running = connector["running"] == true;
    let slot = &doc["slot"];
    if !slot.is_null() {
        outln!(
            "connector: {}",
            if running {
                format!("running (fence held by pid {})", s(&connector["fence_pid"]))
            } else {
                "not running".into()
            }
        );
        if slot["exists"] == true {
            outln!(
                "slot {}: {}, confirmed {}, lag {} bytes, retains {} bytes of WAL, wal_status {}",
                s(&slot["name"]),
                if slot["active"] == true {
                    format!("active (pid {})", s(&slot["active_pid"]))
                } else if running {
                    // The slot streams only after the copy (and the run's setup).
                    "inactive (the connector is copying or starting)".into()
                } else {
                    "inactive".into()
                },
                s(&slot["confirmed_flush_lsn"]),
                s(&slot["lag_bytes"]),
                s(&slot["retained_bytes"]),
                s(&slot["wal_status"]),
            );
            if !running {
                outln!(
                    "  an inactive slot holds WAL until it is used again or dropped (`sluice cdc drop`)"
                );
            }
        } else {
            outln!("slot {}: none", s(&slot["name"]));
        }
        outln!(
            "publication {}: {}",
            s(&doc["publication"]["name"]),
            if doc["publication"]["exists"] == true {
                "exists"
            } else {
                "none"
            }
        );
    } else {
        outln!(
            "connector: {}; binlog at {}:{} (GTID {})",
            if running {
                format!(
                    "running (lock held by connection {})",
                    s(&connector["fence_connection"])
                )
            } else {
                "not running".into()
            },
            s(&doc["binlog"]["file"]),
            s(&doc["binlog"]["position"]),
            s(&doc["binlog"]["gtid_binlog_pos"]),
        );
    }
}

pub async fn drop(a: DropArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let dsn = a.source.resolve()?;
    let doc = match kind_of(&dsn)? {
        Kind::Postgres => pg_drop(&dsn, &a).await?,
        Kind::Mysql => {
            sluice_cdc::mysql::ops::drop_connector(&dsn, &a.topic_prefix).await?;
            json!({"source": "mysql", "dropped": []})
        }
    };
    match c.output {
        Output::Json => outln!("{doc}"),
        Output::Table => {
            let dropped: Vec<String> = doc["dropped"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if dropped.is_empty() {
                outln!(
                    "nothing to drop: the database holds nothing of a connector for {}",
                    a.topic_prefix
                );
            } else {
                outln!("dropped {}", dropped.join(" and "));
            }
            outln!(
                "the topics {}.* are kept (`sluice topic delete` removes them)",
                a.topic_prefix
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "postgres")]
async fn pg_drop(dsn: &str, a: &DropArgs) -> anyhow::Result<Value> {
    let name = default_pg_name(&a.topic_prefix);
    let slot = a.slot.clone().unwrap_or_else(|| name.clone());
    let publication = a.publication.clone().unwrap_or(name);
    let d = sluice_cdc::postgres::ops::drop_connector(dsn, &slot, &publication).await?;
    let mut dropped = Vec::new();
    if d.slot {
        dropped.push(format!("replication slot {slot}"));
    }
    if d.publication {
        dropped.push(format!("publication {publication}"));
    }
    Ok(json!({
        "source": "postgres",
        "slot": slot,
        "publication": publication,
        "dropped": dropped,
    }))
}

#[cfg(not(feature = "postgres"))]
async fn pg_drop(_: &str, _: &DropArgs) -> anyhow::Result<Value> {
    anyhow::bail!("this sluice was built without Postgres capture (--no-default-features)")
}

/// `/metrics` (Prometheus) and `/healthz` on `addr`, for a running connector.
/// `idle_events`: the source sends heartbeats while nothing changes (Postgres), so a
/// long silence is unhealthy too.
pub(crate) async fn serve_metrics_and_health(
    addr: SocketAddr,
    stats: Arc<sluice_cdc::runner::Stats>,
    idle_events: bool,
    heartbeat: Duration,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let stale_after_ms = stale_after(heartbeat).as_millis() as i64;
    let router = Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route(
            "/healthz",
            get(move || async move {
                let v = stats
                    .health
                    .judge(sluice_cdc::sink::now_ms(), idle_events, stale_after_ms);
                let code = if v.healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = json!({
                    "status": if v.healthy { "ok" } else { "unhealthy" },
                    "state": v.phase.as_str(),
                    "last_event_ms_ago": v.since_event_ms,
                    "last_ack_ms_ago": v.since_ack_ms,
                    "restarts": stats.health.restarts.load(std::sync::atomic::Ordering::Relaxed),
                    "reason": v.reason,
                });
                (
                    code,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

/// How long a connector may go without progress before `/healthz` says so: long
/// enough for a re-copy's read of its topics or a slow broker, short enough for an
/// orchestrator to act.
fn stale_after(heartbeat: Duration) -> Duration {
    (heartbeat * 20).max(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_cdc::status::{LastRecord, PartitionTail, RecordKind};
    use sluice_proto::source_pos::{BinlogPos, GtidSet, RecordPos};

    fn topic(kind: RecordKind, offset: u64, written_ms: i64) -> TopicStatus {
        let partitions = vec![PartitionTail {
            partition: 0,
            log_start_offset: 0,
            high_watermark: 10,
            last: Some(LastRecord {
                offset: 9,
                pos: RecordPos {
                    pos: SourcePos::Mysql {
                        binlog: BinlogPos {
                            file: "b.000001".into(),
                            offset,
                        },
                        gtids: GtidSet::default(),
                    },
                    ordinal: 0,
                },
                kind,
                written_ms,
            }),
        }];
        TopicStatus {
            topic: "p.shop.item".into(),
            table: "shop.item".into(),
            state: sluice_cdc::status::table_state(&partitions),
            partitions,
            copied_rows: (kind == RecordKind::CopyRow).then_some(10),
        }
    }

    fn mariadb(running: bool, end: u64) -> DbStatus {
        DbStatus::Mysql(sluice_cdc::mysql::ops::MyStatus {
            fence_connection: running.then_some(7),
            binlog_end: BinlogPos {
                file: "b.000001".into(),
                offset: end,
            },
            gtid_binlog_pos: String::new(),
            binlogs: vec![("b.000001".into(), end)],
            estimated_rows: vec![("shop.item".into(), 40)],
        })
    }

    #[test]
    fn the_state_says_whether_a_connector_runs_and_the_lag_comes_from_the_database() {
        let now = 100_000;
        // Streaming and caught up: no lag, whatever the age of the last write.
        let t = [topic(RecordKind::Heartbeat, 500, now - 60_000)];
        let doc = status_doc("p", &t, Some(&mariadb(true, 500)), now);
        let line = &doc["tables"][0];
        assert_eq!(line["state"], "streaming");
        assert_eq!(
            (line["lag_bytes"].as_u64(), line["lag_seconds"].as_f64()),
            (Some(0), Some(0.0))
        );
        assert_eq!(doc["connector"]["running"], true);
        // Stopped, the binlog moved on: behind by the bytes and the age of the last write.
        let doc = status_doc("p", &t, Some(&mariadb(false, 800)), now);
        let line = &doc["tables"][0];
        assert_eq!(line["state"], "stopped");
        assert_eq!(
            (line["lag_bytes"].as_u64(), line["lag_seconds"].as_f64()),
            (Some(300), Some(60.0))
        );
        // A copy nobody runs is cut: the next run copies again.
        let t = [topic(RecordKind::CopyRow, 500, now)];
        let doc = status_doc("p", &t, Some(&mariadb(false, 500)), now);
        assert_eq!(doc["tables"][0]["state"], "copy-interrupted");
        assert_eq!(doc["tables"][0]["copy"]["rows"], 10);
        assert_eq!(doc["tables"][0]["copy"]["expected_rows"], 40);
        // Without a DSN: what the topics say, nothing else.
        let doc = status_doc("p", &t, None, now);
        assert_eq!(doc["tables"][0]["state"], "copying");
        assert!(doc["tables"][0]["lag_bytes"].is_null() && doc["connector"].is_null());
    }

    #[test]
    fn the_source_kind_comes_from_the_scheme() {
        assert_eq!(kind_of("postgres://a@h/db").unwrap(), Kind::Postgres);
        assert_eq!(kind_of("postgresql://a@h/db").unwrap(), Kind::Postgres);
        assert_eq!(kind_of("host=h dbname=db").unwrap(), Kind::Postgres);
        assert_eq!(kind_of("mysql://root@h:3306/shop").unwrap(), Kind::Mysql);
        let e = kind_of("redis://u:secret@h").unwrap_err().to_string();
        assert!(e.contains("postgres://") && !e.contains("secret"), "{e}");
    }
}
