//! Storage: what a broker holds on its disks and the one way to change it.
//!
//! - `partition.rs`: one partition (its `runnel_log::PartitionLog`, replica state, high
//!   watermark, parked fetches): the only append and read paths;
//! - `replication.rs`: a partition's replica state and the leader's follower bookkeeping
//!   (high watermark, ISR expand/shrink decisions);
//! - `topics.rs`: the topics this broker holds, as the metadata image names them, and their
//!   log dirs;
//! - `codec.rs`: compression for the batches the cleaner rewrites.
//!
//! Layer rule (checked by `lib.rs`'s layering test): storage imports only the crate's
//! shared pieces (`error`, `config`, `metrics`, `fds`) and the lower crates; never
//! coordinators, the cluster link, handlers or the server.

pub mod codec;
pub mod partition;
pub mod replication;
pub mod topics;
