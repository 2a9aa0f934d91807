//! Metadata: brokers, topics, partitions, leaders; auto-creates topics Kafka's way.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_protocol::kp::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use runnel_protocol::kp::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};
use uuid::Uuid;

use super::{ready, str_bytes, ResponseFuture};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::topics::Topic;

/// Kafka's "not requested" value for authorized-operations fields.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: no ACLs yet.
const ALL_TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub fn handle(broker: &Arc<Broker>, req: &ParsedRequest) -> Result<ResponseFuture, DecodeError> {
    let body: MetadataRequest = decode_body(&req.body, req.api_version)?;
    let v = req.api_version;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all = match &body.topics {
        None => true,
        Some(t) => v == 0 && t.is_empty(),
    };
    // Before v4 there is no flag and auto-creation is implied.
    let may_create = broker.config.auto_create_topics && (v < 4 || body.allow_auto_topic_creation);
    let ops = if body.include_topic_authorized_operations {
        ALL_TOPIC_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let mut topics = Vec::new();
    if all {
        for t in broker.topics.all() {
            topics.push(describe(broker, &t, ops));
        }
    } else {
        for requested in body.topics.unwrap_or_default() {
            topics.push(match requested.name {
                Some(name) => by_name(broker, &name.0, may_create, ops),
                None => by_id(broker, requested.topic_id, ops),
            });
        }
    }
    let node = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(str_bytes(&broker.advertised_host))
        .with_port(broker.advertised_port)
        .with_rack(broker.config.rack.as_deref().map(str_bytes));
    let response = MetadataResponse::default()
        .with_brokers(vec![node])
        .with_cluster_id(Some(str_bytes(&broker.cluster_id)))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    ready(req, &response)
}

fn by_name(broker: &Broker, name: &str, may_create: bool, ops: i32) -> MetadataResponseTopic {
    if let Some(t) = broker.topics.get(name) {
        return describe(broker, &t, ops);
    }
    let result = if may_create {
        broker
            .topics
            .create(name, -1, -1, BTreeMap::new(), false)
            .or_else(|e| match e.code {
                // Another client created it between our lookup and our create.
                ErrorCode::TopicAlreadyExists => broker.topics.get(name).ok_or(e),
                _ => Err(e),
            })
    } else {
        Err(BrokerError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        ))
    };
    match result {
        Ok(t) => describe(broker, &t, ops),
        Err(e) => MetadataResponseTopic::default()
            .with_error_code(e.code.code())
            .with_name(Some(TopicName(str_bytes(name))))
            .with_topic_authorized_operations(ops),
    }
}

fn by_id(broker: &Broker, id: Uuid, ops: i32) -> MetadataResponseTopic {
    match broker.topics.get_by_id(id) {
        Some(t) => describe(broker, &t, ops),
        None => MetadataResponseTopic::default()
            .with_error_code(ErrorCode::UnknownTopicId.code())
            .with_topic_id(id)
            .with_topic_authorized_operations(ops),
    }
}

fn describe(broker: &Broker, t: &Topic, ops: i32) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let base = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(vec![node]);
            if broker.is_offline(p) {
                // The only replica is on a failed log dir: no leader, as Kafka reports it.
                base.with_error_code(ErrorCode::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_offline_replicas(vec![node])
            } else {
                base.with_leader_id(node).with_isr_nodes(vec![node])
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&t.name))))
        .with_topic_id(t.id)
        .with_is_internal(t.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops)
}
