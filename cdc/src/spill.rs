//! A source transaction being received, held in memory up to a limit and spilled to
//! an unnamed temporary file past it, then handed to the writer in parts.
//!
//! Both sources receive a transaction only once it committed (pgoutput without
//! streaming, the binlog), change by change, and hand it to the writer at its commit,
//! positioned there. A transaction of a few million rows used to be held whole as
//! decoded rows — gigabytes — before the first record was written. Now the changes
//! past [`SpillConfig::memory_bytes`] go to a file (a compact binary form: about the
//! row's JSON size), and at the commit the writer gets the transaction in parts of
//! about [`PART_BYTES_MAX`] (less for a small limit): every part but the last as
//! [`SourceEvent::TransactionPart`], the last as the usual [`SourceEvent::Transaction`],
//! at most [`PARTS_AHEAD`] parts ahead of the writer. The writer writes each part as it
//! comes (the records are the same as for a transaction handed whole, see
//! `Sink::write_transaction_part`); the producer's buffer bounds what is in flight.
//! Memory: the limit while receiving, a few parts while writing.
//!
//! The file is unnamed (`O_TMPFILE`, or created and unlinked at once): nothing is left
//! behind when the process dies. A full disk fails the run with the error; the
//! connector restarts from its confirmed position as after any failure.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use sluice_proto::source_pos::SourcePos;
use tokio::sync::mpsc;

use crate::change::{send, Op, PartPermit, Row, RowChange, SourceEvent, TableId, Transaction};
use crate::Error;

/// Roughly how much of a spilled transaction goes to the writer at once, at most: a
/// quarter of [`SpillConfig::memory_bytes`], at least 16 KiB.
pub const PART_BYTES_MAX: usize = 8 << 20;
const PART_BYTES_MIN: usize = 16 << 10;
/// Parts handed to the writer and not yet written, at most.
const PARTS_AHEAD: usize = 2;

/// Default [`SpillConfig::memory_bytes`].
pub const DEFAULT_TXN_MEMORY_BYTES: usize = 64 << 20;

/// Where a large transaction goes while it is received.
#[derive(Debug, Clone)]
pub struct SpillConfig {
    /// The estimated size of decoded changes a transaction may hold in memory; past it
    /// they go to a temporary file.
    pub memory_bytes: usize,
    /// Where that file is made (`None`: the system's temporary directory).
    pub dir: Option<PathBuf>,
}

impl Default for SpillConfig {
    fn default() -> Self {
        SpillConfig {
            memory_bytes: DEFAULT_TXN_MEMORY_BYTES,
            dir: None,
        }
    }
}

/// The changes of one transaction being received.
pub(crate) struct TxnBuffer {
    cfg: SpillConfig,
    /// The changes since the last spill (all of them when nothing was spilled).
    changes: Vec<RowChange>,
    /// Estimated memory of `changes`.
    bytes: usize,
    spill: Option<Spill>,
    /// Tables a `TRUNCATE` of this transaction empties.
    truncated: BTreeSet<TableId>,
    total: usize,
}

struct Spill {
    file: BufWriter<File>,
    /// Changes in the file.
    count: usize,
    bytes: u64,
    /// Tables by index, as the file names them.
    tables: Vec<Arc<TableId>>,
    table_index: HashMap<Arc<TableId>, u32>,
}

impl TxnBuffer {
    pub(crate) fn new(cfg: SpillConfig) -> TxnBuffer {
        TxnBuffer {
            cfg,
            changes: Vec::new(),
            bytes: 0,
            spill: None,
            truncated: BTreeSet::new(),
            total: 0,
        }
    }

    /// Changes received so far.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub(crate) fn push(&mut self, c: RowChange) -> Result<(), Error> {
        if c.op == Op::Truncate {
            self.truncated.insert((*c.table).clone());
        }
        self.bytes += change_bytes(&c);
        self.total += 1;
        self.changes.push(c);
        if self.bytes > self.cfg.memory_bytes {
            self.spill_changes()?;
        }
        Ok(())
    }

    fn spill_changes(&mut self) -> Result<(), Error> {
        let spill = match &mut self.spill {
            Some(s) => s,
            None => {
                let dir = self.cfg.dir.clone().unwrap_or_else(std::env::temp_dir);
                let file = tempfile::tempfile_in(&dir).map_err(|e| {
                    Error::Source(format!(
                        "a transaction larger than --txn-memory-bytes ({} B) needs a spill file \
                         in {}: {e}; set --spill-dir to a writable directory",
                        self.cfg.memory_bytes,
                        dir.display()
                    ))
                })?;
                tracing::info!(
                    changes = self.changes.len(),
                    dir = %dir.display(),
                    "a large transaction spills to a temporary file"
                );
                self.spill.insert(Spill {
                    file: BufWriter::with_capacity(1 << 20, file),
                    count: 0,
                    bytes: 0,
                    tables: Vec::new(),
                    table_index: HashMap::new(),
                })
            }
        };
        let mut buf = Vec::with_capacity(4096);
        for c in self.changes.drain(..) {
            buf.clear();
            let next = spill.tables.len() as u32;
            let t = *spill.table_index.entry(c.table.clone()).or_insert_with(|| {
                spill.tables.push(c.table.clone());
                next
            });
            encode(&mut buf, t, &c);
            spill
                .file
                .write_all(&(buf.len() as u32).to_le_bytes())
                .and_then(|()| spill.file.write_all(&buf))
                .map_err(spill_err)?;
            spill.count += 1;
            spill.bytes += buf.len() as u64 + 4;
        }
        self.bytes = 0;
        Ok(())
    }

    /// Hands the transaction to the writer: whole, as [`SourceEvent::Transaction`],
    /// when nothing was spilled; else in parts. `observe` sees every change, in order,
    /// before the part holding it is sent.
    pub(crate) async fn send(
        self,
        pos: SourcePos,
        id: String,
        commit_ms: i64,
        events: &mpsc::Sender<SourceEvent>,
        mut observe: impl FnMut(&[RowChange]),
        keep: &mut impl KeepAlive,
    ) -> Result<(), Error> {
        let TxnBuffer {
            cfg: SpillConfig { memory_bytes, .. },
            changes,
            spill,
            truncated,
            ..
        } = self;
        let txn = |changes| Transaction {
            pos: pos.clone(),
            id: id.clone(),
            commit_ms,
            changes,
        };
        let Some(spill) = spill else {
            observe(&changes);
            return send(events, SourceEvent::Transaction(txn(changes))).await;
        };
        let truncated: Vec<TableId> = truncated.into_iter().collect();
        tracing::info!(
            spilled = spill.count,
            spilled_bytes = spill.bytes,
            in_memory = changes.len(),
            "a large transaction goes to Sluice in parts"
        );
        let part_bytes = (memory_bytes / 4).clamp(PART_BYTES_MIN, PART_BYTES_MAX);
        let mut reader = spill.reader(part_bytes)?;
        // Parts the writer has not written yet, at most (the events channel would take
        // hundreds).
        let ahead = Arc::new(tokio::sync::Semaphore::new(PARTS_AHEAD));
        let mut last_keep = std::time::Instant::now();
        // One part read ahead: the last one goes as the transaction itself.
        let mut part = reader.next_part()?;
        loop {
            let next = reader.next_part()?;
            let last = next.is_empty() && changes.is_empty();
            observe(&part);
            let e = if last {
                SourceEvent::Transaction(txn(part))
            } else {
                // By the clock, not per wait: each part may come quickly while the whole
                // takes minutes.
                let permit = loop {
                    if last_keep.elapsed() >= KEEP_ALIVE_EVERY {
                        keep.keep_alive().await;
                        last_keep = std::time::Instant::now();
                    }
                    let left = KEEP_ALIVE_EVERY.saturating_sub(last_keep.elapsed());
                    if let Ok(p) = tokio::time::timeout(left, ahead.clone().acquire_owned()).await {
                        break p.map_err(|_| Error::Source("the part semaphore closed".into()))?;
                    }
                };
                SourceEvent::TransactionPart {
                    txn: txn(part),
                    truncated: truncated.clone(),
                    permit: PartPermit(Arc::new(permit)),
                }
            };
            send(events, e).await?;
            if last {
                return Ok(());
            }
            if next.is_empty() {
                break;
            }
            part = next;
        }
        observe(&changes);
        send(events, SourceEvent::Transaction(txn(changes))).await
    }
}

/// What a source does for its connection while it hands a transaction's parts to the
/// writer without reading it: Postgres ends a replication connection whose client sent
/// no status update for `wal_sender_timeout` (60 s by default).
pub(crate) trait KeepAlive {
    async fn keep_alive(&mut self);
}

/// A source whose connection needs nothing meanwhile (MariaDB: its binlog connection's
/// `net_write_timeout` is raised instead).
pub(crate) struct NoKeepAlive;

impl KeepAlive for NoKeepAlive {
    async fn keep_alive(&mut self) {}
}

/// How often, at least, [`KeepAlive::keep_alive`] runs while parts are handed on.
const KEEP_ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn spill_err(e: std::io::Error) -> Error {
    Error::Source(format!(
        "writing a large transaction to its spill file: {e} (set --spill-dir to a disk with room, \
         or raise --txn-memory-bytes)"
    ))
}

impl Spill {
    fn reader(self, part_bytes: usize) -> Result<SpillReader, Error> {
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| spill_err(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(spill_err)?;
        Ok(SpillReader {
            file: BufReader::with_capacity(1 << 20, file),
            left: self.count,
            part_bytes,
            tables: self.tables,
            names: HashMap::new(),
        })
    }
}

struct SpillReader {
    file: BufReader<File>,
    left: usize,
    part_bytes: usize,
    tables: Vec<Arc<TableId>>,
    /// Column names, shared as the source's rows share them.
    names: HashMap<Box<str>, Arc<str>>,
}

impl SpillReader {
    /// The next changes, about `part_bytes` of them; empty at the end.
    fn next_part(&mut self) -> Result<Vec<RowChange>, Error> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut buf = Vec::new();
        while self.left > 0 && bytes < self.part_bytes {
            let mut len = [0u8; 4];
            self.file.read_exact(&mut len).map_err(spill_err)?;
            buf.resize(u32::from_le_bytes(len) as usize, 0);
            self.file.read_exact(&mut buf).map_err(spill_err)?;
            let c = decode(&buf, &self.tables, &mut self.names)
                .ok_or_else(|| Error::Source("a spill file entry does not decode".into()))?;
            bytes += buf.len();
            self.left -= 1;
            out.push(c);
        }
        Ok(out)
    }
}

/// Estimated heap bytes of a decoded change.
fn change_bytes(c: &RowChange) -> usize {
    let row = |r: &Option<Row>| r.as_ref().map_or(0, row_bytes);
    96 + row_bytes(&c.key) + row(&c.before) + row(&c.after)
}

fn row_bytes(r: &Row) -> usize {
    24 + r.iter().map(|(_, v)| 24 + value_bytes(v)).sum::<usize>()
}

fn value_bytes(v: &Value) -> usize {
    32 + match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + value_bytes(v)).sum(),
        _ => 0,
    }
}

// Entry: table index (u32), op (u8), key row, then before and after (a presence byte
// and a row each). A row: column count (u32), then per column its name (u32 length,
// bytes) and its value as JSON (u32 length, bytes).

fn encode(buf: &mut Vec<u8>, table: u32, c: &RowChange) {
    buf.extend_from_slice(&table.to_le_bytes());
    buf.push(match c.op {
        Op::Create => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Read => 3,
        Op::Truncate => 4,
    });
    encode_row(buf, &c.key);
    for r in [&c.before, &c.after] {
        match r {
            Some(r) => {
                buf.push(1);
                encode_row(buf, r);
            }
            None => buf.push(0),
        }
    }
}

fn encode_row(buf: &mut Vec<u8>, r: &Row) {
    buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
    for (name, v) in r {
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        let at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut *buf, v).expect("a JSON value serializes into memory");
        let len = (buf.len() - at - 4) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

fn decode(
    mut b: &[u8],
    tables: &[Arc<TableId>],
    names: &mut HashMap<Box<str>, Arc<str>>,
) -> Option<RowChange> {
    let table = tables.get(take_u32(&mut b)? as usize)?.clone();
    let op = match take(&mut b, 1)?[0] {
        0 => Op::Create,
        1 => Op::Update,
        2 => Op::Delete,
        3 => Op::Read,
        4 => Op::Truncate,
        _ => return None,
    };
    let key = decode_row(&mut b, names)?;
    let mut rows = [None, None];
    for r in &mut rows {
        if take(&mut b, 1)?[0] == 1 {
            *r = Some(decode_row(&mut b, names)?);
        }
    }
    let [before, after] = rows;
    b.is_empty().then_some(RowChange {
        table,
        op,
        key,
        before,
        after,
    })
}

fn decode_row(b: &mut &[u8], names: &mut HashMap<Box<str>, Arc<str>>) -> Option<Row> {
    let n = take_u32(b)? as usize;
    let mut row = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let len = take_u32(b)? as usize;
        let name = std::str::from_utf8(take(b, len)?).ok()?;
        let name = match names.get(name) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = name.into();
                names.insert(name.into(), n.clone());
                n
            }
        };
        let len = take_u32(b)? as usize;
        let v: Value = serde_json::from_slice(take(b, len)?).ok()?;
        row.push((name, v));
    }
    Some(row)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_proto::source_pos::Lsn;

    fn change(table: &Arc<TableId>, i: u64, op: Op) -> RowChange {
        let id: Arc<str> = "id".into();
        let v: Arc<str> = "v".into();
        let after = vec![
            (id.clone(), json!(i)),
            (
                v.clone(),
                json!({"s": "x".repeat((i % 50) as usize), "n": [1, 2.5, null]}),
            ),
        ];
        RowChange {
            table: table.clone(),
            op,
            key: vec![(id, json!(i))],
            before: (op == Op::Update).then(|| after.clone()),
            after: (op != Op::Delete).then_some(after),
        }
    }

    /// What the writer got: parts (with their truncated tables), then the transaction.
    enum Got {
        Part(Transaction, Vec<TableId>),
        Whole(Transaction),
    }

    async fn received(memory_bytes: usize, changes: &[RowChange]) -> (Vec<Got>, usize, bool) {
        let mut buf = TxnBuffer::new(SpillConfig {
            memory_bytes,
            dir: None,
        });
        for c in changes {
            buf.push(c.clone()).unwrap();
        }
        let spilled = buf.spill.is_some();
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let mut observed = 0;
        let pos = SourcePos::Postgres(Lsn(42));
        let send = async {
            buf.send(
                pos,
                "7".into(),
                1,
                &tx,
                |c| observed += c.len(),
                &mut NoKeepAlive,
            )
            .await
            .unwrap();
            drop(tx);
        };
        // The writer: holds each part (its permit) until the next arrives, as it holds
        // one while writing it.
        let write = async {
            let mut out = Vec::new();
            let mut holding = None;
            while let Some(e) = rx.recv().await {
                out.push(match e {
                    SourceEvent::TransactionPart {
                        txn,
                        truncated,
                        permit,
                    } => {
                        holding = Some(permit);
                        Got::Part(txn, truncated)
                    }
                    SourceEvent::Transaction(t) => Got::Whole(t),
                    e => panic!("not a transaction: {e:?}"),
                });
            }
            drop(holding);
            out
        };
        let ((), out) = tokio::join!(send, write);
        (out, observed, spilled)
    }

    /// Every size around the spill and part boundaries gives back the same changes in
    /// the same order: parts first, the transaction itself last, truncated tables named.
    #[tokio::test]
    async fn a_spilled_transaction_comes_back_whole_and_in_order_in_parts() {
        let a = Arc::new(TableId::parse("public.a").unwrap());
        let b = Arc::new(TableId::parse("public.b").unwrap());
        let ops = [Op::Create, Op::Update, Op::Delete];
        for (n, memory) in [
            (0, 1),
            (1, 1),
            (5, 1 << 30),
            (3000, 1),
            (3000, 200_000),
            (100_000, 1 << 20),
        ] {
            let mut changes: Vec<RowChange> = (0..n as u64)
                .map(|i| change(if i % 3 == 0 { &a } else { &b }, i, ops[i as usize % 3]))
                .collect();
            if n > 2 {
                changes.insert(n / 2, RowChange::truncate(b.clone()));
            }
            let (events, observed, spilled) = received(memory, &changes).await;
            assert_eq!(observed, changes.len());
            assert_eq!(
                spilled,
                n > 0 && memory < (1 << 30),
                "n={n} memory={memory}"
            );
            let (last, parts) = events.split_last().expect("the transaction");
            let mut got = Vec::new();
            for e in parts {
                match e {
                    Got::Part(txn, truncated) => {
                        assert_eq!((txn.id.as_str(), txn.commit_ms), ("7", 1));
                        let want: Vec<TableId> = if n > 2 { vec![(*b).clone()] } else { vec![] };
                        assert_eq!(truncated, &want);
                        got.extend(txn.changes.iter().cloned());
                    }
                    Got::Whole(_) => panic!("the transaction before its last part"),
                }
            }
            match last {
                Got::Whole(t) => got.extend(t.changes.iter().cloned()),
                Got::Part(..) => panic!("the last part is not the transaction"),
            }
            assert_eq!(got, changes, "n={n} memory={memory}");
            if n == 100_000 {
                assert!(
                    parts.len() > 1,
                    "100,000 changes in {} parts",
                    parts.len() + 1
                );
            }
        }
    }

    #[test]
    fn a_damaged_entry_does_not_decode() {
        let t = Arc::new(TableId::parse("public.a").unwrap());
        let mut buf = Vec::new();
        encode(&mut buf, 0, &change(&t, 3, Op::Update));
        let tables = vec![t];
        assert!(decode(&buf, &tables, &mut HashMap::new()).is_some());
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], &tables, &mut HashMap::new()).is_none());
        }
        assert!(decode(&buf, &[], &mut HashMap::new()).is_none());
    }
}
