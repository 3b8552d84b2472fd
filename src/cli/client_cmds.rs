//! Client commands: `topic`, `produce`, `consume`, `cluster`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Seek,
};
use sluice_proto::topic_config::LogConfig;
use sluice_proto::TopicPartition;

use super::output::{base64, explain, list, opt, outln, table};
use super::{ClientArgs, Output};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long)]
        partitions: u32,
        #[arg(long)]
        replication_factor: u32,
        /// A topic config, `name=value` (repeatable).
        #[arg(long = "config", value_name = "K=V")]
        configs: Vec<String>,
    },
    /// List topic names.
    List,
    /// Partitions, leaders, offsets and configs of a topic.
    Describe {
        name: String,
        /// Only partitions whose ISR is smaller than their replica set.
        #[arg(long)]
        under_replicated: bool,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Change topic configs.
    Alter {
        name: String,
        #[arg(long = "config", value_name = "K=V")]
        configs: Vec<String>,
        /// A config to reset to the broker default (repeatable).
        #[arg(long = "delete-config", value_name = "K")]
        delete: Vec<String>,
        /// Grow the topic to this many partitions.
        #[arg(long)]
        partitions: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PartitionCommand {
    /// Move leadership back to each partition's preferred (first) replica.
    ElectLeaders {
        #[arg(long)]
        topic: Option<String>,
    },
    /// Move a partition to other brokers (new replicas catch up first).
    Reassign {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        /// Broker ids, comma-separated; the first is the preferred leader.
        #[arg(long, value_delimiter = ',')]
        replicas: Vec<u32>,
    },
}

pub async fn partition(cmd: PartitionCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    let topic = match cmd {
        PartitionCommand::ElectLeaders { topic } => topic,
        PartitionCommand::Reassign {
            topic,
            partition,
            replicas,
        } => {
            admin
                .reassign_partition(&topic, partition, replicas.clone())
                .await
                .map_err(|e| explain(&e, &c.bootstrap))?;
            match c.output {
                Output::Json => outln!("{}", json!({"topic": topic, "partition": partition, "target": replicas})),
                Output::Table => outln!("reassigning {topic}-{partition} to {replicas:?}; it completes when the new replicas are in sync"),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let changed = admin
        .elect_leaders(topic.as_deref())
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    match c.output {
        Output::Json => outln!("{}", json!({"changed": changed})),
        Output::Table => outln!("{changed} partition(s) moved to their preferred leader"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The controller and every broker.
    Describe,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Split each line at the first SEP: key before, value after.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Delivery timeout (`delivery.timeout.ms`): how long a record may take, retries
    /// included; a record still failing then fails with the last error seen.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Consumer group (not available in this version).
    #[arg(long)]
    pub group: Option<String>,
    /// Start at the earliest offset instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    pub offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop after this long without a new record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print `key<TAB>value`.
    #[arg(long)]
    pub print_key: bool,
}

fn parse_configs(configs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    configs
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--config {c:?} is not of the form name=value"),
        })
        .collect()
}

pub async fn topic(cmd: TopicCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    let ex = |e: sluice_client::Error| explain(&e, &c.bootstrap);
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs = parse_configs(&configs)?;
            admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await
                .map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!({"name": name, "partitions": partitions, "replication_factor": replication_factor})),
                Output::Table => outln!("created topic {name} ({partitions} partitions, replication factor {replication_factor})"),
            }
        }
        TopicCommand::List => {
            let names = admin.list_topics().await.map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!(names)),
                Output::Table => names.iter().for_each(|n| outln!("{n}")),
            }
        }
        TopicCommand::Describe {
            name,
            under_replicated,
        } => {
            let mut d = admin.describe_topic(&name).await.map_err(ex)?;
            if under_replicated {
                d.partitions.retain(|p| p.isr.len() < p.replicas.len());
            }
            let effective = LogConfig::default()
                .with_overrides(d.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map(|c| c.to_map())
                .unwrap_or_else(|_| d.configs.clone());
            match c.output {
                Output::Json => {
                    let parts: Vec<_> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            json!({"partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                                   "replicas": p.replicas, "isr": p.isr, "high_watermark": p.high_watermark,
                                   "log_end_offset": p.log_end_offset, "log_start_offset": p.log_start_offset})
                        })
                        .collect();
                    outln!(
                        "{}",
                        json!({"name": d.name, "topic_id": d.topic_id, "partitions": parts, "configs": effective})
                    );
                }
                Output::Table => {
                    outln!("topic {} (id {})", d.name, d.topic_id);
                    let rows = d
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                opt(p.leader),
                                p.leader_epoch.to_string(),
                                list(&p.replicas),
                                list(&p.isr),
                                opt(p.log_start_offset),
                                opt(p.high_watermark),
                                opt(p.log_end_offset),
                            ]
                        })
                        .collect();
                    outln!(
                        "{}",
                        table(
                            &[
                                "partition",
                                "leader",
                                "epoch",
                                "replicas",
                                "isr",
                                "log start",
                                "high watermark",
                                "log end"
                            ],
                            rows
                        )
                    );
                    if !d.configs.is_empty() {
                        let rows = d
                            .configs
                            .iter()
                            .map(|(k, v)| vec![k.clone(), v.clone()])
                            .collect();
                        outln!("{}", table(&["config (set on topic)", "value"], rows));
                    }
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await.map_err(ex)?;
            match c.output {
                Output::Json => outln!("{}", json!({"deleted": name})),
                Output::Table => outln!("deleted topic {name}"),
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            delete,
            partitions,
        } => {
            if configs.is_empty() && delete.is_empty() && partitions.is_none() {
                bail!("nothing to change: give --config K=V, --delete-config K or --partitions N");
            }
            if !configs.is_empty() || !delete.is_empty() {
                admin
                    .alter_configs(&name, parse_configs(&configs)?, delete)
                    .await
                    .map_err(ex)?;
            }
            if let Some(total) = partitions {
                admin.create_partitions(&name, total).await.map_err(ex)?;
            }
            match c.output {
                Output::Json => outln!("{}", json!({"altered": name})),
                Output::Table => outln!("altered topic {name}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cluster(cmd: ClusterCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Describe = cmd;
    let admin = Admin::new(&ClientConfig::new(&c.bootstrap));
    let d = admin
        .describe_cluster()
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    match c.output {
        Output::Json => {
            let brokers: Vec<_> = d.brokers.iter().map(|b| json!({"id": b.id, "addr": b.addr, "rack": (!b.rack.is_empty()).then_some(&b.rack), "alive": b.alive})).collect();
            outln!(
                "{}",
                json!({"controller": {"id": d.controller_id, "epoch": d.controller_epoch}, "brokers": brokers})
            );
        }
        Output::Table => {
            outln!(
                "controller {} (epoch {})",
                d.controller_id,
                d.controller_epoch
            );
            let rows = d
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.addr.clone(),
                        b.rack.clone(),
                        if b.alive { "alive" } else { "fenced" }.to_string(),
                    ]
                })
                .collect();
            outln!("{}", table(&["broker", "address", "rack", "state"], rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Most records awaiting acknowledgement before `produce` waits for the oldest.
const PRODUCE_PENDING_MAX: usize = 100_000;

pub async fn produce(a: ProduceArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let acks = Acks::parse(&a.acks)
        .with_context(|| format!("--acks {} is not one of all, 1, 0", a.acks))?;
    if a.timeout_ms == 0 {
        bail!("--timeout-ms must be at least 1");
    }
    let config = ClientConfig::new(&c.bootstrap);
    let defaults = ProducerConfig::default();
    let delivery_timeout = Duration::from_millis(a.timeout_ms);
    let producer = Producer::new(
        &config,
        ProducerConfig {
            acks,
            delivery_timeout,
            // One request may not outlast the whole delivery timeout.
            request_timeout: defaults.request_timeout.min(delivery_timeout),
            ..defaults
        },
    )
    .await
    .map_err(|e| explain(&e, &c.bootstrap))?;
    let separator = match a.key_separator.as_deref() {
        Some("") => bail!("--key-separator must not be empty"),
        Some(sep) => Some(sep.as_bytes().to_vec()),
        None => None,
    };
    let mut rx = read_stdin_records();
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
            Ok(line) => Bytes::from(line),
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        let (key, value) = split_key(line, separator.as_deref());
        let record = ProducerRecord {
            partition: a.partition,
            ..ProducerRecord::new(a.topic.clone(), key, value)
        };
        pending.push_back(
            producer
                .send(record)
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
fn read_stdin_records() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
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
                    Ok(line)
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

pub async fn consume(a: ConsumeArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    if a.group.is_some() {
        bail!("consumer groups are not available in this version yet; read with --from-beginning, or --partition P --offset N");
    }
    let config = ClientConfig::new(&c.bootstrap);
    let ex = |e: sluice_client::Error| explain(&e, &c.bootstrap);
    let admin = Admin::new(&config);
    let topic = admin.describe_topic(&a.topic).await.map_err(ex)?;
    let partitions: Vec<u32> = match a.partition {
        Some(p) if topic.partitions.iter().any(|d| d.partition == p) => vec![p],
        Some(p) => bail!(
            "topic {} has no partition {p} (it has {})",
            a.topic,
            topic.partitions.len()
        ),
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let reset = if a.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut consumer = Consumer::new(
        &config,
        ConsumerConfig {
            auto_offset_reset: reset,
            ..ConsumerConfig::default()
        },
    );
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|&p| TopicPartition::new(a.topic.clone(), p))
        .collect();
    consumer.assign(tps.clone());
    if let (Some(offset), Some(tp)) = (a.offset, tps.first()) {
        consumer.seek(tp, Seek::Offset(offset));
    }
    let idle = a.timeout_ms.map(Duration::from_millis);
    let mut seen = 0u64;
    let mut last_record = tokio::time::Instant::now();
    let stdout = std::io::stdout();
    loop {
        if a.max_messages.is_some_and(|m| seen >= m) {
            break;
        }
        let wait = idle.map_or(Duration::from_millis(500), |t| {
            t.saturating_sub(last_record.elapsed())
                .max(Duration::from_millis(1))
        });
        let records = tokio::select! {
            r = consumer.poll(wait) => r.map_err(ex)?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if records.is_empty() {
            if idle.is_some_and(|t| last_record.elapsed() >= t) {
                break;
            }
            continue;
        }
        last_record = tokio::time::Instant::now();
        let mut out = stdout.lock();
        for r in records {
            if a.max_messages.is_some_and(|m| seen >= m) {
                break;
            }
            seen += 1;
            let mut line = match c.output {
                Output::Json => record_json(&r).to_string().into_bytes(),
                Output::Table if a.print_key => {
                    let mut l = r.key.as_deref().unwrap_or_default().to_vec();
                    l.push(b'\t');
                    l.extend_from_slice(r.value.as_deref().unwrap_or_default());
                    l
                }
                Output::Table => r.value.as_deref().unwrap_or_default().to_vec(),
            };
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                return stdout_failed(e);
            }
        }
        if let Err(e) = out.flush() {
            return stdout_failed(e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One consumed record as JSON. Keys and values are UTF-8 strings when both are valid
/// UTF-8; otherwise both are base64 with `"encoding": "base64"` beside them (the same
/// convention as `sluice table serve`), so no byte is lost or replaced.
fn record_json(r: &sluice_client::ConsumerRecord) -> serde_json::Value {
    let utf8 = |b: &Option<Bytes>| b.as_deref().is_none_or(|b| std::str::from_utf8(b).is_ok());
    let mut v = json!({"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp});
    if utf8(&r.key) && utf8(&r.value) {
        let text = |b: &Option<Bytes>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        v["key"] = json!(text(&r.key));
        v["value"] = json!(text(&r.value));
    } else {
        v["key"] = json!(r.key.as_deref().map(base64));
        v["value"] = json!(r.value.as_deref().map(base64));
        v["encoding"] = json!("base64");
    }
    v
}

/// A closed stdout (`sluice consume T | head -3`) ends `consume` quietly with status 0;
/// any other write error (a full disk) is an error.
fn stdout_failed(e: std::io::Error) -> anyhow::Result<ExitCode> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(ExitCode::SUCCESS);
    }
    Err(e).context("cannot write to stdout")
}
