//! Human tables and JSON for client commands, and the one-line error convention.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use sluice_client::Error;

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
