//! Runnel's storage engine.
//!
//! A partition is a directory of segments, each a file of Kafka v2 record batches stored
//! as the producer sent them once the validator accepted them (the base offset and the
//! partition leader epoch are patched outside the CRC; a wrong max timestamp is rewritten
//! with the CRC, as Kafka does). Beside each segment sit a sparse
//! offset index and a time index. This crate is synchronous and knows nothing of the
//! network; the broker calls it from its own threads.
//!
//! Thread-safety: [`PartitionLog`] is `Send` but not `Sync`-safe to mutate; the broker
//! wraps each one in a mutex.

pub mod batch;
pub mod cleaner;
pub mod compression;
mod config;
mod dir_lock;
mod error;
mod index;
mod partition_log;
mod producer_state;
mod segment;
pub mod validator;

pub use batch::{BatchHeader, CompressionCodec, BATCH_HEADER_BYTES};
pub use cleaner::{CompactionConfig, CompactionStats, RecordCodec};
pub use config::{LogConfig, TimestampType};
pub use dir_lock::DirLock;
pub use error::LogError;
pub use partition_log::{AppendOrigin, AppendResult, PartitionLog, ReadResult};
pub use producer_state::{AbortedTxn, ProducerEntry, MAX_CACHED_BATCHES_PER_PRODUCER};
pub use segment::FileSlice;
pub use validator::ValidationContext;

/// Kafka's "no value" marker for producer ids, epochs, sequences and timestamps.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_TIMESTAMP: i64 = -1;
