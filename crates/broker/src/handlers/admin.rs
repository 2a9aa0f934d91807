//! Administration APIs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
//! CreatePartitions, DescribeCluster, DeleteRecords, DescribeLogDirs.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_protocol::kp::messages::alter_configs_response::AlterConfigsResourceResponse;
use runnel_protocol::kp::messages::create_partitions_response::CreatePartitionsTopicResult;
use runnel_protocol::kp::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use runnel_protocol::kp::messages::describe_cluster_response::DescribeClusterBroker;
use runnel_protocol::kp::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use runnel_protocol::kp::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use runnel_protocol::kp::messages::*;
use runnel_protocol::kp::protocol::StrBytes;
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::config::describe::{self, Described};
use crate::config::{keys, topic_config_default, validate_topic_config};
use crate::coordinators::groups::group_configs;
use crate::error::{BrokerError, ErrorCode};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
/// Kafka's ConfigSource values.
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_GROUP: i8 = 8;

/// One DescribeConfigs entry; `config_type` from v3 on.
fn config_entry(
    name: &str,
    value: Option<&str>,
    source: i8,
    synonyms: bool,
    config_type: Option<i8>,
) -> DescribeConfigsResourceResult {
    let mut entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(value.map(str_bytes))
        .with_config_source(source);
    if synonyms {
        entry = entry.with_synonyms(vec![DescribeConfigsSynonym::default()
            .with_name(str_bytes(name))
            .with_value(value.map(str_bytes))
            .with_source(source)]);
    }
    if let Some(t) = config_type {
        entry = entry.with_config_type(t);
    }
    entry
}

fn check_group_name(name: &str) -> Result<(), BrokerError> {
    if name.is_empty() {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            "Group name must not be empty",
        ));
    }
    Ok(())
}

/// What a DescribeConfigs request asks besides values.
#[derive(Clone, Copy)]
struct Asked {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

/// One broker or topic entry from the config table's description.
fn described_entry(d: &Described, asked: Asked) -> DescribeConfigsResourceResult {
    let mut entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(&d.name))
        .with_value(d.value.as_deref().map(str_bytes))
        .with_config_source(d.source.code())
        .with_read_only(d.read_only)
        .with_is_sensitive(d.sensitive);
    if asked.synonyms {
        entry = entry.with_synonyms(
            d.synonyms
                .iter()
                .map(|s| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(&s.name))
                        .with_value(s.value.as_deref().map(str_bytes))
                        .with_source(s.source.code())
                })
                .collect(),
        );
    }
    if asked.version >= 3 {
        entry = entry.with_config_type(d.config_type);
        if asked.documentation && !d.doc.is_empty() {
            entry = entry.with_documentation(Some(str_bytes(d.doc)));
        }
    }
    entry
}

/// Only the keys asked for (None: all).
fn wanted(keys: Option<&Vec<StrBytes>>, name: &str) -> bool {
    keys.is_none_or(|ks| ks.iter().any(|x| x.as_str() == name))
}

/// A group's configs (Kafka 4.0 GroupConfig): its overrides, else the defaults. As in
/// Kafka, the group need not exist.
fn describe_group(
    broker: &Broker,
    name: &str,
    keys: Option<&Vec<StrBytes>>,
    synonyms: bool,
    v: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    check_group_name(name)?;
    let overrides = broker.groups.configs.get(name);
    Ok(
        group_configs::defaults(&broker.groups.config, &broker.shares.config)
            .into_iter()
            .filter(|(k, _, _)| keys.is_none_or(|ks| ks.iter().any(|x| x.as_str() == *k)))
            .map(|(k, config_type, default)| {
                let (value, source) = match overrides.get(k) {
                    Some(v) => (v.clone(), SOURCE_GROUP),
                    None => (default, SOURCE_DEFAULT),
                };
                config_entry(
                    k,
                    Some(&value),
                    source,
                    synonyms,
                    (v >= 3).then_some(config_type),
                )
            })
            .collect(),
    )
}

/// IncrementalAlterConfigs on a group: SET and DELETE (group configs hold no lists).
fn alter_group(
    broker: &Broker,
    name: &str,
    ops: &[(i8, String, Option<String>)],
    validate_only: bool,
) -> Result<(), BrokerError> {
    check_group_name(name)?;
    let mut configs = broker.groups.configs.get(name);
    for (op, key, value) in ops {
        match (*op, value) {
            (OP_SET, Some(v)) => {
                configs.insert(key.clone(), v.clone());
            }
            (OP_SET, None) => {
                return Err(BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!("null value to SET for group config '{key}'"),
                ))
            }
            (OP_DELETE, _) => {
                configs.remove(key);
            }
            (OP_APPEND | OP_SUBTRACT, _) => {
                return Err(BrokerError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "'{key}' is not a list; APPEND and SUBTRACT apply to list configs only"
                    ),
                ))
            }
            (op, _) => {
                return Err(BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown config operation {op} for '{key}'"),
                ))
            }
        }
    }
    group_configs::validate(&configs, &broker.groups.config, &broker.shares.config)?;
    if validate_only {
        return Ok(());
    }
    // Group configs live in the metadata log, so every coordinator applies them.
    let (key, value) = group_configs::GroupConfigStore::image_record(name, &configs);
    wait_for_controller(
        broker
            .cluster()
            .write_config_records(BTreeMap::from([(key, value)])),
    )
}

fn describe_topic(
    broker: &Broker,
    name: &str,
    keys: Option<&Vec<StrBytes>>,
    asked: Asked,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let topic = broker.topics.get(name).ok_or_else(|| {
        BrokerError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )
    })?;
    let (c, dynamic) = (
        broker.topics.effective_config(),
        broker.topics.dynamic_configs(),
    );
    Ok(describe::topic(&c, &dynamic, &topic.configs)
        .iter()
        .filter(|d| wanted(keys, &d.name))
        .map(|d| described_entry(d, asked))
        .collect())
}

fn describe_broker(
    broker: &Broker,
    name: &str,
    keys: Option<&Vec<StrBytes>>,
    asked: Asked,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    check_broker_name(broker, name)?;
    let (c, dynamic) = (
        broker.topics.effective_config(),
        broker.topics.dynamic_configs(),
    );
    Ok(describe::broker(&c, &dynamic)
        .iter()
        .filter(|d| wanted(keys, &d.name))
        .map(|d| described_entry(d, asked))
        .collect())
}

pub fn describe_configs(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeConfigsRequest = decode_body(&req.body, req.api_version)?;
    let asked = Asked {
        synonyms: body.include_synonyms,
        documentation: body.include_documentation,
        version: req.api_version,
    };
    let results = body
        .resources
        .iter()
        .map(|r| {
            // Null or empty: every key (Kafka treats both the same).
            let keys = r.configuration_keys.as_ref().filter(|k| !k.is_empty());
            let outcome = config_check(
                az,
                r.resource_type,
                &r.resource_name,
                Operation::DescribeConfigs,
            )
            .and_then(|()| match r.resource_type {
                RESOURCE_TOPIC => describe_topic(broker, &r.resource_name, keys, asked),
                RESOURCE_BROKER => describe_broker(broker, &r.resource_name, keys, asked),
                RESOURCE_GROUP => describe_group(
                    broker,
                    &r.resource_name,
                    keys,
                    body.include_synonyms,
                    req.api_version,
                ),
                crate::mirror::RESOURCE_CLUSTER_LINK => {
                    crate::mirror::admin::describe_configs(broker, &r.resource_name)
                }
                other => Err(BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            });
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match outcome {
                Ok(configs) => result.with_configs(configs),
                Err(e) => result
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    ready(
        req,
        &DescribeConfigsResponse::default().with_results(results),
    )
}

/// Validates a full set of topic configs.
fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), BrokerError> {
    for (k, v) in configs {
        validate_topic_config(k, v)
            .map_err(|e| BrokerError::new(ErrorCode::InvalidConfig, e.to_string()))?;
    }
    Ok(())
}

fn alter_topic(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    if broker.topics.get(name).is_none() {
        return Err(BrokerError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        ));
    }
    validate_all(&configs)?;
    if validate_only {
        return Ok(());
    }
    // Topic configs live in the metadata log: the controller records the change and
    // every broker applies it from its image.
    let cluster = broker.cluster();
    let wanted = configs.clone();
    wait_for_controller(async {
        cluster
            .controller
            .alter_topic_configs(name, configs)
            .await
            .map_err(crate::cluster::controller_error)?;
        cluster
            .wait_for_image(|img| img.topics.get(name).is_some_and(|t| t.configs == wanted))
            .await;
        Ok(())
    })
}

/// Runs a controller round trip from a handler's synchronous part. The admin APIs that
/// need it are rare and small; the connection's reader task waits, other tasks run on.
fn wait_for_controller<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Kafka: `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on the topic or group; on the
/// cluster for a broker or broker logger.
fn config_check(az: &Ctx, resource_type: i8, name: &str, op: Operation) -> Result<(), BrokerError> {
    let rt = match resource_type {
        RESOURCE_TOPIC => ResourceType::Topic,
        RESOURCE_GROUP => ResourceType::Group,
        _ => return az.require(op, ResourceType::Cluster, CLUSTER_NAME),
    };
    az.require(op, rt, name)
}

fn check_broker_name(broker: &Broker, name: &str) -> Result<(), BrokerError> {
    if name.is_empty() || name == broker.node_id().to_string() {
        Ok(())
    } else {
        Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("broker '{name}' is not this broker ({})", broker.node_id()),
        ))
    }
}

fn alter_response(
    resource_type: i8,
    name: &StrBytes,
    outcome: Result<(), BrokerError>,
) -> AlterConfigsResourceResponse {
    let r = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(name.clone());
    match outcome {
        Ok(()) => r,
        Err(e) => r
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message))),
    }
}

pub fn alter_configs(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: AlterConfigsRequest = decode_body(&req.body, req.api_version)?;
    let responses =
        body.resources
            .iter()
            .map(|r| {
                let outcome = config_check(
                    az,
                    r.resource_type,
                    &r.resource_name,
                    Operation::AlterConfigs,
                )
                .and_then(|()| match r.resource_type {
                    // Legacy AlterConfigs replaces the whole set: unnamed keys return to defaults.
                    RESOURCE_TOPIC => {
                        let configs = r
                            .configs
                            .iter()
                            .filter_map(|c| {
                                c.value
                                    .as_ref()
                                    .map(|v| (c.name.to_string(), v.to_string()))
                            })
                            .collect();
                        alter_topic(broker, &r.resource_name, configs, body.validate_only)
                    }
                    // Legacy AlterConfigs on a broker replaces its whole dynamic set.
                    RESOURCE_BROKER => check_broker_name(broker, &r.resource_name).and_then(|()| {
                        let mut changes: Vec<(String, Option<String>)> = broker
                            .topics
                            .dynamic_configs()
                            .into_keys()
                            .map(|k| (k, None))
                            .collect();
                        changes.extend(r.configs.iter().map(|c| {
                            (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))
                        }));
                        broker
                            .topics
                            .set_dynamic_configs(&changes, body.validate_only)
                    }),
                    other => Err(BrokerError::new(
                        ErrorCode::InvalidRequest,
                        format!("resource type {other} is not supported"),
                    )),
                });
                alter_response(r.resource_type, &r.resource_name, outcome)
            })
            .collect();
    ready(
        req,
        &AlterConfigsResponse::default().with_responses(responses),
    )
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub fn incremental_alter_configs(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: IncrementalAlterConfigsRequest = decode_body(&req.body, req.api_version)?;
    let responses = body
        .resources
        .iter()
        .map(|r| {
            let outcome = config_check(az, r.resource_type, &r.resource_name, Operation::AlterConfigs).and_then(|()| match r.resource_type {
                RESOURCE_TOPIC => (|| {
                    let topic = broker.topics.get(&r.resource_name).ok_or_else(|| BrokerError::new(ErrorCode::UnknownTopicOrPartition, format!("topic '{}' does not exist", r.resource_name.as_str())))?;
                    let mut configs = topic.configs.clone();
                    for c in &r.configs {
                        let key = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                        let effective = broker.topics.effective_config();
                        let current = || configs.get(&key).cloned().or_else(|| topic_config_default(&key, &effective)).unwrap_or_default();
                        match c.config_operation {
                            OP_SET => {
                                configs.insert(key, value);
                            }
                            OP_DELETE => {
                                configs.remove(&key);
                            }
                            OP_APPEND | OP_SUBTRACT => {
                                if !keys::topic_key(&key).is_some_and(|d| d.kind.is_list()) {
                                    return Err(BrokerError::new(ErrorCode::InvalidConfig, format!("'{key}' is not a list; APPEND and SUBTRACT apply to list configs only")));
                                }
                                let mut items: Vec<String> = current().split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                                for v in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                    if c.config_operation == OP_APPEND {
                                        if !items.iter().any(|i| i == v) {
                                            items.push(v.to_string());
                                        }
                                    } else {
                                        items.retain(|i| i != v);
                                    }
                                }
                                configs.insert(key, items.join(","));
                            }
                            op => return Err(BrokerError::new(ErrorCode::InvalidRequest, format!("unknown config operation {op} for '{key}'"))),
                        }
                    }
                    alter_topic(broker, &r.resource_name, configs, body.validate_only)
                })(),
                RESOURCE_BROKER => check_broker_name(broker, &r.resource_name).and_then(|()| {
                    let changes = r
                        .configs
                        .iter()
                        .map(|c| match c.config_operation {
                            OP_SET => Ok((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                            OP_DELETE => Ok((c.name.to_string(), None)),
                            op => Err(BrokerError::new(ErrorCode::InvalidConfig, format!("operation {op} is not valid for broker config '{}'", c.name.as_str()))),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    broker.topics.set_dynamic_configs(&changes, body.validate_only)
                }),
                RESOURCE_GROUP => {
                    let ops: Vec<(i8, String, Option<String>)> = r
                        .configs
                        .iter()
                        .map(|c| (c.config_operation, c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                        .collect();
                    alter_group(broker, &r.resource_name, &ops, body.validate_only)
                }
                crate::mirror::RESOURCE_CLUSTER_LINK => {
                    let ops: Vec<(i8, String, Option<String>)> = r
                        .configs
                        .iter()
                        .map(|c| (c.config_operation, c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                        .collect();
                    crate::mirror::admin::alter_configs(broker, &r.resource_name, &ops, body.validate_only)
                }
                other => Err(BrokerError::new(ErrorCode::InvalidRequest, format!("resource type {other} is not supported"))),
            });
            let r = alter_response(r.resource_type, &r.resource_name, outcome);
            runnel_protocol::kp::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(r.error_code)
                .with_error_message(r.error_message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
        })
        .collect();
    ready(
        req,
        &IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

pub fn create_partitions(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
    qc: &crate::server::quota::Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: CreatePartitionsRequest = decode_body(&req.body, req.api_version)?;
    // Kafka: ALTER on each topic; then KIP-599's mutation quota (v3+ strict) on the
    // partitions each adds.
    let mut throttle_ms = 0;
    let refused: BTreeMap<String, BrokerError> = body
        .topics
        .iter()
        .filter_map(|t| {
            let name = t.name.0.as_str();
            if !az.topic(Operation::Alter, name) {
                let e = crate::authz::denied_error(ResourceType::Topic, Operation::Alter, name);
                return Some((name.to_string(), e));
            }
            let current = broker.topics.get(name).map_or(0, |x| x.partitions.len());
            let adding = (t.count.max(0) as usize).saturating_sub(current);
            let strict = req.api_version >= 3;
            super::topics_admin::mutation_refused(qc, strict, adding, &mut throttle_ms)
                .then(|| (name.to_string(), super::topics_admin::throttled()))
        })
        .collect();
    let broker = broker.clone();
    let compute = move || {
        // The partitions the whole request adds, against the bounds, before any is added.
        let adding: usize = body
            .topics
            .iter()
            .map(|t| {
                let current = broker
                    .topics
                    .get(&t.name.0)
                    .map_or(0, |x| x.partitions.len() as i64);
                (t.count as i64 - current).max(0) as usize
            })
            .fold(0usize, usize::saturating_add);
        let budget = broker.topics.check_partition_budget(adding);
        let results = body
            .topics
            .iter()
            .map(|t| {
                let outcome = match &t.assignments {
                    _ if refused.contains_key(t.name.0.as_str()) => {
                        Err(refused[t.name.0.as_str()].clone())
                    }
                    _ if budget.is_err() => budget.clone(),
                    _ if crate::storage::topics::is_internal(&t.name.0) => Err(BrokerError::new(
                        ErrorCode::InvalidTopic,
                        format!(
                            "'{}' is an internal topic: its partition count is fixed",
                            t.name.0.as_str()
                        ),
                    )),
                    _ => {
                        let cluster = broker.cluster();
                        let assignments = t.assignments.as_ref().map(|a| {
                            a.iter()
                                .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                                .collect()
                        });
                        let name = t.name.0.as_str();
                        wait_for_controller(async {
                            if body.validate_only {
                                return Ok(());
                            }
                            cluster
                                .controller
                                .create_partitions(name, t.count, assignments)
                                .await
                                .map_err(crate::cluster::controller_error)?;
                            cluster
                                .wait_for_image(|img| {
                                    img.topics
                                        .get(name)
                                        .is_some_and(|x| x.partitions.len() as i32 >= t.count)
                                })
                                .await;
                            Ok(())
                        })
                    }
                };
                let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                match outcome {
                    Ok(()) => r,
                    Err(e) => r
                        .with_error_code(e.code.code())
                        .with_error_message(Some(str_bytes(&e.message))),
                }
            })
            .collect();
        CreatePartitionsResponse::default()
            .with_results(results)
            .with_throttle_time_ms(throttle_ms)
    };
    // Waits for the controller in place (the reader task of this connection).
    ready(req, &compute())
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    listener: &str,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeClusterRequest = decode_body(&req.body, req.api_version)?;
    // Kafka checks nothing here; it reports what the principal may do (KIP-430).
    let ops = super::authorized::if_requested(
        body.include_cluster_authorized_operations,
        az.authorized_bits(
            ResourceType::Cluster,
            CLUSTER_NAME,
            super::authorized::CLUSTER,
        ),
    );
    let cluster = broker.cluster();
    let image = cluster.current_image();
    let brokers = image
        .live_brokers()
        .map(|b| {
            let (host, port) = b.endpoint(listener);
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    let controller = cluster.controller_id_for_clients(broker.node_id());
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(
            image.cluster_id.as_deref().unwrap_or(&broker.cluster_id),
        ))
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(ops)
        .with_endpoint_type(1);
    ready(req, &response)
}

pub fn delete_records(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DeleteRecordsRequest = decode_body(&req.body, req.api_version)?;
    let topics = body
        .topics
        .iter()
        .map(|t| {
            // Kafka: DELETE on the topic.
            let authorized = az.topic(Operation::Delete, &t.name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if !authorized {
                        return r.with_error_code(ErrorCode::TopicAuthorizationFailed.code());
                    }
                    // Kafka's ReplicaManager: "Cannot delete records of internal topic".
                    if crate::storage::topics::is_internal(&t.name.0) {
                        return r.with_error_code(ErrorCode::InvalidTopic.code());
                    }
                    let Some(part) = broker.topics.partition(&t.name.0, p.partition_index) else {
                        return r.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    let mut log = part.log.lock();
                    // -1 means "up to the high watermark".
                    let target = if p.offset == -1 {
                        log.log_end_offset()
                    } else {
                        p.offset
                    };
                    match log.delete_records_before(target) {
                        Ok(low) => r.with_low_watermark(low),
                        Err(e) => r.with_error_code(BrokerError::from(e).code.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ready(req, &DeleteRecordsResponse::default().with_topics(topics))
}

/// (total, usable) bytes of the filesystem holding `dir`.
fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return (-1, -1);
    }
    let block = st.f_frsize as i64;
    (st.f_blocks as i64 * block, st.f_bavail as i64 * block)
}

pub fn describe_log_dirs(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeLogDirsRequest = decode_body(&req.body, req.api_version)?;
    let wanted = |topic: &str, p: i32| {
        body.topics.as_ref().is_none_or(|ts| {
            ts.iter()
                .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&p))
        })
    };
    let mut by_dir: BTreeMap<std::path::PathBuf, BTreeMap<String, Vec<DescribeLogDirsPartition>>> =
        broker
            .topics
            .log_dirs()
            .iter()
            .map(|d| (d.clone(), BTreeMap::new()))
            .collect();
    for topic in broker.topics.all() {
        for p in &topic.partitions {
            if !wanted(&topic.name, p.index) {
                continue;
            }
            let log = p.log.lock();
            let Some(parent) = log.dir().parent().map(|d| d.to_path_buf()) else {
                continue;
            };
            let entry = DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(log.size_bytes() as i64)
                .with_offset_lag(0);
            by_dir
                .entry(parent)
                .or_default()
                .entry(topic.name.clone())
                .or_default()
                .push(entry);
        }
    }
    let results = by_dir
        .into_iter()
        .map(|(dir, topics)| {
            let (total, usable) = disk_space(&dir);
            let mut r = DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(&dir.display().to_string()))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            DescribeLogDirsTopic::default()
                                .with_name(TopicName(str_bytes(&name)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            if req.api_version >= 4 {
                r = r.with_total_bytes(total).with_usable_bytes(usable);
            }
            r
        })
        .collect();
    ready(
        req,
        &DescribeLogDirsResponse::default().with_results(results),
    )
}

pub fn alter_replica_log_dirs(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
) -> Result<ResponseFuture, DecodeError> {
    use runnel_protocol::kp::messages::alter_replica_log_dirs_response::{
        AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
    };
    let body: AlterReplicaLogDirsRequest = decode_body(&req.body, req.api_version)?;
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in &body.dirs {
        let target = std::path::PathBuf::from(dir.path.as_str());
        for t in &dir.topics {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    let code = match broker.topics.move_partition(&t.name.0, p, &target) {
                        Ok(()) => ErrorCode::None,
                        Err(e) => {
                            tracing::warn!(topic = %t.name.0, partition = p, error = %e, "log dir move refused");
                            e.code
                        }
                    };
                    AlterReplicaLogDirPartitionResult::default().with_partition_index(p).with_error_code(code.code())
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
    }
    ready(
        req,
        &AlterReplicaLogDirsResponse::default().with_results(results),
    )
}

pub fn describe_topic_partitions(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    use runnel_protocol::kp::messages::describe_topic_partitions_response::{
        Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
    };
    let body: DescribeTopicPartitionsRequest = decode_body(&req.body, req.api_version)?;
    let node = BrokerId(broker.node_id());
    // Kafka: DESCRIBE on each topic; a listing leaves out the others, a named topic
    // the principal may not describe is answered TOPIC_AUTHORIZATION_FAILED.
    let listing = body.topics.is_empty();
    let mut names: Vec<String> = if listing {
        broker
            .topics
            .all()
            .iter()
            .map(|t| t.name.clone())
            .filter(|n| az.visible(Operation::Describe, ResourceType::Topic, n))
            .collect()
    } else {
        body.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    let (start_topic, start_partition) = body.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.0.to_string(), c.partition_index)
    });
    let limit = body.response_partition_limit.clamp(1, 2000) as usize;
    let mut budget = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    let failed = |name: &str, code: ErrorCode| {
        DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_error_code(code.code())
            .with_topic_authorized_operations(i32::MIN)
    };
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        if !listing && !az.topic(Operation::Describe, &name) {
            topics.push(failed(&name, ErrorCode::TopicAuthorizationFailed));
            continue;
        }
        let Some(t) = broker.topics.get(&name) else {
            topics.push(failed(&name, ErrorCode::UnknownTopicOrPartition));
            continue;
        };
        let first = if name == start_topic {
            start_partition.max(0) as usize
        } else {
            0
        };
        let mut partitions = Vec::new();
        for p in t.partitions.iter().skip(first) {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(str_bytes(&name)))
                        .with_partition_index(p.index),
                );
                break;
            }
            budget -= 1;
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p.index)
                    .with_leader_id(node)
                    .with_leader_epoch(p.leader_epoch())
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new())),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(&name))))
                .with_topic_id(t.id)
                .with_is_internal(name.starts_with("__"))
                .with_partitions(partitions)
                .with_topic_authorized_operations(super::authorized::TOPIC),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    ready(
        req,
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}

/// DescribeQuorum (KIP-595): the metadata quorum's leader, epoch, high watermark and each
/// voter's and observer's progress, asked of the active controller (any node forwards).
pub fn describe_quorum(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
) -> Result<ResponseFuture, DecodeError> {
    use runnel_protocol::kp::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let body: DescribeQuorumRequest = decode_body(&req.body, req.api_version)?;
    let cluster = broker.cluster().clone();
    let voters = broker.config.cluster.voters.clone();
    let req = req.clone();
    Ok(Box::pin(async move {
        let quorum = cluster.controller.describe_quorum().await;
        let response = match quorum {
            Err(e) => DescribeQuorumResponse::default()
                .with_error_code(crate::cluster::error_code(e.kind).code())
                .with_error_message(Some(str_bytes(&e.to_string()))),
            Ok(q) => {
                let replica = |r: &runnel_meta::QuorumReplica| {
                    ReplicaState::default()
                        .with_replica_id(BrokerId(r.id))
                        .with_log_end_offset(r.log_end_offset)
                        .with_last_fetch_timestamp(-1)
                        .with_last_caught_up_timestamp(-1)
                };
                let topics = body
                    .topics
                    .iter()
                    .map(|t| {
                        let partitions = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let data = PartitionData::default()
                                    .with_partition_index(p.partition_index);
                                if t.topic_name.0.as_str() != "__cluster_metadata"
                                    || p.partition_index != 0
                                {
                                    return data.with_error_code(
                                        ErrorCode::UnknownTopicOrPartition.code(),
                                    );
                                }
                                data.with_leader_id(BrokerId(q.leader))
                                    .with_leader_epoch(q.epoch)
                                    .with_high_watermark(q.high_watermark)
                                    .with_current_voters(q.voters.iter().map(replica).collect())
                                    .with_observers(q.observers.iter().map(replica).collect())
                            })
                            .collect();
                        TopicData::default()
                            .with_topic_name(t.topic_name.clone())
                            .with_partitions(partitions)
                    })
                    .collect();
                // v2: where each voter's controller listens.
                let nodes = voters
                    .iter()
                    .map(|(id, addr)| {
                        Node::default()
                            .with_node_id(BrokerId(*id))
                            .with_listeners(vec![Listener::default()
                                .with_name(str_bytes("CONTROLLER"))
                                .with_host(str_bytes(&addr.ip().to_string()))
                                .with_port(addr.port())])
                    })
                    .collect();
                DescribeQuorumResponse::default()
                    .with_topics(topics)
                    .with_nodes(if req.api_version >= 2 {
                        nodes
                    } else {
                        Vec::new()
                    })
            }
        };
        super::encode(&req, &response)
    }))
}
