//! Python client flows (tests/kafka_clients.py, tests/kafka_python_clients.py): run
//! with `.venv-tools/bin/python3` (a virtualenv scripts/test.sh makes) or the system
//! python3 with `.venv-tools` on its path (its fallback without python3-venv). A flow
//! prints one JSON line and exits 0, or says why on stderr and exits 1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> (PathBuf, Option<PathBuf>) {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools");
    let venv = tools.join("bin/python3");
    if venv.exists() {
        (venv, None)
    } else {
        (PathBuf::from("python3"), Some(tools))
    }
}

/// Runs `script` (a path under the repository) with `args`; its JSON answer, or a panic
/// with its stderr. `module` is the client library it imports, named when missing.
pub fn flow(script: &str, module: &str, args: &[&str]) -> serde_json::Value {
    let (py, path) = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut cmd = Command::new(&py);
    cmd.arg(&script).args(args);
    if let Some(p) = path {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.output().expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(&format!("No module named '{module}'")),
        "{module} is not installed: run scripts/test.sh (it installs it into .venv-tools/)"
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed: {stderr}",
        script.display()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
