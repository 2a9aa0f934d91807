//! Kafka wire protocol for Runnel.
//!
//! This crate owns three things and nothing else: the size-prefixed framing of requests,
//! the table of API versions Runnel implements (and therefore advertises), and decoding of
//! untrusted request frames without panicking. It knows nothing of storage or sockets.
//!
//! Message types come from the vendored `kafka-protocol` crate, generated from Kafka's own
//! JSON schemas; this crate re-exports it as [`kp`].

pub mod frame;
pub mod request;
pub mod versions;

pub use kafka_protocol as kp;
pub use request::{decode_body, encode_response, parse_request, DecodeError, ParsedRequest};
pub use versions::{supported_range, SUPPORTED_APIS};
