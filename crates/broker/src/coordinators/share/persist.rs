//! Durable share-partition state: after a change that must survive (acknowledgements,
//! releases, lock expiries that archive), the share-partition's full state is written
//! as a `ShareSnapshot` record to its `__share_group_state` partition through
//! `Broker::append_as_leader` (compacted: the latest snapshot per key is what a replay
//! needs). An acknowledgement is answered only once its snapshot is on disk (and, in a
//! cluster, in the state partition's ISR). At start-up `load` replays the topic; a
//! share-partition created afterwards starts from its last snapshot, so an accepted or
//! archived record is never delivered again after a restart.
//!
//! Acquisitions are not written (as in Kafka): after a crash, records acquired but not
//! yet acknowledged are delivered again (at least once).
//!
//! In a cluster a leader writes to a state partition it leads, and a new leader of a
//! data partition (`sync_leadership`) reads the latest snapshot, by (leader epoch,
//! snapshot epoch), from its local replicas of every state partition: there is no share
//! coordinator RPC.
//!
//! The snapshot is built and appended under the share-partition's lock, so snapshots of
//! one share-partition reach the log in the order of the states they describe.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::records::{self, StateKey, StateValue, STATE_TOPIC};
use super::SharePartitionKey;
use crate::coordinators::share::partition_state::SharePartitionState;
use crate::coordinators::Host;
use crate::error::BrokerError;
use crate::storage::partition::{Appended, Partition};

/// Replays the local replicas of `__share_group_state`: for every key, the latest
/// snapshot, by (leader epoch, snapshot epoch) across partitions (in a cluster a
/// share-partition's leaders may have written to different state partitions), and within
/// one partition by position (a tombstone deletes what came before it there).
pub fn load(
    topics: &crate::storage::topics::TopicRegistry,
) -> HashMap<SharePartitionKey, StateValue> {
    load_matching(topics, |_| true)
}

/// `load` for the keys `wanted` accepts.
fn load_matching(
    topics: &crate::storage::topics::TopicRegistry,
    wanted: impl Fn(&SharePartitionKey) -> bool,
) -> HashMap<SharePartitionKey, StateValue> {
    let mut out: HashMap<SharePartitionKey, StateValue> = HashMap::new();
    let Some(topic) = topics.get(STATE_TOPIC) else {
        return out;
    };
    for p in &topic.partitions {
        if p.storage_offline {
            tracing::error!(topic = %p.topic, partition = p.index, "not replaying an offline share-state partition");
            continue;
        }
        let mut here: HashMap<SharePartitionKey, Option<StateValue>> = HashMap::new();
        let read = p
            .log
            .lock()
            .for_each_batch(|h, batch| -> Result<(), BrokerError> {
                if h.is_control() {
                    return Ok(());
                }
                let r = runnel_log::batch::for_each_record(batch, |r| {
                    let Some((kind, key)) = r.key.and_then(records::decode_key) else {
                        return;
                    };
                    let id = (key.group, key.topic_id, key.partition);
                    if !wanted(&id) {
                        return;
                    }
                    match (kind, r.value) {
                        (_, None) => {
                            here.insert(id, None);
                        }
                        (records::SNAPSHOT_TYPE, Some(v)) => match records::decode_snapshot(v) {
                            Some(v) => {
                                here.insert(id, Some(v));
                            }
                            None => tracing::warn!(topic = %p.topic, partition = p.index, offset = h.base_offset, "skipping a malformed share snapshot"),
                        },
                        // Runnel writes snapshots only; a delta from elsewhere is skipped.
                        _ => {}
                    }
                });
                if let Err(e) = r {
                    tracing::warn!(topic = %p.topic, partition = p.index, offset = h.base_offset, error = %e, "skipping an unreadable share-state batch");
                }
                Ok(())
            });
        if let Err(e) = read {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "could not replay share state");
        }
        for (id, v) in here {
            let Some(v) = v else {
                continue;
            };
            let newer = out.get(&id).is_none_or(|o| {
                (v.leader_epoch, v.snapshot_epoch) > (o.leader_epoch, o.snapshot_epoch)
            });
            if newer {
                out.insert(id, v);
            }
        }
    }
    out
}

/// The latest persisted snapshot of one share-partition, from the local replicas (a
/// broker that just became its leader reads it there).
pub fn read_latest(host: &impl Host, key: &SharePartitionKey) -> Option<StateValue> {
    load_matching(host.topics(), |k| k == key).remove(key)
}

/// The state topic, created through the controller when first needed (asked once, in
/// the background; None until it exists here).
fn state_topic(
    host: &impl Host,
) -> Result<Option<Arc<crate::storage::topics::Topic>>, BrokerError> {
    if let Some(t) = host.topics().get(STATE_TOPIC) {
        return Ok(Some(t));
    }
    ensure_in_cluster(host);
    Ok(None)
}

/// Asks the controller for `__share_group_state` (compacted, Kafka's partition count and
/// replication factor; the host caps it by the live brokers).
fn ensure_in_cluster(host: &impl Host) {
    let config = &host.shares().config;
    host.ensure_internal_topic(runnel_meta::NewTopic {
        id: None,
        name: STATE_TOPIC.to_string(),
        num_partitions: config.state_topic_partitions,
        replication_factor: config.state_topic_replication_factor,
        assignments: None,
        configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
    });
}

/// The state partition to write `k` to: Kafka's placement when this broker leads it,
/// else the first one this broker leads (in a cluster a partition's leaders move; a
/// reader takes the latest snapshot across partitions).
fn state_partition(topic: &crate::storage::topics::Topic, k: &StateKey) -> Option<Arc<Partition>> {
    let preferred = k.state_partition(topic.partitions.len() as i32) as usize;
    let leads = |p: &&Arc<Partition>| p.replica.lock().is_leader() && !p.storage_offline;
    topic
        .partitions
        .get(preferred)
        .filter(leads)
        .or_else(|| topic.partitions.iter().find(leads))
        .cloned()
}

/// Writes `sp`'s state as a snapshot (the caller holds `sp`'s lock). Returns the state
/// partition and the offset to wait for before the change counts; None when there is no
/// state partition to write to yet (a cluster whose state topic is being created, or
/// whose state partitions this broker leads none of): the change is then in memory only.
pub fn write(
    host: &impl Host,
    key: &SharePartitionKey,
    sp: &mut SharePartitionState,
    leader_epoch: i32,
) -> Result<Option<(Arc<Partition>, Appended)>, BrokerError> {
    let Some(topic) = state_topic(host)? else {
        return Ok(None);
    };
    let k = StateKey {
        group: key.0.clone(),
        topic_id: key.1,
        partition: key.2,
    };
    let Some(p) = state_partition(&topic, &k) else {
        tracing::debug!(group = %key.0, partition = key.2, "no local share-state partition to write to");
        return Ok(None);
    };
    sp.snapshot_epoch += 1;
    let now = runnel_core::clock::now_ms();
    let value = StateValue {
        snapshot_epoch: sp.snapshot_epoch,
        state_epoch: 0,
        leader_epoch,
        start_offset: sp.start_offset(),
        create_timestamp: now,
        write_timestamp: now,
        batches: sp.state_batches(),
    };
    let key_bytes = records::encode_key(&k);
    let value_bytes = records::encode_snapshot(&value);
    let mut batch = runnel_log::batch::build_batch(&[(Some(&key_bytes), Some(&value_bytes))], now);
    let appended = host.append_as_leader(&p, |log, epoch| log.append(&mut batch, epoch, now))?;
    Ok(Some((p, Appended::after(&appended))))
}

/// `write` for a share-partition by key, taking its lock; logs a failure (used where
/// nobody waits: releases and lock expiries).
pub fn write_logged(host: &impl Host, key: &SharePartitionKey) {
    let Some(sp) = host.shares().existing_partition(key) else {
        return;
    };
    let epoch = leader_epoch(host, key);
    let written = write(host, key, &mut sp.lock(), epoch);
    if let Err(e) = written {
        tracing::warn!(group = %key.0, partition = key.2, error = %e, "could not persist share-partition state");
    }
}

/// The data partition's leader epoch (recorded in the snapshot, as Kafka does).
pub fn leader_epoch(host: &impl Host, key: &SharePartitionKey) -> i32 {
    host.topics()
        .get_by_id(key.1)
        .and_then(|t| {
            usize::try_from(key.2)
                .ok()
                .and_then(|i| t.partitions.get(i).cloned())
        })
        .map_or(-1, |p| p.leader_epoch())
}

/// Tombstones for deleted share-partitions (DeleteGroups, DeleteShareGroupOffsets), in
/// every state partition this broker leads, so a replay forgets them.
pub fn delete(host: &impl Host, keys: &[SharePartitionKey]) {
    let Some(topic) = host.topics().get(STATE_TOPIC) else {
        return;
    };
    let now = runnel_core::clock::now_ms();
    let led: Vec<&Arc<Partition>> = topic
        .partitions
        .iter()
        .filter(|p| p.replica.lock().is_leader() && !p.storage_offline)
        .collect();
    for key in keys {
        let k = StateKey {
            group: key.0.clone(),
            topic_id: key.1,
            partition: key.2,
        };
        let key_bytes = records::encode_key(&k);
        for p in &led {
            let mut batch = runnel_log::batch::build_batch(&[(Some(&key_bytes), None)], now);
            if let Err(e) =
                host.append_as_leader(p, |log, epoch| log.append(&mut batch, epoch, now))
            {
                tracing::warn!(group = %key.0, partition = key.2, error = %e, "could not delete share-partition state");
            }
        }
    }
}

/// Settles what changed without a request: records released (and wakes the share
/// fetches parked on their partitions) and persisted. Called by the group timer loop.
pub fn tick(host: &impl Host) {
    for key in host.shares().tick() {
        settled(host, &key);
    }
}

/// A share-partition whose records were released: its parked fetches wake and its
/// state is persisted.
pub fn settled(host: &impl Host, key: &SharePartitionKey) {
    let p = host.topics().get_by_id(key.1).and_then(|t| {
        usize::try_from(key.2)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned())
    });
    if let Some(p) = p {
        p.wake();
    }
    write_logged(host, key);
}

/// Makes `sp` current for the data partition's leader epoch `epoch` (the caller holds
/// `sp`'s lock): state built under another epoch (this broker led the partition before,
/// or the state is new here) is read again from the latest persisted snapshot, as a new
/// share-partition leader does in Kafka. Locks held before do not survive.
pub fn sync_leadership(
    host: &impl Host,
    key: &SharePartitionKey,
    sp: &mut SharePartitionState,
    epoch: i32,
) {
    if sp.leader_epoch == Some(epoch) {
        return;
    }
    let was_built = sp.leader_epoch.is_some();
    match read_latest(host, key) {
        Some(v) => {
            sp.restore(v.start_offset, &v.batches);
            sp.snapshot_epoch = sp.snapshot_epoch.max(v.snapshot_epoch);
        }
        None if was_built => *sp = SharePartitionState::new(),
        None => {}
    }
    sp.leader_epoch = Some(epoch);
}

/// Whether share-partition state can be persisted here now. In a cluster whose state
/// topic does not exist yet this asks the controller for it and answers false: a share
/// fetch then acquires nothing until it exists, so no acknowledgement is ever answered
/// without being written.
pub fn ready(host: &impl Host) -> bool {
    if host.topics().get(STATE_TOPIC).is_some() {
        return true;
    }
    ensure_in_cluster(host);
    false
}
