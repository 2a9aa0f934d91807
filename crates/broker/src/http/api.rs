//! The JSON handlers and `/metrics`. Reading a partition's log takes its mutex, so every
//! view is gathered on the blocking pool, never on the runtime's workers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Buf;
use runnel_protocol::kp::messages::{ApiKey, ConsumerProtocolAssignment};
use runnel_protocol::kp::protocol::Decodable;
use serde::Serialize;
use serde_json::{json, Value};

use super::prometheus::{self, LagSample, PartitionSample, Snapshot};
use super::{ApiError, HttpState};
use crate::authz::acl::{Operation, ResourceType};
use crate::broker::Broker;
use crate::config::describe::{self, Described};
use crate::storage::partition::Partition;
use crate::storage::topics::{validate_topic_name, Topic};

type ApiResult<T> = Result<T, ApiError>;
pub(super) type MaybePath = Result<Path<String>, PathRejection>;
pub(super) type MaybeQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Runs `f` on the blocking pool (it may wait on partition locks).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))
}

pub(super) fn path(p: MaybePath) -> ApiResult<String> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(format!("malformed path: {}", e.body_text())))
}

/// The query parameters, refusing any not in `allowed`.
pub(super) fn query(q: MaybeQuery, allowed: &[&str]) -> ApiResult<HashMap<String, String>> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("malformed query string: {}", e.body_text())))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(if allowed.is_empty() {
            format!("unknown query parameter '{k}': this endpoint takes none")
        } else {
            format!(
                "unknown query parameter '{k}' (expected {})",
                allowed.join(", ")
            )
        }));
    }
    Ok(q)
}

pub(super) fn bool_param(q: &HashMap<String, String>, key: &str, default: bool) -> ApiResult<bool> {
    match q.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "query parameter '{key}' must be true or false, not '{v}'"
        ))),
    }
}

pub(super) fn topic_name(p: MaybePath) -> ApiResult<String> {
    let name = path(p)?;
    validate_topic_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(name)
}

fn unknown_topic(name: &str) -> ApiError {
    ApiError::not_found(format!("unknown topic '{name}'"))
}

fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

// ------------------------------------------------------------------------- brokers

fn bootstrap(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub async fn brokers(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Json<Value>> {
    query(q, &[])?;
    let b = &s.broker;
    let addr = bootstrap(&b.advertised_host, b.advertised_port);
    // Every registered broker from the metadata image, fenced ones included (Metadata
    // leaves those out; an operator wants to see them).
    let cluster = b.cluster();
    let image = cluster.current_image();
    let brokers: Vec<Value> = image
        .brokers
        .values()
        .map(|x| {
            json!({
                "node_id": x.id,
                "host": x.host,
                "port": x.port,
                "rack": x.rack,
                "bootstrap": bootstrap(&x.host, x.port),
                "fenced": x.fenced,
            })
        })
        .collect();
    let live: Vec<String> = image
        .live_brokers()
        .map(|x| bootstrap(&x.host, x.port))
        .collect();
    Ok(Json(json!({
        "cluster_id": b.cluster_id,
        "controller_id": cluster.controller_id_for_clients(b.node_id()),
        "bootstrap_servers": if live.is_empty() { addr } else { live.join(",") },
        "brokers": brokers,
        "quorum": {
            "voters": b.config.cluster.voters.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            "leader": cluster.meta.as_ref().and_then(|m| m.leader()),
        },
    })))
}

// -------------------------------------------------------------------------- topics

#[derive(Serialize)]
pub struct PartitionView {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline_replicas: Vec<i32>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    last_stable_offset: i64,
    size_bytes: u64,
    segments: usize,
    log_dir: String,
}

#[derive(Serialize)]
pub struct TopicView {
    name: String,
    id: String,
    internal: bool,
    partition_count: usize,
    replication_factor: usize,
    size_bytes: u64,
    configs: BTreeMap<String, String>,
    partitions: Vec<PartitionView>,
}

/// The log.dirs entry holding a partition (the parent of its directory).
fn log_dir_of(log: &runnel_log::PartitionLog) -> PathBuf {
    log.dir()
        .parent()
        .map(FsPath::to_path_buf)
        .unwrap_or_default()
}

/// One partition as this broker sees it: leader, replicas and ISR come from the
/// partition's replica state (the metadata image as last applied here).
fn partition_view(node: i32, p: &Partition, offline_dirs: &[PathBuf]) -> PartitionView {
    let log = p.log.lock();
    let dir = log_dir_of(&log);
    // The local replica is on a failed log dir, or its files failed recovery: offline
    // here, as Metadata reports it.
    let offline = p.storage_offline || offline_dirs.contains(&dir);
    let high_watermark = p.high_watermark_with(&log);
    // Lock order: the log before the replica state.
    let r = p.replica.lock();
    let (mut leader, replicas, mut isr) = (r.leader, r.replicas.clone(), r.isr.clone());
    drop(r);
    if offline {
        isr.retain(|id| *id != node);
        if leader == node {
            leader = -1;
        }
    }
    PartitionView {
        partition: p.index,
        leader,
        leader_epoch: p.leader_epoch(),
        replicas,
        isr,
        offline_replicas: if offline { vec![node] } else { vec![] },
        log_start_offset: log.log_start_offset(),
        log_end_offset: log.log_end_offset(),
        high_watermark,
        last_stable_offset: log.last_stable_offset(),
        size_bytes: log.size_bytes(),
        segments: log.segment_count(),
        log_dir: dir.display().to_string(),
    }
}

fn topic_view(b: &Broker, t: &Topic, only: Option<i32>) -> TopicView {
    let node = b.node_id();
    let offline_dirs = b.offline_dirs();
    let partitions: Vec<PartitionView> = t
        .partitions
        .iter()
        .filter(|p| only.is_none_or(|i| p.index == i))
        .map(|p| partition_view(node, p, &offline_dirs))
        .collect();
    TopicView {
        name: t.name.clone(),
        id: t.id.to_string(),
        internal: is_internal(&t.name),
        partition_count: t.partitions.len(),
        replication_factor: t
            .partitions
            .first()
            .map_or(1, |p| p.replica.lock().replicas.len().max(1)),
        size_bytes: partitions.iter().map(|p| p.size_bytes).sum(),
        configs: t.configs.clone(),
        partitions,
    }
}

/// Who an HTTP read is authorized as: the request's caller (`auth.rs`; its changes run
/// as it too, through `handlers::dispatch`), so a read shows what a Kafka client with
/// that principal may DESCRIBE.
fn http_reader(b: &Arc<Broker>, api: ApiKey) -> crate::authz::Ctx {
    let conn = super::auth::conn(b, super::actions::PEER);
    crate::authz::Ctx::new(b, &conn, api)
}

/// 403 with Kafka's error name, as a refused change answers.
fn forbidden(rt: ResourceType, name: &str) -> ApiError {
    forbidden_to(rt, Operation::Describe, name)
}

fn forbidden_to(rt: ResourceType, op: Operation, name: &str) -> ApiError {
    let e = crate::authz::denied_error(rt, op, name);
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: format!("{}: {}", super::kafka::error_name(e.code.code()), e.message),
    }
}

pub async fn topics(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Json<Value>> {
    let q = query(q, &["internal"])?;
    let internal = bool_param(&q, "internal", true)?;
    let b = s.broker.clone();
    let az = http_reader(&b, ApiKey::Metadata);
    let topics = blocking(move || {
        b.topics
            .all()
            .iter()
            .filter(|t| internal || !is_internal(&t.name))
            .filter(|t| az.visible(Operation::Describe, ResourceType::Topic, &t.name))
            .map(|t| topic_view(&b, t, None))
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(json!({ "topics": topics })))
}

pub async fn topic(
    State(s): State<HttpState>,
    name: MaybePath,
    q: MaybeQuery,
) -> ApiResult<Json<TopicView>> {
    let name = topic_name(name)?;
    let q = query(q, &["partition"])?;
    let only = match q.get("partition") {
        None => None,
        Some(v) => Some(v.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter 'partition' must be a non-negative integer, not '{v}'"
            ))
        })?),
    };
    if !http_reader(&s.broker, ApiKey::Metadata).topic(Operation::Describe, &name) {
        return Err(forbidden(ResourceType::Topic, &name));
    }
    let t = s
        .broker
        .topics
        .get(&name)
        .ok_or_else(|| unknown_topic(&name))?;
    if let Some(p) = only {
        if p as usize >= t.partitions.len() {
            return Err(ApiError::not_found(format!(
                "topic '{name}' has no partition {p} (it has {})",
                t.partitions.len()
            )));
        }
    }
    let b = s.broker.clone();
    Ok(Json(blocking(move || topic_view(&b, &t, only)).await?))
}

// -------------------------------------------------------------------------- groups

/// Kafka accepts any group id up to the wire's 16-bit string length; control
/// characters are refused here as malformed (they never come from a real client).
pub(super) fn group_id(p: MaybePath) -> ApiResult<String> {
    let id = path(p)?;
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "malformed group id: it contains control characters",
        ));
    }
    if id.len() > i16::MAX as usize {
        return Err(ApiError::bad_request(format!(
            "malformed group id: {} bytes, at most {} allowed",
            id.len(),
            i16::MAX
        )));
    }
    Ok(id)
}

#[derive(Serialize, Clone)]
pub struct AssignedTopic {
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Serialize)]
pub struct MemberView {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    assignment: Vec<AssignedTopic>,
}

#[derive(Serialize)]
pub struct OffsetView {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    metadata: Option<String>,
    member_id: Option<String>,
}

#[derive(Serialize)]
pub struct GroupView {
    group_id: String,
    #[serde(rename = "type")]
    group_type: String,
    protocol_type: String,
    protocol: String,
    state: String,
    members: Vec<MemberView>,
    offsets: Vec<OffsetView>,
    total_lag: i64,
}

/// Decodes a classic consumer's assignment (ConsumerProtocolAssignment); empty when the
/// group is not a consumer group or the bytes are not one.
fn decode_assignment(bytes: &bytes::Bytes) -> Vec<AssignedTopic> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().min(3);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| AssignedTopic {
                topic: tp.topic.to_string(),
                partitions: tp.partitions,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(super) fn members_of(b: &Broker, id: &str) -> Option<(String, String, Vec<MemberView>)> {
    if let Some(v) = b.groups.with_consumer_group(id, |g| {
        let members = g
            .members
            .values()
            .map(|m| {
                let assignment = m
                    .owned
                    .iter()
                    .filter_map(|(tid, parts)| {
                        Some(AssignedTopic {
                            topic: b.topics.get_by_id(*tid)?.name.clone(),
                            partitions: parts.iter().copied().collect(),
                        })
                    })
                    .collect();
                MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    assignment,
                }
            })
            .collect();
        (g.assignor.clone(), members)
    }) {
        return Some(("consumer".into(), v.0, v.1));
    }
    let d = b.groups.describe(id)?;
    let consumer = d.protocol_type == "consumer";
    let members = d
        .members
        .into_iter()
        .map(
            |(member_id, instance_id, client_id, client_host, _, assignment)| MemberView {
                member_id,
                instance_id,
                client_id,
                client_host,
                assignment: if consumer {
                    decode_assignment(&assignment)
                } else {
                    Vec::new()
                },
            },
        )
        .collect();
    Some((d.protocol_type, d.protocol, members))
}

/// Committed offsets (and assigned partitions without one) with log ends and lag.
fn offsets_of(b: &Broker, id: &str, members: &[MemberView]) -> Vec<OffsetView> {
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in members {
        for a in &m.assignment {
            for p in &a.partitions {
                owner.insert((a.topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    let mut rows: BTreeMap<(String, i32), OffsetView> = BTreeMap::new();
    let log_end = |t: &str, p: i32| b.topics.partition(t, p).map(|p| p.high_watermark());
    for (topic, partition, v) in b.groups.fetch_offsets(id, None) {
        let Some(v) = v else { continue };
        let end = log_end(&topic, partition);
        rows.insert(
            (topic.clone(), partition),
            OffsetView {
                member_id: owner.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                committed_offset: Some(v.offset),
                log_end_offset: end,
                lag: end.map(|e| (e - v.offset).max(0)),
                metadata: Some(v.metadata),
            },
        );
    }
    for ((topic, partition), member) in owner {
        if rows.contains_key(&(topic.clone(), partition)) {
            continue;
        }
        rows.insert(
            (topic.clone(), partition),
            OffsetView {
                log_end_offset: log_end(&topic, partition),
                topic,
                partition,
                committed_offset: None,
                lag: None,
                metadata: None,
                member_id: Some(member),
            },
        );
    }
    rows.into_values().collect()
}

pub async fn groups(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Json<Value>> {
    query(q, &[])?;
    let b = s.broker.clone();
    let az = http_reader(&b, ApiKey::ListGroups);
    let groups = blocking(move || {
        b.groups
            .list()
            .into_iter()
            .filter(|(id, _, _, _)| az.visible(Operation::Describe, ResourceType::Group, id))
            .map(|(id, protocol_type, state, kind)| {
                let members = members_of(&b, &id).map_or(0, |m| m.2.len());
                json!({
                    "group_id": id,
                    "type": kind,
                    "protocol_type": protocol_type,
                    "state": state,
                    "members": members,
                })
            })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(json!({ "groups": groups })))
}

pub async fn group(
    State(s): State<HttpState>,
    id: MaybePath,
    q: MaybeQuery,
) -> ApiResult<Json<GroupView>> {
    let id = group_id(id)?;
    query(q, &[])?;
    let b = s.broker.clone();
    if !http_reader(&b, ApiKey::DescribeGroups).group(Operation::Describe, &id) {
        return Err(forbidden(ResourceType::Group, &id));
    }
    blocking(move || {
        let (_, protocol_type, state, kind) = b
            .groups
            .list()
            .into_iter()
            .find(|g| g.0 == id)
            .ok_or_else(|| ApiError::not_found(format!("unknown group '{id}'")))?;
        let (_, protocol, members) =
            members_of(&b, &id).unwrap_or((protocol_type.clone(), String::new(), Vec::new()));
        let offsets = offsets_of(&b, &id, &members);
        Ok(Json(GroupView {
            total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
            group_id: id,
            group_type: kind.to_string(),
            protocol_type,
            protocol,
            state,
            members,
            offsets,
        }))
    })
    .await?
}

// ------------------------------------------------------------------------- configs

#[derive(Serialize)]
pub struct ConfigEntry {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

impl From<Described> for ConfigEntry {
    fn from(d: Described) -> Self {
        ConfigEntry {
            name: d.name,
            value: d.value,
            source: d.source.name(),
            read_only: d.read_only,
            sensitive: d.sensitive,
        }
    }
}

pub async fn broker_configs(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Json<Value>> {
    query(q, &[])?;
    // Kafka: DESCRIBE_CONFIGS on the cluster.
    if !http_reader(&s.broker, ApiKey::DescribeConfigs).cluster(Operation::DescribeConfigs) {
        let cluster = crate::authz::acl::CLUSTER_NAME;
        return Err(forbidden_to(
            ResourceType::Cluster,
            Operation::DescribeConfigs,
            cluster,
        ));
    }
    let c = s.broker.topics.effective_config();
    let dynamic = s.broker.topics.dynamic_configs();
    Ok(Json(json!({
        "node_id": c.node_id,
        "configs": describe::broker(&c, &dynamic)
            .into_iter()
            .map(ConfigEntry::from)
            .collect::<Vec<_>>(),
    })))
}

/// GET /v1/links: a cluster link's state is what DescribeConfigs on the link shows, and
/// Kafka asks DESCRIBE_CONFIGS on the cluster for that (403 otherwise).
pub async fn links(
    State(s): State<HttpState>,
    q: axum::extract::RawQuery,
) -> ApiResult<Json<Value>> {
    let az = http_reader(&s.broker, ApiKey::DescribeConfigs);
    if !az.cluster(Operation::DescribeConfigs) {
        let (op, name) = (Operation::DescribeConfigs, crate::authz::acl::CLUSTER_NAME);
        return Err(forbidden_to(ResourceType::Cluster, op, name));
    }
    crate::mirror::admin::http_links(State(s), q).await
}

pub async fn topic_configs(
    State(s): State<HttpState>,
    name: MaybePath,
    q: MaybeQuery,
) -> ApiResult<Json<Value>> {
    let name = topic_name(name)?;
    query(q, &[])?;
    // Kafka: DESCRIBE_CONFIGS on the topic.
    if !http_reader(&s.broker, ApiKey::DescribeConfigs).topic(Operation::DescribeConfigs, &name) {
        return Err(forbidden_to(
            ResourceType::Topic,
            Operation::DescribeConfigs,
            &name,
        ));
    }
    let t = s
        .broker
        .topics
        .get(&name)
        .ok_or_else(|| unknown_topic(&name))?;
    let c = s.broker.topics.effective_config();
    let dynamic = s.broker.topics.dynamic_configs();
    let entries: Vec<ConfigEntry> = describe::topic(&c, &dynamic, &t.configs)
        .into_iter()
        .map(ConfigEntry::from)
        .collect();
    Ok(Json(json!({ "topic": name, "configs": entries })))
}

// ------------------------------------------------------------- health and metrics

pub async fn health(q: MaybeQuery) -> ApiResult<Json<Value>> {
    query(q, &[])?;
    Ok(Json(json!({ "status": "ok" })))
}

pub async fn ready(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Response> {
    query(q, &[])?;
    // Storage is ready while every log dir is readable and at least one is online: a
    // failed dir takes only its partitions offline (reported, not fatal), as in Kafka.
    let dirs = s.broker.config.log_dirs.clone();
    let unreadable = blocking(move || {
        dirs.iter()
            .filter(|d| std::fs::read_dir(d).is_err())
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
    })
    .await?;
    let offline: Vec<String> = s
        .broker
        .offline_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let total = s.broker.config.log_dirs.len();
    let storage_ok = unreadable.is_empty() && offline.len() < total;
    let mut storage_detail = format!(
        "{} of {total} log dir(s) online, {} topic(s) loaded",
        total - offline.len(),
        s.broker.topics.all().len()
    );
    if !offline.is_empty() {
        storage_detail += &format!("; offline after an I/O error: {}", offline.join(", "));
    }
    if !unreadable.is_empty() {
        storage_detail += &format!("; not readable: {}", unreadable.join(", "));
    }
    let listener_ok = s.kafka_addr.is_some();
    let listener_detail = s
        .kafka_addr
        .map_or_else(|| "not bound".to_string(), |a| a.to_string());
    let ready = storage_ok && listener_ok;
    let mut body = json!({
        "ready": ready,
        "checks": [
            { "name": "storage", "ok": storage_ok, "detail": storage_detail },
            { "name": "listener", "ok": listener_ok, "detail": listener_detail },
        ],
    });
    let status = if ready {
        StatusCode::OK
    } else {
        body["error"] = json!("not ready: a check failed");
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// Gathers everything `/metrics` shows.
fn snapshot(b: &Arc<Broker>) -> Snapshot {
    let topics = b.topics.all();
    let offline_dirs = b.offline_dirs();
    let mut offline = 0;
    let partitions: Vec<PartitionSample> = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            let log = p.log.lock();
            offline += usize::from(p.storage_offline || offline_dirs.contains(&log_dir_of(&log)));
            PartitionSample {
                topic: p.topic.clone(),
                partition: p.index,
                size_bytes: log.size_bytes(),
                segments: log.segment_count(),
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
            }
        })
        .collect();
    let mut groups = Vec::new();
    let mut lag = Vec::new();
    for (id, _, state, _) in b.groups.list() {
        let members = members_of(b, &id).map_or(0, |m| m.2.len());
        for (topic, partition, v) in b.groups.fetch_offsets(&id, None) {
            let Some(v) = v else { continue };
            let end = b
                .topics
                .partition(&topic, partition)
                .map(|p| p.high_watermark());
            lag.push(LagSample {
                group: id.clone(),
                topic,
                partition,
                committed_offset: v.offset,
                lag: end.map(|e| (e - v.offset).max(0)),
            });
        }
        groups.push((id, state, members));
    }
    Snapshot {
        cluster_id: b.cluster_id.clone(),
        node_id: b.node_id(),
        topics: topics.len(),
        apis: b.metrics.api_stats(),
        topic_stats: b.metrics.topic_stats(),
        partitions,
        // Kafka counts, on each leader, the partitions whose ISR is smaller than their
        // replica set (always 0 on a single node).
        under_replicated: b
            .topics
            .all()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| {
                let r = p.replica.lock();
                r.is_leader() && r.isr.len() < r.replicas.len()
            })
            .count(),
        offline,
        log_dirs: b
            .config
            .log_dirs
            .iter()
            .map(|d| (d.display().to_string(), offline_dirs.contains(d)))
            .collect(),
        groups,
        lag,
        connections_active: b
            .metrics
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed),
        connections_total: b
            .metrics
            .connections_total
            .load(std::sync::atomic::Ordering::Relaxed),
        denials: b
            .authz
            .denials()
            .into_iter()
            .map(|(rt, op, n)| (rt.to_string(), op.to_string(), n))
            .collect(),
        authentications: b.metrics.authentication_stats(),
    }
}

pub async fn metrics(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Response> {
    query(q, &[])?;
    let b = s.broker.clone();
    let text = blocking(move || {
        prometheus::render(&snapshot(&b))
            + &super::share::prometheus_text(&b)
            + &crate::mirror::prometheus_text(&b)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
