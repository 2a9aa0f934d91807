//! Share groups (KIP-932) in `/metrics`: members per share group this broker
//! coordinates, and per share-partition it leads the start offset, in-flight records and
//! acquired records (docs/metrics.md lists them). And as JSON for the console:
//! `GET /v1/share-groups` (ListGroups typed "share") and `GET /v1/share-groups/{id}`
//! (ShareGroupDescribe, plus the share-partitions' figures), each authorized by the
//! Kafka handlers as a client's request would be (DESCRIBE on the group).

use axum::extract::State;
use axum::Json;
use runnel_protocol::kp::messages::{
    ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse, ShareGroupDescribeRequest,
    ShareGroupDescribeResponse,
};
use runnel_protocol::kp::protocol::StrBytes;
use serde_json::{json, Value};

use super::actions::PEER;
use super::api::{group_id, query, MaybePath, MaybeQuery};
use super::kafka::{call, check};
use super::{ApiError, HttpState};
use crate::broker::Broker;

/// Per share-partition figures of `id` on this broker: topic, partition, start offset,
/// in-flight and acquired records.
fn partitions_json(b: &Broker, id: &str) -> Vec<Value> {
    b.shares
        .partitions_of(id)
        .into_iter()
        .map(|((tid, p), s)| {
            let topic = b
                .topics
                .get_by_id(tid)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            json!({
                "topic": topic,
                "partition": p,
                "start_offset": s.start_offset,
                "in_flight": s.in_flight,
                "acquired": s.acquired,
            })
        })
        .collect()
}

/// GET /v1/share-groups: the share groups the caller may DESCRIBE, with member counts
/// and in-flight records (summed over the share-partitions this broker leads).
pub async fn list(State(s): State<HttpState>, q: MaybeQuery) -> Result<Json<Value>, ApiError> {
    query(q, &[])?;
    let req =
        ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str("share")]);
    let resp: ListGroupsResponse = call(&s.broker, PEER, ApiKey::ListGroups, 5, &req).await?;
    check(resp.error_code, None, "list share groups")?;
    let groups: Vec<Value> = resp
        .groups
        .iter()
        .map(|g| {
            let id = g.group_id.to_string();
            let members = s.broker.shares.describe(&id).map_or(0, |v| v.members.len());
            let in_flight: i64 = s
                .broker
                .shares
                .partitions_of(&id)
                .iter()
                .map(|(_, p)| p.in_flight)
                .sum();
            json!({
                "group_id": id,
                "state": g.group_state.to_string(),
                "members": members,
                "in_flight": in_flight,
            })
        })
        .collect();
    Ok(Json(json!({ "groups": groups })))
}

/// GET /v1/share-groups/{id}: state, epoch, members with their assignments, and the
/// share-partitions (start offset, in-flight, acquired).
pub async fn group(
    State(s): State<HttpState>,
    id: MaybePath,
    q: MaybeQuery,
) -> Result<Json<Value>, ApiError> {
    let id = group_id(id)?;
    query(q, &[])?;
    let req = ShareGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(id.clone()))]);
    let resp: ShareGroupDescribeResponse =
        call(&s.broker, PEER, ApiKey::ShareGroupDescribe, 1, &req).await?;
    let g = resp
        .groups
        .first()
        .ok_or_else(|| ApiError::internal("ShareGroupDescribe answered no group"))?;
    check(
        g.error_code,
        g.error_message.as_ref(),
        &format!("share group {id}"),
    )?;
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<Value> = m
                .assignment
                .topic_partitions
                .iter()
                .map(|t| json!({"topic": t.topic_name.to_string(), "partitions": t.partitions}))
                .collect();
            json!({
                "member_id": m.member_id.to_string(),
                "client_id": m.client_id.to_string(),
                "client_host": m.client_host.to_string(),
                "member_epoch": m.member_epoch,
                "subscribed": m.subscribed_topic_names.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "assignment": assignment,
            })
        })
        .collect();
    Ok(Json(json!({
        "group_id": id,
        "state": g.group_state.to_string(),
        "group_epoch": g.group_epoch,
        "members": members,
        "partitions": partitions_json(&s.broker, &id),
    })))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The share-group families of `/metrics` (text exposition format).
pub fn prometheus_text(b: &Broker) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let groups = b.shares.list();
    let _ = writeln!(
        o,
        "# HELP runnel_share_group_members Members of a share group this broker coordinates."
    );
    let _ = writeln!(o, "# TYPE runnel_share_group_members gauge");
    for (id, _) in &groups {
        let n = b.shares.describe(id).map_or(0, |v| v.members.len());
        let _ = writeln!(
            o,
            "runnel_share_group_members{{group=\"{}\"}} {n}",
            escape(id)
        );
    }
    let families = [
        (
            "runnel_share_partition_start_offset",
            "The share-partition start offset (SPSO).",
        ),
        (
            "runnel_share_partition_in_flight_records",
            "Records between the share-partition start and end offsets.",
        ),
        (
            "runnel_share_partition_acquired_records",
            "Records acquired by a share consumer and not yet acknowledged.",
        ),
    ];
    let mut rows = Vec::new();
    for id in b.shares.group_ids_with_partitions() {
        for ((tid, p), s) in b.shares.partitions_of(&id) {
            let topic = b
                .topics
                .get_by_id(tid)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            rows.push((id.clone(), topic, p, s));
        }
    }
    for (i, (name, help)) in families.iter().enumerate() {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (g, topic, p, s) in &rows {
            let v = [s.start_offset, s.in_flight, s.acquired][i];
            let _ = writeln!(
                o,
                "{name}{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {v}",
                escape(g),
                escape(topic)
            );
        }
    }
    o
}
