//! Text checkpoint files in Kafka's layout: a version line, an entry count, then one
//! entry per line. Used for `recovery-point-offset-checkpoint` (entries
//! `topic partition offset`) and `leader-epoch-checkpoint` (entries `epoch offset`).
//! Every write goes through write-fsync-rename, so a reader sees a whole file or the
//! previous one; a file that does not parse is reported, never half-used.

use std::io;
use std::path::Path;

use super::io_util::write_atomically;

const VERSION: &str = "0";

/// Writes `lines` (each an entry without its newline) as a checkpoint.
pub(crate) fn write(path: &Path, lines: &[String]) -> io::Result<()> {
    let mut text = format!("{VERSION}\n{}\n", lines.len());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    write_atomically(path, text.as_bytes())
}

/// Reads a checkpoint's entries; `Ok(None)` if the file does not exist.
pub(crate) fn read(path: &Path) -> io::Result<Option<Vec<Vec<String>>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err(bad("unknown checkpoint version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad("bad entry count"))?;
    let entries: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    if entries.len() != count {
        return Err(bad("entry count does not match"));
    }
    Ok(Some(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_torn_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp");
        assert!(read(&p).unwrap().is_none());
        write(&p, &["a 0 5".into(), "b 1 7".into()]).unwrap();
        let got = read(&p).unwrap().unwrap();
        assert_eq!(got[1], vec!["b", "1", "7"]);
        std::fs::write(&p, "0\n3\na 0 5\n").unwrap();
        assert!(read(&p).is_err());
    }
}
