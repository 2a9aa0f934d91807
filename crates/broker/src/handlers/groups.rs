//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//! The state machine lives in `crate::coordinators::groups`; this module translates the wire forms.

use std::sync::Arc;

use bytes::Bytes;
use runnel_protocol::kp::messages::delete_groups_response::DeletableGroupResult;
use runnel_protocol::kp::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use runnel_protocol::kp::messages::find_coordinator_response::Coordinator;
use runnel_protocol::kp::messages::join_group_response::JoinGroupResponseMember;
use runnel_protocol::kp::messages::leave_group_response::MemberResponse;
use runnel_protocol::kp::messages::list_groups_response::ListedGroup;
use runnel_protocol::kp::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use runnel_protocol::kp::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use runnel_protocol::kp::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use runnel_protocol::kp::messages::*;
use runnel_protocol::kp::protocol::StrBytes;
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{encode, ready, str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType};
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::coordinators::groups::records::OffsetValue;
use crate::coordinators::groups::{JoinParams, JoinResult, Pending, SyncResult};
use crate::error::ErrorCode;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn find_coordinator(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    listener: &Arc<str>,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: FindCoordinatorRequest = decode_body(&req.body, req.api_version)?;
    let denied = coordinator_keys_denied(az, &body, req.api_version);
    let (broker, req) = (broker.clone(), req.clone());
    let listener = listener.clone();
    Ok(Box::pin(async move {
        let cluster = broker.cluster();
        let response = find_coordinator_in(&broker, cluster, &req, &listener, body).await;
        encode(&req, &refuse_coordinators(response, &denied))
    }))
}

/// Kafka: DESCRIBE on the group or the transactional id whose coordinator is asked
/// for. Returns the refused keys with their error (v0-3 have one key).
fn coordinator_keys_denied(
    az: &Ctx,
    body: &FindCoordinatorRequest,
    v: i16,
) -> Vec<(StrBytes, ErrorCode)> {
    let rt = match body.key_type {
        KEY_TYPE_GROUP => ResourceType::Group,
        KEY_TYPE_TRANSACTION => ResourceType::TransactionalId,
        _ => return Vec::new(),
    };
    let keys = if v >= 4 {
        body.coordinator_keys.clone()
    } else {
        vec![body.key.clone()]
    };
    keys.into_iter()
        .filter(|k| !az.allowed(Operation::Describe, rt, k))
        .map(|k| (k, crate::authz::denied_code(rt)))
        .collect()
}

fn refuse_coordinators(
    mut r: FindCoordinatorResponse,
    denied: &[(StrBytes, ErrorCode)],
) -> FindCoordinatorResponse {
    let Some((_, code)) = denied.first() else {
        return r;
    };
    if r.coordinators.is_empty() {
        r.error_code = code.code();
        r.error_message = None;
        r.node_id = BrokerId(-1);
        r.host = StrBytes::default();
        r.port = -1;
    }
    for c in &mut r.coordinators {
        if let Some((_, code)) = denied.iter().find(|(k, _)| *k == c.key) {
            c.error_code = code.code();
            c.error_message = None;
            c.node_id = BrokerId(-1);
            c.host = StrBytes::default();
            c.port = -1;
        }
    }
    r
}

/// A group's coordinator is the leader of its `__consumer_offsets` partition (created
/// through the controller on first use); a transactional id's, of its
/// `__transaction_state` partition.
async fn find_coordinator_in(
    broker: &Broker,
    cluster: &crate::cluster::Cluster,
    req: &ParsedRequest,
    listener: &str,
    body: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    use crate::coordinators::groups::OFFSETS_TOPIC;
    let keys: Vec<StrBytes> = if req.api_version >= 4 {
        body.coordinator_keys.clone()
    } else {
        vec![body.key.clone()]
    };
    let mut setup_error: Option<(ErrorCode, String)> = None;
    // Groups live in __consumer_offsets, transactional ids in __transaction_state; the
    // coordinator is the leader of the key's partition there.
    let (internal, partitions, rf) = match body.key_type {
        KEY_TYPE_GROUP => (
            OFFSETS_TOPIC,
            broker.groups.config.offsets_topic_partitions,
            broker.config.cluster.offsets_topic_replication_factor,
        ),
        KEY_TYPE_TRANSACTION => (
            crate::coordinators::txn::TXN_TOPIC,
            broker.txns.config.partitions,
            broker.config.cluster.transaction_state_replication_factor,
        ),
        other => {
            setup_error = Some((
                ErrorCode::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            ));
            (OFFSETS_TOPIC, 0, 0)
        }
    };
    if setup_error.is_none() && !cluster.current_image().topics.contains_key(internal) {
        let live = cluster.current_image().live_brokers().count() as i16;
        let topic = runnel_meta::NewTopic {
            id: None,
            name: internal.to_string(),
            num_partitions: partitions,
            replication_factor: rf.min(live.max(1)),
            assignments: None,
            configs: std::collections::BTreeMap::from([(
                "cleanup.policy".to_string(),
                "compact".to_string(),
            )]),
        };
        let created = cluster.controller.create_topics(vec![topic], false).await;
        if let Some(Err(e)) = created.into_iter().next() {
            if e.kind != runnel_meta::ErrorKind::TopicAlreadyExists {
                setup_error = Some((ErrorCode::CoordinatorNotAvailable, e.message));
            }
        }
        cluster
            .wait_for_image(|img| img.topics.contains_key(internal))
            .await;
        // The coordinator may be this broker: answer once it has applied that image
        // (opened the partitions and taken their leadership), not before.
        cluster
            .wait_reconciled(cluster.current_image().applied_index)
            .await;
    }
    let image = cluster.current_image();
    let answer = |key: &StrBytes| -> Result<(i32, String, i32), (ErrorCode, String)> {
        if let Some(e) = &setup_error {
            return Err(e.clone());
        }
        if key.is_empty() {
            return Err((ErrorCode::InvalidRequest, "empty group id".into()));
        }
        let topic = image.topics.get(internal).ok_or((
            ErrorCode::CoordinatorNotAvailable,
            format!("{internal} is being created"),
        ))?;
        let index =
            crate::coordinators::groups::records::partition_for(key, topic.partitions.len() as i32);
        let leader = topic
            .partitions
            .get(index as usize)
            .map_or(-1, |p| p.leader);
        match image.brokers.get(&leader).filter(|b| !b.fenced) {
            Some(b) => {
                let (host, port) = b.endpoint(listener);
                Ok((b.id, host.to_string(), port))
            }
            None => Err((
                ErrorCode::CoordinatorNotAvailable,
                format!("{internal}-{index} has no leader right now"),
            )),
        }
    };
    if req.api_version >= 4 {
        let coordinators = keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match answer(key) {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(&host))
                        .with_port(port),
                    Err((code, message)) => c
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(&message)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        match answer(&keys[0]) {
            Ok((id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(&host))
                .with_port(port),
            Err((code, message)) => {
                let r = FindCoordinatorResponse::default()
                    .with_error_code(code.code())
                    .with_node_id(BrokerId(-1))
                    .with_port(-1);
                if req.api_version >= 1 {
                    r.with_error_message(Some(str_bytes(&message)))
                } else {
                    r
                }
            }
        }
    }
}

fn join_response(req: &ParsedRequest, r: JoinResult) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&id))
                .with_group_instance_id(instance.as_deref().map(str_bytes))
                .with_metadata(metadata)
        })
        .collect();
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error.code())
        .with_generation_id(r.generation)
        .with_protocol_name(r.protocol_name.as_deref().map(str_bytes))
        .with_leader(str_bytes(&r.leader))
        .with_member_id(str_bytes(&r.member_id))
        .with_members(members);
    if req.api_version >= 7 {
        resp = resp.with_protocol_type(r.protocol_type.as_deref().map(str_bytes));
    }
    if req.api_version >= 9 {
        resp = resp.with_skip_assignment(r.skip_assignment);
    }
    if req.api_version < 7 && resp.protocol_name.is_none() {
        // Before v7 the protocol name is not nullable.
        resp.protocol_name = Some(StrBytes::default());
    }
    resp
}

pub fn join(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    peer: std::net::SocketAddr,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: JoinGroupRequest = decode_body(&req.body, req.api_version)?;
    if !az.group(Operation::Read, &body.group_id) {
        let refused = JoinResult::error(ErrorCode::GroupAuthorizationFailed, &body.member_id);
        return ready(req, &join_response(req, refused));
    }
    if broker.shares.describe(&body.group_id).is_some() {
        // Kafka: "Group X is not a classic group." (GROUP_ID_NOT_FOUND).
        let refused = JoinResult::error(ErrorCode::GroupIdNotFound, &body.member_id);
        return ready(req, &join_response(req, refused));
    }
    let params = JoinParams {
        group_id: body.group_id.0.to_string(),
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if req.api_version >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        client_id: req
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        require_known_member_id: req.api_version >= 4,
    };
    let member_id = params.member_id.clone();
    let pending = broker.groups.join(&broker.topics, params);
    let req = req.clone();
    Ok(Box::pin(async move {
        let result = match pending {
            Pending::Ready(r) => r,
            Pending::Wait(rx) => rx
                .await
                .unwrap_or_else(|_| JoinResult::error(ErrorCode::RebalanceInProgress, &member_id)),
        };
        encode(&req, &join_response(&req, result))
    }))
}

/// Kafka: READ on the group for JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the
/// consumer-group heartbeat; the answer is GROUP_AUTHORIZATION_FAILED.
fn group_read_denied(az: &Ctx, group: &str) -> Option<i16> {
    (!az.group(Operation::Read, group)).then_some(ErrorCode::GroupAuthorizationFailed.code())
}

pub fn sync(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: SyncGroupRequest = decode_body(&req.body, req.api_version)?;
    if let Some(code) = group_read_denied(az, &body.group_id) {
        return ready(req, &SyncGroupResponse::default().with_error_code(code));
    }
    let assignments = body
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let pending = broker.groups.sync(
        &broker.topics,
        &body.group_id.0,
        body.generation_id,
        &body.member_id,
        body.group_instance_id.as_deref(),
        body.protocol_type.as_deref(),
        body.protocol_name.as_deref(),
        assignments,
    );
    let req = req.clone();
    Ok(Box::pin(async move {
        let r = match pending {
            Pending::Ready(r) => r,
            Pending::Wait(rx) => rx.await.unwrap_or(SyncResult {
                error: ErrorCode::RebalanceInProgress,
                protocol_type: None,
                protocol_name: None,
                assignment: Bytes::new(),
            }),
        };
        let mut resp = SyncGroupResponse::default()
            .with_error_code(r.error.code())
            .with_assignment(r.assignment);
        if req.api_version >= 5 {
            resp = resp
                .with_protocol_type(r.protocol_type.as_deref().map(str_bytes))
                .with_protocol_name(r.protocol_name.as_deref().map(str_bytes));
        }
        encode(&req, &resp)
    }))
}

pub fn heartbeat(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: HeartbeatRequest = decode_body(&req.body, req.api_version)?;
    if let Some(code) = group_read_denied(az, &body.group_id) {
        return ready(req, &HeartbeatResponse::default().with_error_code(code));
    }
    let code = broker.groups.heartbeat(
        &body.group_id.0,
        body.generation_id,
        &body.member_id,
        body.group_instance_id.as_deref(),
    );
    ready(
        req,
        &HeartbeatResponse::default().with_error_code(code.code()),
    )
}

pub fn leave(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: LeaveGroupRequest = decode_body(&req.body, req.api_version)?;
    if let Some(code) = group_read_denied(az, &body.group_id) {
        return ready(req, &LeaveGroupResponse::default().with_error_code(code));
    }
    let members: Vec<(String, Option<String>)> = if req.api_version >= 3 {
        body.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(body.member_id.to_string(), None)]
    };
    let response = match broker
        .groups
        .leave(&broker.topics, &body.group_id.0, &members)
    {
        Err(code) => LeaveGroupResponse::default().with_error_code(code.code()),
        Ok(codes) if req.api_version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(code.code())
                })
                .collect(),
        ),
        Ok(codes) => LeaveGroupResponse::default()
            .with_error_code(codes.first().copied().unwrap_or(ErrorCode::None).code()),
    };
    ready(req, &response)
}

pub fn offset_commit(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: OffsetCommitRequest = decode_body(&req.body, req.api_version)?;
    // Kafka: READ on the group (else every partition GROUP_AUTHORIZATION_FAILED), then
    // READ on each topic (TOPIC_AUTHORIZATION_FAILED; nothing of it is committed).
    let group_ok = az.group(Operation::Read, &body.group_id);
    let refused: Vec<Option<ErrorCode>> =
        body.topics
            .iter()
            .map(|t| match group_ok {
                false => Some(ErrorCode::GroupAuthorizationFailed),
                true => (!az.topic(Operation::Read, &t.name))
                    .then_some(ErrorCode::TopicAuthorizationFailed),
            })
            .collect();
    let mut offsets = Vec::new();
    for (t, _) in body
        .topics
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
    {
        for p in &t.partitions {
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                p.committed_offset,
                if req.api_version >= 6 {
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
    tracing::debug!(group = %body.group_id.0, member = %body.member_id, epoch = body.generation_id_or_member_epoch, offsets = ?offsets.iter().map(|o| (o.1, o.2)).collect::<Vec<_>>(), "offset commit");
    let (codes, wait) = broker.groups.commit_offsets(
        &broker.topics,
        &body.group_id.0,
        body.generation_id_or_member_epoch,
        &body.member_id,
        body.group_instance_id.as_deref(),
        offsets,
    );
    let mut codes = codes.into_iter();
    let mut topics: Vec<OffsetCommitResponseTopic> = body
        .topics
        .iter()
        .zip(refused)
        .map(|(t, refused)| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(
                                    refused
                                        .or_else(|| codes.next())
                                        .unwrap_or(ErrorCode::None)
                                        .code(),
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    let req = req.clone();
    Ok(Box::pin(async move {
        // Acknowledge a commit only once it is durable and replicated, like an acks=all
        // produce.
        if let Some((partition, at)) = wait {
            if let Err(code) = partition.wait_acknowledged(at).await {
                for t in &mut topics {
                    for p in &mut t.partitions {
                        if p.error_code == 0 {
                            p.error_code = code.code();
                        }
                    }
                }
            }
        }
        encode(&req, &OffsetCommitResponse::default().with_topics(topics))
    }))
}

pub fn offset_fetch(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: OffsetFetchRequest = decode_body(&req.body, req.api_version)?;
    let v = req.api_version;
    // Kafka (KafkaApis.handleOffsetFetchRequest): DESCRIBE on the group (checked below,
    // per group) and on each topic. A named topic the principal may not describe answers
    // TOPIC_AUTHORIZATION_FAILED for each partition asked (after the authorized ones);
    // the fetch-all form leaves such topics out silently.
    // KIP-447 (v7+): a partition with offsets committed by an open transaction answers
    // UNSTABLE_OFFSET_COMMIT when the client asks for stable offsets, as Kafka's
    // coordinator does, in both forms.
    type Fetched = (String, i32, Option<OffsetValue>, ErrorCode);
    let stable = |group: &str, (t, p, v): (String, i32, Option<OffsetValue>)| -> Fetched {
        if body.require_stable && broker.groups.has_pending_txn_offset(group, &t, p) {
            (t, p, None, ErrorCode::UnstableOffsetCommit)
        } else {
            (t, p, v, ErrorCode::None)
        }
    };
    let fetch = |group: &str, topics: Option<Vec<(String, i32)>>| match topics {
        None => {
            let mut all: Vec<_> = broker
                .groups
                .fetch_offsets(group, None)
                .into_iter()
                .map(|e| stable(group, e))
                .collect();
            all.retain(|(t, ..)| az.visible(Operation::Describe, ResourceType::Topic, t));
            all
        }
        Some(wanted) => {
            let (allowed, refused): (Vec<_>, Vec<_>) = wanted
                .into_iter()
                .partition(|(t, _)| az.topic(Operation::Describe, t));
            let mut out: Vec<_> = broker
                .groups
                .fetch_offsets(group, Some(allowed))
                .into_iter()
                .map(|e| stable(group, e))
                .collect();
            out.extend(
                refused
                    .into_iter()
                    .map(|(t, p)| (t, p, None, ErrorCode::TopicAuthorizationFailed)),
            );
            out
        }
    };
    let group_denied = |group: &str| {
        (!az.group(Operation::Describe, group)).then_some(ErrorCode::GroupAuthorizationFailed)
    };
    let response = if v >= 8 {
        let groups = body
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .flat_map(|t| {
                            t.partition_indexes
                                .iter()
                                .map(move |&p| (t.name.0.to_string(), p))
                        })
                        .collect()
                });
                let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
                for (topic, partition, value, error) in fetch(&g.group_id.0, wanted) {
                    let part = OffsetFetchResponsePartitions::default()
                        .with_partition_index(partition)
                        .with_error_code(error.code())
                        .with_committed_offset(value.as_ref().map_or(-1, |v| v.offset))
                        .with_committed_leader_epoch(value.as_ref().map_or(-1, |v| v.leader_epoch))
                        .with_metadata(Some(str_bytes(
                            value.as_ref().map_or("", |v| v.metadata.as_str()),
                        )));
                    if topics.last().is_none_or(|t| t.name.0.as_str() != topic) {
                        topics.push(
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(&topic))),
                        );
                    }
                    topics.last_mut().expect("pushed").partitions.push(part);
                }
                let code = group_denied(&g.group_id.0)
                    .or_else(|| broker.groups.check_coordinator(&g.group_id.0).err());
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code.map_or(0, ErrorCode::code))
                    .with_topics(if code.is_some() { Vec::new() } else { topics })
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let wanted = body.topics.as_ref().map(|ts| {
            ts.iter()
                .flat_map(|t| {
                    t.partition_indexes
                        .iter()
                        .map(move |&p| (t.name.0.to_string(), p))
                })
                .collect()
        });
        let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
        for (topic, partition, value, error) in fetch(&body.group_id.0, wanted) {
            let mut part = OffsetFetchResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(error.code())
                .with_committed_offset(value.as_ref().map_or(-1, |v| v.offset))
                .with_metadata(Some(str_bytes(
                    value.as_ref().map_or("", |v| v.metadata.as_str()),
                )));
            if v >= 5 {
                part =
                    part.with_committed_leader_epoch(value.as_ref().map_or(-1, |v| v.leader_epoch));
            }
            if topics.last().is_none_or(|t| t.name.0.as_str() != topic) {
                topics.push(
                    OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(&topic))),
                );
            }
            topics.last_mut().expect("pushed").partitions.push(part);
        }
        match group_denied(&body.group_id.0)
            .map_or_else(|| broker.groups.check_coordinator(&body.group_id.0), Err)
        {
            Err(code) if v >= 2 => OffsetFetchResponse::default().with_error_code(code.code()),
            _ => OffsetFetchResponse::default().with_topics(topics),
        }
    };
    ready(req, &response)
}

pub fn list(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ListGroupsRequest = decode_body(&req.body, req.api_version)?;
    // Kafka: DESCRIBE on the cluster lists every group, else those the principal may
    // DESCRIBE.
    let all = az.cluster(Operation::Describe);
    let shares = broker.shares.list().into_iter().map(|(id, state)| {
        // Kafka lists a share group with protocol type and group type "share".
        (id, "share".to_string(), state.to_string(), "share")
    });
    let groups = broker
        .groups
        .list()
        .into_iter()
        .chain(shares)
        .filter(|(id, _, _, _)| all || az.visible(Operation::Describe, ResourceType::Group, id))
        .filter(|(_, _, state, _)| {
            body.states_filter.is_empty()
                || body
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state))
        })
        .filter(|(_, _, _, kind)| {
            body.types_filter.is_empty()
                || body
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(kind))
        })
        .map(|(id, protocol_type, state, kind)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type));
            if req.api_version >= 4 {
                g = g.with_group_state(str_bytes(&state));
            }
            if req.api_version >= 5 {
                g = g.with_group_type(str_bytes(kind));
            }
            g
        })
        .collect();
    ready(req, &ListGroupsResponse::default().with_groups(groups))
}

pub fn describe(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeGroupsRequest = decode_body(&req.body, req.api_version)?;
    let groups = body
        .groups
        .iter()
        .map(|id| (id, group_ops(az, &id.0, body.include_authorized_operations)))
        .map(|(id, ops)| match broker.groups.describe(&id.0) {
            _ if !az.group(Operation::Describe, &id.0) => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_error_code(ErrorCode::GroupAuthorizationFailed.code()),
            _ if broker.groups.check_coordinator(&id.0).is_err() => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_error_code(ErrorCode::NotCoordinator.code()),
            None => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(str_bytes("Dead"))
                .with_authorized_operations(ops),
            Some(d) => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(ops)
                .with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|(member, instance, client, host, metadata, assignment)| {
                            let m = DescribedGroupMember::default()
                                .with_member_id(str_bytes(&member))
                                .with_client_id(str_bytes(&client))
                                .with_client_host(str_bytes(&host))
                                .with_member_metadata(metadata)
                                .with_member_assignment(assignment);
                            if req.api_version >= 4 {
                                m.with_group_instance_id(instance.as_deref().map(str_bytes))
                            } else {
                                m
                            }
                        })
                        .collect(),
                ),
        })
        .collect();
    ready(req, &DescribeGroupsResponse::default().with_groups(groups))
}

/// KIP-430 operations of a group for this principal, when asked.
fn group_ops(az: &Ctx, group: &str, requested: bool) -> i32 {
    super::authorized::if_requested(
        requested,
        az.authorized_bits(ResourceType::Group, group, super::authorized::GROUP),
    )
}

pub fn delete(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DeleteGroupsRequest = decode_body(&req.body, req.api_version)?;
    let results = body
        .groups_names
        .iter()
        .map(|g| {
            let code = if az.group(Operation::Delete, &g.0) {
                super::share::delete_group(broker, &g.0)
                    .unwrap_or_else(|| broker.groups.delete_group(&broker.topics, &g.0))
            } else {
                ErrorCode::GroupAuthorizationFailed
            };
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code.code())
        })
        .collect();
    ready(req, &DeleteGroupsResponse::default().with_results(results))
}

pub fn offset_delete(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: OffsetDeleteRequest = decode_body(&req.body, req.api_version)?;
    // Kafka: DELETE on the group (else the whole request is refused), READ on each
    // topic (else its partitions answer TOPIC_AUTHORIZATION_FAILED, the others go on).
    if !az.group(Operation::Delete, &body.group_id) {
        let code = ErrorCode::GroupAuthorizationFailed.code();
        return ready(req, &OffsetDeleteResponse::default().with_error_code(code));
    }
    let readable: Vec<bool> = body
        .topics
        .iter()
        .map(|t| az.topic(Operation::Read, &t.name))
        .collect();
    let wanted: Vec<(String, i32)> = body
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, ok)| **ok)
        .flat_map(|(t, _)| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let response = match broker
        .groups
        .delete_offsets(&broker.topics, &body.group_id.0, wanted)
    {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code.code()),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            OffsetDeleteResponse::default().with_topics(
                body.topics
                    .iter()
                    .zip(&readable)
                    .map(|(t, &ok)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let code = match ok {
                                            false => ErrorCode::TopicAuthorizationFailed,
                                            true => codes.next().unwrap_or(ErrorCode::None),
                                        };
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    };
    ready(req, &response)
}

fn wire_assignment(
    a: &crate::coordinators::groups::consumer::Assignment,
) -> Vec<consumer_group_heartbeat_response::TopicPartitions> {
    a.iter()
        .map(|(t, ps)| {
            consumer_group_heartbeat_response::TopicPartitions::default()
                .with_topic_id(*t)
                .with_partitions(ps.iter().copied().collect())
        })
        .collect()
}

pub fn consumer_heartbeat(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    peer: std::net::SocketAddr,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: ConsumerGroupHeartbeatRequest = decode_body(&req.body, req.api_version)?;
    if let Some(code) = group_read_denied(az, &body.group_id) {
        let r = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_member_id(Some(body.member_id.clone()));
        return ready(req, &r);
    }
    // Kafka: a member may subscribe by name only to topics it may DESCRIBE (else the
    // assignment would tell it which of them exist).
    if let Some(topic) = body
        .subscribed_topic_names
        .iter()
        .flatten()
        .find(|t| !az.topic(Operation::Describe, t))
    {
        let r = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(&format!(
                "not authorized to describe subscribed topic '{}'",
                topic.0
            ))))
            .with_member_id(Some(body.member_id.clone()));
        return ready(req, &r);
    }
    if broker.shares.describe(&body.group_id).is_some() {
        // Kafka: "Group X is not a consumer group." (GROUP_ID_NOT_FOUND).
        let r = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupIdNotFound.code())
            .with_error_message(Some(str_bytes(&format!(
                "Group {} is not a consumer group.",
                body.group_id.0
            ))))
            .with_member_id(Some(body.member_id.clone()));
        return ready(req, &r);
    }
    let owned = body.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
            .collect::<crate::coordinators::groups::consumer::Assignment>()
    });
    let regex = body
        .subscribed_topic_regex
        .as_ref()
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty());
    let compiled_regex = match regex
        .as_deref()
        .map(|r| broker.groups.subscription_regex(r))
    {
        None => None,
        Some(Ok(re)) => Some(re),
        Some(Err(why)) => {
            let e = crate::error::BrokerError::new(ErrorCode::InvalidRegularExpression, why);
            return ready(
                req,
                &ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message)))
                    .with_member_id(Some(body.member_id.clone()))
                    .with_member_epoch(-1),
            );
        }
    };
    let params = crate::coordinators::groups::consumer::HeartbeatParams {
        member_id: body.member_id.to_string(),
        member_epoch: body.member_epoch,
        instance_id: body.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: body.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed_names: body
            .subscribed_topic_names
            .as_ref()
            .map(|ns| ns.iter().map(|n| n.0.to_string()).collect()),
        subscribed_regex: regex,
        compiled_regex,
        regex_filter: az.topic_filter(Operation::Describe),
        server_assignor: body.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: req
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
    };
    let r = broker
        .groups
        .consumer_heartbeat(&broker.topics, &body.group_id.0, params);
    let response = ConsumerGroupHeartbeatResponse::default()
        .with_error_code(r.error.code())
        .with_error_message(r.message.as_deref().map(str_bytes))
        .with_member_id(Some(str_bytes(&r.member_id)))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(
            broker
                .groups
                .consumer_heartbeat_interval_ms(&body.group_id.0),
        )
        .with_assignment(r.assignment.as_ref().map(|a| {
            consumer_group_heartbeat_response::Assignment::default()
                .with_topic_partitions(wire_assignment(a))
        }));
    ready(req, &response)
}

pub fn consumer_describe(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    use consumer_group_describe_response as cgd;
    let body: ConsumerGroupDescribeRequest = decode_body(&req.body, req.api_version)?;
    let names: std::collections::HashMap<uuid::Uuid, String> = broker
        .topics
        .all()
        .iter()
        .map(|t| (t.id, t.name.clone()))
        .collect();
    let described = |a: &crate::coordinators::groups::consumer::Assignment| {
        cgd::Assignment::default().with_topic_partitions(
            a.iter()
                .map(|(t, ps)| {
                    cgd::TopicPartitions::default()
                        .with_topic_id(*t)
                        .with_topic_name(TopicName(str_bytes(
                            names.get(t).map_or("", String::as_str),
                        )))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let groups = body
        .group_ids
        .iter()
        .map(|id| {
            if !az.group(Operation::Describe, &id.0) {
                return cgd::DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
            }
            let ops = group_ops(az, &id.0, body.include_authorized_operations);
            broker
                .groups
                .with_consumer_group(&id.0, |g| {
                    cgd::DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_group_state(str_bytes(g.state()))
                        .with_group_epoch(g.group_epoch)
                        .with_assignment_epoch(g.assignment_epoch)
                        .with_assignor_name(str_bytes(&g.assignor))
                        .with_authorized_operations(ops)
                        .with_members(
                            g.members
                                .values()
                                .map(|m| {
                                    cgd::Member::default()
                                        .with_member_id(str_bytes(&m.id))
                                        .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                                        .with_rack_id(m.rack_id.as_deref().map(str_bytes))
                                        .with_member_epoch(m.epoch)
                                        .with_client_id(str_bytes(&m.client_id))
                                        .with_client_host(str_bytes(&m.client_host))
                                        .with_subscribed_topic_names(
                                            m.subscribed_names
                                                .iter()
                                                .map(|n| TopicName(str_bytes(n)))
                                                .collect(),
                                        )
                                        .with_subscribed_topic_regex(
                                            m.subscribed_regex.as_deref().map(str_bytes),
                                        )
                                        .with_assignment(described(&m.owned))
                                        .with_target_assignment(described(
                                            g.target.get(&m.id).unwrap_or(&Default::default()),
                                        ))
                                })
                                .collect(),
                        )
                })
                .unwrap_or_else(|| {
                    cgd::DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_error_code(ErrorCode::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(&format!(
                            "group '{}' is not a consumer-protocol group",
                            id.0
                        ))))
                })
        })
        .map(|g| refuse_undescribable_topics(az, g))
        .collect();
    ready(
        req,
        &ConsumerGroupDescribeResponse::default().with_groups(groups),
    )
}

/// Kafka's handleConsumerGroupDescribe: a group whose members' assignments name a topic
/// the principal may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED, without its
/// members (they would tell which topics exist).
fn refuse_undescribable_topics(
    az: &Ctx,
    g: consumer_group_describe_response::DescribedGroup,
) -> consumer_group_describe_response::DescribedGroup {
    if !az.enabled() || g.error_code != ErrorCode::None.code() {
        return g;
    }
    let topics: std::collections::BTreeSet<&str> = g
        .members
        .iter()
        .flat_map(|m| {
            m.assignment
                .topic_partitions
                .iter()
                .chain(&m.target_assignment.topic_partitions)
        })
        .map(|tp| tp.topic_name.0.as_str())
        .collect();
    if topics.iter().all(|t| az.topic(Operation::Describe, t)) {
        return g;
    }
    consumer_group_describe_response::DescribedGroup::default()
        .with_group_id(g.group_id)
        .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
        .with_error_message(Some(str_bytes(
            "The described group uses topics that the client is not authorized to describe.",
        )))
}
