//! Request framing: every Kafka request is a big-endian i32 size followed by that many bytes.

use thiserror::Error;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 104_857_600;

/// Why a frame header was refused. Each of these closes the connection, as in Kafka.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size} is negative")]
    NegativeSize { size: i32 },
    #[error("frame size {size} is below the smallest request header (8 bytes)")]
    TooSmall { size: i32 },
    #[error("frame size {size} exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i32, max: usize },
}

/// Validates the 4-byte size prefix and returns the body length to read.
pub fn frame_body_len(prefix: [u8; 4], max_request_bytes: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::NegativeSize { size });
    }
    // api_key (2) + api_version (2) + correlation_id (4) is the least a request can hold.
    if size < 8 {
        return Err(FrameError::TooSmall { size });
    }
    if size as usize > max_request_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_request_bytes,
        });
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(frame_body_len(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(
            frame_body_len((-1i32).to_be_bytes(), 100),
            Err(FrameError::NegativeSize { size: -1 })
        );
        assert_eq!(
            frame_body_len(7i32.to_be_bytes(), 100),
            Err(FrameError::TooSmall { size: 7 })
        );
        assert_eq!(
            frame_body_len(101i32.to_be_bytes(), 100),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
    }
}
