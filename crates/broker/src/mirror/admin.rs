//! The links admin API. Over Kafka (what `runnel links` uses, through any broker, in
//! both modes) it rides on the config APIs with resource type `RESOURCE_CLUSTER_LINK`:
//!
//! - DescribeConfigs, name empty: one entry per link, its value the link's summary as
//!   JSON; name a link: its configs, and the read-only entry `runnel.link.status` whose
//!   value is the JSON of `describe` (state, mirror topics, lag per partition).
//! - IncrementalAlterConfigs on a link: SET `runnel.link.action` to `create`, `update`,
//!   `promote` or `delete`; SET/DELETE any other key changes the link's configs (create,
//!   update); `runnel.link.promote.topic` names the one topic to promote (all when absent).
//!
//! The HTTP admin API serves the same JSON at `/v1/links` and `/v1/links/{name}`.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_client::security::is_sensitive;
use runnel_client::{Client, OffsetSpec};
use runnel_protocol::kp::messages::describe_configs_response::DescribeConfigsResourceResult;
use runnel_protocol::kp::protocol::StrBytes;
use serde_json::{json, Value};

use super::store::{self, LinkDef, MirrorState, Settings};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

pub const ACTION: &str = "runnel.link.action";
pub const PROMOTE_TOPIC: &str = "runnel.link.promote.topic";
pub const STATUS: &str = "runnel.link.status";

/// How long a describe waits for the source before calling it unavailable.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

fn not_found(name: &str) -> BrokerError {
    // Kafka's RESOURCE_NOT_FOUND (91) is not in our table; UNKNOWN_TOPIC_OR_PARTITION
    // would mislead, so INVALID_REQUEST with a message naming the link.
    BrokerError::new(
        ErrorCode::InvalidRequest,
        format!("cluster link '{name}' does not exist"),
    )
}

fn link(broker: &Broker, name: &str) -> Result<LinkDef, BrokerError> {
    broker.links.get(name).ok_or_else(|| not_found(name))
}

/// Creates a link: the configs are validated whole (INVALID_CONFIG names the key).
pub async fn create(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<(), BrokerError> {
    store::validate_name(name)?;
    if broker.links.get(name).is_some() {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("cluster link '{name}' already exists"),
        ));
    }
    Settings::parse(&configs)?;
    store::save(broker, vec![store::link_record(name, Some(&configs))]).await?;
    tracing::info!(
        link = name,
        source = configs
            .get(store::BOOTSTRAP)
            .map(String::as_str)
            .unwrap_or(""),
        "cluster link created"
    );
    Ok(())
}

/// Changes a link's configs (None removes a key back to its default).
pub async fn update(
    broker: &Broker,
    name: &str,
    changes: Vec<(String, Option<String>)>,
) -> Result<(), BrokerError> {
    let mut configs = link(broker, name)?.configs;
    for (k, v) in changes {
        match v {
            Some(v) => configs.insert(k, v),
            None => configs.remove(&k),
        };
    }
    Settings::parse(&configs)?;
    store::save(broker, vec![store::link_record(name, Some(&configs))]).await?;
    tracing::info!(link = name, "cluster link configs changed");
    Ok(())
}

/// Stops mirroring `topic` (or every mirror topic of the link) and makes it writable.
/// Returns the topics promoted.
pub async fn promote(
    broker: &Broker,
    name: &str,
    topic: Option<&str>,
) -> Result<Vec<String>, BrokerError> {
    let def = link(broker, name)?;
    let topics: Vec<String> = match topic {
        Some(t) => match def.mirrors.get(t) {
            Some(MirrorState::Active) => vec![t.to_string()],
            Some(MirrorState::Promoted) => return Ok(Vec::new()),
            None => {
                return Err(BrokerError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic '{t}' is not a mirror topic of cluster link '{name}'"),
                ))
            }
        },
        None => def
            .mirrors
            .iter()
            .filter(|(_, s)| **s == MirrorState::Active)
            .map(|(t, _)| t.clone())
            .collect(),
    };
    // A controlled promote: catch up and sync offsets first. A source that cannot be
    // reached (the disaster case) does not stop a failover: it promotes what is here.
    let bound = Duration::from_secs(20);
    match tokio::time::timeout(bound, super::manager::final_sync(broker, &def, &topics)).await {
        Ok(Ok(())) => {
            tracing::info!(link = name, topics = ?topics, "mirror caught up with the source and group offsets synced; promoting")
        }
        Ok(Err(error)) => {
            tracing::warn!(link = name, topics = ?topics, %error, "promoting without a final catch-up and offset sync")
        }
        Err(_) => {
            tracing::warn!(link = name, topics = ?topics, "no final catch-up within {bound:?}; promoting what is mirrored")
        }
    }
    let changes = topics
        .iter()
        .map(|t| store::topic_record(name, t, Some(MirrorState::Promoted)))
        .collect();
    store::save(broker, changes).await?;
    tracing::info!(link = name, topics = ?topics, "mirror topics promoted: mirroring stopped, writable");
    Ok(topics)
}

/// Deletes a link: its mirror topics are promoted first (they stay, writable).
pub async fn delete(broker: &Broker, name: &str) -> Result<(), BrokerError> {
    let def = link(broker, name)?;
    promote(broker, name, None).await?;
    let mut changes: Vec<store::Change> = def
        .mirrors
        .keys()
        .map(|t| store::topic_record(name, t, None))
        .chain(def.acls.iter().map(|a| store::acl_record(name, a, false)))
        .collect();
    changes.push(store::link_record(name, None));
    store::save(broker, changes).await?;
    tracing::info!(link = name, "cluster link deleted");
    Ok(())
}

/// One line of `links list`.
pub fn summary(broker: &Broker, def: &LinkDef) -> Value {
    let status = broker.links.link_status(&def.name);
    json!({
        "name": def.name,
        "source": def.configs.get(store::BOOTSTRAP),
        "mirror_topics": def.mirrors.values().filter(|s| **s == MirrorState::Active).count(),
        "promoted_topics": def.mirrors.values().filter(|s| **s == MirrorState::Promoted).count(),
        "state": status.as_ref().map(|s| s.state),
    })
}

pub fn list(broker: &Broker) -> Value {
    Value::Array(
        broker
            .links
            .all()
            .iter()
            .map(|d| summary(broker, d))
            .collect(),
    )
}

/// A link's state and, per mirror partition, the mirrored offset (this cluster's high
/// watermark), the source's end and the lag between them, looked up now on both
/// clusters (so any broker answers for the whole link).
pub async fn describe(broker: &Broker, name: &str) -> Result<Value, BrokerError> {
    let def = link(broker, name)?;
    let source = match tokio::time::timeout(SOURCE_TIMEOUT, broker.links.source_client(&def)).await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no answer from the source within {SOURCE_TIMEOUT:?}"
        )),
    };
    let target = super::manager::target_client(broker).await.ok();
    let mut topics = Vec::new();
    for (topic, state) in &def.mirrors {
        let count = broker
            .topics
            .get(topic)
            .map_or(0, |t| t.partitions.len() as i32);
        let ids: Vec<i32> = (0..count).collect();
        let ends = |c: Option<Client>| {
            let ids = ids.clone();
            async move {
                let c = c?;
                let listed = tokio::time::timeout(
                    SOURCE_TIMEOUT,
                    c.list_offsets(topic, &ids, OffsetSpec::Latest),
                )
                .await
                .ok()?
                .ok()?;
                Some(
                    listed
                        .into_iter()
                        .map(|o| (o.partition, o.offset))
                        .collect::<BTreeMap<_, _>>(),
                )
            }
        };
        let mirrored = ends(target.clone()).await.unwrap_or_default();
        let source_ends = ends(source.as_ref().ok().cloned())
            .await
            .unwrap_or_default();
        let partitions: Vec<Value> = ids
            .iter()
            .map(|p| {
                let local = broker.links.partition_status(topic, *p);
                let m = mirrored.get(p).copied();
                let s = source_ends.get(p).copied();
                let pstate = match (state, &source, &local) {
                    (MirrorState::Promoted, _, _) => "PROMOTED",
                    (_, _, Some(l)) => l.state,
                    (_, Err(_), _) => "SOURCE_UNAVAILABLE",
                    _ => "MIRRORING",
                };
                json!({
                    "partition": p,
                    "state": pstate,
                    "mirrored_offset": m,
                    "source_end": s,
                    "lag": m.zip(s).map(|(m, s)| (s - m).max(0)),
                    "error": local.and_then(|l| l.error),
                })
            })
            .collect();
        topics.push(json!({"topic": topic, "state": state.name(), "partitions": partitions}));
    }
    let status = broker.links.link_status(name);
    Ok(json!({
        "name": def.name,
        "configs": shown_configs(&def.configs),
        "state": if source.is_ok() { "ACTIVE" } else { "SOURCE_UNAVAILABLE" },
        "error": source.err(),
        "collisions": status.as_ref().map(|s| s.collisions.clone()).unwrap_or_default(),
        "groups_skipped_active": status.as_ref().map(|s| s.groups_skipped_active.clone()).unwrap_or_default(),
        "source_missing": status.as_ref().map(|s| s.source_missing.clone()).unwrap_or_default(),
        // The ACLs the link created here (recorded cluster-wide, so any broker knows).
        "acls_synced": def.acls.len(),
        "acl_sync_error": status.as_ref().and_then(|s| s.acl_sync_error.clone()),
        "topics": topics,
    }))
}

/// A link's configs as describe shows them: secrets (`sasl.jaas.config`, passwords,
/// keys; Kafka's PASSWORD-type keys) as null, as Kafka's DescribeConfigs does.
fn shown_configs(configs: &BTreeMap<String, String>) -> BTreeMap<&str, Option<&str>> {
    configs
        .iter()
        .map(|(k, v)| (k.as_str(), (!is_sensitive(k)).then_some(v.as_str())))
        .collect()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn entry(name: &str, value: Option<&str>, read_only: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
        .with_config_source(1)
        .with_read_only(read_only)
        .with_is_sensitive(is_sensitive(name))
}

/// DescribeConfigs on `RESOURCE_CLUSTER_LINK` (see the module comment).
pub fn describe_configs(
    broker: &Broker,
    name: &str,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    if name.is_empty() {
        return Ok(broker
            .links
            .all()
            .iter()
            .map(|d| entry(&d.name, Some(&summary(broker, d).to_string()), true))
            .collect());
    }
    let status = block_on(describe(broker, name))?;
    let def = link(broker, name)?;
    let mut entries: Vec<_> = shown_configs(&def.configs)
        .into_iter()
        .map(|(k, v)| entry(k, v, false))
        .collect();
    entries.push(entry(STATUS, Some(&status.to_string()), true));
    Ok(entries)
}

/// IncrementalAlterConfigs on `RESOURCE_CLUSTER_LINK` (see the module comment); `ops`
/// are (operation, key, value) with Kafka's operation codes (0 SET, 1 DELETE).
pub fn alter_configs(
    broker: &Broker,
    name: &str,
    ops: &[(i8, String, Option<String>)],
    validate_only: bool,
) -> Result<(), BrokerError> {
    let mut action = None;
    let mut topic = None;
    let mut changes = Vec::new();
    for (op, k, v) in ops {
        match (*op, k.as_str()) {
            (0, ACTION) => action = v.clone(),
            (0, PROMOTE_TOPIC) => topic = v.clone(),
            (0, _) => changes.push((k.clone(), Some(v.clone().unwrap_or_default()))),
            (1, _) => changes.push((k.clone(), None)),
            (op, _) => {
                return Err(BrokerError::new(
                    ErrorCode::InvalidConfig,
                    format!("operation {op} is not valid for cluster link config '{k}'"),
                ))
            }
        }
    }
    let action = action.unwrap_or_else(|| "update".into());
    if validate_only {
        return match action.as_str() {
            "create" => Settings::parse(
                &changes
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect(),
            )
            .map(|_| ()),
            _ => link(broker, name).map(|_| ()),
        };
    }
    block_on(async {
        match action.as_str() {
            "create" => {
                let configs = changes
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect();
                create(broker, name, configs).await
            }
            "update" => update(broker, name, changes).await,
            "promote" => promote(broker, name, topic.as_deref()).await.map(|_| ()),
            "delete" => delete(broker, name).await,
            other => Err(BrokerError::new(
                ErrorCode::InvalidConfig,
                format!("unknown {ACTION} '{other}': expected create, update, promote or delete"),
            )),
        }
    })
}

/// `GET /v1/links[?name=LINK]`: what `describe` says of every link (or of one; 404 for
/// an unknown one, 400 for any other query parameter).
pub async fn http_links(
    axum::extract::State(s): axum::extract::State<crate::http::HttpState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<axum::Json<Value>, crate::http::ApiError> {
    let mut only = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("name", v)) if !v.is_empty() => only = Some(v.to_string()),
            _ => {
                return Err(crate::http::ApiError::bad_request(format!(
                    "unknown query parameter '{pair}': this endpoint takes name=LINK"
                )))
            }
        }
    }
    let names: Vec<String> = match only {
        Some(n) if s.broker.links.get(&n).is_none() => {
            return Err(crate::http::ApiError::not_found(format!(
                "cluster link '{n}' does not exist"
            )))
        }
        Some(n) => vec![n],
        None => s.broker.links.all().into_iter().map(|d| d.name).collect(),
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        // A link deleted meanwhile is left out.
        if let Ok(d) = describe(&s.broker, &n).await {
            out.push(d);
        }
    }
    Ok(axum::Json(json!({ "links": out })))
}
