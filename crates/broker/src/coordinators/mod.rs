//! Coordinators: the state machines that live in internal topics and write to them
//! through storage's append path like any producer.
//!
//! - `groups/`: consumer-group coordinators (classic and KIP-848), `__consumer_offsets`;
//! - `txn/`: the transaction coordinator, `__transaction_state`;
//! - `share/`: share groups (KIP-932), `__share_group_state`.
//!
//! Layer rule (checked by `lib.rs`'s layering test): coordinators import storage and the
//! crate's shared pieces; what they need from the node they run on comes in through
//! `Host`, never the whole `Broker`, and never handlers, the cluster link, the server or
//! the HTTP API.

pub mod groups;
pub mod share;
pub mod txn;

use crate::error::BrokerError;
use crate::storage::partition::Partition;
use crate::storage::topics::TopicRegistry;

/// What the transaction and share coordinators need from the node they run on, and
/// nothing more (Kafka hands its coordinators a replica manager, a producer-id manager and
/// a marker channel the same way). `Broker` implements it; a test can implement it over
/// a bare `TopicRegistry`.
pub trait Host {
    /// The topics this node holds (the partitions coordinators write to and read from).
    fn topics(&self) -> &TopicRegistry;

    /// Appends to a partition this node leads under the node's whole write policy
    /// (leadership and epoch, failed log dirs, mirror topics).
    fn append_as_leader<T>(
        &self,
        p: &Partition,
        write: impl FnOnce(&mut runnel_log::PartitionLog, i32) -> Result<T, runnel_log::LogError>,
    ) -> Result<T, BrokerError>;

    /// A new producer id, unique in the cluster.
    fn allocate_producer_id(&self) -> Result<i64, BrokerError>;

    /// Sends a transaction's commit or abort markers to the leaders of `partitions`;
    /// calls back `TxnCoordinator::markers_written` once every one is replicated.
    fn send_txn_markers(
        &self,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<(String, i32)>,
    );

    /// `offsets.topic.num.partitions`, for a group's `__consumer_offsets` partition when
    /// the topic does not exist yet.
    fn offsets_topic_partitions(&self) -> i32;

    /// The share coordinator (its state is written through `share::persist`).
    fn shares(&self) -> &share::Shares;

    /// Asks the controller, in the background, to create the internal topic `topic`
    /// (its replication factor capped by the live brokers) unless the metadata image
    /// already has it. At most one request per topic name is in flight.
    fn ensure_internal_topic(&self, topic: runnel_meta::NewTopic);
}

/// A shared host is a host (`&Arc<Broker>` where a coordinator asks for `&impl Host`).
impl<H: Host> Host for std::sync::Arc<H> {
    fn topics(&self) -> &TopicRegistry {
        (**self).topics()
    }

    fn append_as_leader<T>(
        &self,
        p: &Partition,
        write: impl FnOnce(&mut runnel_log::PartitionLog, i32) -> Result<T, runnel_log::LogError>,
    ) -> Result<T, BrokerError> {
        (**self).append_as_leader(p, write)
    }

    fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        (**self).allocate_producer_id()
    }

    fn send_txn_markers(
        &self,
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<(String, i32)>,
    ) {
        (**self).send_txn_markers(transactional_id, producer_id, epoch, commit, partitions)
    }

    fn offsets_topic_partitions(&self) -> i32 {
        (**self).offsets_topic_partitions()
    }

    fn shares(&self) -> &share::Shares {
        (**self).shares()
    }

    fn ensure_internal_topic(&self, topic: runnel_meta::NewTopic) {
        (**self).ensure_internal_topic(topic)
    }
}
