//! The Kafka listener, through unchanged Kafka clients: kcat (librdkafka) against
//! `sluice dev`. Records written by a Kafka client read back identically through
//! Sluice's own client, and the other way round.

mod common;

use std::process::{Command, Output, Stdio};

use common::Dev;

/// kcat (the Debian package, which `scripts/test.sh` installs) with `args`, fed `stdin`.
fn kcat(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat not found: scripts/test.sh installs it (Debian package kcat)");
    let mut input = child.stdin.take().expect("piped");
    let bytes = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("kcat output");
    writer.join().expect("stdin writer");
    out
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn kcat_produces_and_consumes_through_the_kafka_listener() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--brokers", "2"]);
    let kafka = dev
        .kafka_addr
        .clone()
        .expect("dev prints its Kafka listener");
    dev.ok(
        &[
            "topic",
            "create",
            "k",
            "--partitions",
            "3",
            "--replication-factor",
            "2",
        ],
        "",
    );

    // Metadata: both brokers, the topic, its three partitions with leaders.
    let listed = ok(kcat(&["-b", &kafka, "-L", "-J"], ""), "kcat -L");
    let md: serde_json::Value = serde_json::from_str(&listed).expect("kcat -L -J is JSON");
    assert_eq!(md["brokers"].as_array().map(Vec::len), Some(2), "{md}");
    let topic = md["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic"] == "k"))
        .unwrap_or_else(|| panic!("topic k listed: {md}"));
    let parts = topic["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3, "{topic}");
    for p in parts {
        assert!(p["leader"].as_i64().unwrap_or(-1) >= 1, "{p}");
        assert_eq!(p["isrs"].as_array().map(Vec::len), Some(2), "{p}");
    }

    // kcat writes (acks=all, idempotence off: kcat's default), Sluice reads.
    let written: Vec<String> = (0..300).map(|i| format!("key-{i}:value-{i}")).collect();
    ok(
        kcat(
            &["-b", &kafka, "-P", "-t", "k", "-K:", "-X", "acks=all"],
            &(written.join("\n") + "\n"),
        ),
        "kcat -P",
    );
    let read = dev.ok(
        &["consume", "k", "--from-beginning", "-e", "-f", "%k:%s\n"],
        "",
    );
    assert_eq!(sorted_lines(&read), {
        let mut w = written.clone();
        w.sort();
        w
    });

    // Sluice writes, kcat reads: keys and values as written, every partition.
    let native: Vec<String> = (0..200).map(|i| format!("n{i}:native-{i}")).collect();
    dev.ok(&["produce", "k", "-K", ":"], &(native.join("\n") + "\n"));
    let consumed = ok(
        kcat(
            &[
                "-b",
                &kafka,
                "-C",
                "-t",
                "k",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k:%s\n",
            ],
            "",
        ),
        "kcat -C",
    );
    let mut all = written.clone();
    all.extend(native.iter().cloned());
    all.sort();
    assert_eq!(sorted_lines(&consumed), all);

    // Compressed batches from librdkafka are stored as they arrive and read back.
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let lines: Vec<String> = (0..50)
            .map(|i| format!("{codec}-{i}:{codec}-v{i}"))
            .collect();
        ok(
            kcat(
                &["-b", &kafka, "-P", "-t", "k", "-K:", "-z", codec],
                &(lines.join("\n") + "\n"),
            ),
            &format!("kcat -P -z {codec}"),
        );
        let read = dev.ok(
            &["consume", "k", "--from-beginning", "-e", "-f", "%k:%s\n"],
            "",
        );
        for l in &lines {
            assert!(read.lines().any(|r| r == l), "{codec}: {l} not read back");
        }
    }

    // Offsets: kcat's query of the end of each partition matches the records written.
    let total: u64 = (0..3)
        .map(|p| {
            let out = ok(
                kcat(&["-b", &kafka, "-Q", "-t", &format!("k:{p}:-1")], ""),
                "kcat -Q",
            );
            // "k [p] offset N"
            out.split_whitespace()
                .last()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("kcat -Q answer: {out}"))
        })
        .sum();
    assert_eq!(total, 300 + 200 + 4 * 50);
}

/// Bad frames close only their own connection: one that claims two billion topics
/// (the protocol decoder sizes its vector by the claim: the broker aborted before its
/// allocator change), one over `socket.request.max.bytes`, an unknown API key, a body
/// cut short. The broker goes on serving kcat.
#[test]
fn bad_frames_close_only_their_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let kafka = dev.kafka_addr.clone().expect("kafka listener");
    let frame = |body: &[u8]| {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    // Metadata v1: key 3, version 1, correlation 1, null client id, then the topics
    // array's count.
    let mut lying = vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff];
    lying.extend_from_slice(&i32::MAX.to_be_bytes());
    let mut unknown_key = vec![0x7f, 0x00, 0, 0, 0, 0, 0, 2];
    unknown_key.extend_from_slice(&[0xff, 0xff]);
    let cut_short = vec![0, 3, 0, 9, 0, 0, 0, 3, 0, 40, b'x'];
    let oversize = (200i32 << 20).to_be_bytes().to_vec();
    for (what, bytes) in [
        ("a lying count", frame(&lying)),
        ("an unknown key", frame(&unknown_key)),
        ("a cut header", frame(&cut_short)),
        ("an oversize frame", oversize),
    ] {
        let mut s = std::net::TcpStream::connect(&kafka).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&bytes).unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf);
        assert!(
            matches!(n, Ok(0)) || n.is_err(),
            "{what}: the connection stays open ({n:?})"
        );
        let listed = kcat(&["-b", &kafka, "-L"], "");
        assert!(
            listed.status.success(),
            "after {what} the broker no longer serves: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
}
