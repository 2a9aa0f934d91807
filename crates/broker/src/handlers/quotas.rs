//! DescribeClientQuotas and AlterClientQuotas (what `kafka-configs --entity-type
//! users/clients` and the admin clients call). They need DESCRIBE_CONFIGS /
//! ALTER_CONFIGS on the CLUSTER. The quotas themselves live in `crate::server::quota`.

use std::sync::Arc;

use runnel_protocol::kp::messages::alter_client_quotas_response::{
    EntityData as AlterEntity, EntryData as AlterEntry,
};
use runnel_protocol::kp::messages::describe_client_quotas_request::ComponentData;
use runnel_protocol::kp::messages::describe_client_quotas_response::{
    EntityData, EntryData, ValueData,
};
use runnel_protocol::kp::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{ready, str_bytes, ResponseFuture};
use crate::authz::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::authz::Ctx;
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::server::quota::{self, Entity};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

fn invalid(m: impl Into<String>) -> BrokerError {
    BrokerError::new(ErrorCode::InvalidRequest, m)
}

/// Whether `entity` passes the filter (Kafka's DescribeClientQuotas matching): every
/// component names a type the entity has, with the name it asks for; `strict` also
/// wants no other type in the entity.
fn matches(entity: &Entity, components: &[ComponentData], strict: bool) -> bool {
    let each = components.iter().all(|c| {
        entity.iter().any(|(t, name)| {
            t.as_str() == c.entity_type.as_str()
                && match c.match_type {
                    MATCH_EXACT => name.as_deref() == c._match.as_deref(),
                    MATCH_DEFAULT => name.is_none(),
                    _ => name.is_some(),
                }
        })
    });
    each && (!strict || entity.len() == components.len())
}

fn check_filter(components: &[ComponentData]) -> Result<(), BrokerError> {
    let mut seen = std::collections::BTreeSet::new();
    for c in components {
        if !seen.insert(c.entity_type.as_str()) {
            return Err(invalid(format!(
                "entity type '{}' appears twice in the filter",
                c.entity_type.as_str()
            )));
        }
        match c.match_type {
            MATCH_EXACT if c._match.is_none() => {
                return Err(invalid("an exact match needs a name"))
            }
            MATCH_EXACT | MATCH_DEFAULT | MATCH_SPECIFIED => {}
            other => return Err(invalid(format!("unknown match type {other}"))),
        }
    }
    Ok(())
}

pub fn describe(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: DescribeClientQuotasRequest = decode_body(&req.body, req.api_version)?;
    let outcome = az
        .require(
            Operation::DescribeConfigs,
            ResourceType::Cluster,
            CLUSTER_NAME,
        )
        .and_then(|()| check_filter(&body.components));
    let response = match outcome {
        Err(e) => DescribeClientQuotasResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message))),
        Ok(()) => {
            let entries = broker
                .quotas
                .all()
                .into_iter()
                .filter(|(entity, _)| matches(entity, &body.components, body.strict))
                .map(|(entity, values)| {
                    EntryData::default()
                        .with_entity(
                            entity
                                .iter()
                                .map(|(t, n)| {
                                    EntityData::default()
                                        .with_entity_type(str_bytes(t))
                                        .with_entity_name(n.as_deref().map(str_bytes))
                                })
                                .collect(),
                        )
                        .with_values(
                            values
                                .iter()
                                .map(|(k, v)| {
                                    ValueData::default().with_key(str_bytes(k)).with_value(*v)
                                })
                                .collect(),
                        )
                })
                .collect();
            DescribeClientQuotasResponse::default()
                .with_entries(Some(entries))
                .with_error_message(None)
        }
    };
    ready(req, &response)
}

type Change = (Entity, quota::QuotaOps);

pub fn alter(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &Ctx,
) -> Result<ResponseFuture, DecodeError> {
    let body: AlterClientQuotasRequest = decode_body(&req.body, req.api_version)?;
    let allowed = az.require(Operation::AlterConfigs, ResourceType::Cluster, CLUSTER_NAME);
    let parsed: Vec<Result<Change, BrokerError>> = body
        .entries
        .iter()
        .map(|e| {
            allowed.clone()?;
            let entity = quota::validate_entity(
                e.entity
                    .iter()
                    .map(|x| {
                        (
                            x.entity_type.to_string(),
                            x.entity_name.as_ref().map(|n| n.to_string()),
                        )
                    })
                    .collect(),
            )?;
            let ops = e
                .ops
                .iter()
                .map(|op| {
                    if op.remove {
                        return Ok((op.key.to_string(), None));
                    }
                    quota::validate_value(&op.key, op.value)?;
                    Ok((op.key.to_string(), Some(op.value)))
                })
                .collect::<Result<Vec<_>, BrokerError>>()?;
            Ok((entity, ops))
        })
        .collect();
    let valid: Vec<Change> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
    let stored = if body.validate_only || valid.is_empty() {
        Ok(())
    } else {
        broker.quotas.alter(broker, &valid)
    };
    let entries = body
        .entries
        .iter()
        .zip(parsed)
        .map(|(e, r)| {
            let entity = e
                .entity
                .iter()
                .map(|x| {
                    AlterEntity::default()
                        .with_entity_type(x.entity_type.clone())
                        .with_entity_name(x.entity_name.clone())
                })
                .collect();
            let error = r.err().or_else(|| stored.clone().err());
            let entry = AlterEntry::default()
                .with_entity(entity)
                .with_error_message(None);
            match error {
                None => entry,
                Some(e) => entry
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    ready(
        req,
        &AlterClientQuotasResponse::default().with_entries(entries),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(t: &str, match_type: i8, name: Option<&str>) -> ComponentData {
        ComponentData::default()
            .with_entity_type(str_bytes(t))
            .with_match_type(match_type)
            .with_match(name.map(str_bytes))
    }

    #[test]
    fn filters_match_as_kafka() {
        let user_alice: Entity = vec![("user".into(), Some("alice".into()))];
        let alice_c1: Entity = vec![
            ("client-id".into(), Some("c1".into())),
            ("user".into(), Some("alice".into())),
        ];
        let default_user: Entity = vec![("user".into(), None)];
        let exact = [component("user", MATCH_EXACT, Some("alice"))];
        assert!(matches(&user_alice, &exact, true));
        assert!(!matches(&alice_c1, &exact, true));
        assert!(matches(&alice_c1, &exact, false));
        assert!(!matches(&default_user, &exact, false));
        let default = [component("user", MATCH_DEFAULT, None)];
        assert!(matches(&default_user, &default, true));
        assert!(!matches(&user_alice, &default, false));
        let specified = [component("user", MATCH_SPECIFIED, None)];
        assert!(matches(&user_alice, &specified, false));
        assert!(!matches(&default_user, &specified, false));
        assert!(matches(&alice_c1, &[], false));
        assert!(check_filter(&[component("user", MATCH_EXACT, None)]).is_err());
        assert!(check_filter(&[exact[0].clone(), default[0].clone()]).is_err());
    }
}
