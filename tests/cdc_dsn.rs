//! Where `sluice cdc postgres` takes its connection string from — `SLUICE_CDC_DSN` and
//! `--dsn-file` keep a password out of `ps` and shell history — and that the password
//! never shows in what the connector prints, on success or on failure.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::db::Postgres;
use common::{poll_until, wait_for, Dev, BIN};

const PASSWORD: &str = "hunter2-not-shown";

/// A `sluice cdc postgres` run, killed when dropped (a failing test leaves none behind).
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

/// `sluice cdc postgres ARGS` with `SLUICE_CDC_DSN` set to `env_dsn` (or unset); its
/// stderr in a file of `dir`.
fn spawn(dir: &Path, name: &str, args: &[&str], env_dsn: Option<&str>) -> Run {
    let log = dir.join(format!("{name}.log"));
    let mut c = Command::new(BIN);
    c.args(["cdc", "postgres"])
        .args(args)
        .env_remove("SLUICE_CDC_DSN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap());
    if let Some(d) = env_dsn {
        c.env("SLUICE_CDC_DSN", d);
    }
    Run {
        child: c.spawn().unwrap(),
        log,
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn the_dsn_comes_from_the_environment_or_a_file_and_its_password_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one');",
    );
    let dev = Dev::start(dir.path());
    // The harness's server trusts loopback: the password is carried, not checked.
    let dsn = pg.dsn("app").replacen('@', &format!(":{PASSWORD}@"), 1);
    let common = [
        "--bootstrap",
        &dev.addr,
        "--tables",
        "public.t",
        "--topic-prefix",
        "sec",
    ];
    // (The topic appears once the connector made it.) Heartbeats arrive all the time and
    // are left out: the idle limit still ends the command, and no line is one.
    let has_id = |id: u32| {
        let out = dev.cli(
            &[
                "consume",
                "sec.public.t",
                "--from-beginning",
                "--timeout-ms",
                "700",
            ],
            "",
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains("\"heartbeat\""), "{text}");
        text.contains(&format!("\"id\":{id}")).then_some(())
    };

    // From the environment.
    let env = spawn(dir.path(), "env", &common, Some(&dsn));
    wait_for(
        "the copy from SLUICE_CDC_DSN",
        Duration::from_secs(60),
        || has_id(1),
    );
    drop(env);

    // From a file (its first line); the flag wins over the environment.
    let file = dir.path().join("dsn");
    std::fs::write(&file, format!("{dsn}\n# not read\n")).unwrap();
    let mut args = common.to_vec();
    args.extend(["--dsn-file", file.to_str().unwrap()]);
    let from_file = spawn(
        dir.path(),
        "file",
        &args,
        Some("postgres://nobody@127.0.0.1:1/x"),
    );
    pg.psql("app", "INSERT INTO t VALUES (2, 'two')");
    wait_for(
        "the change through --dsn-file",
        Duration::from_secs(60),
        || has_id(2),
    );
    drop(from_file);
    let shown = dev.ok(
        &[
            "consume",
            "sec.public.t",
            "--from-beginning",
            "--heartbeats",
            "--exit-at-end",
        ],
        "",
    );
    assert!(shown.contains("\"heartbeat\":true"), "asked for: {shown}");

    // None: one line naming the three ways, exit 1.
    let mut none = spawn(dir.path(), "none", &common, None);
    let status = poll_until(Duration::from_secs(30), || none.child.try_wait().unwrap())
        .expect("exits without a connection string");
    assert_eq!(status.code(), Some(1));
    let none = read(&none.log);
    for want in ["--dsn", "--dsn-file", "SLUICE_CDC_DSN"] {
        assert!(none.contains(want), "{none}");
    }

    // A server that is not there: the error names the place, not the password.
    let closed = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/app");
    let mut args = common.to_vec();
    args.extend(["--dsn", &closed]);
    let mut closed = spawn(dir.path(), "closed", &args, None);
    poll_until(Duration::from_secs(30), || closed.child.try_wait().unwrap());
    drop(closed);
    let closed_text = read(&dir.path().join("closed.log"));
    assert!(
        closed_text.contains("postgres://postgres:***@127.0.0.1:1/app"),
        "it names where, the password hidden: {closed_text}"
    );

    for (name, text) in [
        ("env", read(&dir.path().join("env.log"))),
        ("file", read(&dir.path().join("file.log"))),
        ("closed", closed_text),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the {name} run printed the password: {text}"
        );
    }
    dev.stop();
}
