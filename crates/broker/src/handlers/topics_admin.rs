//! CreateTopics and DeleteTopics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use runnel_protocol::kp::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use runnel_protocol::kp::messages::delete_topics_response::DeletableTopicResult;
use runnel_protocol::kp::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};
use uuid::Uuid;

use super::{str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType};
use crate::authz::denied_error;
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

pub fn create(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
    qc: &crate::server::quota::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: CreateTopicsRequest = decode_body(&req.body, req.api_version)?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &body.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    // Kafka: CREATE on the cluster, else CREATE on each topic.
    let mut refused: HashMap<String, BrokerError> = if az.cluster(Operation::Create) {
        HashMap::new()
    } else {
        seen.keys()
            .filter(|n| !az.topic(Operation::Create, n))
            .map(|n| {
                (
                    n.clone(),
                    denied_error(ResourceType::Topic, Operation::Create, n),
                )
            })
            .collect()
    };
    let throttle_ms = mutation_quota(broker, req, &body, qc, &mut refused);
    // Kafka returns a created topic's configs only to a principal that may
    // DESCRIBE_CONFIGS it (else topic_config_error_code TOPIC_AUTHORIZATION_FAILED).
    let configs_hidden = seen
        .keys()
        .filter(|n| !refused.contains_key(*n) && !az.topic(Operation::DescribeConfigs, n))
        .cloned()
        .collect();
    let checks = Prechecks {
        seen,
        refused,
        budget: request_budget(broker, &body),
        configs_hidden,
    };
    Ok(create_through_controller(
        broker.clone(),
        broker.cluster().clone(),
        req.clone(),
        body,
        checks,
        throttle_ms,
    ))
}

/// CreateTopics: checked here (names, configs, counts), placed and recorded by the
/// controller, answered once this broker's metadata image has the topics.
fn create_through_controller(
    broker: Arc<Broker>,
    cluster: Arc<crate::cluster::Cluster>,
    req: ParsedRequest,
    body: CreateTopicsRequest,
    checks: Prechecks,
    throttle_ms: i32,
) -> ResponseFuture {
    Box::pin(async move {
        let mut results: Vec<Result<(), BrokerError>> = Vec::new();
        let mut to_create = Vec::new();
        for t in &body.topics {
            let name = t.name.0.to_string();
            let checked =
                precheck(&broker, &name, &checks).and_then(|()| validate_one(&broker, &name, t));
            if checked.is_ok() {
                let assignments = (!t.assignments.is_empty()).then(|| {
                    t.assignments
                        .iter()
                        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                });
                to_create.push((
                    results.len(),
                    runnel_meta::NewTopic {
                        id: None,
                        name,
                        num_partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                        assignments,
                        configs: t
                            .configs
                            .iter()
                            .filter_map(|c| {
                                Some((c.name.to_string(), c.value.as_ref()?.to_string()))
                            })
                            .collect(),
                    },
                ));
            }
            results.push(checked);
        }
        let (slots, new): (Vec<usize>, Vec<runnel_meta::NewTopic>) = to_create.into_iter().unzip();
        let names: Vec<String> = new.iter().map(|t| t.name.clone()).collect();
        let created = cluster
            .controller
            .create_topics(new, body.validate_only)
            .await;
        for (slot, outcome) in slots.iter().zip(created) {
            if let Err(e) = outcome {
                results[*slot] = Err(crate::cluster::controller_error(e));
            }
        }
        if !body.validate_only {
            let ok: Vec<&String> = names
                .iter()
                .zip(&slots)
                .filter(|(_, s)| results[**s].is_ok())
                .map(|(n, _)| n)
                .collect();
            cluster
                .wait_for_image(|img| ok.iter().all(|n| img.topics.contains_key(n.as_str())))
                .await;
            // This broker serves them at once (on a single node, the only one) once its
            // reconcile has opened them: a produce right after the answer finds them.
            cluster
                .wait_reconciled(cluster.current_image().applied_index)
                .await;
        }
        let image = cluster.current_image();
        let out = body
            .topics
            .iter()
            .zip(results)
            .map(|(t, outcome)| {
                let r = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
                match (outcome, image.topics.get(t.name.0.as_str())) {
                    (Err(e), _) => r
                        .with_error_code(e.code.code())
                        .with_error_message(Some(str_bytes(&e.message))),
                    (Ok(()), Some(img)) if !body.validate_only => {
                        let created = r
                            .with_topic_id(img.id)
                            .with_num_partitions(img.partitions.len() as i32)
                            .with_replication_factor(
                                img.partitions
                                    .first()
                                    .map_or(0, |p| p.replicas.len() as i16),
                            );
                        with_created_configs(created, &broker, &checks, &t.name, &img.configs)
                    }
                    (Ok(()), _) => r
                        .with_num_partitions(t.num_partitions)
                        .with_replication_factor(t.replication_factor),
                }
            })
            .collect();
        let response = CreateTopicsResponse::default()
            .with_topics(out)
            .with_throttle_time_ms(throttle_ms);
        super::encode(&req, &response)
    })
}

/// KIP-599 for one topic's mutation of `partitions`: true when it is refused (a strict
/// request version while the quota is used up); otherwise the partitions are recorded.
/// `throttle_ms` keeps the longest throttle for the response.
pub(super) fn mutation_refused(
    qc: &crate::server::quota::Ctx,
    strict: bool,
    partitions: usize,
    throttle_ms: &mut i32,
) -> bool {
    if let Some(ms) = qc.mutation_exceeded() {
        *throttle_ms = (*throttle_ms).max(ms.min(i32::MAX as u64) as i32);
        if strict {
            return true;
        }
    }
    let ms = qc.record(
        crate::server::quota::CONTROLLER_MUTATION_RATE,
        partitions as f64,
    );
    *throttle_ms = (*throttle_ms).max(ms);
    false
}

/// THROTTLING_QUOTA_EXCEEDED, as Kafka words it.
pub(super) fn throttled() -> BrokerError {
    BrokerError::new(
        ErrorCode::ThrottlingQuotaExceeded,
        "controller_mutation_rate quota exceeded; retry after the throttle time",
    )
}

/// KIP-599's controller_mutation_rate on CreateTopics: each topic's partitions count;
/// while the quota is used up, v6+ refuses the topic with THROTTLING_QUOTA_EXCEEDED
/// (older versions go ahead, throttled). Returns the throttle time for the response.
fn mutation_quota(
    broker: &Broker,
    req: &ParsedRequest,
    body: &CreateTopicsRequest,
    qc: &crate::server::quota::Ctx,
    refused: &mut HashMap<String, BrokerError>,
) -> i32 {
    let mut throttle_ms = 0;
    for t in &body.topics {
        let name = t.name.0.as_str();
        if refused.contains_key(name) {
            continue;
        }
        let partitions = match (t.assignments.len(), t.num_partitions) {
            (0, n) if n > 0 => n as usize,
            (0, _) => broker.config.num_partitions.max(1) as usize,
            (n, _) => n,
        };
        if mutation_refused(qc, req.api_version >= 6, partitions, &mut throttle_ms) {
            refused.insert(name.to_string(), throttled());
        }
    }
    throttle_ms
}

/// What a CreateTopics request is checked against before each topic's own checks,
/// worked out once per request.
struct Prechecks {
    /// How often each name appears in the request.
    seen: HashMap<String, usize>,
    /// Topics the authorizer or the mutation quota refused, with their error.
    refused: HashMap<String, BrokerError>,
    /// The whole request against the partition bounds.
    budget: Result<(), BrokerError>,
    /// Topics whose configs the principal may not DESCRIBE_CONFIGS.
    configs_hidden: std::collections::HashSet<String>,
}

/// A created topic's result with its configs, or TOPIC_AUTHORIZATION_FAILED in their
/// place for a principal that may not DESCRIBE_CONFIGS it.
fn with_created_configs(
    r: CreatableTopicResult,
    broker: &Broker,
    checks: &Prechecks,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> CreatableTopicResult {
    if checks.configs_hidden.contains(name) {
        return r
            .with_configs(None)
            .with_topic_config_error_code(ErrorCode::TopicAuthorizationFailed.code());
    }
    r.with_configs(Some(describe_configs(broker, configs)))
}

/// What refuses a topic of a CreateTopics before its own checks: the authorizer or the
/// mutation quota, a name given twice, the request over the partition bounds, an
/// internal or reserved name.
fn precheck(broker: &Broker, name: &str, checks: &Prechecks) -> Result<(), BrokerError> {
    let Prechecks {
        seen,
        refused,
        budget,
        ..
    } = checks;
    if let Some(e) = refused.get(name) {
        return Err(e.clone());
    }
    if seen[name] > 1 {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("topic '{name}' appears more than once in the request"),
        ));
    }
    budget.clone()?;
    crate::storage::topics::check_client_creatable(name, broker.topics.get(name).is_some())
}

/// The partitions the whole request would add, against `max.partitions.per.request`
/// and the broker's budget (checked before any topic of it is created, so a request
/// over the bound creates nothing).
fn request_budget(broker: &Broker, body: &CreateTopicsRequest) -> Result<(), BrokerError> {
    let default = broker.config.num_partitions.max(1) as usize;
    let total: usize = body
        .topics
        .iter()
        .map(|t| match (t.assignments.len(), t.num_partitions) {
            (0, -1) => default,
            (0, n) => n.max(0) as usize,
            (n, _) => n,
        })
        .fold(0usize, usize::saturating_add);
    broker.topics.check_partition_budget(total)
}

/// What this broker checks of a new topic before the controller places it: the name,
/// counts, configs and the shape of explicit assignments.
fn validate_one(
    broker: &Broker,
    name: &str,
    t: &runnel_protocol::kp::messages::create_topics_request::CreatableTopic,
) -> Result<(), BrokerError> {
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        if let Some(v) = &c.value {
            configs.insert(c.name.to_string(), v.to_string());
        }
    }
    let partitions = if t.assignments.is_empty() {
        t.num_partitions
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::new(
                ErrorCode::InvalidRequest,
                "give either replica assignments or partitions and replication factor, not both",
            ));
        }
        for (i, a) in t.assignments.iter().enumerate() {
            if a.partition_index != i as i32 {
                return Err(BrokerError::new(
                    ErrorCode::InvalidPartitions,
                    "replica assignments must cover partitions 0..n in order",
                ));
            }
            if a.broker_ids.is_empty() {
                return Err(BrokerError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!("partition {i}'s replica assignment names no broker"),
                ));
            }
        }
        t.assignments.len() as i32
    };
    broker
        .topics
        .create(name, partitions, configs, true)
        .map(drop)
}

fn describe_configs(broker: &Broker, set: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    let (c, dynamic) = (
        broker.topics.effective_config(),
        broker.topics.dynamic_configs(),
    );
    crate::config::describe::topic(&c, &dynamic, set)
        .into_iter()
        .map(|d| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(&d.name))
                .with_value(d.value.as_deref().map(str_bytes))
                .with_config_source(d.source.code())
                .with_read_only(d.read_only)
                .with_is_sensitive(d.sensitive)
        })
        .collect()
}

pub fn delete(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
    qc: &crate::server::quota::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DeleteTopicsRequest = decode_body(&req.body, req.api_version)?;
    // KIP-599: v5+ refuses a deletion while the mutation quota is used up.
    let strict = req.api_version >= 5;
    let mut throttle_ms = 0;
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let mut targets: Vec<(Option<TopicName>, Uuid)> = body
        .topic_names
        .into_iter()
        .map(|n| (Some(n), Uuid::nil()))
        .collect();
    targets.extend(body.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let mut results = Vec::with_capacity(targets.len());
    // (slot in results, topic) for the controller to delete.
    let mut deletions: Vec<(usize, String)> = Vec::new();
    for (name, id) in targets {
        let topic = match &name {
            Some(n) => broker.topics.get(&n.0),
            None => broker.topics.get_by_id(id),
        };
        // Kafka: DELETE on the topic, checked before its existence is revealed; a topic
        // named by id that the principal may not DESCRIBE is UNKNOWN_TOPIC_ID.
        let authorized = match (&name, &topic) {
            (Some(n), _) => az.require(Operation::Delete, ResourceType::Topic, &n.0),
            (None, Some(t)) if !az.topic(Operation::Describe, &t.name) => Err(BrokerError::new(
                ErrorCode::UnknownTopicId,
                format!("no topic has id {id}"),
            )),
            (None, Some(t)) => az.require(Operation::Delete, ResourceType::Topic, &t.name),
            (None, None) => Ok(()),
        };
        // Nothing of a topic the principal may not describe goes back, not even its name.
        let topic =
            topic.filter(|_| !matches!(&authorized, Err(e) if e.code == ErrorCode::UnknownTopicId));
        let outcome = authorized.and_then(|()| match (&topic, broker.config.delete_topic_enable) {
            (_, false) => Err(BrokerError::new(
                ErrorCode::TopicDeletionDisabled,
                "delete.topic.enable is false on this broker",
            )),
            (Some(t), _) if crate::storage::topics::is_internal(&t.name) => Err(BrokerError::new(
                ErrorCode::InvalidTopic,
                format!("'{}' is an internal topic and cannot be deleted", t.name),
            )),
            (None, _) if name.is_none() => Err(BrokerError::new(
                ErrorCode::UnknownTopicId,
                format!("no topic has id {id}"),
            )),
            (None, _) => Err(BrokerError::new(
                ErrorCode::UnknownTopicOrPartition,
                "topic does not exist",
            )),
            (Some(t), _) if mutation_refused(qc, strict, t.partitions.len(), &mut throttle_ms) => {
                Err(throttled())
            }
            (Some(t), _) => {
                deletions.push((results.len(), t.name.clone()));
                Ok(())
            }
        });
        let mut r = DeletableTopicResult::default()
            .with_name(name.or_else(|| topic.as_ref().map(|t| TopicName(str_bytes(&t.name)))))
            .with_topic_id(topic.as_ref().map_or(id, |t| t.id));
        if let Err(e) = outcome {
            r = r
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(&e.message)));
        }
        results.push(r);
    }
    let cluster = broker.cluster().clone();
    let req = req.clone();
    Ok(Box::pin(async move {
        let names: Vec<String> = deletions.iter().map(|(_, n)| n.clone()).collect();
        let outcomes = cluster.controller.delete_topics(names.clone()).await;
        for ((slot, _), outcome) in deletions.iter().zip(outcomes) {
            if let Err(e) = outcome {
                let e = crate::cluster::controller_error(e);
                results[*slot].error_code = e.code.code();
                results[*slot].error_message = Some(str_bytes(&e.message));
            }
        }
        cluster
            .wait_for_image(|img| names.iter().all(|n| !img.topics.contains_key(n)))
            .await;
        super::encode(
            &req,
            &DeleteTopicsResponse::default()
                .with_responses(results)
                .with_throttle_time_ms(throttle_ms),
        )
    }))
}
