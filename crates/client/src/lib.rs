//! A small async Kafka client on the `kafka-protocol` crate, for Runnel's CLI tools and
//! benchmark: connections with pipelining, bootstrap and metadata (requests go to each
//! partition's leader), produce, fetch, list offsets and topic administration.
//!
//! It speaks one fixed version of each API (see [`versions`]) and checks at connect time
//! that the broker serves it. It has no consumer groups and no transactions; user-facing
//! applications use librdkafka for those.

mod admin;
mod client;
mod connection;
mod error;
mod groups;
mod member;
pub mod records;
pub mod security;
pub mod txn;
pub mod versions;

pub use admin::{
    config_source_name, config_type_name, AlterConfigOp, ConfigEntry, ConfigResource,
    ConfigSynonym, LogDirDescription, LogDirPartition,
};
pub use client::{
    parse_bootstrap, BrokerMetadata, Client, ClientConfig, ClusterMetadata, FetchOptions,
    FetchedPartition, ListedOffset, NewTopic, OffsetSpec, PartitionMetadata, ProduceAck,
    ProduceOptions, TopicMetadata,
};
pub use connection::{Connection, ConnectionConfig, MAX_RESPONSE_BYTES};
pub use error::{Error, Result};
pub use groups::{
    decode_assignment, CommittedOffset, GroupDescription, GroupListing, GroupMember,
    ShareStartOffset,
};
pub use kafka_protocol::records::Compression;
pub use kafka_protocol::ResponseError;
pub use member::Membership;
pub use records::{ConsumerRecord, ProducerIdentity, ProducerRecord};
