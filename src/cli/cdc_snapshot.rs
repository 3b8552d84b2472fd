//! `sluice cdc snapshot`: asks a connector to copy tables again while it streams (an
//! incremental snapshot; docs/cdc.md, "Re-copying a table").

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use sluice_cdc::incremental::{PassState, Progress};

use super::cdc::{parse_tables, DsnArgs};
use super::cdc_ops::{default_pg_name, kind_of, Kind};
use super::output::outln;
use super::{ClientArgs, Output};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The connector's --topic-prefix.
    #[arg(long)]
    pub topic_prefix: String,
    /// Tables to copy again, schema.table (repeatable or comma-separated).
    #[arg(long = "table", value_delimiter = ',', required = true)]
    pub tables: Vec<String>,
    #[command(flatten)]
    pub source: DsnArgs,
    /// The connector's --slot (default: sluice_<prefix>).
    #[arg(long)]
    pub slot: Option<String>,
    /// Wait until the connector has copied every table asked for (0: do not wait);
    /// exits 1 if it has not by then.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub wait_ms: u64,
}

pub async fn snapshot(a: SnapshotArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let dsn = a.source.resolve()?;
    let tables = parse_tables(&a.tables)?;
    if let Some(t) = tables.iter().find(|t| t.is_pattern()) {
        anyhow::bail!("--table {t}: name the tables to copy again, not a pattern");
    }
    let (id, at) = match kind_of(&dsn)? {
        Kind::Mysql => anyhow::bail!(
            "sluice cdc snapshot works with Postgres connectors only: for MariaDB, stop the \
             connector and run `sluice cdc drop`, then start it again (it copies every table)"
        ),
        Kind::Postgres => request(&dsn, &a, &tables).await?,
    };
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    if a.wait_ms == 0 {
        match c.output {
            Output::Json => outln!("{}", json!({"id": id, "requested_at": at, "tables": names})),
            Output::Table => outln!(
                "asked for a copy of {} at {at} (request {id}); the connector copies it when it reads that position",
                names.join(", ")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let client = sluice_client::ClientConfig::new(&c.bootstrap);
    let deadline = Instant::now() + Duration::from_millis(a.wait_ms);
    loop {
        let progress = sluice_cdc::incremental::read_progress(&client, &a.topic_prefix).await?;
        let mine: Vec<&Progress> = names
            .iter()
            .filter_map(|n| progress.get(n).filter(|p| p.id == id))
            .collect();
        if mine.len() == names.len() && mine.iter().all(|p| p.state == PassState::Done) {
            match c.output {
                Output::Json => outln!("{}", serde_json::to_string(&mine)?),
                Output::Table => {
                    for p in mine {
                        outln!(
                            "{}: copied {} rows, {} tombstones, finished at {}",
                            p.table,
                            p.rows,
                            p.tombstones,
                            p.finished_at.as_deref().unwrap_or("?")
                        );
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            let copied: u64 = mine.iter().map(|p| p.rows).sum();
            eprintln!(
                "error: the connector has not finished copying {} within {} ms (request {id}, {copied} rows so far); is it running for --topic-prefix {}?",
                names.join(", "),
                a.wait_ms,
                a.topic_prefix
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(feature = "postgres")]
async fn request(
    dsn: &str,
    a: &SnapshotArgs,
    tables: &[sluice_cdc::TableId],
) -> anyhow::Result<(String, String)> {
    let slot = a
        .slot
        .clone()
        .unwrap_or_else(|| default_pg_name(&a.topic_prefix));
    Ok(sluice_cdc::postgres::ops::request_snapshot(dsn, &slot, tables).await?)
}

#[cfg(not(feature = "postgres"))]
async fn request(
    _: &str,
    _: &SnapshotArgs,
    _: &[sluice_cdc::TableId],
) -> anyhow::Result<(String, String)> {
    anyhow::bail!("this sluice was built without Postgres capture (--no-default-features)")
}
