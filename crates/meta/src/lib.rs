//! Cluster metadata for Runnel's replicated mode (KRaft's job in Kafka).
//!
//! - [`image`]: the metadata records and the image they build: brokers, topics,
//!   partition leaders, replicas, ISR and leader epochs. Every node holds the same image.
//!
//! The Raft quorum that orders the records and the controller that decides what to
//! write live beside it (see README.md).

pub mod image;

pub use image::{BrokerImage, ClusterImage, MetadataRecord, PartitionImage, TopicImage};
