//! Fetch: read whole batches from each requested partition; long-poll until `min_bytes`
//! are available or `max_wait_ms` passes. Sessionless: every request is a full fetch
//! (session id 0), which Kafka's protocol lets any client fall back to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_log::LogError;
use runnel_protocol::kp::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use runnel_protocol::kp::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};
use uuid::Uuid;

use super::{encode, ResponseFuture};
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::partition::Partition;

/// A client may ask to wait for longer; a connection is not parked beyond this.
const MAX_WAIT_CAP_MS: u64 = 60_000;

struct Wanted {
    topic: TopicName,
    topic_id: Uuid,
    partition_index: i32,
    partition: Option<Arc<Partition>>,
    /// Set when the topic itself is unknown (by name or by id).
    topic_error: Option<ErrorCode>,
    fetch_offset: i64,
    max_bytes: usize,
}

pub fn handle(broker: &Arc<Broker>, req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    let body: FetchRequest = decode_body(&req.body, req.api_version)?;
    let by_id = req.api_version >= 13;
    if body.session_id != 0 {
        let response =
            FetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code());
        return super::ready(req, &response);
    }
    let mut wanted = Vec::new();
    for t in body.topics {
        let topic = if by_id {
            broker.topics.get_by_id(t.topic_id)
        } else {
            broker.topics.get(&t.topic.0)
        };
        let topic_error = match (&topic, by_id) {
            (Some(_), _) => None,
            (None, true) => Some(ErrorCode::UnknownTopicId),
            (None, false) => Some(ErrorCode::UnknownTopicOrPartition),
        };
        for p in t.partitions {
            let partition = topic.as_ref().and_then(|tp| {
                usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| tp.partitions.get(i).cloned())
            });
            wanted.push(Wanted {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partition_index: p.partition,
                partition,
                topic_error,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
    }
    let read_committed = body.isolation_level == 1;
    let min_bytes = body.min_bytes.max(0) as usize;
    let max_bytes = if body.max_bytes <= 0 {
        i32::MAX as usize
    } else {
        body.max_bytes as usize
    };
    let max_wait = Duration::from_millis((body.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP_MS));
    let broker = broker.clone();
    let req = req.clone();
    Ok(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut appended = broker.appended.subscribe();
        loop {
            appended.borrow_and_update();
            let (response, bytes, any_error) = read_all(&wanted, max_bytes, read_committed, by_id);
            let expired = tokio::time::Instant::now() >= deadline;
            if bytes >= min_bytes || any_error || expired || wanted.is_empty() {
                return encode(&req, &response);
            }
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return encode(&req, &response) },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }))
}

/// One pass over the wanted partitions; returns the response, bytes read, and whether
/// any partition has an error (which makes Kafka answer at once).
fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
    by_id: bool,
) -> (FetchResponse, usize, bool) {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut total = 0usize;
    let mut any_error = false;
    for w in wanted {
        let mut data = PartitionData::default()
            .with_partition_index(w.partition_index)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1))
            .with_aborted_transactions(if read_committed {
                Some(Vec::new())
            } else {
                None
            })
            .with_records(Some(Bytes::new()));
        match (&w.partition, w.topic_error) {
            (_, Some(code)) => {
                data = data.with_error_code(code.code());
                any_error = true;
            }
            (None, None) => {
                data = data.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                any_error = true;
            }
            (Some(p), None) => {
                let log = p.log.lock();
                let hw = log.log_end_offset();
                data = data
                    .with_high_watermark(hw)
                    .with_last_stable_offset(hw)
                    .with_log_start_offset(log.log_start_offset());
                let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
                // KIP-74: the first batch of the response is returned even when it is
                // larger than the limits, so a consumer can always make progress.
                match log.read(w.fetch_offset, budget, hw, total == 0) {
                    Ok(r) => {
                        total += r.records.len();
                        data = data.with_records(Some(Bytes::from(r.records)));
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => {
                        data = data.with_error_code(ErrorCode::OffsetOutOfRange.code());
                        any_error = true;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "fetch read failed");
                        data = data.with_error_code(ErrorCode::KafkaStorageError.code());
                        any_error = true;
                    }
                }
            }
        }
        let same_topic = topics.last().is_some_and(|t| {
            if by_id {
                t.topic_id == w.topic_id
            } else {
                t.topic == w.topic
            }
        });
        if !same_topic {
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(w.topic.clone())
                    .with_topic_id(w.topic_id),
            );
        }
        topics
            .last_mut()
            .expect("pushed above")
            .partitions
            .push(data);
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        any_error,
    )
}
