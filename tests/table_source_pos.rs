//! Source positions (CDC, issue 11) in the Table library and the `sluice table serve`
//! sidecar against a real `sluice dev`: records written the way the connector writes
//! them (`sluice.pos`, `sluice.txn`, `sluice.txn.end`, heartbeats) into compacted
//! topics; `wait_for_source` returns only once the transaction with that position is
//! visible in every table of the set, times out otherwise; heartbeats are never rows;
//! the sidecar's `?wait_for=0/…` waits the same way (408 on timeout, 400 when bad);
//! a transaction whose second partition's piece comes 5 s late (a connector killed
//! between two pieces, or that partition's leader paused for 5 s) is shown whole or
//! not at all, however long it waits.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{all_in_sync, signal, Cluster};
use common::{runtime, wait_for, Dev, BIN};
use serde_json::Value;
use sluice_client::table::{
    HEARTBEAT_HEADER, HEARTBEAT_KEY, POS_HEADER, TXN_END_HEADER, TXN_HEADER,
};
use sluice_client::{
    Admin, ClientConfig, Error, PosRequest, Producer, ProducerConfig, ProducerRecord, RawTable,
    Table, TableConfig, TableSet,
};
use sluice_proto::Header;

const WAIT: Duration = Duration::from_secs(20);

async fn create(config: &ClientConfig, topic: &str, partitions: u32) {
    let configs = [("cleanup.policy".to_string(), "compact".to_string())].into();
    Admin::new(config)
        .create_topic(topic, partitions, 1, configs)
        .await
        .unwrap();
}

fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.into(),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// A row change at source position `pos` (`pg:…#ordinal`), into one partition.
fn row(topic: &str, partition: u32, key: &str, pos: &str) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        partition: Some(partition),
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(
            format!("{{\"at\":\"{pos}\"}}").as_bytes(),
        )),
        headers: vec![header(POS_HEADER, pos)],
        timestamp: None,
    }
}

/// A row of transaction `id`; `end`: the pieces list, on the piece's last record.
fn txn_row(
    topic: &str,
    partition: u32,
    key: &str,
    pos: &str,
    id: &str,
    end: Option<&str>,
) -> ProducerRecord {
    let mut r = row(topic, partition, key, pos);
    r.headers.push(header(TXN_HEADER, id));
    if let Some(list) = end {
        r.headers.push(header(TXN_END_HEADER, list));
    }
    r
}

/// A heartbeat as the connector writes it: "this partition holds everything up to pos".
fn heartbeat(topic: &str, partition: u32, pos: &str) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        partition: Some(partition),
        key: Some(Bytes::from_static(HEARTBEAT_KEY)),
        value: Some(Bytes::from_static(b"{}")),
        headers: vec![header(HEARTBEAT_HEADER, ""), header(POS_HEADER, pos)],
        timestamp: None,
    }
}

/// Sends and waits for the acknowledgement.
async fn send(p: &Producer, r: ProducerRecord) {
    p.send(r).await.unwrap().await.unwrap();
}

fn lsn(s: &str) -> PosRequest {
    s.parse().unwrap()
}

#[test]
fn wait_for_source_returns_once_the_transaction_is_visible_in_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "cdc.users", 2).await;
        create(&client, "cdc.orders", 1).await;
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        send(&producer, row("cdc.users", 0, "u1", "pg:0/50#0")).await;
        for (t, p) in [("cdc.users", 0), ("cdc.users", 1), ("cdc.orders", 0)] {
            send(&producer, heartbeat(t, p, "pg:0/100#0")).await;
        }
        let config = TableConfig {
            fetch_max_wait: Duration::from_millis(100),
            ..TableConfig::default()
        };
        let topics = ["cdc.users".to_string(), "cdc.orders".to_string()];
        let set = TableSet::open(&client, &topics, config).await.unwrap();
        set.ready().await.unwrap();
        set.wait_for_source(&lsn("0/100"), WAIT).await.unwrap();
        assert_eq!(set.source_position(), Some("pg:0/100".parse().unwrap()));
        let users = set.table("cdc.users").unwrap();
        let orders = set.table("cdc.orders").unwrap();
        // Heartbeats are positions, not rows.
        assert_eq!(users.len(), 1);
        assert_eq!(orders.len(), 0);
        assert_eq!(users.get(HEARTBEAT_KEY), None);
        assert_eq!(users.source_position(), Some("pg:0/100".parse().unwrap()));

        // Transaction T at 0/200: a piece in cdc.users:0 and one in cdc.orders:0;
        // cdc.users:1 learns of 0/200 from a heartbeat.
        let waiter = {
            let set = set.clone();
            tokio::spawn(async move { set.wait_for_source(&lsn("0/200"), WAIT).await })
        };
        let list = "cdc.users:0,cdc.orders:0";
        send(&producer, heartbeat("cdc.users", 1, "pg:0/200#0")).await;
        send(
            &producer,
            txn_row("cdc.users", 0, "u2", "pg:0/200#0", "T", None),
        )
        .await;
        send(
            &producer,
            txn_row("cdc.users", 0, "u3", "pg:0/200#1", "T", Some(list)),
        )
        .await;
        // Half of T is written: held, so neither the rows nor the position show it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!waiter.is_finished(), "returned before T was visible");
        assert_eq!(users.get(b"u2"), None);
        assert_eq!(set.source_position(), Some("pg:0/100".parse().unwrap()));
        let early = users
            .wait_for_source(&lsn("0/200"), Duration::from_millis(200))
            .await;
        assert!(matches!(early, Err(Error::Timeout(_))), "{early:?}");

        send(
            &producer,
            txn_row("cdc.orders", 0, "o1", "pg:0/200#2", "T", Some(list)),
        )
        .await;
        tokio::time::timeout(WAIT, waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // Returned: every row of T is there, in both tables.
        assert!(users.get(b"u2").is_some() && users.get(b"u3").is_some());
        assert!(orders.get(b"o1").is_some());
        assert_eq!(set.source_position(), Some("pg:0/200".parse().unwrap()));
        let typed: Table<Value, Value> = Table::from_raw(orders.clone());
        typed
            .wait_for_source(&lsn("0/1FF"), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(typed.source_position(), Some("pg:0/200".parse().unwrap()));
        for snap in set.snapshot_all() {
            assert_eq!(snap.source_position, Some("pg:0/200".parse().unwrap()));
        }

        // A position nothing reached times out, naming where the set is.
        let err = set
            .wait_for_source(&lsn("0/300"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(err.to_string().contains("0/300"), "{err}");
        assert!(err.to_string().contains("pg:0/200"), "{err}");
        // A MariaDB request is never reached by Postgres positions.
        let gtid: PosRequest = "0-1-5".parse().unwrap();
        assert!(set
            .wait_for_source(&gtid, Duration::from_millis(100))
            .await
            .is_err());

        // A malformed sluice.pos is counted and ignored; the row is still applied.
        let mut bad = row("cdc.orders", 0, "o2", "pg:0/300#0");
        bad.headers = vec![header(POS_HEADER, "pg:not-a-position")];
        send(&producer, bad).await;
        send(&producer, heartbeat("cdc.orders", 0, "pg:0/300#0")).await;
        set.table("cdc.orders")
            .unwrap()
            .wait_for_source(&lsn("0/300"), WAIT)
            .await
            .unwrap();
        assert!(orders.get(b"o2").is_some());
        assert_eq!(orders.stats().malformed_positions, 1);
        set.close();
    });
}

/// Both accounts of the bank table in one consistent read (a snapshot), as strings.
fn accounts(t: &RawTable) -> (Option<String>, Option<String>) {
    let snap = t.snapshot();
    let get = |k: &[u8]| {
        snap.rows
            .iter()
            .find(|(key, _)| key.as_ref() == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    (get(b"a"), get(b"b"))
}

#[test]
fn a_transaction_whose_second_piece_is_five_seconds_late_is_shown_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    runtime().block_on(async {
        create(&client, "cdc.bank", 2).await;
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        // Account a lives in partition 0, b in partition 1; both start at 0/100.
        send(&producer, row("cdc.bank", 0, "a", "pg:0/100#0")).await;
        send(&producer, row("cdc.bank", 1, "b", "pg:0/100#1")).await;
        let config = TableConfig {
            fetch_max_wait: Duration::from_millis(100),
            ..TableConfig::default()
        };
        let wait = config.missing_piece_wait;
        let table = RawTable::open(&client, "cdc.bank", config).await.unwrap();
        table.ready().await.unwrap();
        let before = accounts(&table);
        assert!(before.0.is_some() && before.1.is_some(), "{before:?}");

        // Transfer T at 0/200: a piece in each partition, as the connector writes it
        // (each piece's last record lists both), then a heartbeat at T's position in
        // every partition. The connector dies after partition 0's piece and its
        // heartbeat: partition 1's piece is written by its successor, 5 s later.
        let list = "cdc.bank:0,cdc.bank:1";
        let late = Duration::from_secs(5);
        assert!(late > wait * 2, "late past the wall-clock give-up");
        send(
            &producer,
            txn_row("cdc.bank", 0, "a", "pg:0/200#0", "T", Some(list)),
        )
        .await;
        send(&producer, heartbeat("cdc.bank", 0, "pg:0/200#0")).await;
        let written = Instant::now();
        // Partition 1 answers every long poll at its high watermark all along: to a
        // wall clock its piece looks compacted away. Every consistent read shows
        // neither piece.
        let mut reads = 0;
        while written.elapsed() < late {
            assert_eq!(
                accounts(&table),
                before,
                "half of T visible {:?} after partition 0's piece",
                written.elapsed()
            );
            reads += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(table.is_ready());
        assert_eq!(table.source_position(), Some("pg:0/100".parse().unwrap()));

        // Partition 1's piece arrives: both at once, and nothing in between.
        let after = (
            Some("{\"at\":\"pg:0/200#0\"}".to_string()),
            Some("{\"at\":\"pg:0/200#1\"}".to_string()),
        );
        let watcher = {
            let table = table.clone();
            let (before, after) = (before.clone(), after.clone());
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + WAIT;
                loop {
                    let seen = accounts(&table);
                    if seen == after {
                        return Ok(());
                    }
                    if seen != before || Instant::now() > deadline {
                        return Err(seen);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        send(
            &producer,
            txn_row("cdc.bank", 1, "b", "pg:0/200#1", "T", Some(list)),
        )
        .await;
        send(&producer, heartbeat("cdc.bank", 1, "pg:0/200#0")).await;
        table.wait_for_source(&lsn("0/200"), WAIT).await.unwrap();
        assert_eq!(accounts(&table), after);
        if let Err(seen) = watcher.await.unwrap() {
            panic!("a read between T's pieces showed {seen:?}");
        }
        assert!(reads > 100, "only {reads} reads while T was half written");
        table.close();
    });
}

#[test]
fn cluster_a_transaction_is_shown_whole_or_not_at_all_while_a_follower_stalls_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let (rt, client, admin) = cluster.client();
    let configs = [("cleanup.policy".to_string(), "compact".to_string())].into();
    rt.block_on(admin.create_topic("cdc.bank", 3, 2, configs))
        .unwrap();
    let parts = wait_for("every replica in sync", Duration::from_secs(30), || {
        all_in_sync(&rt, &admin, "cdc.bank", 2)
    });
    // The bank setup: account b's partition pb has a follower f that holds no
    // replica of account a's partition pa. Pausing f stalls pb's high watermark (its
    // piece is appended at the leader but not readable) and nothing of pa.
    let follower = |p: usize| {
        let d = &parts[p];
        *d.replicas.iter().find(|&&r| Some(r) != d.leader).unwrap()
    };
    let (pa, pb) = (0..3usize)
        .flat_map(|i| (0..3usize).map(move |j| (i, j)))
        .filter(|&(i, j)| i != j)
        .find(|&(i, j)| !parts[i].replicas.contains(&follower(j)))
        .or_else(|| {
            (0..3usize)
                .flat_map(|i| (0..3usize).map(move |j| (i, j)))
                .find(|&(i, j)| i != j && parts[i].leader != Some(follower(j)))
        })
        .expect("a partition whose leader is not another's follower");
    let f = cluster.brokers[follower(pb) as usize - 1]
        .1
        .as_ref()
        .unwrap();
    let (pa, pb) = (pa as u32, pb as u32);
    let producer = rt
        .block_on(Producer::new(&client, ProducerConfig::default()))
        .unwrap();
    rt.block_on(async {
        send(&producer, row("cdc.bank", pa, "a", "pg:0/100#0")).await;
        send(&producer, row("cdc.bank", pb, "b", "pg:0/100#1")).await;
    });
    let config = TableConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..TableConfig::default()
    };
    let table = rt
        .block_on(RawTable::open(&client, "cdc.bank", config))
        .unwrap();
    rt.block_on(table.ready()).unwrap();
    let before = accounts(&table);
    assert!(before.0.is_some() && before.1.is_some(), "{before:?}");

    // Transfer T: pa's piece and heartbeat are written. 1.5 s later (the connector's
    // write to pb was retried) pb's follower is paused for 5 s and pb's piece written
    // meanwhile: readable once the ISR shrinks or the follower is back. Together,
    // longer than the old wall-clock give-up (2 s from pa's piece).
    let list = format!("cdc.bank:{pa},cdc.bank:{pb}");
    rt.block_on(async {
        send(
            &producer,
            txn_row("cdc.bank", pa, "a", "pg:0/200#0", "T", Some(&list)),
        )
        .await;
        send(&producer, heartbeat("cdc.bank", pa, "pg:0/200#0")).await;
    });
    let written = Instant::now();
    while written.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            accounts(&table),
            before,
            "T visible before pb's piece was written"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(f, libc::SIGSTOP);
    let paused_at = Instant::now();
    let late_piece = {
        let producer = producer.clone();
        let list = list.clone();
        rt.spawn(async move {
            send(
                &producer,
                txn_row("cdc.bank", pb, "b", "pg:0/200#1", "T", Some(&list)),
            )
            .await;
            send(&producer, heartbeat("cdc.bank", pb, "pg:0/200#0")).await;
        })
    };
    let after = (
        Some("{\"at\":\"pg:0/200#0\"}".to_string()),
        Some("{\"at\":\"pg:0/200#1\"}".to_string()),
    );
    let pause = Duration::from_secs(5);
    let deadline = paused_at + Duration::from_secs(60);
    let mut visible_at = None;
    // Every consistent read, through the pause and until T is visible, shows T whole
    // or not at all.
    loop {
        let seen = accounts(&table);
        if seen != before && seen != after {
            signal(f, libc::SIGCONT);
            panic!(
                "half of T visible {:?} into the pause: {seen:?}",
                paused_at.elapsed()
            );
        }
        if seen == after && visible_at.is_none() {
            visible_at = Some(paused_at.elapsed());
        }
        if paused_at.elapsed() >= pause {
            signal(f, libc::SIGCONT);
            if visible_at.is_some() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "T not visible 60 s after the pause"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    rt.block_on(late_piece).unwrap();
    assert_eq!(accounts(&table), after);
    assert!(table.is_ready());
    eprintln!("T visible {visible_at:?} after the follower was paused, 1.5 s after pa's piece");
    table.close();
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
            let line = rx.recv_timeout(left).expect("`listening on` within 30 s");
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.trim().to_string();
            }
        };
        Sidecar { child, addr }
    }

    /// A GET (`Connection: close`; bodies here are small, so never chunked).
    fn get(&self, path: &str) -> (u16, Value) {
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read the answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
        assert!(
            !head.to_ascii_lowercase().contains("chunked"),
            "GET {path}: chunked"
        );
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let v = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        (status, v)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_sidecar_waits_for_a_source_position() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let client = ClientConfig::new(&dev.addr);
    let rt = runtime();
    let producer = rt.block_on(async {
        create(&client, "cdc.items", 2).await;
        let producer = Producer::new(&client, ProducerConfig::default())
            .await
            .unwrap();
        for p in 0..2 {
            send(&producer, heartbeat("cdc.items", p, "pg:0/10#0")).await;
        }
        producer
    });
    let s = Sidecar::start(&dev, "cdc.items");
    let (status, v) = s.get("/tables/cdc.items?wait_for=0/10&timeout_ms=20000");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["source_position"], "pg:0/10");
    assert_eq!(v["rows"], serde_json::json!({}), "heartbeats are not rows");

    let (status, v) = s.get("/tables/cdc.items?wait_for=0/20&timeout_ms=300");
    assert_eq!(status, 408, "{v}");
    assert_eq!(v["source_position"], "pg:0/10");
    assert!(v["error"].as_str().unwrap().contains("0/20"), "{v}");

    rt.block_on(async {
        send(&producer, row("cdc.items", 0, "a", "pg:0/20#0")).await;
        send(&producer, heartbeat("cdc.items", 1, "pg:0/20#0")).await;
    });
    let (status, v) = s.get("/tables/cdc.items?wait_for=0/20&timeout_ms=20000");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["source_position"], "pg:0/20");
    assert_eq!(v["rows"]["a"], "{\"at\":\"pg:0/20#0\"}");

    // The offset form still works; a GTID is a source position Postgres never reaches.
    let (status, v) = s.get("/tables/cdc.items?wait_for=0:0&timeout_ms=20000");
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.get("/tables/cdc.items?wait_for=0-1-5&timeout_ms=200");
    assert_eq!(status, 408, "{v}");
    for bad in ["0/zz", "hello", "0:1,0:2"] {
        let (status, v) = s.get(&format!("/tables/cdc.items?wait_for={bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(!e.contains('\n'), "{e}");
    }
}
