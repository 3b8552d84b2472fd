//! librdkafka's own integration suite against a `sluice dev --brokers 3`: the CI subset
//! of tests known to pass, in both group protocols (classic and KIP-848), through
//! scripts/librdkafka-suite.sh. librdkafka 2.12.1 comes from the `rdkafka-sys` crate on
//! crates.io and is built once under target/librdkafka-suite/ (scripts/test.sh builds it
//! before the tests run; this test builds it when missing). The whole suite, and which
//! tests fail or are skipped and why: docs/kafka-compatibility.md.

use std::path::Path;
use std::process::Command;

#[test]
fn librdkafka_suite_ci_subset_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(root.join("scripts/librdkafka-suite.sh"))
        .arg("ci")
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .env("LIBRDKAFKA_SUITE_OUT", out_dir.path())
        .output()
        .expect("run scripts/librdkafka-suite.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each failed test's log, for the CI output.
    let mut logs = String::new();
    for protocol in ["classic", "consumer"] {
        let results = out_dir.path().join(format!("results-{protocol}.tsv"));
        for line in std::fs::read_to_string(&results)
            .unwrap_or_default()
            .lines()
        {
            let mut cols = line.split('\t');
            let (Some(name), Some("FAILED")) = (cols.next(), cols.next()) else {
                continue;
            };
            let n = &name[..4.min(name.len())];
            let log = out_dir.path().join(format!("logs/{protocol}/{n}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            logs.push_str(&format!(
                "\n--- {protocol} {name} (last lines of its log) ---\n"
            ));
            for l in tail.into_iter().rev() {
                logs.push_str(l);
                logs.push('\n');
            }
        }
    }
    assert!(
        out.status.success(),
        "librdkafka's suite failed:\n{stdout}\n{stderr}{logs}"
    );
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("librdkafka: "))
        .unwrap_or_default();
    assert!(
        summary.contains(" passed, 0 failed") && !summary.starts_with("librdkafka: 0 passed"),
        "{stdout}"
    );
}
