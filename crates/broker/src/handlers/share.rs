//! Share groups (KIP-932): ShareGroupHeartbeat and ShareGroupDescribe on the group's
//! coordinator, ShareFetch and ShareAcknowledge on the partitions' leader. The logic
//! lives in `crate::coordinators::share`; this module decodes, checks and encodes.
//!
//! Authorization, as Kafka's KafkaApis: READ on the GROUP for ShareGroupHeartbeat,
//! ShareFetch, ShareAcknowledge and AlterShareGroupOffsets, DESCRIBE for
//! ShareGroupDescribe and DescribeShareGroupOffsets (per group), DELETE for
//! DeleteShareGroupOffsets; a refused group gets GROUP_AUTHORIZATION_FAILED and nothing
//! else happens. ShareFetch and ShareAcknowledge also need READ on each topic: a refused
//! topic's partitions get TOPIC_AUTHORIZATION_FAILED (for their records and their
//! acknowledgements) while the others are served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_protocol::kp::messages::share_acknowledge_response::{
    PartitionData as AckPartitionData, ShareAcknowledgeTopicResponse,
};
use runnel_protocol::kp::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use runnel_protocol::kp::messages::share_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedTopicPartitions,
};
use runnel_protocol::kp::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use runnel_protocol::kp::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
    ShareGroupDescribeRequest, ShareGroupDescribeResponse, ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse, TopicName,
};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};
use uuid::Uuid;

use super::{encode, ready, str_bytes, ResponseFuture};
use crate::authz::acl::Operation;
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::coordinators::groups::group_configs::SHARE_ISOLATION_LEVEL;
use crate::coordinators::share::partition_state::{Limits, ACK_RELEASE};
use crate::coordinators::share::persist;
use crate::coordinators::share::session::{PartitionId, Step, FINAL_EPOCH, INITIAL_EPOCH};
use crate::coordinators::share::{AutoOffsetReset, ReadPolicy};
use crate::error::ErrorCode;
use crate::storage::partition::{Appended, Partition};

/// A top-level error answer to a share request (`$resp` has Kafka's `ErrorCode` and
/// `ErrorMessage` fields).
macro_rules! refuse {
    ($resp:ty, $req:expr, $code:expr, $message:expr) => {
        ready(
            $req,
            &<$resp>::default()
                .with_error_code($code.code())
                .with_error_message(Some(str_bytes(&$message))),
        )
    };
}

/// A client may ask to wait for longer; a share fetch is not parked beyond this.
const MAX_WAIT_CAP_MS: u64 = 60_000;
/// ShareFetch's MaxRecords when the client sends none (Kafka's `max.poll.records`).
const DEFAULT_MAX_RECORDS: i64 = 500;

/// Returns GROUP_AUTHORIZATION_FAILED (in `$resp`'s shape) unless `$op` on the share
/// group `$group` (an `Option<&str>`; None is left to the handler) is allowed.
macro_rules! authorize_group {
    ($resp:ty, $req:expr, $az:expr, $op:expr, $group:expr) => {
        let group: Option<&str> = $group;
        if let Some(message) = group
            .filter(|g| !g.is_empty())
            .and_then(|g| group_refused($az, $op, g))
        {
            return refuse!($resp, $req, ErrorCode::GroupAuthorizationFailed, message);
        }
    };
}

/// The message of a GROUP_AUTHORIZATION_FAILED answer, if `op` on `group` is refused.
fn group_refused(az: &Ctx, op: Operation, group: &str) -> Option<String> {
    (!az.group(op, group)).then(|| format!("not authorized to {op:?} share group '{group}'"))
}

/// Splits off the partitions whose topic the connection may not READ (Kafka answers
/// them TOPIC_AUTHORIZATION_FAILED and serves the rest). A topic id that names no topic
/// stays: the leader check answers it UNKNOWN_TOPIC_ID.
fn readable(
    broker: &Broker,
    az: &Ctx,
    parts: Vec<PartitionId>,
) -> (Vec<PartitionId>, Vec<PartitionId>) {
    if !az.enabled() {
        return (parts, Vec::new());
    }
    let mut verdicts: BTreeMap<Uuid, bool> = BTreeMap::new();
    parts.into_iter().partition(|(tid, _)| {
        *verdicts.entry(*tid).or_insert_with(|| {
            broker
                .topics
                .get_by_id(*tid)
                .is_none_or(|t| az.topic(Operation::Read, &t.name))
        })
    })
}

/// Drops the acknowledgements of refused partitions, answering each
/// TOPIC_AUTHORIZATION_FAILED.
fn readable_acks(
    broker: &Broker,
    az: &Ctx,
    acks: &mut BTreeMap<PartitionId, Vec<AckBatch>>,
) -> BTreeMap<PartitionId, ErrorCode> {
    let (_, refused) = readable(broker, az, acks.keys().copied().collect());
    refused
        .into_iter()
        .map(|id| {
            acks.remove(&id);
            (id, ErrorCode::TopicAuthorizationFailed)
        })
        .collect()
}

const SHARE_RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";

pub fn heartbeat(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    peer: std::net::SocketAddr,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ShareGroupHeartbeatRequest = decode_body(&req.body, req.api_version)?;
    let group_id = body.group_id.0.to_string();
    authorize_group!(
        ShareGroupHeartbeatResponse,
        req,
        az,
        Operation::Read,
        Some(&group_id)
    );
    let heartbeat_ms = broker.shares.config.heartbeat_interval_ms;
    let refuse = |code: ErrorCode, message: String| {
        ShareGroupHeartbeatResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(&message)))
            .with_member_epoch(-1)
            .with_heartbeat_interval_ms(heartbeat_ms)
    };
    if group_id.is_empty() {
        return ready(
            req,
            &refuse(ErrorCode::InvalidRequest, "GroupId can't be empty.".into()),
        );
    }
    if let Err(code) = broker.groups.check_coordinator(&group_id) {
        return ready(
            req,
            &refuse(
                code,
                format!("this broker does not coordinate group {group_id}"),
            ),
        );
    }
    if broker.groups.describe(&group_id).is_some() {
        return ready(
            req,
            &refuse(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} is not a share group."),
            ),
        );
    }
    let session_ms = broker
        .groups
        .configs
        .get_i32(&group_id, "share.session.timeout.ms")
        .unwrap_or(broker.shares.config.session_timeout_ms);
    let interval_ms = broker
        .groups
        .configs
        .get_i32(&group_id, "share.heartbeat.interval.ms")
        .unwrap_or(heartbeat_ms);
    let params = crate::coordinators::share::group::HeartbeatParams {
        member_id: &body.member_id,
        member_epoch: body.member_epoch,
        rack: body.rack_id.as_ref().map(|s| s.to_string()),
        subscribed: body
            .subscribed_topic_names
            .as_ref()
            .map(|ns| ns.iter().map(|n| n.0.to_string()).collect()),
        client_id: req
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout: Duration::from_millis(session_ms.max(1) as u64),
        max_size: broker.shares.config.max_size.max(0) as usize,
    };
    let topics = &broker.topics;
    let resolve = |name: &str| topics.get(name).map(|t| (t.id, t.partitions.len() as i32));
    // A cluster's share-state topic is asked for as soon as a share group appears.
    persist::ready(broker);
    let r = broker.shares.heartbeat(&group_id, params, &resolve);
    let assignment = r.assignment.map(|a| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(id, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(id)
                        .with_partitions(ps)
                })
                .collect(),
        )
    });
    let ok = r.error == ErrorCode::None;
    let response = ShareGroupHeartbeatResponse::default()
        .with_error_code(r.error.code())
        .with_error_message(r.message.as_deref().map(str_bytes))
        .with_member_id(ok.then(|| body.member_id.clone()))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(interval_ms)
        .with_assignment(assignment);
    ready(req, &response)
}

/// A group without DESCRIBE is answered GROUP_AUTHORIZATION_FAILED and nothing else.
pub fn describe(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ShareGroupDescribeRequest = decode_body(&req.body, req.api_version)?;
    let groups = body
        .group_ids
        .iter()
        .map(|id| {
            let g = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(i32::MIN);
            if !az.group(Operation::Describe, id) {
                return g.with_error_code(ErrorCode::GroupAuthorizationFailed.code());
            }
            if let Err(code) = broker.groups.check_coordinator(id) {
                return g.with_error_code(code.code());
            }
            let Some(view) = broker.shares.describe(id) else {
                let message = if broker.groups.describe(id).is_some() {
                    format!("Group {} is not a share group.", id.0)
                } else {
                    format!("Group {} not found.", id.0)
                };
                return g
                    .with_error_code(ErrorCode::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(&message)));
            };
            let members = view
                .members
                .into_iter()
                .map(|(member_id, m)| {
                    let tps = m
                        .assignment
                        .iter()
                        .map(|(tid, ps)| {
                            let name = broker
                                .topics
                                .get_by_id(*tid)
                                .map(|t| t.name.clone())
                                .unwrap_or_default();
                            DescribedTopicPartitions::default()
                                .with_topic_id(*tid)
                                .with_topic_name(TopicName(str_bytes(&name)))
                                .with_partitions(ps.clone())
                        })
                        .collect();
                    DescribedMember::default()
                        .with_member_id(str_bytes(&member_id))
                        .with_rack_id(m.rack.as_deref().map(str_bytes))
                        .with_member_epoch(m.epoch)
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .iter()
                                .map(|s| TopicName(str_bytes(s)))
                                .collect(),
                        )
                        .with_assignment(DescribedAssignment::default().with_topic_partitions(tps))
                })
                .collect();
            g.with_group_state(str_bytes(view.state))
                .with_group_epoch(view.epoch)
                .with_assignment_epoch(view.epoch)
                .with_assignor_name(str_bytes("simple"))
                .with_members(members)
        })
        .collect();
    ready(
        req,
        &ShareGroupDescribeResponse::default().with_groups(groups),
    )
}

/// One acknowledgement batch as it came off the wire.
struct AckBatch {
    first: i64,
    last: i64,
    types: Vec<i8>,
}

/// The partition `id` if this broker leads it, else the error a client gets.
fn leader_partition(broker: &Broker, id: PartitionId) -> Result<Arc<Partition>, ErrorCode> {
    let topic = broker
        .topics
        .get_by_id(id.0)
        .ok_or(ErrorCode::UnknownTopicId)?;
    let p = usize::try_from(id.1)
        .ok()
        .and_then(|i| topic.partitions.get(i).cloned())
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    if p.is_offline() {
        return Err(ErrorCode::KafkaStorageError);
    }
    if !p.replica.lock().is_leader() {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    Ok(p)
}

fn current_leader(broker: &Broker, id: PartitionId) -> LeaderIdAndEpoch {
    let found = broker.topics.get_by_id(id.0).and_then(|t| {
        usize::try_from(id.1)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned())
    });
    match found {
        Some(p) => {
            let leader = p.replica.lock().leader;
            let leader = if leader < 0 { broker.node_id() } else { leader };
            LeaderIdAndEpoch::default()
                .with_leader_id(leader)
                .with_leader_epoch(p.leader_epoch())
        }
        None => LeaderIdAndEpoch::default()
            .with_leader_id(-1)
            .with_leader_epoch(-1),
    }
}

/// The group's limits and how it reads (its group configs over the broker's defaults).
fn group_settings(broker: &Broker, group_id: &str) -> (Limits, ReadPolicy) {
    let lock = broker
        .groups
        .configs
        .get_i32(group_id, SHARE_RECORD_LOCK_DURATION_MS);
    let configs = broker.groups.configs.get(group_id);
    let policy = ReadPolicy {
        reset: AutoOffsetReset::parse(configs.get(SHARE_AUTO_OFFSET_RESET).map(String::as_str)),
        read_committed: configs
            .get(SHARE_ISOLATION_LEVEL)
            .is_some_and(|v| v == "read_committed"),
    };
    (broker.shares.limits(lock), policy)
}

/// The writes an answer waits for: (partition, its state partition, the offset to wait
/// for) per acknowledged partition.
type Durable = Vec<(PartitionId, Arc<Partition>, Appended)>;

/// Applies the acknowledgements of one request, partition by partition (each batch all
/// or nothing), and persists each changed share-partition; returns each partition's
/// acknowledge error and the writes to wait for. Wakes the share fetches parked on
/// partitions where records became available again.
fn apply_acks(
    broker: &Broker,
    group_id: &str,
    member: &str,
    acks: &BTreeMap<PartitionId, Vec<AckBatch>>,
    limits: &Limits,
) -> (BTreeMap<PartitionId, ErrorCode>, Durable) {
    let mut out = BTreeMap::new();
    let mut durable = Vec::new();
    for (id, batches) in acks {
        let ordered = batches.windows(2).all(|w| w[0].last < w[1].first);
        let result = if !ordered {
            Err(ErrorCode::InvalidRequest)
        } else {
            leader_partition(broker, *id).and_then(|p| {
                let key = (group_id.to_string(), id.0, id.1);
                let sp = broker.shares.partition(&key);
                let mut first_error = Ok(());
                let mut applied = false;
                {
                    let mut sp = sp.lock();
                    persist::sync_leadership(broker, &key, &mut sp, p.leader_epoch());
                    for b in batches {
                        match sp.acknowledge(member, b.first, b.last, &b.types, limits) {
                            Ok(()) => applied = true,
                            Err(e) => first_error = first_error.and(Err(e)),
                        }
                    }
                    if applied {
                        match persist::write(broker, &key, &mut sp, p.leader_epoch()) {
                            Ok(Some((state, offset))) => durable.push((*id, state, offset)),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(group = group_id, partition = id.1, error = %e, "could not persist acknowledgements");
                                first_error = first_error.and(Err(e.code));
                            }
                        }
                    }
                }
                if batches.iter().any(|b| b.types.contains(&ACK_RELEASE)) {
                    p.wake();
                }
                first_error
            })
        };
        out.insert(*id, result.err().unwrap_or(ErrorCode::None));
    }
    (out, durable)
}

/// Waits until each acknowledged partition's state is durable; a write that did not
/// make it turns that partition's acknowledge answer into the error.
async fn wait_durable(durable: Durable, acks: &mut BTreeMap<PartitionId, ErrorCode>) {
    for (id, state, at) in durable {
        if let Err(code) = state.wait_acknowledged(at).await {
            acks.insert(id, code);
        }
    }
}

/// Records released outside an acknowledgement (a forgotten partition, a closed
/// session, a member that left): their fetches wake and the state is persisted.
fn released(broker: &Broker, group_id: &str, parts: &[PartitionId]) {
    for id in parts {
        persist::settled(broker, &(group_id.to_string(), id.0, id.1));
    }
}

/// DeleteGroups on a share group: None when `group_id` is not one.
pub fn delete_group(broker: &Broker, group_id: &str) -> Option<ErrorCode> {
    match broker.shares.delete_group(group_id)? {
        Ok(keys) => {
            persist::delete(broker, &keys);
            Some(ErrorCode::None)
        }
        Err(code) => Some(code),
    }
}

fn ack_batches<'a>(list: impl Iterator<Item = (i64, i64, &'a Vec<i8>)>) -> Vec<AckBatch> {
    list.map(|(first, last, types)| AckBatch {
        first,
        last,
        types: types.clone(),
    })
    .collect()
}

/// The group and member of a ShareFetch/ShareAcknowledge, or the top-level error.
fn identify(
    broker: &Broker,
    group: Option<&str>,
    member: Option<&str>,
) -> Result<(String, String), (ErrorCode, String)> {
    let group = group.filter(|g| !g.is_empty()).ok_or((
        ErrorCode::InvalidRequest,
        "GroupId can't be empty.".to_string(),
    ))?;
    let member = member.filter(|m| !m.is_empty()).ok_or((
        ErrorCode::InvalidRequest,
        "MemberId can't be empty.".to_string(),
    ))?;
    // The coordinator knows the members; a leader that is not the coordinator cannot
    // check (Kafka's leaders do not ask either).
    if broker.shares.is_member(group, member) == Some(false) {
        return Err((
            ErrorCode::UnknownMemberId,
            format!("Member {member} is not a member of share group {group}."),
        ));
    }
    Ok((group.to_string(), member.to_string()))
}

pub fn fetch(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ShareFetchRequest = decode_body(&req.body, req.api_version)?;
    let top_error =
        |code: ErrorCode, message: String| refuse!(ShareFetchResponse, req, code, message);
    authorize_group!(
        ShareFetchResponse,
        req,
        az,
        Operation::Read,
        body.group_id.as_ref().map(|g| g.0.as_str())
    );
    let ids = identify(
        broker,
        body.group_id.as_ref().map(|g| g.0.as_str()),
        body.member_id.as_deref(),
    );
    let (group_id, member) = match ids {
        Ok(ids) => ids,
        Err((code, message)) => return top_error(code, message),
    };
    let mut added: Vec<PartitionId> = Vec::new();
    let mut acks: BTreeMap<PartitionId, Vec<AckBatch>> = BTreeMap::new();
    for t in &body.topics {
        for p in &t.partitions {
            added.push((t.topic_id, p.partition_index));
            if !p.acknowledgement_batches.is_empty() {
                acks.entry((t.topic_id, p.partition_index))
                    .or_default()
                    .extend(ack_batches(
                        p.acknowledgement_batches
                            .iter()
                            .map(|b| (b.first_offset, b.last_offset, &b.acknowledge_types)),
                    ));
            }
        }
    }
    let forgotten: Vec<PartitionId> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic_id, p)))
        .collect();
    if body.share_session_epoch == INITIAL_EPOCH && !acks.is_empty() {
        return top_error(
            ErrorCode::InvalidRequest,
            "Acknowledge data present in the initial share fetch request.".into(),
        );
    }
    if body.share_session_epoch == FINAL_EPOCH && !forgotten.is_empty() {
        return top_error(
            ErrorCode::InvalidRequest,
            "The final share fetch request cannot forget partitions.".into(),
        );
    }
    let key = (group_id.clone(), member.clone());
    let step = match broker
        .shares
        .session_fetch(key, body.share_session_epoch, &added, &forgotten)
    {
        Ok(step) => step,
        Err(code) => {
            return top_error(
                code,
                format!("share session epoch {} refused", body.share_session_epoch),
            )
        }
    };
    let (limits, policy) = group_settings(broker, &group_id);
    let refused_acks = readable_acks(broker, az, &mut acks);
    let (mut ack_results, durable) = apply_acks(broker, &group_id, &member, &acks, &limits);
    ack_results.extend(refused_acks);
    let forgotten_released = broker
        .shares
        .release(&group_id, &member, &forgotten, &limits);
    released(broker, &group_id, &forgotten_released);
    let wanted = match step {
        Step::Open(mut parts) => {
            // Each request starts at another partition, so MaxRecords spent on the first
            // ones never starves the rest.
            if !parts.is_empty() {
                let start = body.share_session_epoch.max(0) as usize % parts.len();
                parts.rotate_left(start);
            }
            parts
        }
        Step::Closed(parts) => {
            let closed = broker.shares.release(&group_id, &member, &parts, &limits);
            released(broker, &group_id, &closed);
            Vec::new()
        }
    };
    let (wanted, refused) = readable(broker, az, wanted);
    let max_records = if body.max_records > 0 {
        body.max_records as i64
    } else {
        DEFAULT_MAX_RECORDS
    };
    // MaxBytes 0 asks for nothing (librdkafka's fetch.max.bytes=0, as Kafka answers it);
    // a negative one is read as no limit beyond the broker's own.
    let cap = broker.config.limits.fetch_max_bytes;
    let max_bytes = if body.max_bytes < 0 {
        cap
    } else {
        (body.max_bytes as usize).min(cap)
    };
    let max_wait = Duration::from_millis((body.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP_MS));
    let broker = broker.clone();
    let req = req.clone();
    let member: Arc<str> = Arc::from(member.as_str());
    Ok(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + max_wait;
        wait_durable(durable, &mut ack_results).await;
        let waiter = Arc::new(tokio::sync::Notify::new());
        loop {
            let pass = acquire_all(
                &broker,
                &group_id,
                &member,
                &wanted,
                max_records,
                max_bytes,
                policy,
                &limits,
                &waiter,
            );
            let expired = tokio::time::Instant::now() >= deadline;
            if pass.any_records || pass.any_error || expired || wanted.is_empty() {
                let mut datas = pass.datas;
                datas.extend(refused.iter().map(|id| {
                    let data = PartitionData::default()
                        .with_partition_index(id.1)
                        .with_records(Some(Bytes::new()))
                        .with_error_code(ErrorCode::TopicAuthorizationFailed.code());
                    (*id, data)
                }));
                let response = assemble(&broker, datas, &ack_results, &limits);
                return encode(&req, &response);
            }
            // Wake for an append, a release, or the earliest lock expiry among them.
            let lock_wake = pass.next_lock_deadline_ms.map(|d| {
                let in_ms = (d - super::now_ms()).max(1) as u64;
                tokio::time::Instant::now() + Duration::from_millis(in_ms)
            });
            let until = lock_wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }))
}

struct Pass {
    datas: Vec<(PartitionId, PartitionData)>,
    any_records: bool,
    any_error: bool,
    next_lock_deadline_ms: Option<i64>,
}

#[allow(clippy::too_many_arguments)]
fn acquire_all(
    broker: &Broker,
    group_id: &str,
    member: &Arc<str>,
    wanted: &[PartitionId],
    max_records: i64,
    max_bytes: usize,
    policy: ReadPolicy,
    limits: &Limits,
    waiter: &Arc<tokio::sync::Notify>,
) -> Pass {
    let mut pass = Pass {
        datas: Vec::with_capacity(wanted.len()),
        any_records: false,
        any_error: false,
        next_lock_deadline_ms: None,
    };
    let mut records_left = max_records;
    let mut bytes_left = max_bytes;
    for id in wanted {
        let mut data = PartitionData::default()
            .with_partition_index(id.1)
            .with_records(Some(Bytes::new()));
        let p = match leader_partition(broker, *id) {
            Ok(p) => p,
            Err(code) => {
                pass.any_error = true;
                pass.datas.push((*id, data.with_error_code(code.code())));
                continue;
            }
        };
        p.park(waiter);
        if !persist::ready(broker) {
            // Nothing is handed out before its acknowledgement can be made durable.
            pass.datas.push((*id, data));
            continue;
        }
        let key = (group_id.to_string(), id.0, id.1);
        let sp = broker.shares.partition(&key);
        let mut sp = sp.lock();
        persist::sync_leadership(broker, &key, &mut sp, p.leader_epoch());
        let got = crate::coordinators::share::acquire(
            &p,
            &mut sp,
            member,
            records_left,
            bytes_left,
            policy,
            limits,
        );
        if let Some(d) = sp.next_lock_deadline_ms() {
            pass.next_lock_deadline_ms =
                Some(pass.next_lock_deadline_ms.map_or(d, |n: i64| n.min(d)));
        }
        drop(sp);
        match got {
            Ok(a) if !a.ranges.is_empty() => {
                let n: i64 = a
                    .ranges
                    .iter()
                    .map(|r| r.last_offset - r.first_offset + 1)
                    .sum();
                records_left = (records_left - n).max(0);
                bytes_left = bytes_left.saturating_sub(a.records.len());
                broker
                    .metrics
                    .record_fetch(&p.topic, a.records.len() as u64);
                pass.any_records = true;
                data = data.with_records(Some(a.records)).with_acquired_records(
                    a.ranges
                        .iter()
                        .map(|r| {
                            AcquiredRecords::default()
                                .with_first_offset(r.first_offset)
                                .with_last_offset(r.last_offset)
                                .with_delivery_count(r.delivery_count)
                        })
                        .collect(),
                );
            }
            Ok(_) => {}
            Err(e) => {
                p.note_storage_error(&e);
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "share fetch read failed");
                pass.any_error = true;
                data = data.with_error_code(ErrorCode::KafkaStorageError.code());
            }
        }
        pass.datas.push((*id, data));
        if records_left == 0 {
            break;
        }
    }
    pass
}

/// Groups partition data by topic: the partitions with records or an error, and those
/// whose acknowledgements this request carried.
fn assemble(
    broker: &Broker,
    datas: Vec<(PartitionId, PartitionData)>,
    acks: &BTreeMap<PartitionId, ErrorCode>,
    limits: &Limits,
) -> ShareFetchResponse {
    let mut by_id: BTreeMap<PartitionId, PartitionData> = datas
        .into_iter()
        .filter(|(_, d)| d.error_code != 0 || !d.acquired_records.is_empty())
        .collect();
    for (id, code) in acks {
        let d = by_id.entry(*id).or_insert_with(|| {
            PartitionData::default()
                .with_partition_index(id.1)
                .with_records(Some(Bytes::new()))
        });
        d.acknowledge_error_code = code.code();
    }
    let mut topics: Vec<ShareFetchableTopicResponse> = Vec::new();
    for (id, d) in by_id {
        let d = d.with_current_leader(current_leader(broker, id));
        match topics.last_mut() {
            Some(t) if t.topic_id == id.0 => t.partitions.push(d),
            _ => topics.push(
                ShareFetchableTopicResponse::default()
                    .with_topic_id(id.0)
                    .with_partitions(vec![d]),
            ),
        }
    }
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(limits.lock_duration_ms.min(i32::MAX as i64) as i32)
        .with_responses(topics)
}

pub fn acknowledge(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ShareAcknowledgeRequest = decode_body(&req.body, req.api_version)?;
    let top_error =
        |code: ErrorCode, message: String| refuse!(ShareAcknowledgeResponse, req, code, message);
    authorize_group!(
        ShareAcknowledgeResponse,
        req,
        az,
        Operation::Read,
        body.group_id.as_ref().map(|g| g.0.as_str())
    );
    let ids = identify(
        broker,
        body.group_id.as_ref().map(|g| g.0.as_str()),
        body.member_id.as_deref(),
    );
    let (group_id, member) = match ids {
        Ok(ids) => ids,
        Err((code, message)) => return top_error(code, message),
    };
    let key = (group_id.clone(), member.clone());
    let step = match broker
        .shares
        .session_acknowledge(key, body.share_session_epoch)
    {
        Ok(step) => step,
        Err(code) => {
            return top_error(
                code,
                format!("share session epoch {} refused", body.share_session_epoch),
            )
        }
    };
    let mut acks: BTreeMap<PartitionId, Vec<AckBatch>> = BTreeMap::new();
    for t in &body.topics {
        for p in &t.partitions {
            acks.entry((t.topic_id, p.partition_index))
                .or_default()
                .extend(ack_batches(
                    p.acknowledgement_batches
                        .iter()
                        .map(|b| (b.first_offset, b.last_offset, &b.acknowledge_types)),
                ));
        }
    }
    let (limits, _) = group_settings(broker, &group_id);
    let refused = readable_acks(broker, az, &mut acks);
    let (mut results, durable) = apply_acks(broker, &group_id, &member, &acks, &limits);
    results.extend(refused);
    if let Step::Closed(parts) = step {
        let closed = broker.shares.release(&group_id, &member, &parts, &limits);
        released(broker, &group_id, &closed);
    }
    let (broker, req) = (broker.clone(), req.clone());
    Ok(Box::pin(async move {
        wait_durable(durable, &mut results).await;
        encode(&req, &acknowledge_response(&broker, results))
    }))
}

fn acknowledge_response(
    broker: &Broker,
    results: BTreeMap<PartitionId, ErrorCode>,
) -> ShareAcknowledgeResponse {
    let mut topics: Vec<ShareAcknowledgeTopicResponse> = Vec::new();
    for (id, code) in results {
        let leader = current_leader(broker, id);
        let d = AckPartitionData::default()
            .with_partition_index(id.1)
            .with_error_code(code.code())
            .with_current_leader(
                runnel_protocol::kp::messages::share_acknowledge_response::LeaderIdAndEpoch::default()
                    .with_leader_id(leader.leader_id)
                    .with_leader_epoch(leader.leader_epoch),
            );
        match topics.last_mut() {
            Some(t) if t.topic_id == id.0 => t.partitions.push(d),
            _ => topics.push(
                ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(id.0)
                    .with_partitions(vec![d]),
            ),
        }
    }
    ShareAcknowledgeResponse::default().with_responses(topics)
}

/// Why an admin cannot read or change a share group's offsets here, if it cannot.
fn admin_refusal(broker: &Broker, group_id: &str) -> Option<(ErrorCode, String)> {
    if let Err(code) = broker.groups.check_coordinator(group_id) {
        return Some((
            code,
            format!("this broker does not coordinate group {group_id}"),
        ));
    }
    if !broker.shares.knows_group(group_id) {
        let message = if broker.groups.describe(group_id).is_some() {
            format!("Group {group_id} is not a share group.")
        } else {
            format!("Group {group_id} not found.")
        };
        return Some((ErrorCode::GroupIdNotFound, message));
    }
    None
}

/// Why an admin cannot change a share group's offsets: `admin_refusal`, or members
/// (Kafka allows it only on an empty group).
fn change_refusal(broker: &Broker, group_id: &str, doing: &str) -> Option<(ErrorCode, String)> {
    admin_refusal(broker, group_id).or_else(|| {
        broker.shares.has_members(group_id).then(|| {
            (
                ErrorCode::NonEmptyGroup,
                format!("share group {group_id} has members: stop them before {doing} its offsets"),
            )
        })
    })
}

/// A group without DESCRIBE is answered GROUP_AUTHORIZATION_FAILED, as in [`describe`].
pub fn describe_offsets(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    use runnel_protocol::kp::messages::describe_share_group_offsets_response::{
        DescribeShareGroupOffsetsResponseGroup as Group,
        DescribeShareGroupOffsetsResponsePartition as Part,
        DescribeShareGroupOffsetsResponseTopic as Topic,
    };
    use runnel_protocol::kp::messages::{
        DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse,
    };
    let body: DescribeShareGroupOffsetsRequest = decode_body(&req.body, req.api_version)?;
    let groups = body
        .groups
        .iter()
        .map(|g| {
            let out = Group::default().with_group_id(g.group_id.clone());
            if !az.group(Operation::Describe, &g.group_id) {
                return out.with_error_code(ErrorCode::GroupAuthorizationFailed.code());
            }
            if let Some((code, message)) = admin_refusal(broker, &g.group_id) {
                return out
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message)));
            }
            let known: BTreeMap<(Uuid, i32), i64> = broker
                .shares
                .start_offsets(&g.group_id)
                .into_iter()
                .map(|(k, offset)| ((k.1, k.2), offset))
                .collect();
            // Without a topic list: every share-partition the group has state for.
            let wanted: Vec<(String, Uuid, Vec<i32>)> = match &g.topics {
                Some(topics) => topics
                    .iter()
                    .map(|t| {
                        let id = broker
                            .topics
                            .get(&t.topic_name.0)
                            .map_or(Uuid::nil(), |x| x.id);
                        (t.topic_name.0.to_string(), id, t.partitions.clone())
                    })
                    .collect(),
                None => {
                    let mut by_topic: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
                    for (tid, p) in known.keys() {
                        by_topic.entry(*tid).or_default().push(*p);
                    }
                    by_topic
                        .into_iter()
                        .filter_map(|(tid, ps)| {
                            broker
                                .topics
                                .get_by_id(tid)
                                .map(|t| (t.name.clone(), tid, ps))
                        })
                        .collect()
                }
            };
            let topics = wanted
                .into_iter()
                .map(|(name, tid, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|p| {
                            let part = Part::default().with_partition_index(p);
                            if tid.is_nil() {
                                return part
                                    .with_start_offset(-1)
                                    .with_leader_epoch(-1)
                                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                            }
                            let epoch = persist::leader_epoch(broker, &(String::new(), tid, p));
                            part.with_start_offset(known.get(&(tid, p)).copied().unwrap_or(-1))
                                .with_leader_epoch(epoch)
                        })
                        .collect();
                    Topic::default()
                        .with_topic_name(TopicName(str_bytes(&name)))
                        .with_topic_id(tid)
                        .with_partitions(partitions)
                })
                .collect();
            out.with_topics(topics)
        })
        .collect();
    ready(
        req,
        &DescribeShareGroupOffsetsResponse::default().with_groups(groups),
    )
}

pub fn alter_offsets(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    use runnel_protocol::kp::messages::alter_share_group_offsets_response::{
        AlterShareGroupOffsetsResponsePartition as Part,
        AlterShareGroupOffsetsResponseTopic as Topic,
    };
    use runnel_protocol::kp::messages::{
        AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse,
    };
    let body: AlterShareGroupOffsetsRequest = decode_body(&req.body, req.api_version)?;
    let group_id = body.group_id.0.to_string();
    authorize_group!(
        AlterShareGroupOffsetsResponse,
        req,
        az,
        Operation::Read,
        Some(&group_id)
    );
    if let Some((code, message)) = change_refusal(broker, &group_id, "altering") {
        return refuse!(AlterShareGroupOffsetsResponse, req, code, message);
    }
    let mut durable: Vec<(Arc<Partition>, Appended)> = Vec::new();
    let responses = body
        .topics
        .iter()
        .map(|t| {
            let topic = broker.topics.get(&t.topic_name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let part = Part::default().with_partition_index(p.partition_index);
                    let Some(topic) = &topic else {
                        return part.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    let id = (topic.id, p.partition_index);
                    let checked = if p.start_offset < 0 {
                        Err(ErrorCode::InvalidRequest)
                    } else {
                        leader_partition(broker, id)
                    };
                    let data = match checked {
                        Ok(d) => d,
                        Err(code) => return part.with_error_code(code.code()),
                    };
                    let key = (group_id.clone(), topic.id, p.partition_index);
                    let sp = broker.shares.partition(&key);
                    let mut sp = sp.lock();
                    sp.reset_to(p.start_offset);
                    match persist::write(broker, &key, &mut sp, data.leader_epoch()) {
                        Ok(w) => {
                            durable.extend(w);
                            part
                        }
                        Err(e) => part
                            .with_error_code(e.code.code())
                            .with_error_message(Some(str_bytes(&e.message))),
                    }
                })
                .collect();
            Topic::default()
                .with_topic_name(t.topic_name.clone())
                .with_topic_id(topic.as_ref().map_or(Uuid::nil(), |x| x.id))
                .with_partitions(partitions)
        })
        .collect();
    let response = AlterShareGroupOffsetsResponse::default().with_responses(responses);
    let req = req.clone();
    Ok(Box::pin(async move {
        for (p, at) in durable {
            // A failed write was logged by the state partition; the answer stands, as
            // the offsets are in effect in memory.
            let _ = p.wait_acknowledged(at).await;
        }
        encode(&req, &response)
    }))
}

pub fn delete_offsets(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    use runnel_protocol::kp::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic as Topic;
    use runnel_protocol::kp::messages::{
        DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse,
    };
    let body: DeleteShareGroupOffsetsRequest = decode_body(&req.body, req.api_version)?;
    let group_id = body.group_id.0.to_string();
    authorize_group!(
        DeleteShareGroupOffsetsResponse,
        req,
        az,
        Operation::Delete,
        Some(&group_id)
    );
    if let Some((code, message)) = change_refusal(broker, &group_id, "deleting") {
        return refuse!(DeleteShareGroupOffsetsResponse, req, code, message);
    }
    let responses = body
        .topics
        .iter()
        .map(|t| {
            let out = Topic::default().with_topic_name(t.topic_name.clone());
            let Some(topic) = broker.topics.get(&t.topic_name.0) else {
                return out.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
            };
            let keys: Vec<_> = (0..topic.partitions.len() as i32)
                .map(|p| (group_id.clone(), topic.id, p))
                .filter(|k| broker.shares.forget_partition(k))
                .collect();
            persist::delete(broker, &keys);
            out.with_topic_id(topic.id)
        })
        .collect();
    ready(
        req,
        &DeleteShareGroupOffsetsResponse::default().with_responses(responses),
    )
}
