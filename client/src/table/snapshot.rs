//! A table's local snapshot file, `<dir>/<topic>.snapshot`, so a restarting process
//! reads only what changed since instead of the whole topic.
//!
//! Format (integers little-endian):
//!
//! ```text
//! b"SLTBSNP1" | u64 written_at_ms (wall clock) | u32 len, topic | u32 len, topic_id
//! | u32 partitions, then (u32 partition, u64 position)* | u64 rows, then (u32 len, key, u32 len, value)*
//! | u32 CRC-32 (IEEE, crc32fast) of every byte before it
//! ```
//!
//! Written atomically: a `.tmp` file, fsync, rename, fsync of the directory; a torn or
//! foreign file fails the CRC or the parse and is ignored. The rows and positions come
//! from one instant (every shard read-locked while writing, which holds the applier
//! back but not readers). Called from the applier via `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::raw::TopicShared;

const MAGIC: &[u8; 8] = b"SLTBSNP1";

/// A snapshot read back from disk.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub written_at_ms: u64,
    pub topic: String,
    pub topic_id: String,
    pub position: BTreeMap<u32, u64>,
    pub rows: u64,
    /// The whole file; rows start at `rows_at`.
    buf: Vec<u8>,
    rows_at: usize,
}

impl Loaded {
    /// Calls `f` for every row (already CRC-checked; still bounds-checked).
    pub(crate) fn for_each_row(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), String> {
        let body = &self.buf[..self.buf.len() - 4];
        let mut r = Reader {
            buf: body,
            at: self.rows_at,
        };
        for _ in 0..self.rows {
            let k = r.bytes()?;
            f(k, r.bytes()?);
        }
        if r.at != body.len() {
            return Err(format!("{} bytes after the last row", body.len() - r.at));
        }
        Ok(())
    }
}

/// Row images ([`super::TableConfig::row_images`]) are other values than the topic's:
/// their snapshot has a name of its own, so a table opened with the other setting
/// never loads it.
pub(crate) fn path_for(dir: &Path, topic: &str, row_images: bool) -> PathBuf {
    match row_images {
        false => dir.join(format!("{topic}.snapshot")),
        true => dir.join(format!("{topic}.rows.snapshot")),
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A writer that feeds the CRC as it goes.
struct Crc<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u32).to_le_bytes())?;
    w.write_all(b)
}

/// Writes `t`'s snapshot into `dir`; returns its path.
pub(crate) fn write(dir: &Path, t: &TopicShared) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = path_for(dir, &t.topic, t.row_images);
    let tmp = path.with_extension("snapshot.tmp");
    let file = File::create(&tmp)?;
    let mut w = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    {
        let guards: Vec<_> = t.store.shards().iter().map(|s| s.read()).collect();
        w.write_all(MAGIC)?;
        w.write_all(&now_ms().to_le_bytes())?;
        put_bytes(&mut w, t.topic.as_bytes())?;
        put_bytes(&mut w, t.topic_id.as_bytes())?;
        let position = t.position.borrow().clone();
        w.write_all(&(position.len() as u32).to_le_bytes())?;
        for (p, o) in &position {
            w.write_all(&p.to_le_bytes())?;
            w.write_all(&o.to_le_bytes())?;
        }
        let rows: usize = guards.iter().map(|g| g.rows()).sum();
        w.write_all(&(rows as u64).to_le_bytes())?;
        let mut result = Ok(());
        for g in &guards {
            g.for_each(|k, v| {
                if result.is_ok() {
                    result = put_bytes(&mut w, k).and_then(|_| put_bytes(&mut w, v));
                }
            });
        }
        result?;
    }
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Bounds-checked reading of a snapshot's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

/// Reads and checks a snapshot file; the error says why it is unusable.
pub(crate) fn read(path: &Path) -> Result<Loaded, String> {
    let buf = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() < MAGIC.len() + 4 || &buf[..MAGIC.len()] != MAGIC {
        return Err("not a table snapshot (bad magic)".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32fast::hash(body) != stored {
        return Err("CRC mismatch (torn or corrupt file)".into());
    }
    let mut r = Reader {
        buf: body,
        at: MAGIC.len(),
    };
    let written_at_ms = r.u64()?;
    let topic = r.string()?;
    let topic_id = r.string()?;
    let partitions = r.u32()?;
    let mut position = BTreeMap::new();
    for _ in 0..partitions {
        let p = r.u32()?;
        position.insert(p, r.u64()?);
    }
    let rows = r.u64()?;
    // Each row needs at least 8 bytes: a count larger than that is corrupt.
    if rows > (body.len() / 8) as u64 {
        return Err(format!("impossible row count {rows}"));
    }
    let rows_at = r.at;
    Ok(Loaded {
        written_at_ms,
        topic,
        topic_id,
        position,
        rows,
        buf,
        rows_at,
    })
}

#[cfg(test)]
mod tests {
    use tokio::sync::{broadcast, watch};

    use super::*;
    use crate::table::store::Store;

    fn topic_with_rows(rows: &[(&[u8], &[u8])]) -> TopicShared {
        let store = Store::new(4, 0, 0);
        for (k, v) in rows {
            let hash = store.hash(k);
            let mut shard = store.shards()[store.shard_of(hash)].write();
            shard.apply(store.hasher(), hash, k, Some(v), None).unwrap();
        }
        TopicShared {
            topic: "users".into(),
            topic_id: "id-1".into(),
            store,
            snapshot_rows: None,
            position: watch::channel([(0, 7), (1, 3)].into()).0,
            changes: broadcast::channel(1).0,
            malformed_positions: Default::default(),
            row_images: false,
        }
    }

    #[test]
    fn a_written_snapshot_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let t = topic_with_rows(&[(b"a", b"1"), (b"b", b""), (b"c", &[0xff; 300])]);
        let path = write(dir.path(), &t).unwrap();
        assert_eq!(path, path_for(dir.path(), "users", false));
        assert!(!path.with_extension("snapshot.tmp").exists());
        let loaded = read(&path).unwrap();
        assert_eq!(
            (loaded.topic.as_str(), loaded.topic_id.as_str()),
            ("users", "id-1")
        );
        assert_eq!(loaded.position, [(0, 7), (1, 3)].into());
        assert!(now_ms() - loaded.written_at_ms < 60_000);
        let mut rows = Vec::new();
        loaded
            .for_each_row(|k, v| rows.push((k.to_vec(), v.to_vec())))
            .unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), Vec::new()),
                (b"c".to_vec(), vec![0xff; 300])
            ]
        );
    }

    #[test]
    fn torn_flipped_or_foreign_files_are_rejected_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let t = topic_with_rows(&[(b"a", b"1"), (b"b", b"2")]);
        let path = write(dir.path(), &t).unwrap();
        let good = std::fs::read(&path).unwrap();
        for cut in [0, 5, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(read(&path).is_err(), "truncated to {cut}");
        }
        for at in 8..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path).unwrap_err().contains("CRC"), "flip at {at}");
        }
        std::fs::write(&path, b"not a snapshot at all").unwrap();
        assert!(read(&path).unwrap_err().contains("magic"));
        assert!(read(&dir.path().join("absent.snapshot")).is_err());
    }
}
