//! What the CDC tests share: a connector process and Tables over its topics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sluice_client::{ClientConfig, TableConfig, TableSet};

use super::{Dev, ExitedServer, BIN};

/// A running connector (`sluice ARGS`), killed (kill -9) on drop; stderr appended to
/// `connector.log` in the given directory (a restarted connector adds to the same file).
/// `CONNECTOR_LOG` sets its `RUST_LOG` (default `info`).
pub struct Connector {
    child: Child,
    log: PathBuf,
}

impl Connector {
    pub fn start(dir: &Path, args: &[&str]) -> Connector {
        Connector::start_logged(dir, "connector.log", args)
    }

    /// The same, logging to `dir/log_name` (several connectors in one test).
    pub fn start_logged(dir: &Path, log_name: &str, args: &[&str]) -> Connector {
        let log = dir.join(log_name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CONNECTOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Connector { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9, and waits for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A set of Tables over `topics`, ready.
pub fn open_set(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    topics: &[String],
    config: TableConfig,
) -> TableSet {
    let set = rt
        .block_on(TableSet::open(
            &ClientConfig::new(bootstrap),
            topics,
            config,
        ))
        .unwrap();
    rt.block_on(set.ready()).unwrap();
    set
}

/// Every record `sluice consume` prints of `topic` (heartbeats hidden), as JSON.
pub fn consumed(dev: &Dev, topic: &str) -> Vec<serde_json::Value> {
    dev.ok(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--output",
            "json",
        ],
        "",
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("a JSON line"))
    .collect()
}

/// A connector run (`sluice ARGS`) that must exit 1 within a minute; its last line.
pub fn refused(args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.args(args);
    let run = ExitedServer::run(c, std::time::Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    run.last_line().to_string()
}
