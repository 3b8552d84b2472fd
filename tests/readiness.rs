//! Readiness of `sluice dev`: a script that creates a replicated topic the moment the
//! broker port accepts connections, or the moment `ready` is printed, must succeed on
//! every cold start. Before brokers register, a broker answers client requests with a
//! retriable "not ready" that the client library retries (docs/cluster.md). And a
//! `sluice broker` started before its controller keeps trying to register, says so at
//! WARN without flooding the log, and serves once the controller is up.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, run_cli, wait_for, BIN};

/// Cold starts per variant.
const STARTS: usize = 10;

/// A `sluice dev --brokers 3` that has been spawned but not waited on; killed on drop
/// (its data dir is thrown away, so no clean shutdown is needed).
struct ColdDev {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl ColdDev {
    fn spawn(data_dir: &Path) -> ColdDev {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(BIN)
            .args(["dev", "--brokers", "3", "--listen", &addr, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice dev");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ColdDev { child, addr, lines }
    }

    /// Returns as soon as broker 1's port accepts a TCP connection.
    fn wait_for_port(&self) {
        wait_for("broker 1's port to accept", Duration::from_secs(30), || {
            TcpStream::connect(&self.addr).ok().map(|_| ())
        });
    }

    /// Returns once `sluice dev` printed its `ready` line.
    fn wait_for_ready_line(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("sluice dev did not print `ready` within 60 s");
            if line.starts_with("ready") {
                return;
            }
        }
    }

    fn create_rf3_topic(&self, start: usize) {
        let out = run_cli(
            &self.addr,
            &[
                "topic",
                "create",
                "T",
                "--partitions",
                "3",
                "--replication-factor",
                "3",
            ],
            "",
        );
        assert!(
            out.status.success(),
            "cold start {start}: topic create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ColdDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn topic_create_as_soon_as_the_port_opens_succeeds_on_every_cold_start() {
    for start in 0..STARTS {
        let dir = tempfile::tempdir().unwrap();
        let dev = ColdDev::spawn(dir.path());
        dev.wait_for_port();
        dev.create_rf3_topic(start);
    }
}

#[test]
fn topic_create_right_after_ready_succeeds_on_every_cold_start() {
    for start in 0..STARTS {
        let dir = tempfile::tempdir().unwrap();
        let dev = ColdDev::spawn(dir.path());
        dev.wait_for_ready_line();
        dev.create_rf3_topic(start);
    }
}

/// A server process whose stderr lines are collected; killed on drop.
struct Server {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    fn spawn(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            stderr: lines,
        }
    }

    /// Lines logged so far.
    fn lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_broker_started_before_its_controller_warns_rate_limited_and_serves_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let (broker_addr, controller_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let data = dir.path().join("broker-1");
    let broker = Server::spawn(&[
        "broker",
        "--id",
        "1",
        "--listen",
        &broker_addr,
        "--controller",
        &controller_addr,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    wait_for(
        "the broker's port to accept",
        Duration::from_secs(30),
        || TcpStream::connect(&broker_addr).ok().map(|_| ()),
    );
    // Sent while no controller runs: the broker answers "not ready" and the client
    // retries until the controller is up and the broker has registered.
    let create = std::thread::spawn({
        let addr = broker_addr.clone();
        move || -> Output {
            run_cli(
                &addr,
                &[
                    "topic",
                    "create",
                    "T",
                    "--partitions",
                    "1",
                    "--replication-factor",
                    "1",
                ],
                "",
            )
        }
    });
    let mut warned = Vec::new();
    wait_for(
        "a WARN that the controller cannot be reached",
        Duration::from_secs(10),
        || {
            warned.extend(broker.lines());
            warned
                .iter()
                .any(|l| l.contains("WARN") && l.contains("cannot register"))
                .then_some(())
        },
    );
    let store = format!("embedded:{}", dir.path().join("controller").display());
    let _controller = Server::spawn(&[
        "controller",
        "--id",
        "1",
        "--listen",
        &controller_addr,
        "--store",
        &store,
    ]);
    let out = create.join().unwrap();
    assert!(
        out.status.success(),
        "topic create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    warned.extend(broker.lines());
    let warnings = warned
        .iter()
        .filter(|l| l.contains("cannot register"))
        .count();
    // Registration is retried every 200 ms; the WARN comes after 1 s, then at most
    // every 10 s. The controller came up within seconds of the first one.
    assert!(
        warnings <= 2,
        "registration failures are not rate-limited: {warned:#?}"
    );
}
