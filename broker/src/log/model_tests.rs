//! Model-based test of the partition log: random sequences of append, roll,
//! truncate_to, truncate_prefix_to, flush, checkpoint, clean reopen and crash (with the
//! unflushed tail torn at any byte, or overwritten with junk) run against a plain
//! `Vec` of batches. After every step the log must read back exactly the model; after
//! a crash, everything flushed must survive and nothing after a torn batch may appear.
//! proptest prints the failing sequence, which is the replay seed.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use sluice_proto::batch::Batches;
use sluice_proto::TopicPartition;

use super::tests::{batch, read_all};
use super::{LogConfig, LogError, LogManager};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_bytes: usize,
    },
    Roll,
    TruncateTo {
        at: f64,
    },
    TruncatePrefixTo {
        at: f64,
    },
    Flush,
    Checkpoint,
    Reopen,
    Crash {
        cut_batch: f64,
        cut_byte: f64,
        junk: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..300).prop_map(|(records, value_bytes)| Op::Append { records, value_bytes }),
        1 => Just(Op::Roll),
        1 => (0.0..1.0f64).prop_map(|at| Op::TruncateTo { at }),
        1 => (0.0..1.2f64).prop_map(|at| Op::TruncatePrefixTo { at }),
        2 => Just(Op::Flush),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        2 => (0.0..1.0f64, 0.0..1.0f64, 0usize..80).prop_map(|(cut_batch, cut_byte, junk)| Op::Crash { cut_batch, cut_byte, junk }),
    ]
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    values: Vec<String>,
}

impl ModelBatch {
    fn next(&self) -> u64 {
        self.base + self.values.len() as u64
    }
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    log_start: u64,
    log_end: u64,
    flushed: u64,
    counter: u64,
}

impl Model {
    fn records_from(&self, from: u64) -> Vec<(u64, String)> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (b.base + i as u64, v.clone()))
            })
            .filter(|(o, _)| *o >= from)
            .collect()
    }
}

/// Every batch in the partition's segment files: (file, position, size, base, next).
fn file_batches(dir: &Path) -> Vec<(PathBuf, u64, u64, u64, u64)> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for path in logs {
        let mut pos = 0;
        for b in Batches::new(Bytes::from(fs::read(&path).unwrap())) {
            let b = b.unwrap();
            out.push((
                path.clone(),
                pos,
                b.size() as u64,
                b.base_offset() as u64,
                b.next_offset() as u64,
            ));
            pos += b.size() as u64;
        }
    }
    out
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 150,
        segment_index_bytes: 120,
        ..LogConfig::default()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("m", 0);
    let pdir = d.path().join("m-0");
    let (mut mgr, _) = LogManager::open(d.path(), config()).unwrap();
    let mut log = mgr.get_or_create(&tp, config()).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append {
                records,
                value_bytes,
            } => {
                let values: Vec<String> = (0..records)
                    .map(|_| {
                        m.counter += 1;
                        format!("{}:{}", m.counter, "v".repeat(value_bytes))
                    })
                    .collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let info = log
                    .append_as_leader(&batch(&refs, m.counter as i64), 1, 0)
                    .unwrap();
                prop_assert_eq!(info.base_offset, m.log_end);
                m.batches.push(ModelBatch {
                    base: m.log_end,
                    values,
                });
                m.log_end += records as u64;
            }
            Op::Roll => log.roll_now(0).unwrap(),
            Op::TruncateTo { at } => {
                let target = m.log_start + ((m.log_end - m.log_start) as f64 * at) as u64;
                let new_end = log.truncate_to(target).unwrap();
                if target < m.log_end {
                    if target <= m.log_start {
                        m.batches.clear();
                        m.log_start = target;
                        m.log_end = target;
                    } else {
                        // The batch holding `target` goes whole.
                        let cut = m.batches.iter().position(|b| b.next() > target).unwrap();
                        m.log_end = m.batches[cut].base;
                        m.batches.truncate(cut);
                        m.log_start = m.log_start.min(m.log_end);
                    }
                    m.flushed = m.flushed.min(m.log_end);
                }
                prop_assert_eq!(new_end, m.log_end);
            }
            Op::TruncatePrefixTo { at } => {
                let target = m.log_start + ((m.log_end - m.log_start) as f64 * at) as u64;
                log.truncate_prefix_to(target).unwrap();
                if target > m.log_end {
                    m.batches.clear();
                    m.log_end = target;
                    m.flushed = target;
                }
                m.log_start = m.log_start.max(target);
            }
            Op::Flush => {
                log.flush().unwrap();
                m.flushed = m.log_end;
            }
            Op::Checkpoint => mgr.checkpoint_recovery_points().unwrap(),
            Op::Reopen => {
                mgr.shutdown().unwrap();
                drop(log);
                drop(mgr);
                (mgr, _) = reopen(d.path());
                log = mgr.get(&tp).unwrap();
                prop_assert_eq!(log.open_stats().log_bytes_read, 0);
                m.flushed = m.log_end;
            }
            Op::Crash {
                cut_batch,
                cut_byte,
                junk,
            } => {
                drop(log);
                drop(mgr);
                // Lose part of what was not flushed: pick a batch at or after the first
                // unflushed one, tear it at some byte, drop all later bytes and segments.
                let on_disk = file_batches(&pdir);
                let first_unflushed = on_disk
                    .iter()
                    .position(|b| b.4 > m.flushed)
                    .unwrap_or(on_disk.len());
                let choices = on_disk.len() - first_unflushed;
                let k = first_unflushed + ((choices + 1) as f64 * cut_batch) as usize;
                if k < on_disk.len() {
                    let (path, pos, size, base, _) = on_disk[k].clone();
                    let cut = pos + (size as f64 * cut_byte) as u64;
                    let mut bytes = fs::read(&path).unwrap();
                    bytes.truncate(cut as usize);
                    bytes.extend((0..junk).map(|i| (i * 37 + 11) as u8));
                    fs::write(&path, &bytes).unwrap();
                    // Later segments' files were never made durable: all three vanish.
                    for later in on_disk[k..].iter().filter(|b| b.0 > path) {
                        for ext in ["log", "index", "timeindex"] {
                            let _ = fs::remove_file(later.0.with_extension(ext));
                        }
                    }
                    m.batches.retain(|b| b.base < base);
                    m.log_end = m.batches.last().map_or(base, |b| b.next());
                    if m.batches.is_empty() {
                        // Nothing readable is left: the log restarts at its first segment.
                        m.log_end = on_disk.first().map_or(0, |b| {
                            let name = b.0.file_stem().unwrap().to_str().unwrap();
                            name.parse::<u64>().unwrap()
                        });
                    }
                }
                (mgr, _) = reopen(d.path());
                log = mgr.get(&tp).unwrap();
                prop_assert!(log.offline_reason().is_none());
                m.log_start = m.log_start.min(m.log_end);
                m.flushed = log.flushed_offset();
            }
        }
        prop_assert_eq!(log.log_end_offset(), m.log_end, "log end offset");
        prop_assert_eq!(log.log_start_offset(), m.log_start, "log start offset");
        prop_assert!(log.flushed_offset() <= log.log_end_offset());
        let got = read_all(&log, m.log_start, 400);
        prop_assert_eq!(got, m.records_from(m.log_start));
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES raises the count for a long soak; 200 keeps CI quick.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        ..ProptestConfig::default()
    })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// Opens the directory again after the previous manager was dropped. Another test thread
/// of this process that forks a child (chattr, mount) hands it a copy of every open
/// descriptor until it execs, `.lock` among them, so the flock can outlive the drop by a
/// moment: `DirInUse` naming this very process is waited out (briefly), nothing else.
fn reopen(dir: &std::path::Path) -> (LogManager, Vec<(TopicPartition, LogError)>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match LogManager::open(dir, config()) {
            Err(LogError::DirInUse { pid, .. })
                if pid == std::process::id().to_string()
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}
