//! OffsetForLeaderEpoch: where a leader epoch ends, so a client (or follower) can detect
//! log truncation after a leader change.

use std::sync::Arc;

use runnel_protocol::kp::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use runnel_protocol::kp::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, ResponseFuture};
use crate::broker::Broker;
use crate::error::ErrorCode;

pub fn handle(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    use crate::authz::acl::Operation;
    let body: OffsetForLeaderEpochRequest = decode_body(&req.body, req.api_version)?;
    // Kafka: a follower (replica id >= 0) needs CLUSTER_ACTION, a client DESCRIBE on
    // each topic; refused partitions get TOPIC_AUTHORIZATION_FAILED.
    let follower_ok = (body.replica_id.0 >= 0).then(|| az.cluster(Operation::ClusterAction));
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in body.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        let authorized = follower_ok.unwrap_or_else(|| az.topic(Operation::Describe, &t.topic.0));
        for p in t.partitions {
            let mut r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match broker.topics.partition(&t.topic.0, p.partition) {
                _ if !authorized => {
                    r = r.with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                }
                None => r = r.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                Some(part) if !part.replica.lock().is_leader() => {
                    r = r.with_error_code(ErrorCode::NotLeaderOrFollower.code())
                }
                Some(part) if p.current_leader_epoch > part.leader_epoch() => {
                    r = r.with_error_code(ErrorCode::UnknownLeaderEpoch.code())
                }
                Some(part)
                    if p.current_leader_epoch >= 0
                        && p.current_leader_epoch < part.leader_epoch() =>
                {
                    r = r.with_error_code(ErrorCode::FencedLeaderEpoch.code())
                }
                Some(part) => {
                    let log = part.log.lock();
                    let (epoch, end) = if p.leader_epoch >= part.leader_epoch() {
                        (part.leader_epoch(), log.log_end_offset())
                    } else {
                        log.end_offset_for_epoch(p.leader_epoch)
                    };
                    r = r.with_leader_epoch(epoch).with_end_offset(end);
                }
            }
            partitions.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    ready(
        req,
        &OffsetForLeaderEpochResponse::default().with_topics(topics),
    )
}
