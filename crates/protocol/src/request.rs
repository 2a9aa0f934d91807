//! Decoding untrusted request frames.
//!
//! A frame from the network may be truncated, lie about counts, or name an API or version
//! we do not serve. None of that may panic the broker: every failure is a [`DecodeError`]
//! the connection handler turns into a Kafka error or a closed connection.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::panic::{catch_unwind, AssertUnwindSafe};
use thiserror::Error;

use crate::versions::supported_range;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("unknown api key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// A request whose header is decoded and whose body is still raw bytes.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<StrBytes>,
    pub body: Bytes,
}

/// Decodes the request header of one frame (without its size prefix).
///
/// Returns `UnsupportedVersion` for a known API at a version outside [`supported_range`];
/// the caller answers ApiVersions in that case (Kafka's rule) and closes otherwise.
pub fn parse_request(mut frame: Bytes) -> Result<ParsedRequest, DecodeError> {
    if frame.len() < 8 {
        return Err(malformed(
            "request header",
            format!("{} bytes is too short", frame.len()),
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let header_version = api_key.request_header_version(version);
    let header = guarded("request header", || {
        RequestHeader::decode(&mut frame, header_version)
    })?;
    match supported_range(api_key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => {
            return Err(DecodeError::UnsupportedVersion {
                api_key,
                version,
                correlation_id,
            })
        }
    }
    Ok(ParsedRequest {
        api_key,
        api_version: version,
        correlation_id: header.correlation_id,
        client_id: header.client_id,
        body: frame,
    })
}

/// Decodes a request body of type `T` at `version`.
pub fn decode_body<T: Decodable>(body: &Bytes, version: i16) -> Result<T, DecodeError> {
    let mut buf = body.clone();
    guarded("request body", || T::decode(&mut buf, version))
}

/// Encodes a response: size prefix, response header (v0 or v1 per the API), body.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, String> {
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("{api_key:?} v{version}: {e}"))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

fn malformed(what: &'static str, reason: String) -> DecodeError {
    DecodeError::Malformed { what, reason }
}

/// Runs a generated decoder, turning both its errors and any panic into `Malformed`.
/// The generated code is written to return errors, but a panic here would take down
/// every connection's task on this worker, so it gets a second fence.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, DecodeError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(malformed(what, e.to_string())),
        Err(_) => Err(malformed(what, "decoder panicked".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;
    use proptest::prelude::*;

    fn frame_for<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn round_trips_a_metadata_request() {
        let frame = frame_for(ApiKey::Metadata, 12, &MetadataRequest::default());
        let req = parse_request(frame).unwrap();
        assert_eq!(
            (req.api_key, req.api_version, req.correlation_id),
            (ApiKey::Metadata, 12, 7)
        );
        let _: MetadataRequest = decode_body(&req.body, 12).unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_versions() {
        let mut raw = frame_for(ApiKey::Metadata, 12, &MetadataRequest::default()).to_vec();
        raw[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            parse_request(raw.into()),
            Err(DecodeError::UnknownApiKey { api_key: 999, .. })
        ));
        let frame = frame_for(ApiKey::Metadata, 13, &MetadataRequest::default());
        assert!(matches!(
            parse_request(frame),
            Err(DecodeError::UnsupportedVersion { version: 13, .. })
        ));
    }

    #[test]
    fn huge_array_count_is_an_error_not_an_abort() {
        // Metadata v4: topics array count i32::MAX with no elements behind it.
        let mut raw = frame_for(ApiKey::Metadata, 4, &MetadataRequest::default()).to_vec();
        let body_at = raw.len() - 2; // topics count (-1 = null) is 4 bytes, then allow_auto (1)
        let _ = body_at;
        let header_len = raw.len() - MetadataRequest::default().compute_size(4).unwrap();
        raw.truncate(header_len);
        raw.extend_from_slice(&i32::MAX.to_be_bytes());
        let req = parse_request(raw.into()).unwrap();
        assert!(decode_body::<MetadataRequest>(&req.body, 4).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random frames never panic the decoder, whatever API they claim to be.
        #[test]
        fn random_frames_never_panic(key in 0i16..80, version in 0i16..20, tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut raw = Vec::new();
            raw.extend_from_slice(&key.to_be_bytes());
            raw.extend_from_slice(&version.to_be_bytes());
            raw.extend_from_slice(&1i32.to_be_bytes());
            raw.extend_from_slice(&tail);
            if let Ok(req) = parse_request(raw.into()) {
                let _ = decode_any(&req);
            }
        }

        /// Valid frames with bytes flipped or cut never panic the decoder.
        #[test]
        fn mutated_frames_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut raw = frame_for(ApiKey::Metadata, 12, &MetadataRequest::default()
                .with_topics(Some(vec![Default::default(), Default::default()]))).to_vec();
            for (at, byte) in flips { let n = raw.len(); raw[at % n] ^= byte; }
            raw.truncate(8.max(cut % (raw.len() + 1)));
            if let Ok(req) = parse_request(raw.into()) {
                let _ = decode_any(&req);
            }
        }
    }

    fn decode_any(req: &ParsedRequest) -> Result<(), DecodeError> {
        use kafka_protocol::messages::*;
        let v = req.api_version;
        match req.api_key {
            ApiKey::Produce => decode_body::<ProduceRequest>(&req.body, v).map(drop),
            ApiKey::Fetch => decode_body::<FetchRequest>(&req.body, v).map(drop),
            ApiKey::ListOffsets => decode_body::<ListOffsetsRequest>(&req.body, v).map(drop),
            ApiKey::Metadata => decode_body::<MetadataRequest>(&req.body, v).map(drop),
            ApiKey::ApiVersions => decode_body::<ApiVersionsRequest>(&req.body, v).map(drop),
            ApiKey::CreateTopics => decode_body::<CreateTopicsRequest>(&req.body, v).map(drop),
            ApiKey::DeleteTopics => decode_body::<DeleteTopicsRequest>(&req.body, v).map(drop),
            ApiKey::InitProducerId => decode_body::<InitProducerIdRequest>(&req.body, v).map(drop),
            ApiKey::OffsetForLeaderEpoch => {
                decode_body::<OffsetForLeaderEpochRequest>(&req.body, v).map(drop)
            }
            _ => Ok(()),
        }
    }
}
