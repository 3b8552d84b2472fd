//! Apache Kafka 4.4 itself as a throwaway test server: the reference Sluice's Kafka
//! listener is checked against (tests/kafka_diff.rs), and Kafka's own command-line tools
//! (tests/kafka_tools.rs). The jars come from Maven Central through
//! `scripts/install-apache-kafka.sh` (scripts/test.sh runs it) into
//! `target/apache-kafka/libs/`.
//!
//! [`ApacheKafka::start`] formats a KRaft combined broker+controller (one process, node
//! id 1) in a temp dir with a generated `server.properties` — loopback listeners on a
//! [`free_port`] block, one partition by default, no initial rebalance delay, offsets
//! topic replication factor 1 — starts `kafka.Kafka` with a 512 MiB heap, waits (under a
//! deadline) until its listener answers Metadata, and kills it on drop. Its log is the
//! temp dir's `kafka.log`, whose tail a failure to start prints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestKind, ResponseKind};

use super::free_port;
use super::kafka_raw::Conn;

/// Where `scripts/install-apache-kafka.sh` puts the jars.
pub fn libs() -> PathBuf {
    let libs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/apache-kafka/libs");
    assert!(
        libs.join(".complete").exists(),
        "Apache Kafka's jars are not in {}: run scripts/test.sh (or scripts/install-apache-kafka.sh) first",
        libs.display()
    );
    libs
}

/// `java` with Kafka's jars on the class path, to run `main` (a class name), logging
/// warnings and errors to stderr (`tests/apache-kafka/log4j2-tools.properties`).
/// Short-lived tools start faster with the client compiler only and one GC thread.
pub fn java(main: &str) -> Command {
    let log4j =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apache-kafka/log4j2-tools.properties");
    let mut c = Command::new("java");
    die_with_this_thread(&mut c);
    c.args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs().display()))
        .arg(main);
    c
}

/// A running Apache Kafka (KRaft, broker and controller in one process).
pub struct ApacheKafka {
    child: Child,
    /// The PLAINTEXT listener, `127.0.0.1:PORT`.
    pub addr: String,
    dir: tempfile::TempDir,
}

impl ApacheKafka {
    /// Formats and starts a fresh Kafka; returns once its listener answers Metadata with
    /// itself as the one broker.
    pub fn start() -> ApacheKafka {
        let mut kafka = ApacheKafka::launch();
        kafka.wait_ready();
        kafka
    }

    /// Formats and starts a fresh Kafka without waiting for it: the caller starts what
    /// else it needs meanwhile (the JVM takes seconds), then calls
    /// [`ApacheKafka::wait_ready`]. Call both from the test's own thread: the process
    /// is killed when the thread that started it ends.
    pub fn launch() -> ApacheKafka {
        ApacheKafka::launch_with("")
    }

    /// [`ApacheKafka::launch`] with `extra` lines appended to `server.properties` (an
    /// authorizer, for tests/kafka_diff_acl.rs).
    pub fn launch_with(extra: &str) -> ApacheKafka {
        let libs = libs();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (addr, controller) = (
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{}", port + 1),
        );
        let properties = dir.path().join("server.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@{controller}\n\
                 listeners=PLAINTEXT://{addr},CONTROLLER://{controller}\n\
                 advertised.listeners=PLAINTEXT://{addr}\n\
                 controller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={logs}\n\
                 num.partitions=1\n\
                 default.replication.factor=1\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n\
                 auto.create.topics.enable=true\n\
                 {extra}\n",
                logs = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("kafka.log");
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(
            &log4j,
            format!(
                "rootLogger.level=INFO\n\
                 rootLogger.appenderRef.f.ref=F\n\
                 appender.f.type=File\n\
                 appender.f.name=F\n\
                 appender.f.fileName={}\n\
                 appender.f.layout.type=PatternLayout\n\
                 appender.f.layout.pattern=[%d] %p %m (%c)%n\n",
                log.display()
            ),
        )
        .unwrap();
        let classpath = format!("{}/*", libs.display());
        // A random cluster id, as `kafka-storage random-uuid` makes (16 bytes, base64url).
        let cluster_id = {
            use base64::Engine;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let id = nanos ^ (u128::from(std::process::id()) << 96);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_be_bytes())
        };
        let format = Command::new("java")
            .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "format"])
            .args(["-t", &cluster_id, "-c"])
            .arg(&properties)
            .output()
            .expect("java (scripts/install-apache-kafka.sh installs Java 17)");
        assert!(
            format.status.success(),
            "kafka-storage format failed: {}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let mut java = Command::new("java");
        die_with_this_thread(&mut java);
        let child = java
            .args(["-Xmx512m", "-Xms512m", "-XX:+UseSerialGC"])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .args(["-cp", &classpath, "kafka.Kafka"])
            .arg(&properties)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java (scripts/install-apache-kafka.sh installs Java 17)");
        ApacheKafka { child, addr, dir }
    }

    /// Waits (90 s at most) until the listener answers Metadata with one broker.
    pub fn wait_ready(&mut self) {
        let limit = Duration::from_secs(90);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "Apache Kafka exited ({status}) while starting; its log ends:\n{}",
                    self.log_tail(40)
                );
            }
            let answered = Conn::try_open(&self.addr).ok().and_then(|mut c| {
                match c.try_call(
                    ApiKey::Metadata,
                    12,
                    RequestKind::Metadata(MetadataRequest::default()),
                ) {
                    Ok(ResponseKind::Metadata(md)) => Some(md.brokers.len()),
                    _ => None,
                }
            });
            if answered == Some(1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Apache Kafka did not answer Metadata within {limit:?}; its log ends:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of Kafka's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("kafka.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the process `c` starts get SIGKILL when the thread that starts it ends: a JVM
/// must not outlive a test that was killed (a timeout) before its drops ran.
fn die_with_this_thread(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe and touches only the child being made.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
