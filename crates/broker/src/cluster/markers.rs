//! Delivering a transaction's commit or abort markers to the leaders of its partitions
//! (Kafka's TransactionMarkerChannelManager): WriteTxnMarkers to each leader, which
//! answers once the marker is replicated; partitions whose leader moved are retried
//! against the new one until a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{Connection, ConnectionConfig};

use crate::broker::Broker;

const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const DEADLINE: Duration = Duration::from_secs(120);

/// True when every partition's leader acknowledged its marker.
pub async fn send(
    broker: &Broker,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    partitions: Vec<(String, i32)>,
) -> bool {
    let cluster = broker.cluster();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut pending = partitions;
    let config = ConnectionConfig {
        client_id: format!("runnel-txn-markers-{}", broker.node_id()),
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(40),
        security: broker.security.inter_broker_client.clone(),
    };
    while !pending.is_empty() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        // Group by the current leader's address.
        let image = cluster.current_image();
        let mut by_leader: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for (topic, p) in pending.drain(..) {
            let leader = image.partition(&topic, p).map_or(-1, |s| s.leader);
            match image.brokers.get(&leader).filter(|b| !b.fenced) {
                Some(b) => by_leader
                    .entry(format!("{}:{}", b.host, b.port))
                    .or_default()
                    .push((topic, p)),
                // A deleted topic needs no marker.
                None if image.partition(&topic, p).is_none() => {}
                None => leaderless.push((topic, p)),
            }
        }
        pending = leaderless;
        // This broker's own partitions take their markers here, not over the network.
        let me = image.brokers.get(&broker.node_id());
        let mine = me.and_then(|b| by_leader.remove(&format!("{}:{}", b.host, b.port)));
        for (topic, p) in mine.unwrap_or_default() {
            if !deliver_local(broker, producer_id, epoch, commit, &topic, p).await {
                pending.push((topic, p));
            }
        }
        for (addr, parts) in by_leader {
            let failed = match deliver(&addr, &config, producer_id, epoch, commit, &parts).await {
                Ok(failed) => failed,
                Err(e) => {
                    tracing::debug!(leader = %addr, error = %e, "WriteTxnMarkers failed; retrying");
                    parts
                }
            };
            pending.extend(failed);
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    true
}

/// Writes a marker to a partition this broker leads and waits until it is acknowledged
/// (in every in-sync replica); false when it must be retried.
async fn deliver_local(
    broker: &Broker,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    topic: &str,
    partition: i32,
) -> bool {
    let Some(p) = broker.topics.partition(topic, partition) else {
        return false;
    };
    let written = broker.append_marker(&p, producer_id, epoch, commit, 0);
    match written {
        Ok(at) => p.wait_acknowledged(at).await.is_ok(),
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "marker refused; retrying");
            false
        }
    }
}

/// Sends one WriteTxnMarkers; returns the partitions that did not take the marker.
async fn deliver(
    addr: &str,
    config: &ConnectionConfig,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    parts: &[(String, i32)],
) -> Result<Vec<(String, i32)>, runnel_client::Error> {
    let conn = Connection::connect(addr, config).await?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(0)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        );
    let response = conn
        .send(
            &WriteTxnMarkersRequest::default().with_markers(vec![marker]),
            WRITE_TXN_MARKERS_VERSION,
        )
        .await?;
    let mut failed = Vec::new();
    for m in response.markers {
        for t in m.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    tracing::debug!(topic = %t.name.0, partition = p.partition_index, error = p.error_code, "marker refused; retrying");
                    failed.push((t.name.0.to_string(), p.partition_index));
                }
            }
        }
    }
    Ok(failed)
}
