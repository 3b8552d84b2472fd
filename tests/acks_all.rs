//! acks=all keeps its promise, through the real binary (issue 8): a record is
//! acknowledged only once it is on at least `min.insync.replicas` replicas, and every
//! acknowledged record stays readable exactly once, while followers pause and while
//! leadership moves under concurrent producers.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::wait_for;
use sluice_client::{Acks, Error, Producer, ProducerConfig, ProducerRecord};
use sluice_proto::ErrorCode;

/// Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: appended, but the ISR shrank below
/// `min.insync.replicas` before the record was replicated enough.
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i32 = 20;

/// Three brokers, RF 3, `min.insync.replicas=2`, replica.lag.time.max.ms 3 s (the
/// harness's). Both followers of the partition are paused (SIGSTOP) and one acks=all
/// record is sent with a delivery timeout well past the ISR shrink and the followers'
/// fencing: it must fail — the leader alone holds it — with NOT_ENOUGH_REPLICAS(_AFTER_APPEND)
/// or a timeout, never succeed; a raw acks=all request sent at the same moment must be
/// answered NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrinks. Once the followers
/// resume, acks=all writes succeed again, and every acknowledged record is readable
/// exactly once on every replica.
#[test]
fn paused_followers_fail_acks_all_then_recover() {
    const TOPIC: &str = "paused";
    const DELIVERY: Duration = Duration::from_secs(12);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, TOPIC);
    let (leader, ..) = wait_for("a leader with a full ISR", Duration::from_secs(30), || {
        state(&rt, &admin, TOPIC).filter(|s| s.0.is_some() && s.1.len() == 3)
    });
    let leader = leader.unwrap();
    let mut acked = produce_numbered(&rt, &config, TOPIC, 0, 100);

    // The producer exists (and has its producer id) before the followers stop.
    let producer = rt
        .block_on(Producer::new(
            &config,
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::from_millis(1),
                request_timeout: Duration::from_secs(30),
                delivery_timeout: DELIVERY,
                ..Default::default()
            },
        ))
        .unwrap();
    let followers: Vec<usize> = (1..=3).filter(|&b| b != leader as usize).collect();
    for &f in &followers {
        signal(cluster.brokers[f - 1].1.as_ref().unwrap(), libc::SIGSTOP);
    }
    let paused_at = Instant::now();
    // What the leader answers on the wire: one acks=all request, appended while the
    // ISR still counts three, must come back NOT_ENOUGH_REPLICAS_AFTER_APPEND once the
    // ISR shrinks — not success, and not after the request timeout.
    let wire = {
        let addr = cluster.brokers[leader as usize - 1].0.clone();
        let config = config.clone();
        rt.spawn(async move {
            let mut batch = sluice_proto::BatchBuilder::new(sluice_proto::Compression::None);
            batch.append(0, None, Some(b"paused-wire"), &[]);
            let req = sluice_proto::v1::ProduceRequest {
                acks: -1,
                timeout_ms: 30_000,
                partitions: vec![sluice_proto::v1::ProducePartition {
                    topic: TOPIC.into(),
                    partition: 0,
                    records: batch.build().unwrap().into_bytes(),
                    topic_id: String::new(),
                }],
            };
            let answer = sluice_client::Cluster::new(&config)
                .broker_client(&addr)
                .unwrap()
                .produce(req)
                .await
                .unwrap()
                .into_inner();
            (answer, paused_at.elapsed())
        })
    };
    let outcome = rt.block_on(async {
        let f = producer
            .send(ProducerRecord {
                partition: Some(0),
                ..ProducerRecord::new(TOPIC, None::<String>, "paused-0")
            })
            .await
            .unwrap();
        tokio::time::timeout(DELIVERY + Duration::from_secs(45), f).await
    });
    let settled_after = paused_at.elapsed();
    let seen = state(&rt, &admin, TOPIC);
    eprintln!(
        "followers {followers:?} of leader {leader} paused; the acks=all record settled after {settled_after:?} with {outcome:?}; partition now (leader, isr, hw, leo) = {seen:?}"
    );
    match outcome {
        Err(_) => panic!(
            "the acks=all record did not settle within {:?} (delivery timeout {DELIVERY:?})",
            DELIVERY + Duration::from_secs(45)
        ),
        Ok(Ok(meta)) => panic!(
            "acks=all record acknowledged at offset {:?} after {settled_after:?} while both followers \
             were paused: only the leader holds it, min.insync.replicas=2 was not honoured \
             (partition now {seen:?})",
            meta.offset
        ),
        Ok(Err(e)) => match &e {
            Error::Broker { code, message } => {
                assert!(
                    matches!(code, ErrorCode::NotEnoughReplicas | ErrorCode::RequestTimedOut)
                        || code.code() == NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                    "unexpected broker error for a write the ISR cannot take: {e:?}"
                );
                assert!(!message.is_empty(), "the error names what went wrong: {e:?}");
                if matches!(code, ErrorCode::NotEnoughReplicas)
                    || code.code() == NOT_ENOUGH_REPLICAS_AFTER_APPEND
                {
                    assert!(
                        message.contains("min.insync.replicas"),
                        "the message names the setting that refused the write: {message}"
                    );
                }
            }
            Error::Timeout(message) => assert!(
                message.contains("not delivered within"),
                "a delivery timeout says so: {message}"
            ),
            other => panic!("unexpected client error while the followers were paused: {other:?}"),
        },
    }

    let (answer, answered_after) = rt.block_on(wire).unwrap();
    eprintln!("the leader answered the acks=all request after {answered_after:?}: {answer:?}");
    let p = &answer.partitions[0];
    assert_eq!(
        p.error_code, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        "the leader answers an acks=all write the ISR shrank under with NOT_ENOUGH_REPLICAS_AFTER_APPEND: {p:?}"
    );
    assert!(
        p.error_message.contains("min.insync.replicas"),
        "the message names the setting: {}",
        p.error_message
    );
    assert!(
        answered_after < Duration::from_secs(20),
        "answered when the ISR shrank, not at the request timeout: {answered_after:?}"
    );

    let resumed_at = Instant::now();
    for &f in &followers {
        signal(cluster.brokers[f - 1].1.as_ref().unwrap(), libc::SIGCONT);
    }
    // Sent straight away: the client retries (NOT_ENOUGH_REPLICAS is retriable) until
    // the followers are back in the ISR; every record must be acknowledged.
    acked.extend(produce_numbered(&rt, &config, TOPIC, 100, 100));
    eprintln!(
        "after SIGCONT, 100 acks=all records acknowledged within {:?}",
        resumed_at.elapsed()
    );
    wait_for(
        "the followers back in the ISR",
        Duration::from_secs(60),
        || state(&rt, &admin, TOPIC).filter(|s| s.1.len() == 3),
    );
    acked.extend(produce_numbered(&rt, &config, TOPIC, 200, 100));
    assert_eq!(acked.len(), 300);

    // Readable exactly once through a consumer, the failed record at most once.
    let (.., hw, _) = wait_for("replicas to converge", Duration::from_secs(60), || {
        state(&rt, &admin, TOPIC).filter(|s| s.1.len() == 3 && s.2.is_some() && s.2 == s.3)
    });
    let read = consume_partition(&rt, &config, TOPIC, 0, hw.unwrap(), Duration::from_secs(30));
    let acked_list: Vec<(u64, String)> = acked.clone().into_iter().collect();
    let problems = exactly_once_violations("consumer", &read, &acked_list, &["s"]);
    assert!(problems.is_empty(), "{problems:#?}");
    let failed_copies = read.iter().filter(|r| r.1 == "paused-0").count();
    assert!(
        failed_copies <= 1,
        "the failed record is stored {failed_copies} times"
    );
    let wire_copies = read.iter().filter(|r| r.1 == "paused-wire").count();
    assert!(
        wire_copies <= 1,
        "the failed wire record is stored {wire_copies} times"
    );
    eprintln!(
        "{} acknowledged, {} read by a consumer, the failed record stored {failed_copies} time(s)",
        acked.len(),
        read.len()
    );
    converge_stop_and_check(&rt, &admin, &mut cluster, TOPIC, &acked);
}

/// Three brokers, RF 3, `min.insync.replicas=2`, two acks=all producers (idempotent,
/// numbered records with distinct prefixes) running while leadership moves ten times:
/// the replica list is reordered (`reassign`) and a preferred election moves the
/// leader. Afterwards every acknowledged record is present exactly once, in each
/// producer's order, via a consumer and in every replica's files.
#[test]
fn leadership_moves_under_two_producers() {
    const TOPIC: &str = "moves";
    const MOVES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    let (rt, config, admin) = cluster.client();
    create_replicated(&rt, &admin, TOPIC);
    wait_for("a full ISR", Duration::from_secs(30), || {
        all_in_sync(&rt, &admin, TOPIC, 3)
    });
    let loads = [
        Load::start(&rt, &config, TOPIC, "a", 1, 200),
        Load::start(&rt, &config, TOPIC, "b", 1, 200),
    ];
    let progressed = |loads: &[Load], by: usize| {
        let target: Vec<usize> = loads.iter().map(|l| l.acked_count() + by).collect();
        wait_for(
            "both producers to progress",
            Duration::from_secs(60),
            || {
                loads
                    .iter()
                    .zip(&target)
                    .all(|(l, t)| l.acked_count() >= *t)
                    .then_some(())
            },
        );
    };
    progressed(&loads, 200);
    let started = Instant::now();
    for round in 0..MOVES {
        let deadline = Instant::now() + Duration::from_secs(60);
        let p = loop {
            let last = partitions(&rt, &admin, TOPIC).and_then(|ps| ps.into_iter().next());
            if let Some(p) = last
                .clone()
                .filter(|p| p.leader.is_some() && p.isr.len() == 3)
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "no leader with a full ISR within 60 s before move {}; last seen: {last:?}",
                round + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let from = p.leader.unwrap();
        let to = from % 3 + 1;
        let order: Vec<u32> = std::iter::once(to)
            .chain(p.replicas.iter().copied().filter(|&b| b != to))
            .collect();
        let moved_at = Instant::now();
        rt.block_on(admin.reassign_partition(TOPIC, 0, order.clone()))
            .unwrap_or_else(|e| panic!("reassign {TOPIC}-0 to {order:?}: {e}"));
        wait_for(
            &format!("broker {to} to lead after a preferred election"),
            Duration::from_secs(60),
            || {
                let _ = rt.block_on(admin.elect_leaders(Some(TOPIC)));
                partitions(&rt, &admin, TOPIC)
                    .and_then(|ps| ps.into_iter().next())
                    .filter(|p| p.leader == Some(to) && p.replicas == order)
            },
        );
        let moved = moved_at.elapsed();
        progressed(&loads, 100);
        eprintln!(
            "move {}: leader {from} -> {to} (replicas {order:?}) in {moved:?}; 100 more acknowledged each within {:?}; acknowledged a={} b={}",
            round + 1,
            moved_at.elapsed() - moved,
            loads[0].acked_count(),
            loads[1].acked_count()
        );
    }
    let [a, b] = loads;
    let outcomes = [a.finish(&rt), b.finish(&rt)];
    let mut acked: Vec<(u64, String)> = Vec::new();
    for o in &outcomes {
        acked.extend(o.acked.iter().map(|((_, offset), v)| (*offset, v.clone())));
        if !o.failed.is_empty() {
            eprintln!(
                "{} records failed (not acknowledged), first: {:?}",
                o.failed.len(),
                &o.failed[..o.failed.len().min(5)]
            );
        }
    }
    acked.sort();
    let twice: Vec<String> = acked
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| format!("{} to {} and {}", w[0].0, w[0].1, w[1].1))
        .collect();
    let mut problems = Vec::new();
    if !twice.is_empty() {
        problems.push(format!(
            "{} offsets acknowledged for two records (first: {:?})",
            twice.len(),
            &twice[..twice.len().min(5)]
        ));
    }
    for o in &outcomes {
        assert!(
            o.acked.len() >= 200 + MOVES * 100,
            "too few acknowledged: {}",
            o.acked.len()
        );
    }
    let (.., hw, _) = wait_for("replicas to converge", Duration::from_secs(60), || {
        state(&rt, &admin, TOPIC).filter(|s| s.1.len() == 3 && s.2.is_some() && s.2 == s.3)
    });
    let read = consume_partition(&rt, &config, TOPIC, 0, hw.unwrap(), Duration::from_secs(60));
    problems.extend(exactly_once_violations(
        "consumer",
        &read,
        &acked,
        &["a", "b"],
    ));
    cluster.stop_all();
    let copies: Vec<Vec<(u64, String)>> = (1..=3)
        .map(|b| replica_partition_records(dir.path(), b, TOPIC, 0))
        .collect();
    for (i, copy) in copies.iter().enumerate() {
        problems.extend(exactly_once_violations(
            &format!("broker {} files", i + 1),
            copy,
            &acked,
            &["a", "b"],
        ));
        if copy != &read {
            problems.push(format!(
                "broker {} holds {} records, the consumer read {}: the copies differ",
                i + 1,
                copy.len(),
                read.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    eprintln!(
        "{MOVES} leadership moves in {:?}: {} + {} acknowledged, {} failed, {} stored; every acknowledged record once, in order, on all three replicas",
        started.elapsed(),
        outcomes[0].acked.len(),
        outcomes[1].acked.len(),
        outcomes[0].failed.len() + outcomes[1].failed.len(),
        read.len()
    );
}
