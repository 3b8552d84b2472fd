//! Readiness of `sluice dev`: a script that creates a replicated topic the moment the
//! broker port accepts connections, or the moment `ready` is printed, must succeed on
//! every cold start. Before brokers register, a broker answers client requests with a
//! retriable "not ready" that the client library retries (docs/cluster.md).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
