//! Cluster metadata for Runnel's replicated mode (KRaft's job in Kafka).
//!
//! - [`image`]: the metadata records and the image they build: brokers, topics,
//!   partition leaders, replicas, ISR and leader epochs. Every node holds the same image.
//! - [`MetaNode`]: a controller voter: a Raft quorum member (openraft) whose log entries
//!   are batches of records and whose state machine is the image; while it is the Raft
//!   leader it is the active controller and decides ([`controller`]).
//! - [`ControllerClient`]: what brokers use to reach the active controller.
//!
//! See README.md for the on-disk layout, the RPC framing and the controller's rules.

mod client;
mod config;
pub mod controller;
mod error;
pub mod image;
mod network;
mod node;
mod rpc;
mod store;
pub mod transport;

pub use client::ControllerClient;
pub use config::{format_voters, parse_voters, ControllerDefaults, MetaConfig};
pub use error::{ControllerError, ErrorKind, MetaError};
pub use image::{
    BrokerEndpoint, BrokerImage, ClusterImage, MetadataRecord, PartitionImage, TopicImage,
    NO_LEADER,
};
pub use node::MetaNode;
pub use rpc::{
    AlterPartitionRequest, Elections, HeartbeatReply, NewTopic, QuorumReplica, QuorumState,
};
pub use store::RecordBatch;
