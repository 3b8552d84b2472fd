//! The CLI contract (DESIGN.md §10) against a real `sluice dev`: round trips, JSON
//! shapes scripts read, restarts that keep data, and every error case exiting non-zero
//! with one line on stderr.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{json, run_cli, Dev, BIN};

/// Runs `sluice ARGS` against `dev` with raw bytes on stdin (records are bytes, not text).
fn cli_bytes(dev: &Dev, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut input = child.stdin.take().expect("piped");
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("sluice output");
    writer.join().expect("stdin writer");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn one_line_error(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "error must be one line: {err:?}");
    assert!(err.starts_with("error:"), "{err}");
    err
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
        (vec!["consume", "t", "--group", "g"], "consumer groups"),
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

/// A pipe whose read end is already closed: every write to it fails with EPIPE, as
/// stdout does under `| head -1` once head has exited.
fn closed_pipe() -> std::fs::File {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors; we own them from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closing the read end we own and never use again.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is a fresh descriptor nothing else owns.
    unsafe { std::fs::File::from_raw_fd(fds[1]) }
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

/// Runs `sluice ARGS` against `dev` with stdin closed, failing the test if it has not
/// exited within `limit` (commands that must stop by themselves, like `consume -e`).
fn cli_within(dev: &Dev, args: &[&str], limit: std::time::Duration) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("sluice output"),
        Err(_) => {
            // SAFETY: plain kill(2) on our child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("sluice {args:?} still running after {limit:?}");
        }
    }
}

/// `cli_within` with 30 s, asserting success; stdout as (lossless) text.
fn ok_within(dev: &Dev, args: &[&str]) -> String {
    let out = cli_within(dev, args, std::time::Duration::from_secs(30));
    assert!(out.status.success(), "sluice {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn create_topic(dev: &Dev, name: &str, partitions: &str) {
    dev.ok(&["topic", "create", name, "-p", partitions, "-r", "1"], "");
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn consume_exit_at_end_and_offsets_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_topic(&dev, "k", "3");
    // Partition 0 holds a0..a4, partition 1 b0..b2, partition 2 nothing.
    let a: String = (0..5).map(|i| format!("a{i}\n")).collect();
    dev.ok(&["produce", "k", "-p", "0"], &a);
    dev.ok(&["produce", "k", "--partition", "1"], "b0\nb1\nb2\n");
    let f = "%p:%o:%s\\n";

    // -e from the beginning: every record of every partition, then exit by itself.
    let all = ok_within(&dev, &["consume", "k", "-e", "-o", "beginning", "-f", f]);
    let want = [
        "0:0:a0", "0:1:a1", "0:2:a2", "0:3:a3", "0:4:a4", "1:0:b0", "1:1:b1", "1:2:b2",
    ];
    assert_eq!(sorted_lines(&all), want);
    assert_eq!(
        sorted_lines(&ok_within(
            &dev,
            &["consume", "k", "--exit-at-end", "--from-beginning", "-f", f]
        )),
        want
    );
    // -e from the end (the default start) prints nothing and exits.
    assert_eq!(ok_within(&dev, &["consume", "k", "-e"]), "");

    // -N: N before the end of every partition read; more than a partition holds is all of it.
    assert_eq!(
        sorted_lines(&ok_within(
            &dev,
            &["consume", "k", "-e", "-o", "-2", "-f", f]
        )),
        ["0:3:a3", "0:4:a4", "1:1:b1", "1:2:b2"]
    );
    assert_eq!(
        ok_within(
            &dev,
            &["consume", "k", "-e", "-p", "1", "-o", "-10", "-f", f]
        ),
        "1:0:b0\n1:1:b1\n1:2:b2\n"
    );
    // +N: N after the log start; an absolute offset; the end itself is not past it.
    assert_eq!(
        ok_within(
            &dev,
            &["consume", "k", "-e", "-p", "0", "-o", "+3", "-f", f]
        ),
        "0:3:a3\n0:4:a4\n"
    );
    assert_eq!(
        ok_within(
            &dev,
            &["consume", "k", "-e", "-p", "1", "--offset", "2", "-f", f]
        ),
        "1:2:b2\n"
    );
    assert_eq!(
        ok_within(&dev, &["consume", "k", "-e", "-p", "0", "-o", "5"]),
        ""
    );
    // An absolute offset applies to every partition when -p is absent.
    assert_eq!(
        sorted_lines(&ok_within(
            &dev,
            &["consume", "k", "-e", "-o", "0", "-f", f]
        )),
        want
    );

    // Past the end is an error naming the partition, not a silent jump to the end.
    let limit = std::time::Duration::from_secs(30);
    let err = one_line_error(&cli_within(
        &dev,
        &["consume", "k", "-p", "0", "-o", "6"],
        limit,
    ));
    assert!(err.contains("offset 6 is past the end of k-0"), "{err}");
    assert!(err.contains("high watermark 5"), "{err}");
    let err = one_line_error(&cli_within(&dev, &["consume", "k", "-o", "1"], limit));
    assert!(err.contains("offset 1 is past the end of k-2"), "{err}");
    let err = one_line_error(&cli_within(
        &dev,
        &["consume", "k", "-p", "1", "-o", "+4"],
        limit,
    ));
    assert!(err.contains("offset 4 is past the end of k-1"), "{err}");
    // A malformed offset is a usage error (clap's, status 2) that says what is accepted.
    let out = cli_within(&dev, &["consume", "k", "-o", "soon"], limit);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"soon\" is not beginning, end, N, -N, +N or s@MS"),
        "{}",
        stderr(&out)
    );

    // -c: at most N records.
    assert_eq!(
        ok_within(
            &dev,
            &["consume", "k", "-p", "0", "-o", "beginning", "-c", "2"]
        ),
        "a0\na1\n"
    );

    // -e stops at the high watermark seen at start: records produced while it runs
    // (it is held back by a full stdout pipe) are not printed.
    // Partition 1 is empty, so it is done at once, while partition 0 (2 MB, more than
    // one fetch) takes several polls.
    create_topic(&dev, "big", "2");
    let pad = "x".repeat(1000);
    let big: String = (0..2000).map(|i| format!("{i:04}{pad}\n")).collect();
    dev.ok(&["produce", "big", "-p", "0"], &big);
    let mut child = Command::new(BIN)
        .args(["consume", "big", "-e", "-o", "beginning", "-f", "%o %s\\n"])
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert_eq!(first, format!("0 0000{pad}\n"));
    dev.ok(&["produce", "big", "-p", "0"], "late-1\nlate-2\n");
    dev.ok(&["produce", "big", "-p", "1"], "late-3\n");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let status = common::wait_for("consume -e to exit", limit, || child.try_wait().unwrap());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 1999);
    assert_eq!(lines[1998], format!("1999 1999{pad}"));
    assert!(!rest.contains("late"));
    dev.stop();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn consume_from_timestamp_headers_and_format_strings() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_topic(&dev, "ts", "2");
    dev.ok(&["produce", "ts", "-p", "0"], "old-0\n");
    dev.ok(&["produce", "ts", "-p", "1"], "old-1\n");
    let stamps = ok_within(
        &dev,
        &["consume", "ts", "-e", "-o", "beginning", "-f", "%T\\n"],
    );
    let newest_old: i64 = stamps
        .lines()
        .map(|t| t.parse::<i64>().unwrap())
        .max()
        .unwrap();
    common::wait_for(
        "the clock to pass the old records",
        std::time::Duration::from_secs(5),
        || (now_ms() > newest_old).then_some(()),
    );
    dev.ok(&["produce", "ts", "-p", "0"], "new-0\n");
    dev.ok(&["produce", "ts", "-p", "1"], "new-1\n");
    let from = (newest_old + 1).to_string();
    let got = ok_within(&dev, &["consume", "ts", "-e", "--from-timestamp", &from]);
    assert_eq!(sorted_lines(&got), ["new-0", "new-1"]);
    let got = ok_within(&dev, &["consume", "ts", "-e", "-o", &format!("s@{from}")]);
    assert_eq!(sorted_lines(&got), ["new-0", "new-1"]);
    // A timestamp after every record: nothing yet, so -e exits at once.
    let future = (now_ms() + 3_600_000).to_string();
    assert_eq!(
        ok_within(&dev, &["consume", "ts", "-e", "--from-timestamp", &future]),
        ""
    );

    create_topic(&dev, "h", "1");
    dev.ok(
        &[
            "produce",
            "h",
            "-H",
            "trace=abc",
            "--header",
            "op=x=y",
            "-K",
            ":",
        ],
        "k1:v1\nno key\n",
    );
    let got = ok_within(
        &dev,
        &[
            "consume",
            "h",
            "-e",
            "-o",
            "beginning",
            "--print-headers",
            "--print-key",
        ],
    );
    assert_eq!(
        got,
        "trace=abc,op=x=y\tk1\tv1\ntrace=abc,op=x=y\t\tno key\n"
    );
    let got = ok_within(
        &dev,
        &["consume", "h", "-e", "-o", "beginning", "--print-headers"],
    );
    assert_eq!(got, "trace=abc,op=x=y\tv1\ntrace=abc,op=x=y\tno key\n");
    let got = ok_within(
        &dev,
        &[
            "consume",
            "h",
            "-e",
            "-o",
            "beginning",
            "-f",
            "%t|%p|%o|%k|%K|%s|%S|%h|100%%\\t;",
        ],
    );
    assert_eq!(
        got,
        "h|0|0|k1|2|v1|2|trace=abc,op=x=y|100%\t;h|0|1||-1|no key|6|trace=abc,op=x=y|100%\t;"
    );
    let got = ok_within(
        &dev,
        &["consume", "h", "-e", "-o", "-1", "--output", "json"],
    );
    assert_eq!(
        ok_within(&dev, &["consume", "h", "-e", "-o", "-1", "-J"]),
        got
    );
    let v = json(&got);
    assert_eq!(
        v["headers"],
        serde_json::json!([{"key": "trace", "value": "abc"}, {"key": "op", "value": "x=y"}])
    );
    assert_eq!(v["value"], "no key");
    assert!(v["key"].is_null());

    let limit = std::time::Duration::from_secs(30);
    let err = one_line_error(&cli_within(&dev, &["consume", "h", "-f", "%q"], limit));
    assert!(err.contains("%q"), "{err}");
    let err = one_line_error(&cli_within(
        &dev,
        &["consume", "h", "-f", "%s", "--output", "json"],
        limit,
    ));
    assert!(err.contains("--format"), "{err}");
    dev.stop();
}

#[test]
fn produce_headers_partition_files_and_tuning_flags() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_topic(&dev, "p", "3");
    let out = dev.cli(&["produce", "p", "-p", "2", "--acks", "-1"], "x\ny\nz\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 record(s) acknowledged (acks=all)"),
        "{}",
        stderr(&out)
    );
    let d = json(&dev.ok(&["topic", "describe", "p", "--output", "json"], ""));
    let hws: Vec<u64> = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .collect();
    assert_eq!(hws, [0, 0, 3]);

    // Each --value-file is one record, its bytes exactly (newlines, separators and all);
    // no stdin.
    create_topic(&dev, "files", "1");
    let text = dir.path().join("text");
    let binary = dir.path().join("binary");
    std::fs::write(&text, "line 1\nkey:line 2\n").unwrap();
    std::fs::write(&binary, b"\xff\x00bin").unwrap();
    let (text, binary) = (text.to_str().unwrap(), binary.to_str().unwrap());
    let out = cli_within(
        &dev,
        &[
            "produce",
            "files",
            "--value-file",
            text,
            "--value-file",
            binary,
            "-k",
            "fixed",
            "-K",
            ":",
        ],
        std::time::Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 record(s) acknowledged"),
        "{}",
        stderr(&out)
    );
    let got = ok_within(
        &dev,
        &[
            "consume",
            "files",
            "-e",
            "-o",
            "beginning",
            "--output",
            "json",
        ],
    );
    let recs: Vec<serde_json::Value> = got.lines().map(json).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["value"], "line 1\nkey:line 2\n");
    assert_eq!(recs[0]["key"], "fixed");
    assert_eq!(recs[1]["encoding"], "base64");
    assert_eq!(recs[1]["value"], "/wBiaW4=");
    let missing = dir.path().join("missing");
    let err = one_line_error(&cli_within(
        &dev,
        &[
            "produce",
            "files",
            "--value-file",
            text,
            "--value-file",
            missing.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(30),
    ));
    assert!(err.contains("missing"), "{err}");
    let d = json(&dev.ok(&["topic", "describe", "files", "--output", "json"], ""));
    assert_eq!(d["partitions"][0]["high_watermark"], 2, "nothing sent");

    // -Z: an empty value is null (a tombstone); -K's key wins over -k.
    create_topic(&dev, "z", "1");
    dev.ok(
        &["produce", "z", "-K", ":", "-Z", "-k", "dflt"],
        "gone:\nkept:v\nno separator\n",
    );
    let got = ok_within(
        &dev,
        &["consume", "z", "-e", "-o", "beginning", "--output", "json"],
    );
    let recs: Vec<serde_json::Value> = got.lines().map(json).collect();
    assert_eq!(
        (&recs[0]["key"], &recs[0]["value"]),
        (&"gone".into(), &serde_json::Value::Null)
    );
    assert_eq!(
        (&recs[1]["key"], &recs[1]["value"]),
        (&"kept".into(), &"v".into())
    );
    assert_eq!(
        (&recs[2]["key"], &recs[2]["value"]),
        (&"dflt".into(), &"no separator".into())
    );

    // Batching and every compression codec round-trip.
    let input: String = (0..200).map(|i| format!("record-{i}\n")).collect();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let t = format!("c-{codec}");
        create_topic(&dev, &t, "1");
        let args = [
            "produce",
            &t,
            "-z",
            codec,
            "--batch-size",
            "512",
            "--linger-ms",
            "20",
        ];
        let out = dev.cli(&args, &input);
        assert!(out.status.success(), "{codec}: {}", stderr(&out));
        let got = ok_within(&dev, &["consume", &t, "-e", "-o", "beginning"]);
        assert_eq!(got, input, "{codec}");
    }
    let limit = std::time::Duration::from_secs(30);
    let cases: [(&[&str], &str); 3] = [
        (&["produce", "p", "--compression", "brotli"], "brotli"),
        (&["produce", "p", "--header", "novalue"], "novalue"),
        (&["produce", "p", "--acks", "-2"], "-2"),
    ];
    for (args, needle) in cases {
        let err = one_line_error(&cli_within(&dev, args, limit));
        assert!(err.contains(needle), "{err}");
    }
    dev.stop();
}

/// Option and argument lines of a `--help` text that carry no description.
fn undocumented(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let item = line.trim_start();
        if line.len() - item.len() != 2 || !(item.starts_with('-') || item.starts_with('<')) {
            continue;
        }
        let same_line = item
            .split_once("  ")
            .is_some_and(|(_, d)| !d.trim().is_empty());
        let next_line = lines
            .get(i + 1)
            .is_some_and(|n| n.len() - n.trim_start().len() > 2 && !n.trim().is_empty());
        if !same_line && !next_line {
            missing.push(item.to_string());
        }
    }
    missing
}

#[test]
fn topic_create_defaults_help_and_config_sources() {
    let help_of = |args: &[&str]| {
        let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let create = help_of(&["topic", "create"]);
    for flag in [
        "--partitions",
        "--replication-factor",
        "--config",
        "--bootstrap",
        "--output",
    ] {
        assert!(create.contains(flag), "{flag} missing from:\n{create}");
    }
    for cmd in [
        &["topic", "create"][..],
        &["topic", "alter"],
        &["topic", "describe"],
        &["topic", "delete"],
        &["produce"],
        &["consume"],
        &["perf", "produce"],
        &["perf", "consume"],
        &["partition", "reassign"],
        &["partition", "elect-leaders"],
    ] {
        let help = help_of(cmd);
        assert_eq!(
            undocumented(&help),
            Vec::<String>::new(),
            "{cmd:?}:\n{help}"
        );
    }

    // Without --partitions and --replication-factor: 1 partition, RF min(3, live brokers).
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "2"]);
    let created = json(&dev.ok(&["topic", "create", "dflt", "--output", "json"], ""));
    assert_eq!(created["partitions"], 1);
    assert_eq!(created["replication_factor"], 2);
    let d = json(&dev.ok(&["topic", "describe", "dflt", "--output", "json"], ""));
    assert_eq!(d["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(d["partitions"][0]["replicas"].as_array().unwrap().len(), 2);
    dev.ok(&["topic", "create", "four", "-p", "4"], "");
    let d = json(&dev.ok(&["topic", "describe", "four", "--output", "json"], ""));
    assert_eq!(d["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(d["partitions"][3]["replicas"].as_array().unwrap().len(), 2);

    // Effective configs, each marked by where its value comes from.
    dev.ok(&["topic", "alter", "dflt", "-c", "retention.ms=1000"], "");
    let d = json(&dev.ok(&["topic", "describe", "dflt", "--output", "json"], ""));
    assert_eq!(d["configs"]["retention.ms"], "1000");
    assert_eq!(d["configs"]["cleanup.policy"], "delete");
    assert_eq!(d["config_sources"]["retention.ms"], "topic");
    assert_eq!(d["config_sources"]["cleanup.policy"], "default");
    assert_eq!(
        d["configs"].as_object().unwrap().len(),
        d["config_sources"].as_object().unwrap().len()
    );
    let table = dev.ok(&["topic", "describe", "dflt"], "");
    let row = |name: &str| {
        table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.get(1) == Some(&name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{table}"))
    };
    assert_eq!(row("retention.ms")[1..4], ["retention.ms", "1000", "topic"]);
    assert_eq!(
        row("cleanup.policy")[1..4],
        ["cleanup.policy", "delete", "default"]
    );

    // --delete-config names are checked as --config names are; nothing changes.
    let err = one_line_error(&dev.cli(
        &[
            "topic",
            "alter",
            "dflt",
            "--delete-config",
            "retention.msec",
        ],
        "",
    ));
    assert!(err.contains("retention.msec"), "{err}");
    let err = one_line_error(&dev.cli(
        &["topic", "alter", "dflt", "--config", "retention.msec=1"],
        "",
    ));
    assert!(err.contains("retention.msec"), "{err}");
    dev.ok(
        &["topic", "alter", "dflt", "--delete-config", "retention.ms"],
        "",
    );
    let d = json(&dev.ok(&["topic", "describe", "dflt", "--output", "json"], ""));
    assert_eq!(d["config_sources"]["retention.ms"], "default");
    dev.stop();
}

#[test]
fn perf_consume_reads_exactly_num_records() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_topic(&dev, "perf", "2");
    let input: String = (0..50).map(|i| format!("r{i}\n")).collect();
    dev.ok(&["produce", "perf", "-K", ":"], &input);
    let out = json(&ok_within(
        &dev,
        &[
            "perf",
            "consume",
            "--topic",
            "perf",
            "--num-records",
            "7",
            "--output",
            "json",
        ],
    ));
    assert_eq!(out["records"], 7);
    let out = cli_within(
        &dev,
        &[
            "perf",
            "consume",
            "--topic",
            "perf",
            "--num-records",
            "51",
            "--timeout-ms",
            "1000",
        ],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only 50 of 51 records"),
        "{}",
        stderr(&out)
    );
    dev.stop();
}

/// Starts a following `sluice consume` (no end) and returns it with its stdout reader.
fn spawn_consumer(
    dev: &Dev,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, reader)
}

#[test]
fn consume_stops_when_its_topic_is_deleted_or_replaced() {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let limit = std::time::Duration::from_secs(20);
    let finish = |mut child: std::process::Child| {
        let status = common::wait_for("consume to stop", limit, || child.try_wait().unwrap());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    };

    // Deleted: a follower stops with an error instead of waiting silently.
    create_topic(&dev, "gone", "1");
    dev.ok(&["produce", "gone"], "old\n");
    let (child, mut out) = spawn_consumer(&dev, &["consume", "gone", "-o", "beginning"]);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "old\n");
    dev.ok(&["topic", "delete", "gone"], "");
    let (status, err) = finish(child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "error: topic gone was deleted while it was being read"
    );

    // Deleted and created again under the same name: the new topic's records are never
    // printed as if they were the old one's.
    create_topic(&dev, "swap", "1");
    dev.ok(&["produce", "swap"], "old\n");
    let (child, mut out) = spawn_consumer(&dev, &["consume", "swap", "-o", "beginning"]);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "old\n");
    dev.ok(&["topic", "delete", "swap"], "");
    create_topic(&dev, "swap", "1");
    dev.ok(&["produce", "swap"], "new\n");
    let (status, err) = finish(child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: topic swap was deleted"), "{err}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "records of the new topic were printed");
    dev.stop();
}

#[test]
fn a_client_error_names_a_missing_controller_not_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster::Cluster::start(dir.path(), 1);
    drop(cluster.client()); // every broker registered
    let bootstrap = cluster.bootstrap();
    assert!(run_cli(&bootstrap, &["topic", "list"], "").status.success());
    cluster.kill9_controller(0);
    // Admin requests retry a missing controller for the client's api timeout (30 s).
    let err = one_line_error(&run_cli(&bootstrap, &["topic", "list"], ""));
    assert!(
        err.starts_with(&format!(
            "error: the broker at {bootstrap} is up, but it has no active controller"
        )),
        "{err}"
    );
    assert!(!err.contains("cannot reach a Sluice broker"), "{err}");
    cluster.stop_all();
}

#[test]
fn perf_into_a_closed_pipe_exits_by_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_topic(&dev, "pp", "1");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("SLUICE_BOOTSTRAP", &dev.addr)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run sluice")
    };
    let produce = ["perf", "produce", "--topic", "pp", "--num-records", "100"];
    let out = run(&produce);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let consume = ["perf", "consume", "--topic", "pp", "--num-records", "100"];
    let out = run(&consume);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A run that fails still says so when nobody reads its results.
    let consume = [
        "perf",
        "consume",
        "--topic",
        "pp",
        "--num-records",
        "101",
        "--timeout-ms",
        "500",
    ];
    let out = run(&consume);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("only 100 of 101"), "{}", stderr(&out));
    dev.stop();
}
