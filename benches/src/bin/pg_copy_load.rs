//! Postgres baseline for the Table bootstrap benchmark (issue 10): how long a process
//! takes to load the same N rows out of a Postgres table with
//! `COPY bench_rows TO STDOUT (FORMAT binary)`, decoded by hand into an in-memory map,
//! and what the rows cost in RSS.
//!
//! ```text
//! pg_copy_load [--dsn DSN] [--rows 3000000] [--value-bytes 100] [--table bench_rows]
//!              [--fill] [--no-verify] [--decode-only] [--runtime current|multi]
//!              [--output table|json]
//! ```
//!
//! The DSN comes from `--dsn`, else `$PG_DSN`, else `$DATABASE_URL` (libpq key=value
//! or URL form; no TLS). `--fill` (re)creates `TABLE(key text primary key, value
//! text)` and loads N rows with `COPY ... FROM STDIN (FORMAT binary)` (primary key
//! added after the load, then `VACUUM (ANALYZE, FREEZE)` so the timed read does not
//! pay for setting hint bits), timed separately and never part of the measured figure.
//!
//! The rows are those of `benches/src/bin/table_bootstrap.rs`: both take them from
//! `sluice_benches::table_row`. Row `i` is key `user:{i:08}` and a JSON value padded
//! to `value_bytes`.
//!
//! The measured span runs from sending the `COPY` to the last row inserted: the
//! CopyData stream is read through tokio-postgres 0.7's `copy_out`, and the binary
//! COPY format is decoded here (11-byte signature, flags, header extension; per
//! tuple an i16 field count, per field an i32 length, -1 for NULL; an i16 -1
//! trailer — the Postgres docs, "COPY ... Binary Format"). Each row goes into a
//! `hashbrown::HashMap<Box<[u8]>, Box<[u8]>>` pre-sized to N: the Table's own
//! store (`client/src/table/store.rs`, a byte arena plus an index of offsets) is
//! crate-private, so it cannot be filled from here; the output says which map was
//! used. RSS (`VmRSS` of /proc/self/status) is read before the map is created and
//! after the last row, and again after `malloc_trim(0)`.
//!
//! The runtime is tokio's current-thread one unless `--runtime multi`: on this 2-core
//! VM the multi-threaded runtime (connection task and decode loop on different
//! workers, buffers freed on another thread than allocated them) loaded 3 M rows in
//! ~4.2 s against ~2.5–3.0 s on one thread; `--decode-only` (no map) is ~1.3–1.6 s,
//! and the server alone (`COPY ... TO '/dev/null'`) ~1.2 s. The baseline takes the
//! faster configuration.
//!
//! After the timing, every row `i < N` is looked up and compared with `row(i)`
//! (unless `--no-verify`), so a decode bug cannot pass as a fast load.

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_postgres::NoTls;

use sluice_benches::{rss_bytes, table_row as row};

/// The map the rows are loaded into.
type Map = hashbrown::HashMap<Box<[u8]>, Box<[u8]>>;
const MAP_KIND: &str =
    "hashbrown::HashMap<Box<[u8]>, Box<[u8]>> pre-sized to N (the Table's store is crate-private)";

/// Binary COPY signature: `PGCOPY\n\377\r\n\0`.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

#[derive(PartialEq)]
enum Output {
    Table,
    Json,
}

struct Args {
    dsn: String,
    table: String,
    rows: u64,
    value_bytes: usize,
    fill: bool,
    verify: bool,
    output: Output,
    /// Decode only, no map (how much of the time is the stream and the decode).
    decode_only: bool,
    /// Tokio runtime: current-thread (default, faster here) or multi-threaded.
    current_thread: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dsn: std::env::var("PG_DSN")
            .or_else(|_| std::env::var("DATABASE_URL"))
            .unwrap_or_default(),
        table: "bench_rows".into(),
        rows: 3_000_000,
        value_bytes: 100,
        fill: false,
        verify: true,
        output: Output::Table,
        decode_only: false,
        current_thread: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dsn" => a.dsn = val()?,
            "--table" => a.table = val()?,
            "--rows" => a.rows = val()?.parse().map_err(|e| format!("--rows: {e}"))?,
            "--value-bytes" => {
                a.value_bytes = val()?.parse().map_err(|e| format!("--value-bytes: {e}"))?
            }
            "--fill" => a.fill = true,
            "--no-verify" => a.verify = false,
            "--decode-only" => {
                a.decode_only = true;
                a.verify = false;
            }
            "--runtime" => {
                a.current_thread = match val()?.as_str() {
                    "current" => true,
                    "multi" => false,
                    o => return Err(format!("--runtime: current or multi, not {o}")),
                }
            }
            "--output" => {
                a.output = match val()?.as_str() {
                    "json" => Output::Json,
                    "table" | "text" => Output::Table,
                    o => return Err(format!("--output: json or table, not {o}")),
                }
            }
            "-h" | "--help" => {
                return Err(
                    "usage: pg_copy_load [--dsn DSN] [--rows N] [--value-bytes B] \
                     [--table T] [--fill] [--no-verify] [--decode-only] [--runtime multi|current] \
                     [--output table|json]"
                        .into(),
                )
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.dsn.is_empty() {
        return Err("no DSN: pass --dsn or set PG_DSN (or DATABASE_URL)".into());
    }
    if !a
        .table
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "--table: plain identifier expected, not {}",
            a.table
        ));
    }
    Ok(a)
}

/// Rows per CopyData chunk sent while filling.
const FILL_CHUNK_ROWS: u64 = 4096;

/// (Re)creates the table and loads `rows` rows; returns seconds taken.
async fn fill(client: &tokio_postgres::Client, a: &Args) -> Result<f64, tokio_postgres::Error> {
    let t = &a.table;
    let start = Instant::now();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (key text, value text)"
        ))
        .await?;
    let sink = client
        .copy_in(&format!("COPY {t} (key, value) FROM STDIN (FORMAT binary)"))
        .await?;
    futures::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(1 << 20);
    buf.extend_from_slice(SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for i in 0..a.rows {
        let (k, v) = row(i, a.value_bytes);
        buf.extend_from_slice(&2i16.to_be_bytes());
        buf.extend_from_slice(&(k.len() as i32).to_be_bytes());
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(&(v.len() as i32).to_be_bytes());
        buf.extend_from_slice(v.as_bytes());
        if (i + 1) % FILL_CHUNK_ROWS == 0 {
            sink.send(buf.split().freeze()).await?;
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
    sink.send(buf.split().freeze()).await?;
    let n = sink.as_mut().finish().await?;
    assert_eq!(n, a.rows, "rows copied in");
    // Two statements: VACUUM cannot run inside the implicit transaction of a batch.
    client
        .batch_execute(&format!("ALTER TABLE {t} ADD PRIMARY KEY (key)"))
        .await?;
    client
        .batch_execute(&format!("VACUUM (ANALYZE, FREEZE) {t}"))
        .await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Incremental decoder of the binary COPY format over arbitrarily split chunks.
struct CopyDecoder {
    /// Bytes of an incomplete header or tuple carried to the next chunk.
    carry: BytesMut,
    header_done: bool,
    trailer_seen: bool,
    /// False: decode and count only (`--decode-only`).
    insert: bool,
    rows: u64,
    key_bytes: u64,
    value_bytes: u64,
}

#[derive(Debug)]
struct DecodeError(String);

impl std::error::Error for DecodeError {}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one parse step found.
enum Step {
    /// Not enough bytes yet.
    Incomplete,
    /// Consumed this many bytes (a header, a tuple, or the trailer).
    Consumed(usize),
}

impl CopyDecoder {
    fn new(insert: bool) -> CopyDecoder {
        CopyDecoder {
            carry: BytesMut::new(),
            header_done: false,
            trailer_seen: false,
            insert,
            rows: 0,
            key_bytes: 0,
            value_bytes: 0,
        }
    }

    /// Decodes every complete tuple of `chunk` (after any carried bytes) into `map`.
    fn feed(&mut self, chunk: &[u8], map: &mut Map) -> Result<(), DecodeError> {
        if self.carry.is_empty() {
            // Fast path: parse straight from the chunk, carry only an incomplete tail.
            let used = self.parse_all(chunk, map)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.carry);
            let used = self.parse_all(&buf, map)?;
            let mut buf = buf;
            buf.advance(used);
            self.carry = buf;
        }
        Ok(())
    }

    fn parse_all(&mut self, buf: &[u8], map: &mut Map) -> Result<usize, DecodeError> {
        let mut pos = 0;
        loop {
            match self.step(&buf[pos..], map)? {
                Step::Incomplete => return Ok(pos),
                Step::Consumed(n) => pos += n,
            }
        }
    }

    fn step(&mut self, b: &[u8], map: &mut Map) -> Result<Step, DecodeError> {
        if self.trailer_seen {
            return if b.is_empty() {
                Ok(Step::Incomplete)
            } else {
                Err(DecodeError(format!("{} bytes after the trailer", b.len())))
            };
        }
        if !self.header_done {
            if b.len() < 19 {
                return Ok(Step::Incomplete);
            }
            if &b[..11] != SIGNATURE {
                return Err(DecodeError(
                    "not a binary COPY stream (bad signature)".into(),
                ));
            }
            let flags = be_i32(&b[11..15]);
            if flags & (1 << 16) != 0 {
                return Err(DecodeError("stream has OIDs; not expected".into()));
            }
            let ext = be_i32(&b[15..19]);
            if ext < 0 {
                return Err(DecodeError("negative header extension length".into()));
            }
            let total = 19 + ext as usize;
            if b.len() < total {
                return Ok(Step::Incomplete);
            }
            self.header_done = true;
            return Ok(Step::Consumed(total));
        }
        if b.len() < 2 {
            return Ok(Step::Incomplete);
        }
        let fields = i16::from_be_bytes([b[0], b[1]]);
        if fields == -1 {
            self.trailer_seen = true;
            return Ok(Step::Consumed(2));
        }
        if fields != 2 {
            return Err(DecodeError(format!(
                "tuple with {fields} fields, expected 2"
            )));
        }
        let mut pos = 2;
        let field = |pos: &mut usize| -> Result<Option<(usize, usize)>, DecodeError> {
            if b.len() < *pos + 4 {
                return Ok(None);
            }
            let len = be_i32(&b[*pos..*pos + 4]);
            if len < 0 {
                return Err(DecodeError("NULL key or value".into()));
            }
            let start = *pos + 4;
            let end = start + len as usize;
            if b.len() < end {
                return Ok(None);
            }
            *pos = end;
            Ok(Some((start, end)))
        };
        let Some((ks, ke)) = field(&mut pos)? else {
            return Ok(Step::Incomplete);
        };
        let Some((vs, ve)) = field(&mut pos)? else {
            return Ok(Step::Incomplete);
        };
        let (k, v) = (&b[ks..ke], &b[vs..ve]);
        self.rows += 1;
        self.key_bytes += k.len() as u64;
        self.value_bytes += v.len() as u64;
        if self.insert {
            map.insert(Box::from(k), Box::from(v));
        }
        Ok(Step::Consumed(pos))
    }
}

fn fail(what: &str, e: &dyn std::error::Error) -> ! {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    eprintln!("pg_copy_load: {what}: {msg}");
    std::process::exit(1);
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

struct Load {
    seconds: f64,
    first_byte_s: f64,
    stream_bytes: u64,
    chunks: u64,
    decoder: CopyDecoder,
    map: Map,
}

async fn load(client: &tokio_postgres::Client, a: &Args) -> Result<Load, String> {
    let start = Instant::now();
    let mut map = Map::with_capacity(if a.decode_only { 0 } else { a.rows as usize });
    let stream = client
        .copy_out(&format!("COPY {} TO STDOUT (FORMAT binary)", a.table))
        .await
        .map_err(|e| format!("COPY TO: {e}"))?;
    futures::pin_mut!(stream);
    let mut dec = CopyDecoder::new(!a.decode_only);
    let (mut stream_bytes, mut chunks) = (0u64, 0u64);
    let mut first_byte_s = 0.0;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| format!("COPY TO stream: {e}"))?;
        if chunks == 0 {
            first_byte_s = start.elapsed().as_secs_f64();
        }
        stream_bytes += chunk.len() as u64;
        chunks += 1;
        dec.feed(&chunk, &mut map)
            .map_err(|e| format!("decode: {e}"))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    if !dec.trailer_seen || !dec.carry.is_empty() {
        return Err(format!(
            "stream ended early (trailer seen: {}, {} bytes left over)",
            dec.trailer_seen,
            dec.carry.len()
        ));
    }
    Ok(Load {
        seconds,
        first_byte_s,
        stream_bytes,
        chunks,
        decoder: dec,
        map,
    })
}

fn verify(map: &Map, a: &Args) -> Result<u64, String> {
    if map.len() as u64 != a.rows {
        return Err(format!(
            "{} rows in the map, {} expected (fill with --fill --rows {})",
            map.len(),
            a.rows,
            a.rows
        ));
    }
    for i in 0..a.rows {
        let (k, v) = row(i, a.value_bytes);
        match map.get(k.as_bytes()) {
            Some(got) if **got == *v.as_bytes() => {}
            Some(_) => return Err(format!("row {i} ({k}): value differs from row({i})")),
            None => return Err(format!("row {i} ({k}) missing")),
        }
    }
    Ok(a.rows)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pg_copy_load: {e}");
            std::process::exit(2);
        }
    };
    let rt = if a.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let connected = Instant::now();
    let (client, connection) = match tokio_postgres::connect(&a.dsn, NoTls).await {
        Ok(c) => c,
        Err(e) => fail("connect", &e),
    };
    let conn_task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("pg_copy_load: connection: {e}");
        }
    });
    let connect_ms = connected.elapsed().as_secs_f64() * 1e3;
    let server_version = client
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default();

    let fill_s = if a.fill {
        match fill(&client, &a).await {
            Ok(s) => Some(s),
            Err(e) => fail("fill", &e),
        }
    } else {
        None
    };
    if a.fill && a.output == Output::Table {
        eprintln!(
            "filled {} with {} rows in {:.2} s",
            a.table,
            a.rows,
            fill_s.unwrap_or(0.0)
        );
    }
    let table_bytes: i64 = client
        .query_one(
            &format!("SELECT pg_table_size('{}'::regclass)", a.table),
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);

    let rss_before = rss_bytes();
    let l = match load(&client, &a).await {
        Ok(l) => l,
        Err(e) => fail("load", &DecodeError(e)),
    };
    let rss_after = rss_bytes();
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let rss_trimmed = rss_bytes();
    let verified = if a.verify {
        match verify(&l.map, &a) {
            Ok(n) => Some(n),
            Err(e) => fail("verify", &DecodeError(e)),
        }
    } else {
        None
    };

    let rows = l.decoder.rows;
    let raw = l.decoder.key_bytes + l.decoder.value_bytes;
    let per_row = |b: u64| b as f64 / rows.max(1) as f64;
    let delta = rss_after.saturating_sub(rss_before);
    let delta_trimmed = rss_trimmed.saturating_sub(rss_before);
    let out = serde_json::json!({
        "system": "postgres",
        "server_version": server_version,
        "method": "COPY TO STDOUT (FORMAT binary), tokio-postgres 0.7 copy_out, hand-decoded",
        "map": if a.decode_only { "none (--decode-only)" } else { MAP_KIND },
        "runtime": if a.current_thread { "tokio current_thread" } else { "tokio multi_thread" },
        "table": a.table,
        "table_bytes_on_disk": table_bytes,
        "rows": rows,
        "value_bytes": a.value_bytes,
        "fill_s": fill_s,
        "connect_ms": connect_ms,
        "seconds": l.seconds,
        "ready_ms": (l.seconds * 1e3) as u64,
        "first_byte_ms": l.first_byte_s * 1e3,
        "rows_per_sec": rows as f64 / l.seconds,
        "stream_bytes": l.stream_bytes,
        "copy_data_messages": l.chunks,
        "stream_mb_per_sec": l.stream_bytes as f64 / l.seconds / 1e6,
        "raw_bytes": raw,
        "raw_bytes_per_row": per_row(raw),
        "raw_mb_per_sec": raw as f64 / l.seconds / 1e6,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_after_malloc_trim_bytes": rss_trimmed,
        "rss_delta_per_row": per_row(delta),
        "rss_delta_per_row_after_malloc_trim": per_row(delta_trimmed),
        "rss_delta_over_raw": delta as f64 / raw.max(1) as f64,
        "verified_rows": verified,
    });
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out).expect("json")),
        Output::Table => {
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "postgres {server_version}: COPY {} TO STDOUT (FORMAT binary) → {}",
                a.table,
                if a.decode_only {
                    "no map (--decode-only)"
                } else {
                    MAP_KIND
                }
            );
            println!("  rows               {rows}");
            println!("  seconds            {:.3}  (first byte after {:.1} ms; connect {:.1} ms, not counted)", l.seconds, l.first_byte_s * 1e3, connect_ms);
            println!("  rows/s             {:.0}", rows as f64 / l.seconds);
            println!("  MB/s               {:.1} of COPY stream ({:.1} MB in {} CopyData messages), {:.1} of key+value bytes", l.stream_bytes as f64 / l.seconds / 1e6, mb(l.stream_bytes), l.chunks, raw as f64 / l.seconds / 1e6);
            println!(
                "  RSS before/after   {:.1} MB / {:.1} MB ({:.1} MB after malloc_trim)",
                mb(rss_before),
                mb(rss_after),
                mb(rss_trimmed)
            );
            println!("  bytes per row      {:.1} RSS ({:.1} after malloc_trim), raw key+value {:.1}, RSS/raw {:.2}", per_row(delta), per_row(delta_trimmed), per_row(raw), delta as f64 / raw.max(1) as f64);
            println!("  table on disk      {:.1} MB", table_bytes as f64 / 1e6);
            match verified {
                Some(n) => println!("  verified           {n} rows equal row(i)"),
                None => println!("  verified           skipped (--no-verify)"),
            }
        }
    }
    drop(client);
    let _ = conn_task.await;
}
