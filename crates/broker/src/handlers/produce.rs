//! Produce: validate and append each partition's batch, then answer now (acks 0/1) or
//! once the batch is durable (acks=all).

use std::sync::Arc;

use bytes::BytesMut;
use runnel_log::BatchHeader;
use runnel_protocol::kp::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use runnel_protocol::kp::messages::{ProduceRequest, ProduceResponse};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{encode, now_ms, str_bytes, ResponseFuture};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::partition::Partition;

pub fn handle(broker: &Arc<Broker>, req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    let body: ProduceRequest = decode_body(&req.body, req.api_version)?;
    let acks = body.acks;
    let mut responses = Vec::with_capacity(body.topic_data.len());
    // (topic index, partition index in response, partition, offset that must be durable)
    let mut durable_waits: Vec<(usize, usize, Arc<Partition>, i64)> = Vec::new();
    let mut appended = false;
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let topic_entry = broker.topics.get(&name);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let mut resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let partition = topic_entry.as_ref().and_then(|t| {
                usize::try_from(pd.index)
                    .ok()
                    .and_then(|i| t.partitions.get(i).cloned())
            });
            let result = match (partition, pd.records) {
                _ if !matches!(acks, -1..=1) => Err(BrokerError::new(
                    ErrorCode::InvalidRequiredAcks,
                    format!("acks={acks} is not 0, 1 or -1"),
                )),
                (None, _) => Err(BrokerError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("{name}-{} does not exist", pd.index),
                )),
                (Some(_), None) => Err(BrokerError::new(ErrorCode::InvalidRecord, "no records")),
                (Some(p), Some(records)) => {
                    let compacted = topic_entry
                        .as_ref()
                        .is_some_and(|t| crate::config::topic_compaction(&t.configs).is_some());
                    let batch_bytes = records.len() as u64;
                    append(broker, &p, &records, compacted).map(|r| (p, r, batch_bytes))
                }
            };
            match result {
                Ok((p, r, batch_bytes)) => {
                    appended |= !r.duplicate;
                    if !r.duplicate {
                        broker
                            .metrics
                            .record_produce(&name, batch_bytes, r.record_count as u64);
                    }
                    resp = resp
                        .with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time_ms)
                        .with_log_start_offset(p.log.lock().log_start_offset());
                    if acks == -1 && broker.config.flush_on_acks_all {
                        durable_waits.push((
                            responses.len(),
                            partitions.len(),
                            p,
                            r.last_offset + 1,
                        ));
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                    resp = resp
                        .with_error_code(e.code.code())
                        .with_error_message(Some(str_bytes(&e.message)));
                }
            }
            partitions.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if appended {
        broker.notify_appended();
    }
    let req = req.clone();
    Ok(Box::pin(async move {
        if acks == 0 {
            return None;
        }
        for (t, p, partition, offset) in durable_waits {
            if let Err(e) = partition.wait_durable(offset).await {
                let resp = &mut responses[t].partition_responses[p];
                resp.error_code = ErrorCode::KafkaStorageError.code();
                resp.error_message = Some(str_bytes(&e.to_string()));
            }
        }
        encode(&req, &ProduceResponse::default().with_responses(responses))
    }))
}

/// Kafka refuses keyless records on compacted topics: they could never be cleaned.
fn check_keys(records: &[u8], h: &BatchHeader) -> Result<(), BrokerError> {
    let section = runnel_log::cleaner::records_section(records, h, &crate::codec::KafkaCodecs)
        .map_err(BrokerError::from)?;
    let parsed =
        runnel_log::cleaner::split_records(&section, h.base_offset).map_err(BrokerError::from)?;
    if parsed.iter().any(|r| r.key.is_none()) {
        return Err(BrokerError::new(
            ErrorCode::InvalidRecord,
            "compacted topic cannot accept a record without a key",
        ));
    }
    Ok(())
}

fn append(
    broker: &Broker,
    p: &Partition,
    records: &bytes::Bytes,
    compacted: bool,
) -> Result<runnel_log::AppendResult, BrokerError> {
    // Produce v3+ carries exactly one batch per partition (Kafka refuses more).
    let first = BatchHeader::parse(records).map_err(BrokerError::from)?;
    if first.total_size() != records.len() {
        return Err(BrokerError::new(
            ErrorCode::InvalidRecord,
            "produce requests must carry exactly one record batch per partition",
        ));
    }
    if first.is_transactional() {
        // The partition must be part of the producer's ongoing transaction: this is what
        // keeps a fenced or confused producer from opening a transaction nobody will end.
        broker
            .txns
            .verify_produce(first.producer_id, first.producer_epoch, &p.topic, p.index)?;
    }
    if compacted {
        // Validate first so a corrupt batch gets CORRUPT_MESSAGE, not a key error.
        runnel_log::batch::validate_batch(records).map_err(BrokerError::from)?;
        check_keys(records, &first)?;
    }
    let mut buf = BytesMut::from(&records[..]);
    if broker.is_offline(p) {
        return Err(BrokerError::new(
            ErrorCode::KafkaStorageError,
            format!("{}-{} is on a failed log dir", p.topic, p.index),
        ));
    }
    let result = p.log.lock().append(&mut buf, p.leader_epoch, now_ms());
    if let Err(e) = &result {
        broker.note_storage_error(p, e);
    }
    result.map_err(BrokerError::from)
}
