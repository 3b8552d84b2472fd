//! Consumer groups (KIP-848), docs/groups.md. Sans-IO: the server-side assignors
//! ([`assignor`]), one group's heartbeat state ([`state`]), and the groups of one
//! `__consumer_offsets` partition with the records that persist them ([`coordinator`]).
//! The IO around them (loading a partition on leadership, writing records with
//! acks=all, the `Groups` gRPC service) is in `crate::server::groups`.

pub mod assignor;
pub mod classic;
pub mod coordinator;
pub mod state;
pub mod txn;

#[cfg(test)]
mod classic_tests;

/// Runs `simulate` for `SLUICE_GROUP_SIM_SEEDS` seeds from 1 (`default` when unset), or
/// for `SLUICE_GROUP_SIM_SEED` alone; a failing seed is printed so it can be replayed.
#[cfg(test)]
pub(crate) fn for_each_seed(default: u64, simulate: impl Fn(u64) + std::panic::RefUnwindSafe) {
    let seeds: Vec<u64> = match std::env::var("SLUICE_GROUP_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("a seed")],
        Err(_) => {
            let n = std::env::var("SLUICE_GROUP_SIM_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        if let Err(e) = std::panic::catch_unwind(|| simulate(seed)) {
            eprintln!("failed: SLUICE_GROUP_SIM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
