//! Transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! WriteTxnMarkers, DescribeTransactions, ListTransactions, DescribeProducers. The
//! state machine is `crate::coordinators::txn`; this module translates the wire forms.

use std::sync::Arc;

use runnel_protocol::kp::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use runnel_protocol::kp::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use runnel_protocol::kp::messages::describe_transactions_response::{TopicData, TransactionState};
use runnel_protocol::kp::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use runnel_protocol::kp::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use runnel_protocol::kp::messages::*;
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{encode, now_ms, ready, str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType};
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::coordinators::txn::Durable;
use crate::error::ErrorCode;

/// Answers once the coordinator's state write is on disk and replicated (like an
/// acks=all produce).
fn after_durable<F>(durable: Durable, build: F) -> ResponseFuture
where
    F: FnOnce(Option<ErrorCode>) -> Option<crate::server::response::Response> + Send + 'static,
{
    Box::pin(async move {
        let failed = match durable {
            Some((p, at)) => p.wait_acknowledged(at).await.err(),
            None => None,
        };
        build(failed)
    })
}

pub fn add_partitions(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: AddPartitionsToTxnRequest = decode_body(&req.body, req.api_version)?;
    if req.api_version <= 3 {
        let tid = body.v3_and_below_transactional_id.0.to_string();
        let wanted: Vec<(String, i32)> = body
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let outcome = match refuse_add(az, &tid, &wanted) {
            Some(codes) => Ok((codes, None)),
            None => broker.txns.add_partitions(
                broker,
                &tid,
                body.v3_and_below_producer_id.0,
                body.v3_and_below_producer_epoch,
                &wanted,
                false,
            ),
        };
        let (codes, durable) = match outcome {
            Ok(r) => r,
            Err(e) => (vec![e.code; wanted.len()], None),
        };
        let topics = body.v3_and_below_topics.clone();
        let req2 = req.clone();
        return Ok(after_durable(durable, move |failed| {
            let mut codes = codes.into_iter();
            let results = topics
                .iter()
                .map(|t| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*p)
                                        .with_partition_error_code(
                                            failed
                                                .unwrap_or(codes.next().unwrap_or(ErrorCode::None))
                                                .code(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            encode(
                &req2,
                &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
            )
        }));
    }
    // v4+: batched, possibly verify-only (the broker-to-broker form): Kafka lets only
    // brokers send it (CLUSTER_ACTION on the cluster).
    if !az.cluster(Operation::ClusterAction) {
        let code = ErrorCode::ClusterAuthorizationFailed.code();
        return ready(
            req,
            &AddPartitionsToTxnResponse::default().with_error_code(code),
        );
    }
    let mut results = Vec::new();
    for txn in &body.transactions {
        let wanted: Vec<(String, i32)> = txn
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let outcome = match refuse_add(az, &txn.transactional_id.0, &wanted) {
            Some(codes) => Ok((codes, None)),
            None => broker.txns.add_partitions(
                broker,
                &txn.transactional_id.0,
                txn.producer_id.0,
                txn.producer_epoch,
                &wanted,
                txn.verify_only,
            ),
        };
        let codes = match outcome {
            Ok((codes, _)) => codes,
            Err(e) => vec![e.code; wanted.len()],
        };
        let mut codes = codes.into_iter();
        let topic_results = txn
            .topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(
                                        codes.next().unwrap_or(ErrorCode::None).code(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    ready(
        req,
        &AddPartitionsToTxnResponse::default().with_results_by_transaction(results),
    )
}

/// Kafka's AddPartitionsToTxn authorization: WRITE on the transactional id (else every
/// partition TRANSACTIONAL_ID_AUTHORIZATION_FAILED), then WRITE on each topic (a refused
/// topic's partitions TOPIC_AUTHORIZATION_FAILED, the others OPERATION_NOT_ATTEMPTED).
/// None when everything is allowed.
fn refuse_add(az: &Ctx, tid: &str, wanted: &[(String, i32)]) -> Option<Vec<ErrorCode>> {
    if !az.allowed(Operation::Write, ResourceType::TransactionalId, tid) {
        return Some(vec![
            ErrorCode::TransactionalIdAuthorizationFailed;
            wanted.len()
        ]);
    }
    let topics: std::collections::BTreeSet<&str> = wanted.iter().map(|(t, _)| t.as_str()).collect();
    let denied: Vec<&str> = topics
        .into_iter()
        .filter(|t| !az.topic(Operation::Write, t))
        .collect();
    if denied.is_empty() {
        return None;
    }
    Some(
        wanted
            .iter()
            .map(|(t, _)| match denied.contains(&t.as_str()) {
                true => ErrorCode::TopicAuthorizationFailed,
                false => ErrorCode::OperationNotAttempted,
            })
            .collect(),
    )
}

/// WRITE on the transactional id, then `op` on the group (AddOffsetsToTxn: READ;
/// TxnOffsetCommit: READ), as Kafka checks them.
fn txn_and_group(az: &Ctx, tid: &str, group: &str) -> Result<(), crate::error::BrokerError> {
    az.require(Operation::Write, ResourceType::TransactionalId, tid)?;
    az.require(Operation::Read, ResourceType::Group, group)
}

pub fn add_offsets(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: AddOffsetsToTxnRequest = decode_body(&req.body, req.api_version)?;
    let partitions = broker
        .topics
        .get(crate::coordinators::groups::OFFSETS_TOPIC)
        .map_or(broker.groups.config.offsets_topic_partitions, |t| {
            t.partitions.len() as i32
        });
    let target = (
        crate::coordinators::groups::OFFSETS_TOPIC.to_string(),
        crate::coordinators::groups::records::partition_for(&body.group_id.0, partitions),
    );
    // The offsets topic must exist for its partition to join the transaction.
    let ensured = txn_and_group(az, &body.transactional_id.0, &body.group_id.0)
        .and_then(|()| broker.groups.ensure_offsets_topic_exists(&broker.topics));
    let outcome = ensured.and_then(|_| {
        broker.txns.add_partitions(
            broker,
            &body.transactional_id.0,
            body.producer_id.0,
            body.producer_epoch,
            &[target],
            false,
        )
    });
    let (code, durable) = match outcome {
        Ok((codes, durable)) => (codes.first().copied().unwrap_or(ErrorCode::None), durable),
        Err(e) => (e.code, None),
    };
    let req2 = req.clone();
    Ok(after_durable(durable, move |failed| {
        encode(
            &req2,
            &AddOffsetsToTxnResponse::default().with_error_code(failed.unwrap_or(code).code()),
        )
    }))
}

pub fn txn_offset_commit(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: TxnOffsetCommitRequest = decode_body(&req.body, req.api_version)?;
    let mut offsets = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                p.committed_offset,
                if req.api_version >= 2 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                p.committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ));
        }
    }
    let n = offsets.len();
    let authorized = txn_and_group(az, &body.transactional_id.0, &body.group_id.0).and_then(|()| {
        match body
            .topics
            .iter()
            .find(|t| !az.topic(Operation::Read, &t.name))
        {
            Some(t) => Err(crate::authz::denied_error(
                ResourceType::Topic,
                Operation::Read,
                &t.name,
            )),
            None => Ok(()),
        }
    });
    let (codes, wait) = match authorized.and_then(|()| {
        broker.txns.verify_offsets(
            broker,
            &body.transactional_id.0,
            body.producer_id.0,
            body.producer_epoch,
            &body.group_id.0,
        )
    }) {
        Err(e) => (vec![e.code; n], None),
        Ok(()) => broker.groups.txn_commit_offsets(
            &broker.topics,
            &body.group_id.0,
            body.producer_id.0,
            body.producer_epoch,
            if req.api_version >= 3 {
                body.generation_id
            } else {
                -1
            },
            &body.member_id,
            body.group_instance_id.as_deref(),
            offsets,
        ),
    };
    let topics = body.topics.clone();
    let req2 = req.clone();
    Ok(after_durable(wait, move |failed| {
        let mut codes = codes.into_iter();
        let results = topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(
                                        failed
                                            .unwrap_or(codes.next().unwrap_or(ErrorCode::None))
                                            .code(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        encode(
            &req2,
            &TxnOffsetCommitResponse::default().with_topics(results),
        )
    }))
}

pub fn end_txn(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: EndTxnRequest = decode_body(&req.body, req.api_version)?;
    let tid = &body.transactional_id.0;
    let outcome = az
        .require(Operation::Write, ResourceType::TransactionalId, tid)
        .and_then(|()| {
            broker.txns.end_txn(
                broker,
                tid,
                body.producer_id.0,
                body.producer_epoch,
                body.committed,
            )
        });
    let (code, durable) = match outcome {
        Ok(d) => (ErrorCode::None, d),
        Err(e) => {
            tracing::debug!(transactional_id = %body.transactional_id.0, error = %e, "EndTxn refused");
            (e.code, None)
        }
    };
    let req2 = req.clone();
    Ok(after_durable(durable, move |failed| {
        encode(
            &req2,
            &EndTxnResponse::default().with_error_code(failed.unwrap_or(code).code()),
        )
    }))
}

pub fn write_markers(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: WriteTxnMarkersRequest = decode_body(&req.body, req.api_version)?;
    // Kafka: only brokers write markers (CLUSTER_ACTION on the cluster).
    let cluster_action = az.cluster(Operation::ClusterAction);
    let mut results = Vec::new();
    // (marker, topic, partition slot) -> the marker's append, for the replication wait.
    let mut waits: Vec<(
        (usize, usize, usize),
        Arc<crate::storage::partition::Partition>,
        crate::storage::partition::Appended,
    )> = Vec::new();
    for (mi, m) in body.markers.iter().enumerate() {
        let topics = m
            .topics
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .enumerate()
                    .map(|(pi, &p)| {
                        let code = match broker.topics.partition(&t.name.0, p) {
                            _ if !cluster_action => ErrorCode::ClusterAuthorizationFailed,
                            None => ErrorCode::UnknownTopicOrPartition,
                            Some(part) => match broker.append_marker(
                                &part,
                                m.producer_id.0,
                                m.producer_epoch,
                                m.transaction_result,
                                m.coordinator_epoch,
                            ) {
                                Ok(at) => {
                                    waits.push(((mi, ti, pi), part.clone(), at));
                                    ErrorCode::None
                                }
                                Err(e) => e.code,
                            },
                        };
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code.code())
                    })
                    .collect();
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    let req = req.clone();
    Ok(Box::pin(async move {
        // The coordinator records the transaction complete only after this answer, so a
        // marker must be in every in-sync replica first.
        for ((mi, ti, pi), p, at) in waits {
            if let Err(code) = p.wait_acknowledged(at).await {
                results[mi].topics[ti].partitions[pi].error_code = code.code();
            }
        }
        encode(
            &req,
            &WriteTxnMarkersResponse::default().with_markers(results),
        )
    }))
}

pub fn describe_transactions(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeTransactionsRequest = decode_body(&req.body, req.api_version)?;
    let states = body
        .transactional_ids
        .iter()
        .map(|tid| match broker.txns.describe(&tid.0) {
            _ if !az.allowed(Operation::Describe, ResourceType::TransactionalId, &tid.0) => {
                TransactionState::default()
                    .with_transactional_id(tid.clone())
                    .with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code())
            }
            None => TransactionState::default()
                .with_transactional_id(tid.clone())
                .with_error_code(ErrorCode::TransactionalIdNotFound.code()),
            Some(m) => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                // Kafka leaves out the topics the principal may not DESCRIBE.
                for (t, p) in m
                    .partitions
                    .iter()
                    .filter(|(t, _)| az.visible(Operation::Describe, ResourceType::Topic, t))
                {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
                TransactionState::default()
                    .with_transactional_id(tid.clone())
                    .with_transaction_state(str_bytes(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(
                        by_topic
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(str_bytes(&t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            }
        })
        .collect();
    ready(
        req,
        &DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

pub fn list_transactions(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ListTransactionsRequest = decode_body(&req.body, req.api_version)?;
    const KNOWN: &[&str] = &[
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let unknown: Vec<_> = body
        .state_filters
        .iter()
        .filter(|s| !KNOWN.contains(&s.as_str()))
        .cloned()
        .collect();
    // Bounded like a subscription regex; a bad one is refused as Kafka does.
    let pattern = match body
        .transactional_id_pattern
        .as_ref()
        .filter(|p| !p.is_empty())
        .map(|p| crate::coordinators::groups::consumer::compile_regex(p.as_str()))
    {
        None => None,
        Some(Ok(re)) => Some(re),
        Some(Err(_)) => {
            return ready(
                req,
                &ListTransactionsResponse::default()
                    .with_error_code(crate::error::ErrorCode::InvalidRegularExpression.code()),
            )
        }
    };
    let now = now_ms();
    let states = broker
        .txns
        .list()
        .into_iter()
        .filter(|m| {
            body.state_filters.is_empty()
                || body
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == m.state.name())
        })
        .filter(|m| {
            body.producer_id_filters.is_empty()
                || body
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == m.producer_id)
        })
        .filter(|m| {
            body.duration_filter < 0
                || (m.state == crate::coordinators::txn::TxnState::Ongoing
                    && now - m.start_ms >= body.duration_filter)
        })
        .filter(|m| {
            pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&m.transactional_id))
        })
        // Kafka lists the ids the principal may DESCRIBE.
        .filter(|m| {
            az.visible(
                Operation::Describe,
                ResourceType::TransactionalId,
                &m.transactional_id,
            )
        })
        .map(|m| {
            runnel_protocol::kp::messages::list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(&m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ready(
        req,
        &ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states),
    )
}

pub fn describe_producers(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeProducersRequest = decode_body(&req.body, req.api_version)?;
    let topics = body
        .topics
        .iter()
        .map(|t| {
            // Kafka: READ on the topic.
            let authorized = az.topic(Operation::Read, &t.name.0);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| match broker.topics.partition(&t.name.0, p) {
                    _ if !authorized => PartitionResponse::default()
                        .with_partition_index(p)
                        .with_error_code(ErrorCode::TopicAuthorizationFailed.code()),
                    None => PartitionResponse::default()
                        .with_partition_index(p)
                        .with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                    Some(part) => PartitionResponse::default()
                        .with_partition_index(p)
                        .with_active_producers(
                            part.log
                                .lock()
                                .producer_states()
                                .into_iter()
                                .map(|(id, e)| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(id))
                                        .with_producer_epoch(e.epoch as i32)
                                        .with_last_sequence(e.last_sequence())
                                        .with_last_timestamp(e.last_timestamp)
                                        .with_coordinator_epoch(0)
                                        .with_current_txn_start_offset(
                                            e.txn_first_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ready(
        req,
        &DescribeProducersResponse::default().with_topics(topics),
    )
}
