//! Runs the replication simulator over many seeds. `SIM_SEEDS=N` sets how many (CI runs
//! the default; `scripts/sim-campaign.sh` runs a long campaign), `SIM_SEED=S` replays one,
//! `SIM_FIRST_SEED` moves the window. A failure prints its seed and the last events.

use sluice_sim::{run, SimConfig};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn replication_invariants_hold_under_faults() {
    let cfg = SimConfig::default();
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST_SEED").unwrap_or(1);
            (first..first + env("SIM_SEEDS").unwrap_or(500)).collect()
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(seeds.len().max(1));
    let chunks: Vec<Vec<u64>> = (0..threads)
        .map(|t| seeds.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let cfg = cfg.clone();
                s.spawn(move || {
                    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64, (0u64, 0u64));
                    for &seed in chunk {
                        match run(seed, &cfg) {
                            Ok(r) => {
                                totals.0 += 1;
                                totals.1 += r.steps;
                                totals.2 += r.acked;
                                totals.3 += r.faults;
                                totals.4 += r.truncations;
                                totals.5 = totals.5.max((r.steps, seed));
                            }
                            Err(f) => return Err(f),
                        }
                    }
                    Ok(totals)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let mut sum = (0u64, 0u64, 0u64, 0u64, 0u64, (0u64, 0u64));
    for r in results {
        match r {
            Ok(t) => {
                sum.0 += t.0;
                sum.1 += t.1;
                sum.2 += t.2;
                sum.3 += t.3;
                sum.4 += t.4;
                sum.5 = sum.5.max(t.5);
            }
            Err(f) => panic!("{f}"),
        }
    }
    println!(
        "simulated {} seeds ({}..): {} steps (longest: seed {}, {} steps), {} acks=all records acknowledged, {} faults, {} divergent-suffix truncations; no invariant violated",
        sum.0,
        seeds.first().copied().unwrap_or(0),
        sum.1,
        sum.5 .1,
        sum.5 .0,
        sum.2,
        sum.3,
        sum.4
    );
    assert_eq!(sum.0 as usize, seeds.len());
    assert!(sum.2 > 0, "the producer got acknowledgements");
}
