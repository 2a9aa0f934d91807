//! Authorization of the share-group APIs (KIP-932) on their GROUP, as Kafka's KafkaApis
//! does: READ for ShareGroupHeartbeat, ShareFetch, ShareAcknowledge and
//! AlterShareGroupOffsets, DESCRIBE for ShareGroupDescribe and DescribeShareGroupOffsets,
//! DELETE for DeleteShareGroupOffsets. A refused group gets GROUP_AUTHORIZATION_FAILED in
//! the shape of its response; the handler does not run. ShareGroupDescribe and
//! DescribeShareGroupOffsets name several groups: their handlers ask per group.

use runnel_protocol::kp::messages::*;
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, ResponseFuture};
use crate::authz::acl::Operation;
use crate::error::ErrorCode;

/// The share-group API's group and the operation on it, for the single-group APIs.
fn single_group(req: &ParsedRequest) -> Result<Option<(String, Operation)>, DecodeError> {
    let v = req.api_version;
    Ok(match req.api_key {
        ApiKey::ShareGroupHeartbeat => {
            let b: ShareGroupHeartbeatRequest = decode_body(&req.body, v)?;
            Some((b.group_id.to_string(), Operation::Read))
        }
        ApiKey::ShareFetch => {
            let b: ShareFetchRequest = decode_body(&req.body, v)?;
            b.group_id.map(|g| (g.to_string(), Operation::Read))
        }
        ApiKey::ShareAcknowledge => {
            let b: ShareAcknowledgeRequest = decode_body(&req.body, v)?;
            b.group_id.map(|g| (g.to_string(), Operation::Read))
        }
        ApiKey::AlterShareGroupOffsets => {
            let b: AlterShareGroupOffsetsRequest = decode_body(&req.body, v)?;
            Some((b.group_id.to_string(), Operation::Read))
        }
        ApiKey::DeleteShareGroupOffsets => {
            let b: DeleteShareGroupOffsetsRequest = decode_body(&req.body, v)?;
            Some((b.group_id.to_string(), Operation::Delete))
        }
        _ => None,
    })
}

/// `Some(response)` when the principal may not act on the request's share group.
pub fn check(
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
) -> Result<Option<ResponseFuture>, DecodeError> {
    if !az.enabled() {
        return Ok(None);
    }
    let Some((group, op)) = single_group(req)? else {
        return Ok(None);
    };
    if az.group(op, &group) {
        return Ok(None);
    }
    let code = ErrorCode::GroupAuthorizationFailed.code();
    let msg = Some(crate::handlers::str_bytes(&format!(
        "not authorized to {op:?} share group '{group}'"
    )));
    let response = match req.api_key {
        ApiKey::ShareGroupHeartbeat => ready(
            req,
            &ShareGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(msg),
        ),
        ApiKey::ShareFetch => ready(
            req,
            &ShareFetchResponse::default()
                .with_error_code(code)
                .with_error_message(msg),
        ),
        ApiKey::ShareAcknowledge => ready(
            req,
            &ShareAcknowledgeResponse::default()
                .with_error_code(code)
                .with_error_message(msg),
        ),
        ApiKey::AlterShareGroupOffsets => ready(
            req,
            &AlterShareGroupOffsetsResponse::default()
                .with_error_code(code)
                .with_error_message(msg),
        ),
        _ => ready(
            req,
            &DeleteShareGroupOffsetsResponse::default()
                .with_error_code(code)
                .with_error_message(msg),
        ),
    }?;
    Ok(Some(response))
}
