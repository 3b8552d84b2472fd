//! A `sluice cdc ...` connector process for tests: its stderr goes to a file the test
//! reads (`log`), and it is killed (kill -9) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::BIN;

pub struct Connector {
    child: Child,
    log: PathBuf,
}

impl Connector {
    /// Starts `sluice ARGS` with `RUST_LOG=info`, its stderr appended to
    /// `dir/connector.log` (a restarted connector adds to the same file).
    pub fn start(dir: &Path, args: &[&str]) -> Connector {
        let log = dir.join("connector.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CONNECTOR_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Connector { child, log }
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
