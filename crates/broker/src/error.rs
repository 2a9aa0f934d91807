//! Kafka error codes and the broker's typed error that carries one.

use runnel_log::LogError;
use thiserror::Error;

/// The Kafka error codes Runnel returns (numbers from Kafka's `Errors` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ErrorCode {
    None = 0,
    UnknownServerError = -1,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    ReplicaNotAvailable = 9,
    NotController = 41,
    NotCoordinator = 16,
    NotEnoughReplicas = 19,
    NotEnoughReplicasAfterAppend = 20,
    PreferredLeaderNotAvailable = 80,
    ElectionNotNeeded = 84,
    NoReassignmentInProgress = 85,
    EligibleLeadersNotAvailable = 83,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    CoordinatorNotAvailable = 15,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidTopic = 17,
    RecordListTooLarge = 18,
    InvalidFetchSize = 4,
    InvalidCommitOffsetSize = 28,
    InvalidRequiredAcks = 21,
    InvalidTimestamp = 32,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidRequest = 42,
    PolicyViolation = 44,
    InvalidRegularExpression = 128,
    UnsupportedForMessageFormat = 43,
    OutOfOrderSequenceNumber = 45,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    InvalidProducerIdMapping = 49,
    InvalidTransactionTimeout = 50,
    ConcurrentTransactions = 51,
    OperationNotAttempted = 55,
    ProducerFenced = 90,
    TransactionalIdNotFound = 105,
    InvalidConfig = 40,
    InvalidReplicaAssignment = 39,
    TopicDeletionDisabled = 73,
    KafkaStorageError = 56,
    LogDirNotFound = 57,
    FetchSessionIdNotFound = 70,
    InvalidFetchSessionEpoch = 71,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    UnsupportedCompressionType = 76,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    MemberIdRequired = 79,
    FencedInstanceId = 82,
    GroupSubscribedToTopic = 86,
    FencedMemberEpoch = 110,
    UnreleasedInstanceId = 111,
    UnsupportedAssignor = 112,
    StaleMemberEpoch = 113,
    InvalidRecord = 87,
    /// KIP-447: OffsetFetch with `require_stable` for a partition whose offsets an open
    /// transaction has committed (the client retries).
    UnstableOffsetCommit = 88,
    UnknownTopicId = 100,
    // Authorization and quotas (crate::authz).
    TopicAuthorizationFailed = 29,
    GroupAuthorizationFailed = 30,
    ClusterAuthorizationFailed = 31,
    TransactionalIdAuthorizationFailed = 53,
    SecurityDisabled = 54,
    ThrottlingQuotaExceeded = 89,
    // Share groups (crate::coordinators::share).
    GroupMaxSizeReached = 81,
    InvalidRecordState = 121,
    ShareSessionNotFound = 122,
    InvalidShareSessionEpoch = 123,
    ShareSessionLimitReached = 133,
}

impl ErrorCode {
    pub fn code(self) -> i16 {
        self as i16
    }
}

/// The longest error message sent to a client.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// An error with the Kafka code a client will see and a message for humans.
#[derive(Debug, Error, Clone)]
#[error("{message}")]
pub struct BrokerError {
    pub code: ErrorCode,
    pub message: String,
    /// KIP-467: the records of a batch that caused the refusal, as (index in the batch,
    /// message); empty when the refusal concerns the batch as a whole.
    pub record_errors: Vec<(i32, String)>,
}

impl BrokerError {
    /// `message` is cut to [`MAX_ERROR_MESSAGE_BYTES`]: it may echo client input (a
    /// topic name, a config value), and a response field in a non-flexible version holds
    /// at most 32,767 bytes; an over-long one could not be encoded at all.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES - 3;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        BrokerError {
            code,
            message,
            record_errors: Vec::new(),
        }
    }

    /// A refusal caused by single records of a batch, worded as Kafka's
    /// `RecordValidationException` (naming the first three).
    pub fn records(code: ErrorCode, record_errors: Vec<(i32, String)>) -> Self {
        let shown: Vec<String> = record_errors
            .iter()
            .take(3)
            .map(|(i, m)| format!("record {i}: {m}"))
            .collect();
        let message = format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            record_errors.len(),
            shown.join(", ")
        );
        BrokerError {
            code,
            message,
            record_errors,
        }
    }
    pub fn storage(path: &std::path::Path, e: std::io::Error) -> Self {
        BrokerError::new(
            ErrorCode::KafkaStorageError,
            format!("{}: {e}", path.display()),
        )
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        let code = match &e {
            LogError::Io { .. } => ErrorCode::KafkaStorageError,
            LogError::CorruptBatch(_) => ErrorCode::CorruptMessage,
            LogError::InvalidRecord(_) => ErrorCode::InvalidRecord,
            LogError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            LogError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
            LogError::UnsupportedCompression(_) => ErrorCode::UnsupportedCompressionType,
            LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            LogError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::InflatedTooLarge { .. } => ErrorCode::MessageTooLarge,
            LogError::RecordErrors { .. } => ErrorCode::InvalidRecord,
            LogError::Damaged { .. } | LogError::Offline { .. } | LogError::DirLocked { .. } => {
                ErrorCode::KafkaStorageError
            }
        };
        BrokerError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let e = BrokerError::new(ErrorCode::InvalidTopic, "é".repeat(40_000));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(e.message.ends_with("..."));
        assert_eq!(
            BrokerError::new(ErrorCode::InvalidTopic, "short").message,
            "short"
        );
    }
}
