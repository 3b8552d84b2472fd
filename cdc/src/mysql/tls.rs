//! TLS to MariaDB/MySQL: the mysql client's own option names in the DSN's query string,
//! read here and taken out before mysql_async parses the rest.
//!
//! - `ssl-mode`: `DISABLED` (the default without `ssl-ca`), `PREFERRED` (TLS when the
//!   server offers it, unverified, else plaintext), `REQUIRED` (TLS, the certificate
//!   unchecked), `VERIFY_CA` (the chain checked against `ssl-ca`, the default when
//!   `ssl-ca` is given), `VERIFY_IDENTITY` (the chain and the host name).
//! - `ssl-ca`: a PEM file of trusted roots (only these; without it, the public roots).
//! - `ssl-cert`, `ssl-key`: a client certificate and its key (PEM), for users created
//!   `REQUIRE X509`.
//!
//! `_` may stand for `-` (`ssl_mode`), and values are case-insensitive. TLS is rustls.

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use crate::Error;

/// `ssl-mode`, as the mysql client names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "DISABLED",
            SslMode::Preferred => "PREFERRED",
            SslMode::Required => "REQUIRED",
            SslMode::VerifyCa => "VERIFY_CA",
            SslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }
}

/// What to connect with: the options, and whether a failed TLS attempt may be
/// retried in plaintext (`PREFERRED`).
pub(super) struct Connect {
    pub opts: Opts,
    pub mode: SslMode,
}

impl Connect {
    /// The same options without TLS (the `PREFERRED` fallback).
    pub fn plain(&self) -> Opts {
        Opts::from(OptsBuilder::from_opts(self.opts.clone()).ssl_opts(None::<SslOpts>))
    }
}

/// Parses `dsn`, Sluice's TLS options taken out of its query first.
pub(super) fn parse(dsn: &str) -> Result<Connect, Error> {
    let shown = crate::redact_dsn(dsn);
    let bad = |why: String| Error::Config(format!("mysql: --dsn {shown:?}: {why}"));
    let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
    let (mut mode, mut ca, mut cert, mut key) = (None, None, None, None);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v).map_err(&bad)?;
        match k.replace('_', "-").to_ascii_lowercase().as_str() {
            "ssl-mode" => {
                mode = Some(match v.to_ascii_uppercase().as_str() {
                    "DISABLED" => SslMode::Disabled,
                    "PREFERRED" => SslMode::Preferred,
                    "REQUIRED" => SslMode::Required,
                    "VERIFY_CA" => SslMode::VerifyCa,
                    "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
                    _ => {
                        return Err(bad(format!(
                            "ssl-mode={v}: use DISABLED, PREFERRED, REQUIRED, VERIFY_CA or \
                             VERIFY_IDENTITY"
                        )))
                    }
                })
            }
            "ssl-ca" => ca = Some(v),
            "ssl-cert" => cert = Some(v),
            "ssl-key" => key = Some(v),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let opts = Opts::from_url(&url).map_err(|e| {
        // The parser's own message may quote the string: never show the password.
        let why = e.to_string().replace(&url, &shown);
        bad(why)
    })?;
    let mode = mode.unwrap_or(if ca.is_some() {
        SslMode::VerifyCa
    } else {
        SslMode::Disabled
    });
    if matches!(mode, SslMode::Disabled) {
        return Ok(Connect { opts, mode });
    }
    if cert.is_some() != key.is_some() {
        return Err(bad(
            "a client certificate needs both ssl-cert and ssl-key".into()
        ));
    }
    let mut ssl = SslOpts::default();
    if let Some(ca) = &ca {
        if let Err(e) = std::fs::metadata(ca) {
            return Err(bad(format!("ssl-ca {ca}: {e}")));
        }
        ssl = ssl
            .with_root_certs(vec![std::path::PathBuf::from(ca).into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            std::path::PathBuf::from(cert).into(),
            std::path::PathBuf::from(key).into(),
        )));
    }
    ssl = match mode {
        SslMode::Preferred | SslMode::Required => ssl.with_danger_accept_invalid_certs(true),
        SslMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
        SslMode::VerifyIdentity | SslMode::Disabled => ssl,
    };
    // mysql_async builds its rustls config with the process's default provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let opts = Opts::from(OptsBuilder::from_opts(opts).ssl_opts(ssl));
    Ok(Connect { opts, mode })
}

/// Whether a connect error came from TLS (the server offers none, or the handshake
/// failed): for `PREFERRED`, a reason to try plaintext; otherwise nothing retrying fixes.
pub(super) fn is_tls_error(e: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, IoError};
    match e {
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => true,
        mysql_async::Error::Io(IoError::Tls(_)) => true,
        // A failed handshake arrives as an io::Error (within one) around rustls' error.
        mysql_async::Error::Io(IoError::Io(io)) => {
            let mut inner = io.get_ref();
            while let Some(e) = inner {
                if e.downcast_ref::<rustls::Error>().is_some() {
                    return true;
                }
                inner = e
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref());
            }
            false
        }
        _ => false,
    }
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let b = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding that is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_and_the_rest_passed_on() {
        let c =
            parse("mysql://u:p@127.0.0.1:3306/db?ssl-mode=required&prefer_socket=false").unwrap();
        assert_eq!(c.mode, SslMode::Required);
        let ssl = c.opts.ssl_opts().expect("TLS");
        assert!(ssl.accept_invalid_certs());
        assert!(!c.opts.prefer_socket());
        assert!(c.plain().ssl_opts().is_none());
        let c = parse("mysql://u@h/db").unwrap();
        assert_eq!(c.mode, SslMode::Disabled);
        assert!(c.opts.ssl_opts().is_none());
        let c = parse("mysql://u@h/db?ssl_ca=%2Fetc%2Fhostname").unwrap();
        assert_eq!(c.mode, SslMode::VerifyCa);
        assert!(c.opts.ssl_opts().unwrap().skip_domain_validation());
        let e = parse("mysql://u:secret@h/db?ssl-mode=sometimes")
            .err()
            .unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(parse("mysql://u@h/db?ssl-ca=/does/not/exist").is_err());
    }
}
