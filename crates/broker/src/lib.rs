//! Runnel's Kafka-compatible broker.
//!
//! `Server::start` binds the listener and opens storage; `Server::run` serves the Kafka
//! protocol until its shutdown future completes. Storage is `runnel-log`; wire types and
//! guarded decoding are `runnel-protocol`. This crate owns the request handlers, the
//! topic registry, and the delayed operations (long-poll fetch, acks=all group commit).

pub mod authz;
pub mod broker;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connections;
pub mod error;
pub mod fds;
pub mod fetch_session;
pub mod groups;
mod handlers;
pub mod http;
pub mod listeners;
pub mod metrics;
pub mod mirror;
pub mod partition;
pub mod quota;
pub mod replication;
pub mod response;
pub mod security;
pub mod server;
pub mod share;
pub mod topics;
pub mod txn;

pub use broker::Broker;
pub use config::{BrokerConfig, ConfigError};
pub use error::{BrokerError, ErrorCode};
pub use server::Server;
