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
//! The snapshot is built and appended under the share-partition's lock, so snapshots of
//! one share-partition reach the log in the order of the states they describe.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::records::{self, StateKey, StateValue, STATE_TOPIC};
use super::SharePartitionKey;
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};
use crate::partition::Partition;
use crate::share::partition_state::SharePartitionState;

/// Replays `__share_group_state` (at start-up): the last snapshot of every key.
pub fn load(topics: &crate::topics::TopicRegistry) -> HashMap<SharePartitionKey, StateValue> {
    let mut out = HashMap::new();
    let Some(topic) = topics.get(STATE_TOPIC) else {
        return out;
    };
    for p in &topic.partitions {
        if p.storage_offline {
            tracing::error!(topic = %p.topic, partition = p.index, "not replaying an offline share-state partition");
            continue;
        }
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
                    match (kind, r.value) {
                        (_, None) => {
                            out.remove(&id);
                        }
                        (records::SNAPSHOT_TYPE, Some(v)) => match records::decode_snapshot(v) {
                            Some(v) => {
                                out.insert(id, v);
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
    }
    if !out.is_empty() {
        tracing::info!(share_partitions = out.len(), "loaded share-group state");
    }
    out
}

/// The state topic, created on a single node when first needed. In a cluster only the
/// controller creates topics; until it exists there, nothing is persisted.
fn state_topic(broker: &Broker) -> Result<Arc<crate::topics::Topic>, BrokerError> {
    if let Some(t) = broker.topics.get(STATE_TOPIC) {
        return Ok(t);
    }
    if broker.cluster().is_some() {
        return Err(BrokerError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!("{STATE_TOPIC} does not exist in this cluster"),
        ));
    }
    let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    match broker.topics.create(
        STATE_TOPIC,
        broker.shares.config.state_topic_partitions,
        1,
        configs,
        false,
    ) {
        Ok(t) => Ok(t),
        Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
            broker.topics.get(STATE_TOPIC).ok_or(e)
        }
        Err(e) => Err(e),
    }
}

/// Writes `sp`'s state as a snapshot (the caller holds `sp`'s lock). Returns the state
/// partition and the offset to wait for before the change counts.
pub fn write(
    broker: &Broker,
    key: &SharePartitionKey,
    sp: &mut SharePartitionState,
    leader_epoch: i32,
) -> Result<(Arc<Partition>, i64), BrokerError> {
    let topic = state_topic(broker)?;
    let k = StateKey {
        group: key.0.clone(),
        topic_id: key.1,
        partition: key.2,
    };
    let index = k.state_partition(topic.partitions.len() as i32) as usize;
    let p = topic.partitions.get(index).cloned().ok_or_else(|| {
        BrokerError::new(
            ErrorCode::CoordinatorNotAvailable,
            "share-state partition missing",
        )
    })?;
    sp.snapshot_epoch += 1;
    let now = crate::handlers::now_ms();
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
    let appended = broker.append_as_leader(&p, |log, epoch| log.append(&mut batch, epoch, now))?;
    Ok((p, appended.last_offset + 1))
}

/// `write` for a share-partition by key, taking its lock; logs a failure (used where
/// nobody waits: releases and lock expiries).
pub fn write_logged(broker: &Broker, key: &SharePartitionKey) {
    let Some(sp) = broker.shares.existing_partition(key) else {
        return;
    };
    let epoch = leader_epoch(broker, key);
    let written = write(broker, key, &mut sp.lock(), epoch);
    if let Err(e) = written {
        tracing::warn!(group = %key.0, partition = key.2, error = %e, "could not persist share-partition state");
    }
}

/// The data partition's leader epoch (recorded in the snapshot, as Kafka does).
pub fn leader_epoch(broker: &Broker, key: &SharePartitionKey) -> i32 {
    broker
        .topics
        .get_by_id(key.1)
        .and_then(|t| {
            usize::try_from(key.2)
                .ok()
                .and_then(|i| t.partitions.get(i).cloned())
        })
        .map_or(-1, |p| p.leader_epoch())
}

/// Tombstones for deleted share-partitions (DeleteGroups), so a replay forgets them.
pub fn delete(broker: &Broker, keys: &[SharePartitionKey]) {
    let Some(topic) = broker.topics.get(STATE_TOPIC) else {
        return;
    };
    let now = crate::handlers::now_ms();
    for key in keys {
        let k = StateKey {
            group: key.0.clone(),
            topic_id: key.1,
            partition: key.2,
        };
        let index = k.state_partition(topic.partitions.len() as i32) as usize;
        let Some(p) = topic.partitions.get(index) else {
            continue;
        };
        let key_bytes = records::encode_key(&k);
        let mut batch = runnel_log::batch::build_batch(&[(Some(&key_bytes), None)], now);
        if let Err(e) = broker.append_as_leader(p, |log, epoch| log.append(&mut batch, epoch, now))
        {
            tracing::warn!(group = %key.0, partition = key.2, error = %e, "could not delete share-partition state");
        }
    }
}

/// Settles what changed without a request: records released (and wakes the share
/// fetches parked on their partitions) and persisted. Called by the group timer loop.
pub fn tick(broker: &Broker) {
    for key in broker.shares.tick() {
        settled(broker, &key);
    }
}

/// A share-partition whose records were released: its parked fetches wake and its
/// state is persisted.
pub fn settled(broker: &Broker, key: &SharePartitionKey) {
    let p = broker.topics.get_by_id(key.1).and_then(|t| {
        usize::try_from(key.2)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned())
    });
    if let Some(p) = p {
        p.wake();
    }
    write_logged(broker, key);
}
