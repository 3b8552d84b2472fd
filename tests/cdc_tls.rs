//! Secrets and TLS for `sluice cdc`, against real servers through the real binary:
//! Postgres 15 with `ssl=on` and a pg_hba.conf that refuses plaintext (`hostnossl …
//! reject`) and takes one user by client certificate (`hostssl … cert`); MariaDB with a
//! user created `REQUIRE SSL`; libpq's `PGPASSWORD` and password file. The test makes its
//! own CA and certificates with the `openssl` command.

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::db::{chown_r, MariaDb, Postgres};
use common::{poll_until, wait_for, Dev, BIN};

/// A `sluice cdc …` run, killed when dropped (a failing test leaves none behind).
struct Run {
    child: Child,
    log: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the run to exit on its own; its status code and the last line it printed.
    fn exit(mut self) -> (Option<i32>, String) {
        let status = poll_until(Duration::from_secs(30), || self.child.try_wait().unwrap())
            .unwrap_or_else(|| panic!("the run did not exit: {}", self.text()));
        let text = self.text();
        let last = text.lines().last().unwrap_or_default().to_string();
        eprintln!("{}: exit {:?}: {last}", self.log.display(), status.code());
        (status.code(), last)
    }
}

/// `sluice ARGS` with `env` set (and every libpq variable of the test's own environment
/// removed, HOME pointed at `home`); stderr in `dir/NAME.log`.
fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)], home: &Path) -> Run {
    let log = dir.join(format!("{name}.log"));
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("SLUICE_CDC_DSN")
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    Run {
        child: c.spawn().unwrap(),
        log,
    }
}

/// Runs `openssl ARGS` in `dir`, failing the test on an error.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME.crt`, `NAME.key` in `dir`), P-256.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate `NAME.crt` (key `NAME.key`, mode 0600) signed by CA `ca`, with common
/// name `cn` and subject alternative names `san` (e.g. `DNS:localhost`).
fn issue(dir: &Path, ca: &str, name: &str, cn: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let key = dir.join(format!("{name}.key"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// Whether `prefix.public.t` (or `prefix.shop.t`) holds a row with `id`.
fn has_id(dev: &Dev, topic: &str, id: u32) -> Option<()> {
    let out = dev.cli(
        &["consume", topic, "--from-beginning", "--timeout-ms", "700"],
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains(&format!("\"id\":{id}")).then_some(())
}

/// A server certificate for `localhost` only, a client certificate for user `certuser`,
/// and a second CA that signed neither.
fn pg_certificates(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    issue(dir, "ca", "server", "localhost", "DNS:localhost");
    issue(dir, "ca", "client", "certuser", "DNS:certuser");
}

#[test]
fn postgres_over_tls_as_libpq_would_verify_full_require_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    pg_certificates(&certs);
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let pg = Postgres::start_configured(|data| {
        for f in ["server.crt", "server.key", "ca.crt"] {
            std::fs::copy(certs.join(f), data.join(f)).unwrap();
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.crt'"
        )
        .unwrap();
        // Plaintext refused; `certuser` by its certificate alone; the rest over TLS.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostnossl all all 127.0.0.1/32 reject\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
    });
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'); \
         CREATE ROLE certuser LOGIN SUPERUSER;",
    );
    let dev = Dev::start(&dir.path().join("dev"));
    let port = pg.port();
    let ca = path(&certs, "ca.crt");
    let cdc = |prefix: &'static str| {
        [
            "cdc",
            "postgres",
            "--bootstrap",
            &dev.addr,
            "--tables",
            "public.t",
            "--topic-prefix",
            prefix,
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |name: &str, prefix: &'static str, dsn: &str, env: &[(&str, &str)]| {
        let mut args = cdc(prefix);
        args.extend(["--dsn".to_string(), dsn.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn(dir.path(), name, &args, env, &home)
    };

    // verify-full by the name the certificate lists: the copy, then a streamed change.
    let full = run(
        "verify-full",
        "full",
        &format!("postgres://postgres@localhost:{port}/app?sslmode=verify-full&sslrootcert={ca}"),
        &[],
    );
    wait_for("the copy over verify-full", Duration::from_secs(60), || {
        has_id(&dev, "full.public.t", 1)
    });
    pg.psql("app", "INSERT INTO t VALUES (2, 'two')");
    wait_for(
        "a change streamed over verify-full",
        Duration::from_secs(60),
        || has_id(&dev, "full.public.t", 2),
    );
    drop(full);

    // `cdc status` and `cdc drop` connect the same way (the slot goes once the killed
    // connector's session has ended).
    let full_dsn =
        format!("postgres://postgres@localhost:{port}/app?sslmode=verify-full&sslrootcert={ca}");
    let ops = |args: &[&str]| {
        Command::new(BIN)
            .arg("cdc")
            .args(args)
            .args(["--topic-prefix", "full", "--dsn", &full_dsn])
            .env("SLUICE_BOOTSTRAP", &dev.addr)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let status = ops(&["status", "--output", "json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let slots = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_full'";
    assert_eq!(pg.psql("app", slots), "1");
    wait_for("cdc drop over verify-full", Duration::from_secs(30), || {
        ops(&["drop"]).status.success().then_some(())
    });
    assert_eq!(pg.psql("app", slots), "0");

    // verify-full by an address the certificate does not list: one line, exit 1.
    let (code, line) = run(
        "wrong-name",
        "wrong",
        &format!("postgres://postgres@127.0.0.1:{port}/app?sslmode=verify-full&sslrootcert={ca}"),
        &[],
    )
    .exit();
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.contains("verify-full") && line.contains("127.0.0.1") && line.contains("name"),
        "{line}"
    );

    // A root that did not sign the server's certificate: refused, one line.
    let (code, line) = run(
        "wrong-ca",
        "wrongca",
        &format!("postgres://postgres@127.0.0.1:{port}/app?sslmode=verify-ca"),
        &[("PGSSLROOTCERT", &path(&certs, "other-ca.crt"))],
    )
    .exit();
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("not signed by a root"), "{line}");

    // require (from PGSSLMODE) without a root certificate: encrypted, not verified.
    let require = run(
        "require",
        "req",
        &format!("postgres://postgres@127.0.0.1:{port}/app"),
        &[("PGSSLMODE", "require")],
    );
    pg.psql("app", "INSERT INTO t VALUES (3, 'three')");
    wait_for("the copy over require", Duration::from_secs(60), || {
        has_id(&dev, "req.public.t", 3)
    });
    drop(require);

    // A client certificate is the only credential `certuser` has.
    let cert = run(
        "client-cert",
        "cert",
        &format!(
            "postgres://certuser@localhost:{port}/app?sslmode=verify-full&sslrootcert={ca}\
             &sslcert={}&sslkey={}",
            path(&certs, "client.crt"),
            path(&certs, "client.key")
        ),
        &[],
    );
    wait_for("the copy as certuser", Duration::from_secs(60), || {
        has_id(&dev, "cert.public.t", 3)
    });
    pg.psql("app", "INSERT INTO t VALUES (4, 'four')");
    wait_for(
        "a change streamed as certuser",
        Duration::from_secs(60),
        || has_id(&dev, "cert.public.t", 4),
    );
    drop(cert);

    // Plaintext: the server refuses it, and the connector says so in one line.
    let (code, line) = run(
        "disable",
        "plain",
        &format!("postgres://postgres@127.0.0.1:{port}/app?sslmode=disable"),
        &[],
    )
    .exit();
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("no encryption"), "{line}");
    dev.stop();
}

#[test]
fn a_password_comes_from_pgpassword_or_a_private_pgpass_file() {
    const SECRET: &str = "pw-never-shown";
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start_configured(|data| {
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all app_user 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
    });
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'); \
             CREATE ROLE app_user LOGIN SUPERUSER PASSWORD '{SECRET}';"
        ),
    );
    let dev = Dev::start(&dir.path().join("dev"));
    let port = pg.port();
    // No password in the DSN; host, port and database from the environment too.
    let dsn = "postgres://app_user@/";
    let base_env = [
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", port.to_string()),
        ("PGDATABASE", "app".to_string()),
    ];
    let run = |name: &str, prefix: &str, home: &Path, extra: &[(&str, &str)]| {
        let mut env: Vec<(&str, &str)> = base_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        let args = [
            "cdc",
            "postgres",
            "--bootstrap",
            &dev.addr,
            "--tables",
            "public.t",
            "--topic-prefix",
            prefix,
            "--dsn",
            dsn,
        ];
        spawn(dir.path(), name, &args, &env, home)
    };
    let empty_home = dir.path().join("empty-home");
    std::fs::create_dir(&empty_home).unwrap();

    let from_env = run("pgpassword", "env", &empty_home, &[("PGPASSWORD", SECRET)]);
    wait_for("the copy with PGPASSWORD", Duration::from_secs(60), || {
        has_id(&dev, "env.public.t", 1)
    });
    drop(from_env);

    // ~/.pgpass, 0600: the first matching line wins.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let pgpass = home.join(".pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# test\n127.0.0.1:{port}:other:app_user:wrong\n127.0.0.1:{port}:*:app_user:{SECRET}\n\
             *:*:*:*:wrong-too\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = run("pgpass", "file", &home, &[]);
    pg.psql("app", "INSERT INTO t VALUES (2, 'two')");
    wait_for("the copy with ~/.pgpass", Duration::from_secs(60), || {
        has_id(&dev, "file.public.t", 2)
    });
    drop(from_file);

    // Readable by others: ignored with a warning, so no password, and the login fails.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = run("pgpass-0644", "open", &home, &[]);
    let log = open.log.clone();
    let (code, line) = open.exit();
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("password"), "{line}");
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("has group or world access"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {text}");
    assert!(
        warnings[0].contains(&pgpass.display().to_string()),
        "{text}"
    );

    for name in ["pgpassword", "pgpass", "pgpass-0644"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        assert!(
            !text.contains(SECRET),
            "{name} printed the password: {text}"
        );
    }
    dev.stop();
}

#[test]
fn mariadb_over_tls_with_the_ca_for_a_user_that_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    // The server reads its certificate as `mysql`, from a directory of its own.
    let certs = tempfile::Builder::new()
        .prefix("sluice-tls-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    make_ca(certs.path(), "ca");
    make_ca(certs.path(), "other-ca");
    issue(certs.path(), "ca", "server", "127.0.0.1", "IP:127.0.0.1");
    issue(certs.path(), "ca", "client", "x509", "DNS:x509");
    chown_r("mysql", certs.path());
    let db = MariaDb::start_with(&[
        &format!("--ssl-ca={}", path(certs.path(), "ca.crt")),
        &format!("--ssl-cert={}", path(certs.path(), "server.crt")),
        &format!("--ssl-key={}", path(certs.path(), "server.key")),
    ]);
    db.create_db("shop");
    db.sql(
        "shop",
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one');\n\
         CREATE USER 'tls'@'%' IDENTIFIED BY 'tls-pw' REQUIRE SSL;\n\
         GRANT ALL PRIVILEGES ON *.* TO 'tls'@'%';\n\
         CREATE USER 'x509'@'%' REQUIRE X509;\n\
         GRANT ALL PRIVILEGES ON *.* TO 'x509'@'%';",
    );
    let dev = Dev::start(&dir.path().join("dev"));
    let home = dir.path();
    let base = format!("mysql://tls:tls-pw@127.0.0.1:{}/shop", db.port());
    let run = |name: &str, prefix: &str, dsn: &str, server_id: &str| {
        let args = [
            "cdc",
            "mysql",
            "--bootstrap",
            &dev.addr,
            "--tables",
            "shop.t",
            "--server-id",
            server_id,
            "--topic-prefix",
            prefix,
            "--dsn",
            dsn,
        ];
        spawn(dir.path(), name, &args, &[], home)
    };

    // Verified: the chain against the CA and the address against the certificate.
    let ca = path(certs.path(), "ca.crt");
    let verified = run(
        "verify-identity",
        "full",
        &format!("{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
        "4301",
    );
    wait_for("the copy over TLS", Duration::from_secs(60), || {
        has_id(&dev, "full.shop.t", 1)
    });
    db.sql("shop", "INSERT INTO t VALUES (2, 'two')");
    wait_for(
        "a change streamed over TLS",
        Duration::from_secs(60),
        || has_id(&dev, "full.shop.t", 2),
    );
    drop(verified);

    // Unverified: encrypted without a CA.
    let required = run(
        "required",
        "req",
        &format!("{base}?ssl-mode=REQUIRED"),
        "4302",
    );
    wait_for(
        "the copy over unverified TLS",
        Duration::from_secs(60),
        || has_id(&dev, "req.shop.t", 2),
    );
    drop(required);

    // A user whose only credential is a client certificate.
    let x509 = run(
        "client-cert",
        "cert",
        &format!(
            "mysql://x509@127.0.0.1:{}/shop?ssl-ca={ca}&ssl-cert={}&ssl-key={}",
            db.port(),
            path(certs.path(), "client.crt"),
            path(certs.path(), "client.key")
        ),
        "4304",
    );
    wait_for(
        "the copy by client certificate",
        Duration::from_secs(60),
        || has_id(&dev, "cert.shop.t", 2),
    );
    drop(x509);

    // A CA that did not sign the server's certificate: refused, one line, exit 1.
    let other = path(certs.path(), "other-ca.crt");
    let (code, line) = run(
        "wrong-ca",
        "wrong",
        &format!("{base}?ssl-mode=VERIFY_CA&ssl-ca={other}"),
        "4303",
    )
    .exit();
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.contains("ssl-mode") && line.contains("certificate"),
        "{line}"
    );
    dev.stop();
}
