//! Postgres' `COPY ... TO STDOUT` text format, read by the connector's own copy workers
//! (`super::parallel`): rows end with a newline, fields are separated by a tab, `\N`
//! is NULL, and a backslash escapes the rest (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`,
//! octal `\ooo`, hex `\xhh`; any other escaped byte stands for itself). A data byte
//! that is a newline or a tab is always escaped, so a raw one is always structure.
//! Bytes are in the connection's `client_encoding` (UTF8, which tokio-postgres sets).
//!
//! No allocation per row or per field: a field without a backslash is handed out as a
//! slice of the message, an escaped one is unescaped into a buffer reused for the run.

use crate::Error;

/// Splits CopyData messages into lines. A message is usually one row, but nothing in
/// the protocol says so: a line may span messages and is carried over.
#[derive(Debug, Default)]
pub(super) struct Lines {
    carry: Vec<u8>,
}

impl Lines {
    /// Every complete line of `chunk` (with what an earlier chunk left unfinished),
    /// without its newline, to `f`.
    pub(super) fn feed(
        &mut self,
        mut chunk: &[u8],
        mut f: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if !self.carry.is_empty() {
            let Some(end) = chunk.iter().position(|&b| b == b'\n') else {
                self.carry.extend_from_slice(chunk);
                return Ok(());
            };
            self.carry.extend_from_slice(&chunk[..end]);
            let line = std::mem::take(&mut self.carry);
            f(&line)?;
            self.carry = line;
            self.carry.clear();
            chunk = &chunk[end + 1..];
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            f(&chunk[..end])?;
            chunk = &chunk[end + 1..];
        }
        self.carry.extend_from_slice(chunk);
        Ok(())
    }

    /// The copy ended: a line left without its newline is a protocol error.
    pub(super) fn finish(&self) -> Result<(), Error> {
        if self.carry.is_empty() {
            return Ok(());
        }
        Err(Error::Source(format!(
            "postgres: the copy ended inside a row ({} bytes without a newline)",
            self.carry.len()
        )))
    }
}

/// Hands each field of `line` to `f` as `(index, value)`, `None` for NULL; `scratch`
/// holds unescaped values. A line without exactly `columns` fields is an error.
pub(super) fn for_each_field(
    line: &[u8],
    columns: usize,
    scratch: &mut Vec<u8>,
    mut f: impl FnMut(usize, Option<&[u8]>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut n = 0;
    for raw in line.split(|&b| b == b'\t') {
        if n == columns {
            return Err(column_count(columns, line));
        }
        if raw == b"\\N" {
            f(n, None)?;
        } else if !raw.contains(&b'\\') {
            f(n, Some(raw))?;
        } else {
            unescape(raw, scratch);
            f(n, Some(scratch.as_slice()))?;
        }
        n += 1;
    }
    if n != columns {
        return Err(column_count(columns, line));
    }
    Ok(())
}

fn column_count(columns: usize, line: &[u8]) -> Error {
    let got = line.split(|&b| b == b'\t').count();
    Error::Source(format!(
        "postgres: a copied row has {got} fields where {columns} columns were selected"
    ))
}

/// The value an escaped field stands for, into `out` (cleared first).
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v);
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &[u8], columns: usize) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        for_each_field(line, columns, &mut scratch, |i, v| {
            assert_eq!(i, out.len());
            out.push(v.map(<[u8]>::to_vec));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn fields_nulls_and_escapes_read_as_postgres_writes_them() {
        let got = fields(b"42\t\\N\ta\\tb\\\\c\\nd\t\t\\x41\\101\\q\\b\\f\\r\\v", 5).unwrap();
        let want: Vec<Option<Vec<u8>>> = vec![
            Some(b"42".to_vec()),
            None,
            Some(b"a\tb\\c\nd".to_vec()),
            Some(Vec::new()),
            Some(b"AAq\x08\x0c\r\x0b".to_vec()),
        ];
        assert_eq!(got, want);
        // `\\N` is the two characters `\N`, not NULL.
        assert_eq!(fields(b"\\\\N", 1).unwrap(), vec![Some(b"\\N".to_vec())]);
        // Multi-byte UTF-8 passes through untouched.
        assert_eq!(
            fields("é\\tü".as_bytes(), 1).unwrap(),
            vec![Some("é\tü".as_bytes().to_vec())]
        );
    }

    #[test]
    fn a_row_with_the_wrong_field_count_is_an_error_not_a_panic() {
        for (line, columns) in [(&b"1\t2\t3"[..], 2), (b"1", 2), (b"", 3)] {
            let e = fields(line, columns).unwrap_err().to_string();
            assert!(e.contains("fields where"), "{e}");
        }
        // A lone trailing backslash is kept, not read past the end.
        assert_eq!(fields(b"a\\", 1).unwrap(), vec![Some(b"a\\".to_vec())]);
        assert_eq!(fields(b"\\x", 1).unwrap(), vec![Some(b"x".to_vec())]);
    }

    #[test]
    fn lines_are_split_across_any_message_boundaries() {
        let text = b"1\ta\n22\tbb\n333\tccc\n";
        for cut in 0..text.len() {
            for cut2 in cut..text.len() {
                let mut lines = Lines::default();
                let mut got = Vec::new();
                for part in [&text[..cut], &text[cut..cut2], &text[cut2..]] {
                    lines
                        .feed(part, |l| {
                            got.push(l.to_vec());
                            Ok(())
                        })
                        .unwrap();
                }
                lines.finish().unwrap();
                assert_eq!(
                    got,
                    vec![b"1\ta".to_vec(), b"22\tbb".to_vec(), b"333\tccc".to_vec()]
                );
            }
        }
        let mut lines = Lines::default();
        lines.feed(b"1\tunfinished", |_| Ok(())).unwrap();
        assert!(lines.finish().is_err());
    }
}
