//! `runnel mirror`: copies topics from a source cluster to any Kafka-compatible target
//! with MirrorMaker 2's semantics, as a standalone client process (docs/mirroring.md,
//! "runnel mirror"). The broker-side, offset-preserving alternative is `runnel links`.
//!
//! - Topics matching `--topics` (never internal ones; `heartbeats` always) are created
//!   on the target under MM2's names (`formats.rs`) with the source's partition count,
//!   and each record is copied to the same partition (key, value, headers, timestamp),
//!   read_committed, by an idempotent producer with acks=all.
//! - After each produce is acknowledged, the last upstream offset copied and where it
//!   landed are written to `mm2-offsets.<target>.internal` (Connect's format for MM2)
//!   and as an `OffsetSync` to `mm2-offset-syncs.<source>.internal` on the target
//!   (MM2's `offset-syncs.topic.location=target`; `--offset-syncs-topic-location source`
//!   puts them in `mm2-offset-syncs.<target>.internal` on the source). A restart reads
//!   them back and resumes after the stored upstream offset, skipping the records the
//!   target already holds past the stored downstream offset (a crash between a produce
//!   and its progress record): nothing is copied twice, nothing skipped, provided this
//!   process is the only writer of its target topics (as with MM2).
//! - `--exactly-once`: each fetch's batches and their progress record go to the target
//!   in one transaction (`runnel_client::txn`); a restart fences the old transactional
//!   id (aborting what a crash left open) and resumes after the committed progress, with
//!   nothing to skip.
//! - Every `--emit-checkpoints-interval` the committed offsets of the source groups
//!   matching `--groups` are translated (`sync_store.rs`, MM2's rule: never past a
//!   record not read, through every offset sync stored so far) and written as
//!   `Checkpoint`s to `<source>.checkpoints.internal` when they move forward (read back
//!   at start, so a restart never moves one back); every
//!   `--emit-heartbeats-interval` a `Heartbeat` goes to `heartbeats`. With
//!   `--sync-group-offsets` the translated offsets are also committed into the target's
//!   groups that have no members there, never moving one back (MM2's
//!   `sync.group.offsets.enabled`).
//! - Ctrl-C (or SIGTERM) stops after the produce in flight, writes the last
//!   checkpoints and exits 0.

mod formats;
mod sync_store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use formats::ReplicationPolicy;
use runnel_client::records::encode_batch;
use runnel_client::txn::TransactionalProducer;
use runnel_client::{
    Client, ClientConfig, Compression, FetchOptions, NewTopic, OffsetSpec, ProduceOptions,
    ProducerIdentity, ProducerRecord, ResponseError,
};
use sync_store::SyncStore;

use super::{ConnArgs, UsageError};

/// Bound on one produced batch's record bytes (the target's default message limit is 1 MiB).
const MAX_BATCH_BYTES: usize = 512 * 1024;

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// The source cluster's bootstrap servers.
    #[arg(long, value_name = "HOST:PORT[,...]")]
    source: String,
    /// The target cluster's bootstrap servers (any Kafka-compatible cluster).
    #[arg(long, value_name = "HOST:PORT[,...]")]
    target: String,
    /// Mirror the source topics whose whole name matches.
    #[arg(long, value_name = "REGEX", default_value = ".*")]
    topics: String,
    /// Checkpoint the source groups whose whole id matches.
    #[arg(long, value_name = "REGEX", default_value = ".*")]
    groups: String,
    /// Client properties for the source (security.protocol, sasl.*, ssl.*, client.id).
    #[arg(long = "source-config", value_name = "FILE")]
    source_config: Option<PathBuf>,
    /// Client properties for the target.
    #[arg(long = "target-config", value_name = "FILE")]
    target_config: Option<PathBuf>,
    /// The source cluster's alias (MM2's cluster name): the prefix of remote topics.
    #[arg(long = "source-alias", value_name = "NAME", default_value = "source")]
    source_alias: String,
    /// The target cluster's alias: names the progress topic (mm2-offsets.NAME.internal);
    /// source topics named NAME.* came from the target and are not mirrored back.
    #[arg(long = "target-alias", value_name = "NAME", default_value = "target")]
    target_alias: String,
    /// default (DefaultReplicationPolicy: SOURCE.TOPIC) or identity
    /// (IdentityReplicationPolicy: the same name).
    #[arg(
        long = "replication-policy",
        value_name = "POLICY",
        default_value = "default"
    )]
    replication_policy: String,
    /// MM2's replication.policy.separator.
    #[arg(long, value_name = "SEP", default_value = ".")]
    separator: String,
    /// Seconds between checkpoints (MM2's emit.checkpoints.interval.seconds).
    #[arg(
        long = "emit-checkpoints-interval",
        value_name = "SECS",
        default_value_t = 60.0
    )]
    checkpoints_interval_secs: f64,
    /// Where the offset syncs live: target (mm2-offset-syncs.SOURCE-ALIAS.internal on the
    /// target; needs only read access to the source) or source (MM2's default:
    /// mm2-offset-syncs.TARGET-ALIAS.internal on the source, which must then accept writes).
    #[arg(
        long = "offset-syncs-topic-location",
        value_name = "CLUSTER",
        default_value = "target"
    )]
    offset_syncs_location: String,
    /// Exactly-once delivery (MM2's exactly.once.support=enabled): each copied batch and
    /// the progress record that says it was copied are written in one transaction on the
    /// target (transactional id runnel-mirror-SOURCE-ALIAS-TARGET-ALIAS), so a crash
    /// leaves neither or both; read_committed consumers of the target see each record
    /// once, whoever else writes there.
    #[arg(long = "exactly-once")]
    exactly_once: bool,
    /// Also commit the translated offsets into the target's groups of the same id, for
    /// groups with no members there, never moving a group back (MM2's
    /// sync.group.offsets.enabled; done with each checkpoint).
    #[arg(long = "sync-group-offsets")]
    sync_group_offsets: bool,
    /// Seconds between heartbeats (MM2's emit.heartbeats.interval.seconds).
    #[arg(
        long = "emit-heartbeats-interval",
        value_name = "SECS",
        default_value_t = 1.0
    )]
    heartbeats_interval_secs: f64,
    /// Seconds between looks for new source topics and partitions (MM2's
    /// refresh.topics.interval.seconds).
    #[arg(
        long = "refresh-topics-interval",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    refresh_interval_secs: f64,
    /// Seconds between progress lines on stderr.
    #[arg(long = "progress-interval", value_name = "SECS", default_value_t = 5.0)]
    progress_interval_secs: f64,
    /// Give up when a cluster does not answer within this many seconds.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 10.0)]
    timeout_secs: f64,
}

fn secs(v: f64, flag: &str) -> Result<Duration, UsageError> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(UsageError(format!(
            "{flag} {v}: expected seconds between 0 and 86400"
        )))
    }
}

/// Kafka's topic and group filters match whole names.
fn whole_name_regex(re: &str, flag: &str) -> Result<regex_lite::Regex, UsageError> {
    regex_lite::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        UsageError(format!(
            "{flag} {re:?} is not a valid regular expression: {e}"
        ))
    })
}

/// What the tool was asked, checked.
struct Settings {
    topics: regex_lite::Regex,
    groups: regex_lite::Regex,
    policy: ReplicationPolicy,
    target_alias: String,
    sync_group_offsets: bool,
    /// MM2's offset-syncs.topic.location=source.
    syncs_on_source: bool,
    exactly_once: bool,
    checkpoints_every: Duration,
    heartbeats_every: Duration,
    refresh_every: Duration,
    progress_every: Duration,
}

impl MirrorArgs {
    fn settings(&self) -> Result<Settings, UsageError> {
        for (flag, alias) in [
            ("--source-alias", &self.source_alias),
            ("--target-alias", &self.target_alias),
        ] {
            let ok = !alias.is_empty()
                && alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !ok {
                return Err(UsageError(format!(
                    "{flag} {alias:?}: use letters, digits, '_' and '-'"
                )));
            }
        }
        if self.source_alias == self.target_alias {
            return Err(UsageError(
                "--source-alias and --target-alias must differ (MM2 names topics after them)"
                    .into(),
            ));
        }
        Ok(Settings {
            topics: whole_name_regex(&self.topics, "--topics")?,
            groups: whole_name_regex(&self.groups, "--groups")?,
            policy: ReplicationPolicy::parse(
                &self.replication_policy,
                &self.source_alias,
                &self.separator,
            )
            .map_err(UsageError)?,
            target_alias: self.target_alias.clone(),
            sync_group_offsets: self.sync_group_offsets,
            exactly_once: self.exactly_once,
            syncs_on_source: match self.offset_syncs_location.as_str() {
                "source" => true,
                "target" => false,
                other => {
                    return Err(UsageError(format!(
                        "--offset-syncs-topic-location {other:?}: use source or target"
                    )))
                }
            },
            checkpoints_every: secs(
                self.checkpoints_interval_secs,
                "--emit-checkpoints-interval",
            )?,
            heartbeats_every: secs(self.heartbeats_interval_secs, "--emit-heartbeats-interval")?,
            refresh_every: secs(self.refresh_interval_secs, "--refresh-topics-interval")?,
            progress_every: secs(self.progress_interval_secs, "--progress-interval")?,
        })
    }

    /// Connects to one side, with its properties file (security, client.id, timeouts)
    /// read as the other tools read `--command-config`.
    async fn connect(
        &self,
        servers: &str,
        properties: &Option<PathBuf>,
        flag: &str,
        config: ClientConfig,
    ) -> anyhow::Result<Client> {
        let conn = ConnArgs {
            bootstrap_server: Some(servers.to_string()),
            command_config: properties.clone(),
            properties: Vec::new(),
            connect_timeout_secs: self.timeout_secs,
        };
        let mut resolved = conn.resolve()?;
        resolved.source = flag.to_string();
        conn.connect_resolved(&resolved, config).await
    }
}

/// One source partition's copying state.
#[derive(Debug, Default)]
struct PartitionState {
    /// The next source offset to fetch.
    position: i64,
    /// Records at `position` and after that the target already holds (a crash between
    /// a produce and its progress record): dropped, not produced again.
    skip: i64,
    /// The source's high watermark at the last fetch.
    source_end: i64,
    /// What was copied where (for checkpoints).
    syncs: SyncStore,
    /// Where the next skipped record is on the target.
    skip_next_downstream: i64,
    /// The idempotent producer's next sequence for this target partition.
    sequence: i32,
}

impl PartitionState {
    /// Records that upstream `first..=last` (`count` records) went to target offsets
    /// from `downstream` on.
    fn copied(&mut self, first: i64, last: i64, downstream: i64, count: i64) {
        self.syncs.record(first, last, downstream, count);
    }
}

/// What the copying tasks, the checkpointer and the progress printer share.
struct Shared {
    settings: Settings,
    source: Client,
    target: Client,
    /// The target's idempotent producer (None when the target does not grant one).
    producer: Option<(i64, i16)>,
    stop: AtomicBool,
    /// Source topic -> its partitions' states.
    topics: Mutex<BTreeMap<String, Vec<PartitionState>>>,
    records: AtomicU64,
    bytes: AtomicU64,
    checkpoints: AtomicU64,
    /// The transactional producer (--exactly-once): one transaction at a time.
    txn: Option<tokio::sync::Mutex<TransactionalProducer>>,
    /// Offsets committed into the target's groups (--sync-group-offsets).
    group_offsets_synced: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn names(&self) -> (String, String, String) {
        let p = &self.settings.policy;
        let t = &self.settings.target_alias;
        let other = if self.settings.syncs_on_source {
            t
        } else {
            &p.source_alias
        };
        (
            p.offsets_topic(t),
            p.offset_syncs_topic(other),
            p.checkpoints_topic(),
        )
    }

    /// The cluster holding the offset syncs (--offset-syncs-topic-location).
    fn syncs_cluster(&self) -> &Client {
        if self.settings.syncs_on_source {
            &self.source
        } else {
            &self.target
        }
    }
}

pub async fn run(args: MirrorArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let mut config = ClientConfig::default();
    config.connection.client_id = "runnel-mirror".into();
    let source = args
        .connect(
            &args.source,
            &args.source_config,
            "--source",
            config.clone(),
        )
        .await
        .with_context(|| format!("cannot reach the source cluster (--source {})", args.source))?;
    let target = args
        .connect(&args.target, &args.target_config, "--target", config)
        .await
        .with_context(|| format!("cannot reach the target cluster (--target {})", args.target))?;
    let txn = if settings.exactly_once {
        // Before the progress is read: fences an earlier run and aborts what it left open.
        let id = format!(
            "runnel-mirror-{}-{}",
            settings.policy.source_alias, settings.target_alias
        );
        let p = TransactionalProducer::init(&target, &id, 60_000)
            .await
            .with_context(|| format!("cannot start transactional id {id} on the target (--exactly-once needs a target with transactions)"))?;
        Some(tokio::sync::Mutex::new(p))
    } else {
        None
    };
    let producer = match target.init_producer_id().await {
        Ok(p) => Some((p.producer_id, p.producer_epoch)),
        Err(e) => {
            errln!("warning: the target grants no idempotent producer ({e}); a produce retried after a lost answer may be stored twice");
            None
        }
    };
    let shared = Arc::new(Shared {
        settings,
        source,
        target,
        producer,
        stop: AtomicBool::new(false),
        topics: Mutex::new(BTreeMap::new()),
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        checkpoints: AtomicU64::new(0),
        group_offsets_synced: AtomicU64::new(0),
        txn,
    });
    let (offsets_topic, syncs_topic, checkpoints_topic) = shared.names();
    for (cluster, name) in [
        (&shared.target, &offsets_topic),
        (shared.syncs_cluster(), &syncs_topic),
        (&shared.target, &checkpoints_topic),
        (&shared.target, &formats::HEARTBEATS_TOPIC.to_string()),
    ] {
        ensure_topic(
            cluster,
            name,
            1,
            vec![("cleanup.policy".into(), "compact".into())],
        )
        .await?;
    }
    let progress = read_progress(&shared).await?;
    errln!(
        "mirroring {} -> {} (topics {:?} as {}, groups {:?}); Ctrl-C stops",
        args.source,
        args.target,
        args.topics,
        shared.settings.policy.remote_topic("TOPIC"),
        args.groups
    );
    let signal = tokio::spawn(wait_for_stop_signal());
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    let mut started: HashMap<String, i32> = HashMap::new();
    let start = Instant::now();
    let mut next_refresh = Instant::now();
    let mut next_checkpoint = Instant::now() + shared.settings.checkpoints_every;
    let mut next_heartbeat = Instant::now();
    let mut next_progress = Instant::now() + shared.settings.progress_every;
    let mut emitted = progress.checkpoints.clone();
    let outcome: anyhow::Result<()> = loop {
        if signal.is_finished() {
            break Ok(());
        }
        let now = Instant::now();
        if now >= next_refresh {
            next_refresh = now + shared.settings.refresh_every;
            if let Err(e) = start_new_topics(&shared, &progress, &mut started, &mut tasks).await {
                break Err(e);
            }
        }
        if now >= next_heartbeat {
            next_heartbeat = now + shared.settings.heartbeats_every;
            if let Err(e) = heartbeat(&shared).await {
                errln!("warning: cannot write a heartbeat: {e}");
            }
        }
        if now >= next_checkpoint {
            next_checkpoint = now + shared.settings.checkpoints_every;
            if let Err(e) = checkpoint(&shared, &mut emitted).await {
                errln!("warning: cannot write checkpoints: {e}");
            }
        }
        if now >= next_progress {
            next_progress = now + shared.settings.progress_every;
            print_progress(&shared, start);
        }
        // A copying task that failed ends the run (its error names the topic).
        if let Some(Ok(Err(e))) = tasks.try_join_next() {
            break Err(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shared.stop.store(true, Ordering::Relaxed);
    signal.abort();
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                errln!("error: {e:#}");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        errln!("warning: copying did not stop within 30 s; the stored progress still resumes without duplicates");
    }
    outcome?;
    if let Err(e) = checkpoint(&shared, &mut emitted).await {
        errln!("warning: cannot write the last checkpoints: {e}");
    }
    print_progress(&shared, start);
    errln!("stopped; run the same command to resume from the stored offsets");
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Creates `name` on `client` unless it exists; returns its partition count.
async fn ensure_topic(
    client: &Client,
    name: &str,
    partitions: i32,
    configs: Vec<(String, String)>,
) -> anyhow::Result<i32> {
    match client.topic(name).await {
        Ok(t) => return Ok(t.partitions.len() as i32),
        Err(e) if e.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot look up topic {name}")),
    }
    let topic = NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor: -1,
        configs,
    };
    match client.create_topic(&topic).await {
        Ok(()) => {}
        Err(e) if e.kafka_error() == Some(ResponseError::TopicAlreadyExists) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create topic {name} on the target"))
        }
    }
    // Until the new topic's metadata is visible.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.topic(name).await {
            Ok(t) if !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader >= 0) => {
                return Ok(t.partitions.len() as i32)
            }
            _ if Instant::now() > deadline => {
                anyhow::bail!(
                    "topic {name} was created on the target but has no leaders after 15 s"
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Every record of partition 0 of `topic` on the target, in order.
async fn read_all(
    client: &Client,
    topic: &str,
) -> anyhow::Result<Vec<runnel_client::ConsumerRecord>> {
    let start = client
        .list_offsets(topic, &[0], OffsetSpec::Earliest)
        .await?[0]
        .offset;
    let end = client.list_offsets(topic, &[0], OffsetSpec::Latest).await?[0].offset;
    let mut out = Vec::new();
    let mut position = start;
    // read_committed: what an aborted --exactly-once transaction wrote does not count.
    let options = FetchOptions {
        max_wait_ms: 0,
        isolation_level: 1,
        ..FetchOptions::default()
    };
    while position < end {
        let fetched = client.fetch(topic, 0, position, &options).await?;
        if fetched.next_offset <= position {
            anyhow::bail!("reading {topic} made no progress at offset {position}");
        }
        position = fetched.next_offset;
        out.extend(fetched.records);
    }
    Ok(out)
}

/// What earlier runs stored: by source (topic, partition), the last progress record
/// (upstream, downstream) and the offset syncs (for checkpoints of groups behind it);
/// the last checkpoint of each (group, target topic, partition).
#[derive(Default)]
struct Progress {
    last: HashMap<(String, i32), (i64, i64)>,
    syncs: HashMap<(String, i32), SyncStore>,
    checkpoints: HashMap<(String, String, i32), (i64, i64)>,
}

/// The keyed records of partition 0 of `topic` (tombstones left out), in order.
async fn read_keyed(
    client: &Client,
    topic: &str,
    what: &str,
) -> anyhow::Result<Vec<(Bytes, Bytes)>> {
    let records = read_all(client, topic)
        .await
        .with_context(|| format!("cannot read the {what} in {topic}"))?;
    Ok(records
        .into_iter()
        .filter_map(|r| Some((r.key?, r.value?)))
        .collect())
}

async fn read_progress(shared: &Shared) -> anyhow::Result<Progress> {
    let (offsets_topic, syncs_topic, checkpoints_topic) = shared.names();
    let mut out = Progress::default();
    for (k, v) in read_keyed(&shared.target, &offsets_topic, "stored progress").await? {
        if let Some(((cluster, topic, partition), (u, d))) = formats::parse_progress(&k, &v) {
            if cluster != shared.settings.policy.source_alias {
                continue;
            }
            if !formats::plausible(u) || !formats::plausible(d) {
                anyhow::bail!(
                    "the stored progress of {topic}[{partition}] in {offsets_topic} is not usable (upstream {u}, downstream {d}); \
                     fix or remove that record (key {}) before resuming",
                    String::from_utf8_lossy(&k)
                );
            }
            out.last.insert((topic, partition), (u, d));
        }
    }
    let plausible = |(u, d): &(i64, i64)| formats::plausible(*u) && formats::plausible(*d);
    for (k, v) in read_keyed(shared.syncs_cluster(), &syncs_topic, "offset syncs").await? {
        if let Some((tp, (u, d))) =
            formats::parse_offset_sync(&k, &v).filter(|(_, sync)| plausible(sync))
        {
            out.syncs.entry(tp).or_default().sync(u, d);
        }
    }
    // MM2's CheckpointStore: checkpoints never move back across restarts.
    for (k, v) in read_keyed(&shared.target, &checkpoints_topic, "checkpoints").await? {
        if let Some((key, offsets)) =
            formats::parse_checkpoint(&k, &v).filter(|(_, offsets)| plausible(offsets))
        {
            out.checkpoints.insert(key, offsets);
        }
    }
    Ok(out)
}

/// Whether a source topic is mirrored.
fn selected(settings: &Settings, topic: &str) -> bool {
    if formats::is_heartbeats(topic) {
        return !settings.policy.comes_from(topic, &settings.target_alias);
    }
    settings.topics.is_match(topic)
        && !formats::is_internal(topic)
        && !settings.policy.comes_from(topic, &settings.target_alias)
}

/// Starts a copying task for each selected source topic not copied yet (and restarts
/// one whose partition count grew).
async fn start_new_topics(
    shared: &Arc<Shared>,
    progress: &Progress,
    started: &mut HashMap<String, i32>,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let metadata = shared
        .source
        .metadata(None, false)
        .await
        .context("cannot read the source's topics")?;
    for t in metadata.topics {
        if t.error_code != 0 || !selected(&shared.settings, &t.name) {
            continue;
        }
        let count = t.partitions.len() as i32;
        if started.get(&t.name).is_some_and(|&c| c >= count) {
            continue;
        }
        let remote = shared.settings.policy.remote_topic(&t.name);
        let have = ensure_topic(&shared.target, &remote, count, Vec::new()).await?;
        if have < count {
            shared
                .target
                .create_partitions(&remote, count, false)
                .await
                .with_context(|| format!("cannot add partitions to {remote} on the target"))?;
        }
        if started.contains_key(&t.name) {
            // New partitions: the running task picks them up at its next round.
            add_partitions(shared, &t.name, &remote, count, progress).await?;
        } else {
            let states = resume(shared, &t.name, &remote, 0, count, progress).await?;
            shared.topics.lock().unwrap().insert(t.name.clone(), states);
            let shared = shared.clone();
            let topic = t.name.clone();
            errln!("mirroring {} -> {remote} ({count} partitions)", t.name);
            tasks.spawn(async move { copy_topic(shared, topic, remote).await });
        }
        started.insert(t.name.clone(), count);
    }
    Ok(())
}

async fn add_partitions(
    shared: &Arc<Shared>,
    topic: &str,
    remote: &str,
    count: i32,
    progress: &Progress,
) -> anyhow::Result<()> {
    let from = shared
        .topics
        .lock()
        .unwrap()
        .get(topic)
        .map_or(0, |v| v.len() as i32);
    let more = resume(shared, topic, remote, from, count, progress).await?;
    if let Some(states) = shared.topics.lock().unwrap().get_mut(topic) {
        states.extend(more);
    }
    errln!("mirroring {topic}: now {count} partitions");
    Ok(())
}

/// Where each partition in `from..to` resumes: after the stored upstream offset,
/// skipping what the target holds past the stored downstream offset; with no stored
/// progress, from the source's start (a first progress record is written now, so a
/// crash before the first one still resumes exactly).
async fn resume(
    shared: &Shared,
    topic: &str,
    remote: &str,
    from: i32,
    to: i32,
    progress: &Progress,
) -> anyhow::Result<Vec<PartitionState>> {
    let ids: Vec<i32> = (from..to).collect();
    let starts = shared
        .source
        .list_offsets(topic, &ids, OffsetSpec::Earliest)
        .await?;
    let ends = shared
        .target
        .list_offsets(remote, &ids, OffsetSpec::Latest)
        .await?;
    let mut states = Vec::new();
    let mut first_records = Vec::new();
    for (i, p) in ids.iter().enumerate() {
        let target_end = ends[i].offset;
        let tp = (topic.to_string(), *p);
        let mut state = PartitionState {
            source_end: -1,
            // Every stored sync, for groups behind what this run copies (MM2 backfills
            // its OffsetSyncStore from the offset-syncs topic the same way).
            syncs: progress.syncs.get(&tp).cloned().unwrap_or_default(),
            ..Default::default()
        };
        match progress.last.get(&tp) {
            Some(&(upstream, downstream)) => {
                state.position = upstream + 1;
                // With transactions, what the target holds past the stored progress
                // was aborted with it: nothing to skip.
                state.skip = if shared.settings.exactly_once {
                    0
                } else {
                    target_end.saturating_sub(downstream + 1)
                };
                if state.skip < 0 {
                    errln!("warning: {remote}[{p}] ends at {target_end} on the target, before offset {} recorded as copied: the target lost records; continuing after source offset {upstream}", downstream + 1);
                    state.skip = 0;
                }
                state.skip_next_downstream = downstream + 1;
                state.copied(upstream, upstream, downstream, 1);
            }
            None => {
                state.position = starts[i].offset;
                if target_end > 0 {
                    errln!("warning: {remote}[{p}] already holds {target_end} records this tool did not write; copying after them");
                }
                let (before, last) = (
                    state.position.saturating_sub(1),
                    target_end.saturating_sub(1),
                );
                state.copied(before, before, last, 1);
                first_records.push((*p, before, last));
            }
        }
        states.push(state);
    }
    let mut txn = lock_txn(shared).await;
    write_progress(shared, txn.as_deref_mut(), topic, &first_records).await?;
    if let Some(t) = txn.as_deref_mut() {
        t.end(true).await?;
    }
    Ok(states)
}

/// Writes progress records and offset syncs for (partition, upstream, downstream).
/// The transactional producer, held for one transaction (None without --exactly-once).
async fn lock_txn(shared: &Shared) -> Option<tokio::sync::MutexGuard<'_, TransactionalProducer>> {
    match &shared.txn {
        Some(m) => Some(m.lock().await),
        None => None,
    }
}

/// Stores the progress of `entries` (partition, last upstream, its downstream offset),
/// inside `txn`'s transaction when there is one (the offset syncs too when they live on
/// the target; on the source they are written after, as hints).
async fn write_progress(
    shared: &Shared,
    mut txn: Option<&mut TransactionalProducer>,
    topic: &str,
    entries: &[(i32, i64, i64)],
) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (offsets_topic, syncs_topic, _) = shared.names();
    let alias = &shared.settings.policy.source_alias;
    let progress: Vec<ProducerRecord> = entries
        .iter()
        .map(|&(p, u, d)| {
            keyed(
                formats::progress_key(alias, topic, p),
                formats::progress_value(u, d),
            )
        })
        .collect();
    let syncs: Vec<ProducerRecord> = entries
        .iter()
        .map(|&(p, u, d)| {
            keyed(
                formats::offset_sync_key(topic, p),
                formats::offset_sync_value(u, d),
            )
        })
        .collect();
    let options = acks_all();
    match txn.as_deref_mut() {
        Some(t) => t.send(&offsets_topic, 0, &progress, &options).await,
        None => {
            shared
                .target
                .produce(&offsets_topic, 0, &progress, &options)
                .await
        }
    }
    .with_context(|| format!("cannot store the progress in {offsets_topic}"))?;
    match txn.filter(|_| !shared.settings.syncs_on_source) {
        Some(t) => t.send(&syncs_topic, 0, &syncs, &options).await,
        None => {
            shared
                .syncs_cluster()
                .produce(&syncs_topic, 0, &syncs, &options)
                .await
        }
    }
    .with_context(|| format!("cannot write offset syncs to {syncs_topic}"))?;
    Ok(())
}

fn keyed(key: Bytes, value: Bytes) -> ProducerRecord {
    ProducerRecord {
        key: Some(key),
        value: Some(value),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

fn acks_all() -> ProduceOptions {
    ProduceOptions {
        acks: -1,
        ..ProduceOptions::default()
    }
}

/// Copies one source topic until stopped.
async fn copy_topic(shared: Arc<Shared>, topic: String, remote: String) -> anyhow::Result<()> {
    let options = FetchOptions {
        max_wait_ms: 200,
        isolation_level: 1,
        ..FetchOptions::default()
    };
    let mut attempt = 0u32;
    while !shared.stopping() {
        let positions: Vec<(i32, i64)> = shared.topics.lock().unwrap()[&topic]
            .iter()
            .enumerate()
            .map(|(p, s)| (p as i32, s.position))
            .collect();
        let fetched = match shared.source.fetch_many(&topic, &positions, &options).await {
            Ok(f) => f,
            // A source that went away: retried with backoff until stopped.
            Err(e) if e.is_retriable() || matches!(e, runnel_client::Error::Connect { .. }) => {
                attempt += 1;
                if attempt == 1 {
                    errln!("warning: cannot fetch {topic} from the source ({e}); retrying");
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot fetch {topic} from the source"))
            }
        };
        attempt = 0;
        let mut done = Vec::new();
        // One transaction per fetch (--exactly-once): the batches and their progress.
        let mut txn = lock_txn(&shared).await;
        for (p, result) in fetched {
            let fp = match result {
                Ok(fp) => fp,
                Err(e) if e.kafka_error() == Some(ResponseError::OffsetOutOfRange) => {
                    let start = shared
                        .source
                        .list_offsets(&topic, &[p], OffsetSpec::Earliest)
                        .await?[0]
                        .offset;
                    let mut topics = shared.topics.lock().unwrap();
                    let s = &mut topics.get_mut(&topic).expect("registered")[p as usize];
                    errln!("warning: {topic}[{p}] offset {} is no longer on the source (retention); continuing at {start}", s.position);
                    s.position = start;
                    s.skip = 0;
                    continue;
                }
                Err(e) if e.is_retriable() => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot fetch {topic}[{p}] from the source"))
                }
            };
            let (skip, sequence) = {
                let mut topics = shared.topics.lock().unwrap();
                let s = &mut topics.get_mut(&topic).expect("registered")[p as usize];
                s.source_end = fp.high_watermark;
                (s.skip, s.sequence)
            };
            let n_skip = (skip.max(0) as usize).min(fp.records.len());
            let (skipped, records) = fp.records.split_at(n_skip);
            if let (Some(first), Some(end)) = (skipped.first(), skipped.last()) {
                // Skipped records are those the target holds after the stored
                // downstream offset, in order (recorded before the ones copied after
                // them: the sync store takes ranges in upstream order).
                let mut topics = shared.topics.lock().unwrap();
                let s = &mut topics.get_mut(&topic).expect("registered")[p as usize];
                let at = s.skip_next_downstream;
                s.copied(first.offset, end.offset, at, n_skip as i64);
                s.skip_next_downstream += n_skip as i64;
            }
            let mut sequence = sequence;
            let mut last = None;
            for chunk in chunks(records) {
                let (base, n) =
                    produce_chunk(&shared, txn.as_deref_mut(), &remote, p, chunk, sequence).await?;
                sequence = sequence.wrapping_add(n as i32);
                let end = (chunk[n - 1].offset, base.saturating_add(n as i64 - 1));
                {
                    let mut topics = shared.topics.lock().unwrap();
                    let s = &mut topics.get_mut(&topic).expect("registered")[p as usize];
                    s.copied(chunk[0].offset, end.0, base, n as i64);
                }
                last = Some(end);
            }
            let mut topics = shared.topics.lock().unwrap();
            let s = &mut topics.get_mut(&topic).expect("registered")[p as usize];
            s.skip -= n_skip as i64;
            s.sequence = sequence;
            s.position = fp.next_offset.max(s.position);
            if let Some((u, d)) = last {
                done.push((p, u, d));
            }
        }
        write_progress(&shared, txn.as_deref_mut(), &topic, &done).await?;
        if let Some(t) = txn.as_deref_mut() {
            t.end(true)
                .await
                .with_context(|| format!("cannot commit the transaction copying {topic}"))?;
        }
    }
    Ok(())
}

/// Splits records into batches of at most `MAX_BATCH_BYTES` of payload.
fn chunks(records: &[runnel_client::ConsumerRecord]) -> Vec<&[runnel_client::ConsumerRecord]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        let size = r.key.as_ref().map_or(0, |k| k.len())
            + r.value.as_ref().map_or(0, |v| v.len())
            + r.headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
            + 32;
        if i > start && bytes + size > MAX_BATCH_BYTES {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Produces one batch to the target partition (idempotent when the target allows it);
/// returns its base offset and record count.
async fn produce_chunk(
    shared: &Shared,
    txn: Option<&mut TransactionalProducer>,
    remote: &str,
    partition: i32,
    chunk: &[runnel_client::ConsumerRecord],
    sequence: i32,
) -> anyhow::Result<(i64, usize)> {
    let records: Vec<ProducerRecord> = chunk
        .iter()
        .map(|r| ProducerRecord {
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
            timestamp_ms: Some(r.timestamp_ms),
        })
        .collect();
    let producer = shared
        .producer
        .map(|(producer_id, producer_epoch)| ProducerIdentity {
            producer_id,
            producer_epoch,
            base_sequence: sequence,
        });
    let bytes: usize = records.iter().map(ProducerRecord::payload_bytes).sum();
    let ack = match txn {
        Some(t) => t.send(remote, partition, &records, &acks_all()).await,
        None => {
            let batch = encode_batch(&records, Compression::None, producer, now_ms())?;
            shared
                .target
                .produce_batch(remote, partition, batch, &acks_all())
                .await
        }
    }
    .with_context(|| format!("cannot write to {remote}[{partition}] on the target"))?;
    let base = ack
        .base_offset
        .ok_or_else(|| anyhow::anyhow!("the target sent no offset for {remote}[{partition}]"))?;
    shared
        .records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    shared.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    Ok((base, records.len()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn heartbeat(shared: &Shared) -> anyhow::Result<()> {
    let record = ProducerRecord {
        key: Some(formats::heartbeat_key(
            &shared.settings.policy.source_alias,
            &shared.settings.target_alias,
        )),
        value: Some(formats::heartbeat_value(now_ms())),
        headers: Vec::new(),
        timestamp_ms: None,
    };
    shared
        .target
        .produce(formats::HEARTBEATS_TOPIC, 0, &[record], &acks_all())
        .await?;
    Ok(())
}

/// Writes a checkpoint for each (group, mirrored partition) whose committed offset
/// translates and moves its last checkpoint (`last`, kept across restarts) as MM2's
/// `MirrorCheckpointTask` does: forward, or back only when the group moved back.
async fn checkpoint(
    shared: &Shared,
    last: &mut HashMap<(String, String, i32), (i64, i64)>,
) -> anyhow::Result<()> {
    let groups = shared.source.list_groups(&[]).await?;
    let mut records = Vec::new();
    // group -> (remote topic, partition, downstream offset), for --sync-group-offsets.
    let mut translated: BTreeMap<String, Vec<(String, i32, i64)>> = BTreeMap::new();
    for g in groups {
        let id = &g.group_id;
        if formats::is_excluded_group(id) || !shared.settings.groups.is_match(id) {
            continue;
        }
        let offsets = match shared.source.committed_offsets(id).await {
            Ok(o) => o,
            Err(e) => {
                errln!("warning: cannot read the offsets of group {id}: {e}");
                continue;
            }
        };
        let topics = shared.topics.lock().unwrap();
        for o in offsets {
            let Some(state) = topics
                .get(&o.topic)
                .and_then(|v| v.get(o.partition as usize))
            else {
                continue;
            };
            let Some(downstream) = state.syncs.translate(o.offset) else {
                continue;
            };
            let remote = shared.settings.policy.remote_topic(&o.topic);
            let key = (id.clone(), remote.clone(), o.partition);
            let emit = checkpoint_moves(last.get(&key).copied(), o.offset, downstream);
            if emit {
                last.insert(key.clone(), (o.offset, downstream));
            }
            // What the group's checkpoint says now (MM2 syncs group offsets from its
            // checkpoint store).
            translated.entry(id.clone()).or_default().push((
                remote.clone(),
                o.partition,
                last[&key].1,
            ));
            if !emit {
                continue;
            }
            records.push(keyed(
                formats::checkpoint_key(id, &remote, o.partition),
                formats::checkpoint_value(
                    o.offset,
                    downstream,
                    o.metadata.as_deref().unwrap_or(""),
                ),
            ));
        }
    }
    if !records.is_empty() {
        let (_, _, checkpoints_topic) = shared.names();
        shared
            .target
            .produce(&checkpoints_topic, 0, &records, &acks_all())
            .await?;
        shared
            .checkpoints
            .fetch_add(records.len() as u64, Ordering::Relaxed);
    }
    if shared.settings.sync_group_offsets {
        for (group, offsets) in translated {
            if let Err(e) = sync_group(shared, &group, offsets).await {
                errln!("warning: cannot sync the offsets of group {group} on the target: {e}");
            }
        }
    }
    Ok(())
}

/// MM2's `checkpointIsMoreRecent`: a group's first checkpoint for a partition, one
/// whose upstream offset moved back (the group was reset), or one whose downstream
/// offset moved forward. Never a repeat, and never a downstream offset moved back while
/// the group did not move back (a restart translating through sparser offset syncs).
fn checkpoint_moves(last: Option<(i64, i64)>, upstream: i64, downstream: i64) -> bool {
    match last {
        None => true,
        Some((last_upstream, last_downstream)) => {
            upstream < last_upstream || downstream > last_downstream
        }
    }
}

/// MM2's `sync.group.offsets.enabled` for one group: the translated offsets are
/// committed on the target when the group has no members there, and only where they
/// are ahead of what the group has committed there (a group is never moved back).
async fn sync_group(
    shared: &Shared,
    group: &str,
    translated: Vec<(String, i32, i64)>,
) -> anyhow::Result<()> {
    if let Ok(d) = shared.target.describe_group(group).await {
        if !d.is_inactive() {
            return Ok(());
        }
    }
    let current: HashMap<(String, i32), i64> = shared
        .target
        .committed_offsets(group)
        .await?
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect();
    let ahead: Vec<(String, i32, i64)> = translated
        .into_iter()
        .filter(|(t, p, o)| current.get(&(t.clone(), *p)).is_none_or(|c| o > c))
        .collect();
    if ahead.is_empty() {
        return Ok(());
    }
    shared.target.commit_group_offsets(group, &ahead).await?;
    shared
        .group_offsets_synced
        .fetch_add(ahead.len() as u64, Ordering::Relaxed);
    Ok(())
}

fn print_progress(shared: &Shared, start: Instant) {
    let topics = shared.topics.lock().unwrap();
    let partitions: usize = topics.values().map(Vec::len).sum();
    let lag: i64 = topics
        .values()
        .flatten()
        .filter(|s| s.source_end >= 0)
        .map(|s| (s.source_end - s.position).max(0))
        .sum();
    let seen: HashSet<&String> = topics.keys().collect();
    errln!(
        "mirror: {} records ({:.1} MiB) copied in {:.0} s from {} topics ({partitions} partitions), lag {lag} records, {} checkpoints, {} group offsets synced",
        shared.records.load(Ordering::Relaxed),
        shared.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64(),
        seen.len(),
        shared.checkpoints.load(Ordering::Relaxed),
        shared.group_offsets_synced.load(Ordering::Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> MirrorArgs {
        crate::tools::parse_args(argv)
    }

    #[test]
    fn flags_are_checked() {
        let ok = args(&["--source", "a:1", "--target", "b:1", "--topics", "orders.*"]);
        let s = ok.settings().unwrap();
        assert!(selected(&s, "orders-eu"));
        assert!(!selected(&s, "xorders"), "whole names");
        assert!(!selected(&s, "orders.internal") && !selected(&s, "__consumer_offsets"));
        assert!(selected(&s, "heartbeats"), "heartbeats are always mirrored");
        assert!(!selected(&s, "target.heartbeats"), "a cycle");
        for (argv, needle) in [
            (vec!["--topics", "("], "--topics"),
            (vec!["--groups", "[z-a]"], "--groups"),
            (vec!["--replication-policy", "custom"], "identity"),
            (vec!["--source-alias", "a.b"], "--source-alias"),
            (vec!["--target-alias", "source"], "differ"),
            (
                vec!["--emit-checkpoints-interval", "0"],
                "--emit-checkpoints-interval",
            ),
        ] {
            let mut all = vec!["--source", "a:1", "--target", "b:1"];
            all.extend(argv);
            let e = args(&all).settings().err().expect("refused").0;
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn checkpoints_move_as_mm2_moves_them() {
        assert!(checkpoint_moves(None, 40, 0), "the first");
        assert!(checkpoint_moves(Some((40, 40)), 50, 50), "forward");
        assert!(!checkpoint_moves(Some((40, 40)), 40, 40), "a repeat");
        assert!(
            !checkpoint_moves(Some((40, 40)), 40, 0),
            "a restart's coarser translation does not move it back"
        );
        assert!(
            !checkpoint_moves(Some((40, 40)), 60, 40),
            "nothing new downstream"
        );
        assert!(
            checkpoint_moves(Some((40, 40)), 10, 10),
            "the group was reset"
        );
    }

    #[test]
    fn chunks_bound_batch_bytes() {
        let r = |n: usize| runnel_client::ConsumerRecord {
            offset: n as i64,
            timestamp_ms: 0,
            log_append_time: false,
            key: None,
            value: Some(Bytes::from(vec![0u8; 200 * 1024])),
            headers: Vec::new(),
        };
        let records: Vec<_> = (0..5).map(r).collect();
        let c = chunks(&records);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert!(chunks(&[]).is_empty());
    }
}
