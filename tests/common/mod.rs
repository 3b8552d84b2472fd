//! Test harness: runs the real `sluice` binary (`sluice dev`) on loopback ports in a
//! temp dir, runs CLI commands against it, and stops or kills it. Waits poll a
//! condition under a deadline; there are no fixed sleeps.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod apache_kafka;
pub mod cdc;
pub mod clients;
pub mod cluster;
pub mod db;
#[macro_use]
pub mod diff;
pub mod java;
pub mod kafka_raw;
pub mod python;
pub mod slowdisk;
pub mod versions;

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Polls `f` until it returns `Some`, failing the test after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns `Some`, or `None` after `limit`: for a caller whose
/// failure message needs what `f` borrows (a process's log, say).
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `sluice dev`.
pub struct Dev {
    pub child: Child,
    pub data_dir: PathBuf,
    pub addr: String,
    /// Broker 1's Kafka listener, as `dev` printed it.
    pub kafka_addr: Option<String>,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    /// Starts `sluice dev` on a free port with data in `data_dir`, and waits until it
    /// reports ready.
    pub fn start(data_dir: &Path) -> Dev {
        Dev::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Dev {
        let mut child = Command::new(BIN)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            // TEST_LOG=info,… shows the servers' logs when chasing a failure.
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice dev");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut kafka_addr = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluice dev did not report ready within 60 s");
            };
            if let Some(rest) = line.trim().strip_prefix("broker 1 ") {
                addr = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("kafka 1 ") {
                kafka_addr = Some(rest.trim().to_string());
            }
            if line.starts_with("ready") {
                break;
            }
        }
        Dev {
            child,
            data_dir: data_dir.to_path_buf(),
            addr: addr.expect("broker 1 address printed"),
            kafka_addr,
            lines,
        }
    }

    /// Runs `sluice ARGS` against this cluster, feeding `stdin`.
    /// (offset, timestamp) of the first record `sluice consume -p PARTITION -o START`
    /// prints (`s@MS`: the first at or after MS; `-1`: the last), `None` if none.
    pub fn first_record(
        &self,
        topic: &str,
        partition: &str,
        start: &str,
    ) -> Option<(String, String)> {
        let out = self.ok(
            &[
                "consume", topic, "-p", partition, "-o", start, "-c", "1", "-e", "-f", "%o %T",
            ],
            "",
        );
        out.split_once(' ')
            .map(|(o, t)| (o.to_string(), t.trim().to_string()))
    }

    /// Broker 1's Kafka listener (every `dev` opens one).
    pub fn kafka(&self) -> String {
        self.kafka_addr
            .clone()
            .expect("dev prints its Kafka listener")
    }

    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.addr, args, stdin)
    }

    /// Like [`Dev::cli`], asserting success and returning stdout.
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "sluice {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_for("sluice dev to exit", Duration::from_secs(30), || {
            self.child.try_wait().expect("wait")
        });
        assert!(status.success(), "sluice dev exited with {status}");
    }

    /// SIGKILL: no flush, no marker.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_cli(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    run_cli_bytes(bootstrap, args, stdin.as_bytes())
}

/// Runs `sluice ARGS` with raw bytes on stdin (records are bytes, not text).
pub fn run_cli_bytes(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("SLUICE_BOOTSTRAP", bootstrap)
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

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `out` is a failure with exactly one `error:` line on stderr; returns it.
pub fn one_line_error(out: &Output) -> String {
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

/// A pipe whose read end is already closed: every write to it fails with EPIPE, as
/// stdout does under `| head -1` once head has exited.
pub fn closed_pipe() -> std::fs::File {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors; we own them from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closing the read end we own and never use again.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is a fresh descriptor nothing else owns.
    unsafe { std::fs::File::from_raw_fd(fds[1]) }
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The tokio runtime the library-level tests drive clients on (two workers).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Ports per [`free_port`] block: a `sluice dev --listen P` also takes the next few ports
/// (brokers 2.., the controller, metrics), so they are reserved with `P`.
pub const PORT_BLOCK: u16 = 8;

/// A free TCP port on 127.0.0.1 for a server a test starts later, with the
/// [`PORT_BLOCK`] - 1 ports after it. Chosen below the kernel's ephemeral range
/// (32768–60999 by default): a port the kernel handed out for binding to port 0 can
/// meanwhile become the local port of some client's outgoing connection, and the server
/// then fails with "address in use". The block is reserved across test processes (a file
/// under `/tmp/sluice-test-ports` naming this process; a dead process's reservations are
/// taken over), so two tests running side by side never share a port, and none gets a port
/// another test drops packets to ([`DropRule`]); checked bindable; never the same twice in
/// one process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let dir = Path::new("/tmp/sluice-test-ports");
    let _ = std::fs::create_dir_all(dir);
    let me = std::process::id();
    let seed = u64::from(me)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst);
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        let port = 20_000 + (x % u64::from(12_000 / PORT_BLOCK)) as u16 * PORT_BLOCK;
        if !reserve(&dir.join(port.to_string()), me) {
            continue;
        }
        if (port..port + PORT_BLOCK).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return port;
        }
        // Held by something outside the tests: keep the reservation (this process skips
        // the block from now on) and try another.
    }
}

/// Creates `file` naming `pid`, or takes it over from a process that is gone. False when
/// a live process (this one included) holds it.
fn reserve(file: &Path, pid: u32) -> bool {
    use std::io::Write;
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
        {
            Ok(mut f) => {
                let _ = write!(f, "{pid}");
                return true;
            }
            Err(_) => {
                let holder = std::fs::read_to_string(file).unwrap_or_default();
                match holder.trim().parse::<u32>() {
                    Ok(h) if Path::new(&format!("/proc/{h}")).exists() => return false,
                    // A dead holder, or a file still being written (empty): the race of two
                    // takers is settled by create_new on the next round.
                    Ok(_) => {
                        // A DROP rule the dead process left (killed on a timeout) must
                        // not outlive its reservation.
                        remove_stale_rules();
                        let _ = std::fs::remove_file(file);
                    }
                    Err(_) => return false,
                }
            }
        }
    }
    false
}

/// A throwaway etcd (Debian `etcd-server`) of one or more members on loopback ports,
/// data in a temp dir; killed on drop.
pub struct Etcd {
    /// (client address, process) per member; `None` once killed.
    members: Vec<(String, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_members(1)
    }

    /// An etcd cluster of `n` members, waited on until every member reports healthy.
    pub fn start_members(n: usize) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let clients: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..n)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = (0..n)
            .map(|i| {
                let client_url = format!("http://{}", clients[i]);
                let child = Command::new("etcd")
                    .args(["--name", &format!("m{i}")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("m{i}")))
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peers[i]])
                    .args(["--initial-advertise-peer-urls", &peers[i]])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--logger", "zap", "--log-level", "error"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("etcd from Debian's etcd-server (scripts/test.sh installs it)");
                (clients[i].clone(), Some(child))
            })
            .collect();
        let etcd = Etcd { members, _dir: dir };
        wait_for("etcd to report healthy", Duration::from_secs(30), || {
            etcd.members
                .iter()
                .all(|m| {
                    http_get(&m.0, "/health").is_some_and(|b| b.contains("\"health\":\"true\""))
                })
                .then_some(())
        });
        etcd
    }

    /// kill -9 of member `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Index of the member that is the raft leader, from the members' own status
    /// (etcd's JSON gateway, `POST /v3/maintenance/status`).
    pub fn raft_leader(&self) -> Option<usize> {
        self.members.iter().position(|(addr, child)| {
            child.is_some()
                && http_post(addr, "/v3/maintenance/status", "{}")
                    .and_then(|r| {
                        let body = r.split("\r\n\r\n").nth(1)?.to_string();
                        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                        Some(v["header"]["member_id"] == v["leader"])
                    })
                    .unwrap_or(false)
        })
    }

    /// The `--store` spec for controllers using this etcd: every member's address.
    pub fn store_spec(&self) -> String {
        let endpoints: Vec<&str> = self.members.iter().map(|m| m.0.as_str()).collect();
        format!("etcd://{}/sluice-test", endpoints.join(","))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

/// A network namespace joined to the root namespace by a veth pair, on the
/// benchmarking range 198.18.0.0/15 (RFC 2544), so test traffic never leaves the
/// machine. Root side: `.1` (plus any [`Netns::ROOT_HOSTS`] addresses), namespace
/// side: `.2`. Needs root and iproute2; removed on drop.
pub struct Netns {
    pub name: String,
    /// First three octets, e.g. `198.18.7`.
    pub subnet: String,
    root_if: String,
}

impl Netns {
    /// Host numbers added on the root side for processes that must be told apart.
    pub const ROOT_HOSTS: [u8; 3] = [1, 11, 12];

    pub fn create() -> Netns {
        let pid = std::process::id();
        let name = format!("sluice-test-{pid}");
        let root_if = format!("sl{pid}r");
        let peer_if = format!("sl{pid}n");
        let subnet = format!("198.18.{}", pid % 250 + 1);
        let netns = Netns {
            name: name.clone(),
            subnet: subnet.clone(),
            root_if: root_if.clone(),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &root_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &name]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &root_if]);
        for h in &Netns::ROOT_HOSTS[1..] {
            ip(&["addr", "add", &format!("{subnet}.{h}/32"), "dev", &root_if]);
        }
        ip(&["link", "set", &root_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{subnet}.2/24"),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &name, "link", "set", &peer_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        netns
    }

    /// `SUBNET.host`.
    pub fn addr(&self, host: u8) -> String {
        format!("{}.{host}", self.subnet)
    }

    /// Drops everything the namespace sends to these root-side hosts.
    pub fn cut(&self, hosts: &[u8]) {
        for h in hosts {
            let to = format!("{}/32", self.addr(*h));
            ip(&["-n", &self.name, "route", "add", "blackhole", &to]);
        }
    }

    pub fn heal(&self, hosts: &[u8]) {
        for h in hosts {
            let to = format!("{}/32", self.addr(*h));
            ip(&["-n", &self.name, "route", "del", "blackhole", &to]);
        }
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_if])
            .output();
    }
}

/// The body of a plain HTTP/1.0 GET (status line and headers included), or `None` when
/// the server cannot be reached.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A plain HTTP/1.0 POST with a JSON body; the whole answer, or `None`.
pub fn http_post(addr: &str, path: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The value of a Prometheus sample whose line starts with `name{` (any labels) or
/// `name ` in a scrape, summed over label sets.
pub fn metric(scrape: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A client process run in the background with stdout and stderr captured, killed if
/// the test ends before [`Background::finish`].
pub struct Background {
    child: Option<Child>,
    what: String,
}

impl Background {
    pub fn start(what: &str, mut command: Command) -> Background {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Background {
            child: Some(child),
            what: what.to_string(),
        }
    }

    /// Waits for the process to exit successfully: its JSON answer on stdout and its
    /// stderr.
    pub fn finish(mut self) -> (serde_json::Value, String) {
        let out = self
            .child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{} failed: {stderr}", self.what);
        let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: {}\n{stderr}",
                self.what,
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (answer, stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server process run to its exit (or killed at a deadline), with what it printed.
pub struct ExitedServer {
    pub status: std::process::ExitStatus,
    pub stderr: String,
}

impl ExitedServer {
    /// Runs `command` (stdout discarded, stderr captured, `RUST_LOG=warn`) and waits for
    /// it to exit; a process still running at `limit` is killed and the test fails.
    pub fn run(mut command: Command, limit: Duration) -> ExitedServer {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = reader.join().unwrap_or_default();
                panic!("still running after {limit:?}; stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = reader.join().expect("stderr reader");
        ExitedServer { status, stderr }
    }

    /// The last non-empty line on stderr.
    pub fn last_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

/// An iptables rule in the INPUT chain that drops matching TCP packets (`matches`:
/// e.g. `["-s", IP, "-d", IP, "--dport", PORT]`); removed on drop. Needs root and
/// Debian's `iptables` (scripts/test.sh installs it).
pub struct DropRule {
    matches: Vec<String>,
}

impl DropRule {
    pub fn new(matches: &[&str]) -> DropRule {
        remove_stale_rules();
        let mut matches: Vec<String> = matches.iter().map(|s| s.to_string()).collect();
        // Tagged with this process, so a rule left behind by a test process that was
        // killed (a timeout) is removed by the next test that adds one.
        let tag = format!("{RULE_TAG}{}", std::process::id());
        matches.extend(["-m".into(), "comment".into(), "--comment".into(), tag]);
        // Made only once the rule is in: a rule that failed to go in has nothing to take
        // out when the test unwinds.
        iptables("-I", &matches).unwrap_or_else(|e| panic!("{e}"));
        DropRule { matches }
    }

    /// Every packet to a local TCP port.
    pub fn inbound_port(port: u16) -> DropRule {
        DropRule::new(&["--dport", &port.to_string()])
    }
}

const RULE_TAG: &str = "sluice-test-pid-";

/// Removes DROP rules whose tagging test process is gone.
fn remove_stale_rules() {
    let Ok(out) = Command::new("iptables").args(["-S", "INPUT"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(at) = line.find(RULE_TAG) else {
            continue;
        };
        let pid: String = line[at + RULE_TAG.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if pid.is_empty() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `-S` prints the rule as `-A INPUT ...`: the same words after `-D` remove it.
        let words: Vec<String> = line
            .split_whitespace()
            .skip(2)
            .map(|w| w.trim_matches('"').to_string())
            .collect();
        let _ = Command::new("iptables")
            .args(["-D", "INPUT"])
            .args(&words)
            .output();
    }
}

fn iptables(op: &str, matches: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args([op, "INPUT", "-p", "tcp"])
        .args(matches)
        .args(["-j", "DROP"])
        .output()
        .map_err(|e| {
            format!("iptables (Debian package iptables; scripts/test.sh installs it): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "iptables {op} {matches:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

impl Drop for DropRule {
    fn drop(&mut self) {
        // Never a panic here: during a test's unwinding it would abort the process and
        // skip every other clean-up (processes, mounts, throttled devices).
        if let Err(e) = iptables("-D", &self.matches) {
            eprintln!("could not remove a DROP rule: {e}");
        }
    }
}
