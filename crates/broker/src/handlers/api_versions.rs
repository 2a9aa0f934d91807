//! ApiVersions: advertises exactly the versions in runnel_protocol::SUPPORTED_APIS.

use runnel_protocol::kp::messages::api_versions_response::ApiVersion;
use runnel_protocol::kp::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest, SUPPORTED_APIS};

use super::{encode, ready, ResponseFuture};
use crate::error::ErrorCode;

fn response(error: ErrorCode) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(api_keys)
}

pub fn handle(req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    // The body (client software name and version, v3+) is informational only.
    let _: ApiVersionsRequest = decode_body(&req.body, req.api_version)?;
    ready(req, &response(ErrorCode::None))
}

/// The answer to an ApiVersions request at a version we do not speak: UNSUPPORTED_VERSION
/// with the full table, encoded as v0 (which every client can read).
pub fn unsupported_version(correlation_id: i32) -> super::ResponseFuture {
    let req = ParsedRequest {
        api_key: ApiKey::ApiVersions,
        api_version: 0,
        correlation_id,
        client_id: None,
        body: Default::default(),
    };
    let bytes = encode(&req, &response(ErrorCode::UnsupportedVersion));
    Box::pin(async move { bytes })
}
