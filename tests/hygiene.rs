//! Servers that fail fast and say why (issue 9): a duplicate broker id is refused while
//! its holder is alive, unusable directories stop a server at start with one line, an
//! unreachable controller is named in client errors, and `sluice dev` restarted with
//! fewer brokers says which partitions are offline. Every wait has a deadline.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
use common::{free_port, wait_for, ExitedServer, BIN};

/// The brokers `describe cluster` lists alive, as (id, address).
fn alive_brokers(
    rt: &tokio::runtime::Runtime,
    admin: &sluice_client::Admin,
) -> Option<Vec<(u32, String)>> {
    let d = rt.block_on(admin.describe_cluster()).ok()?;
    Some(
        d.brokers
            .into_iter()
            .filter(|b| b.alive)
            .map(|b| (b.id, b.addr))
            .collect(),
    )
}

fn broker_command(id: u32, addr: &str, controller: &str, data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["broker", "--id", &id.to_string(), "--listen", addr])
        .args(["--controller", controller, "--data-dir"])
        .arg(data_dir);
    c
}

/// A second broker with an id that a live broker holds is refused with
/// DUPLICATE_BROKER_REGISTRATION and exits non-zero with one line naming it; the first
/// keeps its registration. A broker restarted after kill -9 on another port still
/// registers once the dead session expires.
#[test]
fn duplicate_broker_id_is_refused_while_the_first_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 1);
    let (rt, _config, admin) = cluster.client();
    let first = cluster.brokers[0].0.clone();
    assert_eq!(
        alive_brokers(&rt, &admin).unwrap(),
        vec![(1, first.clone())]
    );

    let second_addr = format!("127.0.0.1:{}", free_port());
    let second = ExitedServer::run(
        broker_command(
            1,
            &second_addr,
            &cluster.controller_addr,
            &dir.path().join("dup"),
        ),
        Duration::from_secs(20),
    );
    assert!(
        !second.status.success(),
        "the duplicate exited {}",
        second.status
    );
    let line = second.last_line();
    assert!(
        line.starts_with("error: ") && line.contains("DUPLICATE_BROKER_REGISTRATION"),
        "{line}"
    );
    assert!(line.contains(&first), "names the live holder: {line}");
    // The first keeps its registration: listed alive at its address, and it serves a
    // new partition (the controller pushes to the registered broker, at its epoch).
    assert_eq!(
        alive_brokers(&rt, &admin).unwrap(),
        vec![(1, first.clone())]
    );
    rt.block_on(admin.create_topic("after-duplicate", 1, 1, Default::default()))
        .unwrap();
    let d = rt
        .block_on(admin.describe_topic("after-duplicate"))
        .unwrap();
    assert_eq!(d.partitions[0].leader, Some(1));
    assert_eq!(
        d.partitions[0].high_watermark,
        Some(0),
        "served by broker 1"
    );

    // kill -9, then a restart on another port: refused only until the dead session
    // expires, then registered without help.
    cluster.kill9(0);
    let restarted = format!("127.0.0.1:{}", free_port());
    cluster.brokers[0].0 = restarted.clone();
    cluster.start_broker(0);
    // The only broker moved: bootstrap from its new address.
    let admin = sluice_client::Admin::new(&sluice_client::ClientConfig::new(&restarted));
    wait_for(
        "the restarted broker registered",
        Duration::from_secs(15),
        || alive_brokers(&rt, &admin).filter(|b| b == &vec![(1, restarted.clone())]),
    );
    assert!(
        cluster.brokers[0]
            .1
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the restarted broker kept running"
    );
    cluster.stop_all();
}

/// `chattr +i` on a directory for the life of the guard (root and e2fsprogs needed, as
/// for the controller's failed-write test); cleared on drop so the temp dir can go.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chattr +i failed (needs root and e2fsprogs)");
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// The process failed at start with exactly one line on stderr, naming `what`.
fn assert_one_line_failure(out: &ExitedServer, what: &str) {
    assert!(
        !out.status.success(),
        "exited {}: {}",
        out.status,
        out.stderr
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{}", out.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(what),
        "{}",
        lines[0]
    );
    assert!(
        !lines[0].contains('\u{1b}'),
        "no terminal escapes: {}",
        lines[0]
    );
}

/// A broker or controller whose directory cannot be created or written exits non-zero
/// at start with one line, instead of serving and logging the failure forever.
#[test]
fn servers_on_unusable_directories_exit_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let controller = format!("127.0.0.1:{}", free_port());
    let limit = Duration::from_secs(10);
    let listen = || format!("127.0.0.1:{}", free_port());

    let out = ExitedServer::run(
        broker_command(1, &listen(), &controller, &file.join("data")),
        limit,
    );
    assert_one_line_failure(&out, "a-file/data");

    // A directory a broker used before (its lock file is there) that became read-only.
    let used = dir.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join(".lock"), "").unwrap();
    let guard = Immutable::set(&used);
    let out = ExitedServer::run(broker_command(1, &listen(), &controller, &used), limit);
    drop(guard);
    assert_one_line_failure(&out, "not writable");

    let controller_command = |store: String| {
        let mut c = Command::new(BIN);
        c.args([
            "controller",
            "--id",
            "1",
            "--listen",
            &listen(),
            "--store",
            &store,
        ]);
        c
    };
    let spec = format!("embedded:{}", file.join("store").display());
    let out = ExitedServer::run(controller_command(spec), limit);
    assert_one_line_failure(&out, "a-file/store");

    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let guard = Immutable::set(&store);
    let spec = format!("embedded:{}", store.display());
    let out = ExitedServer::run(controller_command(spec), limit);
    drop(guard);
    assert_one_line_failure(&out, "cannot write");
}

/// A broker whose controller is unreachable: a client's error names the broker, that
/// it is not registered, and why (the controller it cannot reach), not a bare timeout.
#[test]
fn client_errors_name_an_unreachable_controller() {
    let dir = tempfile::tempdir().unwrap();
    let broker = format!("127.0.0.1:{}", free_port());
    let controller = format!("127.0.0.1:{}", free_port());
    let mut child = common::cluster::spawn_quiet(broker_command(
        1,
        &broker,
        &controller,
        &dir.path().join("b"),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = sluice_client::ClientConfig::new(&broker);
    config.api_timeout = Duration::from_secs(3);
    let admin = sluice_client::Admin::new(&config);
    let e = wait_for("the registration failure", Duration::from_secs(20), || {
        let e = rt
            .block_on(admin.list_topics())
            .expect_err("no controller")
            .to_string();
        e.contains("unreachable").then_some(e)
    });
    let _ = child.kill();
    let _ = child.wait();
    for part in [
        &format!("broker 1 at {broker}"),
        "not registered with a controller",
        &format!("controller {controller} unreachable"),
        "BROKER_NOT_AVAILABLE",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
}

/// A `sluice dev` whose stdout and stderr lines are collected; killed on drop.
struct DevRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(bool, String)>,
    /// (stderr?, line) seen so far.
    seen: Vec<(bool, String)>,
}

impl DevRun {
    fn spawn(dir: &Path, brokers: u32, listen: &str) -> DevRun {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args(["dev", "--brokers", &brokers.to_string(), "--listen", listen])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sluice dev");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        for (is_err, stream) in [
            (false, Box::new(out) as Box<dyn std::io::Read + Send>),
            (true, Box::new(err)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut dev = DevRun {
            child,
            lines,
            seen: Vec::new(),
        };
        dev.wait_line("the ready line", |l| l.starts_with("ready"));
        dev
    }

    fn wait_line(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((_, l)) = self.seen.iter().find(|(_, l)| f(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line for {what} within 60 s; seen: {:#?}", self.seen),
            }
        }
    }

    /// The address printed on the stdout line starting with `label`.
    fn addr(&mut self, label: &str) -> String {
        let line = self.wait_line(label, |l| l.trim_start().starts_with(label));
        line.trim_start()[label.len()..].trim().to_string()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_for("sluice dev to stop", Duration::from_secs(30), || {
            self.child.try_wait().unwrap()
        });
        assert!(status.success(), "sluice dev exited {status}");
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice dev` restarted with fewer brokers than its data dir holds says at start which
/// partitions stay offline and why, and none of its listeners takes a port the metadata
/// still gives a broker it did not start.
#[test]
fn dev_restarted_with_fewer_brokers_names_offline_partitions_and_avoids_old_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = DevRun::spawn(dir.path(), 3, "127.0.0.1:0");
    let first = dev.addr("broker 1");
    let old: Vec<String> = ["broker 2", "broker 3"]
        .iter()
        .map(|b| dev.addr(b))
        .collect();
    for create in [
        ["wide", "1", "3"],
        ["spread", "3", "1"], // one partition on each broker
    ] {
        let out = common::run_cli(
            &first,
            &[
                "topic",
                "create",
                create[0],
                "--partitions",
                create[1],
                "--replication-factor",
                create[2],
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dev.stop();

    // Broker 1 where it was: the next ports, where the controller and metrics would
    // go, are brokers 2's and 3's old addresses.
    let mut dev = DevRun::spawn(dir.path(), 1, &first);
    let controller = dev.addr("controller");
    let metrics = dev.addr("metrics");
    for addr in &old {
        assert_ne!(
            &controller, addr,
            "the controller took a fenced broker's address"
        );
        assert!(!metrics.contains(addr.as_str()), "metrics took {addr}");
    }
    let warnings: Vec<String> = dev
        .seen
        .iter()
        .filter(|(err, l)| *err && l.starts_with("warning:"))
        .map(|(_, l)| l.clone())
        .collect();
    let spread = warnings
        .iter()
        .find(|l| l.contains("topic spread"))
        .unwrap_or_else(|| panic!("no offline warning for spread: {warnings:#?}"));
    // Placement starts at a different broker per topic: two of the three partitions
    // are on brokers 2 and 3, whichever they are.
    let listed = spread
        .split("partition(s) ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("");
    assert_eq!(listed.split(',').count(), 2, "{spread}");
    assert!(
        spread.contains("offline") && spread.contains("broker(s) 2,3"),
        "{spread}"
    );
    // `wide` has a replica on broker 1, still in its ISR: dev stops its brokers without
    // controlled shutdown, so the ISR stays whole. Under-replicated, not offline.
    assert!(
        !warnings.iter().any(|l| l.contains("topic wide")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("1 partition(s) under-replicated")),
        "{warnings:#?}"
    );
    dev.stop();
}

/// Operator output: logs carry no terminal escapes when stderr is not a terminal; a
/// standby controller's `/metrics` says it is inactive; records in and out are counted
/// per topic.
#[test]
fn plain_logs_standby_metrics_and_record_counters() {
    let dir = tempfile::tempdir().unwrap();
    // Two controllers on one store: one active, one standby.
    let cluster = Cluster::start_with(dir.path(), 1, 2);
    let (rt, _config, admin) = cluster.client();
    let active = cluster.active_controller(&rt, &admin);
    let standby = cluster.controller_metrics[1 - active].clone().unwrap();
    let scraped = wait_for("the standby's /metrics", Duration::from_secs(10), || {
        common::http_get(&standby, "/metrics")
            .and_then(|s| common::metric(&s, "sluice_controller_active"))
    });
    assert_eq!(scraped, 0.0, "a standby reports sluice_controller_active 0");
    drop(cluster);

    // A dev with RUST_LOG=info and stderr a pipe: plenty of log lines, none coloured.
    let dev_dir = dir.path().join("dev");
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dev_dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let (addr, metrics) = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut metrics) = (None, None);
        for line in lines.by_ref().map_while(Result::ok) {
            let line = line.trim().to_string();
            if let Some(a) = line.strip_prefix("broker 1") {
                addr = Some(a.trim().to_string());
            }
            if let Some(m) = line.strip_prefix("metrics") {
                let m = m.trim().trim_start_matches("http://");
                metrics = Some(m.trim_end_matches("/metrics").to_string());
            }
            if line.starts_with("ready") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        (addr.unwrap(), metrics.unwrap())
    };
    let cli = |args: &[&str], stdin: &str| {
        let out = common::run_cli(&addr, args, stdin);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(
        &[
            "topic",
            "create",
            "counted",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        "",
    );
    cli(&["produce", "counted"], "a\nb\nc\n");
    cli(
        &[
            "consume",
            "counted",
            "--from-beginning",
            "--max-messages",
            "3",
        ],
        "",
    );
    let counter = |name: &str| {
        common::http_get(&metrics, "/metrics").and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name) && l.contains("topic=\"counted\""))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        })
    };
    wait_for(
        "records counted in and out",
        Duration::from_secs(10),
        || {
            (counter("sluice_records_in_total") == Some(3.0)
                && counter("sluice_records_out_total") >= Some(3.0))
            .then_some(())
        },
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("dev to stop", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert!(status.success());
    let logs = logs.join().unwrap();
    assert!(logs.lines().count() > 5, "expected info logs:\n{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in piped logs:\n{logs}"
    );
}
