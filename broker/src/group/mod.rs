//! Consumer groups (KIP-848), docs/groups.md. Sans-IO: the server-side assignors
//! ([`assignor`]), one group's heartbeat state ([`state`]), and the groups of one
//! `__consumer_offsets` partition with the records that persist them ([`coordinator`]).
//! The IO around them (loading a partition on leadership, writing records with
//! acks=all, the `Groups` gRPC service) is in `crate::server::groups`.

pub mod assignor;
pub mod classic;
pub mod coordinator;
pub mod state;

#[cfg(test)]
mod classic_tests;
