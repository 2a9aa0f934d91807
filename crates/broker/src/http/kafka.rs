//! The admin API's changes as Kafka requests: each is encoded, handed to
//! `handlers::dispatch` exactly as a client's request read off a connection is, and the
//! response decoded. So a topic created, a config altered or a record produced over HTTP
//! passes the one validation path the Kafka handlers own; nothing here re-checks it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::{Buf, BytesMut};
use runnel_protocol::kp::messages::{ApiKey, ResponseHeader};
use runnel_protocol::kp::protocol::{Decodable, Encodable, StrBytes};
use runnel_protocol::kp::ResponseError;
use runnel_protocol::{supported_range, ParsedRequest};

use super::ApiError;
use crate::broker::Broker;
use crate::handlers::dispatch;

/// The client id the broker's logs show for requests made by the admin API.
const CLIENT_ID: &str = "runnel-http";

/// Sends `body` as a `key` request at `version` through the Kafka handlers and decodes the
/// response. `peer` is the HTTP client (the group coordinator records it as client host).
pub async fn call<Req: Encodable, Resp: Decodable>(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    key: ApiKey,
    version: i16,
    body: &Req,
) -> Result<Resp, ApiError> {
    debug_assert!(
        supported_range(key).is_some_and(|(lo, hi)| (lo..=hi).contains(&version)),
        "{key:?} v{version} is not served"
    );
    let mut buf = BytesMut::new();
    body.encode(&mut buf, version)
        .map_err(|e| ApiError::internal(format!("cannot encode {key:?} v{version}: {e}")))?;
    let req = ParsedRequest {
        api_key: key,
        api_version: version,
        correlation_id: 0,
        client_id: Some(StrBytes::from_static_str(CLIENT_ID)),
        body: buf.freeze(),
    };
    // As the HTTP caller (principal and address), on the inter-broker listener.
    let conn = super::auth::conn(broker, peer);
    let future = dispatch(broker, req, &conn)
        .map_err(|e| ApiError::internal(format!("{key:?} v{version} refused: {e}")))?;
    let Some(response) = future.await else {
        return Err(ApiError::internal(format!(
            "{key:?} v{version}: no response"
        )));
    };
    let mut bytes = response
        .to_bytes()
        .map_err(|e| ApiError::internal(format!("{key:?} v{version}: {e}")))?;
    let mut decode = || -> anyhow::Result<Resp> {
        bytes.advance(4); // size prefix
        ResponseHeader::decode(&mut bytes, key.response_header_version(version))?;
        Resp::decode(&mut bytes, version)
    };
    decode().map_err(|e| ApiError::internal(format!("cannot decode the {key:?} response: {e}")))
}

/// Kafka's name for an error code (`INVALID_CONFIG`), or the number when unknown.
pub fn error_name(code: i16) -> String {
    let Some(e) = ResponseError::try_from_code(code) else {
        return format!("error code {code}");
    };
    let camel = format!("{e:?}");
    if !camel.chars().all(|c| c.is_ascii_alphanumeric()) {
        return format!("error code {code}"); // a code this table does not name
    }
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The HTTP status for a Kafka error code: 404 for what does not exist, 409 for a
/// conflict with the current state, 403 for an authorization refusal, 400 for the rest
/// (a refused input).
fn status_of(code: i16) -> StatusCode {
    match error_name(code).as_str() {
        "UNKNOWN_TOPIC_OR_PARTITION" | "UNKNOWN_TOPIC_ID" | "GROUP_ID_NOT_FOUND" => {
            StatusCode::NOT_FOUND
        }
        "TOPIC_ALREADY_EXISTS"
        | "NON_EMPTY_GROUP"
        | "UNKNOWN_MEMBER_ID"
        | "ILLEGAL_GENERATION"
        | "REBALANCE_IN_PROGRESS"
        | "FENCED_MEMBER_EPOCH"
        | "STALE_MEMBER_EPOCH" => StatusCode::CONFLICT,
        "NOT_CONTROLLER"
        | "NOT_LEADER_OR_FOLLOWER"
        | "COORDINATOR_NOT_AVAILABLE"
        | "NOT_COORDINATOR"
        | "KAFKA_STORAGE_ERROR"
        | "LEADER_NOT_AVAILABLE"
        | "REQUEST_TIMED_OUT"
        | "NOT_ENOUGH_REPLICAS"
        | "NOT_ENOUGH_REPLICAS_AFTER_APPEND" => StatusCode::SERVICE_UNAVAILABLE,
        // The authorizer refused (the same ACLs as on the Kafka listener).
        "TOPIC_AUTHORIZATION_FAILED"
        | "GROUP_AUTHORIZATION_FAILED"
        | "CLUSTER_AUTHORIZATION_FAILED"
        | "TRANSACTIONAL_ID_AUTHORIZATION_FAILED" => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Ok for error code 0; otherwise the refusal as the handler worded it, prefixed with
/// Kafka's error name (`INVALID_CONFIG: ...`), with a status to match.
pub fn check(code: i16, message: Option<&StrBytes>, what: &str) -> Result<(), ApiError> {
    if code == 0 {
        return Ok(());
    }
    let name = error_name(code);
    let detail = message
        .map(|m| m.to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            ResponseError::try_from_code(code).map_or_else(String::new, |e| e.to_string())
        });
    Err(ApiError {
        status: status_of(code),
        message: format!("{name}: {what}: {detail}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(40), "INVALID_CONFIG");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(-2), "error code -2");
        assert_eq!(error_name(i16::MAX), "error code 32767");
        assert_eq!(status_of(3), StatusCode::NOT_FOUND);
        assert_eq!(status_of(36), StatusCode::CONFLICT);
        assert_eq!(status_of(40), StatusCode::BAD_REQUEST);
        assert!(check(0, None, "x").is_ok());
        let e = check(
            40,
            Some(&StrBytes::from_static_str("retention.ms: bad")),
            "topic t",
        )
        .unwrap_err();
        assert_eq!(e.message, "INVALID_CONFIG: topic t: retention.ms: bad");
    }
}
