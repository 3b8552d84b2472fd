//! What the CDC tests share: a connector process and Tables over its topics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sluice_client::{ClientConfig, TableConfig, TableSet};

use super::BIN;

/// A running connector (`sluice ARGS`), killed on drop; stderr to `connector.log` in
/// the given directory.
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
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Connector { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
