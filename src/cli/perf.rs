//! `sluice perf produce|consume`: throughput and latency, with the durability settings
//! (acks, replication factor, fsync policy) printed beside every number.
//!
//! MB/s is 10^6 bytes of record payload per second. Produce latency is from `send` to
//! acknowledgement per record (hdrhistogram, microsecond resolution). With
//! `--throughput`, a consumer in the same process also measures end-to-end latency
//! (send to consumed), read from a send timestamp carried in each record's value.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use sluice_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, Seek,
};
use sluice_proto::{Compression, TopicPartition};

use super::output::{explain, status_eprintln, status_println};
use super::{ClientArgs, Output};

#[derive(Subcommand, Debug)]
pub enum PerfCommand {
    /// Produce N records as fast as possible (or at --throughput) and report.
    Produce(ProduceArgs),
    /// Consume exactly N records from the start of a topic and report.
    Consume(ConsumeArgs),
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic to write (it must exist).
    #[arg(long)]
    pub topic: String,
    /// How many records to send.
    #[arg(long)]
    pub num_records: u64,
    /// Bytes of value per record (at least 16).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// all (or -1), 1 or 0.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub acks: String,
    /// `batch.size` in bytes.
    #[arg(long, default_value_t = 16384)]
    pub batch_size: usize,
    /// `linger.ms`: how long a batch that is not full waits for more records.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Records per second; unlimited when absent.
    #[arg(long)]
    pub throughput: Option<u64>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Also consume in this process and report send-to-consume latency (needs
    /// --throughput; the consumer shares the CPU, so ack latency is reported apart).
    #[arg(long, requires = "throughput")]
    pub end_to_end: bool,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic to read, every partition from its log start.
    #[arg(long)]
    pub topic: String,
    /// How many records to read; fewer within the timeout is an error.
    #[arg(long)]
    pub num_records: u64,
    /// Give up after this long without a record.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// `check.crcs`: read every fetched batch's CRC-32C (default on, as Kafka's
    /// consumer); `--check-crcs false` measures replay without it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub check_crcs: bool,
}

pub async fn run(cmd: PerfCommand, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        PerfCommand::Produce(a) => produce(a, c).await,
        PerfCommand::Consume(a) => consume(a, c).await,
    }
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0})
}

/// Replication factor and fsync policy of a topic, as printed beside numbers.
async fn durability(
    admin: &Admin,
    topic: &str,
) -> Result<(usize, String, Vec<u32>), sluice_client::Error> {
    let d = admin.describe_topic(topic).await?;
    let rf = d.partitions.first().map_or(0, |p| p.replicas.len());
    let fsync = match d.configs.get("flush.messages").map(String::as_str) {
        Some("1") => "every batch (flush.messages=1)".to_string(),
        Some(n) => format!("every {n} records"),
        None => match d.configs.get("flush.ms") {
            Some(ms) => format!("every {ms} ms"),
            None => "none (OS writeback)".to_string(),
        },
    };
    Ok((
        rf,
        fsync,
        d.partitions.iter().map(|p| p.partition).collect(),
    ))
}

async fn produce(a: ProduceArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let acks = Acks::parse(&a.acks)
        .with_context(|| format!("--acks {} is not one of all, 1, 0", a.acks))?;
    let compression = Compression::from_name(&a.compression)
        .with_context(|| format!("unknown --compression {}", a.compression))?;
    if a.record_size < 16 {
        bail!("--record-size must be at least 16 bytes (the send timestamp rides in the value)");
    }
    let config = ClientConfig::new(&c.bootstrap);
    let ex = |e: sluice_client::Error| explain(&e, &c.bootstrap);
    let admin = Admin::new(&config);
    let (rf, fsync, partitions) = durability(&admin, &a.topic).await.map_err(ex)?;
    // Batches stay under the default max.message.bytes (1 MiB + 12) with room to spare.
    let batch_size_max = (1 << 20) - 1024;
    let pconfig = ProducerConfig {
        acks,
        batch_size: a.batch_size.min(batch_size_max),
        batch_size_max,
        linger: Duration::from_millis(a.linger_ms),
        compression,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&config, pconfig).await.map_err(ex)?;
    let epoch = Instant::now();
    let run_id: u64 = rand::random();
    let e2e = match a.end_to_end {
        true => Some(tokio::spawn(end_to_end(
            config.clone(),
            a.topic.clone(),
            partitions,
            a.num_records,
            epoch,
            run_id,
        ))),
        false => None,
    };
    if e2e.is_some() {
        // Let the consumer find the end before the first record goes out.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Instant, sluice_client::DeliveryFuture)>(1 << 16);
    let collector = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
        let mut errors = 0u64;
        let mut first_error = None;
        let mut last = None;
        while let Some((sent, mut f)) = rx.recv().await {
            match (&mut f).await {
                Ok(_) => {
                    // The time the ack arrived, not when this task got to it.
                    let acked = f.completed_at().unwrap_or_else(Instant::now);
                    h.saturating_record(acked.duration_since(sent).as_micros() as u64);
                    last = Some(acked);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        (h, errors, first_error, last)
    });
    let fixed = Bytes::from(vec![b'x'; a.record_size]);
    let progress = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last_report = start;
    let topic = a.topic.clone();
    for i in 0..a.num_records {
        if let Some(rate) = a.throughput.filter(|&r| r > 0) {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let sent = Instant::now();
        let value = if e2e.is_some() {
            let mut v = BytesMut::with_capacity(a.record_size);
            v.put_u64(sent.duration_since(epoch).as_nanos() as u64);
            v.put_u64(run_id);
            v.put_bytes(b'x', a.record_size - 16);
            v.freeze()
        } else {
            fixed.clone()
        };
        let record = ProducerRecord {
            topic: topic.clone(),
            partition: None,
            key: None,
            value: Some(value),
            headers: Vec::new(),
            timestamp: None,
        };
        let f = producer.send(record).await.map_err(ex)?;
        if tx.send((sent, f)).await.is_err() {
            break;
        }
        if progress && sent.duration_since(last_report) >= Duration::from_secs(1) {
            last_report = sent;
            status_eprintln!(
                "{i} records sent, {:.0} records/s",
                i as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    drop(tx);
    producer.flush().await;
    let (h, errors, first_error, last) = collector.await?;
    let elapsed = last
        .unwrap_or_else(Instant::now)
        .duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    let acked = a.num_records - errors;
    let rps = acked as f64 / elapsed;
    let mbps = rps * a.record_size as f64 / 1e6;
    let e2e_hist = match e2e {
        Some(t) => Some(t.await??),
        None => None,
    };
    let mut out = json!({
        "records": acked, "records_per_sec": rps, "mb_per_sec": mbps, "acks": acks.name(),
        "replication_factor": rf, "fsync": fsync, "record_size": a.record_size,
        "batch_size": a.batch_size, "linger_ms": a.linger_ms, "compression": a.compression,
        "latency_ms": latency_json(&h),
    });
    if let Some(t) = a.throughput {
        out["target_records_per_sec"] = json!(t);
    }
    if let Some(e) = &e2e_hist {
        out["end_to_end_latency_ms"] = latency_json(e);
    }
    match c.output {
        Output::Json => status_println!("{out}"),
        Output::Table => {
            status_println!("{acked} records, {rps:.0} records/s, {mbps:.1} MB/s   [acks={}, replication factor {rf}, fsync {fsync}]", acks.name());
            let l = &out["latency_ms"];
            status_println!(
                "produce->ack latency ms: p50 {} p95 {} p99 {} p99.9 {} max {}",
                l["p50"],
                l["p95"],
                l["p99"],
                l["p999"],
                l["max"]
            );
            if e2e_hist.is_some() {
                let l = &out["end_to_end_latency_ms"];
                status_println!(
                    "produce->consume latency ms: p50 {} p95 {} p99 {} p99.9 {} max {}",
                    l["p50"],
                    l["p95"],
                    l["p99"],
                    l["p999"],
                    l["max"]
                );
            }
        }
    }
    if let Some(e) = first_error {
        status_eprintln!(
            "error: {errors} record(s) failed: {}",
            explain(&e, &c.bootstrap)
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Consumes from the current end and records send-to-consume latency of this run's
/// records, until all `expected` arrived or nothing came for 10 s.
async fn end_to_end(
    config: ClientConfig,
    topic: String,
    partitions: Vec<u32>,
    expected: u64,
    epoch: Instant,
    run_id: u64,
) -> anyhow::Result<Histogram<u64>> {
    let mut consumer = Consumer::new(
        &config,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|&p| TopicPartition::new(topic.clone(), p))
        .collect();
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, Seek::Latest);
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut seen = 0;
    while seen < expected {
        let records = consumer
            .poll(Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if records.is_empty() {
            break;
        }
        let now = Instant::now().duration_since(epoch).as_nanos() as u64;
        for r in records {
            let Some(v) = r.value.filter(|v| v.len() >= 16) else {
                continue;
            };
            if u64::from_be_bytes(v[8..16].try_into().expect("8 bytes")) != run_id {
                continue;
            }
            let sent = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            h.saturating_record(now.saturating_sub(sent) / 1000);
            seen += 1;
        }
    }
    Ok(h)
}

async fn consume(a: ConsumeArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let config = ClientConfig::new(&c.bootstrap);
    let admin = Admin::new(&config);
    let (rf, fsync, partitions) = durability(&admin, &a.topic)
        .await
        .map_err(|e| explain(&e, &c.bootstrap))?;
    let mut consumer = Consumer::new(
        &config,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            check_crcs: a.check_crcs,
            ..ConsumerConfig::default()
        },
    );
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|&p| TopicPartition::new(a.topic.clone(), p))
        .collect();
    consumer.assign(tps);
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last = start;
    let mut per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    while records < a.num_records {
        let batch = consumer
            .poll(Duration::from_millis(a.timeout_ms))
            .await
            .map_err(|e| explain(&e, &c.bootstrap))?;
        if batch.is_empty() {
            break;
        }
        last = Instant::now();
        // A fetch may bring more than asked for: read exactly --num-records.
        let wanted = (a.num_records - records) as usize;
        for r in batch.into_iter().take(wanted) {
            records += 1;
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
            *per_partition.entry(r.partition).or_default() += 1;
        }
    }
    let elapsed = last.duration_since(start).as_secs_f64().max(1e-9);
    let out = json!({"records": records, "records_per_sec": records as f64 / elapsed, "mb_per_sec": bytes as f64 / elapsed / 1e6, "replication_factor": rf, "fsync": fsync, "check_crcs": a.check_crcs});
    match c.output {
        Output::Json => status_println!("{out}"),
        Output::Table => status_println!("{records} records, {:.0} records/s, {:.1} MB/s   [replication factor {rf}, fsync {fsync}, check.crcs {}]", records as f64 / elapsed, bytes as f64 / elapsed / 1e6, a.check_crcs),
    }
    if records < a.num_records {
        status_eprintln!(
            "error: only {records} of {} records arrived within the timeout",
            a.num_records
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
