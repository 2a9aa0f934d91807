//! The client's error type. Every variant names what was being done and, for errors the
//! broker returned, Kafka's name for the error code, so a CLI can print it as it is.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use std::time::Duration;

/// Errors from [`crate::Client`] and [`crate::Connection`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No bootstrap server could be reached.
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    /// The socket failed while a request was in flight.
    #[error("I/O error on the connection to {addr}: {error}")]
    Io { addr: String, error: std::io::Error },
    /// The broker closed the connection (or it was closed after an earlier failure).
    #[error("the connection to {addr} was closed{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Disconnected {
        addr: String,
        reason: Option<String>,
    },
    /// No answer within the request timeout.
    #[error("{api:?} request to {addr} got no answer within {timeout:?}")]
    Timeout {
        addr: String,
        api: ApiKey,
        timeout: Duration,
    },
    /// The broker does not serve a version of an API this client needs.
    #[error("the broker at {addr} does not support {api:?} v{version} ({supported}), which this client needs")]
    UnsupportedVersion {
        addr: String,
        api: ApiKey,
        version: i16,
        supported: String,
    },
    /// The broker sent something this client cannot parse.
    #[error("malformed {api:?} response from {addr}: {detail}")]
    Protocol {
        addr: String,
        api: ApiKey,
        detail: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {error} (Kafka error code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        /// What was being done, e.g. "produce to tweets/0".
        context: String,
        error: ResponseError,
        /// The broker's error code (also in `error`; kept for `Display`).
        code: i16,
        /// The broker's error message, when it sent one.
        message: Option<String>,
    },
    /// The topic has no such partition.
    #[error("topic {topic} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: usize,
    },
    /// The partition's leader is not a broker listed in the metadata.
    #[error("no leader is known for {topic}/{partition}")]
    NoLeader { topic: String, partition: i32 },
    /// Records could not be encoded or decoded.
    #[error("{0}")]
    Records(String),
    /// The caller passed something unusable (an address, a topic name ...).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// Builds [`Error::Kafka`] from a non-zero error code.
    pub fn kafka(context: impl Into<String>, code: i16, message: Option<String>) -> Self {
        let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code));
        Error::Kafka {
            context: context.into(),
            error,
            code,
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// Returns `Ok(())` for code 0 and [`Error::Kafka`] otherwise.
    pub fn check(
        code: i16,
        context: impl FnOnce() -> String,
        message: Option<String>,
    ) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Self::kafka(context(), code, message))
        }
    }

    /// The Kafka error the broker returned, if this is one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            Error::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether retrying (after a metadata refresh) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { error, .. } => error.is_retriable(),
            Error::Disconnected { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::NoLeader { .. } => true,
            _ => false,
        }
    }

    /// CONCURRENT_TRANSACTIONS: the coordinator is still completing an earlier
    /// transaction of this producer; Kafka's producer retries it after a short backoff.
    pub fn is_concurrent_transactions(&self) -> bool {
        matches!(
            self,
            Error::Kafka {
                error: ResponseError::ConcurrentTransactions,
                ..
            }
        )
    }

    /// A one-line suggestion of what to do about this error, for CLI messages.
    pub fn hint(&self) -> Option<&'static str> {
        use ResponseError as E;
        match self {
            Error::Connect { .. } => Some("is the broker running? check --bootstrap-server"),
            Error::UnsupportedVersion { .. } => {
                Some("upgrade the broker or use a client that matches it")
            }
            Error::Kafka { error, .. } => match error {
                E::UnknownTopicOrPartition => Some("check the topic name (runnel topics list); create it with runnel topics create NAME"),
                E::TopicAlreadyExists => Some("pick another name, or delete the topic first"),
                E::InvalidTopicException => {
                    Some("topic names use [a-zA-Z0-9._-], at most 249 characters, not '.' or '..'")
                }
                E::MessageTooLarge | E::RecordListTooLarge => {
                    Some("send smaller records or raise message.max.bytes / max.message.bytes")
                }
                E::InvalidPartitions => Some("use a partition count of at least 1"),
                E::InvalidReplicationFactor => {
                    Some("use a replication factor the cluster can place (1 on a single node)")
                }
                E::NotEnoughReplicas | E::NotEnoughReplicasAfterAppend => {
                    Some("use acks=1 or bring more replicas in sync")
                }
                E::OffsetOutOfRange => {
                    Some("choose an offset between the partition's earliest and latest offsets")
                }
                E::InvalidConfig => Some("check the topic configuration keys and values"),
                E::UnsupportedCompressionType => Some("choose another --compression"),
                E::CorruptMessage => Some("the broker refused the batch as corrupt"),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_name_the_error_and_context() {
        let e = Error::kafka("produce to tweets/0", 3, Some("no such topic".into()));
        let s = e.to_string();
        assert!(s.contains("produce to tweets/0"), "{s}");
        assert!(s.contains("UnknownTopicOrPartition"), "{s}");
        assert!(s.contains("code 3"), "{s}");
        assert!(s.contains("no such topic"), "{s}");
        assert_eq!(
            e.kafka_error(),
            Some(ResponseError::UnknownTopicOrPartition)
        );
        assert!(e.is_retriable());
        assert!(e.hint().is_some());
    }

    #[test]
    fn empty_broker_messages_are_dropped_and_unknown_codes_kept() {
        let e = Error::kafka("x", 9999, Some(String::new()));
        assert_eq!(
            e.to_string(),
            "x: Unknown error code: 9999 (Kafka error code 9999)"
        );
        assert!(!e.is_retriable());
        assert!(Error::check(0, || unreachable!(), None).is_ok());
    }
}
