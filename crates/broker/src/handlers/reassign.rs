//! ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments: they go to
//! the controller (a single node's too: it is a cluster of one).

use std::sync::Arc;

use runnel_protocol::kp::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use runnel_protocol::kp::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use runnel_protocol::kp::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use runnel_protocol::kp::messages::*;
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{encode, str_bytes, ResponseFuture};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

const PREFERRED: i8 = 0;

fn outcome_fields(outcome: &Result<(), BrokerError>) -> (i16, Option<String>) {
    match outcome {
        Ok(()) => (0, None),
        Err(e) => (e.code.code(), Some(e.message.clone())),
    }
}

pub fn elect_leaders(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
) -> Result<ResponseFuture, DecodeError> {
    let body: ElectLeadersRequest = decode_body(&req.body, req.api_version)?;
    let wanted: Option<Vec<(String, i32)>> = body.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect()
    });
    let (broker, req) = (broker.clone(), req.clone());
    Ok(Box::pin(async move {
        let results: Vec<((String, i32), Result<(), BrokerError>)> =
            if body.election_type != PREFERRED {
                // Unclean election would pick a replica outside the ISR and lose acknowledged
                // records; Runnel does not offer it (unclean.leader.election.enable=false).
                let refuse = || {
                    Err(BrokerError::new(
                        ErrorCode::InvalidRequest,
                        "unclean leader election is not supported: it loses acknowledged records",
                    ))
                };
                wanted
                    .unwrap_or_default()
                    .into_iter()
                    .map(|tp| (tp, refuse()))
                    .collect()
            } else {
                broker
                    .cluster()
                    .controller
                    .elect_leaders(wanted, true)
                    .await
                    .into_iter()
                    .map(|(tp, r)| (tp, r.map_err(crate::cluster::controller_error)))
                    .collect()
            };
        let mut topics: Vec<ReplicaElectionResult> = Vec::new();
        for ((topic, partition), outcome) in results {
            let (code, message) = outcome_fields(&outcome);
            let pr = PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message.as_deref().map(str_bytes));
            match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                Some(t) => t.partition_result.push(pr),
                None => topics.push(
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(str_bytes(&topic)))
                        .with_partition_result(vec![pr]),
                ),
            }
        }
        encode(
            &req,
            &ElectLeadersResponse::default().with_replica_election_results(topics),
        )
    }))
}

pub fn alter_reassignments(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
) -> Result<ResponseFuture, DecodeError> {
    let body: AlterPartitionReassignmentsRequest = decode_body(&req.body, req.api_version)?;
    let (broker, req) = (broker.clone(), req.clone());
    Ok(Box::pin(async move {
        let mut responses = Vec::new();
        for t in &body.topics {
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let replicas: Option<Vec<i32>> =
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                let outcome = broker
                    .cluster()
                    .controller
                    .reassign(&t.name.0, p.partition_index, replicas)
                    .await
                    .map_err(crate::cluster::controller_error);
                let (code, message) = outcome_fields(&outcome);
                partitions.push(
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message.as_deref().map(str_bytes)),
                );
            }
            responses.push(
                ReassignableTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        encode(
            &req,
            &AlterPartitionReassignmentsResponse::default()
                .with_allow_replication_factor_change(body.allow_replication_factor_change)
                .with_responses(responses),
        )
    }))
}

pub fn list_reassignments(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
) -> Result<ResponseFuture, DecodeError> {
    let body: ListPartitionReassignmentsRequest = decode_body(&req.body, req.api_version)?;
    let ids = |v: &[i32]| v.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    let image = broker.cluster().current_image();
    {
        for (topic, partition, p) in image.reassignments() {
            let asked = body.topics.as_ref().is_none_or(|ts| {
                ts.iter()
                    .any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&partition))
            });
            if !asked {
                continue;
            }
            let o = OngoingPartitionReassignment::default()
                .with_partition_index(partition)
                .with_replicas(ids(&p.replicas))
                .with_adding_replicas(ids(&p.adding_replicas))
                .with_removing_replicas(ids(&p.removing_replicas));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(o),
                None => topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(vec![o]),
                ),
            }
        }
    }
    super::ready(
        req,
        &ListPartitionReassignmentsResponse::default().with_topics(topics),
    )
}
