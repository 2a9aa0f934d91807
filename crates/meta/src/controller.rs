//! The controller's decisions: given the current image and a request, the records to write
//! (one log entry, so a decision touching many partitions is atomic) and the reply. Pure
//! functions of the image, so they are tested without a quorum; [`crate::node`] runs them
//! on the Raft leader, one at a time.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::config::ControllerDefaults;
use crate::error::{ControllerError, ErrorKind};
use crate::image::{
    BrokerEndpoint, BrokerImage, ClusterImage, MetadataRecord, PartitionImage, NO_LEADER,
};
use crate::rpc::{AlterPartitionRequest, Elections, HeartbeatReply, NewTopic};

type Records = Vec<MetadataRecord>;

fn err(kind: ErrorKind, message: impl Into<String>) -> ControllerError {
    ControllerError::new(kind, message)
}

pub use runnel_core::names::new_cluster_id;

/// A partition's state after a change: `partition_epoch` + 1, `leader_epoch` + 1 when
/// the leader changed.
fn bump(old: &PartitionImage, mut new: PartitionImage) -> PartitionImage {
    new.partition_epoch = old.partition_epoch + 1;
    new.leader_epoch = if new.leader != old.leader {
        old.leader_epoch + 1
    } else {
        old.leader_epoch
    };
    new
}

fn change(
    topic_id: Uuid,
    partition: usize,
    old: &PartitionImage,
    new: PartitionImage,
) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id,
        partition: partition as i32,
        state: bump(old, new),
    }
}

/// Every partition of the image with its topic id and index.
fn partitions(image: &ClusterImage) -> impl Iterator<Item = (Uuid, usize, &PartitionImage)> {
    image.topics.values().flat_map(|t| {
        t.partitions
            .iter()
            .enumerate()
            .map(move |(i, p)| (t.id, i, p))
    })
}

/// The state of `p` once broker `id` is out (fenced, or shutting down): it leaves the ISR
/// unless it is the last member; if it led, the first replica (in replica order) in the new
/// ISR that is live takes over, else no one (unclean election is off).
fn without_broker(image: &ClusterImage, p: &PartitionImage, id: i32) -> Option<PartitionImage> {
    let in_isr = p.isr.contains(&id);
    if p.leader != id && !in_isr {
        return None;
    }
    let mut new = p.clone();
    if in_isr && p.isr.len() > 1 {
        new.isr.retain(|r| *r != id);
    }
    if p.leader == id {
        new.leader = p
            .replicas
            .iter()
            .copied()
            .find(|r| *r != id && new.isr.contains(r) && image.is_live(*r))
            .unwrap_or(NO_LEADER);
    }
    (new != *p).then_some(new)
}

/// Records that take broker `id` out of every partition (see [`without_broker`]).
pub fn fence_changes(image: &ClusterImage, id: i32) -> Records {
    partitions(image)
        .filter_map(|(tid, i, p)| without_broker(image, p, id).map(|n| change(tid, i, p, n)))
        .collect()
}

/// Records that bring offline partitions back when broker `id` returns: a partition with
/// no leader whose ISR holds `id` gets its first live ISR replica (counting `id`) as leader.
pub fn unfence_changes(image: &ClusterImage, id: i32) -> Records {
    partitions(image)
        .filter(|(_, _, p)| p.leader == NO_LEADER && p.isr.contains(&id))
        .filter_map(|(tid, i, p)| {
            let leader = p
                .replicas
                .iter()
                .copied()
                .find(|r| p.isr.contains(r) && (*r == id || image.is_live(*r)))?;
            let new = PartitionImage {
                leader,
                ..p.clone()
            };
            Some(change(tid, i, p, new))
        })
        .collect()
}

/// Fencing broker `id` (missed heartbeats): its partitions move, then it is fenced.
pub fn fence_broker(image: &ClusterImage, id: i32) -> Records {
    let Some(b) = image.brokers.get(&id).filter(|b| !b.fenced) else {
        return Vec::new();
    };
    let mut records = fence_changes(image, id);
    records.push(MetadataRecord::FenceBroker { id, epoch: b.epoch });
    records
}

/// UnregisterBroker: the broker left for good. Its partitions move as when it is fenced;
/// it stays in replica lists until they are reassigned.
pub fn unregister_broker(image: &ClusterImage, id: i32) -> Result<Records, ControllerError> {
    if !image.brokers.contains_key(&id) {
        return Err(err(
            ErrorKind::StaleBrokerEpoch,
            format!("broker {id} is not registered"),
        ));
    }
    let mut records = fence_changes(image, id);
    records.push(MetadataRecord::UnregisterBroker { id });
    Ok(records)
}

pub fn register_broker(
    image: &ClusterImage,
    id: i32,
    host: &str,
    port: i32,
    endpoints: Vec<BrokerEndpoint>,
    rack: Option<String>,
    incarnation: Uuid,
) -> Result<(Records, i64), ControllerError> {
    if id < 0 {
        return Err(err(
            ErrorKind::InvalidRequest,
            format!("broker id {id} is negative"),
        ));
    }
    let mut records = Vec::new();
    let mut epoch = image.applied_index as i64 + 1;
    if let Some(old) = image.brokers.get(&id) {
        if old.incarnation == incarnation
            && old.host == host
            && old.port == port
            && old.endpoints == endpoints
            && old.rack == rack
        {
            // A retried registration of the same process.
            return Ok((records, old.epoch));
        }
        // A new process: the old one is gone, take it out of its partitions.
        records.extend(fence_changes(image, id));
        epoch = epoch.max(old.epoch + 1);
    }
    records.push(MetadataRecord::RegisterBroker(BrokerImage {
        id,
        host: host.to_string(),
        port,
        endpoints,
        rack,
        epoch,
        incarnation,
        fenced: true,
    }));
    Ok((records, epoch))
}

fn check_broker_epoch(
    image: &ClusterImage,
    id: i32,
    epoch: i64,
) -> Result<&BrokerImage, ControllerError> {
    let b = image.brokers.get(&id).ok_or_else(|| {
        err(
            ErrorKind::StaleBrokerEpoch,
            format!("broker {id} is not registered"),
        )
    })?;
    if b.epoch != epoch {
        return Err(err(
            ErrorKind::StaleBrokerEpoch,
            format!(
                "broker {id} sent epoch {epoch} but its registration has epoch {}",
                b.epoch
            ),
        ));
    }
    Ok(b)
}

/// A heartbeat: unfences a fenced broker; with `want_shutdown`, moves its leadership and
/// ISR memberships away and fences it (controlled shutdown).
pub fn heartbeat(
    image: &ClusterImage,
    id: i32,
    epoch: i64,
    want_shutdown: bool,
) -> Result<(Records, HeartbeatReply), ControllerError> {
    let b = check_broker_epoch(image, id, epoch)?;
    if want_shutdown {
        let records = fence_broker(image, id);
        return Ok((
            records,
            HeartbeatReply {
                fenced: true,
                shutdown_ready: true,
            },
        ));
    }
    let mut records = Vec::new();
    if b.fenced {
        records.push(MetadataRecord::UnfenceBroker { id, epoch });
        records.extend(unfence_changes(image, id));
    }
    Ok((
        records,
        HeartbeatReply {
            fenced: false,
            shutdown_ready: false,
        },
    ))
}

/// Kafka's topic name rules (`runnel_core::names::topic_name_error`).
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    match runnel_core::names::topic_name_error(name) {
        Some(why) => Err(err(ErrorKind::InvalidTopic, why)),
        None => Ok(()),
    }
}

/// Kafka's replica placement. `brokers`: the unfenced brokers with their racks. With racks
/// set, replicas of a partition go to different racks as far as possible (Kafka's
/// rack-alternating broker list); otherwise round-robin from a random start with a shift
/// for the followers.
pub fn place(
    brokers: &[(i32, Option<String>)],
    partitions: i32,
    replication_factor: i32,
    start_partition: i32,
    random: u64,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    let n = brokers.len();
    if replication_factor <= 0 {
        return Err(err(
            ErrorKind::InvalidReplicationFactor,
            format!("replication factor {replication_factor} must be at least 1"),
        ));
    }
    if replication_factor as usize > n {
        return Err(err(
            ErrorKind::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is larger than the {n} available (unfenced) brokers"
            ),
        ));
    }
    let rf = replication_factor as usize;
    let racked = brokers.iter().any(|(_, r)| r.is_some());
    let mut sorted: Vec<(i32, Option<String>)> = brokers.to_vec();
    sorted.sort();
    let list: Vec<(i32, Option<String>)> = if racked {
        // Kafka's getRackAlternatedBrokerList: one broker of each rack in turn.
        let mut by_rack: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
        for (id, rack) in &sorted {
            by_rack.entry(rack.clone()).or_default().push(*id);
        }
        let mut out = Vec::with_capacity(n);
        let mut round = 0;
        while out.len() < n {
            for (rack, ids) in &by_rack {
                if let Some(id) = ids.get(round) {
                    out.push((*id, rack.clone()));
                }
            }
            round += 1;
        }
        out
    } else {
        sorted
    };
    let num_racks = list.iter().map(|(_, r)| r).collect::<BTreeSet<_>>().len();
    let start_index = (random % n as u64) as usize;
    let mut shift = ((random >> 32) % n as u64) as usize;
    let replica_index = |first: usize, second_shift: usize, k: usize| -> usize {
        if n == 1 {
            return first;
        }
        let s = 1 + (second_shift + k) % (n - 1);
        (first + s) % n
    };
    let mut out = Vec::new();
    let start = start_partition.max(0) as usize;
    for current in start..start + partitions.max(0) as usize {
        if current > 0 && current.is_multiple_of(n) {
            shift += 1;
        }
        let first = (current + start_index) % n;
        let mut replicas = vec![list[first].0];
        if racked {
            let mut racks: BTreeSet<&Option<String>> = BTreeSet::from([&list[first].1]);
            let mut k = 0;
            while replicas.len() < rf {
                let (b, rack) = &list[replica_index(first, shift * num_racks, k)];
                k += 1;
                if (!racks.contains(rack) || racks.len() == num_racks) && !replicas.contains(b) {
                    replicas.push(*b);
                    racks.insert(rack);
                }
                if k > n * n + n {
                    break;
                }
            }
        } else {
            for k in 0..rf - 1 {
                replicas.push(list[replica_index(first, shift, k)].0);
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

/// The most partitions one request may add: one decision is one log entry, and an entry
/// must stay well below the frame limit.
pub const MAX_NEW_PARTITIONS: i32 = 100_000;

fn check_new_partitions(what: &str, n: i32) -> Result<(), ControllerError> {
    if n > MAX_NEW_PARTITIONS {
        return Err(err(
            ErrorKind::InvalidPartitions,
            format!("{what}: {n} new partitions in one request is above the limit of {MAX_NEW_PARTITIONS}"),
        ));
    }
    Ok(())
}

fn live_brokers(image: &ClusterImage) -> Vec<(i32, Option<String>)> {
    image
        .live_brokers()
        .map(|b| (b.id, b.rack.clone()))
        .collect()
}

/// Checks explicit replica assignments and makes the partitions (ISR = live replicas,
/// leader = first live one).
fn assigned_partitions(
    image: &ClusterImage,
    what: &str,
    assignments: &[Vec<i32>],
) -> Result<Vec<PartitionImage>, ControllerError> {
    check_new_partitions(what, i32::try_from(assignments.len()).unwrap_or(i32::MAX))?;
    let bad = |m: String| err(ErrorKind::InvalidReplicaAssignment, format!("{what}: {m}"));
    let rf = assignments.first().map(|a| a.len()).unwrap_or(0);
    let mut out = Vec::new();
    for (i, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() {
            return Err(bad(format!("partition {i} has no replicas")));
        }
        if replicas.len() != rf {
            return Err(bad(format!(
                "partition {i} has {} replicas but partition 0 has {rf}",
                replicas.len()
            )));
        }
        let distinct: BTreeSet<_> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return Err(bad(format!(
                "partition {i} lists a broker twice: {replicas:?}"
            )));
        }
        if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
            return Err(bad(format!("partition {i}: broker {b} is not registered")));
        }
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| image.is_live(*r))
            .collect();
        let Some(&leader) = isr.first() else {
            return Err(bad(format!(
                "partition {i}: none of the brokers {replicas:?} is live"
            )));
        };
        out.push(PartitionImage {
            leader,
            isr,
            ..PartitionImage::new(replicas.clone())
        });
    }
    Ok(out)
}

pub fn create_topics(
    image: &ClusterImage,
    defaults: &ControllerDefaults,
    topics: &[NewTopic],
    random: u64,
) -> (Records, Vec<Result<Uuid, ControllerError>>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let live = live_brokers(image);
    for (n, t) in topics.iter().enumerate() {
        let res = (|| {
            validate_topic_name(&t.name)?;
            if image.topics.contains_key(&t.name) || !names.insert(&t.name) {
                return Err(err(
                    ErrorKind::TopicAlreadyExists,
                    format!("topic {:?} already exists", t.name),
                ));
            }
            let partitions = match &t.assignments {
                Some(a) => {
                    if t.num_partitions != -1 || t.replication_factor != -1 {
                        return Err(err(
                            ErrorKind::InvalidRequest,
                            format!(
                                "topic {:?}: give either replica assignments or partition count and replication factor, not both",
                                t.name
                            ),
                        ));
                    }
                    if a.is_empty() {
                        return Err(err(
                            ErrorKind::InvalidPartitions,
                            format!(
                                "topic {:?}: the replica assignment has no partitions",
                                t.name
                            ),
                        ));
                    }
                    assigned_partitions(image, &format!("topic {:?}", t.name), a)?
                }
                None => {
                    let np = match t.num_partitions {
                        -1 => defaults.num_partitions,
                        n if n <= 0 => {
                            return Err(err(
                                ErrorKind::InvalidPartitions,
                                format!(
                                    "topic {:?}: number of partitions {n} must be at least 1",
                                    t.name
                                ),
                            ))
                        }
                        n => n,
                    };
                    check_new_partitions(&format!("topic {:?}", t.name), np)?;
                    let rf = match t.replication_factor {
                        -1 => defaults.default_replication_factor,
                        r if r <= 0 => {
                            return Err(err(
                                ErrorKind::InvalidReplicationFactor,
                                format!(
                                    "topic {:?}: replication factor {r} must be at least 1",
                                    t.name
                                ),
                            ))
                        }
                        r => r as i32,
                    };
                    place(&live, np, rf, 0, random.wrapping_add(n as u64 * 7919))
                        .map_err(|e| {
                            ControllerError::new(
                                e.kind,
                                format!("topic {:?}: {}", t.name, e.message),
                            )
                        })?
                        .into_iter()
                        .map(PartitionImage::new)
                        .collect()
                }
            };
            let id = t.id.unwrap_or_else(Uuid::new_v4);
            records.push(MetadataRecord::CreateTopic(crate::image::TopicImage {
                name: t.name.clone(),
                id,
                configs: t.configs.clone(),
                partitions,
            }));
            Ok(id)
        })();
        results.push(res);
    }
    (records, results)
}

fn topic<'a>(
    image: &'a ClusterImage,
    name: &str,
) -> Result<&'a crate::image::TopicImage, ControllerError> {
    image.topics.get(name).ok_or_else(|| {
        err(
            ErrorKind::UnknownTopicOrPartition,
            format!("topic {name:?} does not exist"),
        )
    })
}

pub fn delete_topics(
    image: &ClusterImage,
    names: &[String],
) -> (Records, Vec<Result<(), ControllerError>>) {
    let mut records = Vec::new();
    let mut done = BTreeSet::new();
    let results = names
        .iter()
        .map(|name| {
            let t = topic(image, name)?;
            if done.insert(t.id) {
                records.push(MetadataRecord::DeleteTopic { id: t.id });
            }
            Ok(())
        })
        .collect();
    (records, results)
}

pub fn create_partitions(
    image: &ClusterImage,
    name: &str,
    total: i32,
    assignments: Option<&[Vec<i32>]>,
    random: u64,
) -> Result<Records, ControllerError> {
    let t = topic(image, name)?;
    let have = t.partitions.len() as i32;
    if total <= have {
        return Err(err(
            ErrorKind::InvalidPartitions,
            format!("topic {name:?} has {have} partitions; the new count {total} must be larger"),
        ));
    }
    let add = total - have;
    check_new_partitions(&format!("topic {name:?}"), add)?;
    let partitions = match assignments {
        Some(a) => {
            if a.len() as i32 != add {
                return Err(err(
                    ErrorKind::InvalidReplicaAssignment,
                    format!(
                        "topic {name:?}: {} assignments given for {add} new partitions",
                        a.len()
                    ),
                ));
            }
            assigned_partitions(image, &format!("topic {name:?}"), a)?
        }
        None => {
            let rf = t
                .partitions
                .first()
                .map(|p| p.target_replicas().len())
                .unwrap_or(1) as i32;
            place(&live_brokers(image), add, rf, have, random)
                .map_err(|e| {
                    ControllerError::new(e.kind, format!("topic {name:?}: {}", e.message))
                })?
                .into_iter()
                .map(PartitionImage::new)
                .collect()
        }
    };
    Ok(vec![MetadataRecord::AddPartitions {
        topic_id: t.id,
        partitions,
    }])
}

/// Completes a reassignment whose target replicas are all in the ISR: replicas = target,
/// ISR ∩ target, and a new leader from the target if the old one is dropped.
fn complete_reassignment(image: &ClusterImage, p: PartitionImage) -> PartitionImage {
    if !p.is_reassigning() {
        return p;
    }
    let target = p.target_replicas();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return p;
    }
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    let leader = if target.contains(&p.leader) {
        p.leader
    } else {
        target
            .iter()
            .copied()
            .find(|r| isr.contains(r) && image.is_live(*r))
            .unwrap_or(NO_LEADER)
    };
    PartitionImage {
        replicas: target,
        isr,
        leader,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p
    }
}

pub fn alter_partition(
    image: &ClusterImage,
    req: &AlterPartitionRequest,
) -> Result<(Records, PartitionImage), ControllerError> {
    let (broker_id, partition, new_isr) = (req.broker_id, req.partition, &req.new_isr);
    check_broker_epoch(image, broker_id, req.broker_epoch)?;
    let topic_id = req.topic_id;
    let t = image.topic_by_id(topic_id).ok_or_else(|| {
        err(
            ErrorKind::UnknownTopicOrPartition,
            format!("no topic has id {topic_id}"),
        )
    })?;
    let what = format!("{}-{partition}", t.name);
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or_else(|| {
            err(
                ErrorKind::UnknownTopicOrPartition,
                format!("partition {what} does not exist"),
            )
        })?;
    let stale = if p.leader != broker_id {
        Some((
            ErrorKind::NotLeaderOrFollower,
            format!(
                "broker {broker_id} is not the leader of {what} (the leader is {})",
                p.leader
            ),
        ))
    } else if req.leader_epoch != p.leader_epoch {
        Some((
            ErrorKind::FencedLeaderEpoch,
            format!(
                "{what}: leader epoch {} is not the current {}",
                req.leader_epoch, p.leader_epoch
            ),
        ))
    } else if req.partition_epoch != p.partition_epoch {
        Some((
            ErrorKind::InvalidUpdateVersion,
            format!(
                "{what}: partition epoch {} is not the current {}",
                req.partition_epoch, p.partition_epoch
            ),
        ))
    } else {
        None
    };
    if let Some((kind, message)) = stale {
        return Err(err(kind, message));
    }
    if !new_isr.contains(&broker_id) {
        return Err(err(
            ErrorKind::InvalidRequest,
            format!("{what}: the new ISR {new_isr:?} leaves out the leader {broker_id}"),
        ));
    }
    let mut isr: Vec<i32> = Vec::new();
    for r in new_isr {
        if isr.contains(r) {
            return Err(err(
                ErrorKind::InvalidRequest,
                format!("{what}: the new ISR {new_isr:?} lists {r} twice"),
            ));
        }
        if !p.replicas.contains(r) {
            return Err(err(
                ErrorKind::IneligibleReplica,
                format!(
                    "{what}: broker {r} is not a replica (replicas {:?})",
                    p.replicas
                ),
            ));
        }
        if !p.isr.contains(r) && !image.is_live(*r) {
            return Err(err(
                ErrorKind::IneligibleReplica,
                format!("{what}: broker {r} is fenced or not registered and cannot join the ISR"),
            ));
        }
        isr.push(*r);
    }
    if isr == p.isr {
        return Ok((Vec::new(), p.clone()));
    }
    let new = complete_reassignment(image, PartitionImage { isr, ..p.clone() });
    let state = bump(p, new);
    Ok((
        vec![MetadataRecord::PartitionChange {
            topic_id,
            partition,
            state: state.clone(),
        }],
        state,
    ))
}

pub fn alter_topic_configs(
    image: &ClusterImage,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<Records, ControllerError> {
    let t = topic(image, name)?;
    Ok(vec![MetadataRecord::TopicConfigs {
        topic_id: t.id,
        configs,
    }])
}

/// Cluster-wide dynamic broker configs: one record per key (`None` deletes it).
pub fn alter_broker_configs(configs: BTreeMap<String, Option<String>>) -> Records {
    configs
        .into_iter()
        .map(|(key, value)| MetadataRecord::BrokerConfig { key, value })
        .collect()
}

fn partition_of<'a>(
    image: &'a ClusterImage,
    name: &str,
    partition: i32,
) -> Result<(Uuid, usize, &'a PartitionImage), ControllerError> {
    let t = topic(image, name)?;
    let i = usize::try_from(partition)
        .ok()
        .filter(|i| *i < t.partitions.len())
        .ok_or_else(|| {
            err(
                ErrorKind::UnknownTopicOrPartition,
                format!("partition {name}-{partition} does not exist"),
            )
        })?;
    Ok((t.id, i, &t.partitions[i]))
}

fn elect_one(
    image: &ClusterImage,
    name: &str,
    partition: i32,
    preferred: bool,
) -> Result<MetadataRecord, ControllerError> {
    let (tid, i, p) = partition_of(image, name, partition)?;
    let what = format!("{name}-{partition}");
    if preferred {
        let Some(&first) = p.replicas.first() else {
            return Err(err(
                ErrorKind::PreferredLeaderNotAvailable,
                format!("{what} has no replicas"),
            ));
        };
        if p.leader == first {
            return Err(err(
                ErrorKind::ElectionNotNeeded,
                format!("{what}: broker {first} already leads"),
            ));
        }
        if !image.is_live(first) || !p.isr.contains(&first) {
            return Err(err(
                ErrorKind::PreferredLeaderNotAvailable,
                format!(
                    "{what}: the preferred leader {first} is not live and in the ISR {:?}",
                    p.isr
                ),
            ));
        }
        return Ok(change(
            tid,
            i,
            p,
            PartitionImage {
                leader: first,
                ..p.clone()
            },
        ));
    }
    // Unclean election, asked for explicitly: only when there is no leader.
    if p.leader != NO_LEADER && image.is_live(p.leader) {
        return Err(err(
            ErrorKind::ElectionNotNeeded,
            format!("{what}: broker {} leads", p.leader),
        ));
    }
    let in_isr = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && image.is_live(*r));
    let new = match in_isr {
        Some(l) => PartitionImage {
            leader: l,
            ..p.clone()
        },
        None => {
            let l = p
                .replicas
                .iter()
                .copied()
                .find(|r| image.is_live(*r))
                .ok_or_else(|| {
                    err(
                        ErrorKind::EligibleLeadersNotAvailable,
                        format!("{what}: none of the replicas {:?} is live", p.replicas),
                    )
                })?;
            PartitionImage {
                leader: l,
                isr: vec![l],
                ..p.clone()
            }
        }
    };
    Ok(change(tid, i, p, new))
}

/// ElectLeaders. `None` = every partition, and then partitions that need no election are
/// left out of the results.
pub fn elect_leaders(
    image: &ClusterImage,
    which: Option<&[(String, i32)]>,
    preferred: bool,
) -> (Records, Elections) {
    let all: Vec<(String, i32)>;
    let list = match which {
        Some(l) => l,
        None => {
            all = image
                .topics
                .values()
                .flat_map(|t| (0..t.partitions.len() as i32).map(move |i| (t.name.clone(), i)))
                .collect();
            &all
        }
    };
    let mut records = Vec::new();
    let mut results = Vec::new();
    for (name, partition) in list {
        let res = elect_one(image, name, *partition, preferred).map(|r| records.push(r));
        if which.is_none() && matches!(&res, Err(e) if e.kind == ErrorKind::ElectionNotNeeded) {
            continue;
        }
        results.push(((name.clone(), *partition), res));
    }
    (records, results)
}

/// AlterPartitionReassignments for one partition: `Some(target)` starts (or replaces) a
/// reassignment, `None` cancels the one under way.
pub fn reassign(
    image: &ClusterImage,
    name: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> Result<Records, ControllerError> {
    let (tid, i, p) = partition_of(image, name, partition)?;
    let what = format!("{name}-{partition}");
    let original = p.original_replicas();
    let new = match target {
        None => {
            if !p.is_reassigning() {
                return Err(err(
                    ErrorKind::NoReassignmentInProgress,
                    format!("{what} has no reassignment in progress"),
                ));
            }
            let mut isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|r| original.contains(r))
                .collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            let leader = if original.contains(&p.leader) {
                p.leader
            } else {
                original
                    .iter()
                    .copied()
                    .find(|r| isr.contains(r) && image.is_live(*r))
                    .unwrap_or(NO_LEADER)
            };
            PartitionImage {
                replicas: original,
                isr,
                leader,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                ..p.clone()
            }
        }
        Some(target) => {
            let bad = |m: String| err(ErrorKind::InvalidReplicaAssignment, format!("{what}: {m}"));
            if target.is_empty() {
                return Err(bad("the new replica list is empty".into()));
            }
            let distinct: BTreeSet<_> = target.iter().collect();
            if distinct.len() != target.len() {
                return Err(bad(format!(
                    "the new replicas {target:?} list a broker twice"
                )));
            }
            if let Some(b) = target.iter().find(|b| !image.brokers.contains_key(b)) {
                return Err(bad(format!("broker {b} is not registered")));
            }
            let mut replicas: Vec<i32> = target.to_vec();
            replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
            let adding: Vec<i32> = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            let removing: Vec<i32> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            let mut isr = p.isr.clone();
            isr.retain(|r| replicas.contains(r));
            complete_reassignment(
                image,
                PartitionImage {
                    replicas,
                    isr,
                    adding_replicas: adding,
                    removing_replicas: removing,
                    ..p.clone()
                },
            )
        }
    };
    if new == *p {
        return Ok(Vec::new());
    }
    Ok(vec![change(tid, i, p, new)])
}

#[cfg(test)]
mod tests;
