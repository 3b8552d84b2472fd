//! The conveniences kcat, rpk and kafka-console-* users reach for, against a real
//! `sluice dev`: consume offsets, `-e`, timestamps, headers and format strings; produce
//! headers, partitions, files and tuning flags; topic defaults, help text and config
//! sources; exact `perf consume` counts; a consumer whose topic is deleted; errors that
//! name a missing controller; `perf` into a closed pipe.

mod common;

use std::process::{Command, Output, Stdio};

use common::{closed_pipe, json, one_line_error, run_cli, stderr, Dev, BIN};

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
