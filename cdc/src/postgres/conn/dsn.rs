//! Reading a connection string the way libpq does (the URL and the `key=value` forms),
//! and libpq's password file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

use super::PgConn;

/// Whether the password-file warning was printed (once a process, as psql would per run).
static PGPASS_WARNED: AtomicBool = AtomicBool::new(false);

/// The password for `conn` from a libpq password file: lines
/// `hostname:port:database:username:password`, `*` matching anything, `\` escaping `:`
/// and `\`, the first match winning. A file group or others may read is ignored with
/// one warning (libpq's rule); a missing file is not an error.
pub(super) fn pgpass_lookup(path: &Path, conn: &PgConn) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    let warn_once = |why: &str| {
        if !PGPASS_WARNED.swap(true, Ordering::Relaxed) {
            warn!("password file \"{}\" {why}; it is not used", path.display());
        }
    };
    if !meta.is_file() {
        warn_once("is not a plain file");
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        warn_once("has group or world access; permissions should be u=rw (0600) or less");
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // A host that is a socket directory matches `localhost`, as in libpq.
    let host = if conn.host.starts_with('/') {
        "localhost"
    } else {
        &conn.host
    };
    let want = [host, &conn.port.to_string(), &conn.dbname, &conn.user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = pgpass_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4..].join(":"))
        })
}

/// One password-file line split at unescaped `:`, escapes removed.
pub(super) fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

pub(super) fn host_in_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        enc(host)
    }
}

/// Percent-encoding for a URL component.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dec(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoded token in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding that is not UTF-8".to_string())
}

/// The options of a connection string, in order, empty values left out (libpq reads
/// an empty value as "not given").
pub(super) fn parse(dsn: &str) -> Result<Vec<(String, String)>, String> {
    let mut opts = if let Some(rest) = dsn
        .strip_prefix("postgres://")
        .or_else(|| dsn.strip_prefix("postgresql://"))
    {
        parse_url(rest)?
    } else {
        parse_key_value(dsn)?
    };
    opts.retain(|(_, v)| !v.is_empty());
    Ok(opts)
}

fn parse_url(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut opts = Vec::new();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            opts.push(("user".into(), dec(user)?));
            if let Some(p) = password {
                opts.push(("password".into(), dec(p)?));
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, tail) = v6
            .split_once(']')
            .ok_or("an IPv6 address without its closing ]")?;
        (addr.to_string(), tail.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (dec(h)?, p),
            None => (dec(hostport)?, ""),
        }
    };
    if host.contains(',') {
        return Err("more than one host is not supported".into());
    }
    opts.push(("host".into(), host));
    opts.push(("port".into(), port.to_string()));
    opts.push(("dbname".into(), dec(path)?));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("missing \"=\" in URI query parameter {pair:?}"))?;
        opts.push((dec(k)?, dec(v)?));
    }
    Ok(opts)
}

/// libpq's `key=value` form: values may be single-quoted, `\` escapes the next character.
fn parse_key_value(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut opts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(opts);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after {key:?} in connection info string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string in connection info".into()),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        opts.push((key, value));
    }
}
