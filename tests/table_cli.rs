//! `sluice table dump` and `sluice table serve` against a real `sluice dev`: the last
//! value of each live key after updates and tombstones, the base64 rule for bytes that
//! are not UTF-8, one-line errors, and three HTTP sidecars following one topic while a
//! producer writes, converging on the model; `wait_for` read-your-writes, 408, 400.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    closed_pipe, json, one_line_error, run_cli, run_cli_bytes, stderr, wait_for, Dev, BIN,
};
use serde_json::{json, Value};

fn create_compacted(dev: &Dev, name: &str, partitions: &str) {
    dev.ok(
        &[
            "topic",
            "create",
            name,
            "-p",
            partitions,
            "-r",
            "1",
            "--config",
            "cleanup.policy=compact",
        ],
        "",
    );
}

/// `key:value` lines, an empty value a tombstone.
fn produce_kv(dev: &Dev, topic: &str, lines: &str) {
    dev.ok(
        &[
            "produce",
            topic,
            "--key-separator",
            ":",
            "--null-value-if-empty",
        ],
        lines,
    );
}

/// Each partition's high watermark, from `topic describe --output json`.
fn high_watermarks(dev: &Dev, topic: &str) -> BTreeMap<u32, u64> {
    let d = json(&dev.ok(&["topic", "describe", topic, "--output", "json"], ""));
    d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            let hw = p["high_watermark"].as_u64().expect("high_watermark");
            (p["partition"].as_u64().expect("partition") as u32, hw)
        })
        .collect()
}

/// `wait_for` naming the last record of every non-empty partition.
fn last_records(hws: &BTreeMap<u32, u64>) -> String {
    hws.iter()
        .filter(|(_, &hw)| hw > 0)
        .map(|(p, hw)| format!("{p}:{}", hw - 1))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn dump_prints_the_last_value_of_each_live_key() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_compacted(&dev, "users", "3");
    // b's tombstone (`b:` with --null-value-if-empty) must drop it; a and c keep their
    // last values; e's empty value (no -Z) is a real, empty value.
    produce_kv(&dev, "users", "a:1\nb:1\nc:1\na:2\nb:\nd:4\nc:3\n");
    dev.ok(&["produce", "users", "-K", ":"], "e:\n");
    let out = dev.ok(&["table", "dump", "users", "--output", "json"], "");
    let rows: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(
        rows,
        vec![
            json!({"key": "a", "value": "2"}),
            json!({"key": "c", "value": "3"}),
            json!({"key": "d", "value": "4"}),
            json!({"key": "e", "value": ""}),
        ]
    );
    // Text: key<TAB>value, sorted by key.
    assert_eq!(
        dev.ok(&["table", "dump", "users"], ""),
        "a\t2\nc\t3\nd\t4\ne\t\n"
    );
    // A value that is not UTF-8 comes back base64, marked, with its key base64 too.
    let out = run_cli_bytes(&dev.addr, &["produce", "users", "-K", ":"], b"f:\xff\xfe\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dev.ok(&["table", "dump", "users", "--output", "json"], "");
    let f = out
        .lines()
        .map(json)
        .find(|r| r["key"] == "Zg==")
        .expect("f");
    assert_eq!(
        f,
        json!({"key": "Zg==", "value": "//4=", "encoding": "base64"})
    );
    assert_eq!(out.lines().count(), 5);
    // `| head -1` closed the pipe: quiet, status 0, as every client command.
    let out = Command::new(BIN)
        .args(["table", "dump", "users"])
        .env("SLUICE_BOOTSTRAP", &dev.addr)
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run table dump");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn dump_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let err = one_line_error(&dev.cli(&["table", "dump", "missing"], ""));
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );
    let err = one_line_error(&run_cli("127.0.0.1:1", &["table", "dump", "t"], ""));
    assert!(
        err.contains("cannot reach") && err.contains("--bootstrap"),
        "{err}"
    );
    let err = one_line_error(&dev.cli(
        &[
            "table",
            "serve",
            "--topic",
            "missing",
            "--listen",
            "127.0.0.1:0",
        ],
        "",
    ));
    assert!(err.contains("does not exist"), "{err}");
}

/// A running `sluice table serve`, killed on drop.
struct Sidecar {
    child: Child,
    addr: String,
}

impl Sidecar {
    fn start(dev: &Dev, topics: &str) -> Sidecar {
        let mut child = Command::new(BIN)
            .args([
                "table",
                "serve",
                "--topic",
                topics,
                "--listen",
                "127.0.0.1:0",
            ])
            .env("SLUICE_BOOTSTRAP", &dev.addr)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice table serve");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        break a.trim().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("table serve printed no `listening on` within 30 s");
                }
            }
        };
        Sidecar { child, addr }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = http_get(&self.addr, path);
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        (status, v)
    }

    /// SIGTERM, then a clean exit.
    fn stop(mut self) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_for("table serve to exit", Duration::from_secs(30), || {
            self.child.try_wait().expect("wait")
        });
        assert!(status.success(), "table serve exited with {status}");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET (`Connection: close`): the status and the body, de-chunked.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to table serve");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A deterministic stream of updates and deletes over a few keys: xorshift, so the
/// run is the same every time.
struct Workload {
    state: u64,
    model: BTreeMap<String, String>,
    /// Keys whose last record is a tombstone.
    deleted: BTreeSet<String>,
}

impl Workload {
    /// The next `n` lines (`key:value`, or `key:` to delete), applied to the model.
    fn lines(&mut self, n: usize, round: usize) -> String {
        let mut out = String::new();
        for i in 0..n {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let key = format!("user-{}", self.state % 40);
            if self.state.is_multiple_of(5) {
                self.model.remove(&key);
                self.deleted.insert(key.clone());
                out.push_str(&format!("{key}:\n"));
            } else {
                let value = format!("v{round}.{i}");
                self.model.insert(key.clone(), value.clone());
                self.deleted.remove(&key);
                out.push_str(&format!("{key}:{value}\n"));
            }
        }
        out
    }
}

fn rows_of(snapshot: &Value) -> BTreeMap<String, String> {
    snapshot["rows"]
        .as_object()
        .expect("rows")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_string()))
        .collect()
}

#[test]
fn three_sidecars_converge_while_a_producer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    create_compacted(&dev, "live", "3");
    create_compacted(&dev, "bin", "1");
    let mut w = Workload {
        state: 0x9E37_79B9_7F4A_7C15,
        model: BTreeMap::new(),
        deleted: BTreeSet::new(),
    };
    produce_kv(&dev, "live", &w.lines(100, 0));
    let out = run_cli_bytes(&dev.addr, &["produce", "bin", "-K", ":"], b"\xffk:\x00v\n");
    assert!(out.status.success(), "{}", stderr(&out));

    let sidecars: Vec<Sidecar> = (0..3).map(|_| Sidecar::start(&dev, "live,bin")).collect();
    // The producer writes while the sidecars bootstrap and follow, and clients read.
    let bootstrap = dev.addr.clone();
    let producer = std::thread::spawn(move || {
        for round in 1..=8 {
            let args = ["produce", "live", "-K", ":", "-Z"];
            let out = run_cli(&bootstrap, &args, &w.lines(30, round));
            assert!(out.status.success(), "{}", stderr(&out));
        }
        w
    });
    read_while_writing(&sidecars, || producer.is_finished());
    let w = producer.join().expect("producer");
    for s in &sidecars {
        wait_for("healthz 200", Duration::from_secs(30), || {
            (s.get("/healthz").0 == 200).then_some(())
        });
    }
    // Every produced record applied: each sidecar equals the model, and all three agree.
    let target = last_records(&high_watermarks(&dev, "live"));
    let snapshots: Vec<Value> = sidecars
        .iter()
        .map(|s| {
            let (status, v) = s.get(&format!("/tables/live?wait_for={target}&timeout_ms=30000"));
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["ready"], true);
            assert_eq!(rows_of(&v), w.model);
            v
        })
        .collect();
    assert!(snapshots.windows(2).all(|p| p[0] == p[1]), "{snapshots:?}");

    check_rows(&sidecars[0], &w);
    check_wait_for(&dev, &sidecars);
    check_binary(&sidecars[1]);
    stop_with_a_pending_wait(sidecars);
}

/// SIGTERM with a `wait_for` pending: it answers 503 at once and every sidecar exits
/// cleanly, without waiting out the request's timeout.
fn stop_with_a_pending_wait(sidecars: Vec<Sidecar>) {
    let addr = sidecars[0].addr.clone();
    let pending = std::thread::spawn(move || {
        http_get(&addr, "/tables/live?wait_for=0:1000000&timeout_ms=120000")
    });
    wait_for("the request to be pending", Duration::from_secs(10), || {
        let (_, scrape) = http_get(&sidecars[0].addr, "/metrics");
        scrape
            .contains("sluice_table_wait_for_pending 1")
            .then_some(())
    });
    let started = Instant::now();
    for s in sidecars {
        s.stop();
    }
    let (status, body) = pending.join().expect("pending request");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stopping"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Snapshots taken while the producer writes: every one answers 200 with valid JSON,
/// and each sidecar's position never goes back.
fn read_while_writing(sidecars: &[Sidecar], done: impl Fn() -> bool) {
    let mut last: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); sidecars.len()];
    let mut reads = 0;
    while !done() || reads < sidecars.len() {
        for (s, last) in sidecars.iter().zip(&mut last) {
            let (status, v) = s.get("/tables/live");
            assert_eq!(status, 200, "{v}");
            assert!(rows_of(&v).len() <= 40, "{v}");
            for (p, o) in v["position"].as_object().expect("position") {
                let o = o.as_u64().expect("offset");
                let before = last.insert(p.clone(), o).unwrap_or(0);
                assert!(o >= before, "partition {p} went back from {before} to {o}");
            }
            reads += 1;
        }
    }
}

/// `rows/{key}`: 200 with the value, 404 for a deleted (tombstoned) or unknown key.
fn check_rows(s: &Sidecar, w: &Workload) {
    let (live, value) = w.model.iter().next().expect("a live key");
    assert_eq!(
        s.get(&format!("/tables/live/rows/{live}")),
        (200, json!({"key": live, "value": value}))
    );
    assert_eq!(
        s.get(&format!("/tables/live/rows?key={live}")).1["value"],
        json!(value)
    );
    let dead = w.deleted.iter().next().expect("a tombstoned key");
    for path in [
        format!("/tables/live/rows/{dead}"),
        "/tables/live/rows/never".into(),
    ] {
        let (status, v) = s.get(&path);
        assert_eq!(status, 404, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("no row with key"),
            "{v}"
        );
    }
    let (status, v) = s.get("/tables/nope");
    assert_eq!(status, 404);
    assert_eq!(v["topics"], json!(["bin", "live"]));
}

/// Read-your-writes right after a produce; 408 for a far future; 400 for nonsense.
fn check_wait_for(dev: &Dev, sidecars: &[Sidecar]) {
    produce_kv(dev, "live", "fresh key:just written\n");
    dev.ok(&["produce", "live", "-p", "0", "-K", ":"], "fresh:now\n");
    let hws = high_watermarks(dev, "live");
    let offset = hws[&0] - 1;
    for s in sidecars {
        let (status, v) = s.get(&format!(
            "/tables/live?wait_for=0:{offset}&timeout_ms=10000"
        ));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rows"]["fresh"], "now");
        assert!(v["position"]["0"].as_u64().unwrap() > offset, "{v}");
        let all = last_records(&hws);
        let (status, v) = s.get(&format!("/tables/live?wait_for={all}"));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rows"]["fresh key"], "just written");
    }
    let s = &sidecars[2];
    assert_eq!(
        s.get("/tables/live/rows/fresh%20key").1["value"],
        "just written"
    );
    let started = Instant::now();
    let (status, v) = s.get("/tables/live?wait_for=0:1000000&timeout_ms=200");
    assert_eq!(status, 408, "{v}");
    assert!(started.elapsed() < Duration::from_secs(10));
    for bad in ["abc", "0:", "0:1,0:2", "9:1"] {
        let (status, v) = s.get(&format!("/tables/live?wait_for={bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    // A source position (here an LSN) on a topic no connector writes is never reached.
    let (status, v) = s.get("/tables/live?wait_for=0/16B3748&timeout_ms=200");
    assert_eq!(status, 408, "{v}");
    assert!(v["source_position"].is_null(), "{v}");
    let (status, v) = s.get("/tables/live?wait_for=0/zz");
    assert_eq!(status, 400, "{v}");
    let (status, _) = s.get("/tables/live?wait_for=0:1&timeout_ms=soon");
    assert_eq!(status, 400);
}

/// Keys and values that are not UTF-8: base64 with the marker, asked by `%FF` in
/// the path or `?key_base64=`.
fn check_binary(s: &Sidecar) {
    let want = json!({"key": "/2s=", "value": "AHY=", "encoding": "base64"});
    assert_eq!(s.get("/tables/bin/rows/%FFk"), (200, want.clone()));
    assert_eq!(s.get("/tables/bin/rows?key_base64=%2F2s%3D"), (200, want));
    let (status, v) = s.get("/tables/bin");
    assert_eq!(status, 200);
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["rows"], json!({"/2s=": "AHY="}));
    let (status, _) = s.get("/tables/bin/rows?key_base64=***");
    assert_eq!(status, 400);
}
