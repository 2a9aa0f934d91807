//! ListOffsets: earliest, latest, by timestamp, and max timestamp (KIP-734).

use std::sync::Arc;

use runnel_protocol::kp::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use runnel_protocol::kp::messages::{ListOffsetsRequest, ListOffsetsResponse};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, ResponseFuture};
use crate::broker::Broker;
use crate::error::ErrorCode;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;

pub fn handle(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ListOffsetsRequest = decode_body(&req.body, req.api_version)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in body.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        // Kafka: DESCRIBE on the topic.
        let authorized = az.topic(crate::authz::acl::Operation::Describe, &t.name.0);
        for p in t.partitions {
            let mut resp = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            match broker.topics.partition(&t.name.0, p.partition_index) {
                _ if !authorized => {
                    resp = resp.with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                }
                None => resp = resp.with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                Some(partition) if !partition.replica.lock().is_leader() => {
                    resp = resp.with_error_code(ErrorCode::NotLeaderOrFollower.code())
                }
                Some(partition) if partition.is_offline() => {
                    resp = resp.with_error_code(ErrorCode::KafkaStorageError.code())
                }
                Some(partition) => {
                    let log = partition.log.lock();
                    // Clients see offsets up to the high watermark (the log end on a
                    // single node); read_committed clients up to the last stable offset.
                    let hw = partition.high_watermark_with(&log);
                    let found = match p.timestamp {
                        LATEST if body.isolation_level == 1 => {
                            Ok(Some((log.last_stable_offset().min(hw), -1)))
                        }
                        LATEST => Ok(Some((hw, -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                        MAX_TIMESTAMP => log.max_timestamp_offset(),
                        // Tiered storage is not offered: nothing is pending upload.
                        EARLIEST_PENDING_UPLOAD => Ok(None),
                        ts if ts >= 0 => log.offset_for_timestamp(ts),
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            resp = resp.with_offset(offset).with_timestamp(ts);
                            if req.api_version >= 4 {
                                resp = resp.with_leader_epoch(partition.leader_epoch());
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(topic = %t.name.0, partition = p.partition_index, error = %e, "list offsets failed");
                            resp = resp.with_error_code(ErrorCode::KafkaStorageError.code());
                        }
                    }
                }
            }
            partitions.push(resp);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ready(req, &ListOffsetsResponse::default().with_topics(topics))
}
