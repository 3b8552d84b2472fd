//! The Java client harness (tests/kafka_java, a Maven project that `scripts/test.sh`
//! builds into target/kafka-java/): a command running one of its classes, and a flow run
//! to its JSON answer.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where scripts/test.sh puts the harness: the jar and its dependencies in lib/.
pub fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-java")
}

/// `java -cp … CLASS ARGS…`.
pub fn command(class: &str, args: &[&str]) -> Command {
    let dir = harness();
    let jar = dir.join("sluice-kafka-java.jar");
    assert!(
        jar.exists() && dir.join("lib").is_dir(),
        "{} is missing: run scripts/test.sh (it builds tests/kafka_java with Maven)",
        jar.display()
    );
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}:{}/lib/*", jar.display(), dir.display()))
        .arg(class)
        .args(args);
    cmd
}

/// Runs one flow of `class`; its JSON answer, or a panic with the client's log.
pub fn flow(class: &str, args: &[&str]) -> Value {
    let out = command(class, args)
        .output()
        .expect("java (scripts/test.sh needs a JDK 17)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{class} {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}
