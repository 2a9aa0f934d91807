//! Errors: [`MetaError`] for starting a node (disk, config), [`ControllerError`] for the
//! controller RPCs (each with a [`ErrorKind`] that maps onto one Kafka error code).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Starting or running a metadata node failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata config: {0}")]
    Config(String),
    #[error("metadata storage {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata storage {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("metadata raft: {0}")]
    Raft(String),
}

impl MetaError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MetaError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What went wrong with a controller request; each maps onto one Kafka error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// NOT_CONTROLLER (41): the node asked is not the active controller.
    NotController,
    /// INVALID_REPLICATION_FACTOR (38).
    InvalidReplicationFactor,
    /// INVALID_REPLICA_ASSIGNMENT (39).
    InvalidReplicaAssignment,
    /// TOPIC_ALREADY_EXISTS (36).
    TopicAlreadyExists,
    /// UNKNOWN_TOPIC_OR_PARTITION (3) (also UNKNOWN_TOPIC_ID for AlterPartition).
    UnknownTopicOrPartition,
    /// INVALID_PARTITIONS (37).
    InvalidPartitions,
    /// INVALID_TOPIC_EXCEPTION (17).
    InvalidTopic,
    /// STALE_BROKER_EPOCH (77) (also a broker that is not registered).
    StaleBrokerEpoch,
    /// FENCED_LEADER_EPOCH (74): AlterPartition named another leader epoch.
    FencedLeaderEpoch,
    /// INVALID_UPDATE_VERSION (108): AlterPartition named another partition epoch.
    InvalidUpdateVersion,
    /// NOT_LEADER_OR_FOLLOWER (6): AlterPartition from a broker that is not the leader.
    NotLeaderOrFollower,
    /// INELIGIBLE_REPLICA (107): a new ISR member that is not a replica or is fenced.
    IneligibleReplica,
    /// INVALID_REQUEST (42): e.g. a new ISR without the leader.
    InvalidRequest,
    /// NO_REASSIGNMENT_IN_PROGRESS (85).
    NoReassignmentInProgress,
    /// PREFERRED_LEADER_NOT_AVAILABLE (80).
    PreferredLeaderNotAvailable,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE (83): unclean election found no live replica.
    EligibleLeadersNotAvailable,
    /// ELECTION_NOT_NEEDED (84).
    ElectionNotNeeded,
    /// REQUEST_TIMED_OUT (7): no controller answered before the deadline.
    Timeout,
    /// Something else kept the controller from deciding (Kafka: UNKNOWN_SERVER_ERROR or a
    /// retriable NOT_CONTROLLER, as the caller prefers).
    Unavailable,
}

impl ErrorKind {
    /// The Kafka error code. [`ErrorKind::Unavailable`] maps to NOT_CONTROLLER (41), which
    /// Kafka clients retry.
    pub fn kafka_code(self) -> i16 {
        match self {
            ErrorKind::NotController | ErrorKind::Unavailable => 41,
            ErrorKind::InvalidReplicationFactor => 38,
            ErrorKind::InvalidReplicaAssignment => 39,
            ErrorKind::TopicAlreadyExists => 36,
            ErrorKind::UnknownTopicOrPartition => 3,
            ErrorKind::InvalidPartitions => 37,
            ErrorKind::InvalidTopic => 17,
            ErrorKind::StaleBrokerEpoch => 77,
            ErrorKind::FencedLeaderEpoch => 74,
            ErrorKind::InvalidUpdateVersion => 108,
            ErrorKind::NotLeaderOrFollower => 6,
            ErrorKind::IneligibleReplica => 107,
            ErrorKind::InvalidRequest => 42,
            ErrorKind::NoReassignmentInProgress => 85,
            ErrorKind::PreferredLeaderNotAvailable => 80,
            ErrorKind::EligibleLeadersNotAvailable => 83,
            ErrorKind::ElectionNotNeeded => 84,
            ErrorKind::Timeout => 7,
        }
    }
}

/// A controller request failed: what kind (for the Kafka error code) and a message naming
/// the thing that was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControllerError {
    pub kind: ErrorKind,
    pub message: String,
    /// For [`ErrorKind::NotController`]: the node that is, when known.
    #[serde(default)]
    pub leader: Option<i32>,
}

impl ControllerError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ControllerError {
            kind,
            message: message.into(),
            leader: None,
        }
    }

    pub fn not_controller(me: i32, leader: Option<i32>) -> Self {
        let message = match leader {
            Some(l) => format!("node {me} is not the active controller; node {l} is"),
            None => format!("node {me} is not the active controller and knows of none"),
        };
        ControllerError {
            kind: ErrorKind::NotController,
            message,
            leader,
        }
    }

    /// Worth asking again (maybe another node): the controller moved or was unavailable.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::NotController | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }
}
