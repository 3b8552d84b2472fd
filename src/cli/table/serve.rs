//! `sluice table serve`: an HTTP/1.1 sidecar holding a `TableSet` in memory, for
//! applications not written in Rust (DESIGN.md §10; every shape in docs/cli.md).
//!
//! ```text
//! GET /tables/{topic}/rows/{key}     200 {"key","value"[,"encoding"]} | 404 | 503 (bootstrapping)
//! GET /tables/{topic}/rows?key=K | ?key_base64=B64     the same, for keys a path cannot hold
//! GET /tables/{topic}                {"topic","ready","position":{"P":next},"source_position",["encoding",]"rows":{k:v}}
//! GET /tables/{topic}?wait_for=P:O[,P:O]&timeout_ms=T  the same once those records are applied; 408
//! GET /tables/{topic}?wait_for=POS&timeout_ms=T        the same once the set reached source position
//!                                    POS (0/16B3748 | 0-1-42[,..] | mysql-bin.000003:1234); 408
//! GET /tables                        {"topics": [..]}
//! GET /healthz                       200 when every table is ready, 503 before
//! GET /metrics                       Prometheus text: rows, bytes, readiness, positions
//! ```
//!
//! Handlers are thin: parse the request, call the table, encode. A read never waits on
//! the applier beyond what the library guarantees: `get` takes one shard read lock;
//! a snapshot is copied out under the read locks (the applier waits that long, readers
//! do not) on a blocking thread, then sorted and encoded there with no lock held and
//! streamed to the client in chunks, so a 3 M-row snapshot is neither built as one
//! buffer nor stalls the runtime.
//!
//! `wait_for` is record offsets when it is only digits, `:` and `,`; anything else is a
//! CDC source position (request.rs). A source wait is on the whole set (every served
//! topic): a source transaction may span them, and they are applied as one.
//!
//! Keys in the path are percent-decoded to bytes (any bytes: `%FF` is the byte 0xFF).
//! Query strings are RFC 3986, not HTML forms: `+` is a plus sign, a space is `%20`.
//! Parsing them, and the JSON error every refusal carries, live in request.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Args;
use percent_encoding::percent_decode_str;
use serde_json::json;
use sluice_client::{
    ClientConfig, PosRequest, RawTable, SourcePos, TableConfig, TableSet, TableSnapshot,
};
use tokio::sync::watch;

use super::request::{
    decode_base64, decode_topic, json_response, parse_wait_for, query, raw_topic_and_key,
    utf8_param, ApiError, WaitFor,
};
use super::{check_topic, row_json};
use crate::cli::output::{base64, explain, status_eprintln, status_println};
use crate::cli::{parse_addr, ClientArgs};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Topics to hold a table of, comma-separated (repeatable).
    #[arg(
        long = "topic",
        value_name = "T[,T..]",
        value_delimiter = ',',
        required = true
    )]
    pub topics: Vec<String>,
    /// Address to serve HTTP on; port 0 takes a free one. The bound address is printed
    /// as `listening on ADDR`.
    #[arg(long, value_parser = parse_addr, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Serve CDC values as rows whatever the topic's --value-format: the `after`
    /// object of an envelope, a row-format value as it is (docs/table.md).
    #[arg(long)]
    pub row_images: bool,
}

/// `timeout_ms` of a `wait_for` request that gives none.
const WAIT_DEFAULT_MS: u64 = 30_000;
/// Longest `timeout_ms` a `wait_for` request may ask for: a client wanting longer
/// asks again, and a shutdown never waits on a forgotten request for long.
const WAIT_MAX_MS: u64 = 300_000;
/// Bytes of JSON per streamed chunk of a snapshot; a snapshot that fits in one is
/// sent with a Content-Length instead.
const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks encoded ahead of a slow client (bounds the memory one request adds).
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// What every handler shares.
struct Served {
    /// Topic → its table. Invariant: the topics the server was started with, no more.
    tables: BTreeMap<String, RawTable>,
    /// Turns true when the server begins to stop: pending `wait_for`s answer 503 at
    /// once rather than holding the graceful shutdown up to their timeout.
    stopping: watch::Receiver<bool>,
    /// `wait_for` requests waiting now (the `sluice_table_wait_for_pending` gauge).
    waits_pending: AtomicUsize,
}

/// Counts one pending `wait_for` while alive.
struct PendingWait<'a>(&'a AtomicUsize);

impl<'a> PendingWait<'a> {
    fn new(count: &'a AtomicUsize) -> PendingWait<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        PendingWait(count)
    }
}

impl Drop for PendingWait<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Served {
    fn table(&self, topic: &str) -> Result<&RawTable, ApiError> {
        self.tables.get(topic).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "topic {topic} is not served here; served: {}",
                    self.topics().join(", ")
                ),
            )
            .with("topics", json!(self.topics()))
        })
    }

    fn topics(&self) -> Vec<&str> {
        self.tables.keys().map(String::as_str).collect()
    }
}

/// Resolves on Ctrl-C or SIGTERM; the handlers are installed when this is called, so
/// a signal right after `listening on` still stops the server cleanly.
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// `sluice table serve`.
pub async fn serve(a: ServeArgs, c: &ClientArgs) -> anyhow::Result<std::process::ExitCode> {
    let topics: Vec<String> = a
        .topics
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if topics.is_empty() {
        anyhow::bail!("--topic names no topic; give one or more, comma-separated");
    }
    let stop = termination()?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another process using it? port 0 takes a free one)",
                a.listen
            )
        })?;
    let config = ClientConfig::new(&c.bootstrap);
    for t in &topics {
        check_topic(&config, t, &c.bootstrap).await?;
    }
    let table_config = TableConfig {
        row_images: a.row_images,
        ..TableConfig::default()
    };
    let set = TableSet::open(&config, &topics, table_config)
        .await
        .map_err(|e| explain(&e, &c.bootstrap))
        .context("cannot open the tables")?;
    let mut tables = BTreeMap::new();
    for t in &topics {
        let table = set
            .table(t)
            .with_context(|| format!("the table set opened without topic {t}"))?;
        tables.insert(t.clone(), table);
    }
    let (stopping_tx, stopping) = watch::channel(false);
    let served = Arc::new(Served {
        tables,
        stopping,
        waits_pending: AtomicUsize::new(0),
    });
    let reporter = tokio::spawn(report_ready(served.clone()));
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    status_println!("listening on {addr}");
    let shutdown = async move {
        stop.await;
        let _ = stopping_tx.send(true);
    };
    let served_result = axum::serve(listener, router(served))
        .with_graceful_shutdown(shutdown)
        .await;
    reporter.abort();
    set.close();
    served_result.context("the HTTP server failed")?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Tells the operator on stderr when each table is ready (or why it never will be).
async fn report_ready(served: Arc<Served>) {
    for (topic, table) in &served.tables {
        match table.ready().await {
            Ok(()) => status_eprintln!("table {topic} ready: {} rows", table.len()),
            Err(e) => status_eprintln!("error: table {topic} cannot bootstrap: {e}"),
        }
    }
}

fn router(served: Arc<Served>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/tables", get(list_tables))
        .route("/tables/{topic}", get(snapshot))
        .route("/tables/{topic}/rows", get(row_by_query))
        .route("/tables/{topic}/rows/{*key}", get(row_by_path))
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(read_only)
        .with_state(served)
}

async fn read_only(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} {}: the sidecar is read-only, use GET; write with a producer (`sluice produce`)",
            uri.path()
        ),
    )
}

async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {method} {}; try GET /tables, /tables/{{topic}}, /tables/{{topic}}/rows/{{key}}, /healthz or /metrics",
            uri.path()
        ),
    )
}

async fn healthz(State(s): State<Arc<Served>>) -> Response {
    let tables: serde_json::Map<_, _> = s
        .tables
        .iter()
        .map(|(t, table)| {
            (
                t.clone(),
                json!({"ready": table.is_ready(), "rows": table.len()}),
            )
        })
        .collect();
    let ready = s.tables.values().all(RawTable::is_ready);
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    json_response(status, &json!({"ready": ready, "tables": tables}))
}

async fn list_tables(State(s): State<Arc<Served>>) -> Response {
    json_response(StatusCode::OK, &json!({"topics": s.topics()}))
}

/// Prometheus text exposition of every table's stats.
async fn metrics(State(s): State<Arc<Served>>) -> Response {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &mut dyn Iterator<Item = (String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, v) in samples {
            match labels.is_empty() {
                true => out.push_str(&format!("{name} {v}\n")),
                false => out.push_str(&format!("{name}{{{labels}}} {v}\n")),
            }
        }
    };
    let topic = |t: &str| format!("topic=\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""));
    let stats: Vec<_> = s
        .tables
        .iter()
        .map(|(t, table)| (topic(t), table.stats(), table))
        .collect();
    let per_table = |f: fn(&sluice_client::TableStats, &RawTable) -> f64| {
        stats
            .iter()
            .map(move |(l, st, table)| (l.clone(), f(st, table)))
    };
    gauge(
        "sluice_table_ready",
        "1 once the table has bootstrapped.",
        &mut per_table(|_, t| f64::from(u8::from(t.is_ready()))),
    );
    gauge(
        "sluice_table_rows",
        "Live rows.",
        &mut per_table(|st, _| st.rows as f64),
    );
    gauge(
        "sluice_table_key_bytes",
        "Bytes of keys held.",
        &mut per_table(|st, _| st.key_bytes as f64),
    );
    gauge(
        "sluice_table_value_bytes",
        "Bytes of values held.",
        &mut per_table(|st, _| st.value_bytes as f64),
    );
    gauge(
        "sluice_table_memory_bytes",
        "Memory the table uses, overhead included.",
        &mut per_table(|st, _| st.memory_bytes as f64),
    );
    gauge(
        "sluice_table_malformed_positions",
        "sluice.pos headers that did not parse since start (ignored for source positions).",
        &mut per_table(|st, _| st.malformed_positions as f64),
    );
    let mut positions = stats.iter().flat_map(|(l, _, table)| {
        table
            .position()
            .into_iter()
            .map(move |(p, o)| (format!("{l},partition=\"{p}\""), o as f64))
    });
    gauge(
        "sluice_table_position",
        "Next offset to apply, per partition.",
        &mut positions,
    );
    let waits = s.waits_pending.load(Ordering::Relaxed) as f64;
    gauge(
        "sluice_table_wait_for_pending",
        "wait_for requests waiting now.",
        &mut std::iter::once((String::new(), waits)),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `GET /tables/{topic}/rows/{key}`: the key is the rest of the path, percent-decoded
/// to bytes (it may hold `/`).
async fn row_by_path(State(s): State<Arc<Served>>, uri: Uri) -> Result<Response, ApiError> {
    let (topic, key) = raw_topic_and_key(uri.path());
    let topic = decode_topic(topic)?;
    let table = s.table(&topic)?;
    query(&uri, &[])?;
    let key: Vec<u8> = percent_decode_str(key.unwrap_or("")).collect();
    lookup(table, &topic, &key)
}

/// `GET /tables/{topic}/rows?key=K` or `?key_base64=B64`: keys a path cannot carry
/// (the empty key), or binary keys a client prefers to send as base64.
async fn row_by_query(State(s): State<Arc<Served>>, uri: Uri) -> Result<Response, ApiError> {
    let (topic, _) = raw_topic_and_key(uri.path());
    let topic = decode_topic(topic)?;
    let table = s.table(&topic)?;
    let mut params = query(&uri, &["key", "key_base64"])?;
    let key = match (params.remove("key"), params.remove("key_base64")) {
        (Some(k), None) => k,
        (None, Some(b)) => decode_base64(&b)?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of ?key=K (percent-encoded) or ?key_base64=B64",
            ))
        }
    };
    lookup(table, &topic, &key)
}

fn lookup(table: &RawTable, topic: &str, key: &[u8]) -> Result<Response, ApiError> {
    if let Some(value) = table.get(key) {
        return Ok(json_response(StatusCode::OK, &row_json(key, &value)));
    }
    // Before bootstrap ends a missing key may just not be read yet: not a 404.
    if !table.is_ready() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("table {topic} is still bootstrapping; retry, or wait until GET /healthz answers 200"),
        ));
    }
    let shown = match std::str::from_utf8(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("{} (base64)", base64(key)),
    };
    let mut err = ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no row with key {shown} in table {topic}"),
    );
    for (field, v) in row_json(key, b"").as_object().into_iter().flatten() {
        if field != "value" {
            err = err.with(field, v.clone());
        }
    }
    Ok(err.into_response())
}

fn position_json(position: &BTreeMap<u32, u64>) -> serde_json::Value {
    position
        .iter()
        .map(|(p, o)| (p.to_string(), json!(o)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `GET /tables/{topic}[?wait_for=..&timeout_ms=..]`.
async fn snapshot(State(s): State<Arc<Served>>, uri: Uri) -> Result<Response, ApiError> {
    let (topic, _) = raw_topic_and_key(uri.path());
    let topic = decode_topic(topic)?;
    let table = s.table(&topic)?;
    let params = query(&uri, &["wait_for", "timeout_ms"])?;
    let timeout_ms = match utf8_param(&params, "timeout_ms")? {
        None => WAIT_DEFAULT_MS,
        Some(t) => match t.parse::<u64>() {
            Ok(ms) if ms <= WAIT_MAX_MS => ms,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "timeout_ms={t:?} is not a number of milliseconds up to {WAIT_MAX_MS}"
                )))
            }
        },
    };
    let timeout = Duration::from_millis(timeout_ms);
    match utf8_param(&params, "wait_for")? {
        Some(w) => match parse_wait_for(w).map_err(ApiError::bad_request)? {
            WaitFor::Offsets(positions) => wait(&s, table, &topic, &positions, timeout).await?,
            WaitFor::Source(request) => wait_source(&s, table, &request, timeout).await?,
        },
        None if params.contains_key("timeout_ms") => {
            return Err(ApiError::bad_request(
                "timeout_ms goes with wait_for=PARTITION:OFFSET[,..] or wait_for=SOURCE_POSITION",
            ));
        }
        None => {}
    }
    Ok(snapshot_response(table.clone()).await)
}

/// Waits until every record in `positions` is applied: 408 at `timeout`, 400 for a
/// partition the topic does not have, 503 when the server stops meanwhile.
async fn wait(
    s: &Served,
    table: &RawTable,
    topic: &str,
    positions: &[(u32, u64)],
    timeout: Duration,
) -> Result<(), ApiError> {
    let known = table.position();
    if let Some(&(p, _)) = positions
        .iter()
        .find(|(p, _)| !known.is_empty() && !known.contains_key(p))
    {
        return Err(ApiError::bad_request(format!(
            "wait_for names partition {p}, but {topic} has partitions {}",
            known
                .keys()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    let mut stopping = s.stopping.clone();
    let _pending = PendingWait::new(&s.waits_pending);
    // The library's own timeout decides; ours is a backstop one second later.
    let waited = tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(1), table.wait_for(positions, timeout)) => r,
        _ = stopping.wait_for(|stop| *stop) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"));
        }
    };
    let timed_out = || {
        let asked: Vec<String> = positions.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "{topic} did not apply wait_for={} within {} ms; \"position\" is how far it got (the next offset per partition); retry, or check the records exist",
                asked.join(","),
                timeout.as_millis()
            ),
        )
        .with("position", position_json(&table.position()))
    };
    match waited {
        Ok(Ok(())) => Ok(()),
        Err(_) | Ok(Err(sluice_client::Error::Timeout(_))) => Err(timed_out()),
        Ok(Err(sluice_client::Error::Invalid(m))) => Err(ApiError::bad_request(m)),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot wait on {topic}: {e}"),
        )),
    }
}

/// Waits until the table's set (every served topic) reached the source position
/// `request`: 408 at `timeout` (with the set's `source_position`), 503 when the server
/// stops meanwhile.
async fn wait_source(
    s: &Served,
    table: &RawTable,
    request: &PosRequest,
    timeout: Duration,
) -> Result<(), ApiError> {
    let set = table.set();
    let mut stopping = s.stopping.clone();
    let _pending = PendingWait::new(&s.waits_pending);
    let waited = tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(1), set.wait_for_source(request, timeout)) => r,
        _ = stopping.wait_for(|stop| *stop) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"));
        }
    };
    match waited {
        Ok(Ok(())) => Ok(()),
        Err(_) | Ok(Err(sluice_client::Error::Timeout(_))) => {
            let at = set.source_position();
            let why = match &at {
                Some(_) => "\"source_position\" is how far every served topic got",
                None => "no source position yet: some partition of a served topic has applied no record with sluice.pos (CDC heartbeats give every partition one)",
            };
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "{} did not reach source position {} within {} ms; {why}",
                    set.topics().join(","),
                    request_text(request),
                    timeout.as_millis()
                ),
            )
            .with("source_position", source_json(at.as_ref())))
        }
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot wait on the tables: {e}"),
        )),
    }
}

/// A request as it was written (`0/16B3748`, `0-1-42`, `mysql-bin.000003:1234`).
fn request_text(request: &PosRequest) -> String {
    match request {
        PosRequest::Lsn(l) => l.to_string(),
        PosRequest::Gtids(g) => g.to_string(),
        PosRequest::Binlog(b) => b.to_string(),
    }
}

/// `"pg:0/16B3748"` or `null`.
fn source_json(pos: Option<&SourcePos>) -> serde_json::Value {
    pos.map_or(serde_json::Value::Null, |p| json!(p.to_string()))
}

/// The table's snapshot as JSON, taken and encoded on a blocking thread (copying out
/// millions of rows must not hold up a runtime worker). One chunk's worth is sent
/// with a Content-Length; more is streamed (chunked) as it is encoded.
async fn snapshot_response(table: RawTable) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(SNAPSHOT_CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        write_snapshot(table.snapshot(), |chunk| tx.blocking_send(chunk).is_ok())
    });
    let Some(first) = rx.recv().await else {
        let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the snapshot failed");
        return e.into_response();
    };
    let ok = |body: Body| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    };
    let Some(second) = rx.recv().await else {
        return ok(Body::from(first));
    };
    let head = futures::stream::iter([Ok::<_, Infallible>(first), Ok(second)]);
    let rest = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    );
    ok(Body::from_stream(futures::StreamExt::chain(head, rest)))
}

/// Encodes `snap` as `{"topic","ready","position","source_position",["encoding",]"rows"}`,
/// rows sorted by key, handing `emit` chunks of about [`SNAPSHOT_CHUNK_BYTES`]; stops
/// early when `emit` returns false (the client went away).
fn write_snapshot(mut snap: TableSnapshot, mut emit: impl FnMut(Bytes) -> bool) {
    let utf8 = |b: &[u8]| std::str::from_utf8(b).is_ok();
    let text = snap.rows.iter().all(|(k, v)| utf8(k) && utf8(v));
    snap.rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut head = json!({"topic": snap.topic, "ready": snap.ready,
        "position": position_json(&snap.position),
        "source_position": source_json(snap.source_position.as_ref())});
    if !text {
        head["encoding"] = json!("base64");
    }
    // `{..head..}` minus its closing brace, then the rows object.
    let mut buf = head.to_string().into_bytes();
    buf.pop();
    buf.extend_from_slice(b",\"rows\":{");
    let string = |buf: &mut Vec<u8>, b: &[u8]| match std::str::from_utf8(b) {
        // Writing into a Vec cannot fail; escaping in place spares an allocation a row.
        Ok(s) if text => serde_json::to_writer(&mut *buf, s).unwrap_or_default(),
        _ => {
            buf.push(b'"');
            buf.extend_from_slice(base64(b).as_bytes());
            buf.push(b'"');
        }
    };
    for (i, (k, v)) in snap.rows.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        string(&mut buf, k);
        buf.push(b':');
        string(&mut buf, v);
        if buf.len() >= SNAPSHOT_CHUNK_BYTES && !emit(Bytes::from(std::mem::take(&mut buf))) {
            return;
        }
    }
    buf.extend_from_slice(b"}}\n");
    emit(Bytes::from(buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_text(rows: Vec<(&'static [u8], &'static [u8])>) -> serde_json::Value {
        let snap = TableSnapshot {
            topic: "t".into(),
            ready: true,
            position: BTreeMap::from([(0, 7), (1, 3)]),
            source_position: Some("pg:0/16B3748".parse().unwrap()),
            rows: rows
                .into_iter()
                .map(|(k, v)| (Bytes::from_static(k), Bytes::from_static(v)))
                .collect(),
        };
        let mut out = Vec::new();
        write_snapshot(snap, |c| {
            out.extend_from_slice(&c);
            true
        });
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn snapshots_are_text_unless_any_byte_is_not_utf8() {
        let v = snapshot_text(vec![(b"b", b"2"), (b"a\"", b"1\n")]);
        assert_eq!(
            v,
            json!({"topic": "t", "ready": true, "position": {"0": 7, "1": 3},
                   "source_position": "pg:0/16B3748",
                   "rows": {"a\"": "1\n", "b": "2"}})
        );
        let v = snapshot_text(vec![(b"k", b"\xff")]);
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["rows"], json!({"aw==": "/w=="}));
        assert_eq!(snapshot_text(vec![])["rows"], json!({}));
    }

    #[test]
    fn large_snapshots_come_in_chunks_that_join_to_json() {
        let rows: Vec<(Bytes, Bytes)> = (0..20_000u32)
            .map(|i| {
                (
                    Bytes::from(format!("key-{i:06}")),
                    Bytes::from(vec![b'v'; 40]),
                )
            })
            .collect();
        let snap = TableSnapshot {
            topic: "t".into(),
            ready: true,
            position: BTreeMap::new(),
            source_position: None,
            rows,
        };
        let mut chunks = Vec::new();
        write_snapshot(snap, |c| {
            chunks.push(c);
            true
        });
        assert!(chunks.len() > 1);
        let joined: Vec<u8> = chunks.concat();
        let v: serde_json::Value = serde_json::from_slice(&joined).expect("valid JSON");
        assert_eq!(v["rows"].as_object().map(|o| o.len()), Some(20_000));
    }
}
