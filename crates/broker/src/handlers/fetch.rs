//! Fetch: read whole batches from each requested partition; long-poll until `min_bytes`
//! are available or `max_wait_ms` passes. Supports sessionless fetches (session id 0,
//! epoch -1: librdkafka, kafkajs) and incremental fetch sessions (KIP-227: kafka-python,
//! the Java client).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use runnel_log::{FileSlice, LogError};
use runnel_protocol::kp::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use runnel_protocol::kp::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use runnel_protocol::{decode_body, DecodeError, ParsedRequest};

use super::{encode, ResponseFuture};
use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::handlers::fetch_session::{PartitionKey, SessionError, SessionPartition};
use crate::server::response::{Piece, Response};

/// A client may ask to wait for longer; a connection is not parked beyond this.
const MAX_WAIT_CAP_MS: u64 = 60_000;
const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

/// How this request relates to a fetch session.
#[derive(Clone, Copy)]
enum Mode {
    /// Full request and full response, no session (session id 0 in the response).
    Sessionless,
    /// Full request that opened session `id`; full response.
    Opened(i32),
    /// Incremental request on session `id`; the response holds only partitions with news.
    Incremental(i32),
}

pub fn handle(
    broker: &Arc<Broker>,
    req: &ParsedRequest,
    az: &crate::authz::Ctx,
    qc: &crate::server::quota::Ctx,
    replica_of: &std::sync::atomic::AtomicI32,
) -> Result<ResponseFuture, DecodeError> {
    let body: FetchRequest = decode_body(&req.body, req.api_version)?;
    let by_id = req.api_version >= 13;
    let requested: Vec<SessionPartition> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| SessionPartition {
                key: PartitionKey {
                    topic: t.topic.clone(),
                    topic_id: t.topic_id,
                    partition: p.partition,
                },
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                sent_high_watermark: i64::MIN,
                sent_log_start_offset: i64::MIN,
            })
        })
        .collect();
    let forgotten: Vec<PartitionKey> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |&p| PartitionKey {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partition: p,
            })
        })
        .collect();
    let sessions = &broker.fetch_sessions;
    let (mode, wanted) = match (body.session_id, body.session_epoch) {
        (0, FINAL_EPOCH) => (Mode::Sessionless, requested),
        (0, INITIAL_EPOCH) => (Mode::Opened(sessions.create(requested.clone())), requested),
        (0, _) => return session_error(req, ErrorCode::InvalidFetchSessionEpoch),
        (id, FINAL_EPOCH) => {
            sessions.remove(id);
            (Mode::Sessionless, requested)
        }
        (id, INITIAL_EPOCH) => {
            sessions.remove(id);
            (Mode::Opened(sessions.create(requested.clone())), requested)
        }
        (id, epoch) => match sessions.update(id, epoch, requested, &forgotten) {
            Ok(all) => (Mode::Incremental(id), all),
            Err(SessionError::NotFound) => {
                return session_error(req, ErrorCode::FetchSessionIdNotFound)
            }
            Err(SessionError::InvalidEpoch) => {
                return session_error(req, ErrorCode::InvalidFetchSessionEpoch)
            }
        },
    };
    let read_committed = body.isolation_level == 1;
    // A follower broker copying partitions (replica id >= 0; in the body before v15).
    let replica_id = if req.api_version >= 15 {
        body.replica_state.replica_id.0
    } else {
        body.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    if let Some(id) = replica {
        replica_of.store(id, std::sync::atomic::Ordering::Relaxed);
    }
    // KIP-392 (Fetch v11+): a consumer may read from a follower, and names its rack.
    let consumer = (replica.is_none() && req.api_version >= 11).then(|| ConsumerFetch {
        rack: body.rack_id.to_string(),
    });
    let denied = denied_partitions(broker, az, &wanted, replica.is_some(), by_id);
    let min_bytes = body.min_bytes.max(0) as usize;
    // The broker's cap (Kafka's fetch.max.bytes, replica.fetch.response.max.bytes)
    // bounds the response whatever the client asks; as in Kafka the first batch still
    // goes out whole when it alone is larger, so a consumer can always make progress.
    let cap = if replica.is_some() {
        broker.config.limits.replica_fetch_response_max_bytes
    } else {
        broker.config.limits.fetch_max_bytes
    };
    let max_bytes = if body.max_bytes <= 0 {
        cap
    } else {
        (body.max_bytes as usize).min(cap)
    };
    let max_wait = Duration::from_millis((body.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP_MS));
    let broker = broker.clone();
    let req = req.clone();
    // consumer_byte_rate: consumers only, never followers.
    let quota = replica.is_none().then(|| qc.clone());
    Ok(Box::pin(async move {
        let max_wait = match replica {
            Some(_) => broker.cluster().replica_fetch_wait(max_wait),
            None => max_wait,
        };
        let deadline = tokio::time::Instant::now() + max_wait;
        // Parked on the wanted partitions only (Kafka's purgatory): an append elsewhere
        // does not wake this fetch.
        let waiter = Arc::new(tokio::sync::Notify::new());
        // A follower's progress (its fetch offsets) is recorded once per request, on
        // the first pass, as Kafka does; later passes only read.
        let mut follower = replica;
        // A follower's fetch also answers once this broker becomes the leader of another
        // partition: the follower names that partition only in its next fetch, and an
        // acks=all write there waits for it (`Cluster::new_leaderships`); just after such
        // a change it parks only briefly (`Cluster::replica_fetch_wait`).
        let mut leaderships = replica.map(|_| broker.cluster().new_leaderships());
        let mut answer_now = false;
        loop {
            let (datas, slices, bytes, any_error) = read_all(
                &broker,
                &wanted,
                max_bytes,
                read_committed,
                by_id,
                Pass {
                    replica,
                    record_progress: follower.take(),
                    consumer: consumer.as_ref(),
                    waiter: &waiter,
                    denied: &denied,
                },
            );
            let expired = tokio::time::Instant::now() >= deadline;
            if bytes >= min_bytes || any_error || expired || answer_now || wanted.is_empty() {
                let mut response = assemble(&broker, mode, &wanted, datas, by_id);
                if let Some(qc) = &quota {
                    response.throttle_time_ms =
                        qc.record(crate::server::quota::CONSUMER_BYTE_RATE, bytes as f64);
                }
                return Some(respond(&req, &response, slices));
            }
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                Some(Ok(())) = async {
                    match leaderships.as_mut() {
                        Some(rx) => Some(rx.changed().await),
                        None => None,
                    }
                } => answer_now = true,
            }
        }
    }))
}

fn session_error(req: &ParsedRequest, code: ErrorCode) -> Result<ResponseFuture, DecodeError> {
    super::ready(req, &FetchResponse::default().with_error_code(code.code()))
}

/// Who reads in one pass of `read_all`, and where it parks.
struct Pass<'a> {
    /// The fetching follower's id (a replica fetch).
    replica: Option<i32>,
    /// The follower again, on the first pass only: its fetch offsets are recorded once
    /// per request, as Kafka does.
    record_progress: Option<i32>,
    consumer: Option<&'a ConsumerFetch>,
    /// Parked on every partition found, before it is read.
    waiter: &'a Arc<tokio::sync::Notify>,
    /// Per wanted partition: refused by the authorizer.
    denied: &'a [bool],
}

/// Kafka's KafkaApis.handleFetchRequest: a follower needs CLUSTER_ACTION on the
/// cluster, a consumer READ on each topic; what is refused is answered
/// TOPIC_AUTHORIZATION_FAILED. One entry per wanted partition.
fn denied_partitions(
    broker: &Broker,
    az: &crate::authz::Ctx,
    wanted: &[SessionPartition],
    follower: bool,
    by_id: bool,
) -> Vec<bool> {
    use crate::authz::acl::Operation;
    if !az.enabled() {
        return vec![false; wanted.len()];
    }
    if follower {
        return vec![!az.cluster(Operation::ClusterAction); wanted.len()];
    }
    let mut decided: std::collections::HashMap<String, bool> = Default::default();
    wanted
        .iter()
        .map(|w| {
            let name = if by_id {
                match broker.topics.get_by_id(w.key.topic_id) {
                    Some(t) => t.name.clone(),
                    // Unknown id: answered UNKNOWN_TOPIC_ID.
                    None => return false,
                }
            } else {
                w.key.topic.0.to_string()
            };
            *decided
                .entry(name)
                .or_insert_with_key(|n| !az.topic(Operation::Read, n))
        })
        .collect()
}

/// A fetch from a consumer that knows KIP-392 (Fetch v11+).
struct ConsumerFetch {
    /// `client.rack`, empty when not set.
    rack: String,
}

/// One pass over the wanted partitions, in order; returns each partition's data (the
/// records as placeholders, see [`Splice`]), the record sets where they lie in the
/// segment files, the bytes read, and whether any partition has an error or a preferred
/// read replica (Kafka then answers at once).
fn read_all(
    broker: &Broker,
    wanted: &[SessionPartition],
    max_bytes: usize,
    read_committed: bool,
    by_id: bool,
    pass: Pass<'_>,
) -> (Vec<PartitionData>, Vec<FileSlice>, usize, bool) {
    let Pass {
        replica,
        record_progress,
        consumer,
        waiter,
        denied,
    } = pass;
    let mut out = Vec::with_capacity(wanted.len());
    let mut slices = Vec::new();
    let mut total = 0usize;
    let mut any_error = false;
    for (i, w) in wanted.iter().enumerate() {
        let mut data = PartitionData::default()
            .with_partition_index(w.key.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1))
            .with_aborted_transactions(if read_committed {
                Some(Vec::new())
            } else {
                None
            })
            .with_records(Some(Bytes::new()));
        if denied.get(i).copied().unwrap_or(false) {
            out.push(data.with_error_code(ErrorCode::TopicAuthorizationFailed.code()));
            any_error = true;
            continue;
        }
        let topic = if by_id {
            broker.topics.get_by_id(w.key.topic_id)
        } else {
            broker.topics.get(&w.key.topic.0)
        };
        let partition = topic.as_ref().and_then(|t| {
            usize::try_from(w.key.partition)
                .ok()
                .and_then(|i| t.partitions.get(i).cloned())
        });
        if let Some(p) = &partition {
            p.park(waiter);
        }
        let refused = partition
            .as_ref()
            .and_then(|p| leadership_error(p, w.current_leader_epoch, consumer.is_some()));
        match (topic.is_some(), partition) {
            (false, _) if by_id => {
                data = data.with_error_code(ErrorCode::UnknownTopicId.code());
                any_error = true;
            }
            (_, None) => {
                data = data.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                any_error = true;
            }
            (_, Some(p)) if p.is_offline() => {
                data = data.with_error_code(ErrorCode::KafkaStorageError.code());
                any_error = true;
            }
            (_, Some(_)) if refused.is_some() => {
                data = data.with_error_code(refused.map_or(0, ErrorCode::code));
                any_error = true;
            }
            (_, Some(p)) => {
                if let Some(follower) = record_progress {
                    // The follower has everything below its fetch offset.
                    // A moved high watermark wakes the consumers parked on `p`.
                    let expand = crate::storage::replication::on_follower_fetch(
                        &p,
                        follower,
                        w.fetch_offset,
                        broker.clock.now_ms(),
                    );
                    if let Some(proposal) = expand {
                        if let Some(t) = topic.as_ref() {
                            tracing::info!(topic = %p.topic, partition = p.index, follower, isr = ?proposal.isr, "expanding ISR: follower caught up");
                            broker
                                .cluster()
                                .request_isr_change(crate::cluster::IsrChange {
                                    partition: p.clone(),
                                    topic_id: t.id,
                                    proposal,
                                });
                        }
                    }
                }
                let log = p.log.lock();
                let hw = p.high_watermark_with(&log);
                let lso = log.last_stable_offset().min(hw);
                let preferred = consumer
                    .and_then(|c| preferred_read_replica(broker, &p, w.fetch_offset, &c.rack));
                if let Some(id) = preferred {
                    // KIP-392: no records, only where to read them (Kafka's answer too).
                    data = data
                        .with_high_watermark(hw)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(log.log_start_offset())
                        .with_preferred_read_replica(BrokerId(id));
                    any_error = true;
                    out.push(data);
                    continue;
                }
                // Consumers see nothing past the high watermark (read_committed: the last
                // stable offset); followers copy everything.
                let upper = match replica {
                    Some(_) => log.log_end_offset(),
                    None if read_committed => lso,
                    None => hw,
                };
                data = data
                    .with_high_watermark(hw)
                    .with_last_stable_offset(lso)
                    .with_log_start_offset(log.log_start_offset());
                if read_committed {
                    let aborted = log
                        .aborted_transactions(w.fetch_offset, upper)
                        .into_iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_first_offset(a.first_offset)
                        })
                        .collect();
                    data = data.with_aborted_transactions(Some(aborted));
                }
                let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
                // KIP-74: the first batch of the response is returned even when it is
                // larger than the limits, so a consumer can always make progress.
                match log.read_slice(w.fetch_offset, budget, upper, total == 0) {
                    Ok(None) => broker.metrics.record_fetch(&p.topic, 0),
                    Ok(Some(slice)) => {
                        total += slice.len;
                        broker.metrics.record_fetch(&p.topic, slice.len as u64);
                        data = data.with_records(Some(Splice::placeholder(slices.len())));
                        slices.push(slice);
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => {
                        data = data.with_error_code(ErrorCode::OffsetOutOfRange.code());
                        any_error = true;
                    }
                    Err(e) => {
                        drop(log);
                        p.note_storage_error(&e);
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "fetch read failed");
                        data = data.with_error_code(ErrorCode::KafkaStorageError.code());
                        any_error = true;
                    }
                }
            }
        }
        out.push(data);
    }
    (out, slices, total, any_error)
}

/// Encodes a fetch response whose record sets are `slices` (placeholders in `body`).
fn respond(req: &ParsedRequest, body: &FetchResponse, slices: Vec<FileSlice>) -> Response {
    let Some(encoded) = encode(req, body) else {
        return super::UNENCODABLE;
    };
    if slices.is_empty() || encoded.is_empty() {
        return encoded;
    }
    let encoded = match encoded.to_bytes() {
        Ok(b) => b,
        Err(_) => return super::UNENCODABLE,
    };
    let flexible = req.api_version >= FIRST_FLEXIBLE_VERSION;
    match Splice::apply(encoded, slices, flexible) {
        Ok(r) => r,
        Err(why) => {
            tracing::error!(version = req.api_version, correlation_id = req.correlation_id, %why, "could not place the record sets in a fetch response; closing the connection");
            super::UNENCODABLE
        }
    }
}

/// Fetch v12 is the first flexible version: compact (varint) lengths.
const FIRST_FLEXIBLE_VERSION: i16 = 12;

/// The record sets of a fetch response go out from the segment files, not through
/// memory: each partition's records are encoded as a 16-byte placeholder (this
/// process's random tag and the slice's index), found again in the encoded response and
/// replaced by the slice with its true length prefix. The rest of the response is
/// encoded by the generated code, as every other response is.
struct Splice;

const PLACEHOLDER_BYTES: usize = 16;

impl Splice {
    /// This process's tag: random, so no field of a response can spell a placeholder.
    fn tag() -> [u8; 8] {
        use std::hash::{BuildHasher, Hasher};
        static TAG: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
        *TAG.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id() as u64);
            h.finish().to_be_bytes()
        })
    }

    fn marker(index: usize) -> [u8; PLACEHOLDER_BYTES] {
        let mut m = [0u8; PLACEHOLDER_BYTES];
        m[..8].copy_from_slice(&Self::tag());
        m[8..].copy_from_slice(&(index as u64).to_be_bytes());
        m
    }

    fn placeholder(index: usize) -> Bytes {
        Bytes::copy_from_slice(&Self::marker(index))
    }

    /// The encoded length prefix of a records field of `len` bytes.
    fn length_prefix(len: usize, flexible: bool, out: &mut BytesMut) {
        if !flexible {
            out.put_i32(len as i32);
            return;
        }
        // Compact nullable bytes: an unsigned varint of the length plus one.
        let mut v = len as u64 + 1;
        while v >= 0x80 {
            out.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    }

    /// Replaces the placeholders of `encoded` (a whole frame, size prefix first), in
    /// order, by `slices`, and fixes the frame size.
    fn apply(encoded: Bytes, slices: Vec<FileSlice>, flexible: bool) -> Result<Response, String> {
        let mut expected = BytesMut::new();
        Self::length_prefix(PLACEHOLDER_BYTES, flexible, &mut expected);
        let prefix_len = expected.len();
        let mut size = encoded.len() - 4;
        let mut pieces = Vec::with_capacity(slices.len() * 2 + 1);
        let mut head = BytesMut::new();
        let mut at = 0usize;
        for (i, slice) in slices.into_iter().enumerate() {
            let marker = Self::marker(i);
            let found = encoded[at..]
                .windows(PLACEHOLDER_BYTES)
                .position(|w| w == marker)
                .map(|p| at + p)
                .ok_or_else(|| format!("placeholder {i} is missing"))?;
            let prefix_at = found
                .checked_sub(prefix_len)
                .filter(|&p| p >= at && encoded[p..found] == expected[..])
                .ok_or_else(|| format!("placeholder {i} is not a records field"))?;
            head.extend_from_slice(&encoded[at..prefix_at]);
            let before = head.len();
            Self::length_prefix(slice.len, flexible, &mut head);
            size = size - prefix_len - PLACEHOLDER_BYTES + (head.len() - before) + slice.len;
            pieces.push(Piece::Mem(head.split().freeze()));
            pieces.push(Piece::File(slice));
            at = found + PLACEHOLDER_BYTES;
        }
        head.extend_from_slice(&encoded[at..]);
        pieces.push(Piece::Mem(head.freeze()));
        let size = i32::try_from(size).map_err(|_| format!("a response of {size} bytes"))?;
        let Some(Piece::Mem(first)) = pieces.first_mut() else {
            unreachable!("the first piece is the frame's header")
        };
        let mut patched = BytesMut::from(&first[..]);
        patched[..4].copy_from_slice(&size.to_be_bytes());
        *first = patched.freeze();
        Ok(Response::from_pieces(pieces))
    }
}

/// Why this broker cannot serve a fetch of `p` for a client that believes the leader epoch
/// is `current_epoch` (-1: unchecked): not the leader (nor, for a KIP-392 consumer, a
/// follower), or an epoch mismatch (KIP-320).
fn leadership_error(
    p: &crate::storage::partition::Partition,
    current_epoch: i32,
    follower_may_serve: bool,
) -> Option<ErrorCode> {
    let serves = {
        let r = p.replica.lock();
        r.is_leader() || (follower_may_serve && r.leader >= 0 && r.replicas.contains(&r.local_id))
    };
    if !serves {
        return Some(ErrorCode::NotLeaderOrFollower);
    }
    let epoch = p.leader_epoch();
    if current_epoch > epoch {
        Some(ErrorCode::UnknownLeaderEpoch)
    } else if current_epoch >= 0 && current_epoch < epoch {
        Some(ErrorCode::FencedLeaderEpoch)
    } else {
        None
    }
}

/// KIP-392 with `replica.selector.class` = RackAwareReplicaSelector, on the leader: the
/// follower in the consumer's rack that has the fetch offset (the most caught-up one),
/// unless the leader is in that rack itself or the consumer names no rack.
fn preferred_read_replica(
    broker: &Broker,
    p: &crate::storage::partition::Partition,
    fetch_offset: i64,
    rack: &str,
) -> Option<i32> {
    if rack.is_empty() || !broker.config.cluster.rack_aware_replica_selector {
        return None;
    }
    if broker.config.rack.as_deref() == Some(rack) {
        return None;
    }
    let image = broker.cluster().current_image();
    let in_rack = |id: &i32| {
        image
            .brokers
            .get(id)
            .is_some_and(|b| !b.fenced && b.rack.as_deref() == Some(rack))
    };
    let r = p.replica.lock();
    if !r.is_leader() {
        return None;
    }
    r.followers
        .iter()
        .filter(|(id, f)| f.log_end >= fetch_offset && in_rack(id))
        .max_by_key(|(_, f)| (f.log_end, f.caught_up_ms))
        .map(|(id, _)| *id)
}

/// Groups partition data by topic; in an incremental session keeps only partitions with
/// news and remembers what was sent.
fn assemble(
    broker: &Broker,
    mode: Mode,
    wanted: &[SessionPartition],
    datas: Vec<PartitionData>,
    by_id: bool,
) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let session_id = match mode {
        Mode::Sessionless => 0,
        Mode::Opened(id) | Mode::Incremental(id) => id,
    };
    for (w, data) in wanted.iter().zip(datas) {
        let news = data.error_code != 0
            || data.records.as_ref().is_some_and(|r| !r.is_empty())
            || data.high_watermark != w.sent_high_watermark
            || data.log_start_offset != w.sent_log_start_offset;
        if let Mode::Incremental(_) = mode {
            if !news {
                continue;
            }
        }
        if session_id != 0 {
            broker.fetch_sessions.record_sent(
                session_id,
                &w.key,
                data.high_watermark,
                data.log_start_offset,
            );
        }
        let same_topic = topics.last().is_some_and(|t| {
            if by_id {
                t.topic_id == w.key.topic_id
            } else {
                t.topic == w.key.topic
            }
        });
        if !same_topic {
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(w.key.topic.clone())
                    .with_topic_id(w.key.topic_id),
            );
        }
        topics
            .last_mut()
            .expect("pushed above")
            .partitions
            .push(data);
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::kp::protocol::Decodable;
    use std::io::Write;

    /// A fetch response of three partitions (two with records from one file, one empty)
    /// encoded with placeholders and spliced decodes, at a non-flexible and a flexible
    /// version, to the response encoded with the records in memory.
    #[test]
    fn spliced_responses_decode_as_if_the_records_were_in_memory() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let file = Arc::new(file);
        let ranges = [(100usize, 300usize), (5_000, 64_000)];
        for version in [4i16, 11, 12, 16] {
            let build = |records: &dyn Fn(usize) -> Bytes| {
                let part = |i: i32, r: Option<Bytes>| {
                    PartitionData::default()
                        .with_partition_index(i)
                        .with_high_watermark(42)
                        .with_records(r)
                };
                let topic = FetchableTopicResponse::default();
                // Each version carries the topic by name or by id, not both.
                let topic = if version >= 13 {
                    topic.with_topic_id(uuid::Uuid::from_u128(0x5eed))
                } else {
                    topic.with_topic(runnel_protocol::kp::messages::TopicName(
                        super::super::str_bytes("t"),
                    ))
                };
                FetchResponse::default()
                    .with_session_id(if version >= 7 { 7 } else { 0 })
                    .with_responses(vec![topic.with_partitions(vec![
                        part(0, Some(records(0))),
                        part(1, Some(Bytes::new())),
                        part(2, Some(records(1))),
                    ])])
            };
            let req = ParsedRequest {
                api_key: runnel_protocol::kp::messages::ApiKey::Fetch,
                api_version: version,
                correlation_id: 99,
                client_id: None,
                body: Bytes::new(),
            };
            let in_memory = build(&|i| {
                let (a, n) = ranges[i];
                Bytes::copy_from_slice(&data[a..a + n])
            });
            let want = encode(&req, &in_memory).unwrap().to_bytes().unwrap();
            assert!(!want.is_empty(), "v{version} encodes");
            let slices = ranges
                .iter()
                .map(|&(a, n)| FileSlice {
                    file: file.clone(),
                    position: a as u64,
                    len: n,
                })
                .collect();
            let spliced = respond(&req, &build(&Splice::placeholder), slices);
            assert_eq!(spliced.pieces().len(), 5, "v{version}");
            assert_eq!(spliced.to_bytes().unwrap(), want, "v{version}");
            let mut body = want.slice(4..);
            let header_version = req.api_key.response_header_version(version);
            runnel_protocol::kp::messages::ResponseHeader::decode(&mut body, header_version)
                .unwrap();
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            assert_eq!(decoded, in_memory, "v{version}");
        }
    }

    /// A placeholder that is not where a records field's length says is refused, not
    /// sent as a frame of the wrong size.
    #[test]
    fn a_misplaced_placeholder_is_refused() {
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        frame.put_i32(3); // not the length prefix of a 16-byte field
        frame.extend_from_slice(&Splice::marker(0));
        let file = Arc::new(tempfile::tempfile().unwrap());
        let slice = FileSlice {
            file,
            position: 0,
            len: 0,
        };
        assert!(Splice::apply(frame.freeze(), vec![slice], false).is_err());
    }
}
