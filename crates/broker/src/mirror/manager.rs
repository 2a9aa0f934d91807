//! The link manager: on one broker (a single node itself; in a cluster the active
//! controller, so exactly one broker at a time does it and another takes over when it
//! dies), for each link:
//!
//! - every `metadata.max.age.ms`: the source's topics matching the link's filter become
//!   mirror topics here (same name, same partition count; a local topic of that name
//!   that is not this link's mirror is a collision, reported and left alone), and
//!   partitions added on the source are added here;
//! - every `topic.config.sync.ms`: each mirror topic's overrides are set to the source's,
//!   less `LOCAL_KEYS`, which stay as set here;
//! - every `consumer.offset.sync.ms`: the committed offsets of the source's groups
//!   matching the group filter are committed here for mirror topics, never moving a
//!   group back, never beyond what is mirrored (so a group failing over skips nothing),
//!   and never for a group with members here;
//! - with `acl.sync.enable`, every `acl.sync.ms`: the source's ACLs matching
//!   `acl.filters` are created here, and those this link created are deleted once the
//!   source no longer has them (`sync_acls`).
//!
//! Changes here go through the broker's own Kafka listener with `runnel-client`, so they
//! pass the same handlers (and, in a cluster, reach the controller and the group
//! coordinators) as any admin's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::{Client, ConfigResource, NewTopic, OffsetSpec};

use super::store::{self, LinkDef, MirrorState, Settings};
use super::LinkStatus;
use crate::authz::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use crate::broker::Broker;

/// Topic configs that stay local to the mirror (Confluent's cluster linking keeps these
/// out of the sync too): durability and placement are this cluster's choice.
pub const LOCAL_KEYS: &[&str] = &[
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
    "preallocate",
];

const TICK: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Timers {
    metadata: Option<Instant>,
    configs: Option<Instant>,
    offsets: Option<Instant>,
    acls: Option<Instant>,
    retry_at: Option<Instant>,
    attempt: u32,
    state: &'static str,
    acl_state: &'static str,
}

fn due(last: &mut Option<Instant>, every_ms: u64) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(every_ms)) {
        return false;
    }
    *last = Some(now);
    true
}

fn is_manager(broker: &Broker) -> bool {
    broker.cluster().controller_id_for_clients(broker.node_id()) == broker.node_id()
}

/// A client of this cluster, through the broker's own inter-broker endpoint.
pub async fn target_client(broker: &Broker) -> Result<Client, String> {
    let addr = format!("{}:{}", broker.advertised_host, broker.advertised_port);
    let mut config = runnel_client::ClientConfig::default();
    config.connection.client_id = "runnel-cluster-link-manager".into();
    Client::connect(&addr, config)
        .await
        .map_err(|e| format!("cannot reach this cluster at {addr}: {e}"))
}

pub async fn run(broker: Arc<Broker>) {
    let mut timers: HashMap<String, Timers> = HashMap::new();
    let mut target: Option<Client> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if !is_manager(&broker) {
            timers.clear();
            continue;
        }
        let links = broker.links.all();
        timers.retain(|k, _| links.iter().any(|l| &l.name == k));
        broker
            .links
            .links
            .lock()
            .retain(|k, _| links.iter().any(|l| &l.name == k));
        broker
            .links
            .settings
            .lock()
            .retain(|k, _| links.iter().any(|l| &l.name == k));
        for def in links {
            let t = timers.entry(def.name.clone()).or_default();
            manage(&broker, &def, t, &mut target).await;
        }
    }
}

async fn manage(broker: &Broker, def: &LinkDef, t: &mut Timers, target: &mut Option<Client>) {
    if t.retry_at.is_some_and(|at| Instant::now() < at) {
        return;
    }
    let settings = match broker.links.settings(def) {
        Ok(s) => s,
        Err(e) => {
            set_status(broker, &def.name, |s| s.error = Some(e.message.clone()));
            return;
        }
    };
    let result = async {
        let src = broker.links.source_client(def).await?;
        let tgt = match target {
            Some(c) => c.clone(),
            None => {
                let c = target_client(broker).await?;
                *target = Some(c.clone());
                c
            }
        };
        if due(&mut t.metadata, settings.metadata_max_age_ms) {
            sync_topics(broker, def, &settings, &src, &tgt).await?;
        }
        if due(&mut t.configs, settings.config_sync_ms) {
            sync_configs(broker, def, &src, &tgt).await?;
        }
        if settings.offset_sync && due(&mut t.offsets, settings.offset_sync_ms) {
            sync_offsets(broker, def, &settings, &src, &tgt).await?;
        }
        if settings.acl_sync && due(&mut t.acls, settings.acl_sync_ms) {
            let result = sync_acls(broker, def, &settings, &src).await;
            if let Err(e) = &result {
                if super::changed(&mut t.acl_state, "FAILED") {
                    tracing::warn!(link = %def.name, error = %e, "cluster link cannot sync ACLs");
                }
            } else if super::changed(&mut t.acl_state, "OK") {
                tracing::info!(link = %def.name, "cluster link syncs ACLs");
            }
            set_status(broker, &def.name, |s| s.acl_sync_error = result.err());
        }
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => {
            t.attempt = 0;
            t.retry_at = None;
            if super::changed(&mut t.state, "ACTIVE") {
                tracing::info!(link = %def.name, source = %settings.bootstrap, "cluster link is active");
            }
            set_status(broker, &def.name, |s| {
                s.state = "ACTIVE";
                s.error = None;
            });
        }
        Err(error) => {
            if super::changed(&mut t.state, "SOURCE_UNAVAILABLE") {
                tracing::warn!(link = %def.name, source = %settings.bootstrap, %error, "cluster link cannot reach its source; retrying with backoff");
            }
            set_status(broker, &def.name, |s| {
                s.state = "SOURCE_UNAVAILABLE";
                s.error = Some(error.clone());
            });
            broker.links.drop_client(&def.name).await;
            *target = None;
            t.retry_at = Some(Instant::now() + super::backoff(t.attempt, settings.backoff_max));
            t.attempt = t.attempt.saturating_add(1);
            // Everything is due again once the source is back.
            t.metadata = None;
        }
    }
}

/// acl.sync: the source's ACLs matching the link's filters are created here; an ACL
/// this link created that the source no longer has is deleted here. ACLs made here by
/// anyone else are never touched (one that also exists on the source is not recorded
/// as the link's). What the link created is recorded before it is created and forgotten
/// after it is deleted, so a crash in between never leaves an ACL the link forgets.
/// An error here (e.g. the source has no authorizer: SECURITY_DISABLED) is reported in
/// `describe` (`acl_sync_error`) without stopping the rest of the link.
async fn sync_acls(
    broker: &Broker,
    def: &LinkDef,
    settings: &Settings,
    src: &Client,
) -> Result<(), String> {
    if !broker.authz.enabled() {
        return Err("acl.sync.enable is set but this cluster has no authorizer \
                    (authorizer.class.name): there is nowhere to put the ACLs"
            .into());
    }
    let mut source: BTreeSet<AclBinding> = BTreeSet::new();
    let conn = src
        .bootstrap_connection()
        .await
        .map_err(|e| e.to_string())?;
    for f in &settings.acl_filters {
        source.extend(describe_acls(&conn, f).await?);
    }
    let local: BTreeSet<AclBinding> = broker.authz.acls().iter().cloned().collect();
    let create: Vec<AclBinding> = source.difference(&local).cloned().collect();
    let remove: Vec<AclBinding> = def.acls.difference(&source).cloned().collect();
    if !create.is_empty() {
        store::save(
            broker,
            create
                .iter()
                .map(|a| store::acl_record(&def.name, a, true))
                .collect(),
        )
        .await
        .map_err(|e| e.message)?;
        broker
            .authz
            .create_acls(broker, &create)
            .map_err(|e| e.message)?;
        tracing::info!(link = %def.name, count = create.len(), "cluster link created ACLs from its source");
    }
    if !remove.is_empty() {
        let filters: Vec<AclFilter> = remove.iter().map(exact_filter).collect();
        broker
            .authz
            .delete_acls(broker, &filters)
            .map_err(|e| e.message)?;
        store::save(
            broker,
            remove
                .iter()
                .map(|a| store::acl_record(&def.name, a, false))
                .collect(),
        )
        .await
        .map_err(|e| e.message)?;
        tracing::info!(link = %def.name, count = remove.len(), "cluster link deleted ACLs its source no longer has");
    }
    let mut owned = def.acls.clone();
    owned.extend(create);
    let synced = owned.difference(&remove.into_iter().collect()).count();
    set_status(broker, &def.name, |s| s.acls_synced = synced as u64);
    Ok(())
}

/// The DeleteAcls filter that matches exactly `acl`.
fn exact_filter(acl: &AclBinding) -> AclFilter {
    AclFilter {
        resource_type: acl.resource_type,
        name: Some(acl.name.clone()),
        pattern: acl.pattern,
        principal: Some(acl.principal.clone()),
        host: Some(acl.host.clone()),
        operation: acl.operation,
        permission: acl.permission,
    }
}

/// DescribeAcls on the source; bindings Kafka does not define (a newer source's
/// resource or operation) are skipped.
async fn describe_acls(
    conn: &runnel_client::Connection,
    f: &AclFilter,
) -> Result<Vec<AclBinding>, String> {
    let request = f.describe_request();
    let r = conn
        .send(&request, 3)
        .await
        .map_err(|e| format!("DescribeAcls on the source: {e}"))?;
    runnel_client::Error::check(
        r.error_code,
        || "DescribeAcls on the source".into(),
        r.error_message.as_ref().map(|m| m.to_string()),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for res in &r.resources {
        for a in &res.acls {
            let (Some(resource_type), Some(pattern), Some(operation), Some(permission)) = (
                ResourceType::from_code(res.resource_type),
                PatternType::from_code(res.pattern_type),
                Operation::from_code(a.operation),
                Permission::from_code(a.permission_type),
            ) else {
                continue;
            };
            let acl = AclBinding {
                resource_type,
                name: res.resource_name.to_string(),
                pattern,
                principal: a.principal.to_string(),
                host: a.host.to_string(),
                operation,
                permission,
            };
            if acl.validate().is_ok() {
                out.push(acl);
            }
        }
    }
    Ok(out)
}

fn set_status(broker: &Broker, link: &str, f: impl FnOnce(&mut LinkStatus)) {
    let mut all = broker.links.links.lock();
    f(all.entry(link.to_string()).or_default());
}

/// The source topic's overrides that a mirror takes.
async fn source_configs(src: &Client, topic: &str) -> Result<BTreeMap<String, String>, String> {
    let entries = src
        .describe_configs(&ConfigResource::Topic(topic.to_string()), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .filter(|e| e.is_override() && !LOCAL_KEYS.contains(&e.name.as_str()))
        .filter_map(|e| Some((e.name, e.value?)))
        .collect())
}

async fn sync_topics(
    broker: &Broker,
    def: &LinkDef,
    settings: &Settings,
    src: &Client,
    tgt: &Client,
) -> Result<(), String> {
    let metadata = src.metadata(None, false).await.map_err(|e| e.to_string())?;
    // Mirror topics the source no longer has (deleted there): kept here, reported.
    let missing: Vec<String> = active_mirrors(def)
        .filter(|t| {
            !metadata
                .topics
                .iter()
                .any(|s| &s.name == *t && s.error_code == 0)
        })
        .cloned()
        .collect();
    if !missing.is_empty() {
        tracing::debug!(link = %def.name, topics = ?missing, "mirror topics missing on the source");
    }
    let mut collisions = Vec::new();
    for t in metadata.topics {
        if t.error_code != 0 || t.is_internal || t.name.starts_with("__") {
            continue;
        }
        if !settings.topics.is_match(&t.name) {
            continue;
        }
        let partitions = t.partitions.len() as i32;
        let local = broker.topics.get(&t.name);
        match broker.links.store.owner_of(&t.name) {
            Some((owner, _)) if owner != def.name => {
                collisions.push(t.name.clone());
                continue;
            }
            Some((_, MirrorState::Promoted)) => continue,
            Some((_, MirrorState::Active)) => {}
            None => {
                if !settings.auto_create {
                    continue;
                }
                if local.is_some() {
                    collisions.push(t.name.clone());
                    continue;
                }
                // Recorded before the topic exists: it is read-only from its first moment.
                store::save(
                    broker,
                    vec![store::topic_record(
                        &def.name,
                        &t.name,
                        Some(MirrorState::Active),
                    )],
                )
                .await
                .map_err(|e| format!("cannot record mirror topic {}: {e}", t.name))?;
            }
        }
        match local {
            None => {
                let configs = source_configs(src, &t.name).await?;
                let new = NewTopic {
                    name: t.name.clone(),
                    partitions,
                    replication_factor: -1,
                    configs: configs.into_iter().collect(),
                };
                match tgt.create_topic(&new).await {
                    Ok(()) => {
                        tracing::info!(link = %def.name, topic = %t.name, partitions, "created mirror topic")
                    }
                    Err(e)
                        if e.kafka_error()
                            == Some(runnel_client::ResponseError::TopicAlreadyExists) => {}
                    Err(e) => {
                        tracing::warn!(link = %def.name, topic = %t.name, error = %e, "cannot create mirror topic")
                    }
                }
            }
            Some(local) if (local.partitions.len() as i32) < partitions => {
                match tgt.create_partitions(&t.name, partitions, false).await {
                    Ok(()) => {
                        tracing::info!(link = %def.name, topic = %t.name, partitions, "added partitions to mirror topic")
                    }
                    Err(e) => {
                        tracing::warn!(link = %def.name, topic = %t.name, error = %e, "cannot add partitions to mirror topic")
                    }
                }
            }
            Some(_) => {}
        }
    }
    if !collisions.is_empty() {
        tracing::debug!(link = %def.name, topics = ?collisions, "source topics collide with local topics; not mirrored");
    }
    set_status(broker, &def.name, |s| {
        s.collisions = collisions;
        s.source_missing = missing;
    });
    Ok(())
}

fn active_mirrors(def: &LinkDef) -> impl Iterator<Item = &String> {
    def.mirrors
        .iter()
        .filter(|(_, s)| **s == MirrorState::Active)
        .map(|(t, _)| t)
}

async fn sync_configs(
    broker: &Broker,
    def: &LinkDef,
    src: &Client,
    tgt: &Client,
) -> Result<(), String> {
    for topic in active_mirrors(def) {
        let Some(local) = broker.topics.get(topic) else {
            continue;
        };
        let mut wanted = match source_configs(src, topic).await {
            Ok(c) => c,
            // The topic went away on the source: nothing to sync.
            Err(e) if e.contains("UNKNOWN_TOPIC") || e.contains("does not exist") => continue,
            Err(e) => return Err(e),
        };
        for k in LOCAL_KEYS {
            if let Some(v) = local.configs.get(*k) {
                wanted.insert(k.to_string(), v.clone());
            }
        }
        if wanted != local.configs {
            let pairs: Vec<(String, String)> = wanted.into_iter().collect();
            match tgt
                .alter_configs(&ConfigResource::Topic(topic.clone()), &pairs, false)
                .await
            {
                Ok(()) => {
                    tracing::info!(link = %def.name, topic, "synced mirror topic configs from the source")
                }
                Err(e) => {
                    tracing::warn!(link = %def.name, topic, error = %e, "cannot sync mirror topic configs")
                }
            }
        }
    }
    Ok(())
}

async fn sync_offsets(
    broker: &Broker,
    def: &LinkDef,
    settings: &Settings,
    src: &Client,
    tgt: &Client,
) -> Result<(), String> {
    let groups = src.list_groups(&[]).await.map_err(|e| e.to_string())?;
    let mut skipped = Vec::new();
    let mut synced = 0u64;
    for g in groups {
        if !settings.groups.is_match(&g.group_id) {
            continue;
        }
        let committed = match src.committed_offsets(&g.group_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(link = %def.name, group = %g.group_id, error = %e, "cannot read the source group's offsets");
                continue;
            }
        };
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for c in &committed {
            if c.offset >= 0 && def.mirrors.get(&c.topic) == Some(&MirrorState::Active) {
                by_topic
                    .entry(&c.topic)
                    .or_default()
                    .push((c.partition, c.offset));
            }
        }
        if by_topic.is_empty() {
            continue;
        }
        // Never overwrite a group that consumes here.
        if let Ok(d) = tgt.describe_group(&g.group_id).await {
            if !d.is_inactive() {
                skipped.push(g.group_id.clone());
                continue;
            }
        }
        let current: BTreeMap<(String, i32), i64> = tgt
            .committed_offsets(&g.group_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect();
        let mut commits = Vec::new();
        for (topic, parts) in by_topic {
            let ids: Vec<i32> = parts.iter().map(|(p, _)| *p).collect();
            // What is mirrored so far: a group failing over must not skip the rest.
            let Ok(ends) = tgt.list_offsets(topic, &ids, OffsetSpec::Latest).await else {
                continue;
            };
            for (p, offset) in parts {
                let mirrored = ends
                    .iter()
                    .find(|e| e.partition == p)
                    .map_or(0, |e| e.offset);
                let to = offset.min(mirrored);
                let now = current.get(&(topic.to_string(), p)).copied().unwrap_or(-1);
                if to > now {
                    commits.push((topic.to_string(), p, to));
                }
            }
        }
        if commits.is_empty() {
            continue;
        }
        match tgt.commit_group_offsets(&g.group_id, &commits).await {
            Ok(()) => synced += commits.len() as u64,
            Err(e) => {
                tracing::debug!(link = %def.name, group = %g.group_id, error = %e, "cannot commit synced offsets (the group may have become active)")
            }
        }
    }
    set_status(broker, &def.name, |s| {
        s.groups_skipped_active = skipped;
        s.groups_synced += synced;
    });
    Ok(())
}

/// How long `promote` waits for the mirror to reach the source's end.
const PROMOTE_CATCH_UP: Duration = Duration::from_secs(15);

/// Before a promote: waits until `topics` on this cluster hold everything the source had
/// when this started, then syncs group offsets once more for them, so a group failing
/// over re-reads nothing it committed on the source and skips nothing. Err when the
/// source cannot be reached or the mirror does not catch up within `PROMOTE_CATCH_UP`.
pub async fn final_sync(broker: &Broker, def: &LinkDef, topics: &[String]) -> Result<(), String> {
    let settings = broker.links.settings(def).map_err(|e| e.message)?;
    let src = broker.links.source_client(def).await?;
    let tgt = target_client(broker).await?;
    let mut wanted = Vec::new();
    for t in topics {
        let count = broker
            .topics
            .get(t)
            .map_or(0, |x| x.partitions.len() as i32);
        let ids: Vec<i32> = (0..count).collect();
        let ends = src
            .list_offsets(t, &ids, OffsetSpec::Latest)
            .await
            .map_err(|e| e.to_string())?;
        wanted.push((t, ids, ends));
    }
    let deadline = Instant::now() + PROMOTE_CATCH_UP;
    for (t, ids, ends) in &wanted {
        loop {
            let mirrored = tgt
                .list_offsets(t, ids, OffsetSpec::Latest)
                .await
                .map_err(|e| e.to_string())?;
            let behind = ends.iter().any(|e| {
                mirrored
                    .iter()
                    .find(|m| m.partition == e.partition)
                    .is_none_or(|m| m.offset < e.offset)
            });
            if !behind {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{t} did not catch up with the source within {PROMOTE_CATCH_UP:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if settings.offset_sync {
        let mut only = def.clone();
        only.mirrors.retain(|t, _| topics.contains(t));
        sync_offsets(broker, &only, &settings, &src, &tgt).await?;
    }
    Ok(())
}
