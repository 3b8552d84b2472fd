//! `sluice cdc`: change data capture from a database into compacted topics
//! (the `sluice-cdc` crate; docs/cdc.md).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use sluice_cdc::sink::SinkConfig;
use sluice_cdc::TableId;

use super::ClientArgs;

#[derive(Subcommand, Debug)]
pub enum CdcCommand {
    /// Capture tables of a Postgres database (logical replication, pgoutput).
    Postgres(PgArgs),
    /// Capture tables of a MariaDB (or MySQL) server (the row-based binlog; docs/cdc-mysql.md).
    Mysql(MyArgs),
    /// One line per table: state, copy progress, source position, lag (with --dsn: the
    /// slot or binlog, and whether a connector runs).
    Status(super::cdc_ops::StatusArgs),
    /// Remove what a connector made in the database (Postgres: its slot and
    /// publication); refused while a connector runs. The topics are kept.
    Drop(super::cdc_ops::DropArgs),
    /// Copy tables again while the connector streams (Postgres): chunk by chunk, never
    /// pausing the stream, with tombstones for rows the table no longer has.
    Snapshot(super::cdc_snapshot::SnapshotArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotArg {
    /// Copy the tables first unless the topics hold a finished copy.
    Initial,
    /// Stream changes only.
    Never,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormatArg {
    /// Debezium's envelope: before, after, op, source, ts_ms, transaction.
    Envelope,
    /// The row alone (the after image); a delete is only its tombstone.
    Row,
}

/// Flags every source takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Topics are named PREFIX.SCHEMA.TABLE.
    #[arg(long)]
    pub topic_prefix: String,
    #[arg(long, value_enum, default_value_t = SnapshotArg::Initial)]
    pub snapshot: SnapshotArg,
    /// Partitions of the topics the connector creates.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor of the topics the connector creates (default: 3, or the
    /// number of brokers when fewer).
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// Extra configs for topics the connector creates, K=V (repeatable).
    #[arg(long = "topic-config", value_name = "K=V")]
    pub topic_configs: Vec<String>,
    /// How often the source is asked for a heartbeat when nothing changes (ms).
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub heartbeat_ms: u64,
    /// Largest record (a row's key and JSON value) the connector writes; its topics'
    /// max.message.bytes is set (or raised) to take it. A larger row stops the connector
    /// with an error naming the table and key: a row is never skipped.
    #[arg(long, default_value_t = sluice_cdc::sink::DEFAULT_MAX_RECORD_BYTES, value_name = "BYTES")]
    pub max_record_bytes: usize,
    /// Rows per unit of a copy: the initial copy's batches, and each chunk of an
    /// incremental snapshot (`sluice cdc snapshot`), read between two watermarks.
    #[arg(long, default_value_t = 2000, value_name = "ROWS")]
    pub snapshot_chunk_rows: usize,
    /// Decoded changes of one transaction held in memory while it is received (an
    /// estimate, bytes); past it they go to an unnamed temporary file in --spill-dir and
    /// the transaction is written in parts at its commit (docs/cdc.md, "Large
    /// transactions").
    #[arg(long, default_value_t = sluice_cdc::spill::DEFAULT_TXN_MEMORY_BYTES, value_name = "BYTES")]
    pub txn_memory_bytes: usize,
    /// Where a large transaction's spill file goes (default: the system's temporary
    /// directory, $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<std::path::PathBuf>,
    /// What a record's value holds. A topic keeps the format it was first written
    /// in: a restart with the other one is refused (docs/cdc.md, "Value format").
    #[arg(long, value_enum, default_value_t = ValueFormatArg::Envelope)]
    pub value_format: ValueFormatArg,
    /// Tables --tables brings that are not captured: schema.table, `*` and `?`
    /// allowed (docs/cdc.md, "Choosing tables and columns").
    #[arg(long, value_delimiter = ',', value_name = "TABLES")]
    pub exclude_tables: Vec<String>,
    /// Columns left out of every row image written: schema.table.column, `*` and `?`
    /// allowed in each part. A key column stays in the record key.
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub exclude_columns: Vec<String>,
    /// Prometheus endpoint (`/metrics`): rows, transactions, lag, snapshot progress.
    #[arg(long, value_parser = super::parse_addr)]
    pub metrics: Option<SocketAddr>,
}

/// Where the database's connection string comes from: the flag, a file, or
/// `SLUICE_CDC_DSN` — the last two keep a password out of `ps` and shell history.
#[derive(Args, Debug)]
pub struct DsnArgs {
    /// postgres://user@host:port/database[?sslmode=verify-full&sslrootcert=PATH] (libpq's
    /// PG* variables and ~/.pgpass fill what it leaves out) or
    /// mysql://user:password@host:port/db[?ssl-mode=VERIFY_IDENTITY&ssl-ca=PATH]; or give
    /// --dsn-file, or set SLUICE_CDC_DSN (docs/cdc.md, "Connecting securely").
    #[arg(long, conflicts_with = "dsn_file")]
    pub dsn: Option<String>,
    /// A file holding the connection string (its first line).
    #[arg(long, value_name = "PATH")]
    pub dsn_file: Option<std::path::PathBuf>,
}

/// The environment variable a connection string may come from.
pub const DSN_ENV: &str = "SLUICE_CDC_DSN";

impl DsnArgs {
    /// `--dsn`, else the first line of `--dsn-file`, else `SLUICE_CDC_DSN`.
    pub fn resolve(&self) -> anyhow::Result<String> {
        if let Some(d) = &self.dsn {
            return Ok(d.clone());
        }
        if let Some(path) = &self.dsn_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --dsn-file {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().trim();
            anyhow::ensure!(
                !line.is_empty(),
                "--dsn-file {} is empty: put the connection string on its first line",
                path.display()
            );
            return Ok(line.to_string());
        }
        match std::env::var(DSN_ENV) {
            Ok(d) if !d.trim().is_empty() => Ok(d.trim().to_string()),
            _ => {
                anyhow::bail!("no connection string: give --dsn, --dsn-file PATH, or set {DSN_ENV}")
            }
        }
    }

    /// The same, `None` when none of the three is given (a command for which the
    /// database is optional).
    pub fn resolve_optional(&self) -> anyhow::Result<Option<String>> {
        let given = self.dsn.is_some()
            || self.dsn_file.is_some()
            || std::env::var(DSN_ENV).is_ok_and(|d| !d.trim().is_empty());
        given.then(|| self.resolve()).transpose()
    }
}

#[derive(Args, Debug)]
pub struct PgArgs {
    #[command(flatten)]
    pub source: DsnArgs,
    /// Tables to capture: schema.table[,schema.table…]; `*` and `?` match (quote them
    /// from the shell): `public.*`, `app.order_*`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tables: Vec<String>,
    /// Replication slot (default: sluice_<prefix>).
    #[arg(long)]
    pub slot: Option<String>,
    /// Publication (default: sluice_<prefix>).
    #[arg(long)]
    pub publication: Option<String>,
    /// Connections that copy a large table together in the initial copy, each over a
    /// range of its blocks under the slot's snapshot (1 to 32; 1, the default: one
    /// connection copies every table; more pays only where Postgres, not the connector,
    /// is what the copy waits for — docs/cdc.md, "The initial copy").
    #[arg(long, env = "SLUICE_CDC_COPY_WORKERS", default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=32))]
    pub copy_workers: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct MyArgs {
    #[command(flatten)]
    pub source: DsnArgs,
    /// Tables to capture: database.table[,database.table…]; `*` and `?` match (quote
    /// them from the shell): `shop.*`, `shop.order_*`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tables: Vec<String>,
    /// The replica id the binlog connection registers with: unlike the server's own
    /// server_id and every other replica's.
    #[arg(long)]
    pub server_id: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(cmd: CdcCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        CdcCommand::Postgres(a) => postgres(a, c).await,
        CdcCommand::Mysql(a) => mysql(a, c).await,
        CdcCommand::Status(a) => super::cdc_ops::status(a, c).await,
        CdcCommand::Drop(a) => super::cdc_ops::drop(a, c).await,
        CdcCommand::Snapshot(a) => super::cdc_snapshot::snapshot(a, c).await,
    }
}

pub(crate) fn parse_tables(tables: &[String]) -> anyhow::Result<Vec<TableId>> {
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| !t.trim().is_empty()) {
        out.push(TableId::parse(t).map_err(|e| anyhow::anyhow!("--tables: {e}"))?);
    }
    if out.is_empty() {
        anyhow::bail!("--tables: give at least one schema.table");
    }
    Ok(out)
}

/// `--exclude-tables` (none is fine).
fn parse_excluded(tables: &[String]) -> anyhow::Result<Vec<TableId>> {
    tables
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| TableId::parse(t).map_err(|e| anyhow::anyhow!("--exclude-tables: {e}")))
        .collect()
}

fn spill_config(common: &CommonArgs) -> sluice_cdc::spill::SpillConfig {
    sluice_cdc::spill::SpillConfig {
        memory_bytes: common.txn_memory_bytes,
        dir: common.spill_dir.clone(),
    }
}

pub(crate) fn sink_config(common: &CommonArgs, c: &ClientArgs) -> anyhow::Result<SinkConfig> {
    let mut topic_configs = BTreeMap::new();
    for kv in &common.topic_configs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--topic-config {kv:?}: expected K=V"))?;
        topic_configs.insert(k.to_string(), v.to_string());
    }
    if common.topic_prefix.is_empty() || common.topic_prefix.contains(['/', ' ']) {
        anyhow::bail!(
            "--topic-prefix {:?}: give a plain name like cdc",
            common.topic_prefix
        );
    }
    Ok(SinkConfig {
        bootstrap: c.bootstrap.clone(),
        topic_prefix: common.topic_prefix.clone(),
        partitions: common.partitions.max(1),
        replication_factor: common.replication_factor,
        topic_configs,
        max_record_bytes: common.max_record_bytes,
        heartbeat_idle: Duration::from_millis(common.heartbeat_ms.max(10)),
        value_format: match common.value_format {
            ValueFormatArg::Envelope => sluice_cdc::envelope::ValueFormat::Envelope,
            ValueFormatArg::Row => sluice_cdc::envelope::ValueFormat::Row,
        },
        exclude_columns: sluice_cdc::change::ColumnFilter::parse(&common.exclude_columns)
            .map_err(|e| anyhow::anyhow!(e))?,
    })
}

/// A progress line on a terminal (snapshot rows and rate, then streaming counts).
pub(crate) fn spawn_progress(
    stats: Arc<sluice_cdc::runner::Stats>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let started = Instant::now();
        let mut last = (0u64, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rows = stats.snapshot_rows.load(Ordering::Relaxed);
            let changes = stats.changes.load(Ordering::Relaxed);
            let total = rows + changes;
            let rate = (total - last.0) as f64 / last.1.elapsed().as_secs_f64();
            last = (total, Instant::now());
            if !stats.snapshot_done.load(Ordering::Relaxed) && rows > 0 {
                let expected = stats
                    .snapshot_rows_expected
                    .load(Ordering::Relaxed)
                    .max(rows);
                eprint!(
                    "\rcopying: {rows}/{expected} rows ({:.0} %), {rate:.0} rows/s, {:.0} s   ",
                    100.0 * rows as f64 / expected.max(1) as f64,
                    started.elapsed().as_secs_f64()
                );
            } else {
                eprint!(
                    "\rstreaming: {} transactions, {changes} changes, {rate:.0} changes/s   ",
                    stats.transactions.load(Ordering::Relaxed)
                );
            }
        }
    }))
}

#[cfg(feature = "postgres")]
async fn postgres(a: PgArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    use sluice_cdc::connector::Source;
    use sluice_cdc::envelope::SourceInfo;
    use sluice_cdc::postgres::{PgSourceConfig, SnapshotMode};

    let dsn = a.source.resolve()?;
    let tables = parse_tables(&a.tables)?;
    let sink_cfg = sink_config(&a.common, c)?;
    let default_name = super::cdc_ops::default_pg_name(&a.common.topic_prefix);
    let cfg = PgSourceConfig {
        dsn: dsn.clone(),
        tables: tables.clone(),
        exclude_tables: parse_excluded(&a.common.exclude_tables)?,
        slot: a.slot.unwrap_or_else(|| default_name.clone()),
        publication: a.publication.unwrap_or(default_name),
        snapshot: match a.common.snapshot {
            SnapshotArg::Initial => SnapshotMode::Initial,
            SnapshotArg::Never => SnapshotMode::Never,
        },
        heartbeat: Duration::from_millis(a.common.heartbeat_ms.max(10)),
        snapshot_chunk_rows: a.common.snapshot_chunk_rows.max(1),
        copy_workers: (a.copy_workers as usize).min(sluice_cdc::postgres::COPY_WORKERS_MAX),
        spill: spill_config(&a.common),
    };
    let info = SourceInfo {
        connector: "postgresql",
        name: a.common.topic_prefix.clone(),
        // The database may come from PGDATABASE or default to the user, as in libpq.
        db: sluice_cdc::postgres::conn::PgConn::resolve(&dsn)?.dbname,
    };
    let connector = connector(Source::Postgres(cfg), sink_cfg, info);
    if let Some(addr) = a.common.metrics {
        // Postgres sends a heartbeat every --heartbeat-ms: silence is a symptom.
        let every = Duration::from_millis(a.common.heartbeat_ms);
        let stats = connector.stats().clone();
        super::cdc_ops::serve_metrics_and_health(addr, stats, true, every).await?;
    }
    // Refuse a server or table that cannot be captured before creating any topic.
    connector.check().await?;
    let confirmed = supervise(&tables, &a.common.topic_prefix, &connector).await?;
    eprintln!(
        "stopped; confirmed to the source up to {}",
        confirmed.map_or("nothing".to_string(), |p| p.to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// The library's connector, its restarts reported on stderr.
fn connector(
    source: sluice_cdc::connector::Source,
    sink: SinkConfig,
    info: sluice_cdc::envelope::SourceInfo,
) -> sluice_cdc::connector::Connector {
    sluice_cdc::connector::Connector::new(source, sink, info).on_restart(Arc::new(|e, backoff| {
        eprintln!("\nconnector failed: {e}; restarting in {backoff:?}")
    }))
}

/// Runs the connector (its restart policy is the library's: a failed source or broker
/// connection restarts the pipeline after 0.5 s doubling to 5 s; positions are read
/// back from the topics) until Ctrl-C or SIGTERM, which stop it cleanly, or a setup
/// error. Prints progress on a terminal.
pub(crate) async fn supervise(
    tables: &[TableId],
    prefix: &str,
    connector: &sluice_cdc::connector::Connector,
) -> anyhow::Result<Option<sluice_proto::source_pos::SourcePos>> {
    let stop = sluice_cdc::connector::Stop::new();
    // SIGTERM too: what an orchestrator sends to stop (or move, or upgrade) a
    // connector; it then confirms what was acknowledged and exits 0 instead of dying.
    // Installed before the first run, so a SIGTERM during start-up stops it cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let sigterm = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => eprintln!("\nstopping (Ctrl-C)"),
                _ = sigterm => eprintln!("\nstopping (SIGTERM)"),
            }
            stop.cancel();
        })
    };
    let progress = spawn_progress(connector.stats().clone());
    if tables.iter().any(TableId::is_pattern) {
        let given: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        eprintln!(
            "capturing the tables of {} into {prefix}.*",
            given.join(",")
        );
    } else {
        eprintln!("capturing {} table(s) into {prefix}.*", tables.len());
    }
    let result = connector.run(&stop).await;
    ctrl_c.abort();
    if let Some(p) = progress {
        p.abort();
    }
    Ok(result?)
}

async fn mysql(a: MyArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    use sluice_cdc::connector::Source;
    use sluice_cdc::envelope::SourceInfo;
    use sluice_cdc::mysql::{MySourceConfig, SnapshotMode};

    let dsn = a.source.resolve()?;
    let tables = parse_tables(&a.tables)?;
    let sink_cfg = sink_config(&a.common, c)?;
    let cfg = MySourceConfig {
        dsn: dsn.clone(),
        tables: tables.clone(),
        exclude_tables: parse_excluded(&a.common.exclude_tables)?,
        server_id: a.server_id,
        snapshot: match a.common.snapshot {
            SnapshotArg::Initial => SnapshotMode::Initial,
            SnapshotArg::Never => SnapshotMode::Never,
        },
        heartbeat: Duration::from_millis(a.common.heartbeat_ms.max(10)),
        snapshot_chunk_rows: a.common.snapshot_chunk_rows.max(1),
        spill: spill_config(&a.common),
        resume_from: None,
        fence: Some(sluice_cdc::mysql::ops::fence_name(&a.common.topic_prefix)),
    };
    let info = SourceInfo {
        connector: "mysql",
        name: a.common.topic_prefix.clone(),
        db: database_of(&dsn),
    };
    let connector = connector(Source::Mysql(cfg), sink_cfg, info);
    if let Some(addr) = a.common.metrics {
        // MariaDB sends nothing while the server is idle: only failures and stuck
        // writes make the connector unhealthy.
        let every = Duration::from_millis(a.common.heartbeat_ms);
        let stats = connector.stats().clone();
        super::cdc_ops::serve_metrics_and_health(addr, stats, false, every).await?;
    }
    // Refuse a server or table that cannot be captured before creating any topic.
    connector.check().await?;
    let written = supervise(&tables, &a.common.topic_prefix, &connector).await?;
    eprintln!(
        "stopped; written and acknowledged up to {}",
        written.map_or("nothing".to_string(), |p| p.to_string())
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_a: PgArgs, _c: &ClientArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this sluice was built without Postgres capture (--no-default-features); build it with \
         the default features or `--features postgres`"
    )
}

/// The database named in a DSN (URL path or `dbname=`), for `source.db`.
pub(crate) fn database_of(dsn: &str) -> String {
    if let Some(rest) = dsn.split_once("://").map(|(_, r)| r) {
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        return path.split('?').next().unwrap_or("").to_string();
    }
    dsn.split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .unwrap_or("")
        .to_string()
}
