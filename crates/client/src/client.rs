//! [`Client`]: bootstrap, metadata and routing of each partition's requests to its leader,
//! and the operations the CLI needs (produce, fetch, list offsets, topic administration).
//!
//! Thread-safe; clones share connections and the metadata cache. Requests from concurrent
//! tasks to the same broker are pipelined on one connection.

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{Error, Result};
use crate::records::{
    decode_committed_batches, encode_batch, ConsumerRecord, ProducerIdentity, ProducerRecord,
};
use crate::versions;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, InitProducerIdRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Settings for a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub connection: ConnectionConfig,
    /// How often a request that failed with a retriable error (leader moved, connection
    /// lost, topic not yet visible) is retried after refreshing metadata.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Whether metadata lookups for produce may create a missing topic (when the broker
    /// has `auto.create.topics.enable`), as Kafka's producer does.
    pub allow_auto_create_topics: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            allow_auto_create_topics: false,
        }
    }
}

/// Metadata of one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerMetadata {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Metadata of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

/// Metadata of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: String,
    pub is_internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
    pub error_code: i16,
}

/// What a Metadata request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerMetadata>,
    pub topics: Vec<TopicMetadata>,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker's `num.partitions`.
    pub partitions: i32,
    /// -1 for the broker's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// The topic as a CreateTopics request entry.
    pub fn to_creatable(&self) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(topic_name(&self.name))
            .with_num_partitions(self.partitions)
            .with_replication_factor(self.replication_factor)
            .with_configs(
                self.configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            )
    }
}

/// Per-request produce settings.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOptions {
    /// 0 (no answer), 1 (leader wrote it) or -1 (all in-sync replicas have it).
    pub acks: i16,
    pub timeout_ms: i32,
    pub compression: Compression,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            acks: -1,
            timeout_ms: 30_000,
            compression: Compression::None,
        }
    }
}

/// The broker's answer to a produce that asked for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset given to the batch's first record; `None` with acks=0.
    pub base_offset: Option<i64>,
    /// Set when the topic uses LogAppendTime; -1 otherwise.
    pub log_append_time_ms: i64,
}

/// Per-request fetch settings.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    /// 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            isolation_level: 0,
        }
    }
}

/// What one partition returned from a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub partition: i32,
    pub records: Vec<ConsumerRecord>,
    /// Where the next fetch should start: after the last complete batch, or the requested
    /// offset when none was complete.
    pub next_offset: i64,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Size of the record bytes the broker sent.
    pub bytes: usize,
    /// The bytes held no complete batch although there was data: the first batch is larger
    /// than `partition_max_bytes`. Fetch again with a larger limit.
    pub batch_exceeds_limit: bool,
}

/// Which offset ListOffsets should look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The offset of the record with the largest timestamp.
    MaxTimestamp,
    /// The first offset whose timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Latest => -1,
            OffsetSpec::Earliest => -2,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// An answer to ListOffsets for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub partition: i32,
    /// -1 when no record matches a timestamp lookup.
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// A Kafka client for one cluster. Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    bootstrap: Vec<String>,
    state: Mutex<State>,
    /// Serialises connecting, so that concurrent callers share one new connection.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    bootstrap_conn: Option<Connection>,
    brokers: HashMap<i32, String>,
    conns: HashMap<i32, Connection>,
    topics: HashMap<String, TopicMetadata>,
}

/// Splits "host:port,host:port" and fills in Kafka's default port.
pub fn parse_bootstrap(servers: &str) -> Result<Vec<String>> {
    let list: Vec<String> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.strip_prefix("PLAINTEXT://").unwrap_or(s);
            let has_port = match s.rfind(':') {
                Some(i) => {
                    s.starts_with('[') == s[..i].ends_with(']') && s[i + 1..].parse::<u16>().is_ok()
                }
                None => false,
            };
            if has_port {
                s.to_string()
            } else {
                format!("{s}:9092")
            }
        })
        .collect();
    if list.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no broker address in {servers:?}"
        )));
    }
    Ok(list)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

impl Client {
    /// Connects to the first reachable bootstrap server ("host:port[,host:port...]").
    pub async fn connect(bootstrap_servers: &str, config: ClientConfig) -> Result<Client> {
        let bootstrap = parse_bootstrap(bootstrap_servers)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                bootstrap,
                state: Mutex::new(State::default()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        };
        client.bootstrap_connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A connection to any broker, re-bootstrapping if the last one failed.
    pub async fn bootstrap_connection(&self) -> Result<Connection> {
        if let Some(c) = self.live_bootstrap() {
            return Ok(c);
        }
        let _guard = self.inner.connecting.lock().await;
        if let Some(c) = self.live_bootstrap() {
            return Ok(c);
        }
        let mut last_error = None;
        for addr in &self.inner.bootstrap {
            match Connection::connect(addr, &self.inner.config.connection).await {
                Ok(conn) => {
                    self.inner.state.lock().unwrap().bootstrap_conn = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap server unreachable");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("the bootstrap list is never empty"))
    }

    fn live_bootstrap(&self) -> Option<Connection> {
        let state = self.inner.state.lock().unwrap();
        state
            .bootstrap_conn
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// A connection to broker `node_id`, reusing the bootstrap connection when it is the
    /// same address.
    async fn broker_connection(&self, node_id: i32) -> Result<Connection> {
        let addr = {
            let state = self.inner.state.lock().unwrap();
            if let Some(c) = state.conns.get(&node_id).filter(|c| !c.is_closed()) {
                return Ok(c.clone());
            }
            state.brokers.get(&node_id).cloned()
        };
        let Some(addr) = addr else {
            return Err(Error::InvalidArgument(format!(
                "broker {node_id} is not in the cluster metadata"
            )));
        };
        if let Some(c) = self.live_bootstrap().filter(|c| c.addr() == addr) {
            self.inner
                .state
                .lock()
                .unwrap()
                .conns
                .insert(node_id, c.clone());
            return Ok(c);
        }
        let _guard = self.inner.connecting.lock().await;
        if let Some(c) = self
            .inner
            .state
            .lock()
            .unwrap()
            .conns
            .get(&node_id)
            .filter(|c| !c.is_closed())
        {
            return Ok(c.clone());
        }
        let conn = Connection::connect(&addr, &self.inner.config.connection).await?;
        self.inner
            .state
            .lock()
            .unwrap()
            .conns
            .insert(node_id, conn.clone());
        Ok(conn)
    }

    /// Fetches metadata for `topics` (all topics when `None`) and refreshes the cache.
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<ClusterMetadata> {
        let conn = self.bootstrap_connection().await?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_create);
        let response = conn.send(&request, versions::METADATA).await?;
        let metadata = convert_metadata(response);
        let mut state = self.inner.state.lock().unwrap();
        for b in &metadata.brokers {
            state.brokers.insert(b.node_id, b.addr());
        }
        for t in &metadata.topics {
            if t.error_code == 0 {
                state.topics.insert(t.name.clone(), t.clone());
            } else {
                state.topics.remove(&t.name);
            }
        }
        Ok(metadata)
    }

    /// The topic's metadata, from the cache or the broker. Fails with the broker's error
    /// (UnknownTopicOrPartition ...) when the topic is not usable.
    pub async fn topic(&self, topic: &str) -> Result<TopicMetadata> {
        if let Some(t) = self.inner.state.lock().unwrap().topics.get(topic) {
            return Ok(t.clone());
        }
        self.refresh_topic(topic).await
    }

    async fn refresh_topic(&self, topic: &str) -> Result<TopicMetadata> {
        let auto = self.inner.config.allow_auto_create_topics;
        let metadata = self.metadata(Some(&[topic.to_string()]), auto).await?;
        let t = metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                Error::kafka(
                    format!("look up topic {topic}"),
                    ResponseError::UnknownTopicOrPartition.code(),
                    None,
                )
            })?;
        Error::check(t.error_code, || format!("look up topic {topic}"), None)?;
        Ok(t)
    }

    /// The connection to the leader of `topic`/`partition`.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Connection> {
        let t = self.topic(topic).await?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or(Error::UnknownPartition {
                topic: topic.into(),
                partition,
                count: t.partitions.len(),
            })?;
        if p.leader < 0 {
            return Err(Error::NoLeader {
                topic: topic.into(),
                partition,
            });
        }
        self.broker_connection(p.leader).await
    }

    /// Runs `op` and retries it after a metadata refresh while it fails with a retriable
    /// error, up to `config.retries` times.
    async fn with_retries<T, F, Fut>(&self, topic: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && attempt < self.inner.config.retries => {
                    attempt += 1;
                    tracing::debug!(%topic, error = %e, attempt, "retrying after a metadata refresh");
                    tokio::time::sleep(self.inner.config.retry_backoff).await;
                    self.inner.state.lock().unwrap().topics.remove(topic);
                    // A failed refresh shows up again in the next attempt.
                    let _ = self.refresh_topic(topic).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Encodes `records` as one batch and produces it to `topic`/`partition`.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProducerRecord],
        options: &ProduceOptions,
    ) -> Result<ProduceAck> {
        let batch = encode_batch(records, options.compression, None, now_ms())?;
        self.produce_batch(topic, partition, batch, options).await
    }

    /// Produces an already encoded record batch (or several, concatenated). The codec in
    /// `options` is ignored: the batch says how it is compressed.
    ///
    /// Retriable failures are retried after a metadata refresh. A batch whose connection
    /// broke after it was sent may then be stored twice, unless it carries an idempotent
    /// producer id and sequence (the broker answers the resend as a duplicate).
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        options: &ProduceOptions,
    ) -> Result<ProduceAck> {
        self.produce_batch_in(topic, partition, batch, options, None)
            .await
    }

    /// [`Client::produce_batch`] for a transactional producer (`transactional_id`).
    pub async fn produce_batch_in(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        options: &ProduceOptions,
        transactional_id: Option<&str>,
    ) -> Result<ProduceAck> {
        let request = ProduceRequest::default()
            .with_transactional_id(
                transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
            )
            .with_acks(options.acks)
            .with_timeout_ms(options.timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        self.with_retries(topic, || self.produce_once(topic, partition, &request))
            .await
    }

    async fn produce_once(
        &self,
        topic: &str,
        partition: i32,
        request: &ProduceRequest,
    ) -> Result<ProduceAck> {
        let conn = self.leader(topic, partition).await?;
        if request.acks == 0 {
            conn.send_without_response(request, versions::PRODUCE)
                .await?;
            return Ok(ProduceAck {
                base_offset: None,
                log_append_time_ms: -1,
            });
        }
        let response = conn.send(request, versions::PRODUCE).await?;
        let p = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| Error::Protocol {
                addr: conn.addr().to_string(),
                api: kafka_protocol::messages::ApiKey::Produce,
                detail: format!("the response has no result for {topic}/{partition}"),
            })?;
        let message = p.error_message.as_ref().map(|m| m.to_string()).or_else(|| {
            let errors: Vec<String> = p
                .record_errors
                .iter()
                .map(|e| {
                    let m = e.batch_index_error_message.as_deref().unwrap_or("");
                    format!("record {}: {m}", e.batch_index)
                })
                .collect();
            (!errors.is_empty()).then(|| errors.join("; "))
        });
        Error::check(
            p.error_code,
            || format!("produce to {topic}/{partition}"),
            message,
        )?;
        Ok(ProduceAck {
            base_offset: Some(p.base_offset),
            log_append_time_ms: p.log_append_time_ms,
        })
    }

    /// Asks for an idempotent producer id (no transactional id).
    pub async fn init_producer_id(&self) -> Result<ProducerIdentity> {
        let conn = self.bootstrap_connection().await?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1);
        let response = conn.send(&request, versions::INIT_PRODUCER_ID).await?;
        Error::check(response.error_code, || "InitProducerId".to_string(), None)?;
        Ok(ProducerIdentity {
            producer_id: response.producer_id.0,
            producer_epoch: response.producer_epoch,
            base_sequence: 0,
        })
    }

    /// Fetches `topic`/`partition` from `offset`.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        options: &FetchOptions,
    ) -> Result<FetchedPartition> {
        let mut result = self
            .fetch_many(topic, &[(partition, offset)], options)
            .await?;
        result.pop().expect("fetch_many answers every partition").1
    }

    /// Fetches several partitions of `topic`, one request per leader (sent concurrently).
    /// The outer error is for failures of the whole request; each partition has its own.
    pub async fn fetch_many(
        &self,
        topic: &str,
        partitions: &[(i32, i64)],
        options: &FetchOptions,
    ) -> Result<Vec<(i32, Result<FetchedPartition>)>> {
        let t = self.topic(topic).await?;
        let mut by_leader: HashMap<i32, Vec<(i32, i64)>> = HashMap::new();
        let mut out = Vec::new();
        for &(partition, offset) in partitions {
            match t.partitions.iter().find(|p| p.partition == partition) {
                None => out.push((
                    partition,
                    Err(Error::UnknownPartition {
                        topic: topic.into(),
                        partition,
                        count: t.partitions.len(),
                    }),
                )),
                Some(p) if p.leader < 0 => out.push((
                    partition,
                    Err(Error::NoLeader {
                        topic: topic.into(),
                        partition,
                    }),
                )),
                Some(p) => by_leader
                    .entry(p.leader)
                    .or_default()
                    .push((partition, offset)),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (leader, parts) in by_leader {
            let client = self.clone();
            let topic = topic.to_string();
            let options = *options;
            tasks.spawn(async move {
                client
                    .fetch_from(leader, &topic, &parts, &options)
                    .await
                    .map_err(|e| (parts, e))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("fetch tasks do not panic") {
                Ok(results) => {
                    // A partition that moved or vanished makes the cached metadata stale.
                    if results
                        .iter()
                        .any(|(_, r)| r.as_ref().is_err_and(|e| e.is_retriable()))
                    {
                        self.inner.state.lock().unwrap().topics.remove(topic);
                    }
                    out.extend(results)
                }
                Err((parts, e)) => {
                    if e.is_retriable() {
                        self.inner.state.lock().unwrap().topics.remove(topic);
                    }
                    for (partition, _) in parts {
                        out.push((partition, Err(copy_error(&e))));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn fetch_from(
        &self,
        leader: i32,
        topic: &str,
        partitions: &[(i32, i64)],
        options: &FetchOptions,
    ) -> Result<Vec<(i32, Result<FetchedPartition>)>> {
        let conn = self.broker_connection(leader).await?;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(options.max_wait_ms)
            .with_min_bytes(options.min_bytes)
            .with_max_bytes(options.max_bytes)
            .with_isolation_level(options.isolation_level)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&(p, offset)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(offset)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(options.partition_max_bytes)
                        })
                        .collect(),
                )]);
        let response = conn.send(&request, versions::FETCH).await?;
        Error::check(response.error_code, || format!("fetch from {topic}"), None)?;
        let mut out = Vec::with_capacity(partitions.len());
        for &(partition, offset) in partitions {
            let data = response
                .responses
                .iter()
                .filter(|t| t.topic.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition);
            let result = match data {
                None => Err(Error::Protocol {
                    addr: conn.addr().to_string(),
                    api: kafka_protocol::messages::ApiKey::Fetch,
                    detail: format!("the response has no result for {topic}/{partition}"),
                }),
                Some(p) if p.error_code != 0 => Err(Error::kafka(
                    format!("fetch {topic}/{partition} at offset {offset}"),
                    p.error_code,
                    None,
                )),
                Some(p) => {
                    let bytes = p.records.clone().unwrap_or_default();
                    let size = bytes.len();
                    let aborted: Vec<(i64, i64)> = if options.isolation_level == 1 {
                        p.aborted_transactions
                            .iter()
                            .flatten()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    decode_committed_batches(bytes, offset, &aborted)
                        .map_err(|e| Error::Records(format!("{topic}/{partition}: {e}")))
                        .map(|d| FetchedPartition {
                            partition,
                            records: d.records,
                            next_offset: d.next_offset.unwrap_or(offset).max(offset),
                            high_watermark: p.high_watermark,
                            log_start_offset: p.log_start_offset,
                            bytes: size,
                            batch_exceeds_limit: d.next_offset.is_none() && d.partial_tail,
                        })
                }
            };
            out.push((partition, result));
        }
        Ok(out)
    }

    /// Looks up an offset for each of `partitions`.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>> {
        self.with_retries(topic, || self.list_offsets_once(topic, partitions, spec))
            .await
    }

    async fn list_offsets_once(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>> {
        let t = self.topic(topic).await?;
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for &partition in partitions {
            let p = t
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .ok_or(Error::UnknownPartition {
                    topic: topic.into(),
                    partition,
                    count: t.partitions.len(),
                })?;
            if p.leader < 0 {
                return Err(Error::NoLeader {
                    topic: topic.into(),
                    partition,
                });
            }
            by_leader.entry(p.leader).or_default().push(partition);
        }
        let mut out = Vec::with_capacity(partitions.len());
        for (leader, parts) in by_leader {
            let conn = self.broker_connection(leader).await?;
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(0)
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(spec.wire())
                            })
                            .collect(),
                    )]);
            let response = conn.send(&request, versions::LIST_OFFSETS).await?;
            for &partition in &parts {
                let p = response
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition)
                    .ok_or_else(|| Error::Protocol {
                        addr: conn.addr().to_string(),
                        api: kafka_protocol::messages::ApiKey::ListOffsets,
                        detail: format!("the response has no result for {topic}/{partition}"),
                    })?;
                Error::check(
                    p.error_code,
                    || format!("list offsets of {topic}/{partition}"),
                    None,
                )?;
                out.push(ListedOffset {
                    partition,
                    offset: p.offset,
                    timestamp_ms: p.timestamp,
                });
            }
        }
        out.sort_by_key(|o| o.partition);
        Ok(out)
    }

    /// Creates one topic; fails with the broker's error (TopicAlreadyExists ...).
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<()> {
        let mut results = self
            .create_topics(std::slice::from_ref(topic), false)
            .await?;
        results.pop().expect("one result per topic").1
    }

    /// Creates topics; one result per topic, in order.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<(String, Result<()>)>> {
        let conn = self.bootstrap_connection().await?;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only)
            .with_topics(topics.iter().map(NewTopic::to_creatable).collect());
        let response = conn.send(&request, versions::CREATE_TOPICS).await?;
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            let result = match response.topics.iter().find(|r| r.name.0.as_str() == t.name) {
                None => Err(Error::Protocol {
                    addr: conn.addr().to_string(),
                    api: kafka_protocol::messages::ApiKey::CreateTopics,
                    detail: format!("the response has no result for topic {}", t.name),
                }),
                Some(r) => Error::check(
                    r.error_code,
                    || format!("create topic {}", t.name),
                    r.error_message.as_ref().map(|m| m.to_string()),
                ),
            };
            self.inner.state.lock().unwrap().topics.remove(&t.name);
            out.push((t.name.clone(), result));
        }
        Ok(out)
    }

    /// Deletes topics by name; one result per topic, in order.
    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let conn = self.bootstrap_connection().await?;
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topic_names(names.iter().map(|n| topic_name(n)).collect());
        let response = conn.send(&request, versions::DELETE_TOPICS).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let result = match response
                .responses
                .iter()
                .find(|r| r.name.as_ref().map(|n| n.0.as_str()) == Some(name))
            {
                None => Err(Error::Protocol {
                    addr: conn.addr().to_string(),
                    api: kafka_protocol::messages::ApiKey::DeleteTopics,
                    detail: format!("the response has no result for topic {name}"),
                }),
                Some(r) => Error::check(
                    r.error_code,
                    || format!("delete topic {name}"),
                    r.error_message.as_ref().map(|m| m.to_string()),
                ),
            };
            self.inner.state.lock().unwrap().topics.remove(name);
            out.push((name.clone(), result));
        }
        Ok(out)
    }

    /// Deletes one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let mut results = self.delete_topics(&[name.to_string()]).await?;
        results.pop().expect("one result per topic").1
    }

    /// Names of all topics, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let metadata = self.metadata(None, false).await?;
        let mut names: Vec<String> = metadata
            .topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .map(|t| t.name)
            .collect();
        names.sort();
        Ok(names)
    }
}

/// A copy of a request-level error for each partition of the request (errors hold
/// `io::Error`s, which are not `Clone`).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Kafka {
            context,
            code,
            message,
            ..
        } => Error::kafka(context.clone(), *code, message.clone()),
        Error::Disconnected { addr, reason } => Error::Disconnected {
            addr: addr.clone(),
            reason: reason.clone(),
        },
        Error::Io { addr, error } => Error::Disconnected {
            addr: addr.clone(),
            reason: Some(error.to_string()),
        },
        Error::Timeout { addr, api, timeout } => Error::Timeout {
            addr: addr.clone(),
            api: *api,
            timeout: *timeout,
        },
        Error::NoLeader { topic, partition } => Error::NoLeader {
            topic: topic.clone(),
            partition: *partition,
        },
        other => Error::Records(other.to_string()),
    }
}

fn convert_metadata(response: MetadataResponse) -> ClusterMetadata {
    let mut topics: Vec<TopicMetadata> = response
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicMetadata {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                topic_id: t.topic_id.to_string(),
                is_internal: t.is_internal,
                partitions,
                error_code: t.error_code,
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterMetadata {
        cluster_id: response.cluster_id.map(|c| c.to_string()),
        controller_id: response.controller_id.0,
        brokers: response
            .brokers
            .into_iter()
            .map(|b| BrokerMetadata {
                node_id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            })
            .collect(),
        topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_parse_with_default_ports() {
        assert_eq!(
            parse_bootstrap("a:1, b ,PLAINTEXT://c:3").unwrap(),
            vec!["a:1", "b:9092", "c:3"]
        );
        assert_eq!(
            parse_bootstrap("[::1]:9093,[::1]").unwrap(),
            vec!["[::1]:9093", "[::1]:9092"]
        );
        assert!(parse_bootstrap(" , ").is_err());
    }

    #[test]
    fn offset_specs_use_kafkas_sentinels() {
        assert_eq!(OffsetSpec::Latest.wire(), -1);
        assert_eq!(OffsetSpec::Earliest.wire(), -2);
        assert_eq!(OffsetSpec::MaxTimestamp.wire(), -3);
        assert_eq!(OffsetSpec::Timestamp(5).wire(), 5);
    }

    #[test]
    fn broker_addresses_bracket_ipv6() {
        let b = BrokerMetadata {
            node_id: 1,
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
        let b = BrokerMetadata {
            node_id: 1,
            host: "localhost".into(),
            port: 1,
            rack: None,
        };
        assert_eq!(b.addr(), "localhost:1");
    }
}
