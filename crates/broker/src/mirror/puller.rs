//! One mirror partition's copier: while this broker leads the partition and its topic is
//! an active mirror, fetch from the source partition's leader (READ_UNCOMMITTED, which a
//! consumer's fetch serves up to the source high watermark) from the local log end, and
//! write the whole batches through `Partition::append_as_mirror` at the source's offsets,
//! with producer ids, epochs, sequences and transaction markers as they are (so producer
//! state, aborted-transaction lists and the last stable offset follow, as on a follower).
//! Each batch is stamped with this cluster's leader epoch, so the mirror's replicas
//! replicate and truncate under this cluster's epochs like any partition's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{Client, Connection, OffsetSpec};

use super::store::Settings;
use super::PartitionStatus;
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::storage::partition::{AppendError, Partition};
use runnel_core::clock::now_ms;

const FETCH_VERSION: i16 = 12;

/// Why a round ended without copying.
enum Stop {
    /// Mirroring here is over (leadership moved, promoted, link deleted).
    Done,
    /// The source could not be reached or refused: back off and retry.
    Source(String),
}

pub async fn run(broker: Arc<Broker>, link: String, p: Arc<Partition>) {
    let key = (p.topic.clone(), p.index);
    let mut state: &'static str = "";
    let mut attempt = 0u32;
    let mut max_bytes: Option<i32> = None;
    // This partition's own connection to the source leader: fetches that the source
    // parks (nothing new yet) must not hold up other partitions' fetches or the link's
    // admin requests, which a shared connection answers in order behind them.
    let mut conn: Option<Connection> = None;
    while let Some(def) = broker.links.get(&link) {
        if !still_mirrored(&broker, &link, &p) {
            break;
        }
        let settings = match broker.links.settings(&def) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(link, error = %e, "cluster link configs are invalid; not mirroring");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let outcome = match broker.links.source_client(&def).await {
            Ok(client) => {
                round(
                    &broker,
                    &link,
                    &p,
                    &client,
                    &mut conn,
                    &settings,
                    &mut max_bytes,
                )
                .await
            }
            Err(e) => Err(Stop::Source(e)),
        };
        match outcome {
            Ok(()) => {
                attempt = 0;
                if super::changed(&mut state, "MIRRORING") {
                    tracing::info!(link, topic = %p.topic, partition = p.index, "mirroring from the source");
                }
            }
            Err(Stop::Done) => break,
            Err(Stop::Source(error)) => {
                if super::changed(&mut state, "SOURCE_UNAVAILABLE") {
                    tracing::warn!(link, topic = %p.topic, partition = p.index, %error, "cannot mirror from the source; retrying with backoff");
                }
                update(&broker, &link, &key, |s| {
                    s.state = "SOURCE_UNAVAILABLE";
                    s.error = Some(error.clone());
                });
                broker.links.drop_client(&link).await;
                conn = None;
                tokio::time::sleep(super::backoff(attempt, settings.backoff_max)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
    update(&broker, &link, &key, |s| s.state = "STOPPED");
    tracing::info!(link, topic = %p.topic, partition = p.index, "stopped mirroring this partition here");
}

fn still_mirrored(broker: &Broker, link: &str, p: &Arc<Partition>) -> bool {
    // The replica lock is not held while the registry is asked.
    let leads = p.replica.lock().is_leader();
    broker.links.mirror_link_of(&p.topic).as_deref() == Some(link)
        && leads
        && broker
            .topics
            .partition(&p.topic, p.index)
            .is_some_and(|q| Arc::ptr_eq(&q, p))
}

fn update(broker: &Broker, link: &str, key: &(String, i32), f: impl FnOnce(&mut PartitionStatus)) {
    let mut all = broker.links.partitions.lock();
    let s = all.entry(key.clone()).or_insert_with(|| PartitionStatus {
        link: link.to_string(),
        source_end: -1,
        ..Default::default()
    });
    f(s);
}

/// One round: a fetch from the source partition's leader and its append.
async fn round(
    broker: &Broker,
    link: &str,
    p: &Arc<Partition>,
    client: &Client,
    conn: &mut Option<Connection>,
    settings: &Settings,
    max_bytes: &mut Option<i32>,
) -> Result<(), Stop> {
    let c = match conn {
        Some(c) if !c.is_closed() => c.clone(),
        _ => {
            let c = leader_connection(client, &p.topic, p.index, settings).await?;
            *conn = Some(c.clone());
            c
        }
    };
    let result = fetch_and_append(broker, link, p, client, &c, settings, max_bytes).await;
    if matches!(result, Err(Stop::Source(_))) {
        // The leader may have moved: look it up again next round.
        *conn = None;
    }
    result
}

/// A new connection to the source partition's leader, from fresh metadata.
async fn leader_connection(
    client: &Client,
    topic: &str,
    partition: i32,
    settings: &Settings,
) -> Result<Connection, Stop> {
    let source = |e: runnel_client::Error| Stop::Source(e.to_string());
    let metadata = client
        .metadata(Some(&[topic.to_string()]), false)
        .await
        .map_err(source)?;
    let leader = metadata
        .topics
        .iter()
        .find(|t| t.name == topic && t.error_code == 0)
        .and_then(|t| t.partitions.iter().find(|q| q.partition == partition))
        .map(|q| q.leader)
        .filter(|l| *l >= 0)
        .ok_or_else(|| {
            Stop::Source(format!(
                "the source has no leader for {topic}-{partition} (or no such partition)"
            ))
        })?;
    let addr = metadata
        .brokers
        .iter()
        .find(|b| b.node_id == leader)
        .map(|b| b.addr())
        .ok_or_else(|| Stop::Source(format!("the source did not list its broker {leader}")))?;
    Connection::connect(&addr, &settings.client_config().connection)
        .await
        .map_err(source)
}

/// One fetch from the source and its append.
async fn fetch_and_append(
    broker: &Broker,
    link: &str,
    p: &Arc<Partition>,
    client: &Client,
    conn: &Connection,
    settings: &Settings,
    max_bytes: &mut Option<i32>,
) -> Result<(), Stop> {
    let source = |e: runnel_client::Error| Stop::Source(e.to_string());
    let fetch_offset = p.log.lock().log_end_offset();
    let partition_max = max_bytes.unwrap_or(settings.fetch_max_bytes);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(settings.fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(partition_max)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(fetch_offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(partition_max)])]);
    let response = conn.send(&request, FETCH_VERSION).await.map_err(source)?;
    if response.error_code != 0 {
        return Err(Stop::Source(format!(
            "fetch refused: error {}",
            response.error_code
        )));
    }
    let Some(d) = response
        .responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|d| d.partition_index == p.index)
    else {
        return Err(Stop::Source(
            "the source's fetch response has no such partition".into(),
        ));
    };
    let key = (p.topic.clone(), p.index);
    match d.error_code {
        0 => {}
        c if c == ErrorCode::OffsetOutOfRange.code() => {
            return follow_source_range(link, p, client).await;
        }
        c => {
            return Err(Stop::Source(format!(
                "the source refused the fetch of {}-{}: {}",
                p.topic,
                p.index,
                kafka_protocol::ResponseError::try_from_code(c)
                    .map_or_else(|| format!("error code {c}"), |e| format!("{e:?}"))
            )));
        }
    }
    let records = d.records.unwrap_or_else(Bytes::new);
    let whole = whole_batches(&records);
    if whole == 0 && !records.is_empty() {
        // The first batch is larger than we asked for: ask for more next time.
        *max_bytes = Some(partition_max.saturating_mul(2));
        return Ok(());
    }
    *max_bytes = None;
    let mut bytes = records[..whole].to_vec();
    let source_start = d.log_start_offset;
    let written = p.append_as_mirror(link, |log, epoch| {
        if !bytes.is_empty() {
            stamp_epoch(&mut bytes, epoch);
            log.append_replicated(&bytes, now_ms())?;
        }
        let end = log.log_end_offset();
        // Retention or DeleteRecords on the source: follow its log start.
        if source_start > log.log_start_offset() && source_start <= end {
            log.delete_records_before(source_start)?;
        }
        Ok(end)
    });
    let end = match written {
        Ok(end) => end,
        Err(AppendError::NotLeader | AppendError::Mirror(_) | AppendError::Offline) => {
            return Err(Stop::Done)
        }
        Err(AppendError::Log(e)) => {
            return Err(Stop::Source(format!(
                "cannot write the mirrored batches: {e}"
            )));
        }
    };
    update(broker, link, &key, |s| {
        s.state = "MIRRORING";
        s.error = None;
        s.mirrored_offset = end;
        s.source_end = d.high_watermark;
        s.source_start = source_start;
        s.bytes += whole as u64;
    });
    Ok(())
}

/// The fetch offset is outside the source's log: behind its log start (retention ran
/// there before we copied), so start over at it; or past its end (the source lost
/// records, an unclean election or a recreated topic), so cut back to its end.
async fn follow_source_range(link: &str, p: &Arc<Partition>, client: &Client) -> Result<(), Stop> {
    let source = |e: runnel_client::Error| Stop::Source(e.to_string());
    let start = client
        .list_offsets(&p.topic, &[p.index], OffsetSpec::Earliest)
        .await
        .map_err(source)?;
    let end = client
        .list_offsets(&p.topic, &[p.index], OffsetSpec::Latest)
        .await
        .map_err(source)?;
    let (Some(start), Some(end)) = (start.first(), end.first()) else {
        return Err(Stop::Source("ListOffsets answered no offsets".into()));
    };
    let (start, end) = (start.offset, end.offset);
    let done = p.append_as_mirror(link, |log, _| {
        let mine = log.log_end_offset();
        if mine < start {
            tracing::info!(link, topic = %p.topic, partition = p.index, from = mine, to = start, "mirror behind the source's log start; starting over there");
            log.reset_to(start, now_ms())?;
        } else if mine > end {
            tracing::warn!(link, topic = %p.topic, partition = p.index, from = mine, to = end, "the source's log ends before the mirror's (records lost on the source); truncating the mirror to match");
            log.truncate_to(end, now_ms())?;
        }
        Ok(())
    });
    match done {
        Ok(()) => Ok(()),
        Err(AppendError::NotLeader | AppendError::Mirror(_) | AppendError::Offline) => {
            Err(Stop::Done)
        }
        Err(AppendError::Log(e)) => Err(Stop::Source(format!("cannot move the mirror's log: {e}"))),
    }
}

/// The length of the prefix of `records` made of whole batches (a fetch may end in a
/// partial one).
pub fn whole_batches(records: &[u8]) -> usize {
    let mut pos = 0usize;
    while pos + 12 <= records.len() {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let size = 12 + len;
        if len < 49 || pos + size > records.len() {
            break;
        }
        pos += size;
    }
    pos
}

/// Stamps every batch with `epoch` (the partition leader epoch is outside the CRC).
fn stamp_epoch(records: &mut [u8], epoch: i32) {
    let mut pos = 0usize;
    while pos + 12 <= records.len() {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let size = 12 + len.max(0) as usize;
        if pos + 16 <= records.len() {
            let base = i64::from_be_bytes(records[pos..pos + 8].try_into().expect("8 bytes"));
            let end = (pos + size).min(records.len());
            runnel_log::batch::patch_offset_and_epoch(&mut records[pos..end], base, epoch);
        }
        pos += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_batch(base: i64, body: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(&((49 + body) as i32).to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes()); // partition leader epoch
        b.resize(12 + 49 + body, 0);
        b
    }

    #[test]
    fn only_whole_batches_are_taken() {
        let mut r = fake_batch(0, 10);
        let one = r.len();
        r.extend(fake_batch(5, 20));
        let two = r.len();
        assert_eq!(whole_batches(&r), two);
        assert_eq!(whole_batches(&r[..two - 1]), one);
        assert_eq!(whole_batches(&r[..11]), 0);
        assert_eq!(whole_batches(&[]), 0);
    }

    #[test]
    fn epochs_are_restamped_offsets_kept() {
        let mut r = fake_batch(3, 10);
        r.extend(fake_batch(9, 4));
        stamp_epoch(&mut r, 42);
        assert_eq!(&r[12..16], &42i32.to_be_bytes());
        let second = 12 + 49 + 10;
        assert_eq!(&r[second + 12..second + 16], &42i32.to_be_bytes());
        assert_eq!(&r[second..second + 8], &9i64.to_be_bytes());
    }
}
