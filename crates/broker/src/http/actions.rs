//! What the console changes and browses beyond the read-only views: create, delete and
//! grow topics, alter topic configs, read and produce records, reset a group's offsets.
//!
//! Every change is a Kafka request run through the Kafka handlers ([`super::kafka`]), so
//! its validation and its refusals are theirs; records are read with Fetch and ListOffsets
//! the same way, so what the console shows is what a consumer would get.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use runnel_client::records::{
    base64, decode_batches, encode_batch, partition_for_key, ProducerRecord,
};
use runnel_protocol::kp::messages::create_partitions_request::CreatePartitionsTopic;
use runnel_protocol::kp::messages::delete_topics_request::DeleteTopicState;
use runnel_protocol::kp::messages::fetch_request::{FetchPartition, FetchTopic};
use runnel_protocol::kp::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use runnel_protocol::kp::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use runnel_protocol::kp::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use runnel_protocol::kp::messages::produce_request::{PartitionProduceData, TopicProduceData};
use runnel_protocol::kp::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use runnel_protocol::kp::protocol::StrBytes;
use runnel_protocol::kp::records::Compression;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{group_id, members_of, query, topic_name, MaybePath, MaybeQuery};
use super::kafka::{call, check};
use super::{ApiError, HttpState};
use crate::broker::Broker;

type ApiResult<T> = Result<T, ApiError>;

/// The peer address the handlers see for the admin API's requests.
pub(super) const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How long a change waits for the controller (CreateTopics and friends' timeout_ms).
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// At most this many records per read (the console pages further).
pub const MAX_RECORDS: usize = 500;
/// Bytes fetched per partition per Fetch round, and rounds per read.
const FETCH_BYTES: i32 = 1 << 20;
const FETCH_ROUNDS: usize = 16;
/// Record bytes one read may fetch over all its partitions (a topic with many
/// partitions read "from all" stops here, and says so with `truncated`).
const MAX_READ_BYTES: usize = 32 << 20;

pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {}", e.body_text())))
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(super) fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

// -------------------------------------------------------------------------- topics

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTopic {
    name: String,
    /// -1 (or absent): the broker's `num.partitions`.
    #[serde(default = "minus_one")]
    partitions: i32,
    /// -1 (or absent): the broker's `default.replication.factor`.
    #[serde(default = "minus_one_i16")]
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

fn minus_one() -> i32 {
    -1
}

fn minus_one_i16() -> i16 {
    -1
}

/// POST /v1/topics: CreateTopics.
pub async fn create_topic(
    State(s): State<HttpState>,
    q: MaybeQuery,
    b: Result<Json<NewTopic>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    query(q, &[])?;
    let t = body(b)?;
    let topic = runnel_client::NewTopic {
        name: t.name.clone(),
        partitions: t.partitions,
        replication_factor: t.replication_factor,
        configs: t.configs.into_iter().collect(),
    };
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![topic.to_creatable()]);
    let resp: CreateTopicsResponse = call(&s.broker, PEER, ApiKey::CreateTopics, 7, &req).await?;
    let r = resp
        .topics
        .first()
        .ok_or_else(|| ApiError::internal("CreateTopics answered no topic"))?;
    check(
        r.error_code,
        r.error_message.as_ref(),
        &format!("topic '{}'", t.name),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": t.name,
            "id": r.topic_id.to_string(),
            "partition_count": r.num_partitions,
            "replication_factor": r.replication_factor,
        })),
    ))
}

/// DELETE /v1/topics/{name}: DeleteTopics.
pub async fn delete_topic(
    State(s): State<HttpState>,
    n: MaybePath,
    q: MaybeQuery,
) -> ApiResult<Json<Value>> {
    let topic = topic_name(n)?;
    query(q, &[])?;
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(name(&topic)))
        ]);
    let resp: DeleteTopicsResponse = call(&s.broker, PEER, ApiKey::DeleteTopics, 6, &req).await?;
    let r = resp
        .responses
        .first()
        .ok_or_else(|| ApiError::internal("DeleteTopics answered no topic"))?;
    check(
        r.error_code,
        r.error_message.as_ref(),
        &format!("topic '{topic}'"),
    )?;
    Ok(Json(json!({ "deleted": topic })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionCount {
    count: i32,
}

/// POST /v1/topics/{name}/partitions: CreatePartitions (the new total).
pub async fn add_partitions(
    State(s): State<HttpState>,
    n: MaybePath,
    q: MaybeQuery,
    b: Result<Json<PartitionCount>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let topic = topic_name(n)?;
    query(q, &[])?;
    let count = body(b)?.count;
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(&topic))
            .with_count(count)
            // Null: the controller places them (an empty list would assign none).
            .with_assignments(None)]);
    let resp: CreatePartitionsResponse =
        call(&s.broker, PEER, ApiKey::CreatePartitions, 3, &req).await?;
    let r = resp
        .results
        .first()
        .ok_or_else(|| ApiError::internal("CreatePartitions answered no topic"))?;
    check(
        r.error_code,
        r.error_message.as_ref(),
        &format!("topic '{topic}'"),
    )?;
    Ok(Json(json!({ "name": topic, "partition_count": count })))
}

// ------------------------------------------------------------------------- configs

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChanges {
    /// key -> new value, or null to remove the topic's override.
    configs: BTreeMap<String, Option<String>>,
}

/// PATCH /v1/configs/topics/{name}: `{"configs": {"key": "value" | null}}`, an
/// IncrementalAlterConfigs of SET (a value) and DELETE (null, back to the default).
pub async fn alter_topic_configs(
    State(s): State<HttpState>,
    n: MaybePath,
    q: MaybeQuery,
    b: Result<Json<ConfigChanges>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let topic = topic_name(n)?;
    let q = query(q, &["validate_only"])?;
    let validate_only = super::api::bool_param(&q, "validate_only", false)?;
    let configs = body(b)?.configs;
    if configs.is_empty() {
        return Err(ApiError::bad_request(
            "no configs given: send {\"configs\": {\"key\": \"value\" or null}}",
        ));
    }
    const TOPIC: i8 = 2;
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text(&topic))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(text(k))
                            .with_config_operation(if v.is_some() { SET } else { DELETE })
                            .with_value(v.as_deref().map(text))
                    })
                    .collect(),
            )]);
    let resp: IncrementalAlterConfigsResponse =
        call(&s.broker, PEER, ApiKey::IncrementalAlterConfigs, 1, &req).await?;
    let r = resp
        .responses
        .first()
        .ok_or_else(|| ApiError::internal("IncrementalAlterConfigs answered no resource"))?;
    check(
        r.error_code,
        r.error_message.as_ref(),
        &format!("topic '{topic}'"),
    )?;
    Ok(Json(
        json!({ "topic": topic, "validate_only": validate_only, "altered": configs }),
    ))
}

// ------------------------------------------------------------------------- offsets

/// ListOffsets for `partitions` of `topic` at `timestamp` (-2 earliest, -1 latest):
/// partition -> offset (-1 when no record is at or after the timestamp).
async fn list_offsets(
    b: &std::sync::Arc<Broker>,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> ApiResult<BTreeMap<i32, i64>> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(runnel_protocol::kp::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let resp: ListOffsetsResponse = call(b, PEER, ApiKey::ListOffsets, 9, &req).await?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            check(
                p.error_code,
                None,
                &format!("topic '{topic}' partition {}", p.partition_index),
            )?;
            out.insert(p.partition_index, p.offset);
        }
    }
    // Callers index the map by the partitions they asked for.
    if let Some(p) = partitions.iter().find(|p| !out.contains_key(p)) {
        return Err(ApiError::internal(format!(
            "ListOffsets answered no offset for topic '{topic}' partition {p}"
        )));
    }
    Ok(out)
}

/// The partitions of `topic` to act on: `only`, or all of them.
fn partitions_of(b: &Broker, topic: &str, only: Option<i32>) -> ApiResult<Vec<i32>> {
    let t = b
        .topics
        .get(topic)
        .ok_or_else(|| ApiError::not_found(format!("unknown topic '{topic}'")))?;
    let n = t.partitions.len() as i32;
    match only {
        Some(p) if p < 0 => Err(ApiError::bad_request(format!(
            "partition must be a non-negative integer, not {p}"
        ))),
        Some(p) if p >= n => Err(ApiError::not_found(format!(
            "topic '{topic}' has no partition {p} (it has {n})"
        ))),
        Some(p) => Ok(vec![p]),
        None => Ok((0..n).collect()),
    }
}

fn int_param<T: std::str::FromStr>(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<T>> {
    q.get(key)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter '{key}' must be an integer, not '{v}'"
                ))
            })
        })
        .transpose()
}

// ------------------------------------------------------------------------- records

/// Fetches `[from, to)` of one partition (read_uncommitted, as a console consumer sees
/// it), at most `limit` records, in offset order.
async fn fetch_range(
    b: &std::sync::Arc<Broker>,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    limit: usize,
    budget: &mut usize,
) -> ApiResult<Vec<runnel_client::ConsumerRecord>> {
    let mut out = Vec::new();
    let mut offset = from;
    for _ in 0..FETCH_ROUNDS {
        if offset >= to || out.len() >= limit || *budget == 0 {
            break;
        }
        let req = FetchRequest::default()
            .with_replica_id(runnel_protocol::kp::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(FETCH_BYTES)])]);
        let resp: FetchResponse = call(b, PEER, ApiKey::Fetch, 12, &req).await?;
        check(resp.error_code, None, "fetch")?;
        let Some(p) = resp.responses.into_iter().flat_map(|t| t.partitions).next() else {
            break;
        };
        check(
            p.error_code,
            None,
            &format!("topic '{topic}' partition {partition} at offset {offset}"),
        )?;
        let bytes = p.records.unwrap_or_default();
        *budget = budget.saturating_sub(bytes.len());
        let decoded = decode_batches(bytes, offset).map_err(|e| {
            ApiError::internal(format!("topic '{topic}' partition {partition}: {e}"))
        })?;
        let Some(next) = decoded.next_offset else {
            break;
        };
        for r in decoded.records {
            if r.offset < to && out.len() < limit {
                out.push(r);
            }
        }
        offset = next;
    }
    Ok(out)
}

/// GET /v1/topics/{name}/records: `partition` (default all), where to start: `offset`
/// or `timestamp` (ms; the first record at or after it), `order` (`oldest` first from
/// there, or `newest` first back from there, the default being the log end), `limit`.
pub async fn records(
    State(s): State<HttpState>,
    n: MaybePath,
    q: MaybeQuery,
) -> ApiResult<Json<Value>> {
    let topic = topic_name(n)?;
    let q = query(q, &["partition", "offset", "timestamp", "order", "limit"])?;
    let only = int_param::<i32>(&q, "partition")?;
    let start_offset = int_param::<i64>(&q, "offset")?;
    let timestamp = int_param::<i64>(&q, "timestamp")?;
    let limit = int_param::<usize>(&q, "limit")?.unwrap_or(100);
    if limit == 0 || limit > MAX_RECORDS {
        return Err(ApiError::bad_request(format!(
            "query parameter 'limit' must be 1..={MAX_RECORDS}, not {limit}"
        )));
    }
    let newest = match q.get("order").map(String::as_str) {
        None | Some("newest") => true,
        Some("oldest") => false,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "query parameter 'order' must be newest or oldest, not '{v}'"
            )))
        }
    };
    if start_offset.is_some() && timestamp.is_some() {
        return Err(ApiError::bad_request(
            "give 'offset' or 'timestamp', not both",
        ));
    }
    let parts = partitions_of(&s.broker, &topic, only)?;
    let b = &s.broker;
    let starts = list_offsets(b, &topic, &parts, -2).await?;
    let ends = list_offsets(b, &topic, &parts, -1).await?;
    let at_time = match timestamp {
        Some(ts) => Some(list_offsets(b, &topic, &parts, ts).await?),
        None => None,
    };
    let mut all = Vec::new();
    let mut views = Vec::new();
    let mut budget = MAX_READ_BYTES;
    for p in &parts {
        if budget == 0 {
            break;
        }
        let (start, end) = (starts[p], ends[p]);
        // The position asked for, within the log: an offset, the first record at the
        // timestamp (the log end when none is that recent), or the end.
        let at = match (&at_time, start_offset) {
            (Some(m), _) => Some(m.get(p).copied().filter(|o| *o >= 0).unwrap_or(end)),
            (None, Some(o)) => Some(o),
            (None, None) => None,
        }
        .map(|o| o.max(start).min(end));
        let (from, to) = if newest {
            // Newest first, back from `at` (inclusive) or from the end.
            let to = at.map_or(end, |o| (o + 1).min(end));
            ((to - limit as i64).max(start), to)
        } else {
            (at.unwrap_or(start), end)
        };
        let mut recs = fetch_range(b, &topic, *p, from, to, limit, &mut budget).await?;
        if newest {
            recs.reverse();
        }
        views.push(
            json!({ "partition": p, "log_start_offset": start, "high_watermark": end,
            "from": from, "to": to }),
        );
        all.extend(recs.into_iter().map(|r| (*p, r)));
    }
    // Merge partitions by time (then offset), in the asked order, and keep `limit`.
    all.sort_by_key(|(p, r)| (r.timestamp_ms, r.offset, *p));
    if newest {
        all.reverse();
    }
    all.truncate(limit);
    let enc = |v: &Option<Bytes>| v.as_ref().map(|v| base64(v));
    let records: Vec<Value> = all
        .iter()
        .map(|(p, r)| {
            json!({
                "partition": p,
                "offset": r.offset,
                "timestamp": r.timestamp_ms,
                "timestamp_type": if r.log_append_time { "LogAppendTime" } else { "CreateTime" },
                "key": enc(&r.key),
                "value": enc(&r.value),
                "headers": r.headers.iter().map(|(k, v)| json!({ "key": k, "value": enc(v) }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "topic": topic,
        "order": if newest { "newest" } else { "oldest" },
        "partitions": views,
        "records": records,
        "truncated": budget == 0,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    key: String,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// Absent: the key's partition (Kafka's murmur2 partitioner), partition 0 unkeyed.
    partition: Option<i32>,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<Header>,
}

/// POST /v1/topics/{name}/records: one record (UTF-8 key, value and header values),
/// produced with acks=all.
pub async fn produce(
    State(s): State<HttpState>,
    n: MaybePath,
    q: MaybeQuery,
    b: Result<Json<NewRecord>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let topic = topic_name(n)?;
    query(q, &[])?;
    let r = body(b)?;
    let count = partitions_of(&s.broker, &topic, None)?.len();
    let partition = match (r.partition, &r.key) {
        (Some(p), _) => partitions_of(&s.broker, &topic, Some(p))?[0],
        (None, Some(k)) => partition_for_key(k.as_bytes(), count),
        (None, None) => 0,
    };
    let record = ProducerRecord {
        key: r.key.map(Bytes::from),
        value: r.value.map(Bytes::from),
        headers: r
            .headers
            .into_iter()
            .map(|h| (h.key, h.value.map(Bytes::from)))
            .collect(),
        timestamp_ms: None,
    };
    let batch = encode_batch(
        &[record],
        Compression::None,
        None,
        crate::handlers::now_ms(),
    )
    .map_err(|e| ApiError::bad_request(format!("cannot encode the record: {e}")))?;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(&topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp: ProduceResponse = call(&s.broker, PEER, ApiKey::Produce, 12, &req).await?;
    let p = resp
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .next()
        .ok_or_else(|| ApiError::internal("Produce answered no partition"))?;
    check(
        p.error_code,
        p.error_message.as_ref(),
        &format!("topic '{topic}' partition {partition}"),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "topic": topic, "partition": partition, "offset": p.base_offset })),
    ))
}

// -------------------------------------------------------------------------- groups

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetReset {
    /// Only this topic (all its partitions); absent: every topic the group committed.
    topic: Option<String>,
    /// earliest, latest, timestamp or offset.
    to: String,
    /// The timestamp (ms) or the offset, for `to` timestamp or offset.
    value: Option<i64>,
    #[serde(default)]
    dry_run: bool,
}

/// POST /v1/groups/{id}/offsets/reset: computes the new committed offsets (what
/// `kafka-consumer-groups --reset-offsets` does) and, unless `dry_run`, commits them with
/// an OffsetCommit as an admin (generation -1). Refused with 409 while the group has
/// members, as Kafka's tool refuses a group that is not inactive.
pub async fn reset_offsets(
    State(s): State<HttpState>,
    id: MaybePath,
    q: MaybeQuery,
    b: Result<Json<OffsetReset>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = group_id(id)?;
    query(q, &[])?;
    let r = body(b)?;
    let broker = s.broker.clone();
    let (state, members, committed) = {
        let b = broker.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let state = b.groups.list().into_iter().find(|g| g.0 == id).map(|g| g.2);
            let members = members_of(&b, &id).map_or(0, |m| m.2.len());
            (state, members, b.groups.fetch_offsets(&id, None))
        })
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))?
    };
    let Some(state) = state else {
        return Err(ApiError::not_found(format!("unknown group '{id}'")));
    };
    // The partitions to reset and their current committed offsets.
    let committed: BTreeMap<(String, i32), i64> = committed
        .into_iter()
        .filter_map(|(t, p, v)| Some(((t, p), v?.offset)))
        .collect();
    let mut targets: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    match &r.topic {
        Some(t) => {
            targets.insert(t.clone(), partitions_of(&broker, t, None)?);
        }
        None => {
            for (t, p) in committed.keys() {
                targets.entry(t.clone()).or_default().push(*p);
            }
        }
    }
    if targets.is_empty() {
        return Err(ApiError::bad_request(format!(
            "group '{id}' has no committed offsets: name a topic to reset"
        )));
    }
    let mut rows = Vec::new();
    for (topic, parts) in &targets {
        let starts = list_offsets(&broker, topic, parts, -2).await?;
        let ends = list_offsets(&broker, topic, parts, -1).await?;
        let wanted = match (r.to.as_str(), r.value) {
            ("earliest", _) => starts.clone(),
            ("latest", _) => ends.clone(),
            ("timestamp", Some(ts)) => {
                let mut m = list_offsets(&broker, topic, parts, ts).await?;
                // No record that recent: the end (Kafka's tool does the same).
                for (p, o) in m.iter_mut() {
                    if *o < 0 {
                        *o = ends[p];
                    }
                }
                m
            }
            // Out of range offsets are moved to the nearest end, as Kafka's tool does.
            ("offset", Some(o)) => parts
                .iter()
                .map(|p| (*p, o.max(starts[p]).min(ends[p])))
                .collect(),
            ("timestamp" | "offset", None) => {
                return Err(ApiError::bad_request(format!(
                    "'to': '{}' needs a 'value'",
                    r.to
                )))
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "'to' must be earliest, latest, timestamp or offset, not '{other}'"
                )))
            }
        };
        for p in parts {
            rows.push((
                topic.clone(),
                *p,
                committed.get(&(topic.clone(), *p)).copied(),
                wanted[p],
            ));
        }
    }
    if !r.dry_run {
        if members > 0 {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!(
                    "group '{id}' has {members} member(s) (state {state}): offsets can be reset \
                     only while the group is empty; stop its consumers first"
                ),
            });
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (t, p, _, o) in &rows {
            by_topic.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(runnel_protocol::kp::messages::GroupId(text(&id)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(text(""))
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp: OffsetCommitResponse = call(&broker, PEER, ApiKey::OffsetCommit, 9, &req).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    None,
                    &format!(
                        "group '{id}' topic '{}' partition {}",
                        t.name.0, p.partition_index
                    ),
                )?;
            }
        }
    }
    Ok(Json(json!({
        "group_id": id,
        "dry_run": r.dry_run,
        "offsets": rows.iter().map(|(t, p, cur, o)| json!({
            "topic": t, "partition": p, "current_offset": cur, "new_offset": o,
        })).collect::<Vec<_>>(),
    })))
}
