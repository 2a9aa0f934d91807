//! ACLs over HTTP, for the console: list (DescribeAcls), create (CreateAcls) and delete
//! (DeleteAcls), each a Kafka request run through the Kafka handlers ([`super::kafka`]),
//! so the authorizer decides exactly as it does for `kafka-acls.sh`: DESCRIBE on the
//! cluster to list, ALTER to change, CLUSTER_AUTHORIZATION_FAILED (403) for a principal
//! that may not. Without an authorizer the list is empty with `"authorizer": false`,
//! and a change answers SECURITY_DISABLED (400).
//!
//! Names on the wire are Kafka's (`TOPIC`, `LITERAL`, `READ`, `ALLOW`), parsed with
//! `authz::acl`'s tables (case-insensitive, `-` or `_`).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use runnel_protocol::kp::messages::create_acls_request::AclCreation;
use runnel_protocol::kp::messages::delete_acls_request::DeleteAclsFilter;
use runnel_protocol::kp::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::actions::{body, text, PEER};
use super::api::{query, MaybeQuery};
use super::kafka::{call, check, error_name};
use super::{ApiError, HttpState};
use crate::authz::acl::{Operation, PatternType, Permission, ResourceType};

type ApiResult<T> = Result<T, ApiError>;

/// The highest version of the three ACL APIs (all served 1..=3).
const VERSION: i16 = 3;

/// A Kafka name parsed with `parse`, or 400 naming the field and what it takes.
fn coded<T: Copy + std::fmt::Display>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    all: &[T],
) -> ApiResult<T> {
    parse(value).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(|v| v.to_string()).collect();
        ApiError::bad_request(format!(
            "{field} '{value}' is not one of {}",
            names.join(", ")
        ))
    })
}

fn name_of<T: Copy + std::fmt::Display>(code: i8, from: fn(i8) -> Option<T>) -> String {
    from(code).map_or_else(|| format!("UNKNOWN({code})"), |v| v.to_string())
}

/// One ACL binding as JSON (the shape `create` takes and `list` answers).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    resource_type: String,
    resource_name: String,
    #[serde(default = "literal")]
    pattern_type: String,
    principal: String,
    #[serde(default = "any_host")]
    host: String,
    operation: String,
    permission: String,
}

fn literal() -> String {
    "LITERAL".into()
}

fn any_host() -> String {
    "*".into()
}

/// The wire codes of a binding: (resource type, pattern type, operation, permission).
fn codes(b: &Binding) -> ApiResult<(i8, i8, i8, i8)> {
    Ok((
        coded(
            "resource_type",
            &b.resource_type,
            ResourceType::parse,
            ResourceType::ALL_VALUES,
        )?
        .code(),
        coded(
            "pattern_type",
            &b.pattern_type,
            PatternType::parse,
            PatternType::ALL_VALUES,
        )?
        .code(),
        coded(
            "operation",
            &b.operation,
            Operation::parse,
            Operation::ALL_VALUES,
        )?
        .code(),
        coded(
            "permission",
            &b.permission,
            Permission::parse,
            Permission::ALL_VALUES,
        )?
        .code(),
    ))
}

/// GET /v1/acls?principal=&resource_type=&resource_name=&pattern_type=: DescribeAcls with
/// Kafka's filter semantics (an absent field matches any; `pattern_type` defaults to ANY).
pub async fn list(State(s): State<HttpState>, q: MaybeQuery) -> ApiResult<Json<Value>> {
    let q = query(
        q,
        &[
            "principal",
            "resource_type",
            "resource_name",
            "pattern_type",
        ],
    )?;
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let rt = match get("resource_type") {
        Some(v) => coded(
            "resource_type",
            v,
            ResourceType::parse,
            ResourceType::ALL_VALUES,
        )?,
        None => ResourceType::Any,
    };
    let pt = match get("pattern_type") {
        Some(v) => coded(
            "pattern_type",
            v,
            PatternType::parse,
            PatternType::ALL_VALUES,
        )?,
        None => PatternType::Any,
    };
    let req = DescribeAclsRequest::default()
        .with_resource_type_filter(rt.code())
        .with_resource_name_filter(get("resource_name").map(text))
        .with_pattern_type_filter(pt.code())
        .with_principal_filter(get("principal").map(text))
        .with_host_filter(None)
        .with_operation(Operation::Any.code())
        .with_permission_type(Permission::Any.code());
    let resp: DescribeAclsResponse =
        call(&s.broker, PEER, ApiKey::DescribeAcls, VERSION, &req).await?;
    // No authorizer: nothing is checked and there are no ACLs to list (a change still
    // answers SECURITY_DISABLED, as Kafka's does).
    if error_name(resp.error_code) == "SECURITY_DISABLED" {
        return Ok(Json(json!({ "authorizer": false, "acls": [] })));
    }
    check(resp.error_code, resp.error_message.as_ref(), "list ACLs")?;
    let mut acls = Vec::new();
    for r in &resp.resources {
        for a in &r.acls {
            acls.push(json!({
                "resource_type": name_of(r.resource_type, ResourceType::from_code),
                "resource_name": r.resource_name.to_string(),
                "pattern_type": name_of(r.pattern_type, PatternType::from_code),
                "principal": a.principal.to_string(),
                "host": a.host.to_string(),
                "operation": name_of(a.operation, Operation::from_code),
                "permission": name_of(a.permission_type, Permission::from_code),
            }));
        }
    }
    Ok(Json(json!({ "authorizer": true, "acls": acls })))
}

/// POST /v1/acls: CreateAcls for one binding.
pub async fn create(
    State(s): State<HttpState>,
    q: MaybeQuery,
    b: Result<Json<Binding>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    query(q, &[])?;
    let b = body(b)?;
    let (rt, pt, op, perm) = codes(&b)?;
    let creation = AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(text(&b.resource_name))
        .with_resource_pattern_type(pt)
        .with_principal(text(&b.principal))
        .with_host(text(&b.host))
        .with_operation(op)
        .with_permission_type(perm);
    let req = CreateAclsRequest::default().with_creations(vec![creation]);
    let resp: CreateAclsResponse = call(&s.broker, PEER, ApiKey::CreateAcls, VERSION, &req).await?;
    let r = resp
        .results
        .first()
        .ok_or_else(|| ApiError::internal("CreateAcls answered no result"))?;
    check(r.error_code, r.error_message.as_ref(), "create ACL")?;
    Ok((StatusCode::CREATED, Json(json!({ "created": 1 }))))
}

/// DELETE /v1/acls with one binding as the body: DeleteAcls with that exact binding as
/// its filter (so it removes that ACL and nothing else); 404 when none matched.
pub async fn delete(
    State(s): State<HttpState>,
    q: MaybeQuery,
    b: Result<Json<Binding>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    query(q, &[])?;
    let b = body(b)?;
    let (rt, pt, op, perm) = codes(&b)?;
    if [rt, pt, op, perm].contains(&1) || pt == PatternType::Match.code() {
        return Err(ApiError::bad_request(
            "delete names one ACL: ANY and MATCH are filters, not values",
        ));
    }
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(rt)
        .with_resource_name_filter(Some(text(&b.resource_name)))
        .with_pattern_type_filter(pt)
        .with_principal_filter(Some(text(&b.principal)))
        .with_host_filter(Some(text(&b.host)))
        .with_operation(op)
        .with_permission_type(perm);
    let req = DeleteAclsRequest::default().with_filters(vec![filter]);
    let resp: DeleteAclsResponse = call(&s.broker, PEER, ApiKey::DeleteAcls, VERSION, &req).await?;
    let r = resp
        .filter_results
        .first()
        .ok_or_else(|| ApiError::internal("DeleteAcls answered no result"))?;
    check(r.error_code, r.error_message.as_ref(), "delete ACL")?;
    if r.matching_acls.is_empty() {
        return Err(ApiError::not_found("no such ACL"));
    }
    Ok(Json(json!({ "deleted": r.matching_acls.len() })))
}
