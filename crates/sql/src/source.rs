//! The Kafka source: Spark's options and row schema, offsets tracked by the query (not by
//! a consumer group), partitions read with `assign()` at explicit offsets.
//!
//! A micro-batch takes what the consumer has buffered (capped by `maxOffsetsPerTrigger`),
//! and its end offsets are logged before the batch runs; a restarted query replays exactly
//! the logged range. Not thread-safe: one task owns a source.

use crate::error::{Result, SqlError};
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage, Timestamp};
use rdkafka::metadata::Metadata;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Offsets per topic and partition: Spark's JSON shape `{"topic":{"0":12}}`.
pub type PartitionOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// Spark's sentinel offsets in `startingOffsets`/`endingOffsets` JSON.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// Rows per Arrow batch built from messages.
const ROWS_PER_ARROW_BATCH: usize = 8192;
/// A batch never holds more than this many rows, whatever `maxOffsetsPerTrigger` says.
pub const MAX_ROWS_PER_BATCH: u64 = 2_000_000;
/// How long metadata and offset look-ups may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first metadata request may wait for a broker when the source starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading a planned batch (offsets known to exist) may take.
const BATCH_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How often new partitions (and pattern matches) are looked for.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
pub enum Subscription {
    Topics(Vec<String>),
    Pattern(String),
    Assign(Vec<(String, i32)>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum StartingOffsets {
    Earliest,
    Latest,
    Specific(PartitionOffsets),
    /// Spark's `startingTimestamp`/`startingOffsetsByTimestamp` (and the `ending` ones):
    /// per partition, the first offset whose timestamp is at or after the given one.
    ByTimestamp {
        timestamps: TimestampSpec,
        /// The option it came from, for messages.
        option: &'static str,
        /// What a partition with no such offset gets: its latest offset (true: Spark's
        /// `startingOffsetsByTimestampStrategy 'latest'`, and always for ending offsets)
        /// or an error (`'error'`, Spark's default for starting offsets).
        latest_if_none: bool,
    },
}

/// The timestamps of `*Timestamp` (one for every partition) or `*OffsetsByTimestamp`
/// (per partition, in ms since the epoch).
#[derive(Clone, Debug, PartialEq)]
pub enum TimestampSpec {
    All(i64),
    Partitions(PartitionOffsets),
}

/// The options of a Kafka source, by Spark's names.
#[derive(Clone, Debug)]
pub struct KafkaSourceOptions {
    pub bootstrap_servers: String,
    pub subscription: Subscription,
    pub starting: StartingOffsets,
    pub ending: Option<StartingOffsets>,
    pub max_offsets_per_trigger: Option<u64>,
    /// Spark's `minOffsetsPerTrigger`: a batch waits for this many new offsets, or for
    /// `max_trigger_delay` since the last batch.
    pub min_offsets_per_trigger: Option<u64>,
    pub max_trigger_delay: Duration,
    /// Spark's `minPartitions`: rows of a batch are spread over at least this many
    /// partitions (cores) when the plan allows (an aggregation).
    pub min_partitions: Option<usize>,
    /// The consumer's group id: `kafka.group.id`, else `groupIdPrefix` (default
    /// `spark-kafka-source`) and a random suffix. Nothing is committed to it.
    pub group_id: String,
    pub fail_on_data_loss: bool,
    pub include_headers: bool,
    /// Every other `kafka.*` option, passed to librdkafka without the prefix.
    pub client: BTreeMap<String, String>,
}

impl KafkaSourceOptions {
    pub fn from_options(opts: &BTreeMap<String, String>) -> Result<Self> {
        crate::options::check(&crate::options::KAFKA_SOURCE, opts)?;
        let get = |k: &str| {
            opts.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let bootstrap_servers = get("kafka.bootstrap.servers")
            .ok_or_else(|| SqlError::option("kafka.bootstrap.servers", "is required"))?;
        let subs: Vec<Subscription> = [
            get("subscribe").map(|v| Subscription::Topics(split_list(&v))),
            get("subscribePattern").map(Subscription::Pattern),
            get("assign").map(|v| parse_assign(&v)).transpose()?,
        ]
        .into_iter()
        .flatten()
        .collect();
        if subs.len() != 1 {
            return Err(SqlError::option(
                "subscribe",
                "exactly one of 'subscribe', 'subscribePattern' or 'assign' must be given",
            ));
        }
        let parse_start = |key: &str, v: Option<String>, default: StartingOffsets| match v {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("earliest") => Ok(StartingOffsets::Earliest),
            Some(v) if v.eq_ignore_ascii_case("latest") => Ok(StartingOffsets::Latest),
            Some(v) => parse_offsets_json(&v)
                .map(StartingOffsets::Specific)
                .map_err(|e| SqlError::option(key, e)),
        };
        let strategy = get("startingOffsetsByTimestampStrategy");
        let latest_if_none = match strategy.as_deref().map(str::trim) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("error") => false,
            Some(v) if v.eq_ignore_ascii_case("latest") => true,
            Some(v) => {
                return Err(SqlError::option(
                    "startingOffsetsByTimestampStrategy",
                    format!("{v:?} is not 'error' or 'latest'"),
                ))
            }
        };
        // Spark's precedence: startingTimestamp, then startingOffsetsByTimestamp, then
        // startingOffsets.
        let starting = match by_timestamp(&get, "startingTimestamp", "startingOffsetsByTimestamp")?
        {
            Some((timestamps, option)) => StartingOffsets::ByTimestamp {
                timestamps,
                option,
                latest_if_none,
            },
            None => parse_start(
                "startingOffsets",
                get("startingOffsets"),
                StartingOffsets::Latest,
            )?,
        };
        let ending = match by_timestamp(&get, "endingTimestamp", "endingOffsetsByTimestamp")? {
            Some((timestamps, option)) => Some(StartingOffsets::ByTimestamp {
                timestamps,
                option,
                latest_if_none: true,
            }),
            None => match get("endingOffsets") {
                None => None,
                Some(v) => Some(parse_start(
                    "endingOffsets",
                    Some(v),
                    StartingOffsets::Latest,
                )?),
            },
        };
        if ending == Some(StartingOffsets::Earliest) {
            return Err(SqlError::option(
                "endingOffsets",
                "'earliest' is not allowed",
            ));
        }
        let positive = |k: &str| {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            SqlError::option(k, format!("{v:?} is not a positive number"))
                        })
                })
                .transpose()
        };
        let max_offsets_per_trigger = positive("maxOffsetsPerTrigger")?;
        let min_offsets_per_trigger = positive("minOffsetsPerTrigger")?;
        if let (Some(min), Some(max)) = (min_offsets_per_trigger, max_offsets_per_trigger) {
            if min > max {
                return Err(SqlError::option(
                    "minOffsetsPerTrigger",
                    format!("{min} is higher than maxOffsetsPerTrigger ({max})"),
                ));
            }
        }
        let max_trigger_delay = match get("maxTriggerDelay") {
            None => DEFAULT_MAX_TRIGGER_DELAY,
            Some(v) => crate::ddl::parse_interval_ms(&v)
                .ok()
                .filter(|ms| *ms >= 0)
                .map(|ms| Duration::from_millis(ms as u64))
                .ok_or_else(|| {
                    SqlError::option(
                        "maxTriggerDelay",
                        format!("{v:?} is not a duration ('15m', '30 seconds')"),
                    )
                })?,
        };
        let min_partitions = positive("minPartitions")?
            .map(|n| usize::try_from(n.min(MAX_MIN_PARTITIONS)).unwrap_or(1));
        let group_id = match get("kafka.group.id") {
            Some(g) => g,
            None => format!(
                "{}-{}",
                get("groupIdPrefix").unwrap_or_else(|| "spark-kafka-source".to_string()),
                uuid::Uuid::new_v4()
            ),
        };
        let bool_opt = |k: &str, default: bool| -> Result<bool> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<bool>()
                    .map_err(|_| SqlError::option(k, format!("{v:?} is not true or false"))),
            }
        };
        let client = opts
            .iter()
            .filter_map(|(k, v)| {
                let low = k.to_ascii_lowercase();
                (low.starts_with("kafka.")
                    && low != "kafka.bootstrap.servers"
                    && low != "kafka.group.id")
                    .then(|| (k["kafka.".len()..].to_string(), v.clone()))
            })
            .collect();
        Ok(KafkaSourceOptions {
            bootstrap_servers,
            subscription: subs.into_iter().next().expect("one subscription"),
            starting,
            ending,
            max_offsets_per_trigger,
            min_offsets_per_trigger,
            max_trigger_delay,
            min_partitions,
            group_id,
            fail_on_data_loss: bool_opt("failOnDataLoss", true)?,
            include_headers: bool_opt("includeHeaders", false)?,
            client,
        })
    }

    /// Spark's description, e.g. `KafkaV2[Subscribe[tweets]]`.
    pub fn description(&self) -> String {
        match &self.subscription {
            Subscription::Topics(t) => format!("KafkaV2[Subscribe[{}]]", t.join(",")),
            Subscription::Pattern(p) => format!("KafkaV2[SubscribePattern[{p}]]"),
            Subscription::Assign(a) => format!(
                "KafkaV2[Assign[{}]]",
                a.iter()
                    .map(|(t, p)| format!("{t}-{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Spark's default `maxTriggerDelay`.
const DEFAULT_MAX_TRIGGER_DELAY: Duration = Duration::from_secs(15 * 60);
/// The most partitions `minPartitions` spreads a batch over.
const MAX_MIN_PARTITIONS: u64 = 256;

/// `all_key` (one timestamp for every partition) or else `json_key` (per partition, as
/// `{"topic":{"0":ts}}`), and which option it was.
fn by_timestamp(
    get: &impl Fn(&str) -> Option<String>,
    all_key: &'static str,
    json_key: &'static str,
) -> Result<Option<(TimestampSpec, &'static str)>> {
    if let Some(v) = get(all_key) {
        let ts = v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| *t >= 0)
            .ok_or_else(|| {
                SqlError::option(
                    all_key,
                    format!("{v:?} is not a timestamp in ms since the epoch"),
                )
            })?;
        return Ok(Some((TimestampSpec::All(ts), all_key)));
    }
    let Some(v) = get(json_key) else {
        return Ok(None);
    };
    let m = parse_offsets_json(&v).map_err(|e| SqlError::option(json_key, e))?;
    if let Some((t, p, ts)) = m
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |(p, ts)| (t, p, *ts)))
        .find(|(_, _, ts)| *ts < 0)
    {
        return Err(SqlError::option(
            json_key,
            format!("timestamp {ts} for {t}-{p} is not a timestamp in ms since the epoch"),
        ));
    }
    Ok(Some((TimestampSpec::Partitions(m), json_key)))
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `{"topicA":[0,1],"topicB":[2,4]}`
fn parse_assign(v: &str) -> Result<Subscription> {
    let parsed: BTreeMap<String, Vec<i32>> =
        serde_json::from_str(v).map_err(|e| SqlError::option("assign", format!("{v:?}: {e}")))?;
    Ok(Subscription::Assign(
        parsed
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect(),
    ))
}

/// `{"topicA":{"0":23,"1":-1},"topicB":{"0":-2}}`
pub fn parse_offsets_json(v: &str) -> std::result::Result<PartitionOffsets, String> {
    let parsed: BTreeMap<String, BTreeMap<String, i64>> =
        serde_json::from_str(v).map_err(|e| format!("{v:?}: {e}"))?;
    parsed
        .into_iter()
        .map(|(t, ps)| {
            let ps = ps
                .into_iter()
                .map(|(p, o)| {
                    let p: i32 = p
                        .parse()
                        .map_err(|_| format!("partition {p:?} is not a number"))?;
                    if o < EARLIEST {
                        return Err(format!("offset {o} for {t}-{p} is not valid"));
                    }
                    Ok((p, o))
                })
                .collect::<std::result::Result<_, String>>()?;
            Ok((t, ps))
        })
        .collect()
}

/// The row schema of a Kafka source, as Spark defines it.
pub fn kafka_schema(include_headers: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("timestampType", DataType::Int32, false),
    ];
    if include_headers {
        fields.push(Field::new("headers", headers_type(), true));
    }
    Arc::new(Schema::new(fields))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Binary, true),
    ])
}

fn headers_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(header_fields()),
        true,
    )))
}

/// Turns messages into Arrow batches with the Kafka row schema.
pub(crate) struct RowBuilder {
    schema: SchemaRef,
    include_headers: bool,
    key: BinaryBuilder,
    value: BinaryBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    timestamp_type: Int32Builder,
    headers: ListBuilder<StructBuilder>,
    rows: usize,
    done: Vec<RecordBatch>,
}

impl RowBuilder {
    pub(crate) fn new(schema: SchemaRef, include_headers: bool) -> Self {
        RowBuilder {
            schema,
            include_headers,
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new(),
            timestamp_type: Int32Builder::new(),
            headers: ListBuilder::new(StructBuilder::from_fields(header_fields(), 0)),
            rows: 0,
            done: Vec::new(),
        }
    }

    pub(crate) fn push<M: Message>(&mut self, m: &M) -> Result<()> {
        self.key.append_option(m.key());
        self.value.append_option(m.payload());
        self.topic.append_value(m.topic());
        self.partition.append_value(m.partition());
        self.offset.append_value(m.offset());
        let (ts, kind) = match m.timestamp() {
            Timestamp::NotAvailable => (None, -1),
            Timestamp::CreateTime(t) => (Some(t), 0),
            Timestamp::LogAppendTime(t) => (Some(t), 1),
        };
        self.timestamp.append_option(ts);
        self.timestamp_type.append_value(kind);
        if self.include_headers {
            match m.headers() {
                None => self.headers.append(true),
                Some(h) => {
                    for i in 0..h.count() {
                        let header = h.get(i);
                        let s = self.headers.values();
                        s.field_builder::<StringBuilder>(0)
                            .expect("key builder")
                            .append_value(header.key);
                        s.field_builder::<BinaryBuilder>(1)
                            .expect("value builder")
                            .append_option(header.value);
                        s.append(true);
                    }
                    self.headers.append(true);
                }
            }
        }
        self.rows += 1;
        if self.rows >= ROWS_PER_ARROW_BATCH {
            self.flush(true)?;
        }
        Ok(())
    }

    /// Ends the Arrow batch being built; `more`: another one follows.
    fn flush(&mut self, more: bool) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        // The next batch's values start with this one's size: growing a builder from
        // empty copies its bytes about twice over.
        let value = self.value.finish();
        if more {
            self.value =
                BinaryBuilder::with_capacity(ROWS_PER_ARROW_BATCH, value.value_data().len());
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.key.finish()),
            Arc::new(value),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
        ];
        if self.include_headers {
            cols.push(Arc::new(self.headers.finish()));
        }
        self.done
            .push(RecordBatch::try_new(self.schema.clone(), cols)?);
        self.rows = 0;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Vec<RecordBatch>> {
        self.flush(false)?;
        Ok(self.done)
    }
}

/// Most consumers one source reads with.
const MAX_READERS: usize = 8;
/// What librdkafka may prefetch for one source, over all its consumers (KiB).
const PREFETCH_KBYTES: u64 = 262_144;
/// How long librdkafka postpones fetching a partition whose prefetch queue is full (ms).
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// One consumer reading a share of the source's partitions, with its own connections
/// and fetch sessions; while a batch is read it runs on a thread of its own and builds
/// its share's Arrow rows there. Used by one thread at a time.
struct Reader {
    /// The consumer's message queue, polled in batches (declared first: dropped before
    /// the consumer).
    queue: ConsumerQueue,
    consumer: BaseConsumer,
    /// Messages polled past a batch's end, handed out first by the next batch.
    stash: Stash,
}

impl Drop for KafkaSource {
    /// The readers and the look-up consumer close at once, each on a thread of its own
    /// (see [`close`]), then drop.
    fn drop(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        let consumer = &self.consumer;
        std::thread::scope(|s| {
            s.spawn(move || close(consumer));
            for r in readers {
                s.spawn(move || {
                    close(&r.consumer);
                    drop(r)
                });
            }
        });
    }
}

/// A consumer closed by [`close`] when dropped, for consumers dropped on a query's path
/// (the changelog restore's reader is made and dropped at every rebalance).
pub(crate) struct Closing<C: rdkafka::consumer::ConsumerContext + 'static>(pub BaseConsumer<C>);

impl<C: rdkafka::consumer::ConsumerContext + 'static> Drop for Closing<C> {
    fn drop(&mut self) {
        close(&self.0);
    }
}

impl<C: rdkafka::consumer::ConsumerContext + 'static> std::ops::Deref for Closing<C> {
    type Target = BaseConsumer<C>;

    fn deref(&self) -> &BaseConsumer<C> {
        &self.0
    }
}

/// How long [`close`] polls for a consumer's close before leaving the rest to its drop.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// [`close`]'s poll step.
const CLOSE_POLL: Duration = Duration::from_millis(1);

/// Closes a consumer that has a group id (all of the source's do; librdkafka refuses
/// `assign()` without one), so that dropping it is quick. rdkafka's drop closes such a
/// consumer by polling its queue in 100 ms steps until librdkafka says it is closed; a
/// consumer that joined no group is closed within a millisecond, but the close posts
/// nothing that wakes the poll, so each drop took a whole step: 0.2 s at the end of every
/// query (the readers, then the look-up consumer), an eighth of a 1.5 s run. This polls
/// in 1 ms steps for up to [`CLOSE_WAIT`], serving what the close posts (rebalance events
/// of a group member) as the drop would; the drop then finds the consumer closed.
pub(crate) fn close<C: rdkafka::consumer::ConsumerContext>(consumer: &BaseConsumer<C>) {
    if consumer.close_queue().is_err() {
        // Closed already, or no group: the drop has nothing to wait for either.
        return;
    }
    let started = Instant::now();
    while !consumer.closed() && started.elapsed() < CLOSE_WAIT {
        // Messages still buffered are dropped, as they would be by the drop's own poll.
        let _ = consumer.poll(CLOSE_POLL);
    }
}

/// What every reader of one batch shares.
struct ReadContext<'a> {
    schema: &'a SchemaRef,
    include_headers: bool,
    fail_on_data_loss: bool,
    /// Resolved `endingOffsets`: messages past them are never stashed.
    ending: Option<&'a BTreeMap<(String, i32), i64>>,
    deadline: Instant,
    timeout: Duration,
}

/// A running Kafka source. Its partitions are dealt over up to one consumer per core
/// (`Reader`), read concurrently; one more consumer answers metadata and offset
/// look-ups.
pub struct KafkaSource {
    opts: KafkaSourceOptions,
    /// The client settings, for the readers' consumers.
    config: ClientConfig,
    consumer: BaseConsumer,
    schema: SchemaRef,
    /// Next offset to hand out, per assigned partition.
    positions: BTreeMap<(String, i32), i64>,
    readers: Vec<Reader>,
    /// Which reader reads each assigned partition.
    owner: HashMap<(String, i32), usize>,
    /// Resolved `endingOffsets`, if any.
    ending: Option<BTreeMap<(String, i32), i64>>,
    last_discovery: Instant,
    /// When the last batch with data was planned (for `maxTriggerDelay`).
    last_trigger: Instant,
    /// Read what is there whatever `minOffsetsPerTrigger` says (the availableNow trigger).
    read_all_available: bool,
}

impl KafkaSource {
    pub fn new(opts: KafkaSourceOptions) -> Result<Self> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &opts.bootstrap_servers)
            // librdkafka needs a group id even for assign(); Spark generates one the same
            // way (or takes kafka.group.id / groupIdPrefix). Nothing is committed to it.
            .set("group.id", &opts.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50")
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string())
            // With its prefetch queue full, librdkafka waits this long before fetching a
            // partition again (default 1 s): a batch that drains the queue would then
            // wait for the rest of the second with nothing to read.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("log_level", "3");
        for (k, v) in &opts.client {
            if ["enable.auto.commit", "auto.offset.reset"].contains(&k.as_str()) {
                // Spark refuses these too: the query owns its offsets.
                return Err(SqlError::option(
                    &format!("kafka.{k}"),
                    "is not supported: offsets are tracked by the query's checkpoint",
                ));
            }
            cfg.set(k, v);
        }
        // The look-up consumer keeps the group id: a table read assigns partitions
        // through it, and librdkafka refuses assign() without one (Local: Unknown group).
        let consumer: BaseConsumer = cfg.create()?;
        let schema = kafka_schema(opts.include_headers);
        Ok(KafkaSource {
            opts,
            config: cfg,
            consumer,
            schema,
            positions: BTreeMap::new(),
            readers: Vec::new(),
            owner: HashMap::new(),
            ending: None,
            last_discovery: Instant::now(),
            last_trigger: Instant::now(),
            read_all_available: false,
        })
    }

    /// Ignore `minOffsetsPerTrigger`: the availableNow trigger reads all there is.
    pub fn set_read_all_available(&mut self) {
        self.read_all_available = true;
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn description(&self) -> String {
        self.opts.description()
    }

    pub fn options(&self) -> &KafkaSourceOptions {
        &self.opts
    }

    /// The cluster's metadata for `topic` (None: every topic). No answer within `timeout`
    /// is an error naming the bootstrap address: a wrong port must not look like an idle
    /// topic.
    fn metadata(&self, topic: Option<&str>, timeout: Duration) -> Result<Metadata> {
        self.consumer.fetch_metadata(topic, timeout).map_err(|e| {
            SqlError::Broker(format!(
                "no Kafka broker answered at {} (kafka.bootstrap.servers) within {} s: {e}",
                self.opts.bootstrap_servers,
                timeout.as_secs()
            ))
        })
    }

    /// The partitions the subscription covers now. A subscribed topic that does not
    /// exist is waited for, as Spark does, with a warning naming it; an assigned partition
    /// that does not exist fails the query (Spark's UnknownTopicOrPartition).
    fn discover(&self, timeout: Duration) -> Result<Vec<(String, i32)>> {
        let mut out = Vec::new();
        match &self.opts.subscription {
            Subscription::Assign(a) => {
                for (t, p) in a {
                    let md = self.metadata(Some(t), timeout)?;
                    let found = md.topics().iter().any(|topic| {
                        topic.name() == t
                            && topic.error().is_none()
                            && topic.partitions().iter().any(|q| q.id() == *p)
                    });
                    if !found {
                        return Err(SqlError::Broker(format!(
                            "UnknownTopicOrPartition: assign names {t}-{p}, which does not exist at {}",
                            self.opts.bootstrap_servers
                        )));
                    }
                    out.push((t.clone(), *p));
                }
            }
            Subscription::Topics(topics) => {
                for t in topics {
                    let md = self.metadata(Some(t), timeout)?;
                    let before = out.len();
                    for topic in md.topics() {
                        if topic.name() == t && topic.error().is_none() {
                            out.extend(topic.partitions().iter().map(|p| (t.clone(), p.id())));
                        }
                    }
                    if out.len() == before {
                        tracing::warn!(
                            "kafka source: topic {t:?} does not exist at {} (yet); waiting for it (subscribe)",
                            self.opts.bootstrap_servers
                        );
                    }
                }
            }
            Subscription::Pattern(p) => {
                let re = regex::Regex::new(p)
                    .map_err(|e| SqlError::option("subscribePattern", e.to_string()))?;
                let md = self.metadata(None, timeout)?;
                for topic in md.topics() {
                    if re.is_match(topic.name()) && !topic.name().starts_with("__") {
                        out.extend(
                            topic
                                .partitions()
                                .iter()
                                .map(|q| (topic.name().to_string(), q.id())),
                        );
                    }
                }
                if out.is_empty() {
                    tracing::warn!(
                        "kafka source: no topic matching {p:?} at {}; waiting for one (subscribePattern)",
                        self.opts.bootstrap_servers
                    );
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn watermarks(&self, tp: &(String, i32)) -> Result<(i64, i64)> {
        Ok(self
            .consumer
            .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)?)
    }

    fn resolve(
        &self,
        tp: &(String, i32),
        spec: &StartingOffsets,
        new_partition: bool,
    ) -> Result<i64> {
        let sentinel = match spec {
            StartingOffsets::Earliest => EARLIEST,
            StartingOffsets::Latest => LATEST,
            StartingOffsets::ByTimestamp {
                timestamps,
                option,
                latest_if_none,
            } => {
                let ts = match timestamps {
                    TimestampSpec::All(ts) => *ts,
                    TimestampSpec::Partitions(m) => {
                        match m.get(&tp.0).and_then(|ps| ps.get(&tp.1)) {
                            Some(ts) => *ts,
                            None if new_partition => return self.resolve(tp, &StartingOffsets::Earliest, true),
                            None => {
                                return Err(SqlError::option(
                                    option,
                                    format!("no timestamp given for partition {}-{}: name every partition of the topics read", tp.0, tp.1),
                                ))
                            }
                        }
                    }
                };
                return self.offset_for_time(tp, ts, option, *latest_if_none);
            }
            StartingOffsets::Specific(m) => match m.get(&tp.0).and_then(|ps| ps.get(&tp.1)) {
                Some(o) => *o,
                // Spark: partitions not named start at earliest when discovered later,
                // and must be named when the query starts.
                None if new_partition => EARLIEST,
                None => {
                    return Err(SqlError::option(
                        "startingOffsets",
                        format!("no offset given for partition {}-{}", tp.0, tp.1),
                    ))
                }
            },
        };
        let (low, high) = self.watermarks(tp)?;
        Ok(match sentinel {
            EARLIEST => low,
            LATEST => high,
            o => o,
        })
    }

    /// The first offset of `tp` whose timestamp is at or after `ts` (Kafka's
    /// ListOffsets by timestamp); with none, the latest offset or an error naming
    /// `option` and `startingOffsetsByTimestampStrategy`.
    fn offset_for_time(
        &self,
        tp: &(String, i32),
        ts: i64,
        option: &str,
        latest_if_none: bool,
    ) -> Result<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(ts))?;
        let found = self.consumer.offsets_for_times(tpl, METADATA_TIMEOUT)?;
        let offset = found
            .find_partition(&tp.0, tp.1)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            });
        match offset {
            Some(o) => Ok(o),
            None if latest_if_none => Ok(self.watermarks(tp)?.1),
            None => Err(SqlError::option(
                option,
                format!(
                    "no record of {}-{} has a timestamp at or after {ts} (startingOffsetsByTimestampStrategy is 'error'; 'latest' starts such partitions at their latest offset)",
                    tp.0, tp.1
                ),
            )),
        }
    }

    /// Starts the source: from `resume` (a checkpoint's end offsets) or `startingOffsets`.
    pub fn start(&mut self, resume: Option<&PartitionOffsets>) -> Result<()> {
        let parts = self.discover(CONNECT_TIMEOUT)?;
        for tp in &parts {
            let pos = match resume {
                Some(r) => match r.get(&tp.0).and_then(|ps| ps.get(&tp.1)) {
                    Some(o) => *o,
                    None => self.resolve(tp, &StartingOffsets::Earliest, true)?,
                },
                None => self.resolve(tp, &self.opts.starting.clone(), false)?,
            };
            self.positions.insert(tp.clone(), pos);
        }
        if let Some(end) = self.opts.ending.clone() {
            let mut resolved = BTreeMap::new();
            for tp in &parts {
                resolved.insert(tp.clone(), self.resolve(tp, &end, false)?);
            }
            self.ending = Some(resolved);
        }
        self.assign()?;
        self.last_discovery = Instant::now();
        Ok(())
    }

    /// Deals the partitions over the readers (one per core, at most one per partition)
    /// and assigns each its share at our positions; stashed messages are dropped (they
    /// are fetched again).
    fn assign(&mut self) -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let most = cores.min(MAX_READERS);
        let want = self.positions.len().clamp(1, most);
        while self.readers.len() < want {
            // The readers share the source's prefetch budget.
            let mut config = self.config.clone();
            if !self.opts.client.contains_key("queued.max.messages.kbytes") {
                config.set(
                    "queued.max.messages.kbytes",
                    (PREFETCH_KBYTES / most as u64).to_string(),
                );
            }
            let consumer: BaseConsumer = config.create()?;
            self.readers.push(Reader {
                queue: ConsumerQueue::of(&consumer)?,
                consumer,
                stash: HashMap::new(),
            });
        }
        let mut lists: Vec<TopicPartitionList> = self
            .readers
            .iter()
            .map(|_| TopicPartitionList::new())
            .collect();
        self.owner.clear();
        for (i, ((t, p), o)) in self.positions.iter().enumerate() {
            lists[i % want].add_partition_offset(t, *p, Offset::Offset(*o))?;
            self.owner.insert((t.clone(), *p), i % want);
        }
        for (r, list) in self.readers.iter_mut().zip(&lists) {
            r.consumer.assign(list)?;
            r.stash.clear();
        }
        Ok(())
    }

    fn maybe_discover(&mut self) -> Result<()> {
        if self.last_discovery.elapsed() < DISCOVERY_INTERVAL
            || matches!(self.opts.subscription, Subscription::Assign(_))
        {
            return Ok(());
        }
        self.last_discovery = Instant::now();
        let parts = self.discover(METADATA_TIMEOUT)?;
        let mut changed = false;
        for tp in parts {
            if !self.positions.contains_key(&tp) {
                let o = self.resolve(&tp, &StartingOffsets::Earliest, true)?;
                tracing::info!(topic = %tp.0, partition = tp.1, offset = o, "new partition discovered");
                self.positions.insert(tp, o);
                changed = true;
            }
        }
        if changed {
            // Reassigning restarts fetching at our positions; buffered messages are re-read.
            self.assign()?;
        }
        Ok(())
    }

    /// The next offsets to read: the start of the next batch.
    pub fn positions(&self) -> PartitionOffsets {
        to_offsets(&self.positions)
    }

    /// The broker's latest offsets (for `availableNow`), capped by `endingOffsets`.
    pub fn latest_offsets(&self) -> Result<PartitionOffsets> {
        let mut out = BTreeMap::new();
        for tp in self.positions.keys() {
            let (_, high) = self.watermarks(tp)?;
            let high = match &self.ending {
                Some(e) => e.get(tp).map_or(high, |end| high.min(*end)),
                None => high,
            };
            out.insert(tp.clone(), high);
        }
        Ok(to_offsets(&out))
    }

    /// True once every partition reached `endingOffsets` (never without them).
    pub fn finished(&self) -> bool {
        match &self.ending {
            None => false,
            Some(end) => end
                .iter()
                .all(|(tp, e)| self.positions.get(tp).is_some_and(|p| p >= e)),
        }
    }

    /// `endingOffsets` for a partition (no bound without them).
    fn ending_for(&self, tp: &(String, i32)) -> i64 {
        self.ending
            .as_ref()
            .and_then(|e| e.get(tp))
            .copied()
            .unwrap_or(i64::MAX)
    }

    fn check_error(&self, e: rdkafka::error::KafkaError) -> Result<()> {
        check_error(e, self.opts.fail_on_data_loss)
    }

    /// Reads a new batch, as Spark plans one: end offsets are fixed first from the
    /// partitions' latest offsets (capped by `endingOffsets`), `max_rows` is split across
    /// partitions in proportion to what each has available (Spark's `rateLimit`), and
    /// every partition is then read exactly to its end. So each batch advances all
    /// partitions in step, whatever order the consumer happens to fetch them in, and
    /// event time (and the watermark) stays aligned across partitions. With nothing new,
    /// waits up to `wait` for data. Returns the rows and the end offsets.
    pub async fn next_batch(
        &mut self,
        max_rows: u64,
        wait: Duration,
    ) -> Result<(Vec<RecordBatch>, PartitionOffsets)> {
        self.maybe_discover()?;
        let max_rows = max_rows.min(MAX_ROWS_PER_BATCH);
        let mut ends = self.plan_ends(max_rows)?;
        if ends == self.positions && !wait.is_zero() {
            self.wait_for_data(wait).await?;
            ends = self.plan_ends(max_rows)?;
        }
        if ends == self.positions || !self.enough_for_a_batch()? {
            return Ok((Vec::new(), self.positions()));
        }
        self.last_trigger = Instant::now();
        let rows = self.read_to(&ends, BATCH_READ_TIMEOUT).await?;
        Ok((rows, self.positions()))
    }

    /// Reads exactly up to `end` (a logged batch being replayed after a restart).
    pub async fn replay(
        &mut self,
        end: &PartitionOffsets,
        timeout: Duration,
    ) -> Result<Vec<RecordBatch>> {
        let bound: BTreeMap<(String, i32), i64> = end
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, o)| ((t.clone(), *p), *o)))
            .collect();
        for tp in bound.keys() {
            if !self.positions.contains_key(tp) {
                let o = self.resolve(tp, &StartingOffsets::Earliest, true)?;
                self.positions.insert(tp.clone(), o);
                self.assign()?;
            }
        }
        self.read_to(&bound, timeout).await
    }

    /// The latest offset of a partition: librdkafka's cached high watermark (from fetch
    /// responses, no request) when it has one, else a ListOffsets request.
    fn latest(&self, tp: &(String, i32)) -> Result<i64> {
        // The consumer that fetches the partition has its high watermark cached.
        let consumer = self
            .owner
            .get(tp)
            .map_or(&self.consumer, |&r| &self.readers[r].consumer);
        if let Some(high) = cached_high_watermark(consumer.client(), tp)? {
            return Ok(high);
        }
        Ok(self.watermarks(tp)?.1)
    }

    /// Spark's `minOffsetsPerTrigger`: at least that many new offsets are available, or
    /// `maxTriggerDelay` passed since the last batch (or the source ran out of offsets to
    /// read to `endingOffsets`).
    fn enough_for_a_batch(&self) -> Result<bool> {
        let Some(min) = self.opts.min_offsets_per_trigger else {
            return Ok(true);
        };
        if self.read_all_available || self.last_trigger.elapsed() >= self.opts.max_trigger_delay {
            return Ok(true);
        }
        let mut available = 0u64;
        let mut at_end = true;
        for (tp, &pos) in &self.positions {
            let ending = self.ending_for(tp);
            let end = self.latest(tp)?.min(ending);
            available += end.saturating_sub(pos).max(0) as u64;
            at_end &= end >= ending;
        }
        Ok(available >= min || (self.ending.is_some() && at_end))
    }

    /// The end offsets of the next batch (Spark's `latestOffset` with `rateLimit`).
    fn plan_ends(&self, max_rows: u64) -> Result<BTreeMap<(String, i32), i64>> {
        let mut available = BTreeMap::new();
        for (tp, &pos) in &self.positions {
            let end = self.latest(tp)?.min(self.ending_for(tp));
            available.insert(tp.clone(), end.max(pos));
        }
        Ok(rate_limit(&self.positions, &available, max_rows))
    }

    /// Polls for up to `wait` until some message arrives (it is stashed for the batch).
    async fn wait_for_data(&mut self, wait: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < wait {
            let mut arrived = false;
            for r in &mut self.readers {
                match r.consumer.poll(Duration::ZERO) {
                    None => {}
                    Some(Err(e)) => check_error(e, self.opts.fail_on_data_loss)?,
                    Some(Ok(m)) => {
                        let tp = (m.topic().to_string(), m.partition());
                        if self.positions.get(&tp).is_some_and(|&p| m.offset() >= p) {
                            r.stash.entry(tp).or_default().push_back(m.detach());
                            arrived = true;
                        }
                    }
                }
            }
            if arrived {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Reads every partition in `ends` up to (not including) its end offset, each
    /// reader its share on a thread of its own (see `Reader::read_share`); the rows come
    /// back in reader order, each partition's in offset order.
    async fn read_to(
        &mut self,
        ends: &BTreeMap<(String, i32), i64>,
        timeout: Duration,
    ) -> Result<Vec<RecordBatch>> {
        let mut shares: Vec<BTreeMap<(String, i32), i64>> =
            vec![BTreeMap::new(); self.readers.len()];
        for (tp, &end) in ends {
            let Some(&r) = self.owner.get(tp) else {
                return Err(SqlError::Broker(format!(
                    "{}-{} is not assigned to the source",
                    tp.0, tp.1
                )));
            };
            shares[r].insert(tp.clone(), end);
        }
        let ctx = ReadContext {
            schema: &self.schema,
            include_headers: self.opts.include_headers,
            fail_on_data_loss: self.opts.fail_on_data_loss,
            ending: self.ending.as_ref(),
            deadline: Instant::now() + timeout,
            timeout,
        };
        let positions = &self.positions;
        let jobs: Vec<_> = self
            .readers
            .iter_mut()
            .zip(&shares)
            .filter(|(_, share)| !share.is_empty())
            .map(|(r, share)| {
                let from: BTreeMap<(String, i32), i64> = share
                    .keys()
                    .map(|tp| (tp.clone(), positions.get(tp).copied().unwrap_or(0)))
                    .collect();
                (r, from, share)
            })
            .collect();
        let results: Vec<Result<ReadShare>> = if jobs.len() <= 1 {
            jobs.into_iter()
                .map(|(r, from, share)| r.read_share(&ctx, from, share))
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = jobs
                    .into_iter()
                    .map(|(r, from, share)| {
                        let ctx = &ctx;
                        s.spawn(move || r.read_share(ctx, from, share))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(SqlError::Broker(
                                "a Kafka source reader thread panicked".into(),
                            ))
                        })
                    })
                    .collect()
            })
        };
        let mut rows = Vec::new();
        for result in results {
            let (batches, reached) = result?;
            self.positions.extend(reached);
            rows.extend(batches);
        }
        Ok(rows)
    }
}

/// A reader's rows for a batch and its partitions' new positions.
type ReadShare = (Vec<RecordBatch>, BTreeMap<(String, i32), i64>);

impl Reader {
    /// Reads this reader's partitions from `positions` up to (not including) `ends`:
    /// stashed messages first, then the consumer; messages past an end are stashed for
    /// the next batch. Offsets that carry no record (transaction markers, aborted or
    /// compacted records) are stepped over using the consumer's position. Blocks.
    fn read_share(
        &mut self,
        ctx: &ReadContext,
        positions: BTreeMap<(String, i32), i64>,
        ends: &BTreeMap<(String, i32), i64>,
    ) -> Result<ReadShare> {
        let mut rows = RowBuilder::new(ctx.schema.clone(), ctx.include_headers);
        let mut share = Share::new(&positions, ends, &mut self.stash, ctx.ending);
        let read = self.read_into(ctx, &mut share, &mut rows);
        // Whatever happened, what was polled past the batch stays for the next one.
        let reached = share.finish(&mut self.stash);
        read?;
        Ok((rows.finish()?, reached))
    }

    fn read_into(
        &mut self,
        ctx: &ReadContext,
        share: &mut Share,
        rows: &mut RowBuilder,
    ) -> Result<()> {
        share.drain_stashes(rows)?;
        // After an empty poll the next one waits (woken by the next fetch), rather than
        // spinning or sleeping past its arrival.
        let mut idle = false;
        let mut polled = Vec::with_capacity(POLL_BATCH);
        let mut topics = TopicNames::default();
        while share.behind() > 0 {
            let timeout = if idle { IDLE_POLL } else { Duration::ZERO };
            // No more than the batch still needs: what is polled past its end is copied
            // into the stash.
            let most = share.wanted().clamp(1, POLL_BATCH as i64) as usize;
            self.queue.poll(timeout, most, &mut polled);
            if polled.is_empty() {
                let assigned = self.consumer.position()?;
                share.step_over_gaps(|tp| offset_in(&assigned, tp));
                if share.behind() == 0 {
                    break;
                }
                if Instant::now() > ctx.deadline {
                    return Err(SqlError::DataLoss(format!(
                        "could not read up to {:?} within {:?}; positions {:?}",
                        to_offsets(&share.ends()),
                        ctx.timeout,
                        to_offsets(&share.positions())
                    )));
                }
                idle = true;
                continue;
            }
            idle = false;
            // Every polled message is taken (or stashed) even once the share is read:
            // they are gone from the consumer's queue. `polled` destroys them when it
            // is cleared, whatever happens.
            for p in polled.drain(..) {
                let msg = match p.message(&mut topics, ctx.include_headers) {
                    Err(e) => {
                        check_error(e, ctx.fail_on_data_loss)?;
                        continue;
                    }
                    Ok(m) => m,
                };
                let consumer = &self.consumer;
                share.take(&msg, rows, &mut self.stash, ctx.ending, |tp, pos| {
                    if ctx.fail_on_data_loss && !is_compacted_gap(consumer, tp, pos) {
                        return Err(SqlError::DataLoss(format!(
                            "{}-{}: expected offset {pos}, got {} (records were deleted; set failOnDataLoss to false to skip)",
                            tp.0, tp.1, msg.offset()
                        )));
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }
}

/// Most messages one poll of a reader's queue takes. Polling them one by one cost more
/// than building their rows: each poll locks the queue, reads the clock twice and
/// allocates, and each message's topic name was measured and checked as UTF-8 again.
const POLL_BATCH: usize = 512;

/// A consumer's message queue, polled many messages at a time
/// (`rd_kafka_consume_batch_queue`); rdkafka's `poll` takes one.
struct ConsumerQueue(*mut rdkafka::bindings::rd_kafka_queue_t);

// SAFETY: librdkafka's queues are thread-safe; the handle is used by one thread at a
// time (the reader's) and destroyed once.
unsafe impl Send for ConsumerQueue {}

impl ConsumerQueue {
    fn of(consumer: &BaseConsumer) -> Result<ConsumerQueue> {
        // SAFETY: the client pointer is valid while `consumer` lives; the queue handle
        // holds its own reference to the queue and is destroyed before the consumer
        // (field order in `Reader`).
        let q = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_consumer(consumer.client().native_ptr())
        };
        if q.is_null() {
            return Err(SqlError::Broker(
                "the Kafka source's consumer has no consumer queue".into(),
            ));
        }
        Ok(ConsumerQueue(q))
    }

    /// Appends up to `most` messages to `out`, waiting up to `timeout` for the first
    /// (`out` is empty if none came).
    fn poll(&self, timeout: Duration, most: usize, out: &mut Vec<Polled>) {
        let mut ptrs: [*mut rdkafka::bindings::rd_kafka_message_t; POLL_BATCH] =
            [std::ptr::null_mut(); POLL_BATCH];
        let most = most.min(POLL_BATCH);
        // librdkafka waits for `most` messages until the timeout: with a timeout, only
        // one is asked for, then the rest of what has come without waiting.
        let mut n = 0;
        if !timeout.is_zero() {
            // SAFETY: `ptrs` has room for the 1 asked for.
            n = unsafe {
                rdkafka::bindings::rd_kafka_consume_batch_queue(
                    self.0,
                    timeout.as_millis().min(i32::MAX as u128) as i32,
                    ptrs.as_mut_ptr(),
                    1,
                )
            };
            if n <= 0 {
                return;
            }
        }
        let start = n as usize;
        if start < most {
            // SAFETY: `ptrs[start..]` has room for `most - start` pointers.
            let more = unsafe {
                rdkafka::bindings::rd_kafka_consume_batch_queue(
                    self.0,
                    0,
                    ptrs.as_mut_ptr().add(start),
                    most - start,
                )
            };
            n = start as isize + more.max(0);
        }
        out.extend(ptrs[..n.max(0) as usize].iter().map(|&p| Polled(p)));
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_queue_get_consumer` and is destroyed once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.0) }
    }
}

/// A message taken from a consumer queue, destroyed when dropped.
struct Polled(*mut rdkafka::bindings::rd_kafka_message_t);

impl Drop for Polled {
    fn drop(&mut self) {
        // SAFETY: returned by `rd_kafka_consume_batch_queue`, destroyed once.
        unsafe { rdkafka::bindings::rd_kafka_message_destroy(self.0) }
    }
}

impl Polled {
    /// The message, or the error librdkafka delivered in its place (as rdkafka's `poll`
    /// maps it).
    fn message<'a>(
        &'a self,
        topics: &'a mut TopicNames,
        include_headers: bool,
    ) -> std::result::Result<RawMessage<'a>, rdkafka::error::KafkaError> {
        use rdkafka::bindings::rd_kafka_resp_err_t as E;
        // SAFETY: a message returned by librdkafka stays valid until destroyed.
        let m = unsafe { &*self.0 };
        if m.err != E::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(match m.err {
                E::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                    rdkafka::error::KafkaError::PartitionEOF(m.partition)
                }
                e => rdkafka::error::KafkaError::MessageConsumption(e.into()),
            });
        }
        let headers = if include_headers {
            raw_headers(self.0)
        } else {
            None
        };
        Ok(RawMessage {
            m,
            ptr: self.0,
            topic: topics.name(m.rkt),
            headers,
        })
    }
}

/// Topic names by librdkafka topic handle: messages come in runs of one topic, so the
/// last one is kept.
#[derive(Default)]
struct TopicNames {
    last: Option<(*mut rdkafka::bindings::rd_kafka_topic_t, String)>,
}

impl TopicNames {
    fn name(&mut self, rkt: *mut rdkafka::bindings::rd_kafka_topic_t) -> &str {
        if self.last.as_ref().is_none_or(|(t, _)| *t != rkt) {
            // SAFETY: a message's topic handle is valid while the message lives, and its
            // name is a NUL-terminated string.
            let name =
                unsafe { std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_topic_name(rkt)) };
            self.last = Some((rkt, name.to_string_lossy().into_owned()));
        }
        &self.last.as_ref().expect("just set").1
    }
}

/// A message's headers, copied (only when the query asked for them).
fn raw_headers(
    msg: *mut rdkafka::bindings::rd_kafka_message_t,
) -> Option<rdkafka::message::OwnedHeaders> {
    use rdkafka::bindings as b;
    let mut hdrs: *mut b::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `msg` is a live message; the headers belong to it and are read before it
    // is destroyed.
    unsafe {
        if b::rd_kafka_message_headers(msg, &mut hdrs)
            != b::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return None;
        }
        let count = b::rd_kafka_header_cnt(hdrs);
        let mut out = rdkafka::message::OwnedHeaders::new_with_capacity(count);
        for i in 0..count {
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size: usize = 0;
            if b::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size)
                != b::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                break;
            }
            let key = std::ffi::CStr::from_ptr(name).to_string_lossy();
            let value =
                (!value.is_null()).then(|| std::slice::from_raw_parts(value as *const u8, size));
            out = out.insert(rdkafka::message::Header { key: &key, value });
        }
        Some(out)
    }
}

/// A polled message, read in place.
struct RawMessage<'a> {
    m: &'a rdkafka::bindings::rd_kafka_message_t,
    ptr: *mut rdkafka::bindings::rd_kafka_message_t,
    topic: &'a str,
    headers: Option<rdkafka::message::OwnedHeaders>,
}

/// `len` bytes at `ptr`, or None for a null pointer (as rdkafka reads them).
///
/// SAFETY: a non-null `ptr` points to `len` bytes that outlive `'a`.
unsafe fn opt_slice<'a>(ptr: *const std::os::raw::c_void, len: usize) -> Option<&'a [u8]> {
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
}

impl Message for RawMessage<'_> {
    type Headers = rdkafka::message::OwnedHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: the key lives as long as the message.
        unsafe { opt_slice(self.m.key, self.m.key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: the payload lives as long as the message.
        unsafe { opt_slice(self.m.payload, self.m.len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: as `payload`; the caller promises exclusive use.
        (!self.m.payload.is_null()).then(|| unsafe {
            std::slice::from_raw_parts_mut(self.m.payload as *mut u8, self.m.len)
        })
    }

    fn topic(&self) -> &str {
        self.topic
    }

    fn partition(&self) -> i32 {
        self.m.partition
    }

    fn offset(&self) -> i64 {
        self.m.offset
    }

    fn timestamp(&self) -> Timestamp {
        use rdkafka::bindings::rd_kafka_timestamp_type_t as T;
        let mut kind = T::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let t = unsafe { rdkafka::bindings::rd_kafka_message_timestamp(self.ptr, &mut kind) };
        match kind {
            _ if t == -1 => Timestamp::NotAvailable,
            T::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(t),
            T::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(t),
            T::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
        }
    }

    fn headers(&self) -> Option<&rdkafka::message::OwnedHeaders> {
        self.headers.as_ref()
    }
}

impl Keep for RawMessage<'_> {
    fn keep(&self) -> OwnedMessage {
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic.to_string(),
            self.timestamp(),
            self.partition(),
            self.offset(),
            self.headers.clone(),
        )
    }
}

/// How long a reader's poll waits after an empty one (it returns as soon as a message
/// arrives); between such polls it steps over offsets that hold no record.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// Messages polled past a batch's end, per partition, for the next batch.
type Stash = HashMap<(String, i32), VecDeque<OwnedMessage>>;

/// A polled message that can be kept past the poll.
trait Keep: Message {
    fn keep(&self) -> OwnedMessage;
}

impl Keep for rdkafka::message::BorrowedMessage<'_> {
    fn keep(&self) -> OwnedMessage {
        self.detach()
    }
}

impl Keep for OwnedMessage {
    fn keep(&self) -> OwnedMessage {
        self.clone()
    }
}

/// One partition of a reader's share of a batch.
struct Slot {
    tp: (String, i32),
    /// The next offset to hand out.
    pos: i64,
    /// The batch's end (exclusive).
    end: i64,
    /// `endingOffsets` (i64::MAX without): no batch reads at or past it.
    ending: i64,
    /// Messages polled that this batch cannot take (yet), in offset order.
    stash: VecDeque<OwnedMessage>,
}

/// A reader's progress through its share of a batch. Per message it allocates nothing
/// and looks at one partition: messages come in runs of one partition, so the last
/// one's slot is tried first, and how many partitions are short of their end is counted
/// rather than walked.
struct Share {
    slots: Vec<Slot>,
    /// Slots whose position is short of their end.
    behind: usize,
    /// The slot of the last message taken.
    last: usize,
}

impl Share {
    /// The share of `ends` starting at `positions`, with the stashed messages of its
    /// partitions taken out of `stash` (`finish` puts back what is left).
    fn new(
        positions: &BTreeMap<(String, i32), i64>,
        ends: &BTreeMap<(String, i32), i64>,
        stash: &mut Stash,
        ending: Option<&BTreeMap<(String, i32), i64>>,
    ) -> Share {
        let slots = ends
            .iter()
            .map(|(tp, &end)| Slot {
                tp: tp.clone(),
                pos: positions.get(tp).copied().unwrap_or(0),
                end,
                ending: ending.and_then(|e| e.get(tp)).copied().unwrap_or(i64::MAX),
                stash: stash.remove(tp).unwrap_or_default(),
            })
            .collect();
        let mut share = Share {
            slots,
            behind: 0,
            last: 0,
        };
        share.recount();
        share
    }

    fn behind(&self) -> usize {
        self.behind
    }

    /// Messages still wanted: the offsets between each position and its end (an upper
    /// bound: some offsets hold no record).
    fn wanted(&self) -> i64 {
        self.slots.iter().map(|s| (s.end - s.pos).max(0)).sum()
    }

    fn recount(&mut self) {
        self.behind = self.slots.iter().filter(|s| s.pos < s.end).count();
    }

    fn positions(&self) -> BTreeMap<(String, i32), i64> {
        self.slots.iter().map(|s| (s.tp.clone(), s.pos)).collect()
    }

    fn ends(&self) -> BTreeMap<(String, i32), i64> {
        self.slots.iter().map(|s| (s.tp.clone(), s.end)).collect()
    }

    fn find(&mut self, topic: &str, partition: i32) -> Option<usize> {
        let hit = |s: &Slot| s.tp.1 == partition && s.tp.0 == topic;
        if self.slots.get(self.last).is_some_and(hit) {
            return Some(self.last);
        }
        let i = self.slots.iter().position(hit)?;
        self.last = i;
        Some(i)
    }

    /// Hands out the stashed messages this batch takes (from each position up to its
    /// end); older ones (re-delivered) are dropped.
    fn drain_stashes(&mut self, rows: &mut RowBuilder) -> Result<()> {
        for s in &mut self.slots {
            while let Some(m) = s.stash.front() {
                if m.offset() < s.pos {
                    s.stash.pop_front();
                    continue;
                }
                if m.offset() >= s.end {
                    break;
                }
                let m = s.stash.pop_front().expect("front exists");
                rows.push(&m)?;
                s.pos = m.offset() + 1;
            }
        }
        self.recount();
        Ok(())
    }

    /// Takes one polled message: a row of this batch, or kept (in order) for a later
    /// batch, or dropped (re-delivered after a reassign, or past `endingOffsets`).
    /// `gap(tp, expected)` judges a message past the expected offset (data loss).
    fn take<M: Keep>(
        &mut self,
        msg: &M,
        rows: &mut RowBuilder,
        others: &mut Stash,
        ending: Option<&BTreeMap<(String, i32), i64>>,
        gap: impl FnOnce(&(String, i32), i64) -> Result<()>,
    ) -> Result<()> {
        let offset = msg.offset();
        let Some(i) = self.find(msg.topic(), msg.partition()) else {
            // A partition of this reader with nothing to read in this batch.
            let tp = (msg.topic().to_string(), msg.partition());
            if ending.and_then(|e| e.get(&tp)).is_none_or(|e| offset < *e) {
                others.entry(tp).or_default().push_back(msg.keep());
            }
            return Ok(());
        };
        let s = &mut self.slots[i];
        if offset < s.pos {
            return Ok(()); // re-delivered after a reassign
        }
        if offset >= s.end || !s.stash.is_empty() {
            // Past this batch: keep it (in order) for the next one, unless it is past
            // `endingOffsets`, which no batch will ever read.
            if offset < s.ending {
                s.stash.push_back(msg.keep());
            }
            return Ok(());
        }
        if offset > s.pos {
            gap(&s.tp, s.pos)?;
        }
        rows.push(msg)?;
        s.pos = offset + 1;
        if s.pos >= s.end {
            self.behind -= 1;
        }
        Ok(())
    }

    /// Advances partitions over offsets that hold no deliverable record. librdkafka moves
    /// its position (`position`) past transaction markers and aborted records; every
    /// offset below that position (and below the first stashed message) has been handed
    /// to us already.
    fn step_over_gaps(&mut self, position: impl Fn(&(String, i32)) -> Option<i64>) {
        for s in self.slots.iter_mut().filter(|s| s.pos < s.end) {
            let seen = match s.stash.front() {
                Some(m) => Some(m.offset()),
                None => position(&s.tp),
            };
            if let Some(seen) = seen {
                if seen > s.pos {
                    s.pos = seen.min(s.end);
                }
            }
        }
        self.recount();
    }

    /// The partitions' new positions; what is stashed goes back to `stash`.
    fn finish(&mut self, stash: &mut Stash) -> BTreeMap<(String, i32), i64> {
        self.slots
            .drain(..)
            .map(|s| {
                if !s.stash.is_empty() {
                    stash.insert(s.tp.clone(), s.stash);
                }
                (s.tp, s.pos)
            })
            .collect()
    }
}

/// A consumer error: data loss (offsets deleted before they were read) fails the query
/// with `failOnDataLoss`, else is logged and skipped; others are transient.
fn check_error(e: rdkafka::error::KafkaError, fail_on_data_loss: bool) -> Result<()> {
    use rdkafka::types::RDKafkaErrorCode;
    let lost = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    );
    if lost && fail_on_data_loss {
        return Err(SqlError::DataLoss(format!(
            "{e}; some offsets were deleted before they were read (set failOnDataLoss to false to skip them)"
        )));
    }
    if lost {
        tracing::warn!(error = %e, "data lost in a source partition; skipping to the earliest offset");
        return Ok(());
    }
    tracing::debug!(error = %e, "kafka source: transient error");
    Ok(())
}

/// A partition's high watermark as librdkafka last saw it in a fetch response (no
/// request); None before the client fetched the partition.
pub(crate) fn cached_high_watermark<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    tp: &(String, i32),
) -> Result<Option<i64>> {
    let topic = std::ffi::CString::new(tp.0.as_str())
        .map_err(|_| SqlError::option("subscribe", format!("topic {:?} contains NUL", tp.0)))?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `client` lives; librdkafka only reads
    // the NUL-terminated topic and writes the two offsets, under its own lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            tp.1,
            &mut low,
            &mut high,
        )
    };
    Ok(
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high),
    )
}

/// Spark's `KafkaMicroBatchStream.rateLimit`: `limit` offsets split across partitions in
/// proportion to what each has available; a partition with anything available gets at
/// least one offset.
pub(crate) fn rate_limit(
    from: &BTreeMap<(String, i32), i64>,
    until: &BTreeMap<(String, i32), i64>,
    limit: u64,
) -> BTreeMap<(String, i32), i64> {
    let sizes: BTreeMap<&(String, i32), i64> = until
        .iter()
        .filter_map(|(tp, &end)| {
            let size = end - from.get(tp).copied().unwrap_or(end);
            (size > 0).then_some((tp, size))
        })
        .collect();
    let total: i64 = sizes.values().sum();
    if total as u64 <= limit {
        return until.clone();
    }
    until
        .iter()
        .map(|(tp, &end)| {
            let capped = match (sizes.get(tp), from.get(tp)) {
                (Some(&size), Some(&begin)) => {
                    let prorate = limit as f64 * (size as f64 / total as f64);
                    let n = if prorate < 1.0 {
                        prorate.ceil()
                    } else {
                        prorate.floor()
                    } as i64;
                    end.min(begin.saturating_add(n))
                }
                _ => end,
            };
            (tp.clone(), capped)
        })
        .collect()
}

/// Keys a compacted-topic table may hold; reading a larger topic as a table is refused.
pub const MAX_TABLE_KEYS: usize = 10_000_000;
/// How long reading a topic to its end as a table may take.
const TABLE_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads topics to their end (the high watermarks when the read starts) as a table: the
/// latest record per key (by offset within a partition, by timestamp across partitions),
/// keys whose latest record has a null value (a tombstone) left out, records without a
/// key left out. This is a compacted topic's meaning, whether or not the broker has
/// compacted it yet. Rows have the Kafka source's schema.
pub fn read_latest_per_key(opts: &KafkaSourceOptions) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let source = KafkaSource::new(opts.clone())?;
    let parts = source.discover(CONNECT_TIMEOUT)?;
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for tp in &parts {
        let (low, high) = source.watermarks(tp)?;
        if high > low {
            ends.insert(tp.clone(), high);
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(low))?;
        }
    }
    source.consumer.assign(&tpl)?;
    // key -> (timestamp, message)
    let mut latest: HashMap<Vec<u8>, (i64, OwnedMessage)> = HashMap::new();
    let deadline = Instant::now() + TABLE_READ_TIMEOUT;
    let done = |tp: &(String, i32), next: i64, ends: &BTreeMap<(String, i32), i64>| {
        ends.get(tp).is_none_or(|e| next >= *e)
    };
    let mut remaining: std::collections::BTreeSet<(String, i32)> = ends.keys().cloned().collect();
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(SqlError::Query(format!(
                "reading {} as a table did not reach its end within {TABLE_READ_TIMEOUT:?}",
                opts.description()
            )));
        }
        let msg = match source.consumer.poll(Duration::from_millis(100)) {
            None => {
                // Transaction markers and aborted records end some partitions early.
                let pos = source.consumer.position()?;
                remaining.retain(|tp| {
                    let next = offset_in(&pos, tp);
                    !next.is_some_and(|n| done(tp, n, &ends))
                });
                continue;
            }
            Some(Err(e)) => {
                source.check_error(e)?;
                continue;
            }
            Some(Ok(m)) => m,
        };
        let tp = (msg.topic().to_string(), msg.partition());
        if ends.get(&tp).is_none_or(|e| msg.offset() >= *e) {
            remaining.remove(&tp);
            continue;
        }
        if done(&tp, msg.offset() + 1, &ends) {
            remaining.remove(&tp);
        }
        let Some(key) = msg.key() else { continue };
        let ts = msg.timestamp().to_millis().unwrap_or(i64::MIN);
        let newer = latest.get(key).is_none_or(|(t, m)| {
            (m.topic(), m.partition()) == (msg.topic(), msg.partition()) || ts >= *t
        });
        if newer {
            latest.insert(key.to_vec(), (ts, msg.detach()));
            if latest.len() > MAX_TABLE_KEYS {
                return Err(SqlError::Query(format!(
                    "{} has more than {MAX_TABLE_KEYS} keys: too large to read as a table",
                    opts.description()
                )));
            }
        }
    }
    let mut rows = RowBuilder::new(source.schema(), opts.include_headers);
    let mut records: Vec<&OwnedMessage> = latest
        .values()
        .map(|(_, m)| m)
        .filter(|m| m.payload().is_some())
        .collect();
    records.sort_by(|a, b| {
        (a.topic(), a.partition(), a.offset()).cmp(&(b.topic(), b.partition(), b.offset()))
    });
    for m in records {
        rows.push(m)?;
    }
    Ok((source.schema(), rows.finish()?))
}

/// Offsets can legitimately skip on compacted topics and around transaction markers; a
/// gap is data loss only if the skipped offsets are below the log start.
fn is_compacted_gap(consumer: &BaseConsumer, tp: &(String, i32), pos: i64) -> bool {
    match consumer.fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT) {
        Ok((low, _)) => low <= pos,
        Err(_) => true,
    }
}

/// The offset a list holds for a partition, if it is a real offset.
pub(crate) fn offset_in(list: &TopicPartitionList, tp: &(String, i32)) -> Option<i64> {
    match list.find_partition(&tp.0, tp.1)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn to_offsets(m: &BTreeMap<(String, i32), i64>) -> PartitionOffsets {
    let mut out: PartitionOffsets = BTreeMap::new();
    for ((t, p), o) in m {
        out.entry(t.clone()).or_default().insert(*p, *o);
    }
    out
}

/// Offsets as Spark prints them: `{"tweets":{"0":12,"1":40}}`.
pub fn offsets_json(o: &PartitionOffsets) -> serde_json::Value {
    serde_json::Value::Object(
        o.iter()
            .map(|(t, ps)| {
                (
                    t.clone(),
                    serde_json::Value::Object(
                        ps.iter()
                            .map(|(p, o)| (p.to_string(), serde_json::json!(o)))
                            .collect(),
                    ),
                )
            })
            .collect(),
    )
}

/// Number of offsets between two positions (rows, unless the topic is compacted).
pub fn offset_span(start: &PartitionOffsets, end: &PartitionOffsets) -> i64 {
    end.iter()
        .flat_map(|(t, ps)| {
            ps.iter().map(move |(p, e)| {
                let s = start.get(t).and_then(|m| m.get(p)).copied().unwrap_or(*e);
                (e - s).max(0)
            })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::tests::opts;

    #[test]
    fn spark_options() {
        let o = KafkaSourceOptions::from_options(&opts(&[
            ("kafka.bootstrap.servers", "h:1"),
            ("subscribe", "a, b"),
            ("startingOffsets", r#"{"a":{"0":5,"1":-2}}"#),
            ("maxOffsetsPerTrigger", "100"),
            ("includeHeaders", "true"),
            ("kafka.fetch.min.bytes", "1"),
        ]))
        .unwrap();
        assert_eq!(
            o.subscription,
            Subscription::Topics(vec!["a".into(), "b".into()])
        );
        assert_eq!(o.max_offsets_per_trigger, Some(100));
        assert!(o.include_headers && o.fail_on_data_loss);
        assert_eq!(
            o.client.get("fetch.min.bytes").map(String::as_str),
            Some("1")
        );
        match &o.starting {
            StartingOffsets::Specific(m) => assert_eq!(m["a"][&1], -2),
            other => panic!("{other:?}"),
        }
        assert_eq!(o.description(), "KafkaV2[Subscribe[a,b]]");
    }

    /// The options of a source subscribed to `a`, with `extra`.
    fn subscribed_with(extra: &[(&str, &str)]) -> Result<KafkaSourceOptions> {
        let mut pairs = vec![("kafka.bootstrap.servers", "h:1"), ("subscribe", "a")];
        pairs.extend_from_slice(extra);
        KafkaSourceOptions::from_options(&opts(&pairs))
    }

    #[test]
    fn timestamp_options_follow_spark_precedence_and_checks() {
        let with = subscribed_with;
        let o = with(&[
            ("startingOffsets", "earliest"),
            ("startingOffsetsByTimestamp", r#"{"a":{"0":5}}"#),
            ("startingTimestamp", "1000"),
            ("startingOffsetsByTimestampStrategy", "LATEST"),
            ("endingOffsetsByTimestamp", r#"{"a":{"0":2000}}"#),
        ])
        .unwrap();
        assert_eq!(
            o.starting,
            StartingOffsets::ByTimestamp {
                timestamps: TimestampSpec::All(1000),
                option: "startingTimestamp",
                latest_if_none: true
            }
        );
        match &o.ending {
            Some(StartingOffsets::ByTimestamp {
                timestamps: TimestampSpec::Partitions(m),
                latest_if_none: true,
                ..
            }) => assert_eq!(m["a"][&0], 2000),
            other => panic!("{other:?}"),
        }
        let o = with(&[("startingOffsetsByTimestamp", r#"{"a":{"0":5}}"#)]).unwrap();
        assert!(matches!(
            o.starting,
            StartingOffsets::ByTimestamp {
                latest_if_none: false,
                ..
            }
        ));
        for (k, v, says) in [
            (
                "startingOffsetsByTimestampStrategy",
                "first",
                "not 'error' or 'latest'",
            ),
            ("startingTimestamp", "-5", "not a timestamp"),
            (
                "startingOffsetsByTimestamp",
                r#"{"a":{"0":-1}}"#,
                "not a timestamp",
            ),
            ("endingOffsetsByTimestamp", "{", "endingOffsetsByTimestamp"),
            ("maxTriggerDelay", "soon", "not a duration"),
            ("minPartitions", "0", "not a positive number"),
            ("minOffsetsPerTrigger", "x", "not a positive number"),
        ] {
            let e = with(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(says), "{k}: {e}");
        }
        let e = with(&[
            ("minOffsetsPerTrigger", "10"),
            ("maxOffsetsPerTrigger", "5"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("higher than maxOffsetsPerTrigger"), "{e}");
        let o = with(&[
            ("minOffsetsPerTrigger", "10"),
            ("maxTriggerDelay", "15m"),
            ("minPartitions", "8"),
        ])
        .unwrap();
        assert_eq!(o.min_offsets_per_trigger, Some(10));
        assert_eq!(o.max_trigger_delay, Duration::from_secs(900));
        assert_eq!(o.min_partitions, Some(8));
        assert_eq!(
            with(&[]).unwrap().max_trigger_delay,
            DEFAULT_MAX_TRIGGER_DELAY
        );
    }

    #[test]
    fn group_id_is_kafka_group_id_or_the_prefix_and_a_random_suffix() {
        let with = |extra: &[(&str, &str)]| subscribed_with(extra).unwrap();
        let o = with(&[("kafka.group.id", "team-a"), ("groupIdPrefix", "p")]);
        assert_eq!(o.group_id, "team-a");
        assert!(!o.client.contains_key("group.id"), "set once, as group.id");
        KafkaSource::new(o).unwrap();
        let a = with(&[("groupIdPrefix", "p")]).group_id;
        let b = with(&[("groupIdPrefix", "p")]).group_id;
        assert!(
            a.starts_with("p-") && b.starts_with("p-") && a != b,
            "{a} {b}"
        );
        assert!(with(&[]).group_id.starts_with("spark-kafka-source-"));
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            opts(&[("subscribe", "a")]),
            opts(&[("kafka.bootstrap.servers", "h:1")]),
            opts(&[
                ("kafka.bootstrap.servers", "h:1"),
                ("subscribe", "a"),
                ("assign", r#"{"a":[0]}"#),
            ]),
            opts(&[
                ("kafka.bootstrap.servers", "h:1"),
                ("subscribe", "a"),
                ("startingOffsets", "{bad"),
            ]),
            opts(&[
                ("kafka.bootstrap.servers", "h:1"),
                ("subscribe", "a"),
                ("maxOffsetsPerTrigger", "-1"),
            ]),
            opts(&[
                ("kafka.bootstrap.servers", "h:1"),
                ("subscribe", "a"),
                ("failOnDataLoss", "maybe"),
            ]),
            opts(&[
                ("kafka.bootstrap.servers", "h:1"),
                ("subscribe", "a"),
                ("endingOffsets", "earliest"),
            ]),
        ] {
            assert!(KafkaSourceOptions::from_options(&bad).is_err(), "{bad:?}");
        }
    }

    fn msg(p: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(format!("v{p}-{offset}").into_bytes()),
            None,
            "t".into(),
            Timestamp::CreateTime(offset),
            p,
            offset,
            None,
        )
    }

    /// The (partition, offset) of every row built.
    fn rows_of(rows: RowBuilder) -> Vec<(i32, i64)> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Int32Type, Int64Type};
        rows.finish()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let p = b.column(3).as_primitive::<Int32Type>().clone();
                let o = b.column(4).as_primitive::<Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (p.value(i), o.value(i)))
            })
            .collect()
    }

    #[test]
    fn a_share_reads_each_partition_to_its_end_and_keeps_the_rest_in_order() {
        let tp = |p: i32| ("t".to_string(), p);
        let ending: BTreeMap<_, _> = [(tp(0), 100), (tp(1), 7), (tp(2), 100)].into();
        let mut stash = Stash::new();
        // Batch 1: partition 0 from 0 to 3, partition 1 from 5 to 7; partition 2 (of this
        // reader) has nothing planned.
        let from: BTreeMap<_, _> = [(tp(0), 0), (tp(1), 5)].into();
        let ends: BTreeMap<_, _> = [(tp(0), 3), (tp(1), 7)].into();
        let mut share = Share::new(&from, &ends, &mut stash, Some(&ending));
        let mut rows = RowBuilder::new(kafka_schema(false), false);
        assert_eq!(share.behind(), 2);
        let mut gaps = Vec::new();
        for m in [
            msg(0, 0),
            msg(0, 1),
            msg(1, 4), // re-delivered: dropped
            msg(1, 5),
            msg(0, 2),
            msg(0, 3), // past the end of 0: kept
            msg(2, 9), // not planned: kept for later
            msg(0, 4), // kept behind 3
            msg(1, 7), // at endingOffsets: never read, dropped
        ] {
            share
                .take(&m, &mut rows, &mut stash, Some(&ending), |tp, pos| {
                    gaps.push((tp.1, pos));
                    Ok(())
                })
                .unwrap();
        }
        assert!(gaps.is_empty(), "{gaps:?}");
        assert_eq!(share.behind(), 1, "partition 1 is short of 7");
        // Offset 6 of partition 1 is a transaction marker: the consumer's position is 8.
        share.step_over_gaps(|tp| (tp.1 == 1).then_some(8));
        assert_eq!(share.behind(), 0);
        assert_eq!(share.positions(), [(tp(0), 3), (tp(1), 7)].into());
        let reached = share.finish(&mut stash);
        assert_eq!(reached, [(tp(0), 3), (tp(1), 7)].into());
        assert_eq!(rows_of(rows), [(0, 0), (0, 1), (1, 5), (0, 2)]);
        assert_eq!(stash[&tp(0)].len(), 2);
        assert_eq!(stash[&tp(2)].len(), 1);
        assert!(!stash.contains_key(&tp(1)));

        // Batch 2: the kept messages first, in order; a jump past the expected offset is
        // judged by `gap`.
        let from: BTreeMap<_, _> = [(tp(0), 3), (tp(2), 9)].into();
        let ends: BTreeMap<_, _> = [(tp(0), 8), (tp(2), 10)].into();
        let mut share = Share::new(&from, &ends, &mut stash, Some(&ending));
        let mut rows = RowBuilder::new(kafka_schema(false), false);
        share.drain_stashes(&mut rows).unwrap();
        assert_eq!(share.behind(), 1, "partition 2 reached 10 from the stash");
        let mut gaps = Vec::new();
        for m in [msg(0, 5), msg(0, 7)] {
            share
                .take(&m, &mut rows, &mut stash, Some(&ending), |tp, pos| {
                    gaps.push((tp.1, pos));
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(gaps, [(0, 6)], "offset 6 was skipped");
        assert_eq!(share.behind(), 0);
        let e = share.take(&msg(0, 9), &mut rows, &mut stash, Some(&ending), |_, _| {
            Err(SqlError::DataLoss("lost".into()))
        });
        assert!(e.is_ok(), "past the end: kept, not judged");
        assert_eq!(share.finish(&mut stash), [(tp(0), 8), (tp(2), 10)].into());
        assert_eq!(rows_of(rows), [(0, 3), (0, 4), (2, 9), (0, 5), (0, 7)]);
        assert_eq!(
            stash[&tp(0)].iter().map(|m| m.offset()).collect::<Vec<_>>(),
            [9]
        );
    }

    #[test]
    fn a_share_steps_over_gaps_up_to_a_kept_message_or_the_consumer_position() {
        let tp = |p: i32| ("t".to_string(), p);
        let mut stash = Stash::new();
        stash.insert(tp(0), [msg(0, 6)].into());
        let from: BTreeMap<_, _> = [(tp(0), 2), (tp(1), 0)].into();
        let ends: BTreeMap<_, _> = [(tp(0), 5), (tp(1), 4)].into();
        let mut share = Share::new(&from, &ends, &mut stash, None);
        let mut rows = RowBuilder::new(kafka_schema(false), false);
        share.drain_stashes(&mut rows).unwrap();
        assert_eq!(share.behind(), 2);
        // Partition 0's kept message at 6 says 2..5 hold nothing; partition 1's consumer
        // position 3 moves it to 3, still short of 4; none of that is capped past the end.
        share.step_over_gaps(|tp| (tp.1 == 1).then_some(3));
        assert_eq!(share.positions(), [(tp(0), 5), (tp(1), 3)].into());
        assert_eq!(share.behind(), 1);
        share.step_over_gaps(|_| None);
        assert_eq!(share.behind(), 1, "no position: no step");
        assert!(rows_of(rows).is_empty());
        assert_eq!(share.finish(&mut stash)[&tp(0)], 5);
        assert_eq!(
            stash[&tp(0)].len(),
            1,
            "the message at 6 stays for the next batch"
        );
    }

    #[test]
    fn rate_limit_splits_in_proportion_like_spark() {
        let tp = |p: i32| ("t".to_string(), p);
        let from: BTreeMap<_, _> = [(tp(0), 0), (tp(1), 100), (tp(2), 5)].into();
        let until: BTreeMap<_, _> = [(tp(0), 600), (tp(1), 400), (tp(2), 6)].into();
        // 901 available, 100 allowed: 600/901*100 = 66.6 -> 66, 300/901*100 = 33.3 -> 33,
        // 1/901*100 = 0.11 -> 1 (never starved).
        let got = rate_limit(&from, &until, 100);
        assert_eq!(got, [(tp(0), 66), (tp(1), 133), (tp(2), 6)].into());
        // Under the limit: everything.
        assert_eq!(rate_limit(&from, &until, 10_000), until);
        // Nothing new: the ends are the starts.
        assert_eq!(rate_limit(&from, &from, 10), from);
    }
}
