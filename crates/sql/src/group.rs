//! Multi-process queries, on Kafka itself (the architecture of Kafka Streams): the same
//! query started as N `runnel sql` processes with the same application id
//! (`--application-id ID`, or `SET application.id = ID` in the file).
//!
//! - The processes are one consumer group (group id = the application id, as Kafka
//!   Streams names it), subscribed to the source topics and to the internal repartition
//!   topic `<id>-aggregate-repartition`; each process reads the partitions it is assigned.
//! - Source rows go through the plan below the aggregation (parse, project, filter,
//!   explode) and are written, as Arrow IPC, to the repartition partition that the
//!   hash of their grouping key (without the window) picks, so that each key has one
//!   owner whatever the source's partitioning.
//! - Each repartition partition is a task with its own aggregation state, backed by the
//!   compacted changelog topic `<id>-aggregate-state-changelog` (same partition): a full
//!   snapshot under the key `snapshot` and the deltas after it under `delta-<batch>`
//!   (tombstoned when the next snapshot is written). A process assigned a partition
//!   restores its state from the changelog (read_committed) before it reads it.
//! - A batch is one Kafka transaction: the repartitioned rows, the changelog records,
//!   the sink's rows and the consumed offsets of the source and repartition partitions
//!   (`sendOffsetsToTransaction` with the consumer's group metadata, so a process that
//!   lost its partitions in a rebalance is fenced by the group generation: KIP-447).
//!   So output is exactly-once across processes, crashes and rebalances.
//!
//! The consumer's rebalances are eager (revoke all, assign all): after one, the process
//! drops what it read since its last commit and its tasks, and restores the tasks of its
//! new assignment; positions are the committed offsets. A process that starts or stops
//! changes the assignment without a restart of the others.
//!
//! Event time: a batch reads its source partitions as Spark plans a batch (end offsets
//! fixed first, `maxOffsetsPerTrigger` split in proportion to each partition's backlog,
//! each read to its end), so they advance in step. At the end of each batch that read
//! the source, the process writes a progress marker (a record without a value) to every
//! state partition: per source partition it reads, the max event time read so far and
//! whether a backlog is left. A task's watermark (`Clock`) follows the markers, not its
//! own rows: the slowest source partition with a backlog holds it, so rows not read yet
//! from any source partition are never behind it; without backlog it is the max event
//! time reported minus the delay, as in the single process. Markers come after the
//! batch's rows in each partition, so a task never moves its watermark past rows of a
//! batch it has not folded yet.
//!
//! Scope: one Kafka source (`subscribe`), a GROUP BY aggregation (windowed or not) in
//! update or append mode, a Kafka sink on the source's cluster. What is refused, with the
//! reason, is checked in `GroupQuery::from_script`.

use crate::aggregate_state::AggregateState;
use crate::checkpoint::Changelog;
use crate::engine::{execute, opt, prepare, QueryOptions, Trigger};
use crate::error::{Result, SqlError};
use crate::output_mode::OutputMode;
use crate::plan::StreamingPlan;
use crate::progress::ProgressOutput;
use crate::script::Script;
use crate::sink::{producer_config, send_rows, BoundedSender};
use crate::source::{
    cached_high_watermark, offset_in, rate_limit, RowBuilder, StartingOffsets, Subscription,
};
use crate::table::SlotTable;
use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::RowConverter;
use datafusion::prelude::SessionContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `SET` that names the application (Kafka Streams' `application.id`).
pub const APPLICATION_ID: &str = "application.id";
/// Rows of the aggregation's input per repartition record (halved while the record is
/// larger than `MAX_RECORD_BYTES`).
const ROWS_PER_RECORD: usize = 4096;
/// Below librdkafka's default `message.max.bytes` (1 MB).
const MAX_RECORD_BYTES: usize = 900_000;
/// Messages per batch when the source sets no `maxOffsetsPerTrigger`.
const DEFAULT_MAX_MESSAGES: u64 = 100_000;
/// How long a batch reads before it runs, at most.
const MAX_BATCH_READ: Duration = Duration::from_secs(2);
/// How long restoring the changelog may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// Batches in a row that may be aborted (rebalances, fencing) before the query fails.
const MAX_ABORTS_IN_A_ROW: u32 = 20;
/// Kafka Streams' defaults under exactly-once: a dead process's open transaction blocks
/// read_committed readers of its partitions until this passes.
const TRANSACTION_TIMEOUT_MS: &str = "10000";
const SESSION_TIMEOUT_MS: &str = "10000";
/// Kafka Streams' `repartition.purge.interval.ms` default.
const PURGE_INTERVAL: Duration = Duration::from_secs(30);
const SNAPSHOT_KEY: &str = "snapshot";
const DELTA_PREFIX: &str = "delta-";
/// Header of a progress marker (a repartition record without a value): the `Report` of
/// the batch that wrote it, as JSON.
const PROGRESS_HEADER: &str = "runnel.progress";
/// Header of a changelog record: the task's `Clock` after the batch, as JSON.
const CLOCK_HEADER: &str = "runnel.clock";
/// Metadata of a state partition's committed offset: the changelog batch written in the
/// same transaction (`changelog-batch=<n>`).
const CHANGELOG_BATCH_METADATA: &str = "changelog-batch=";

/// The changelog batch a committed offset's metadata names (None: none, e.g. an offset
/// committed by an older version).
fn changelog_batch_of(metadata: &str) -> Option<u64> {
    metadata
        .strip_prefix(CHANGELOG_BATCH_METADATA)?
        .parse()
        .ok()
}

/// A source partition.
type TopicPartition = (String, i32);

/// What a progress marker says, per source partition its process reads: the max event
/// time (ms) the process had read (None: not known to be in step with the others, e.g.
/// the partition did not reach its end offset in time) and whether offsets were left
/// past the batch (a backlog).
type Report = Vec<(String, i32, Option<i64>, bool)>;

/// A state partition's event-time clock: the watermark it drops late rows and closes
/// windows by, and what the progress markers said of each source partition. Not
/// thread-safe.
#[derive(Clone, Debug, PartialEq)]
struct Clock {
    watermark_ms: i64,
    progress: BTreeMap<TopicPartition, (Option<i64>, bool)>,
}

impl Clock {
    /// Every source partition unknown, held as a backlog: no watermark until each has
    /// been reported (its reader writes a marker when it gets the partition).
    fn new(sources: &[TopicPartition]) -> Clock {
        Clock {
            watermark_ms: 0,
            progress: sources
                .iter()
                .map(|tp| (tp.clone(), (None, true)))
                .collect(),
        }
    }

    fn report(&mut self, report: &Report) {
        for (t, p, max, backlog) in report {
            self.progress.insert((t.clone(), *p), (*max, *backlog));
        }
    }

    /// Moves the watermark after a batch: the least max event time among the source
    /// partitions with a backlog (an unknown one holds it where it is), else the most
    /// among all, minus the delay. It never goes back.
    fn advance(&mut self, delay_ms: i64) {
        let held = self
            .progress
            .values()
            .filter(|(_, backlog)| *backlog)
            .map(|(max, _)| *max)
            .min();
        let front = match held {
            Some(least) => least,
            None => self.progress.values().filter_map(|(max, _)| *max).max(),
        };
        if let Some(t) = front {
            self.watermark_ms = self.watermark_ms.max(t.saturating_sub(delay_ms).max(0));
        }
    }

    fn encode(&self) -> Vec<u8> {
        let progress: Report = self
            .progress
            .iter()
            .map(|((t, p), (max, backlog))| (t.clone(), *p, *max, *backlog))
            .collect();
        serde_json::json!({"watermark_ms": self.watermark_ms, "progress": progress})
            .to_string()
            .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Clock> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let progress: Report = serde_json::from_value(v.get("progress")?.clone()).ok()?;
        let mut c = Clock {
            watermark_ms: v.get("watermark_ms")?.as_i64()?,
            progress: BTreeMap::new(),
        };
        c.report(&progress);
        Some(c)
    }
}

/// A header's value, by name.
fn header<'a, M: Message>(m: &'a M, name: &str) -> Option<&'a [u8]> {
    m.headers()?.iter().find(|h| h.key == name)?.value
}

/// The application id of a script: `cli` (`--application-id`) beats the file's `SET
/// application.id`. It names the consumer group and the internal topics, so it must be
/// a valid topic name prefix.
pub fn application_id(script: &Script, cli: Option<&str>) -> Result<Option<String>> {
    let id = match cli {
        Some(id) => id.to_string(),
        None => match opt(&script.vars, APPLICATION_ID) {
            Some(id) => id.clone(),
            None => return Ok(None),
        },
    };
    let id = id.trim().to_string();
    if id.is_empty()
        || id.len() > 200
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(SqlError::option(
            APPLICATION_ID,
            format!("{id:?}: 1 to 200 characters of a-z, A-Z, 0-9, '.', '_', '-' (it prefixes topic names)"),
        ));
    }
    Ok(Some(id))
}

/// Marks that the consumer's assignment changed (revoked or assigned), for the loop.
struct GroupContext {
    rebalanced: AtomicBool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // A partition paused at the end of a batch stays paused by librdkafka across a
        // reassignment: resume what is revoked (the batch read is dropped anyway).
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(error = %e, "cannot resume revoked partitions");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(error = %e, "consumer group rebalance error");
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }
}

/// One state partition (a partition of the repartition and changelog topics).
struct Task {
    agg: AggregateState,
    /// The task's next batch id (the aggregation marks entries with it).
    next_batch: u64,
    /// Changelog keys of the deltas since the last snapshot: tombstoned by the next one.
    deltas: Vec<String>,
    clock: Clock,
}

/// What one batch read.
#[derive(Default)]
struct Polled {
    source: Vec<OwnedMessage>,
    repartitioned: BTreeMap<i32, Vec<OwnedMessage>>,
    /// Next offset to commit per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
    /// Set when the batch reports progress (it read the source, or the assignment is
    /// new): per assigned source partition, whether it reached its end offset (in step
    /// with the others) and whether a backlog is left.
    progress: Option<Vec<(TopicPartition, bool, bool)>>,
    /// The consumer's group membership (member id, generation) when the batch began to
    /// read, for its offsets commit: see `poll_batch`.
    group: Option<ConsumerGroupMetadata>,
}

impl Polled {
    fn is_empty(&self) -> bool {
        self.source.is_empty() && self.repartitioned.is_empty() && self.progress.is_none()
    }
}

/// A query run by a group of processes. Not thread-safe: drive it from one task.
pub struct GroupQuery {
    app_id: String,
    ctx: SessionContext,
    plan: StreamingPlan,
    source_table: Arc<SlotTable>,
    source_topics: Vec<String>,
    /// Every partition of the source topics (a new task's clock waits for them all).
    source_partitions: Vec<TopicPartition>,
    /// `startingOffsets`: where a source partition without a committed offset starts.
    auto_offset_reset: &'static str,
    /// Next offset to read per assigned source partition, messages polled past a batch's
    /// end offsets (read first by the next batch), the partitions paused because they
    /// reached their end, and whether the next batch reports progress with no rows
    /// (a new assignment).
    positions: BTreeMap<TopicPartition, i64>,
    stash: BTreeMap<TopicPartition, VecDeque<OwnedMessage>>,
    paused: BTreeSet<TopicPartition>,
    announce: bool,
    /// Max event time of the source rows read since the assignment.
    source_max_ms: Option<i64>,
    /// An empty aggregation, for `event_time_max` over the rows the process
    /// repartitions.
    event_time: AggregateState,
    include_headers: bool,
    sink_topic: Option<String>,
    repartition_topic: String,
    changelog_topic: String,
    partitions: i32,
    consumer: BaseConsumer<GroupContext>,
    producer: FutureProducer,
    /// The producer's configuration: a producer fenced (its transaction timed out while
    /// the process was stopped) is replaced by a new one.
    producer_config: ClientConfig,
    admin: AdminClient<DefaultClientContext>,
    /// Committed offsets of repartition partitions not purged yet, and when the last
    /// purge ran (Kafka Streams' `repartition.purge.interval.ms`).
    to_purge: BTreeMap<i32, i64>,
    last_purge: Instant,
    /// The consumer's configuration, for the changelog reader.
    base_config: ClientConfig,
    /// Hash of the query's text: changelog records of another query are refused.
    query_hash: u32,
    /// Key columns (input indices) the rows are repartitioned by, and their converter.
    key_indices: Vec<usize>,
    key_conv: RowConverter,
    tasks: BTreeMap<i32, Task>,
    deltas_per_snapshot: u32,
    max_messages: u64,
    trigger: Trigger,
    max_batches: Option<u64>,
    progress: ProgressOutput,
    stop: Arc<AtomicBool>,
}

fn refuse(what: impl Into<String>) -> SqlError {
    SqlError::Unsupported(format!(
        "{} (multi-process mode, application.id)",
        what.into()
    ))
}

impl GroupQuery {
    /// Plans the query and checks it can run in a group; joins nothing yet (`run` does).
    pub async fn from_script(
        script: &Script,
        options: QueryOptions,
        app_id: &str,
    ) -> Result<GroupQuery> {
        let p = prepare(script, options, true).await?;
        if p.group_sources.len() != 1 {
            return Err(refuse(format!(
                "the query reads {} Kafka sources; a multi-process query reads exactly one",
                p.group_sources.len()
            )));
        }
        let src = &p.group_sources[0];
        let so = &src.options;
        let Subscription::Topics(source_topics) = &so.subscription else {
            return Err(refuse(format!(
                "{}: only 'subscribe' is supported: the consumer group assigns the partitions",
                src.name
            )));
        };
        let auto_offset_reset = match &so.starting {
            StartingOffsets::Earliest => "earliest",
            StartingOffsets::Latest => "latest",
            _ => {
                return Err(refuse(format!(
                    "{}: startingOffsets must be 'earliest' or 'latest' (offsets per partition and timestamps are not supported)",
                    src.name
                )))
            }
        };
        for key in [
            "endingOffsets",
            "endingTimestamp",
            "endingOffsetsByTimestamp",
            "minOffsetsPerTrigger",
            "kafka.group.id",
            "groupIdPrefix",
        ] {
            if opt(&src.declared, key).is_some_and(|v| !v.trim().is_empty()) {
                return Err(refuse(format!(
                    "{}: option {key} is not supported (the consumer group is the application id, and the query runs until stopped)",
                    src.name
                )));
            }
        }
        let Some(sink) = &p.sink_decl else {
            return Err(refuse(
                "the query needs INSERT INTO a Kafka sink: each process writes its share in Kafka transactions",
            ));
        };
        if sink.format != "kafka" {
            return Err(refuse(format!(
                "sink {} is {:?}: only a Kafka sink is supported (its output is committed with the offsets and state in one transaction)",
                sink.name, sink.format
            )));
        }
        crate::options::check_sink(
            crate::options::sink_options("kafka").expect("kafka sink options"),
            &sink.options,
        )?;
        let sink_bootstrap = opt(&sink.options, "kafka.bootstrap.servers").cloned();
        if sink_bootstrap.as_deref() != Some(so.bootstrap_servers.as_str()) {
            return Err(refuse(format!(
                "sink {}: kafka.bootstrap.servers must be the source's ({}): one transaction covers the source offsets and the output",
                sink.name, so.bootstrap_servers
            )));
        }
        let plan = p.plan;
        let Some(ap) = &plan.aggregate else {
            return Err(refuse(if plan.operator.is_some() {
                "stream-stream joins and deduplication are not supported; a GROUP BY aggregation is"
            } else {
                "the query has no GROUP BY aggregation (queries without state are not supported yet: run them in one process, or one per partition with 'assign')"
            }));
        };
        if plan.mode == OutputMode::Complete {
            return Err(refuse(
                "complete output mode is not supported: each process holds only its keys; use update",
            ));
        }
        if p.options.trigger == Some(Trigger::AvailableNow) {
            return Err(refuse("the availableNow trigger is not supported"));
        }
        if let Some(cp) = &p.options.checkpoint_location {
            tracing::warn!(checkpoint = %cp.display(), "checkpointLocation is not used in multi-process mode: state lives in the changelog topic");
        }
        let spec = &ap.spec;
        let key_indices = spec.key_indices();
        let key_conv = spec.key_converter(&key_indices)?;

        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &so.bootstrap_servers)
            .set("log_level", "3");
        for (k, v) in &so.client {
            if [
                "enable.auto.commit",
                "auto.offset.reset",
                "isolation.level",
                "group.id",
                "partition.assignment.strategy",
                "group.protocol",
            ]
            .contains(&k.as_str())
            {
                return Err(refuse(format!(
                    "kafka.{k} is set by the engine (read_committed, offsets committed in transactions, eager rebalances)"
                )));
            }
            base.set(k, v);
        }
        let mut cc = base.clone();
        cc.set("group.id", app_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", auto_offset_reset)
            .set("fetch.wait.max.ms", "50")
            // Eager rebalances: every partition is revoked, so what a batch read before
            // one is dropped and read again from the committed offsets.
            .set("partition.assignment.strategy", "range,roundrobin");
        if !so.client.contains_key("session.timeout.ms") {
            cc.set("session.timeout.ms", SESSION_TIMEOUT_MS);
        }
        let consumer: BaseConsumer<GroupContext> = cc.create_with_context(GroupContext {
            rebalanced: AtomicBool::new(false),
        })?;

        let mut pc = producer_config(&sink.options)?;
        if !sink
            .options
            .keys()
            .any(|k| k.eq_ignore_ascii_case("kafka.transaction.timeout.ms"))
        {
            pc.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
        }
        let producer = new_producer(&pc, app_id)?;

        let source_partitions = source_partitions(&consumer, source_topics)?;
        let partitions = source_partitions
            .iter()
            .map(|(_, p)| p + 1)
            .max()
            .unwrap_or(0);
        let repartition_topic = format!("{app_id}-aggregate-repartition");
        let changelog_topic = format!("{app_id}-aggregate-state-changelog");
        let admin: AdminClient<DefaultClientContext> = base.create()?;
        create_internal_topics(&admin, &repartition_topic, &changelog_topic, partitions).await?;

        Ok(GroupQuery {
            app_id: app_id.to_string(),
            ctx: p.ctx,
            source_table: src.table.clone(),
            source_topics: source_topics.clone(),
            source_partitions,
            auto_offset_reset,
            positions: BTreeMap::new(),
            stash: BTreeMap::new(),
            paused: BTreeSet::new(),
            announce: false,
            source_max_ms: None,
            event_time: AggregateState::new(ap.spec.clone())?,
            include_headers: so.include_headers,
            sink_topic: opt(&sink.options, "topic").cloned(),
            repartition_topic,
            changelog_topic,
            partitions,
            consumer,
            producer,
            producer_config: pc,
            admin,
            to_purge: BTreeMap::new(),
            last_purge: Instant::now(),
            base_config: base,
            query_hash: crc32c::crc32c(
                p.text
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .as_bytes(),
            ),
            key_indices,
            key_conv,
            tasks: BTreeMap::new(),
            deltas_per_snapshot: crate::engine::deltas_per_snapshot(&script.vars)?,
            max_messages: so
                .max_offsets_per_trigger
                .unwrap_or(DEFAULT_MAX_MESSAGES)
                .max(1),
            trigger: p.options.trigger.unwrap_or(Trigger::AsFastAsPossible),
            max_batches: p.options.max_batches,
            progress: p.options.progress,
            stop: Arc::new(AtomicBool::new(false)),
            plan,
        })
    }

    /// A flag that stops the query after the current batch.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Joins the group and runs until stopped, `max_batches`, or an error.
    pub async fn run(&mut self) -> Result<()> {
        let mut topics: Vec<&str> = self.source_topics.iter().map(|s| s.as_str()).collect();
        topics.push(&self.repartition_topic);
        // The consumer subscribes to the topics its metadata knows: a member whose
        // metadata lacks the repartition topic just created (a broker of a cluster not
        // told yet) would get none of its partitions until the next refresh.
        let seen = wait_for_partitions(
            self.consumer.client(),
            &self.repartition_topic,
            self.partitions,
        )
        .await?;
        if seen != self.partitions {
            return Err(SqlError::Query(format!(
                "the consumer sees {seen} partitions of {} after 30 s, not {}",
                self.repartition_topic, self.partitions
            )));
        }
        self.consumer.subscribe(&topics)?;
        let mut batches = 0u64;
        let mut aborts = 0u32;
        let mut next_trigger = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && self.max_batches.is_none_or(|m| batches < m) {
            if let Trigger::ProcessingTime(iv) = self.trigger {
                let now = Instant::now();
                if next_trigger > now {
                    tokio::time::sleep(next_trigger - now).await;
                }
                next_trigger = Instant::now() + iv;
            }
            let mut polled = self.poll_batch()?;
            if polled.is_empty() && polled.group.is_none() {
                continue; // the assignment changed: restored at the next poll
            }
            if polled.is_empty() {
                // Nothing new: a batch runs only when a watermark closes state (Spark's
                // no-data batch). Its transaction commits the positions of the state
                // partitions it ran on, unchanged, so the group generation still
                // fences a process that lost them.
                polled.offsets = self.no_data_batch_offsets()?;
                if polled.offsets.is_empty() {
                    continue;
                }
            }
            let started = Instant::now();
            let source_rows = polled.source.len();
            if let Err(e) = self.producer.begin_transaction() {
                tracing::warn!(error = %e, "cannot begin a transaction; replacing the producer");
                self.producer = new_producer(&self.producer_config, &self.app_id)?;
                self.producer.begin_transaction()?;
            }
            match self.run_batch(polled).await {
                Ok((rep_rows, out_rows, tasks)) => {
                    aborts = 0;
                    self.purge_repartitioned().await;
                    batches += 1;
                    if self.progress != ProgressOutput::None
                        && (source_rows > 0 || rep_rows > 0 || out_rows > 0)
                    {
                        eprintln!(
                            "batch {batches}: {source_rows} source rows, {rep_rows} rows into state partitions {tasks:?}, {out_rows} rows out, {} ms",
                            started.elapsed().as_millis()
                        );
                    }
                }
                Err(e) => {
                    // Fenced (a rebalance moved our partitions), or a broker error: the
                    // transaction's writes and offsets are discarded; read again from
                    // the committed offsets with state restored from the changelog.
                    if let Err(abort) = self.producer.abort_transaction(Duration::from_secs(30)) {
                        // Fenced: the transaction timed out (the process was stopped
                        // longer than transaction.timeout.ms) and the broker aborted it.
                        tracing::warn!(error = %abort, "cannot abort; replacing the producer");
                        self.producer = new_producer(&self.producer_config, &self.app_id)?;
                    }
                    aborts += 1;
                    if aborts > MAX_ABORTS_IN_A_ROW || !matches!(e, SqlError::Kafka(_)) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "batch aborted; resuming from the committed offsets");
                    eprintln!("runnel sql: application {}: batch aborted ({e}); resuming from the committed offsets", self.app_id);
                    self.reset_to_committed()?;
                }
            }
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Reads one batch as Spark plans one: the end offsets of the assigned source
    /// partitions are fixed first, `maxOffsetsPerTrigger` split over them in proportion
    /// to what each has available (Spark's `rateLimit`), and each is read to its end (a
    /// partition that got there is paused; what came past it waits in the stash), so the
    /// partitions advance in step and the progress the batch reports holds for each.
    /// Repartitioned rows are taken as they come, at most `max_messages` records.
    /// Reading stops when every source partition reached its end and nothing more came
    /// within 100 ms, or after `MAX_BATCH_READ`. A rebalance drops what was read (it is
    /// read again from the committed offsets) and restores the new assignment's state.
    ///
    /// The group membership is taken before reading, and the batch's offsets are
    /// committed under it. librdkafka forgets its member id and generation as soon as its
    /// heartbeat finds the session expired, before the application polls the revocation:
    /// a process paused mid-batch would otherwise commit, on resuming, under an empty
    /// member id and generation -1, which a coordinator accepts (Kafka's too), and the
    /// batch that another process has read again by then would count twice. Under the
    /// old membership the commit is refused (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION) and
    /// the batch aborted.
    fn poll_batch(&mut self) -> Result<Polled> {
        let mut polled = Polled::default();
        if self.take_rebalance()? {
            return Ok(polled);
        }
        polled.group = self.consumer.group_metadata();
        let ends = self.source_ends()?;
        let until = rate_limit(&self.positions, &ends, self.max_messages);
        let mut positions = self.positions.clone();
        let mut records = 0u64;
        // What the last batch polled past its ends first, in order; then the paused
        // partitions with nothing left in the stash fetch again.
        for (_, q) in std::mem::take(&mut self.stash) {
            for m in q {
                self.accept(m, &mut polled, &mut positions, &until, &mut records)?;
            }
        }
        let resume: Vec<TopicPartition> = self
            .paused
            .iter()
            .filter(|tp| !self.stash.contains_key(*tp))
            .cloned()
            .collect();
        if !resume.is_empty() {
            self.consumer.resume(&tpl_of(&resume)?)?;
            for tp in &resume {
                self.paused.remove(tp);
            }
        }
        let started = Instant::now();
        loop {
            let source_done = until
                .iter()
                .all(|(tp, e)| positions.get(tp).is_some_and(|p| p >= e));
            let wait = Duration::from_millis(if source_done { 100 } else { 10 });
            let m = self.consumer.poll(wait).map(|r| r.map(|m| m.detach()));
            if self.consumer.context().rebalanced.load(Ordering::SeqCst) {
                // Dropped: the next call restores the new assignment and reads from
                // the committed offsets.
                return Ok(Polled::default());
            }
            match m {
                None if source_done => {
                    let read = !polled.source.is_empty() || records > 0;
                    if read || started.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                }
                None => self.step_over_gaps(&mut positions, &until)?,
                Some(Err(e)) => tracing::debug!(error = %e, "consumer: transient error"),
                Some(Ok(m)) => self.accept(m, &mut polled, &mut positions, &until, &mut records)?,
            }
            if started.elapsed() > MAX_BATCH_READ || self.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if !polled.source.is_empty() || self.announce {
            polled.progress = Some(
                until
                    .iter()
                    .map(|(tp, &u)| {
                        let at = positions[tp];
                        (tp.clone(), at >= u, u < ends[tp] || at < u)
                    })
                    .collect(),
            );
            for (tp, &o) in &positions {
                polled.offsets.insert(tp.clone(), o);
            }
            self.announce = false;
        }
        self.positions = positions;
        Ok(polled)
    }

    /// Takes a polled message into the batch, or keeps it in the stash for a later one
    /// (a source partition past its end offset, repartitioned rows past the batch's
    /// cap) and pauses its partition. Messages of partitions not assigned, or below the
    /// position (re-delivered), are dropped.
    fn accept(
        &mut self,
        m: OwnedMessage,
        polled: &mut Polled,
        positions: &mut BTreeMap<TopicPartition, i64>,
        until: &BTreeMap<TopicPartition, i64>,
        records: &mut u64,
    ) -> Result<()> {
        let tp = (m.topic().to_string(), m.partition());
        let held = self.stash.contains_key(&tp);
        if m.topic() == self.repartition_topic {
            if held || *records >= self.max_messages {
                return self.hold(tp, m);
            }
            polled.offsets.insert(tp.clone(), m.offset() + 1);
            polled.repartitioned.entry(tp.1).or_default().push(m);
            *records += 1;
            return Ok(());
        }
        let (Some(&at), Some(&end)) = (positions.get(&tp), until.get(&tp)) else {
            return Ok(());
        };
        if m.offset() < at {
            return Ok(());
        }
        if held || m.offset() >= end {
            return self.hold(tp, m);
        }
        positions.insert(tp, m.offset() + 1);
        polled.source.push(m);
        Ok(())
    }

    fn hold(&mut self, tp: TopicPartition, m: OwnedMessage) -> Result<()> {
        if self.paused.insert(tp.clone()) {
            self.consumer.pause(&tpl_of(std::slice::from_ref(&tp))?)?;
        }
        self.stash.entry(tp).or_default().push_back(m);
        Ok(())
    }

    /// Advances source partitions over offsets that hold no record to read (transaction
    /// markers, aborted or compacted records): librdkafka's position is past them, and
    /// everything below it has been handed to us.
    fn step_over_gaps(
        &self,
        positions: &mut BTreeMap<TopicPartition, i64>,
        until: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let behind: Vec<&TopicPartition> = until
            .iter()
            .filter(|(tp, e)| {
                !self.stash.contains_key(*tp) && positions.get(*tp).is_some_and(|p| p < *e)
            })
            .map(|(tp, _)| tp)
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        let assigned = self.consumer.position()?;
        for tp in behind {
            if let Some(seen) = offset_in(&assigned, tp) {
                let at = positions
                    .get_mut(tp)
                    .expect("behind partitions have a position");
                *at = (*at).max(seen.min(until[tp]));
            }
        }
        Ok(())
    }

    /// The latest offset of each assigned source partition: librdkafka's high watermark
    /// from its last fetch response, else a ListOffsets request.
    fn source_ends(&self) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut ends = BTreeMap::new();
        for (tp, &at) in &self.positions {
            let end = match cached_high_watermark(self.consumer.client(), tp)? {
                Some(h) => h,
                None => {
                    self.consumer
                        .fetch_watermarks(&tp.0, tp.1, Duration::from_secs(10))?
                        .1
                }
            };
            ends.insert(tp.clone(), end.max(at));
        }
        Ok(ends)
    }

    /// After the consumer's assignment changed: restores the new assignment's state.
    fn take_rebalance(&mut self) -> Result<bool> {
        if !self
            .consumer
            .context()
            .rebalanced
            .swap(false, Ordering::SeqCst)
        {
            return Ok(false);
        }
        self.on_assignment()?;
        Ok(true)
    }

    /// For a no-data batch: the positions of the state partitions whose watermark
    /// closes state; empty when none does (or their positions are not known yet).
    fn no_data_batch_offsets(&self) -> Result<BTreeMap<(String, i32), i64>> {
        let delay = self.plan.watermark_delay_ms;
        let expired: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agg.has_expired(t.watermark(delay)))
            .map(|(p, _)| *p)
            .collect();
        let mut out = BTreeMap::new();
        if expired.is_empty() {
            return Ok(out);
        }
        let positions = self.consumer.position()?;
        let mut unknown = TopicPartitionList::new();
        for p in expired {
            match positions
                .find_partition(&self.repartition_topic, p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => {
                    out.insert((self.repartition_topic.clone(), p), o);
                }
                // Nothing read since the assignment: its committed offset.
                _ => {
                    unknown.add_partition(&self.repartition_topic, p);
                }
            }
        }
        if unknown.count() > 0 {
            let committed = self
                .consumer
                .committed_offsets(unknown, Duration::from_secs(30))?;
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    out.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        Ok(out)
    }

    /// After an abort: state and positions go back to what is committed.
    fn reset_to_committed(&mut self) -> Result<()> {
        if !self.paused.is_empty() {
            let paused: Vec<TopicPartition> =
                std::mem::take(&mut self.paused).into_iter().collect();
            self.consumer.resume(&tpl_of(&paused)?)?;
        }
        let committed = self.consumer.committed(Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            tpl.add_partition_offset(e.topic(), e.partition(), offset)?;
        }
        if tpl.count() > 0 {
            self.consumer
                .seek_partitions(tpl, Duration::from_secs(30))?;
        }
        self.on_assignment()
    }

    /// Rebuilds the tasks for the current assignment from the changelog.
    fn on_assignment(&mut self) -> Result<()> {
        self.tasks.clear();
        self.stash.clear();
        // Resumed when they were revoked (or by `reset_to_committed`).
        self.paused.clear();
        self.positions.clear();
        self.source_max_ms = None;
        self.announce = true;
        let assignment = self.consumer.assignment()?;
        let mut source = Vec::new();
        let mut state = Vec::new();
        // Per state partition: the changelog batch its committed offset was written with.
        let mut expect = BTreeMap::new();
        for e in assignment.elements() {
            if e.topic() == self.repartition_topic {
                state.push(e.partition());
            } else {
                source.push(format!("{}-{}", e.topic(), e.partition()));
            }
        }
        if assignment.count() > 0 {
            // Offsets committed by a transaction still open are unstable: wait for them
            // (read_committed asks for stable offsets), so the changelog read below
            // holds everything the committed offsets account for.
            let committed = self.consumer.committed(Duration::from_secs(60))?;
            for e in committed.elements_for_topic(&self.repartition_topic) {
                if let Some(b) = changelog_batch_of(e.metadata()) {
                    expect.insert(e.partition(), b);
                }
            }
            for e in assignment.elements() {
                if e.topic() == self.repartition_topic {
                    continue;
                }
                let tp = (e.topic().to_string(), e.partition());
                let at = match offset_in(&committed, &tp) {
                    Some(o) => o,
                    None => {
                        let (low, high) =
                            self.consumer
                                .fetch_watermarks(&tp.0, tp.1, Duration::from_secs(10))?;
                        if self.auto_offset_reset == "earliest" {
                            low
                        } else {
                            high
                        }
                    }
                };
                self.positions.insert(tp, at);
            }
        }
        let started = Instant::now();
        let restored = self.restore(&state, &expect)?;
        let keys: u64 = self
            .tasks
            .values()
            .map(|t| t.agg.metrics().num_rows_total)
            .sum();
        eprintln!(
            "runnel sql: application {}: assigned source partitions {source:?}, state partitions {state:?} (restored {keys} keys from {} records of {} in {} ms)",
            self.app_id,
            restored,
            self.changelog_topic,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Restores the tasks of `partitions` from the changelog (read_committed, to its
    /// end, and at least to the batch `expect` names for a partition). Returns the
    /// records read.
    ///
    /// The wait for `expect`: the committed offsets are stable (OffsetFetch with
    /// `require_stable`) once the transaction's marker is in `__consumer_offsets`, but its
    /// marker in a changelog partition may land later (a coordinator writes them after
    /// answering EndTxn). Until then that partition's last stable offset is before the
    /// batch's record, and stopping there would fold that batch's rows never.
    fn restore(&mut self, partitions: &[i32], expect: &BTreeMap<i32, u64>) -> Result<u64> {
        for &p in partitions {
            self.tasks.insert(p, self.new_task()?);
        }
        if partitions.is_empty() {
            return Ok(0);
        }
        let mut cfg = self.base_config.clone();
        cfg.set("group.id", format!("{}-restore", self.app_id))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // The end of a partition is known when a fetch comes back empty: waiting the
            // default 500 ms for data that will not come made every restore that long.
            .set("fetch.wait.max.ms", "10");
        // Closed in 1 ms steps when dropped: rdkafka's own drop took 100 ms per restore.
        let reader = crate::source::Closing(cfg.create::<BaseConsumer>()?);
        // From offset 0, not `Offset::Beginning`: librdkafka looks the beginning up with
        // ListOffsets only after a 500 ms back-off on a new client. A changelog's log
        // start is 0 unless records were deleted, and then 0 is out of range and
        // `auto.offset.reset` (earliest) moves it.
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition_offset(&self.changelog_topic, p, Offset::Offset(0))?;
        }
        reader.assign(&tpl)?;
        // Per partition: the last snapshot (batch, bytes) and the deltas after it.
        type Chain = (Option<(u64, Vec<u8>)>, Vec<(u64, String, Vec<u8>)>);
        let mut chains: BTreeMap<i32, Chain> = BTreeMap::new();
        // Per partition: the clock of the last record.
        let mut clocks: BTreeMap<i32, Option<Clock>> = BTreeMap::new();
        let mut reading: BTreeSet<i32> = partitions.iter().copied().collect();
        // Per partition: the last batch read.
        let mut last_batch: BTreeMap<i32, u64> = BTreeMap::new();
        let deadline = Instant::now() + RESTORE_TIMEOUT;
        let mut records = 0u64;
        while !reading.is_empty() {
            if Instant::now() > deadline {
                let waits: Vec<String> = reading
                    .iter()
                    .map(|p| match (expect.get(p), last_batch.get(p)) {
                        (Some(want), got) => {
                            format!("partition {p}: batch {want} committed, read up to {got:?}")
                        }
                        (None, _) => format!("partition {p}: no end of partition"),
                    })
                    .collect();
                return Err(SqlError::Query(format!(
                    "could not read the changelog {} to its end within {RESTORE_TIMEOUT:?} ({})",
                    self.changelog_topic,
                    waits.join("; ")
                )));
            }
            match reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    let read_enough = expect
                        .get(&p)
                        .is_none_or(|want| last_batch.get(&p).is_some_and(|got| got >= want));
                    if read_enough {
                        reading.remove(&p);
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "changelog reader: transient error"),
                Some(Ok(m)) => {
                    records += 1;
                    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                    let (Some(key), Some(value)) = (key, m.payload()) else {
                        continue; // a tombstone
                    };
                    let what = format!(
                        "{} partition {} offset {}",
                        self.changelog_topic,
                        m.partition(),
                        m.offset()
                    );
                    let (batch, bytes) = self.decode_changelog(value, &what)?;
                    let last = last_batch.entry(m.partition()).or_insert(batch);
                    *last = (*last).max(batch);
                    clocks.insert(
                        m.partition(),
                        header(&m, CLOCK_HEADER).and_then(Clock::decode),
                    );
                    let chain = chains.entry(m.partition()).or_default();
                    if key == SNAPSHOT_KEY {
                        *chain = (Some((batch, bytes.to_vec())), Vec::new());
                    } else if chain.0.is_some() {
                        chain.1.push((batch, key, bytes.to_vec()));
                    }
                }
            }
        }
        for (p, (base, deltas)) in chains {
            let Some((base_batch, base)) = base else {
                continue;
            };
            let task = self
                .tasks
                .get_mut(&p)
                .expect("task of an assigned partition");
            let what = |b: u64| format!("{} partition {p} batch {b}", self.changelog_topic);
            let mut files = vec![(base, what(base_batch))];
            let mut last = base_batch;
            for (b, key, bytes) in deltas {
                files.push((bytes, what(b)));
                task.deltas.push(key);
                last = b;
            }
            task.agg.restore_chain(&files)?;
            task.next_batch = last + 1;
            match clocks.remove(&p).flatten() {
                Some(c) => task.clock = c,
                // Written by an older version: the watermark its own rows gave.
                None => {
                    task.clock.watermark_ms = watermark(&task.agg, self.plan.watermark_delay_ms)
                }
            }
        }
        Ok(records)
    }

    fn new_task(&self) -> Result<Task> {
        let ap = self
            .plan
            .aggregate
            .as_ref()
            .expect("checked: an aggregation");
        let mut agg = AggregateState::new(ap.spec.clone())?;
        agg.set_deltas_per_snapshot(self.deltas_per_snapshot);
        Ok(Task {
            agg,
            next_batch: 0,
            deltas: Vec::new(),
            clock: Clock::new(&self.source_partitions),
        })
    }

    fn decode_changelog<'a>(&self, v: &'a [u8], what: &str) -> Result<(u64, &'a [u8])> {
        if v.len() < 12 {
            return Err(SqlError::Checkpoint {
                path: what.to_string(),
                message: "changelog record too short".into(),
            });
        }
        let hash = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
        if hash != self.query_hash {
            return Err(SqlError::Checkpoint {
                path: what.to_string(),
                message: format!(
                    "written by another query under application.id {:?}: give this query another application.id, or delete the topics {} and {}",
                    self.app_id, self.repartition_topic, self.changelog_topic
                ),
            });
        }
        let batch = u64::from_le_bytes(v[4..12].try_into().expect("8 bytes"));
        Ok((batch, &v[12..]))
    }

    /// Runs one batch inside the open transaction and commits it. Returns the rows
    /// folded into state, the rows written, and the state partitions that ran.
    async fn run_batch(&mut self, mut polled: Polled) -> Result<(u64, u64, Vec<i32>)> {
        let mut sender = BoundedSender::new(100_000);
        let ap = self
            .plan
            .aggregate
            .as_ref()
            .expect("checked: an aggregation");
        // 1. Source rows: the plan below the aggregation, then to the partition of
        //    their key.
        if !polled.source.is_empty() {
            let mut rb = RowBuilder::new(self.source_table.schema_ref(), self.include_headers);
            for m in &polled.source {
                rb.push(m)?;
            }
            self.source_table.set(rb.finish()?);
            let lower = execute(&self.ctx, &ap.lower).await;
            self.source_table.set(Vec::new());
            let lower = lower?;
            for b in &lower {
                if let Some(m) = self.event_time.event_time_max(b)? {
                    self.source_max_ms = Some(self.source_max_ms.map_or(m, |c| c.max(m)));
                }
            }
            for b in lower {
                for (p, rows) in self.split_by_key(&b)? {
                    for bytes in encode_ipc(&rows)? {
                        let rec: FutureRecord<'_, [u8], [u8]> =
                            FutureRecord::to(&self.repartition_topic)
                                .partition(p)
                                .payload(&bytes);
                        sender.send(&self.producer, rec).await?;
                    }
                }
            }
        }
        // Then the progress marker to every state partition, after the batch's rows.
        if let Some(progress) = &polled.progress {
            let report: Report = progress
                .iter()
                .map(|((t, p), in_step, backlog)| {
                    (
                        t.clone(),
                        *p,
                        self.source_max_ms.filter(|_| *in_step),
                        *backlog,
                    )
                })
                .collect();
            let value = serde_json::to_vec(&report).expect("a report is JSON");
            for p in 0..self.partitions {
                let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.repartition_topic)
                    .partition(p)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: PROGRESS_HEADER,
                        value: Some(value.as_slice()),
                    }));
                sender.send(&self.producer, rec).await?;
            }
        }
        // 2. Repartitioned rows: each task folds its own, writes its changelog.
        let mut folded = 0u64;
        let mut outputs = Vec::new();
        // Per state partition that ran: the changelog batch written.
        let mut written = BTreeMap::new();
        let delay = self.plan.watermark_delay_ms;
        let query_hash = self.query_hash;
        let slot_schema = ap.state_table.schema_ref();
        for (&p, task) in self.tasks.iter_mut() {
            let msgs = polled.repartitioned.get(&p);
            let wm = task.watermark(delay);
            if msgs.is_none() && !task.agg.has_expired(wm) {
                continue;
            }
            let batch = task.next_batch;
            task.agg.begin_batch();
            for m in msgs.into_iter().flatten() {
                let Some(bytes) = m.payload() else {
                    if let Some(v) = header(m, PROGRESS_HEADER) {
                        let report: Report = serde_json::from_slice(v).map_err(|e| {
                            SqlError::Query(format!(
                                "{} partition {} offset {}: bad progress marker: {e}",
                                self.repartition_topic,
                                p,
                                m.offset()
                            ))
                        })?;
                        task.clock.report(&report);
                    }
                    continue;
                };
                for b in decode_ipc(bytes)? {
                    folded += b.num_rows() as u64;
                    task.agg.update(&b, Some(wm), batch)?;
                }
            }
            let out = task.agg.finish_batch(Some(wm), batch)?;
            if let Some(d) = delay {
                task.clock.advance(d);
            }
            outputs.push(RecordBatch::try_new(
                slot_schema.clone(),
                out.columns().to_vec(),
            )?);
            let state = task.agg.checkpoint();
            let value = encode_changelog(query_hash, batch, &state);
            let is_delta = state.starts_with(crate::checkpoint::DELTA_MAGIC);
            let key = if is_delta {
                format!("{DELTA_PREFIX}{batch}")
            } else {
                SNAPSHOT_KEY.to_string()
            };
            let clock = task.clock.encode();
            let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.changelog_topic)
                .partition(p)
                .key(key.as_bytes())
                .payload(value.as_slice())
                .headers(OwnedHeaders::new().insert(Header {
                    key: CLOCK_HEADER,
                    value: Some(clock.as_slice()),
                }));
            sender.send(&self.producer, rec).await?;
            if is_delta {
                task.deltas.push(key);
            } else {
                // The deltas before a snapshot are not needed any more: compaction
                // removes them.
                for old in task.deltas.drain(..) {
                    let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.changelog_topic)
                        .partition(p)
                        .key(old.as_bytes());
                    sender.send(&self.producer, rec).await?;
                }
            }
            written.insert(p, batch);
            task.next_batch += 1;
        }
        // 3. The output of the tasks that ran, through the plan above the aggregation.
        let mut out_rows = 0u64;
        if !outputs.is_empty() {
            ap.state_table.set(outputs);
            let result = execute(&self.ctx, &self.plan.upper).await;
            ap.state_table.set(Vec::new());
            let result = result?;
            out_rows = result.iter().map(|b| b.num_rows() as u64).sum();
            send_rows(
                &self.producer,
                &mut sender,
                &result,
                self.sink_topic.as_deref(),
                None,
            )
            .await?;
        }
        sender.finish().await?;
        // 4. The offsets read, in the transaction, under the group's generation.
        // A state partition's offset names the changelog batch of the same transaction,
        // for the next owner's restore (`restore`).
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &polled.offsets {
            let mut e = tpl.add_partition(t, *p);
            e.set_offset(Offset::Offset(*o))?;
            if *t == self.repartition_topic {
                if let Some(b) = written.get(p) {
                    e.set_metadata(format!("{CHANGELOG_BATCH_METADATA}{b}"));
                }
            }
        }
        let cgm = polled.group.take().ok_or_else(|| {
            SqlError::Query("the consumer has no group metadata (not in the group yet)".into())
        })?;
        self.producer
            .send_offsets_to_transaction(&tpl, &cgm, Duration::from_secs(30))?;
        self.producer.commit_transaction(Duration::from_secs(60))?;
        for ((t, p), o) in &polled.offsets {
            if *t == self.repartition_topic {
                self.to_purge.insert(*p, *o);
            }
        }
        Ok((folded, out_rows, written.into_keys().collect()))
    }

    /// Deletes repartitioned rows every owner has committed (Kafka Streams purges its
    /// repartition topics the same way), at most every `PURGE_INTERVAL`. A failure is
    /// logged: the rows are only kept longer.
    async fn purge_repartitioned(&mut self) {
        if self.to_purge.is_empty() || self.last_purge.elapsed() < PURGE_INTERVAL {
            return;
        }
        self.last_purge = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for (p, o) in std::mem::take(&mut self.to_purge) {
            if tpl
                .add_partition_offset(&self.repartition_topic, p, Offset::Offset(o))
                .is_err()
            {
                return;
            }
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Err(e) = self.admin.delete_records(&tpl, &opts).await {
            tracing::warn!(error = %e, topic = %self.repartition_topic, "cannot purge the repartition topic");
        }
    }

    /// The batch's rows by repartition partition: the hash (CRC32C) of the key columns'
    /// row encoding, modulo the partitions. No key columns (only a window, or none):
    /// partition 0.
    fn split_by_key(&self, b: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>> {
        if b.num_rows() == 0 {
            return Ok(Vec::new());
        }
        if self.key_indices.is_empty() {
            return Ok(vec![(0, b.clone())]);
        }
        let cols: Vec<_> = self
            .key_indices
            .iter()
            .map(|&i| b.column(i).clone())
            .collect();
        let rows = self.key_conv.convert_columns(&cols)?;
        let mut by_part: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for i in 0..b.num_rows() {
            let p = (crc32c::crc32c(rows.row(i).as_ref()) % self.partitions as u32) as i32;
            by_part.entry(p).or_default().push(i as u32);
        }
        by_part
            .into_iter()
            .map(|(p, idx)| Ok((p, take_record_batch(b, &UInt32Array::from(idx))?)))
            .collect()
    }
}

/// A transactional producer with a transactional id of its own (EOS v2: zombies are
/// fenced by the consumer group's generation, not by the transactional id).
fn new_producer(cfg: &ClientConfig, app_id: &str) -> Result<FutureProducer> {
    let mut cfg = cfg.clone();
    cfg.set(
        "transactional.id",
        format!("{app_id}-{}", uuid::Uuid::new_v4()),
    );
    let producer: FutureProducer = cfg.create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    Ok(producer)
}

/// A changelog value: the query's hash, the task's batch id, the state file.
fn encode_changelog(query_hash: u32, batch: u64, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + state.len());
    v.extend_from_slice(&query_hash.to_le_bytes());
    v.extend_from_slice(&batch.to_le_bytes());
    v.extend_from_slice(state);
    v
}

impl Task {
    /// The watermark the task's next batch drops late rows and closes windows by.
    fn watermark(&self, delay_ms: Option<i64>) -> i64 {
        if delay_ms.is_some() {
            self.clock.watermark_ms
        } else {
            0
        }
    }
}

fn tpl_of(tps: &[TopicPartition]) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in tps {
        tpl.add_partition(t, *p);
    }
    Ok(tpl)
}

/// The watermark of a task restored from a changelog written before tasks had clocks:
/// its max event time minus the delay (0 before any).
fn watermark(agg: &AggregateState, delay_ms: Option<i64>) -> i64 {
    match (agg.max_event_time_ms(), delay_ms) {
        (Some(m), Some(d)) => (m - d).max(0),
        _ => 0,
    }
}

/// Rows as Arrow IPC stream records of at most `ROWS_PER_RECORD` rows and
/// `MAX_RECORD_BYTES` bytes (a single row may be larger).
fn encode_ipc(b: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut todo = Vec::new();
    let mut at = 0;
    while at < b.num_rows() {
        let n = ROWS_PER_RECORD.min(b.num_rows() - at);
        todo.push(b.slice(at, n));
        at += n;
    }
    // A stack: the first rows on top, so records keep the rows' order.
    todo.reverse();
    while let Some(part) = todo.pop() {
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, &part.schema())?;
            w.write(&part)?;
            w.finish()?;
        }
        if buf.len() > MAX_RECORD_BYTES && part.num_rows() > 1 {
            let half = part.num_rows() / 2;
            todo.push(part.slice(half, part.num_rows() - half));
            todo.push(part.slice(0, half));
        } else {
            out.push(buf);
        }
    }
    Ok(out)
}

fn decode_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Every partition of the source topics (waits up to 30 s for them to exist).
fn source_partitions(
    consumer: &BaseConsumer<GroupContext>,
    topics: &[String],
) -> Result<Vec<TopicPartition>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::new();
    for t in topics {
        loop {
            let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
            let n = md
                .topics()
                .iter()
                .find(|x| x.name() == t && x.error().is_none())
                .map_or(0, |x| x.partitions().len() as i32);
            if n > 0 {
                all.extend((0..n).map(|p| (t.clone(), p)));
                break;
            }
            if Instant::now() > deadline {
                return Err(refuse(format!(
                    "source topic {t} does not exist: its partitions fix the internal topics', so it must exist before the query starts"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(all)
}

/// Waits (up to 30 s) until `client`'s metadata shows `topic` with `partitions`
/// partitions (a topic just created takes a moment to show, on every broker of a
/// cluster); returns the count it last saw.
async fn wait_for_partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partitions: i32,
) -> Result<i32> {
    let mut n = 0;
    for _ in 0..150 {
        let md = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        n = md
            .topics()
            .iter()
            .find(|x| x.name() == topic && x.error().is_none())
            .map_or(0, |x| x.partitions().len() as i32);
        if n == partitions {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(n)
}

/// Creates the repartition topic (delete policy) and the changelog topic (compacted),
/// `partitions` each; existing ones must have that many partitions.
async fn create_internal_topics(
    admin: &AdminClient<DefaultClientContext>,
    repartition: &str,
    changelog: &str,
    partitions: i32,
) -> Result<()> {
    let topics = [
        NewTopic::new(repartition, partitions, TopicReplication::Fixed(-1)),
        NewTopic::new(changelog, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact"),
    ];
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(SqlError::Query(format!(
                    "cannot create the internal topic {t}: {code}"
                )))
            }
        }
    }
    for t in [repartition, changelog] {
        let n = wait_for_partitions(admin.inner(), t, partitions).await?;
        if n != partitions {
            return Err(SqlError::Query(format!(
                "internal topic {t} has {n} partitions, the source has {partitions}: delete it (the application's state) or use another application.id"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn rows(n: usize, text_len: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let k: StringArray = (0..n).map(|i| Some(format!("{i:0text_len$}"))).collect();
        let v: Int64Array = (0..n as i64).collect();
        RecordBatch::try_new(schema, vec![Arc::new(k), Arc::new(v)]).unwrap()
    }

    #[test]
    fn repartition_records_are_bounded_and_give_the_rows_back_in_order() {
        for (n, len) in [(1, 1), (10_000, 8), (3_000, 2_000)] {
            let b = rows(n, len);
            let records = encode_ipc(&b).unwrap();
            assert!(
                records.iter().all(|r| r.len() <= MAX_RECORD_BYTES),
                "{n} rows of {len} bytes"
            );
            let back: Vec<RecordBatch> = records
                .iter()
                .flat_map(|r| decode_ipc(r).unwrap())
                .collect();
            assert!(back.iter().all(|x| x.num_rows() <= ROWS_PER_RECORD));
            let back = datafusion::arrow::compute::concat_batches(&b.schema(), &back).unwrap();
            assert_eq!(back, b);
        }
        // 3000 rows of 2 KB do not fit one record: they were split.
        assert!(encode_ipc(&rows(3_000, 2_000)).unwrap().len() > 1);
    }

    #[test]
    fn a_bad_repartition_record_is_an_error_not_a_panic() {
        assert!(decode_ipc(b"not arrow").is_err());
        assert!(decode_ipc(&[1, 2, 3, 4, 5, 6, 7, 8]).is_err());
    }

    fn tp(p: i32) -> TopicPartition {
        ("tweets".to_string(), p)
    }

    #[test]
    fn a_partition_with_a_backlog_holds_the_watermark() {
        let mut c = Clock::new(&[tp(0), tp(1)]);
        // Partition 1 not reported yet: no watermark, however far partition 0 got.
        c.report(&vec![("tweets".into(), 0, Some(900_000), true)]);
        c.advance(60_000);
        assert_eq!(c.watermark_ms, 0);
        // Both read, both with a backlog: the slower one counts.
        c.report(&vec![("tweets".into(), 1, Some(300_000), true)]);
        c.advance(60_000);
        assert_eq!(c.watermark_ms, 240_000);
        // Partition 1 fell behind its end offset (not in step): it holds the watermark.
        c.report(&vec![
            ("tweets".into(), 1, None, true),
            ("tweets".into(), 0, Some(990_000), true),
        ]);
        c.advance(60_000);
        assert_eq!(c.watermark_ms, 240_000);
        // No backlog anywhere: the most advanced one, as the single process has it.
        c.report(&vec![
            ("tweets".into(), 0, Some(1_000_000), false),
            ("tweets".into(), 1, Some(700_000), false),
        ]);
        c.advance(60_000);
        assert_eq!(c.watermark_ms, 940_000);
        // It never goes back (a new reader of partition 1 with a backlog).
        c.report(&vec![("tweets".into(), 1, Some(500_000), true)]);
        c.advance(60_000);
        assert_eq!(c.watermark_ms, 940_000);
        // An idle partition (nothing read, nothing to read) holds nothing.
        let mut idle = Clock::new(&[tp(0), tp(1)]);
        idle.report(&vec![
            ("tweets".into(), 0, Some(100_000), false),
            ("tweets".into(), 1, None, false),
        ]);
        idle.advance(60_000);
        assert_eq!(idle.watermark_ms, 40_000);
    }

    #[test]
    fn a_clock_survives_its_changelog_header() {
        let mut c = Clock::new(&[tp(0), tp(1)]);
        c.report(&vec![
            ("tweets".into(), 0, Some(5), true),
            ("tweets".into(), 1, None, false),
        ]);
        c.watermark_ms = 42;
        assert_eq!(Clock::decode(&c.encode()), Some(c));
        assert_eq!(Clock::decode(b"{"), None);
        assert_eq!(Clock::decode(b"{\"watermark_ms\": 1}"), None);
    }

    #[test]
    fn changelog_values_carry_the_query_and_the_batch() {
        let v = encode_changelog(7, 42, b"state");
        assert_eq!(&v[..4], &7u32.to_le_bytes());
        assert_eq!(u64::from_le_bytes(v[4..12].try_into().unwrap()), 42);
        assert_eq!(&v[12..], b"state");
    }

    #[test]
    fn a_committed_offset_names_its_changelog_batch() {
        assert_eq!(changelog_batch_of("changelog-batch=17"), Some(17));
        assert_eq!(changelog_batch_of(""), None);
        assert_eq!(changelog_batch_of("changelog-batch=x"), None);
        assert_eq!(changelog_batch_of("other"), None);
    }

    #[test]
    fn application_ids_are_topic_name_prefixes() {
        let script = |text: &str| Script::parse(text, &BTreeMap::new()).unwrap();
        let q = "SELECT 1;";
        assert_eq!(application_id(&script(q), None).unwrap(), None);
        let s = script(&format!("SET application.id = trending;\n{q}"));
        assert_eq!(
            application_id(&s, None).unwrap().as_deref(),
            Some("trending")
        );
        // The flag beats the file.
        assert_eq!(
            application_id(&s, Some("other")).unwrap().as_deref(),
            Some("other")
        );
        for bad in ["", "a b", "x/y", &"a".repeat(201)] {
            let e = application_id(&script(q), Some(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("application.id"), "{bad:?}: {e}");
        }
    }
}
