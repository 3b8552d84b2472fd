//! A seeded, deterministic simulation of one replicated partition: N brokers each
//! running the real `ReplicaManager` (and so the real `PartitionState`) over in-memory
//! logs behind its storage trait (`memlog.rs`) and simulated time, the real controller
//! `ClusterState`, an acks=all producer and a consumer, joined by a network that
//! delays, drops, duplicates and reorders messages, with crashes (a crash may tear the
//! append it interrupts), power loss, pauses, network partitions, lost control pushes,
//! controller failovers and leadership moves. Everything random comes from one seed,
//! so a seed replays exactly.
//!
//! Every step checks the safety invariants (see [`check`]); after the fault phase the
//! world heals and every replica must be back in the ISR within a bound. A failure
//! carries its seed, step and the last events; `SIM_SEED=N` replays it.

mod check;
mod memlog;
mod rng;
mod world;

pub use rng::Rng;
pub use world::{run, Failure, Report, SimConfig};
