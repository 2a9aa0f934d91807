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

use super::{str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::error::ErrorCode;

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
    let cluster = broker.cluster().clone();
    let local = Local {
        id: broker.node_id(),
        offline: broker.offline_partitions(),
    };
    let req = req.clone();
    let requested = body.topics.unwrap_or_default();
    let listener = listener.clone();
    Ok(Box::pin(async move {
        let response =
            cluster_metadata(&cluster, &local, &listener, all, requested, may_create, ops)
                .await
                .with_cluster_authorized_operations(cluster_ops);
        super::encode(&req, &finish(response))
    }))
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
    let image = broker.cluster().current_image();
    let exists = |name: &str| image.topics.contains_key(name);
    let name_of_id = |id: Uuid| image.topic_by_id(id).map(|t| t.name.clone());
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

/// Metadata: brokers, leaders, replicas and ISRs from the metadata image; auto-creation
/// goes through the controller.
async fn cluster_metadata(
    cluster: &crate::cluster::Cluster,
    local: &Local,
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
                    && crate::storage::topics::validate_topic_name(name.0.as_str()).is_ok()
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
    // A leader whose replica connection just closed may be dead and about to be fenced:
    // answer with the controller's decision, not with the dead broker (bounded).
    cluster
        .await_leader_decisions(local.id, |img, id| {
            let leads = |t: &runnel_meta::TopicImage| t.partitions.iter().any(|p| p.leader == id);
            if all {
                return img.topics.values().any(leads);
            }
            requested.iter().any(|r| {
                match &r.name {
                    Some(name) => img.topics.get(name.0.as_str()),
                    None => img.topic_by_id(r.topic_id),
                }
                .is_some_and(leads)
            })
        })
        .await;
    let image = cluster.current_image();
    let mut topics = Vec::new();
    if all {
        for t in image.topics.values() {
            topics.push(describe_image_topic(&image, local, t, ops));
        }
    } else {
        for r in requested {
            let found = match &r.name {
                Some(name) => image.topics.get(name.0.as_str()),
                None => image.topic_by_id(r.topic_id),
            };
            topics.push(match (found, r.name) {
                (Some(t), _) => describe_image_topic(&image, local, t, ops),
                (None, Some(name)) => {
                    let code =
                        match crate::storage::topics::validate_topic_name(name.0.as_str()) {
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
    let brokers = cluster
        .listed_brokers(&image)
        .into_iter()
        .map(|b| {
            let (host, port) = b.endpoint(listener);
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    let controller = cluster.controller_id_for_clients(local.id);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(image.cluster_id.as_deref().map(str_bytes))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(authorized::OMITTED)
}

/// This broker as Metadata describes it: its id, and its replicas that are offline here
/// (files that failed recovery, a failed log dir), which it reports without itself as
/// leader or in-sync replica, as Kafka does once its log dir failed.
struct Local {
    id: i32,
    offline: std::collections::BTreeSet<(String, i32)>,
}

fn describe_image_topic(
    image: &runnel_meta::ClusterImage,
    local: &Local,
    t: &runnel_meta::TopicImage,
    ops: i32,
) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let down_here = local.offline.contains(&(t.name.clone(), i as i32));
            let offline_at = |id: i32| !image.is_live(id) || (down_here && id == local.id);
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|id| offline_at(*id))
                .collect();
            let isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|id| !offline_at(*id))
                .collect();
            let leader = if down_here && p.leader == local.id {
                -1
            } else {
                p.leader
            };
            let code = if leader < 0 {
                ErrorCode::LeaderNotAvailable
            } else {
                ErrorCode::None
            };
            MetadataResponsePartition::default()
                .with_error_code(code.code())
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&isr))
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
