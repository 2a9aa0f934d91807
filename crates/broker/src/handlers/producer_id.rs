//! InitProducerId for idempotent producers (transactional ids come with transactions).

use std::sync::Arc;

use runnel_protocol::kp::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, ResponseFuture};
use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: InitProducerIdRequest = decode_body(&req.body, req.api_version)?;
    let mut response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(code) = refused(az, body.transactional_id.as_ref().map(|t| t.0.as_str())) {
        return ready(req, &response.with_error_code(code.code()));
    }
    if let Some(tid) = body.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        let (code, durable) = match broker.txns.init_producer(
            broker,
            &tid.0,
            body.transaction_timeout_ms,
            body.producer_id.0,
            body.producer_epoch,
        ) {
            Ok((id, epoch, durable)) => {
                response = response
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(epoch);
                (ErrorCode::None, durable)
            }
            Err(e) => {
                tracing::debug!(transactional_id = %tid.0, error = %e, "InitProducerId refused");
                (e.code, None)
            }
        };
        let req = req.clone();
        return Ok(Box::pin(async move {
            let failed = match durable {
                Some((p, at)) => p.wait_acknowledged(at).await.err(),
                None => None,
            };
            let code = failed.unwrap_or(code);
            if code != ErrorCode::None {
                response = response
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
            }
            super::encode(&req, &response.with_error_code(code.code()))
        }));
    }
    // KIP-360: an idempotent producer that lost track of its sequence asks for a bump of
    // its epoch; a fresh producer (id -1) gets a new id.
    let (id, epoch) = if body.producer_id.0 >= 0
        && body.producer_epoch >= 0
        && body.producer_epoch < i16::MAX - 1
    {
        (Ok(body.producer_id.0), body.producer_epoch + 1)
    } else {
        (broker.allocate_producer_id(), 0)
    };
    match id {
        Ok(id) => {
            response = response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
        }
        Err(e) => {
            tracing::error!(error = %e, "could not allocate a producer id");
            response = response.with_error_code(e.code.code());
        }
    }
    ready(req, &response)
}

/// Kafka: WRITE on the transactional id; an idempotent producer needs IDEMPOTENT_WRITE
/// on the cluster or WRITE on some topic (Kafka 3's rule).
fn refused(az: &crate::authz::Ctx, tid: Option<&str>) -> Option<ErrorCode> {
    use crate::authz::acl::{Operation, ResourceType};
    match tid.filter(|t| !t.is_empty()) {
        Some(tid) => (!az.allowed(Operation::Write, ResourceType::TransactionalId, tid))
            .then_some(ErrorCode::TransactionalIdAuthorizationFailed),
        None => (!az.any_of_type(Operation::Write, ResourceType::Topic)
            && !az.cluster(Operation::IdempotentWrite))
        .then_some(ErrorCode::ClusterAuthorizationFailed),
    }
}
