//! The CLI contract (DESIGN.md §10) against a real `sluice dev`: round trips, JSON
//! shapes scripts read, restarts that keep data, and every error case exiting non-zero
//! with one line on stderr.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use common::{closed_pipe, json, one_line_error, run_cli, run_cli_bytes, stderr, Dev, BIN};

/// Runs `sluice ARGS` against `dev` with raw bytes on stdin.
fn cli_bytes(dev: &Dev, args: &[&str], stdin: &[u8]) -> Output {
    run_cli_bytes(&dev.addr, args, stdin)
}

#[test]
fn topics_produce_consume_and_json_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=60000",
        ],
        "",
    );
    assert_eq!(
        json(&dev.ok(&["topic", "list", "--output", "json"], "")),
        serde_json::json!(["orders"])
    );

    let input: String = (0..300).map(|i| format!("key-{i}:value-{i}\n")).collect();
    let out = dev.cli(&["produce", "orders", "--key-separator", ":"], &input);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("300 record(s) acknowledged"));

    let consumed = dev.ok(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "300",
            "--print-key",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    let got: BTreeSet<String> = consumed.lines().map(str::to_string).collect();
    let want: BTreeSet<String> = (0..300).map(|i| format!("key-{i}\tvalue-{i}")).collect();
    assert_eq!(got, want);

    let d = json(&dev.ok(&["topic", "describe", "orders", "--output", "json"], ""));
    assert_eq!(d["name"], "orders");
    assert_eq!(d["configs"]["retention.ms"], "60000");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let mut total = 0;
    for p in parts {
        for field in [
            "partition",
            "leader",
            "leader_epoch",
            "replicas",
            "isr",
            "high_watermark",
            "log_end_offset",
            "log_start_offset",
        ] {
            assert!(!p[field].is_null(), "missing {field} in {p}");
        }
        assert_eq!(p["high_watermark"], p["log_end_offset"]);
        total += p["high_watermark"].as_u64().unwrap();
    }
    assert_eq!(total, 300);
    // Keys are spread over partitions by murmur2, as a Kafka client would place them.
    assert!(
        parts
            .iter()
            .filter(|p| p["high_watermark"].as_u64().unwrap() > 0)
            .count()
            >= 2
    );

    let c = json(&dev.ok(&["cluster", "describe", "--output", "json"], ""));
    assert_eq!(c["brokers"][0]["id"], 1);
    assert_eq!(c["brokers"][0]["alive"], true);
    assert!(c["controller"]["epoch"].as_i64().unwrap() >= 1);
    assert!(!c["controller"]["id"].is_null());

    dev.ok(
        &["topic", "alter", "orders", "--config", "retention.ms=1000"],
        "",
    );
    let d = json(&dev.ok(&["topic", "describe", "orders", "--output", "json"], ""));
    assert_eq!(d["configs"]["retention.ms"], "1000");

    // One partition from an offset.
    let p0 = parts[0]["high_watermark"].as_u64().unwrap();
    let tail = dev.ok(
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--offset",
            &(p0 - 1).to_string(),
            "--max-messages",
            "1",
            "--timeout-ms",
            "5000",
        ],
        "",
    );
    assert_eq!(tail.lines().count(), 1);

    // Growing the topic keeps the old partitions and their data.
    dev.ok(&["topic", "alter", "orders", "--partitions", "5"], "");
    let d = json(&dev.ok(&["topic", "describe", "orders", "--output", "json"], ""));
    assert_eq!(d["partitions"].as_array().unwrap().len(), 5);
    assert_eq!(
        d["partitions"][0]["high_watermark"],
        parts[0]["high_watermark"]
    );
    let err = one_line_error(&dev.cli(&["topic", "alter", "orders", "--partitions", "2"], ""));
    assert!(err.contains("partitions"), "{err}");

    dev.ok(&["topic", "delete", "orders"], "");
    let err = one_line_error(&dev.cli(&["topic", "describe", "orders"], ""));
    assert!(err.contains("does not exist"), "{err}");
    dev.stop();
}

#[test]
fn errors_are_one_clear_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        "",
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "topic",
                "create",
                "t",
                "--partitions",
                "1",
                "--replication-factor",
                "1",
            ],
            "already exists",
        ),
        (
            vec![
                "topic",
                "create",
                "bad name",
                "--partitions",
                "1",
                "--replication-factor",
                "1",
            ],
            "invalid topic name",
        ),
        (
            vec![
                "topic",
                "create",
                "z",
                "--partitions",
                "0",
                "--replication-factor",
                "1",
            ],
            "partitions",
        ),
        (
            vec![
                "topic",
                "create",
                "z",
                "--partitions",
                "1",
                "--replication-factor",
                "3",
            ],
            "replication factor",
        ),
        (
            vec![
                "topic",
                "create",
                "z",
                "--partitions",
                "1",
                "--replication-factor",
                "1",
                "--config",
                "retention.ms=soon",
            ],
            "retention.ms",
        ),
        (
            vec![
                "topic",
                "create",
                "z",
                "--partitions",
                "1",
                "--replication-factor",
                "1",
                "--config",
                "no.such=1",
            ],
            "no.such",
        ),
        (
            vec!["topic", "alter", "t", "--config", "cleanup.policy=shred"],
            "cleanup.policy",
        ),
        (vec!["produce", "missing"], "does not exist"),
        (vec!["produce", "t", "--acks", "2"], "--acks"),
        (
            vec!["consume", "missing", "--timeout-ms", "100"],
            "does not exist",
        ),
        (
            vec!["consume", "t", "--partition", "9", "--timeout-ms", "100"],
            "no partition 9",
        ),
        (
            vec!["consume", "missing", "--group", "g", "--timeout-ms", "100"],
            "does not exist",
        ),
    ];
    for (args, needle) in cases {
        let err = one_line_error(&dev.cli(&args, "x\n"));
        assert!(
            err.contains(needle),
            "sluice {args:?}: {err:?} should mention {needle:?}"
        );
    }
    // A bad flag value is refused by the parser, non-zero, naming the flag.
    let out = dev.cli(
        &[
            "topic",
            "create",
            "z",
            "--partitions",
            "many",
            "--replication-factor",
            "1",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partitions"));
    // The broker kept serving through all of it.
    assert_eq!(
        json(&dev.ok(&["topic", "list", "--output", "json"], "")),
        serde_json::json!(["t"])
    );
    dev.stop();

    // Nothing listening.
    let out = run_cli("127.0.0.1:1", &["topic", "list"], "");
    let err = one_line_error(&out);
    assert!(
        err.contains("cannot reach") && err.contains("sluice dev"),
        "{err}"
    );
}

#[test]
fn a_restart_keeps_topics_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "keep",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
        "",
    );
    let input: String = (0..1000).map(|i| format!("{i}\n")).collect();
    dev.ok(&["produce", "keep"], &input);
    dev.stop();
    assert!(
        dir.path().join("broker-1").join(".clean-shutdown").exists(),
        "clean shutdown writes the marker"
    );

    let dev = Dev::start(dir.path());
    let out = dev.ok(
        &[
            "consume",
            "keep",
            "--from-beginning",
            "--max-messages",
            "1000",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    let mut got: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    // Appends continue after the old end.
    dev.ok(&["produce", "keep"], "after\n");
    let d = json(&dev.ok(&["topic", "describe", "keep", "--output", "json"], ""));
    let total: u64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["log_end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1001);
    dev.stop();
}

#[test]
fn partition_reassignment_moves_data_and_deletes_the_old_replica() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "3"]);
    dev.ok(
        &[
            "topic",
            "create",
            "mv",
            "--partitions",
            "1",
            "--replication-factor",
            "2",
        ],
        "",
    );
    let input: String = (0..500).map(|i| format!("{i}\n")).collect();
    dev.ok(&["produce", "mv"], &input);
    let d = json(&dev.ok(&["topic", "describe", "mv", "--output", "json"], ""));
    let old: Vec<u64> = d["partitions"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let spare = (1..=3).find(|b| !old.contains(b)).unwrap();
    // Keep the second old replica, replace the first (the leader) with the spare broker.
    let target = [spare, old[1]];
    let list = format!("{},{}", target[0], target[1]);
    dev.ok(
        &[
            "partition",
            "reassign",
            "--topic",
            "mv",
            "--partition",
            "0",
            "--replicas",
            &list,
        ],
        "",
    );
    common::wait_for(
        "the reassignment to complete",
        std::time::Duration::from_secs(60),
        || {
            let d = json(&dev.ok(&["topic", "describe", "mv", "--output", "json"], ""));
            let p = &d["partitions"][0];
            let replicas: Vec<u64> = p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let isr = p["isr"].as_array().unwrap().len();
            (replicas == target && isr == 2 && p["high_watermark"] == 500).then_some(())
        },
    );
    let out = dev.ok(
        &[
            "consume",
            "mv",
            "--from-beginning",
            "--max-messages",
            "500",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 500);
    let removed_dir = dir.path().join(format!("broker-{}", old[0])).join("mv-0");
    common::wait_for(
        "the old replica's files to be deleted",
        std::time::Duration::from_secs(30),
        || (!removed_dir.exists()).then_some(()),
    );
    dev.stop();
}

#[test]
fn non_utf8_records_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    for t in ["bytes", "keyed"] {
        dev.ok(
            &[
                "topic",
                "create",
                t,
                "--partitions",
                "1",
                "--replication-factor",
                "1",
            ],
            "",
        );
    }
    let records: Vec<&[u8]> = vec![
        b"plain ascii",
        b"caf\xe9 cr\xe8me br\xfbl\xe9e",            // Latin-1
        b"\xff\xfe\x00\x01 binary \x7f\x80\xc3\x28", // no UTF-8 anywhere
        b"",                                         // an empty line is an empty record
        b"carriage return kept\r",
        b"last line without a newline \xe9",
    ];
    let out = cli_bytes(&dev, &["produce", "bytes"], &records.join(&b'\n'));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("6 record(s) acknowledged"),
        "{}",
        stderr(&out)
    );
    let consume = |topic: &str, extra: &[&str]| {
        let mut args = vec![
            "consume",
            topic,
            "--from-beginning",
            "--timeout-ms",
            "10000",
        ];
        args.extend_from_slice(extra);
        let out = cli_bytes(&dev, &args, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let want: Vec<u8> = records
        .iter()
        .flat_map(|r| r.iter().copied().chain([b'\n']))
        .collect();
    let got = consume("bytes", &["--max-messages", "6"]);
    assert_eq!(
        got.escape_ascii().to_string(),
        want.escape_ascii().to_string()
    );

    // JSON carries bytes that are not UTF-8 as base64, marked beside them.
    let got = consume("bytes", &["--max-messages", "2", "--output", "json"]);
    let lines: Vec<serde_json::Value> = got
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines[0]["value"], "plain ascii");
    assert!(lines[0].get("encoding").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["encoding"], "base64");
    assert_eq!(lines[1]["value"], "Y2Fm6SBjcuhtZSBicvts6WU=");

    // The key separator splits bytes too; a line without it has no key.
    let input = b"k\xe91:v\xff1\nk2:v:2\xe9\nno separator \xfe\n";
    let out = cli_bytes(&dev, &["produce", "keyed", "--key-separator", ":"], input);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("3 record(s) acknowledged"));
    let got = consume("keyed", &["--max-messages", "3", "--print-key"]);
    let want = b"k\xe91\tv\xff1\nk2\tv:2\xe9\n\tno separator \xfe\n";
    assert_eq!(
        got.escape_ascii().to_string(),
        want.escape_ascii().to_string()
    );
    dev.stop();
}

/// Runs a server command (`dev`, `broker`) that is expected to exit by itself; one
/// still running after `limit` gets SIGTERM. Returns its exit status and stderr.
fn run_server(args: &[&str], limit: std::time::Duration) -> (std::process::ExitStatus, String) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("spawn sluice");
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: plain kill(2) on our child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(err.path()).unwrap())
}

/// `sluice dev` with INFO logs (no colours) in a file, for tests that read what it
/// logged at start; returns the child, broker 1's address and the log path.
fn start_dev_logged(
    data_dir: &std::path::Path,
    log: &std::path::Path,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn sluice dev");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for line in stdout.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("broker 1") {
            addr = Some(rest.trim().to_string());
        }
        if line.starts_with("ready") {
            // Keep reading: this test is not about a closed stdout.
            std::thread::spawn(move || stdout.for_each(drop));
            return (child, addr.expect("broker 1 address printed"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "sluice dev exited before ready: {}",
        std::fs::read_to_string(log).unwrap()
    );
}

#[test]
fn data_dir_lock_refuses_a_second_process_and_a_kill9_stays_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "locked",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        "",
    );
    dev.ok(&["produce", "locked"], "a\nb\nc\n");
    let pid = dev.child.id();
    let broker_dir = dir.path().join("broker-1");
    let checkpoint = broker_dir.join("recovery-point-offset-checkpoint");
    let checkpoint_before = std::fs::read(&checkpoint).ok();
    let data_dir = dir.path().to_str().unwrap();
    let limit = std::time::Duration::from_secs(20);

    let (status, err) = run_server(
        &["dev", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        limit,
    );
    assert_eq!(status.code(), Some(1), "second dev: {err}");
    let want = format!("error: data dir {data_dir} is in use by another sluice (pid {pid})");
    assert!(err.contains(&want), "{err:?} should say {want:?}");

    let broker_path = broker_dir.to_str().unwrap();
    let (status, err) = run_server(
        &[
            "broker",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--controller",
            "127.0.0.1:1",
            "--data-dir",
            broker_path,
        ],
        limit,
    );
    assert_eq!(status.code(), Some(1), "second broker: {err}");
    let want = format!("error: data dir {broker_path} is in use by another sluice (pid {pid})");
    assert!(err.contains(&want), "{err:?} should say {want:?}");

    // Neither touched the live directory.
    assert!(!broker_dir.join(".clean-shutdown").exists());
    assert_eq!(std::fs::read(&checkpoint).ok(), checkpoint_before);

    // The first process dies; its next start recovers a crash, not a clean shutdown.
    dev.kill9();
    let log = dir.path().join("restart.log");
    let (mut child, addr) = start_dev_logged(dir.path(), &log);
    let text = std::fs::read_to_string(&log).unwrap();
    let opened = text
        .lines()
        .find(|l| l.contains("opened data directory") && l.contains(broker_path))
        .unwrap_or_else(|| panic!("no 'opened data directory' line for broker-1 in {text}"));
    assert!(opened.contains("clean=false"), "{opened}");
    let out = run_cli(
        &addr,
        &[
            "consume",
            "locked",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\nc\n");
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// Whether `pid` has a handler for SIGINT (tokio installs it when `sluice dev` starts
/// waiting for Ctrl-C), from the `SigCgt` mask in /proc.
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

#[test]
fn dev_stops_cleanly_on_ctrl_c_after_its_stdout_pipe_closed() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let addr = format!("127.0.0.1:{}", common::free_port());
    // `sluice dev | head -1`: the reader goes away after the first line.
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn sluice dev");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("sluice dev"), "{first}");
    common::wait_for(
        "sluice dev to wait for Ctrl-C",
        std::time::Duration::from_secs(60),
        || {
            if let Some(s) = child.try_wait().unwrap() {
                panic!(
                    "sluice dev exited ({s}) with its stdout closed: {}",
                    std::fs::read_to_string(&err).unwrap()
                );
            }
            catches_sigint(child.id()).then_some(())
        },
    );
    assert!(run_cli(&addr, &["topic", "list"], "").status.success());
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = common::wait_for(
        "sluice dev to exit",
        std::time::Duration::from_secs(30),
        || child.try_wait().unwrap(),
    );
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(dir
        .path()
        .join("data")
        .join("broker-1")
        .join(".clean-shutdown")
        .exists());
}

#[test]
fn client_commands_into_a_closed_pipe_exit_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "piped",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        "",
    );
    dev.ok(&["produce", "piped"], "a\nb\nc\n");
    for args in [
        vec!["topic", "list"],
        vec!["topic", "describe", "piped"],
        vec!["topic", "describe", "piped", "--output", "json"],
        vec!["cluster", "describe"],
        vec![
            "consume",
            "piped",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "10000",
        ],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env("SLUICE_BOOTSTRAP", &dev.addr)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run sluice");
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "sluice {args:?}: {err}");
        assert!(
            out.status.success(),
            "sluice {args:?}: {}: {err}",
            out.status
        );
        assert!(err.is_empty(), "sluice {args:?}: {err}");
    }
    dev.stop();
}

#[test]
fn acks_all_below_min_insync_fails_within_the_timeout_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    dev.ok(
        &[
            "topic",
            "create",
            "thin",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
            "--config",
            "min.insync.replicas=2",
        ],
        "",
    );
    let started = std::time::Instant::now();
    let out = dev.cli(&["produce", "thin", "--timeout-ms", "2000"], "x\ny\n");
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "took {took:?}: {err}"
    );
    assert!(err.contains("0 record(s) acknowledged"), "{err}");
    assert!(err.contains("2 record(s) not acknowledged"), "{err}");
    assert!(err.contains("NOT_ENOUGH_REPLICAS"), "{err}");
    // acks=1 does not need the ISR: the same topic takes the records.
    dev.ok(
        &["produce", "thin", "--acks", "1", "--timeout-ms", "2000"],
        "z\n",
    );
    dev.stop();
}

#[test]
fn a_compacted_topic_is_compacted_under_dev_and_describe_shows_its_dirty_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--log-cleaner-backoff-ms", "100"]);
    // "plain" gets the same records without compaction: the size to compare with.
    dev.ok(
        &[
            "topic",
            "create",
            "plain",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
            "--config",
            "segment.bytes=2048",
        ],
        "",
    );
    dev.ok(
        &[
            "topic",
            "create",
            "users",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
            "--config",
            "cleanup.policy=compact",
            "--config",
            "segment.bytes=2048",
            "--config",
            "min.cleanable.dirty.ratio=0.01",
        ],
        "",
    );
    // 400 updates over 5 keys in small batches (so segments roll), then a tombstone
    // for u4 (kept: delete.retention.ms is a day).
    for run in 0..4 {
        let mut input: String = (run * 100..run * 100 + 100)
            .map(|i| format!("u{}:v{i}\n", i % 5))
            .collect();
        if run == 3 {
            input.push_str("u4:\n");
        }
        for topic in ["users", "plain"] {
            let args = [
                "produce",
                topic,
                "--key-separator",
                ":",
                "--null-value-if-empty",
            ];
            let small = ["--batch-size", "200", "--linger-ms", "0"];
            dev.ok(&[&args[..], &small[..]].concat(), &input);
        }
    }
    let describe = |t: &str| json(&dev.ok(&["topic", "describe", t, "--output", "json"], ""));
    let plain = describe("plain")["partitions"][0]["size_bytes"]
        .as_u64()
        .unwrap();
    assert!(describe("plain")["partitions"][0]["dirty_ratio"].is_null());
    let after = common::wait_for(
        "the cleaner to compact users",
        std::time::Duration::from_secs(60),
        || {
            let p = describe("users")["partitions"][0].clone();
            let size = p["size_bytes"].as_u64().unwrap();
            (size * 2 < plain && p["dirty_ratio"].as_f64().is_some_and(|r| r < 0.5)).then_some(p)
        },
    );
    assert!(after["dirty_ratio"].is_number(), "{after}");
    let text = dev.ok(&["topic", "describe", "users"], "");
    assert!(text.contains("dirty ratio"), "{text}");
    // The latest value of every key is still there, offsets unchanged.
    let out = dev.ok(
        &[
            "consume",
            "users",
            "--from-beginning",
            "--print-key",
            "--timeout-ms",
            "3000",
        ],
        "",
    );
    let mut latest = std::collections::BTreeMap::new();
    for line in out.lines() {
        let (k, v) = line.split_once('\t').unwrap();
        latest.insert(k.to_string(), v.to_string());
    }
    let want: std::collections::BTreeMap<String, String> = (395..399)
        .map(|i| (format!("u{}", i % 5), format!("v{i}")))
        .chain([("u4".to_string(), String::new())])
        .collect();
    assert_eq!(latest, want);
    // The active segment is never compacted. Make every append roll (segment.ms=1),
    // append one more record: the old active segment is sealed and compacted too, and
    // exactly the latest record of each key is left, at its original offset.
    dev.ok(&["topic", "alter", "users", "--config", "segment.ms=1"], "");
    dev.ok(&["produce", "users", "--key-separator", ":"], "z:end\n");
    let want_offsets: Vec<String> = [
        (395, "u0", "v395"),
        (396, "u1", "v396"),
        (397, "u2", "v397"),
        (398, "u3", "v398"),
        (400, "u4", ""),
        (401, "z", "end"),
    ]
    .iter()
    .map(|(o, k, v)| format!("{o} {k} {v}"))
    .collect();
    common::wait_for(
        "the rolled segment to be compacted",
        std::time::Duration::from_secs(60),
        || {
            let out = dev.ok(
                &[
                    "consume",
                    "users",
                    "--from-beginning",
                    "-e",
                    "-f",
                    "%o %k %s\\n",
                ],
                "",
            );
            let got: Vec<String> = out.lines().map(str::to_string).collect();
            (got == want_offsets).then_some(())
        },
    );
    // A keyless record is refused on a compacted topic, naming why.
    let out = dev.cli(&["produce", "users"], "no key\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("[INVALID_RECORD (87)]") && err.contains("has no key"),
        "{err}"
    );
    dev.stop();
}

/// `topic create --replica-assignment` (kafka-topics' syntax) places each partition's
/// replicas as given, the first leading; `topic alter --partitions --replica-assignment`
/// places the new ones; a malformed or refused assignment is one line and exit 1.
#[test]
fn replica_assignment_places_partitions_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "3"]);
    dev.ok(
        &["topic", "create", "ra", "--replica-assignment", "3:1,2:3"],
        "",
    );
    let placed = |dev: &Dev| -> Vec<(Vec<u64>, u64)> {
        let d = json(&dev.ok(&["topic", "describe", "ra", "--output", "json"], ""));
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let replicas = p["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                (replicas, p["leader"].as_u64().unwrap_or(0))
            })
            .collect()
    };
    common::wait_for("leaders", std::time::Duration::from_secs(30), || {
        let p = placed(&dev);
        p.iter().all(|(_, l)| *l != 0).then_some(())
    });
    assert_eq!(placed(&dev), vec![(vec![3, 1], 3), (vec![2, 3], 2)]);
    dev.ok(
        &[
            "topic",
            "alter",
            "ra",
            "--partitions",
            "3",
            "--replica-assignment",
            "1:2",
        ],
        "",
    );
    common::wait_for(
        "the new partition",
        std::time::Duration::from_secs(30),
        || {
            let p = placed(&dev);
            (p.len() == 3 && p[2] == (vec![1, 2], 1)).then_some(())
        },
    );
    for (args, want) in [
        (
            vec!["topic", "create", "rb", "--replica-assignment", "1:x"],
            "not a broker id",
        ),
        (
            vec!["topic", "create", "rb", "--replica-assignment", "1:1"],
            "named twice",
        ),
        (
            vec!["topic", "create", "rb", "--replica-assignment", "1,2:3"],
            "needs 1",
        ),
        (
            vec!["topic", "create", "rb", "--replica-assignment", "9"],
            "not registered",
        ),
    ] {
        let out = dev.cli(&args, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}
