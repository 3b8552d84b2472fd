//! `sluice consume`: print a topic's records, with the start positions, stop conditions
//! and output formats kcat and kafka-console-consumer users expect (docs/cli.md).
//!
//! The start of every partition read is resolved before the first fetch: `--offset`
//! is checked against each partition's log start and high watermark (an offset past
//! the end is an error, never a silent jump), and `--exit-at-end` takes each
//! partition's high watermark as it is when the command starts. The topic's id is
//! checked while reading, so a deleted or recreated topic stops the command.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use sluice_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, GroupOptions, OffsetReset, Seek,
    Subscription,
};
use sluice_proto::{ErrorCode, TopicPartition};

use super::output::{base64, explain};
use super::{ClientArgs, Output};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic to read.
    pub topic: String,
    /// Read as a member of consumer group G: the group's coordinator assigns the
    /// partitions, each starts at the group's committed offset (else at the end, or the
    /// beginning with --from-beginning), and positions are committed every 5 s, on
    /// rebalance and on exit (Ctrl-C, SIGTERM). A topic starting with `^` is a regex:
    /// every matching topic, including ones created later.
    #[arg(long, value_name = "G", conflicts_with_all = ["partition", "offset", "from_timestamp", "exit_at_end"])]
    pub group: Option<String>,
    /// With --group: `session.timeout.ms` (how long a silent member keeps its
    /// partitions); default: the broker's (45 s).
    #[arg(long, value_name = "MS", requires = "group")]
    pub session_timeout_ms: Option<u64>,
    /// With --group: `group.instance.id`, a static member that gets its partitions back
    /// when it restarts within its session timeout.
    #[arg(long, value_name = "ID", requires = "group")]
    pub instance_id: Option<String>,
    /// With --group: `auto.commit.interval.ms`.
    #[arg(long, value_name = "MS", requires = "group", default_value_t = 5000)]
    pub commit_interval_ms: u64,
    /// Start at each partition's log start (the same as `--offset beginning`).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    pub from_beginning: bool,
    /// Read only this partition (default: every partition).
    #[arg(short = 'p', long)]
    pub partition: Option<u32>,
    /// Where to start in every partition read: `beginning`, `end` (the default), `N`
    /// (that offset), `-N` (N records before the end), `+N` (N records after the log
    /// start) or `s@MS` (the first record at or after timestamp MS).
    #[arg(short = 'o', long, allow_hyphen_values = true, value_name = "OFFSET")]
    pub offset: Option<StartAt>,
    /// Start at the first record whose timestamp is at or after MS (milliseconds since
    /// the Unix epoch), in every partition read.
    #[arg(long, value_name = "MS", conflicts_with = "offset")]
    pub from_timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(short = 'c', long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Stop at the end: each partition's high watermark when the command started.
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// Stop after this long without a new record.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Also print CDC heartbeats and copy markers (records with the `sluice.heartbeat`
    /// header or the `__sluice_heartbeat` key, which a connector writes to every
    /// partition to move Tables' source positions); left out by default, and never
    /// counted by -c or --timeout-ms.
    #[arg(long)]
    pub heartbeats: bool,
    /// Print `key<TAB>value`.
    #[arg(long)]
    pub print_key: bool,
    /// Print the headers first, as `name=value,name=value` and a TAB.
    #[arg(long)]
    pub print_headers: bool,
    /// One JSON object per record, as kcat -J (the same as `--output json`).
    #[arg(short = 'J')]
    pub json: bool,
    /// Print each record by this format, as kcat -f: %s value, %k key, %S / %K their
    /// lengths (-1 if null), %t topic, %p partition, %o offset, %T timestamp (ms), %h
    /// headers (name=value,…), %% a percent sign; escapes \n \r \t \\ \xHH. No newline
    /// is added.
    #[arg(short = 'f', long, value_name = "FMT", conflicts_with_all = ["print_key", "print_headers"])]
    pub format: Option<String>,
}

/// A start position for every partition read (`--offset`), kcat's and rpk's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
    /// This offset; past the high watermark or before the log start is an error.
    Offset(u64),
    /// N records before the high watermark, no earlier than the log start.
    FromEnd(u64),
    /// N records after the log start; past the high watermark is an error.
    FromStart(u64),
    /// The first record at or after this timestamp (ms); the end if none.
    Timestamp(i64),
}

impl FromStr for StartAt {
    type Err = String;

    fn from_str(s: &str) -> Result<StartAt, String> {
        let number = |n: &str| {
            n.parse::<u64>().map_err(|_| {
                format!("{s:?} is not beginning, end, N, -N, +N or s@MS (a timestamp in ms)")
            })
        };
        Ok(match s {
            "beginning" | "start" | "earliest" => StartAt::Beginning,
            "end" | "latest" => StartAt::End,
            _ => {
                if let Some(ms) = s.strip_prefix("s@").or_else(|| s.strip_prefix('@')) {
                    StartAt::Timestamp(number(ms)? as i64)
                } else if let Some(n) = s.strip_prefix('-') {
                    StartAt::FromEnd(number(n)?)
                } else if let Some(n) = s.strip_prefix('+') {
                    StartAt::FromStart(number(n)?)
                } else {
                    StartAt::Offset(number(s)?)
                }
            }
        })
    }
}

/// One piece of a `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Value,
    ValueLen,
    Key,
    KeyLen,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

/// Parses a kcat `-f` format string; unknown `%x` or `\x` sequences are errors.
fn parse_format(f: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('s') => Piece::Value,
                Some('S') => Piece::ValueLen,
                Some('k') => Piece::Key,
                Some('K') => Piece::KeyLen,
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    lit.push(b'%');
                    continue;
                }
                other => {
                    return Err(format!(
                        "--format: unknown %{} (use %s %S %k %K %t %p %o %T %h or %%)",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            },
            '\\' => {
                match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('r') => lit.push(b'\r'),
                    Some('t') => lit.push(b'\t'),
                    Some('\\') => lit.push(b'\\'),
                    Some('x') => {
                        let hex: String = (0..2).filter_map(|_| chars.next()).collect();
                        let b = u8::from_str_radix(&hex, 16).map_err(|_| {
                            format!("--format: \\x{hex} is not \\x and two hex digits")
                        })?;
                        lit.push(b);
                    }
                    other => {
                        return Err(format!(
                            "--format: unknown escape \\{} (use \\n \\r \\t \\\\ or \\xHH)",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                }
                continue;
            }
            c => {
                lit.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
        };
        if !lit.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut lit)));
        }
        pieces.push(piece);
    }
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit));
    }
    Ok(pieces)
}

/// `name=value,name=value`, values as their bytes (a null value prints nothing).
fn headers_text(r: &ConsumerRecord, out: &mut Vec<u8>) {
    for (i, h) in r.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(h.key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(h.value.as_deref().unwrap_or_default());
    }
}

fn render(pieces: &[Piece], r: &ConsumerRecord, out: &mut Vec<u8>) {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
    for p in pieces {
        match p {
            Piece::Literal(l) => out.extend_from_slice(l),
            Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
            Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Piece::ValueLen => out.extend_from_slice(len(&r.value).to_string().as_bytes()),
            Piece::KeyLen => out.extend_from_slice(len(&r.key).to_string().as_bytes()),
            Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
            Piece::Headers => headers_text(r, out),
        }
    }
}

/// How one record is printed.
enum Printer {
    Json,
    Format(Vec<Piece>),
    /// `[headers<TAB>][key<TAB>]value\n`.
    Plain {
        key: bool,
        headers: bool,
    },
}

impl Printer {
    fn print(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        match self {
            Printer::Json => {
                out.extend_from_slice(record_json(r).to_string().as_bytes());
                out.push(b'\n');
            }
            Printer::Format(pieces) => render(pieces, r, out),
            Printer::Plain { key, headers } => {
                if *headers {
                    headers_text(r, out);
                    out.push(b'\t');
                }
                if *key {
                    out.extend_from_slice(r.key.as_deref().unwrap_or_default());
                    out.push(b'\t');
                }
                out.extend_from_slice(r.value.as_deref().unwrap_or_default());
                out.push(b'\n');
            }
        }
    }
}

/// How long `consume` may go without checking that its topic is still the one it
/// started on, while no record arrives.
const TOPIC_CHECK_IDLE: Duration = Duration::from_secs(1);

/// Stops `consume` when the topic it reads is deleted, or deleted and created again
/// under the same name: fetches name topics, not ids, so without this a follower of a
/// deleted topic would wait silently and then print another topic's records.
struct TopicGuard {
    admin: Admin,
    name: String,
    /// The id of the topic when the command started.
    id: String,
    checked: tokio::time::Instant,
}

impl TopicGuard {
    /// Errors if the topic is gone or has another id. Called before printing records
    /// (a topic whose id is unchanged now was the same when they were fetched, since
    /// ids are never reused) and every [`TOPIC_CHECK_IDLE`] while idle. A check that
    /// cannot reach the cluster passes: the next one will tell.
    async fn check(&mut self) -> anyhow::Result<()> {
        self.checked = tokio::time::Instant::now();
        match self.admin.topic_id(&self.name).await {
            Ok(id) if id == self.id => Ok(()),
            Ok(id) => bail!(
                "topic {} was deleted and created again (id {} is now {id}) while it was being read; stopping, as the new topic's records are not the ones asked for",
                self.name,
                self.id
            ),
            Err(e) if e.code() == Some(ErrorCode::UnknownTopicOrPartition) => {
                bail!("topic {} was deleted while it was being read", self.name)
            }
            Err(_) => Ok(()),
        }
    }
}

/// The seek for one partition, from its offsets as `topic describe` reads them.
fn start_of(
    start: StartAt,
    tp: &TopicPartition,
    offsets: Option<(u64, u64)>,
) -> anyhow::Result<Seek> {
    let range = || {
        offsets.with_context(|| {
            format!("cannot read the offsets of {tp} (it has no leader now); try again shortly")
        })
    };
    Ok(match start {
        StartAt::Beginning => Seek::Earliest,
        StartAt::End => Seek::Latest,
        StartAt::Timestamp(ms) => Seek::Timestamp(ms),
        StartAt::FromEnd(n) => {
            let (log_start, hw) = range()?;
            Seek::Offset(hw.saturating_sub(n).max(log_start))
        }
        StartAt::Offset(o) | StartAt::FromStart(o) => {
            let (log_start, hw) = range()?;
            let o = match start {
                StartAt::FromStart(n) => log_start.saturating_add(n),
                _ => o,
            };
            if o > hw {
                bail!("offset {o} is past the end of {tp} (log start {log_start}, high watermark {hw}); use --offset end to wait for new records, or -N for the last N");
            }
            if o < log_start {
                bail!("offset {o} is before the log start of {tp} (log start {log_start}, high watermark {hw}); use --offset beginning");
            }
            Seek::Offset(o)
        }
    })
}

pub async fn consume(a: ConsumeArgs, c: &ClientArgs) -> anyhow::Result<ExitCode> {
    let output = if a.json { Output::Json } else { c.output };
    let printer = match (&a.format, output) {
        (Some(_), Output::Json) => bail!("--format and --output json (-J) cannot be combined"),
        (Some(f), Output::Table) => Printer::Format(parse_format(f).map_err(anyhow::Error::msg)?),
        (None, Output::Json) => Printer::Json,
        (None, Output::Table) => Printer::Plain {
            key: a.print_key,
            headers: a.print_headers,
        },
    };
    if let Some(group) = a.group.clone() {
        return consume_group(a, c, group, printer).await;
    }
    let start = match (a.from_beginning, a.offset, a.from_timestamp) {
        (true, _, _) => StartAt::Beginning,
        (_, Some(o), _) => o,
        (_, _, Some(ms)) => StartAt::Timestamp(ms),
        _ => StartAt::End,
    };
    let config = ClientConfig::new(&c.bootstrap);
    let ex = |e: sluice_client::Error| explain(&e, &c.bootstrap);
    let admin = Admin::new(&config);
    let topic = admin.describe_topic(&a.topic).await.map_err(ex)?;
    let partitions: Vec<_> = match a.partition {
        Some(p) => match topic.partitions.iter().find(|d| d.partition == p) {
            Some(d) => vec![d.clone()],
            None => bail!(
                "topic {} has no partition {p} (it has {})",
                a.topic,
                topic.partitions.len()
            ),
        },
        None => topic.partitions.clone(),
    };
    // After the start is resolved, a position that falls off the log (retention) moves
    // to what is still readable, as a consumer that fell behind does.
    let reset = match start {
        StartAt::End => OffsetReset::Latest,
        _ => OffsetReset::Earliest,
    };
    let mut consumer = Consumer::new(
        &config,
        ConsumerConfig {
            auto_offset_reset: reset,
            ..ConsumerConfig::default()
        },
    );
    let mut ends: HashMap<u32, u64> = HashMap::new();
    let mut seeks = Vec::new();
    for d in &partitions {
        let tp = TopicPartition::new(a.topic.clone(), d.partition);
        let offsets = d.log_start_offset.zip(d.high_watermark);
        if a.exit_at_end {
            let (_, hw) = offsets.with_context(|| {
                format!("cannot read the end of {tp} (it has no leader now); try again shortly")
            })?;
            ends.insert(d.partition, hw);
        }
        seeks.push((tp.clone(), start_of(start, &tp, offsets)?));
    }
    consumer.assign(seeks.iter().map(|(tp, _)| tp.clone()).collect());
    for (tp, seek) in &seeks {
        consumer.seek(tp, *seek);
    }
    // The id to compare comes from where later checks read it (a broker's metadata).
    let id = admin.topic_id(&a.topic).await.map_err(ex)?;
    let mut guard = TopicGuard {
        admin,
        name: a.topic.clone(),
        id,
        checked: tokio::time::Instant::now(),
    };
    let idle = a.timeout_ms.map(Duration::from_millis);
    let mut seen = 0u64;
    let mut last_record = tokio::time::Instant::now();
    let stdout = std::io::stdout();
    loop {
        if a.max_messages.is_some_and(|m| seen >= m) {
            break;
        }
        if a.exit_at_end {
            // A partition is done once its position reached the end seen at start;
            // `ends` keeps only the partitions still to finish.
            for (tp, _) in &seeks {
                let Some(&end) = ends.get(&tp.partition) else {
                    continue;
                };
                if consumer.position(tp).is_some_and(|p| p >= end) {
                    consumer.pause(tp);
                    ends.remove(&tp.partition);
                }
            }
            if ends.is_empty() {
                break;
            }
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
            if guard.checked.elapsed() >= TOPIC_CHECK_IDLE {
                guard.check().await?;
            }
            continue;
        }
        guard.check().await?;
        if records.iter().any(|r| a.heartbeats || !is_heartbeat(r)) {
            last_record = tokio::time::Instant::now();
        }
        let mut line = Vec::new();
        for r in records {
            if a.max_messages.is_some_and(|m| seen >= m) {
                break;
            }
            if a.exit_at_end && ends.get(&r.partition).is_none_or(|&end| r.offset >= end) {
                continue;
            }
            if !a.heartbeats && is_heartbeat(&r) {
                continue;
            }
            seen += 1;
            printer.print(&r, &mut line);
        }
        let mut out = stdout.lock();
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
            return stdout_failed(e);
        }
        // Heartbeats alone keep polls busy: the idle limit is checked here too.
        if idle.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn stop_requested() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match &mut term { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// `consume --group`: a group member printing what it is given. Every change of what it
/// owns is reported on stderr as `group G member M epoch E owns [t-0,t-3]`.
async fn consume_group(
    a: ConsumeArgs,
    c: &ClientArgs,
    group: String,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let config = ClientConfig::new(&c.bootstrap);
    let ex = |e: sluice_client::Error| explain(&e, &c.bootstrap);
    let subscription = match a.topic.strip_prefix('^') {
        Some(_) => Subscription::Pattern(a.topic.clone()),
        None => {
            // A missing topic is an error here, not a silent wait.
            Admin::new(&config)
                .describe_topic(&a.topic)
                .await
                .map_err(ex)?;
            Subscription::Topics(vec![a.topic.clone()])
        }
    };
    let mut consumer = Consumer::new(
        &config,
        ConsumerConfig {
            auto_offset_reset: if a.from_beginning {
                OffsetReset::Earliest
            } else {
                OffsetReset::Latest
            },
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe(
            GroupOptions {
                instance_id: a.instance_id.clone(),
                session_timeout: a.session_timeout_ms.map(Duration::from_millis),
                auto_commit_interval: Some(Duration::from_millis(a.commit_interval_ms.max(1))),
                ..GroupOptions::new(group.clone())
            },
            subscription,
        )
        .map_err(ex)?;
    let idle = a.timeout_ms.map(Duration::from_millis);
    let mut seen = 0u64;
    let mut last_record = tokio::time::Instant::now();
    let mut shown: Option<(String, i32, Vec<TopicPartition>)> = None;
    let stdout = std::io::stdout();
    let stop = stop_requested();
    tokio::pin!(stop);
    // The first record of each partition that poll returned but that was not printed
    // (past --max-messages, or a write to stdout failed): the group's offset goes there,
    // not past it.
    let mut unprinted: BTreeMap<TopicPartition, u64> = BTreeMap::new();
    let result: anyhow::Result<()> = async {
        loop {
            if a.max_messages.is_some_and(|m| seen >= m) {
                return Ok(());
            }
            let wait = idle.map_or(Duration::from_millis(500), |t| {
                t.saturating_sub(last_record.elapsed())
                    .max(Duration::from_millis(1))
            });
            let records = tokio::select! {
                r = consumer.poll(wait) => r.map_err(ex)?,
                _ = &mut stop => return Ok(()),
            };
            if let Some((member, epoch)) = consumer.member() {
                let owned = consumer.assignment();
                let now = (member, epoch, owned);
                if shown.as_ref() != Some(&now) {
                    let list: Vec<String> = now.2.iter().map(|tp| tp.to_string()).collect();
                    eprintln!(
                        "group {group} member {} epoch {} owns [{}]",
                        now.0,
                        now.1,
                        list.join(",")
                    );
                    shown = Some(now);
                }
            }
            if records.is_empty() {
                if idle.is_some_and(|t| last_record.elapsed() >= t) {
                    return Ok(());
                }
                continue;
            }
            if records.iter().any(|r| a.heartbeats || !is_heartbeat(r)) {
                last_record = tokio::time::Instant::now();
            }
            let mut line = Vec::new();
            for r in &records {
                if a.max_messages.is_some_and(|m| seen >= m) {
                    unprinted
                        .entry(TopicPartition::new(r.topic.clone(), r.partition))
                        .or_insert(r.offset);
                    continue;
                }
                if !a.heartbeats && is_heartbeat(r) {
                    continue;
                }
                seen += 1;
                printer.print(r, &mut line);
            }
            let mut out = stdout.lock();
            if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                // Nothing of this batch is known to have reached the reader: the group's
                // offsets stay before it (whatever it was, a closed pipe or a full disk).
                for r in &records {
                    let at = unprinted
                        .entry(TopicPartition::new(r.topic.clone(), r.partition))
                        .or_insert(r.offset);
                    *at = (*at).min(r.offset);
                }
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e).context("cannot write to stdout");
            }
            // Heartbeats alone keep polls busy: the idle limit is checked here too.
            if idle.is_some_and(|t| last_record.elapsed() >= t) {
                return Ok(());
            }
        }
    }
    .await;
    // Commit what was printed and leave, so the others take over at once.
    for tp in unprinted.keys() {
        // No position: `close` leaves these to the explicit commit below.
        consumer.seek(tp, Seek::Offset(0));
    }
    // Only what is still this member's: a partition revoked meanwhile is its new
    // owner's to commit (it starts from the last commit, so nothing is skipped).
    let owned = consumer.assignment();
    unprinted.retain(|tp, _| owned.contains(tp));
    let partial = consumer.commit_offsets(unprinted).await;
    let closed = consumer.close().await.and(partial);
    result?;
    closed.map_err(ex)?;
    Ok(ExitCode::SUCCESS)
}

/// One consumed record as JSON. Keys, values and header values are UTF-8 strings when
/// all are valid UTF-8; otherwise all are base64 with `"encoding": "base64"` beside
/// them (the same convention as `sluice table serve`), so no byte is lost or replaced.
/// Header names are always strings.
fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    let utf8 = |b: &Option<Bytes>| b.as_deref().is_none_or(|b| std::str::from_utf8(b).is_ok());
    let text = utf8(&r.key) && utf8(&r.value) && r.headers.iter().all(|h| utf8(&h.value));
    let show = |b: &Option<Bytes>| match text {
        true => json!(b
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())),
        false => json!(b.as_deref().map(base64)),
    };
    let headers: Vec<_> = r
        .headers
        .iter()
        .map(|h| json!({"key": h.key, "value": show(&h.value)}))
        .collect();
    let mut v = json!({"topic": r.topic, "partition": r.partition, "offset": r.offset,
                       "timestamp": r.timestamp, "key": show(&r.key), "value": show(&r.value),
                       "headers": headers});
    if !text {
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

/// A CDC connector's heartbeat or copy marker (see `--heartbeats`): its header, or
/// its key.
fn is_heartbeat(r: &sluice_client::ConsumerRecord) -> bool {
    use sluice_proto::source_pos::{HEARTBEAT_HEADER, HEARTBEAT_KEY};
    r.key.as_deref() == Some(HEARTBEAT_KEY) || r.headers.iter().any(|h| h.key == HEARTBEAT_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_as_kcat_and_rpk_write_them() {
        let p = |s: &str| s.parse::<StartAt>();
        assert_eq!(p("beginning"), Ok(StartAt::Beginning));
        assert_eq!(p("end"), Ok(StartAt::End));
        assert_eq!(p("42"), Ok(StartAt::Offset(42)));
        assert_eq!(p("-2"), Ok(StartAt::FromEnd(2)));
        assert_eq!(p("+3"), Ok(StartAt::FromStart(3)));
        assert_eq!(
            p("s@1700000000000"),
            Ok(StartAt::Timestamp(1_700_000_000_000))
        );
        assert!(p("-x").is_err());
        assert!(p("soon").is_err());
    }

    #[test]
    fn starts_are_checked_against_the_log() {
        let tp = TopicPartition::new("t", 0);
        let r = Some((10, 20));
        assert_eq!(
            start_of(StartAt::FromEnd(2), &tp, r).unwrap(),
            Seek::Offset(18)
        );
        assert_eq!(
            start_of(StartAt::FromEnd(99), &tp, r).unwrap(),
            Seek::Offset(10)
        );
        assert_eq!(
            start_of(StartAt::FromStart(3), &tp, r).unwrap(),
            Seek::Offset(13)
        );
        assert_eq!(
            start_of(StartAt::Offset(20), &tp, r).unwrap(),
            Seek::Offset(20)
        );
        assert!(start_of(StartAt::Offset(21), &tp, r).is_err());
        assert!(start_of(StartAt::Offset(9), &tp, r).is_err());
        assert!(start_of(StartAt::FromStart(11), &tp, r).is_err());
        assert!(start_of(StartAt::FromEnd(1), &tp, None).is_err());
        assert_eq!(start_of(StartAt::End, &tp, None).unwrap(), Seek::Latest);
    }

    #[test]
    fn formats_render_like_kcat() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp: 1234,
            key: None,
            value: Some(Bytes::from_static(b"v\xff")),
            headers: vec![
                sluice_proto::Header {
                    key: "a".into(),
                    value: Some(Bytes::from_static(b"1")),
                },
                sluice_proto::Header {
                    key: "b".into(),
                    value: None,
                },
            ],
        };
        let f = parse_format(r"%t/%p@%o %T [%k|%K] %s(%S) %h 100%%\t\x41\n").unwrap();
        let mut out = Vec::new();
        render(&f, &r, &mut out);
        assert_eq!(out, b"t/2@7 1234 [|-1] v\xff(2) a=1,b= 100%\tA\n");
        assert!(parse_format("%q").is_err());
        assert!(parse_format(r"\q").is_err());
        assert!(parse_format(r"\xZZ").is_err());
        assert!(parse_format("%").is_err());
    }
}
