//! CreateAcls, DescribeAcls, DeleteAcls (what kafka-acls.sh and the admin clients call).
//! They need ALTER (create, delete) or DESCRIBE (describe) on the CLUSTER, and answer
//! SECURITY_DISABLED when no authorizer is configured, as Kafka does.

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_protocol::kp::messages::create_acls_response::AclCreationResult;
use runnel_protocol::kp::messages::delete_acls_request::DeleteAclsFilter;
use runnel_protocol::kp::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use runnel_protocol::kp::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use runnel_protocol::kp::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, str_bytes, ResponseFuture};
use crate::authz::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use crate::authz::{denied_error, Ctx};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

fn invalid(message: impl Into<String>) -> BrokerError {
    BrokerError::new(ErrorCode::InvalidRequest, message)
}

/// A wire code parsed, or INVALID_REQUEST naming the field.
fn code<T>(what: &str, raw: i8, parse: fn(i8) -> Option<T>) -> Result<T, BrokerError> {
    parse(raw).ok_or_else(|| invalid(format!("unknown {what} code {raw}")))
}

/// The check every ACL API makes first: an authorizer, and `op` on the cluster.
fn gate(az: &Ctx, op: Operation) -> Result<(), BrokerError> {
    if !az.enabled() {
        return Err(BrokerError::new(
            ErrorCode::SecurityDisabled,
            "no authorizer is configured (set authorizer.class.name)",
        ));
    }
    if !az.cluster(op) {
        return Err(denied_error(
            ResourceType::Cluster,
            op,
            crate::authz::acl::CLUSTER_NAME,
        ));
    }
    Ok(())
}

pub fn create(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: CreateAclsRequest = decode_body(&req.body, req.api_version)?;
    let parsed: Vec<Result<AclBinding, BrokerError>> = body
        .creations
        .iter()
        .map(|c| {
            let acl = AclBinding {
                resource_type: code("resource type", c.resource_type, ResourceType::from_code)?,
                name: c.resource_name.to_string(),
                pattern: code(
                    "pattern type",
                    c.resource_pattern_type,
                    PatternType::from_code,
                )?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: code("operation", c.operation, Operation::from_code)?,
                permission: code("permission type", c.permission_type, Permission::from_code)?,
            };
            acl.validate().map_err(invalid)?;
            Ok(acl)
        })
        .collect();
    let outcome = gate(az, Operation::Alter).and_then(|()| {
        let valid: Vec<AclBinding> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
        broker.authz.create_acls(broker, &valid)
    });
    let results = parsed
        .into_iter()
        .map(|r| {
            let error = match (&outcome, &r) {
                (Err(e), _) | (Ok(()), Err(e)) => Some(e.clone()),
                (Ok(()), Ok(_)) => None,
            };
            match error {
                None => AclCreationResult::default().with_error_message(None),
                Some(e) => AclCreationResult::default()
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    ready(req, &CreateAclsResponse::default().with_results(results))
}

/// A DescribeAcls or DeleteAcls filter from its wire fields.
fn filter(
    resource_type: i8,
    name: Option<&str>,
    pattern: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, BrokerError> {
    Ok(AclFilter {
        resource_type: code("resource type", resource_type, ResourceType::from_code)?,
        name: name.map(String::from),
        pattern: code("pattern type", pattern, PatternType::from_code)?,
        principal: principal.map(String::from),
        host: host.map(String::from),
        operation: code("operation", operation, Operation::from_code)?,
        permission: code("permission type", permission, Permission::from_code)?,
    })
}

pub fn describe(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let b: DescribeAclsRequest = decode_body(&req.body, req.api_version)?;
    let outcome = gate(az, Operation::Describe).and_then(|()| {
        filter(
            b.resource_type_filter,
            b.resource_name_filter.as_deref(),
            b.pattern_type_filter,
            b.principal_filter.as_deref(),
            b.host_filter.as_deref(),
            b.operation,
            b.permission_type,
        )
    });
    let response = match outcome {
        Err(e) => DescribeAclsResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message))),
        Ok(f) => {
            let mut by_resource: BTreeMap<
                (ResourceType, String, PatternType),
                Vec<AclDescription>,
            > = BTreeMap::new();
            for a in broker.authz.acls().iter().filter(|a| f.matches(a)) {
                by_resource
                    .entry((a.resource_type, a.name.clone(), a.pattern))
                    .or_default()
                    .push(
                        AclDescription::default()
                            .with_principal(str_bytes(&a.principal))
                            .with_host(str_bytes(&a.host))
                            .with_operation(a.operation.code())
                            .with_permission_type(a.permission.code()),
                    );
            }
            let resources = by_resource
                .into_iter()
                .map(|((rt, name, pattern), acls)| {
                    DescribeAclsResource::default()
                        .with_resource_type(rt.code())
                        .with_resource_name(str_bytes(&name))
                        .with_pattern_type(pattern.code())
                        .with_acls(acls)
                })
                .collect();
            DescribeAclsResponse::default()
                .with_resources(resources)
                .with_error_message(None)
        }
    };
    ready(req, &response)
}

fn delete_filter(f: &DeleteAclsFilter) -> Result<AclFilter, BrokerError> {
    filter(
        f.resource_type_filter,
        f.resource_name_filter.as_deref(),
        f.pattern_type_filter,
        f.principal_filter.as_deref(),
        f.host_filter.as_deref(),
        f.operation,
        f.permission_type,
    )
}

pub fn delete(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DeleteAclsRequest = decode_body(&req.body, req.api_version)?;
    let parsed: Vec<Result<AclFilter, BrokerError>> =
        body.filters.iter().map(delete_filter).collect();
    let outcome = gate(az, Operation::Alter).and_then(|()| {
        let valid: Vec<AclFilter> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
        broker.authz.delete_acls(broker, &valid)
    });
    let mut matched = match &outcome {
        Ok(m) => m.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = parsed
        .into_iter()
        .map(|r| {
            let error = match (&outcome, &r) {
                (Err(e), _) | (Ok(_), Err(e)) => e.clone(),
                (Ok(_), Ok(_)) => {
                    let acls = matched.next().unwrap_or_default();
                    return DeleteAclsFilterResult::default()
                        .with_error_message(None)
                        .with_matching_acls(acls.iter().map(matching_acl).collect());
                }
            };
            DeleteAclsFilterResult::default()
                .with_error_code(error.code.code())
                .with_error_message(Some(str_bytes(&error.message)))
        })
        .collect();
    ready(
        req,
        &DeleteAclsResponse::default().with_filter_results(results),
    )
}

fn matching_acl(a: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_error_message(None)
        .with_resource_type(a.resource_type.code())
        .with_resource_name(str_bytes(&a.name))
        .with_pattern_type(a.pattern.code())
        .with_principal(str_bytes(&a.principal))
        .with_host(str_bytes(&a.host))
        .with_operation(a.operation.code())
        .with_permission_type(a.permission.code())
}
