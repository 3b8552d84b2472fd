//! `sluice produce`: one record per stdin line (or one per `--value-file`), sent as raw
//! bytes, with the exit status covering everything read (docs/cli.md).

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use sluice_client::{Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::{Compression, Header};

use super::output::explain;
use super::{ClientArgs, Output};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic to write to.
    pub topic: String,
    /// How many replicas must have a record before it counts: all (or -1), 1 or 0.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub acks: String,
    /// Split each line at the first SEP: key before, value after.
    #[arg(short = 'K', long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// The key of every record (a key taken from the line with -K wins).
    #[arg(short = 'k', long)]
    pub key: Option<String>,
    /// A header on every record, `name=value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Send every record to this partition (default: by key hash, or sticky without a key).
    #[arg(short = 'p', long)]
    pub partition: Option<u32>,
    /// Send an empty value as null: a tombstone on a compacted topic.
    #[arg(short = 'Z', long)]
    pub null_value_if_empty: bool,
    /// Send this file's whole content as one record's value, instead of reading stdin
    /// (repeatable: one record per file, in order; --key-separator does not apply).
    #[arg(long, value_name = "PATH")]
    pub value_file: Vec<PathBuf>,
    /// Delivery timeout (`delivery.timeout.ms`): how long a record may take, retries
    /// included; a record still failing then fails with the last error seen.
    #[arg(long, default_value_t = 120_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// `batch.size`: a partition's batch is sent once it holds this many bytes.
    #[arg(long, default_value_t = 16_384, value_name = "BYTES")]
    pub batch_size: usize,
    /// `linger.ms`: how long a batch that is not full waits for more records.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(short = 'z', long, default_value = "none")]
    pub compression: String,
}

/// Most records awaiting acknowledgement before `produce` waits for the oldest.
const PRODUCE_PENDING_MAX: usize = 100_000;

/// What a record is built from besides its line: the flags that apply to every record.
struct Shape {
    topic: String,
    partition: Option<u32>,
    separator: Option<Vec<u8>>,
    key: Option<Bytes>,
    headers: Vec<Header>,
    null_if_empty: bool,
}

impl Shape {
    /// A record of `bytes`: a stdin line, split at the key separator, or a whole file
    /// (`split` false: a file's content is its value, whatever bytes it holds).
    fn record(&self, bytes: Bytes, split: bool) -> ProducerRecord {
        let separator = self.separator.as_deref().filter(|_| split);
        let (key, value) = split_key(bytes, separator);
        ProducerRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            key: key.or_else(|| self.key.clone()),
            value: (!(self.null_if_empty && value.is_empty())).then_some(value),
            headers: self.headers.clone(),
            timestamp: None,
        }
    }
}

fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<Header>> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Header {
                key: k.to_string(),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
            }),
            _ => bail!("--header {h:?} is not of the form name=value"),
        })
        .collect()
}

fn producer_config(a: &ProduceArgs) -> anyhow::Result<ProducerConfig> {
    let acks = Acks::parse(&a.acks)
        .with_context(|| format!("--acks {} is not one of all, -1, 1, 0", a.acks))?;
    let compression = Compression::from_name(&a.compression).with_context(|| {
        format!(
            "--compression {} is not one of none, gzip, snappy, lz4, zstd",
            a.compression
        )
    })?;
    if a.timeout_ms == 0 {
        bail!("--timeout-ms must be at least 1");
    }
    let defaults = ProducerConfig::default();
    let delivery_timeout = Duration::from_millis(a.timeout_ms);
    Ok(ProducerConfig {
        acks,
        delivery_timeout,
        // One request may not outlast the whole delivery timeout.
        request_timeout: defaults.request_timeout.min(delivery_timeout),
        batch_size: a.batch_size,
        batch_size_max: defaults.batch_size_max.max(a.batch_size),
        linger: Duration::from_millis(a.linger_ms),
        compression,
        ..defaults
    })
}

pub async fn produce(a: ProduceArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let pconfig = producer_config(&a)?;
    let acks = pconfig.acks;
    let shape = Shape {
        topic: a.topic.clone(),
        partition: a.partition,
        separator: match a.key_separator.as_deref() {
            Some("") => bail!("--key-separator must not be empty"),
            Some(sep) => Some(sep.as_bytes().to_vec()),
            None => None,
        },
        key: a.key.as_ref().map(|k| Bytes::copy_from_slice(k.as_bytes())),
        headers: parse_headers(&a.headers)?,
        null_if_empty: a.null_value_if_empty,
    };
    // Read every file first: a missing one fails the command before anything is sent.
    let mut files = Vec::new();
    for path in &a.value_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read --value-file {}", path.display()))?;
        files.push(Bytes::from(bytes));
    }
    let producer = Producer::new(&ClientConfig::new(&c.bootstrap), pconfig)
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    let from_files = !a.value_file.is_empty();
    let mut rx = if !from_files {
        read_stdin_records()
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel(files.len().max(1));
        for f in files {
            tx.try_send(Ok(f)).expect("sized for every file");
        }
        rx
    };
    let mut pending = VecDeque::new();
    let (mut acked, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut settle = |r: Result<sluice_client::RecordMetadata, sluice_client::Error>,
                      acked: &mut u64,
                      failed: &mut u64| match r {
        Ok(_) => *acked += 1,
        Err(e) => {
            *failed += 1;
            first_error.get_or_insert(e);
        }
    };
    let mut read_error = None;
    while let Some(line) = rx.recv().await {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        pending.push_back(
            producer
                .send(shape.record(line, !from_files))
                .await
                .map_err(|e| explain(&e, &c.bootstrap))?,
        );
        if pending.len() >= PRODUCE_PENDING_MAX {
            let r = pending.pop_front().expect("non-empty").await;
            settle(r, &mut acked, &mut failed);
        }
    }
    producer.flush().await;
    for f in pending {
        settle(f.await, &mut acked, &mut failed);
    }
    // The summary is best effort: whether the records were delivered decides the exit
    // status, not whether anyone still reads stdout.
    match c.output {
        Output::Json => {
            let summary = json!({"acknowledged": acked, "failed": failed, "acks": acks.name()});
            let _ = writeln!(std::io::stdout(), "{summary}");
        }
        Output::Table => {
            let line = format!("{acked} record(s) acknowledged (acks={})", acks.name());
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
    let mut status = ExitCode::SUCCESS;
    if let Some(e) = first_error {
        let e = explain(&e, &c.bootstrap);
        let _ = writeln!(
            std::io::stderr(),
            "error: {failed} record(s) not acknowledged: {e}"
        );
        status = ExitCode::from(1);
    }
    if let Some(e) = read_error {
        let _ = writeln!(
            std::io::stderr(),
            "error: reading stdin failed after {} line(s): {e}; the rest was not sent",
            acked + failed
        );
        status = ExitCode::from(1);
    }
    Ok(status)
}

/// Reads stdin on its own thread (it blocks) as records: the bytes between `\n`s, sent
/// as they are — not decoded, no `\r` stripped — and a last line without `\n` too.
/// A read error is passed on (it must fail the command) and ends the stream.
fn read_stdin_records() -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let item = match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    Ok(Bytes::from(line))
                }
                Err(e) => Err(e),
            };
            let last = item.is_err();
            if tx.blocking_send(item).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// Splits `line` at the first `separator`: key before, value after. A line without the
/// separator is all value, with no key.
fn split_key(line: Bytes, separator: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let Some(sep) = separator else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (Some(line.slice(..i)), line.slice(i + sep.len()..)),
        None => (None, line),
    }
}
