//! Metadata: brokers, topics, partitions, leaders; auto-creates topics Kafka's way.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_protocol::kp::messages::metadata_request::MetadataRequestTopic;
use runnel_protocol::kp::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use runnel_protocol::kp::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};
use uuid::Uuid;

use super::{ready, str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::topics::Topic;

use super::authorized;

pub fn handle(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    listener: &Arc<str>,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let mut body: MetadataRequest = decode_body(&req.body, req.api_version)?;
    let v = req.api_version;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all = match &body.topics {
        None => true,
        Some(t) => v == 0 && t.is_empty(),
    };
    // Before v4 there is no flag and auto-creation is implied.
    let may_create = broker.config.auto_create_topics && (v < 4 || body.allow_auto_topic_creation);
    let ops = authorized::if_requested(body.include_topic_authorized_operations, authorized::TOPIC);
    // Metadata v8-v10 only; later versions ask DescribeCluster.
    let cluster_ops = authorized::if_requested(
        body.include_cluster_authorized_operations,
        az.authorized_bits(ResourceType::Cluster, CLUSTER_NAME, authorized::CLUSTER),
    );
    let refused = match body.topics.as_mut() {
        Some(requested) if !all => authorize_requested(broker, az, requested, may_create),
        _ => Vec::new(),
    };
    let az = az.clone();
    let finish = move |r: MetadataResponse| authorize_response(&az, r, all, ops, refused);
    if let Some(cluster) = broker.cluster() {
        let cluster = cluster.clone();
        let local_id = broker.node_id();
        let req = req.clone();
        let requested = body.topics.unwrap_or_default();
        let listener = listener.clone();
        return Ok(Box::pin(async move {
            let response = cluster_metadata(
                &cluster, local_id, &listener, all, requested, may_create, ops,
            )
            .await
            .with_cluster_authorized_operations(cluster_ops);
            super::encode(&req, &finish(response))
        }));
    }
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
    let (host, port) = broker.endpoint(listener);
    let node = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(str_bytes(host))
        .with_port(port)
        .with_rack(broker.config.rack.as_deref().map(str_bytes));
    let response = MetadataResponse::default()
        .with_brokers(vec![node])
        .with_cluster_id(Some(str_bytes(&broker.cluster_id)))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops);
    ready(req, &finish(response))
}

/// Kafka's KafkaApis.handleTopicMetadataRequest: a requested topic the principal may not
/// DESCRIBE, or may not create when it would be auto-created (CREATE on the cluster or
/// the topic), is taken out of `requested` and answered TOPIC_AUTHORIZATION_FAILED.
fn authorize_requested(
    broker: &Broker,
    az: &Ctx,
    requested: &mut Vec<MetadataRequestTopic>,
    may_create: bool,
) -> Vec<MetadataResponseTopic> {
    if !az.enabled() {
        return Vec::new();
    }
    let image = broker.cluster().map(|c| c.current_image());
    let exists = |name: &str| match &image {
        Some(img) => img.topics.contains_key(name),
        None => broker.topics.get(name).is_some(),
    };
    let name_of_id = |id: Uuid| match &image {
        Some(img) => img.topic_by_id(id).map(|t| t.name.clone()),
        None => broker.topics.get_by_id(id).map(|t| t.name.clone()),
    };
    let mut cluster_create: Option<bool> = None;
    let mut refused = Vec::new();
    requested.retain(|r| {
        let denied = |name: Option<TopicName>| {
            MetadataResponseTopic::default()
                .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                .with_name(name)
                .with_topic_id(r.topic_id)
                .with_is_internal(false)
        };
        let Some(name) = r.name.as_ref().map(|n| n.0.to_string()) else {
            // By id: an unknown id stays UNKNOWN_TOPIC_ID; a known one needs DESCRIBE.
            let ok = name_of_id(r.topic_id).is_none_or(|n| az.topic(Operation::Describe, &n));
            if !ok {
                refused.push(denied(None));
            }
            return ok;
        };
        let ok = az.topic(Operation::Describe, &name)
            && (!may_create
                || exists(&name)
                || *cluster_create.get_or_insert_with(|| az.cluster(Operation::Create))
                || az.topic(Operation::Create, &name));
        if !ok {
            refused.push(denied(r.name.clone()));
        }
        ok
    });
    refused
}

/// Hides, in an all-topics answer, the topics the principal may not DESCRIBE; adds the
/// refused ones; fills in each topic's authorized operations (KIP-430) when asked.
fn authorize_response(
    az: &Ctx,
    mut response: MetadataResponse,
    all: bool,
    ops: i32,
    refused: Vec<MetadataResponseTopic>,
) -> MetadataResponse {
    if !az.enabled() {
        return response;
    }
    if all {
        response.topics.retain(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| az.visible(Operation::Describe, ResourceType::Topic, &n.0))
        });
    }
    if ops != authorized::OMITTED {
        for t in &mut response.topics {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.topic_authorized_operations =
                az.authorized_bits(ResourceType::Topic, &name, authorized::TOPIC);
        }
    }
    response.topics.extend(
        refused
            .into_iter()
            .map(|t| t.with_topic_authorized_operations(ops.min(0))),
    );
    response
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
                .with_leader_epoch(p.leader_epoch())
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
    topic_entry(&t.name, t.id, partitions, ops)
}

/// Metadata in replicated mode: brokers, leaders, replicas and ISRs from the metadata
/// image; auto-creation goes through the controller.
async fn cluster_metadata(
    cluster: &crate::cluster::Cluster,
    local_id: i32,
    listener: &str,
    all: bool,
    requested: Vec<runnel_protocol::kp::messages::metadata_request::MetadataRequestTopic>,
    may_create: bool,
    ops: i32,
) -> MetadataResponse {
    let mut missing: Vec<String> = Vec::new();
    if may_create && !all {
        let image = cluster.current_image();
        for r in &requested {
            if let Some(name) = &r.name {
                if !image.topics.contains_key(name.0.as_str())
                    && crate::topics::validate_topic_name(name.0.as_str()).is_ok()
                {
                    missing.push(name.0.to_string());
                }
            }
        }
    }
    let mut create_errors: BTreeMap<String, ErrorCode> = BTreeMap::new();
    if !missing.is_empty() {
        let new = missing
            .iter()
            .map(|name| runnel_meta::NewTopic {
                id: None,
                name: name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: None,
                configs: BTreeMap::new(),
            })
            .collect();
        let results = cluster.controller.create_topics(new, false).await;
        for (name, result) in missing.iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(e) if e.kind == runnel_meta::ErrorKind::TopicAlreadyExists => {}
                Err(e) => {
                    tracing::info!(topic = %name, error = %e, "auto-creation refused");
                    create_errors.insert(name.clone(), crate::cluster::error_code(e.kind));
                }
            }
        }
        let wanted: Vec<String> = missing
            .iter()
            .filter(|n| !create_errors.contains_key(*n))
            .cloned()
            .collect();
        cluster
            .wait_for_image(|img| wanted.iter().all(|n| img.topics.contains_key(n)))
            .await;
    }
    let image = cluster.current_image();
    let mut topics = Vec::new();
    if all {
        for t in image.topics.values() {
            topics.push(describe_image_topic(&image, t, ops));
        }
    } else {
        for r in requested {
            let found = match &r.name {
                Some(name) => image.topics.get(name.0.as_str()),
                None => image.topic_by_id(r.topic_id),
            };
            topics.push(match (found, r.name) {
                (Some(t), _) => describe_image_topic(&image, t, ops),
                (None, Some(name)) => {
                    let code =
                        match crate::topics::validate_topic_name(name.0.as_str()) {
                            Err(e) => e.code,
                            Ok(()) => create_errors.get(name.0.as_str()).copied().unwrap_or(
                                if may_create {
                                    ErrorCode::LeaderNotAvailable
                                } else {
                                    ErrorCode::UnknownTopicOrPartition
                                },
                            ),
                        };
                    MetadataResponseTopic::default()
                        .with_error_code(code.code())
                        .with_name(Some(name))
                        .with_topic_authorized_operations(ops)
                }
                (None, None) => MetadataResponseTopic::default()
                    .with_error_code(ErrorCode::UnknownTopicId.code())
                    .with_topic_id(r.topic_id)
                    .with_topic_authorized_operations(ops),
            });
        }
    }
    let brokers = image
        .live_brokers()
        .map(|b| {
            let (host, port) = b.endpoint(listener);
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    let controller = cluster.controller_id_for_clients(local_id);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(image.cluster_id.as_deref().map(str_bytes))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(authorized::OMITTED)
}

fn describe_image_topic(
    image: &runnel_meta::ClusterImage,
    t: &runnel_meta::TopicImage,
    ops: i32,
) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|id| !image.is_live(*id))
                .collect();
            let code = if p.leader < 0 {
                ErrorCode::LeaderNotAvailable
            } else {
                ErrorCode::None
            };
            MetadataResponsePartition::default()
                .with_error_code(code.code())
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    topic_entry(&t.name, t.id, partitions, ops)
}

fn topic_entry(
    name: &str,
    id: Uuid,
    partitions: Vec<MetadataResponsePartition>,
    ops: i32,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_topic_id(id)
        .with_is_internal(name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops)
}
