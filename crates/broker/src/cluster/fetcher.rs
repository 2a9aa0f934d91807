//! The follower side of replication: `num.replica.fetchers` fetcher tasks per leader broker
//! (default one), each pulling its share of the partitions this broker follows from that
//! leader in one Fetch request (replica id set) over its own connection, exactly as Kafka's
//! ReplicaFetcherThreads do; a partition's fetcher is Kafka's `getFetcherId`.
//!
//! A partition joins a fetcher after a leader change with `needs_truncation` set: before
//! its first fetch the fetcher asks the leader where the follower's latest epoch ends
//! (OffsetForLeaderEpoch) and cuts the local log there (KIP-101/KIP-279), so records the
//! old leader never got replicated disappear instead of diverging.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use runnel_client::{Connection, ConnectionConfig};
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::storage::partition::Partition;
use runnel_core::clock::now_ms;

const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A partition a fetcher copies.
struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
    needs_truncation: bool,
}

type Key = (String, i32);

struct FetcherTask {
    leader: i32,
    /// Which of the leader's `num.replica.fetchers` tasks this is.
    id: usize,
    addr: String,
    partitions: Mutex<BTreeMap<Key, Followed>>,
    wake: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

/// All fetcher tasks of this broker, by (leader id, fetcher id).
#[derive(Default)]
pub struct Fetchers {
    tasks: Mutex<HashMap<(i32, usize), Arc<FetcherTask>>>,
}

/// Kafka's `AbstractFetcherManager.getFetcherId`: `Utils.abs(31 * topic.hashCode +
/// partition) % numFetchers`, with Java's `String.hashCode` (topic names are ASCII, so
/// their bytes are their UTF-16 units) and `Utils.abs` (0 for `Integer.MIN_VALUE`).
fn fetcher_id(topic: &str, partition: i32, fetchers: usize) -> usize {
    let hash = topic
        .bytes()
        .fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
    let n = hash.wrapping_mul(31).wrapping_add(partition);
    let abs = if n == i32::MIN { 0 } else { n.unsigned_abs() };
    abs as usize % fetchers.max(1)
}

impl Fetchers {
    /// Starts (or moves) copying `p` from `leader` at `addr`, truncating first.
    pub fn follow(&self, broker: &Arc<Broker>, leader: i32, addr: String, p: Arc<Partition>) {
        let key = (p.topic.clone(), p.index);
        self.unfollow(&key.0, key.1);
        let id = fetcher_id(
            &p.topic,
            p.index,
            broker.config.cluster.num_replica_fetchers,
        );
        let mut tasks = self.tasks.lock();
        let task = match tasks.get(&(leader, id)) {
            Some(t) if t.addr == addr => t.clone(),
            old => {
                // A new fetcher, or the leader moved to a new address: start over.
                let moved: Vec<(Key, Followed)> = old
                    .map(|t| {
                        t.stop();
                        std::mem::take(&mut *t.partitions.lock())
                            .into_iter()
                            .collect()
                    })
                    .unwrap_or_default();
                let t = Arc::new(FetcherTask {
                    leader,
                    id,
                    addr,
                    partitions: Mutex::new(moved.into_iter().collect()),
                    wake: Notify::new(),
                    stopped: Default::default(),
                });
                tasks.insert((leader, id), t.clone());
                tokio::spawn(run(broker.clone(), t.clone()));
                t
            }
        };
        let epoch = p.leader_epoch();
        task.partitions.lock().insert(
            key,
            Followed {
                partition: p,
                leader_epoch: epoch,
                needs_truncation: true,
            },
        );
        task.wake.notify_one();
    }

    /// Stops copying a partition (it became leader, or is no longer a replica here).
    pub fn unfollow(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        for t in self.tasks.lock().values() {
            t.partitions.lock().remove(&key);
        }
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_all(&self) {
        for (_, t) in self.tasks.lock().drain() {
            t.stop();
        }
    }
}

impl FetcherTask {
    fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Acquire)
    }
}

async fn run(broker: Arc<Broker>, task: Arc<FetcherTask>) {
    let mut conn: Option<Connection> = None;
    let cfg = ConnectionConfig {
        client_id: format!(
            "runnel-replica-fetcher-{}-{}-{}",
            task.id,
            task.leader,
            broker.node_id()
        ),
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_millis(broker.config.cluster.replica_fetch_wait_max_ms)
            + Duration::from_secs(10),
        security: broker.security.inter_broker_client.clone(),
    };
    while !task.is_stopped() {
        if task.partitions.lock().is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task.wake.notified()).await;
            continue;
        }
        let c = match &conn {
            Some(c) if !c.is_closed() => c.clone(),
            _ => match Connection::connect(&task.addr, &cfg).await {
                Ok(c) => {
                    conn = Some(c.clone());
                    c
                }
                Err(e) => {
                    tracing::debug!(leader = task.leader, addr = %task.addr, error = %e, "replica fetcher cannot connect");
                    if ends_by_peer(&e) {
                        broker.cluster().report_peer_closed(task.leader);
                    }
                    tokio::time::sleep(RETRY_BACKOFF * 5).await;
                    continue;
                }
            },
        };
        let outcome = async {
            truncate_diverged(&broker, &task, &c).await?;
            fetch_once(&broker, &task, &c).await
        }
        .await;
        if let Err(e) = outcome {
            tracing::debug!(leader = task.leader, error = %e, "replica fetch failed; retrying");
            if ends_by_peer(&e) {
                broker.cluster().report_peer_closed(task.leader);
            }
            conn = None;
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

/// Whether a fetch failed because the leader's side ended the connection or refused it
/// (its process may be gone), not because it was slow to answer.
fn ends_by_peer(e: &runnel_client::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, UnexpectedEof};
    match e {
        runnel_client::Error::Disconnected { .. } => true,
        runnel_client::Error::Io { error, .. } | runnel_client::Error::Connect { error, .. } => {
            matches!(
                error.kind(),
                ConnectionRefused | ConnectionReset | UnexpectedEof | BrokenPipe
            )
        }
        _ => false,
    }
}

/// Truncates every partition that joined this fetcher since its last round to where the
/// leader says its latest epoch ends.
async fn truncate_diverged(
    broker: &Broker,
    task: &FetcherTask,
    conn: &Connection,
) -> Result<(), runnel_client::Error> {
    let pending: Vec<(Key, Arc<Partition>, i32, Option<i32>)> = task
        .partitions
        .lock()
        .iter()
        .filter(|(_, f)| f.needs_truncation)
        .map(|(k, f)| {
            let latest = f.partition.log.lock().latest_epoch();
            (k.clone(), f.partition.clone(), f.leader_epoch, latest)
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut by_topic: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for ((topic, index), _, current, latest) in &pending {
        by_topic.entry(topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(*current)
                .with_leader_epoch(latest.unwrap_or(-1)),
        );
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(broker.node_id()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let response = conn.send(&request, OFFSET_FOR_LEADER_EPOCH_VERSION).await?;
    for t in response.topics {
        for r in t.partitions {
            let key = (t.topic.0.to_string(), r.partition);
            let Some((_, p, _, latest)) = pending.iter().find(|(k, ..)| *k == key) else {
                continue;
            };
            if r.error_code != 0 {
                tracing::debug!(topic = %key.0, partition = key.1, error = r.error_code, "OffsetForLeaderEpoch refused; will retry");
                continue;
            }
            let now = now_ms();
            let mut log = p.log.lock();
            let end = log.log_end_offset();
            let cut = match latest {
                // Nothing written under any epoch: nothing can have diverged.
                None => end,
                // KIP-279: if the leader knows an older epoch than ours, our log is only
                // good up to where that epoch ends, on both sides.
                Some(mine) if r.leader_epoch == *mine => r.end_offset.min(end),
                Some(_) if r.leader_epoch < 0 || r.end_offset < 0 => {
                    // The leader has no epoch at or below ours: keep what the leader's
                    // high watermark covers, which every ISR member has.
                    p.high_watermark_with(&log).min(end)
                }
                Some(_) => {
                    let (_, mine_end) = log.end_offset_for_epoch(r.leader_epoch);
                    r.end_offset.min(mine_end).min(end)
                }
            };
            if cut < end {
                tracing::info!(topic = %key.0, partition = key.1, from = end, to = cut, leader_epoch = r.leader_epoch, "truncating follower log to the leader's");
                if let Err(e) = log.truncate_to(cut, now) {
                    drop(log);
                    p.note_storage_error(&e);
                    continue;
                }
            }
            let new_end = log.log_end_offset();
            drop(log);
            p.set_high_watermark(p.high_watermark().min(new_end));
            if let Some(f) = task.partitions.lock().get_mut(&key) {
                if Arc::ptr_eq(&f.partition, p) {
                    f.needs_truncation = false;
                }
            }
        }
    }
    Ok(())
}

/// One Fetch round trip for every partition ready to fetch.
async fn fetch_once(
    broker: &Broker,
    task: &FetcherTask,
    conn: &Connection,
) -> Result<(), runnel_client::Error> {
    let cluster = &broker.config.cluster;
    let ready: Vec<(Key, Arc<Partition>, i32)> = task
        .partitions
        .lock()
        .iter()
        .filter(|(_, f)| !f.needs_truncation)
        .map(|(k, f)| (k.clone(), f.partition.clone(), f.leader_epoch))
        .collect();
    if ready.is_empty() {
        tokio::time::sleep(RETRY_BACKOFF).await;
        return Ok(());
    }
    let mut by_topic: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, index), p, epoch) in &ready {
        let (end, start) = {
            let log = p.log.lock();
            (log.log_end_offset(), log.log_start_offset())
        };
        by_topic.entry(topic).or_default().push(
            FetchPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(end)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(start)
                .with_partition_max_bytes(partition_max_bytes(broker, p)),
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(broker.node_id()))
        .with_max_wait_ms(cluster.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let response = conn.send(&request, FETCH_VERSION).await?;
    let mut backoff = false;
    // Bytes copied for replicas this broker is being added as (a reassignment).
    let mut throttled_bytes = 0u64;
    let me = broker.node_id();
    for t in response.responses {
        for d in t.partitions {
            let key = (t.topic.0.to_string(), d.partition_index);
            let Some((_, p, epoch)) = ready.iter().find(|(k, ..)| *k == key) else {
                continue;
            };
            let still_followed = task
                .partitions
                .lock()
                .get(&key)
                .is_some_and(|f| Arc::ptr_eq(&f.partition, p) && !f.needs_truncation);
            if !still_followed {
                continue;
            }
            match d.error_code {
                c if c == ErrorCode::None.code() => {
                    let records = d.records.unwrap_or_else(Bytes::new);
                    if p.replica.lock().adding.contains(&me) {
                        throttled_bytes += records.len() as u64;
                    }
                    let appended = p.append_as_follower(
                        *epoch,
                        &records,
                        d.log_start_offset,
                        d.high_watermark,
                        now_ms(),
                    );
                    match appended {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::debug!(topic = %key.0, partition = key.1, epoch, "replica fetch answered after a leadership change; dropped");
                        }
                        Err(e) => {
                            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "cannot append replicated records");
                            backoff = true;
                            continue;
                        }
                    }
                }
                c if c == ErrorCode::OffsetOutOfRange.code() => {
                    let mut log = p.log.lock();
                    if d.log_start_offset > log.log_end_offset() {
                        // Behind the leader's log start: what we have is gone there.
                        tracing::info!(topic = %key.0, partition = key.1, start = d.log_start_offset, "follower behind the leader's log start; starting over there");
                        let _ = log.reset_to(d.log_start_offset, now_ms());
                    } else if let Some(f) = task.partitions.lock().get_mut(&key) {
                        f.needs_truncation = true;
                    }
                }
                _ => {
                    // Not leader, fenced or unknown epoch, unknown partition: the
                    // metadata image will bring the news; try again shortly.
                    tracing::debug!(topic = %key.0, partition = key.1, error = d.error_code, leader = task.leader, "replica fetch refused");
                    backoff = true;
                }
            }
        }
    }
    if backoff {
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    // `follower.replication.throttled.rate`: pace reassignment copying (the whole fetcher
    // waits, as in Kafka's quota, which delays the fetcher rather than dropping data).
    if let Some(rate) = broker
        .topics
        .effective_config()
        .cluster
        .follower_throttle_rate
    {
        if throttled_bytes > 0 {
            let pause = Duration::from_secs_f64(throttled_bytes as f64 / rate.max(1) as f64);
            tokio::time::sleep(pause.min(Duration::from_secs(10))).await;
        }
    }
    Ok(())
}

/// Bytes to ask for per partition: `replica.fetch.max.bytes`, and no more than one
/// second's worth of the throttle for a replica being added by a reassignment.
fn partition_max_bytes(broker: &Broker, p: &Partition) -> i32 {
    let config = broker.topics.effective_config();
    let max = config.cluster.replica_fetch_max_bytes as u64;
    let throttled = p.replica.lock().adding.contains(&broker.node_id());
    let bytes = match config.cluster.follower_throttle_rate {
        Some(rate) if throttled => max.min(rate.max(1)),
        _ => max,
    };
    bytes.min(i32::MAX as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::fetcher_id;

    /// The values Kafka's `getFetcherId` gives (`Utils.abs(31 * "topic".hashCode() + p) % n`
    /// computed in Java: "orders".hashCode() = -1008770331).
    #[test]
    fn partitions_go_to_kafkas_fetcher() {
        let java = |topic: &str, p: i32, n: i64| -> usize {
            let h: i32 = topic
                .encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
            let x = (h.wrapping_mul(31).wrapping_add(p)) as i64;
            (x.abs() % n) as usize
        };
        assert_eq!(
            "orders"
                .bytes()
                .fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b))),
            -1008770331
        );
        for topic in [
            "orders",
            "t",
            "__consumer_offsets",
            "a-much-longer.topic_name-42",
        ] {
            for p in 0..64 {
                for n in 1..6 {
                    assert_eq!(
                        fetcher_id(topic, p, n as usize),
                        java(topic, p, n),
                        "{topic}-{p} of {n}"
                    );
                }
            }
        }
        assert_eq!(fetcher_id("orders", 3, 1), 0);
    }
}
