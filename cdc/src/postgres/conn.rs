//! How the connector reaches Postgres, the way libpq would: one parsed connection
//! string ([`PgConn`]) for every connection the connector makes — queries, the fence and
//! heartbeats (tokio-postgres), the snapshot and the replication stream (pg_walstream).
//!
//! What the DSN leaves out comes from libpq's environment (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! `PGPASSFILE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`), then from libpq's defaults; a
//! password still missing comes from the password file (`~/.pgpass`), which is ignored
//! with one warning when group or others may read it. TLS is rustls with libpq's
//! `sslmode` semantics (see [`SslMode`]); `~/.postgresql/root.crt`,
//! `postgresql.crt` and `postgresql.key` are used when present, as libpq does.
//!
//! Nothing here logs a password: errors name the connection by [`PgConn::shown`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::warn;

mod dsn;
mod tls;

use crate::Error;
use dsn::{enc, host_in_url, parse, pgpass_lookup};
use tls::{MakeRustls, Unchecked, Verifier};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// Plaintext first; TLS only when the server refuses plaintext.
    Allow,
    /// TLS when the server offers it, else plaintext (libpq's default).
    Prefer,
    /// TLS, the certificate unchecked — unless a root certificate is there, then as
    /// `VerifyCa` (libpq's rule).
    Require,
    /// TLS, the certificate signed by a trusted root; the host name not checked.
    VerifyCa,
    /// TLS, the certificate signed by a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "postgres: invalid sslmode {other:?}: use disable, allow, prefer, require, \
                     verify-ca or verify-full"
                )))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// libpq's name for "the TLS library's trusted roots" (here: Mozilla's, webpki-roots).
const SYSTEM_ROOTS: &str = "system";

/// A resolved Postgres connection: the DSN, the environment and the password file
/// applied. Holds the password; its `Debug` does not show it.
#[derive(Clone)]
pub struct PgConn {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    /// The mode as given; [`PgConn::effective_mode`] applies libpq's root-certificate rule.
    pub sslmode: SslMode,
    /// A PEM file of trusted roots, or `system`.
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    /// Other options (`application_name`, `connect_timeout`, …), passed on as given.
    extra: Vec<(String, String)>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// The options taken out of the DSN into typed fields.
const OWN_KEYS: &[&str] = &[
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "passfile",
];

/// Where a value missing from the DSN comes from in the environment (libpq's names).
const ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("dbname", "PGDATABASE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("passfile", "PGPASSFILE"),
    ("application_name", "PGAPPNAME"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
];

impl PgConn {
    /// Parses `dsn` (a `postgres://` URL or libpq's `key=value` form) and fills what it
    /// leaves out from the environment, libpq's defaults and the password file.
    pub fn resolve(dsn: &str) -> Result<PgConn, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::resolve_with(dsn, &env)
    }

    fn resolve_with(dsn: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PgConn, Error> {
        let mut opts = parse(dsn).map_err(|why| {
            Error::Config(format!(
                "postgres: --dsn {:?}: {why}",
                crate::redact_dsn(dsn)
            ))
        })?;
        for (key, var) in ENV {
            if !opts.iter().any(|(k, _)| k == key) {
                if let Some(v) = env(var) {
                    opts.push((key.to_string(), v));
                }
            }
        }
        let take = |opts: &mut Vec<(String, String)>, key: &str| {
            // The last of a repeated key wins, as in libpq.
            let v = opts
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone());
            opts.retain(|(k, _)| k != key);
            v
        };
        let host = take(&mut opts, "host").unwrap_or_else(|| "localhost".into());
        let port = match take(&mut opts, "port") {
            None => 5432,
            Some(p) => p.parse().map_err(|_| {
                Error::Config(format!(
                    "postgres: invalid port {p:?} in the connection string"
                ))
            })?,
        };
        let user = take(&mut opts, "user")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let dbname = take(&mut opts, "dbname").unwrap_or_else(|| user.clone());
        let sslmode = match take(&mut opts, "sslmode") {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let home = env("HOME").map(PathBuf::from);
        let default_file = |name: &str| {
            let path = home.as_ref()?.join(".postgresql").join(name);
            path.exists().then(|| path.display().to_string())
        };
        let sslrootcert = take(&mut opts, "sslrootcert").or_else(|| default_file("root.crt"));
        let sslcert = take(&mut opts, "sslcert").or_else(|| default_file("postgresql.crt"));
        let sslkey = take(&mut opts, "sslkey").or_else(|| default_file("postgresql.key"));
        let passfile = take(&mut opts, "passfile");
        let mut password = take(&mut opts, "password");
        opts.retain(|(k, _)| !OWN_KEYS.contains(&k.as_str()));
        let mut conn = PgConn {
            host,
            port,
            user,
            password: None,
            dbname,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            extra: opts,
        };
        if password.is_none() {
            let file = passfile
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".pgpass")));
            if let Some(file) = file {
                password = pgpass_lookup(&file, &conn);
            }
        }
        conn.password = password;
        if matches!(conn.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
            && conn.sslrootcert.is_none()
        {
            return Err(Error::Config(format!(
                "postgres: sslmode={} needs a root certificate to check the server's against: \
                 give sslrootcert=PATH (or PGSSLROOTCERT, or ~/.postgresql/root.crt), or \
                 sslrootcert=system for the well-known public roots",
                conn.sslmode.as_str()
            )));
        }
        if conn.sslcert.is_some() != conn.sslkey.is_some() {
            return Err(Error::Config(
                "postgres: a client certificate needs both sslcert and sslkey".into(),
            ));
        }
        if let Some(key) = &conn.sslkey {
            check_key_file(Path::new(key))?;
        }
        Ok(conn)
    }

    /// `sslmode` with libpq's rule applied: `require` with a root certificate checks
    /// the chain like `verify-ca`.
    pub fn effective_mode(&self) -> SslMode {
        match self.sslmode {
            SslMode::Require if self.sslrootcert.is_some() => SslMode::VerifyCa,
            m => m,
        }
    }

    /// The connection without its password, for log lines and errors.
    pub fn shown(&self) -> String {
        format!(
            "postgres://{}{}@{}:{}/{} (sslmode={})",
            self.user,
            if self.password.is_some() { ":***" } else { "" },
            host_in_url(&self.host),
            self.port,
            self.dbname,
            self.effective_mode().as_str()
        )
    }

    /// The connection string for pg_walstream (snapshot and replication stream):
    /// everything explicit, so its parser applies no environment of its own.
    pub fn walstream_dsn(&self, replication: bool) -> String {
        let mut url = format!("postgresql://{}", enc(&self.user));
        if let Some(p) = &self.password {
            url.push(':');
            url.push_str(&enc(p));
        }
        url.push_str(&format!(
            "@{}:{}/{}?sslmode={}",
            host_in_url(&self.host),
            self.port,
            enc(&self.dbname),
            // pg_walstream's `allow` is `prefer`; libpq's order matters little here.
            self.effective_mode().as_str()
        ));
        for (k, v) in [
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
        ] {
            if let Some(v) = v {
                url.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        for (k, v) in &self.extra {
            url.push_str(&format!("&{}={}", enc(k), enc(v)));
        }
        if replication {
            url.push_str("&replication=database");
        }
        url
    }

    /// tokio-postgres' configuration (TLS aside: see [`PgConn::connect`]).
    fn tokio_config(&self) -> Result<tokio_postgres::Config, Error> {
        let kv: Vec<String> = self
            .extra
            .iter()
            .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect();
        let mut c: tokio_postgres::Config = kv
            .join(" ")
            .parse()
            .map_err(|e| Error::Config(format!("postgres: {}: {e}", self.shown())))?;
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname);
        if let Some(p) = &self.password {
            c.password(p);
        }
        Ok(c)
    }

    /// A query connection (tokio-postgres), TLS as `sslmode` says.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, Error> {
        use tokio_postgres::config::SslMode as Tp;
        let mut config = self.tokio_config()?;
        let mode = self.effective_mode();
        let tls = MakeRustls {
            config: match mode {
                SslMode::Disable => None,
                m => Some(Arc::new(self.tls_config(m)?)),
            },
        };
        let attempt = |ssl: Tp| {
            let mut config = config.clone();
            config.ssl_mode(ssl);
            let tls = tls.clone();
            async move { config.connect(tls).await }
        };
        let connected = match mode {
            SslMode::Disable => attempt(Tp::Disable).await,
            // Plaintext first; TLS only if the server would not take it.
            SslMode::Allow => match attempt(Tp::Disable).await {
                Ok(c) => Ok(c),
                Err(_) => attempt(Tp::Require).await,
            },
            // TLS if offered; a handshake that fails is tried again in plaintext (libpq).
            SslMode::Prefer => match attempt(Tp::Prefer).await {
                Err(e) if is_tls_error(&e) => attempt(Tp::Disable).await,
                r => r,
            },
            _ => {
                config.ssl_mode(Tp::Require);
                config.connect(tls.clone()).await
            }
        };
        let (client, conn) = connected.map_err(|e| self.connect_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(error = %super::pg_text(&e), "postgres connection ended");
            }
        });
        Ok(client)
    }

    /// A failed connect on one line. What retrying cannot fix — the server refusing
    /// the login or the encryption, a certificate that does not check out — is an
    /// [`Error::Config`], so the connector stops and says what to change.
    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        let mut text = format!(
            "postgres: connect to {}: {}",
            self.shown(),
            super::pg_text(e)
        );
        if let Some(db) = e.as_db_error() {
            // Class 28: invalid authorization (pg_hba.conf, password, certificate user).
            if db.code().code().starts_with("28") {
                if db.message().contains("no encryption") {
                    text.push_str(
                        " (the server takes TLS connections only: use sslmode=require or stronger)",
                    );
                }
                return Error::Config(text);
            }
        }
        if self.password.is_none() && text.contains("password missing") {
            return Error::Config(format!(
                "{text} (the server asks for a password: give it in the DSN, in PGPASSWORD, \
                 or in ~/.pgpass or the PGPASSFILE file, mode 0600)"
            ));
        }
        match rustls_error(e) {
            Some(rustls::Error::InvalidCertificate(why)) => {
                let hint = match why {
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                        " (sslmode=verify-full checks that the certificate names host {}: \
                         connect by a name it lists, or use sslmode=verify-ca)",
                        self.host
                    ),
                    rustls::CertificateError::UnknownIssuer => format!(
                        " (the server's certificate is not signed by a root in sslrootcert={})",
                        self.sslrootcert.as_deref().unwrap_or("")
                    ),
                    _ => String::new(),
                };
                Error::Config(format!("{text}{hint}"))
            }
            Some(_) => Error::Config(text),
            None if is_tls_error(e) => Error::Config(text),
            None => Error::Source(text),
        }
    }

    /// The rustls configuration for `mode` (not `Disable`).
    fn tls_config(&self, mode: SslMode) -> Result<rustls::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("postgres: TLS: {e}")))?;
        let verified = |full: bool| -> Result<_, Error> {
            let roots = Arc::new(self.root_store()?);
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::Config(format!("postgres: TLS roots: {e}")))?;
            Ok(Arc::new(Verifier {
                inner,
                check_name: full,
            })
                as Arc<dyn rustls::client::danger::ServerCertVerifier>)
        };
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match mode {
            SslMode::VerifyFull => verified(true)?,
            SslMode::VerifyCa => verified(false)?,
            // `require` with a root certificate arrives here as `VerifyCa`
            // ([`PgConn::effective_mode`]); `prefer` and `allow` check nothing, as the
            // replication stream's transport does for them.
            _ => Arc::new(Unchecked(provider.clone())),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (Some(cert), Some(key)) = (&self.sslcert, &self.sslkey) else {
            return Ok(builder.with_no_client_auth());
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::Config(format!(
                    "postgres: cannot read client certificate {cert}: {e}"
                ))
            })?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::Config(format!("postgres: cannot read client key {key}: {e}")))?;
        builder.with_client_auth_cert(chain, key_der).map_err(|e| {
            Error::Config(format!(
                "postgres: client certificate {cert} and key {key} do not go together: {e}"
            ))
        })
    }

    fn root_store(&self) -> Result<rustls::RootCertStore, Error> {
        let path = self.sslrootcert.as_deref().unwrap_or_default();
        if path == SYSTEM_ROOTS {
            return Ok(webpki_roots_store());
        }
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| Error::Config(format!("postgres: cannot read sslrootcert {path}: {e}")))?;
        let mut store = rustls::RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::Config(format!(
                "postgres: sslrootcert {path} holds no certificate"
            )));
        }
        Ok(store)
    }
}

/// libpq's rule for a client key: a plain file, `u=rw` (0600) or less when it is the
/// user's own, `u=rw,g=r` (0640) or less when root owns it; else refused.
fn check_key_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        // Reading it says why, with the path.
        return Ok(());
    };
    let mode = meta.mode();
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let too_open = !meta.is_file()
        || (meta.uid() == euid && mode & 0o077 != 0)
        || (meta.uid() == 0 && mode & 0o037 != 0);
    if too_open {
        return Err(Error::Config(format!(
            "postgres: private key file \"{}\" has group or world access (mode {:o}); it \
             must be u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) \
             or less if owned by root: chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

fn webpki_roots_store() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The rustls error under a tokio-postgres error, if the TLS handshake failed.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // io::Error's `source` skips the error it wraps: look inside.
        if let Some(r) = c
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

/// Whether the TLS step failed (the handshake, or a server without TLS where TLS was
/// required): tokio-postgres' own kind shows only in its message.
fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    rustls_error(e).is_some() || e.to_string().contains("TLS")
}

#[cfg(test)]
mod tests {
    use super::dsn::pgpass_fields;
    use super::*;

    fn resolve(dsn: &str, env: &[(&str, &str)]) -> PgConn {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PgConn::resolve_with(dsn, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    #[test]
    fn the_dsn_wins_and_the_environment_fills_the_rest() {
        let c = resolve(
            "postgres://app@db.example/shop?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
            &[("PGPASSWORD", "pw"), ("PGPORT", "6543"), ("PGUSER", "other"), ("PGSSLMODE", "disable")],
        );
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.dbname, "shop");
        assert_eq!(
            c.walstream_dsn(true),
            "postgresql://app:pw@db.example:6543/shop?sslmode=verify-full&sslrootcert=%2Fca.pem\
             &application_name=x&replication=database"
        );
        assert!(!format!("{c:?}").contains("pw@"));
    }

    #[test]
    fn key_value_form_quotes_and_escapes() {
        let c = resolve(
            r"host=h port=5433 user=u password='it\'s a secret' dbname = d",
            &[],
        );
        assert_eq!(c.password.as_deref(), Some("it's a secret"));
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("h", 5433, "d")
        );
        let c = resolve("postgres://u:p%40ss@[::1]:5/", &[]);
        assert_eq!((c.host.as_str(), c.port), ("::1", 5));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.dbname, "u");
    }

    #[test]
    fn other_options_reach_tokio_postgres_intact() {
        let c = resolve(
            "postgres://u:pw@h:7/d?application_name=it%27s%20me&connect_timeout=3",
            &[],
        );
        let t = c.tokio_config().unwrap();
        assert_eq!(t.get_application_name(), Some("it's me"));
        assert_eq!(
            t.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(t.get_password(), Some(&b"pw"[..]));
        assert_eq!((t.get_user(), t.get_dbname()), (Some("u"), Some("d")));
    }

    #[test]
    fn a_client_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("key");
        let key = dir.join("client.key");
        std::fs::write(&key, "not read here").unwrap();
        let dsn = format!("postgres://u@h/d?sslcert=/c.crt&sslkey={}", key.display());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(PgConn::resolve_with(&dsn, &|_| None).is_ok());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = PgConn::resolve_with(&dsn, &|_| None).err().unwrap();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_chain() {
        let c = resolve("postgres://u@h/d?sslmode=require&sslrootcert=/ca", &[]);
        assert_eq!(c.effective_mode(), SslMode::VerifyCa);
        let c = resolve(
            "postgres://u@h/d?sslmode=require",
            &[("HOME", "/nonexistent")],
        );
        assert_eq!(c.effective_mode(), SslMode::Require);
        let e = PgConn::resolve_with("postgres://u@h/d?sslmode=verify-full", &|_| None);
        assert!(matches!(e, Err(Error::Config(m)) if m.contains("sslrootcert")));
        let e = PgConn::resolve_with("postgres://u@h/d?sslmode=bogus", &|_| None);
        assert!(e.is_err());
    }

    #[test]
    fn password_file_lines_match_like_libpq() {
        assert_eq!(
            pgpass_fields(r"h:5432:d:u:p\:w:x"),
            ["h", "5432", "d", "u", "p:w:x"]
        );
        let dir = tempdir("pgpass");
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\n127.0.0.1:5432:*:u:yes\n*:*:*:*:fallback\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let passfile = file.display().to_string();
        let env = [("PGPASSFILE", passfile.as_str())];
        let c = resolve("postgres://u@127.0.0.1/d", &env);
        assert_eq!(c.password.as_deref(), Some("yes"));
        let c = resolve("postgres://v@127.0.0.1/d", &env);
        assert_eq!(c.password.as_deref(), Some("fallback"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = resolve("postgres://u@127.0.0.1/d", &env);
        assert_eq!(c.password, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
