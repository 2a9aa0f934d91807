//! Makes the local broker match each new metadata image: topics created, grown,
//! reconfigured or deleted locally, and every partition made leader, follower or idle as
//! the image says.

use std::sync::Arc;

use runnel_meta::{ClusterImage, PartitionImage};

use super::Cluster;
use crate::broker::Broker;
use crate::storage::partition::Partition;
use crate::storage::replication::{self, Transition};

pub async fn run(broker: Arc<Broker>, cluster: Arc<Cluster>) {
    let mut rx = cluster.image.clone();
    // A restarted broker's image starts from its own disk and may be stale: it could say
    // this broker still leads what was moved away while it was down. Act only on an image
    // that has caught up to this broker's own registration.
    loop {
        let epoch = cluster
            .broker_epoch
            .load(std::sync::atomic::Ordering::Acquire);
        let image = rx.borrow_and_update().clone();
        // ACLs and quotas apply at once, even from a stale image: a restarted broker must
        // not serve a moment without them.
        apply_security(&broker, &image);
        let registered = image
            .brokers
            .get(&broker.node_id())
            .is_some_and(|b| b.epoch == epoch);
        if registered {
            break;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
    let mut first = true;
    loop {
        let image = rx.borrow_and_update().clone();
        apply_image(&broker, &cluster, &image);
        if std::mem::take(&mut first) {
            // The first image opened this broker's partitions: share-partition state
            // is read from the local replicas of `__share_group_state` before any
            // request is served.
            broker
                .shares
                .restore_from(crate::coordinators::share::persist::load(&broker.topics));
        }
        cluster.reconciled.send_replace(image.applied_index);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn apply_image(broker: &Arc<Broker>, cluster: &Cluster, image: &ClusterImage) {
    cluster.note_fenced(image);
    broker.groups.configs.apply_image(&image.broker_configs);
    apply_security(broker, image);
    broker.security.scram.apply_image(&image.broker_configs);
    broker.links.apply_image(broker, &image.broker_configs);
    for t in image.topics.values() {
        let local = match broker.topics.materialize(
            &t.name,
            t.id,
            t.partitions.len() as i32,
            &t.configs,
        ) {
            Ok(local) => local,
            Err(e) => {
                tracing::error!(topic = %t.name, error = %e, "cannot create the local copy of a topic");
                continue;
            }
        };
        for (p, state) in local.partitions.iter().zip(&t.partitions) {
            apply_partition_in(broker, cluster, image, p, state);
        }
    }
    // An empty image is what a broker-only node has before it heard from the quorum.
    if image.applied_index > 0 {
        for local in broker.topics.all() {
            if !image.topics.contains_key(&local.name) {
                for p in &local.partitions {
                    cluster.fetchers.unfollow(&p.topic, p.index);
                }
                if let Err(e) = broker.topics.delete(&local.name) {
                    tracing::warn!(topic = %local.name, error = %e, "cannot delete the local copy of a deleted topic");
                }
            }
        }
    }
    broker.wake_all_fetches();
}

/// ACLs and client quotas from the image's cluster-wide records. The authorizer refuses
/// everyone but super users until the first image that holds any record is applied.
fn apply_security(broker: &Broker, image: &ClusterImage) {
    broker
        .authz
        .apply_image(&image.broker_configs, image.applied_index);
    broker.quotas.apply_image(&image.broker_configs);
}

/// Applies one partition's state (from an AlterPartition reply).
pub fn apply_partition(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    p: &Arc<Partition>,
    state: &PartitionImage,
) {
    let image = cluster.current_image();
    apply_partition_in(broker, cluster, &image, p, state);
}

fn apply_partition_in(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    image: &ClusterImage,
    p: &Arc<Partition>,
    state: &PartitionImage,
) {
    match replication::apply_state_at(p, broker.node_id(), state, broker.clock.now_ms()) {
        Transition::None => {}
        Transition::BecameLeader => {
            tracing::info!(topic = %p.topic, partition = p.index, epoch = state.leader_epoch, "became leader");
            cluster.fetchers.unfollow(&p.topic, p.index);
            cluster.note_new_leadership();
            on_group_leadership(broker, image, p, true);
        }
        Transition::BecameFollower { leader } => {
            on_group_leadership(broker, image, p, false);
            match image.brokers.get(&leader) {
                Some(b) => {
                    tracing::info!(topic = %p.topic, partition = p.index, leader, epoch = state.leader_epoch, "following");
                    cluster.fetchers.follow(
                        broker,
                        leader,
                        format!("{}:{}", b.host, b.port),
                        p.clone(),
                    );
                }
                None => {
                    tracing::warn!(topic = %p.topic, partition = p.index, leader, "leader is not a registered broker");
                    cluster.fetchers.unfollow(&p.topic, p.index);
                }
            }
        }
        Transition::Stopped => {
            on_group_leadership(broker, image, p, false);
            cluster.fetchers.unfollow(&p.topic, p.index);
        }
    }
}

/// The group coordinator moves with the leadership of `__consumer_offsets` partitions.
/// ... and so does the transaction coordinator with `__transaction_state` partitions.
fn on_group_leadership(broker: &Broker, image: &ClusterImage, p: &Partition, leader: bool) {
    let count = |topic: &str| {
        image
            .topics
            .get(topic)
            .map_or(0, |t| t.partitions.len() as i32)
    };
    if p.topic == crate::coordinators::groups::OFFSETS_TOPIC {
        broker
            .groups
            .on_leadership(p, count(crate::coordinators::groups::OFFSETS_TOPIC), leader);
    } else if p.topic == crate::coordinators::txn::TXN_TOPIC {
        broker.txns.on_leadership(
            broker,
            p,
            count(crate::coordinators::txn::TXN_TOPIC),
            leader,
        );
    }
}
