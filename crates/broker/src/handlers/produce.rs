//! Produce: validate and append each partition's batch, then answer now (acks 0/1) or
//! once the batch is durable (acks=all).

use std::sync::Arc;

use runnel_log::BatchHeader;
use runnel_protocol::kp::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use runnel_protocol::kp::messages::{ProduceRequest, ProduceResponse};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{encode, now_ms, str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::storage::partition::{Appended, Partition};

pub fn handle(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
    qc: &crate::server::quota::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ProduceRequest = decode_body(&req.body, req.api_version)?;
    // producer_byte_rate counts the request's record bytes (Kafka: the request size).
    let request_bytes: usize = body
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_ref().map(|r| r.len()))
        .sum();
    let throttle_ms = qc.record(
        crate::server::quota::PRODUCER_BYTE_RATE,
        request_bytes as f64,
    );
    // Kafka's KafkaApis.handleProduceRequest: transactional records need a transactional
    // id the principal may WRITE (else the whole request is refused
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED, with or without an authorizer); then WRITE on
    // each topic.
    let tid = body
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str())
        .filter(|t| !t.is_empty());
    let txn_check = match tid {
        Some(tid) => az.require(Operation::Write, ResourceType::TransactionalId, tid),
        None if has_transactional_records(&body) => Err(BrokerError::new(
            ErrorCode::TransactionalIdAuthorizationFailed,
            "transactional records need the request's transactional id",
        )),
        None => Ok(()),
    };
    let acks = body.acks;
    let timeout = std::time::Duration::from_millis(body.timeout_ms.max(0) as u64);
    let mut responses = Vec::with_capacity(body.topic_data.len());
    // (topic index, partition index in response, partition, what must be durable and
    // replicated, min.insync.replicas)
    let mut durable_waits: Vec<(usize, usize, Arc<Partition>, Appended, usize)> = Vec::new();
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let topic_entry = broker.topics.get(&name);
        let authorized = txn_check
            .clone()
            .and_then(|()| az.require(Operation::Write, ResourceType::Topic, &name));
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
            let result = authorized
                .clone()
                .and_then(|()| match (partition, pd.records) {
                    _ if !matches!(acks, -1..=1) => Err(BrokerError::new(
                        ErrorCode::InvalidRequiredAcks,
                        format!("acks={acks} is not 0, 1 or -1"),
                    )),
                    // Kafka's ReplicaManager.appendToLocalLog: only the broker writes its
                    // internal topics (group and transaction state).
                    _ if crate::storage::topics::is_internal(&name) => Err(BrokerError::new(
                        ErrorCode::InvalidTopic,
                        format!("cannot append to internal topic {name}"),
                    )),
                    (None, _) => Err(BrokerError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("{name}-{} does not exist", pd.index),
                    )),
                    (Some(_), None) => {
                        Err(BrokerError::new(ErrorCode::InvalidRecord, "no records"))
                    }
                    (Some(p), Some(records)) => {
                        let batch_bytes = records.len() as u64;
                        let min_isr = topic_entry
                            .as_ref()
                            .and_then(|t| t.configs.get("min.insync.replicas"))
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(broker.effective_min_isr());
                        check_replicas(&p, acks, min_isr)
                            .and_then(|()| append(broker, &p, &records, tid))
                            .map(|r| (p, r, batch_bytes, min_isr))
                    }
                });
            match result {
                Ok((p, r, batch_bytes, min_isr)) => {
                    if !r.duplicate {
                        broker
                            .metrics
                            .record_produce(&name, batch_bytes, r.record_count as u64);
                    }
                    resp = resp
                        .with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time_ms)
                        .with_log_start_offset(p.log.lock().log_start_offset());
                    if acks == -1 {
                        durable_waits.push((
                            responses.len(),
                            partitions.len(),
                            p,
                            Appended::after(&r),
                            min_isr,
                        ));
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                    resp = resp
                        .with_error_code(e.code.code())
                        .with_error_message(Some(str_bytes(&e.message)))
                        .with_record_errors(
                            e.record_errors
                                .iter()
                                .map(|(i, m)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(*i)
                                        .with_batch_index_error_message(Some(str_bytes(m)))
                                })
                                .collect(),
                        );
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
    let req = req.clone();
    let flush_on_acks_all = broker.config.flush_on_acks_all;
    Ok(Box::pin(async move {
        if acks == 0 {
            return None;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        for (t, p, partition, at, min_isr) in durable_waits {
            let resp = &mut responses[t].partition_responses[p];
            if flush_on_acks_all {
                if let Err(e) = partition.wait_durable(at.end).await {
                    resp.error_code = ErrorCode::KafkaStorageError.code();
                    resp.error_message = Some(str_bytes(&e.to_string()));
                    continue;
                }
            }
            // acks=all: every in-sync replica has the batch (on a single node, at once).
            if let Err(code) = partition.wait_replicated(at, deadline).await {
                resp.error_code = code.code();
                resp.error_message = Some(str_bytes(&format!(
                    "{}-{}: not acknowledged by the in-sync replicas: {code:?}",
                    partition.topic, partition.index
                )));
                continue;
            }
            // Kafka's rule: the ISR shrank below min.insync.replicas while the batch
            // waited, so fewer copies than asked for hold it.
            let isr = partition.replica.lock().isr.len();
            if isr < min_isr {
                resp.error_code = ErrorCode::NotEnoughReplicasAfterAppend.code();
                resp.error_message = Some(str_bytes(&format!(
                    "{}-{}: written, but the ISR shrank to {isr}, below min.insync.replicas={min_isr}",
                    partition.topic, partition.index
                )));
            }
        }
        let response = ProduceResponse::default()
            .with_responses(responses)
            .with_throttle_time_ms(throttle_ms);
        encode(&req, &response)
    }))
}

/// Only the leader takes writes; acks=all needs `min.insync.replicas` in sync first.
fn check_replicas(p: &Partition, acks: i16, min_isr: usize) -> Result<(), BrokerError> {
    let r = p.replica.lock();
    if !r.is_leader() {
        return Err(BrokerError::new(
            ErrorCode::NotLeaderOrFollower,
            format!("this broker is not the leader of {}-{}", p.topic, p.index),
        ));
    }
    if acks == -1 && r.isr.len() < min_isr {
        return Err(BrokerError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "{}-{} has {} in-sync replicas, fewer than min.insync.replicas={min_isr}",
                p.topic,
                p.index,
                r.isr.len()
            ),
        ));
    }
    Ok(())
}

/// Appends one partition's batch. The log's validator checks it (and requires keys on a
/// compacted topic); a refusal that concerns single records names them (KIP-467).
fn append(
    broker: &Broker,
    p: &Partition,
    records: &bytes::Bytes,
    transactional_id: Option<&str>,
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
        broker.txns.verify_produce(
            transactional_id.unwrap_or_default(),
            first.producer_id,
            first.producer_epoch,
            &p.topic,
            p.index,
        )?;
    }
    // KIP-467: a batch refused for some of its records names them. The batch is
    // written from the request's bytes (the log copies only its header).
    let written =
        broker.append_as_leader(p, |log, epoch| match log.append(records, epoch, now_ms()) {
            Err(runnel_log::LogError::RecordErrors { record_errors, .. }) => Ok(Err(record_errors)),
            other => other.map(Ok),
        })?;
    written.map_err(|errors| BrokerError::records(ErrorCode::InvalidRecord, errors))
}

/// Kafka's RequestUtils.hasTransactionalRecords: some partition's (first) batch is
/// transactional.
fn has_transactional_records(body: &ProduceRequest) -> bool {
    body.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_ref())
        .any(|r| BatchHeader::parse(r).is_ok_and(|h| h.is_transactional()))
}
