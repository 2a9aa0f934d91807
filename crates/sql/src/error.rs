//! The crate's error type.

use thiserror::Error;

/// Every failure the streaming engine reports. Untrusted input (SQL text, options,
/// checkpoint files, records) ends here with a message naming the offending value.
#[derive(Debug, Error)]
pub enum SqlError {
    /// The query text or a declaration is not valid.
    #[error("invalid query: {0}")]
    Query(String),
    /// The query is valid SQL but not a valid streaming query (Spark's analysis errors).
    #[error("{0}")]
    Unsupported(String),
    /// An option of a source or sink is missing or has a bad value.
    #[error("invalid option {key}: {message}")]
    Option { key: String, message: String },
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// The cluster cannot be reached, or a topic a query names is not there.
    #[error("kafka: {0}")]
    Broker(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A checkpoint file is unreadable or inconsistent.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Data loss detected in a source (offsets gone) with failOnDataLoss=true.
    #[error("data loss: {0}")]
    DataLoss(String),
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> SqlError {
        SqlError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn option(key: &str, message: impl Into<String>) -> SqlError {
        SqlError::Option {
            key: key.to_string(),
            message: message.into(),
        }
    }
}
