//! Consumer groups (KIP-848): the group coordinator's sans-IO parts. So far the
//! server-side assignors ([`assignor`]); the coordinator state machine, the `Groups` gRPC
//! service and `__consumer_offsets` come next (issue 12, docs/groups.md).

pub mod assignor;
pub mod state;
