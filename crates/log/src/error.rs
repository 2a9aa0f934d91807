use thiserror::Error;

/// What can go wrong in the log. Each variant maps to one Kafka error code in the broker.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    BatchTooLarge { size: usize, max: usize },
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("compression codec id {0} is not known")]
    UnsupportedCompression(u8),
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error(
        "the {codec:?} payload inflates past {cap} bytes (the cap derived from max.message.bytes)"
    )]
    InflatedTooLarge {
        codec: crate::batch::CompressionCodec,
        cap: u64,
    },
    /// Records refused one by one (KIP-467): (batch index, message) for each.
    #[error("{message}")]
    RecordErrors {
        message: String,
        record_errors: Vec<(i32, String)>,
    },
    #[error("log dir {dir} is in use by another process{} ({dir}/.lock is locked); stop that broker or point log.dirs elsewhere", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    DirLocked { dir: String, holder: Option<u32> },
    /// A segment file fails its checks somewhere recovery may not cut.
    #[error("{path} is damaged at byte {position}: {what}")]
    Damaged {
        path: String,
        position: u64,
        what: String,
    },
    /// The partition's files failed their checks at open: nothing is read or written
    /// until an operator repairs them (KAFKA_STORAGE_ERROR).
    #[error("partition {dir} is offline: {reason}")]
    Offline { dir: String, reason: String },
    #[error("offset {offset} is outside the log's range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
}

impl LogError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, LogError>;
