//! `sluice table`: the command-line face of the Table library (`sluice_client::RawTable`,
//! a key → value map materialized from a compacted topic).
//!
//! - `table dump TOPIC` bootstraps a table, waits until it is ready (every partition read
//!   up to the end offsets seen at start), prints each live row once, sorted by key, and
//!   exits: kcat -C for compacted topics, with tombstones and overwritten values already
//!   folded away.
//! - `table serve` ([`serve`]) holds tables in memory behind HTTP for applications not
//!   written in Rust.
//!
//! Both print rows with one encoding rule (docs/cli.md, the same as `consume --output
//! json`): key and value as JSON strings when both are UTF-8, otherwise both base64 with
//! `"encoding": "base64"` beside them, so no byte is lost or replaced.

mod request;
mod serve;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::{Admin, ClientConfig, RawTable, TableConfig};
use sluice_proto::ErrorCode;

use super::output::{base64, explain, status_eprintln};
use super::{ClientArgs, Output};

#[derive(Subcommand, Debug)]
pub enum TableCommand {
    /// Bootstrap a table from a (compacted) topic, print its rows sorted by key, exit.
    Dump(DumpArgs),
    /// An HTTP sidecar holding tables in memory (JSON; see docs/cli.md).
    Serve(serve::ServeArgs),
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The topic the table is built from.
    pub topic: String,
    /// Give up if the table is not ready (bootstrapped) within this long.
    #[arg(long, default_value_t = 120_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Print CDC values as rows whatever the topic's --value-format: the `after`
    /// object of an envelope, a row-format value as it is (docs/table.md).
    #[arg(long)]
    pub row_images: bool,
}

pub async fn run(cmd: TableCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        TableCommand::Dump(a) => dump(a, c).await,
        TableCommand::Serve(a) => serve::serve(a, c).await,
    }
}

/// One row as JSON: `{"key", "value"}` as strings when both are UTF-8, otherwise both
/// base64 and `"encoding": "base64"`.
pub(crate) fn row_json(key: &[u8], value: &[u8]) -> serde_json::Value {
    match (std::str::from_utf8(key), std::str::from_utf8(value)) {
        (Ok(k), Ok(v)) => json!({"key": k, "value": v}),
        _ => json!({"key": base64(key), "value": base64(value), "encoding": "base64"}),
    }
}

/// Fails with the line a user needs when `topic` does not exist (the table library
/// would otherwise wait for it, or fail with a bare code). Other errors pass through
/// [`explain`] (an unreachable broker names `--bootstrap`).
pub(crate) async fn check_topic(
    config: &ClientConfig,
    topic: &str,
    bootstrap: &str,
) -> anyhow::Result<()> {
    match Admin::new(config).describe_topic(topic).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::UnknownTopicOrPartition) => anyhow::bail!(
            "topic {topic} does not exist; create it with `sluice topic create {topic} --config cleanup.policy=compact`, or check the name with `sluice topic list`"
        ),
        Err(e) => Err(explain(&e, bootstrap)),
    }
}

/// How often `table dump` reports its bootstrap on a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Waits until `table` is ready, at most `limit`, reporting the rows read so far on
/// stderr every second when stderr is a terminal.
async fn wait_ready(
    table: &RawTable,
    topic: &str,
    limit: Duration,
    c: &ClientArgs,
) -> anyhow::Result<()> {
    let progress = std::io::stderr().is_terminal();
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let ready = table.ready();
    tokio::pin!(ready);
    loop {
        let tick = tokio::time::sleep(PROGRESS_EVERY);
        tokio::select! {
            r = &mut ready => {
                r.map_err(|e| explain(&e, &c.bootstrap))
                    .with_context(|| format!("cannot bootstrap the table of {topic}"))?;
                if progress {
                    status_eprintln!("{topic}: {} rows, ready in {} ms", table.len(), start.elapsed().as_millis());
                }
                return Ok(());
            }
            _ = tokio::time::sleep_until(deadline) => anyhow::bail!(
                "the table of {topic} was not ready within {} ms ({} rows read so far); raise --timeout-ms, or check the topic's partitions have leaders with `sluice topic describe {topic}`",
                limit.as_millis(),
                table.len()
            ),
            _ = tick => {
                if progress {
                    status_eprintln!("{topic}: bootstrapping, {} rows so far", table.len());
                }
            }
        }
    }
}

/// `sluice table dump`.
pub async fn dump(a: DumpArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let config = ClientConfig::new(&c.bootstrap);
    check_topic(&config, &a.topic, &c.bootstrap).await?;
    let table_config = TableConfig {
        row_images: a.row_images,
        ..TableConfig::default()
    };
    let table = RawTable::open(&config, &a.topic, table_config)
        .await
        .map_err(|e| explain(&e, &c.bootstrap))
        .with_context(|| format!("cannot open the table of {}", a.topic))?;
    let waited = tokio::select! {
        r = wait_ready(&table, &a.topic, Duration::from_millis(a.timeout_ms), c) => r,
        _ = tokio::signal::ctrl_c() => {
            table.close();
            return Ok(ExitCode::from(130));
        }
    };
    if let Err(e) = waited {
        table.close();
        return Err(e);
    }
    // Owned rows: the table keeps applying while they are sorted and printed.
    let mut rows = table.snapshot().rows;
    table.close();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    print_rows(&rows, c.output)
}

/// Writes every row to stdout: `key<TAB>value` lines of raw bytes, or a JSON object a
/// line. A closed stdout (`| head`) ends quietly with status 0, as `consume` does.
fn print_rows(rows: &[(Bytes, Bytes)], output: Output) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = rows
        .iter()
        .try_for_each(|(k, v)| match output {
            Output::Table => {
                out.write_all(k)?;
                out.write_all(b"\t")?;
                out.write_all(v)?;
                out.write_all(b"\n")
            }
            Output::Json => {
                serde_json::to_writer(&mut out, &row_json(k, v))?;
                out.write_all(b"\n")
            }
        })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_text_when_both_are_utf8_else_both_base64() {
        assert_eq!(row_json(b"k", b"v"), json!({"key": "k", "value": "v"}));
        assert_eq!(
            row_json(b"k", b"\xff"),
            json!({"key": "aw==", "value": "/w==", "encoding": "base64"})
        );
        assert_eq!(
            row_json(b"\x00\xfe", b""),
            json!({"key": "AP4=", "value": "", "encoding": "base64"})
        );
    }
}
