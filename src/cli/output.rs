//! Human tables and JSON for client commands, the one-line error convention, and how
//! commands write to stdout when nobody reads it any more.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe is an EPIPE error, and `println!`
//! panics on it (exit 101). Client commands use [`outln!`]: a closed stdout ends the
//! command quietly with status 0 (docs/cli.md). Servers use [`status_println!`] and
//! [`status_eprintln!`], which ignore write errors: a status line is for a human
//! watching, and a server's shutdown (flush, checkpoint, clean-shutdown marker) must not
//! depend on whether anyone still reads it. `perf` uses them too: its exit status says
//! whether the run succeeded, whatever became of the result lines.

use std::io::Write;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use sluice_client::Error;

/// `println!` for client commands: a closed stdout (the reader, say `head -1`, has what
/// it wanted) exits with status 0 and no message; any other write error exits 1.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// `println!` for servers and `perf`: write errors are ignored (see the module doc).
macro_rules! status_println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use status_println;

/// `eprintln!` for servers and `perf`: write errors are ignored (see the module doc).
macro_rules! status_eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use status_eprintln;

/// What [`outln!`] expands to.
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // The `\n` makes the line-buffered stdout flush, so an error shows up here.
    let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// A table with a header row, printed with light borders.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// Turns a client error into the one line a user reads, with what to do.
pub fn explain(e: &Error, bootstrap: &str) -> anyhow::Error {
    match e {
        // The broker answered; what it could not reach is a controller (admin requests
        // are forwarded to the active one), so do not send the user after the broker.
        Error::Unreachable { addr, message } if message.contains("no active controller") => {
            anyhow::anyhow!(
                "the broker at {addr} is up, but it has no active controller to pass this request to ({message}); is a controller running (`sluice controller`, or `sluice dev`), and are the broker's --controller addresses right?"
            )
        }
        Error::Unreachable { addr, message } => anyhow::anyhow!(
            "cannot reach a Sluice broker at {addr} ({message}); is `sluice dev` running, or is --bootstrap (now {bootstrap}) right?"
        ),
        other => anyhow::anyhow!("{other}"),
    }
}

pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Standard base64 with padding (RFC 4648 §4), for record bytes that are not UTF-8 in
/// JSON output; the alphabet scripts decode with `base64 -d`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }
}
