//! `runnel bench produce|consume|e2e|connect|loopback|disk`: programs that print figures.
//!
//! Throughput counts record payload bytes (record size × records), in MB = 10^6 bytes, as
//! Kafka's perf tools do; latencies are kept in microseconds in HDR histograms and printed
//! in milliseconds.

use super::baseline;
use super::{acks_name, compression_name, parse_acks, parse_compression, ConnArgs, UsageError};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use runnel_client::records::encode_batch;
use runnel_client::{
    Client, ClientConfig, Compression, FetchOptions, NewTopic, OffsetSpec, ProduceOptions,
    ProducerRecord, ResponseError,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as the broker takes them (or at --rate), with the produce
    /// round trip's percentiles.
    Produce(ProduceArgs),
    /// Read records from the beginning of a topic (producing them first if needed).
    Consume(ClientBenchArgs),
    /// Produce at a fixed rate and measure the time until a consumer sees each record.
    E2e(E2eArgs),
    /// New connections per second, each through TCP, TLS and SASL as the client
    /// properties configure them (-X security.protocol=SASL_SSL ...) and ApiVersions.
    Connect(ConnectArgs),
    /// Raw TCP throughput over loopback, in-process: the ceiling for produce throughput.
    Loopback(baseline::LoopbackArgs),
    /// Raw sequential write rate of a file in --dir, with and without fdatasync.
    Disk(baseline::DiskArgs),
}

/// Settings shared by the client benchmarks.
#[derive(Args, Debug, Clone)]
pub struct ClientBenchArgs {
    /// Topic (default: runnel-bench-pN for N partitions); created if missing.
    #[arg(long)]
    pub topic: Option<String>,
    /// Value size of each record in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Number of records (default 1000000 unless --duration-secs is given).
    #[arg(long, conflicts_with = "duration_secs")]
    pub count: Option<u64>,
    /// Run for this long instead of a fixed count.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Acknowledgements: 0, 1, all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: i16,
    /// Compression codec: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Concurrent producer connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub producers: u32,
    /// Payload bytes per record batch (one batch per produce request).
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_bytes: usize,
    /// Produce requests in flight per producer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub max_in_flight: u32,
    /// Fetch size limit per partition (consume).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub fetch_partition_max_bytes: i32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep the topic at the end when the benchmark created it (by default it is deleted,
    /// so runs leave no data behind; a topic that existed before is always kept).
    #[arg(long)]
    pub keep_topic: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: ClientBenchArgs,
    /// Records per second the producers send in total (default: as fast as the broker
    /// takes them). The latency is then the produce round trip at that load: run it at
    /// 50 %, 80 % and 100 % of the unlimited rate to see latency under load.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    #[command(flatten)]
    pub common: ClientBenchArgs,
    /// Records per second the producers send in total.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// How long to open connections for.
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

const DEFAULT_COUNT: u64 = 1_000_000;
const DEFAULT_E2E_SECS: f64 = 10.0;

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(ProduceArgs { common: a, rate }) => {
            validate(&a)?;
            let client = a.conn.connect(ClientConfig::default()).await?;
            let (topic, created) = ensure_topic(&client, &a).await?;
            let limit = Limit::from_args(&a, DEFAULT_COUNT);
            let schedule = rate.map(|per_second| Schedule {
                rate: Rate { per_second },
                clock: Instant::now(),
                stamp: false,
            });
            let result = produce_load(&a, &topic, limit, schedule, true).await;
            cleanup(&client, &a, &topic, created).await;
            let mut result = result?;
            if let Some(r) = rate {
                result.notes.push((
                    "target_rate_records_per_s".to_string(),
                    serde_json::json!(r),
                ));
            }
            report(&a, &topic, Kind::Produce, &result, "latency (ms)");
        }
        BenchCommand::Consume(a) => {
            validate(&a)?;
            let client = a.conn.connect(ClientConfig::default()).await?;
            let (topic, created) = ensure_topic(&client, &a).await?;
            let result = consume_load(&client, &a, &topic).await;
            cleanup(&client, &a, &topic, created).await;
            report(&a, &topic, Kind::Consume, &result?, "fetch latency (ms)");
        }
        BenchCommand::E2e(e) => {
            validate(&e.common)?;
            if e.rate == 0 {
                return Err(UsageError("--rate must be at least 1".into()).into());
            }
            let client = e.common.conn.connect(ClientConfig::default()).await?;
            let (topic, created) = ensure_topic(&client, &e.common).await?;
            let result = e2e(&client, &e, &topic).await;
            cleanup(&client, &e.common, &topic, created).await;
            report(
                &e.common,
                &topic,
                Kind::E2e,
                &result?,
                "end-to-end latency (ms)",
            );
        }
        BenchCommand::Connect(a) => connect_rate(a).await?,
        BenchCommand::Loopback(a) => baseline::loopback(a).await?,
        BenchCommand::Disk(a) => baseline::disk(a).await?,
    }
    Ok(())
}

/// Opens and drops connections from `concurrency` tasks for `duration_secs`.
async fn connect_rate(a: ConnectArgs) -> anyhow::Result<()> {
    if !(a.duration_secs > 0.0) {
        return Err(UsageError("--duration-secs must be positive".into()).into());
    }
    let (addr, config) = a.conn.connection_config()?;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(a.duration_secs);
    let mut tasks = JoinSet::new();
    for _ in 0..a.concurrency {
        let (addr, config, done) = (addr.clone(), config.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                runnel_client::Connection::connect(&addr, &config).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), runnel_client::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a connecting task failed")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / secs;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"bench": "connect", "connections": n, "seconds": secs,
                               "connections_per_sec": rate, "concurrency": a.concurrency})
        );
    } else {
        println!(
            "connect: {n} connections in {secs:.1} s = {rate:.0} connections/s ({} at once)",
            a.concurrency
        );
    }
    Ok(())
}

fn validate(a: &ClientBenchArgs) -> Result<(), UsageError> {
    if a.record_size < 8 {
        return Err(UsageError(
            "--record-size must be at least 8 (records carry a timestamp)".into(),
        ));
    }
    if a.duration_secs.is_some_and(|d| !(d > 0.0)) {
        return Err(UsageError("--duration-secs must be positive".into()));
    }
    if a.count == Some(0) {
        return Err(UsageError("--count must be at least 1".into()));
    }
    Ok(())
}

/// When a load stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Count(u64),
    Duration(Duration),
}

impl Limit {
    fn from_args(a: &ClientBenchArgs, default_count: u64) -> Limit {
        match (a.count, a.duration_secs) {
            (Some(c), _) => Limit::Count(c),
            (None, Some(d)) => Limit::Duration(Duration::from_secs_f64(d)),
            (None, None) => Limit::Count(default_count),
        }
    }
}

/// Deletes the topic if this run created it and --keep-topic was not given.
async fn cleanup(client: &Client, a: &ClientBenchArgs, topic: &str, created: bool) {
    if !created || a.keep_topic {
        return;
    }
    match client.delete_topic(topic).await {
        Ok(()) => errln!("deleted topic {topic} (--keep-topic keeps it)"),
        Err(e) => errln!("warning: cannot delete the benchmark topic {topic}: {e}"),
    }
}

/// Creates the benchmark topic if it is missing and waits until every partition has a
/// leader; says whether it created it. An existing topic with fewer partitions than asked
/// for is an error.
async fn ensure_topic(client: &Client, a: &ClientBenchArgs) -> anyhow::Result<(String, bool)> {
    let name = a
        .topic
        .clone()
        .unwrap_or_else(|| format!("runnel-bench-p{}", a.partitions));
    match client.topic(&name).await {
        Ok(t) if (t.partitions.len() as i32) < a.partitions => bail!(
            "topic {name} exists with {} partition(s), fewer than --partitions {}; delete it or pick another --topic",
            t.partitions.len(),
            a.partitions
        ),
        Ok(_) => return Ok((name, false)),
        Err(e) if e.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot look up topic {name}")),
    }
    let topic = NewTopic {
        name: name.clone(),
        partitions: a.partitions,
        replication_factor: -1,
        configs: vec![],
    };
    let created = match client.create_topic(&topic).await {
        Ok(()) => {
            errln!("created topic {name} with {} partition(s)", a.partitions);
            true
        }
        Err(e) if e.kafka_error() == Some(ResponseError::TopicAlreadyExists) => false,
        Err(e) => return Err(e).with_context(|| format!("cannot create topic {name}")),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = client
            .metadata(Some(&[name.clone()]), false)
            .await
            .ok()
            .and_then(|m| {
                m.topics
                    .into_iter()
                    .find(|t| t.name == name && t.error_code == 0)
                    .filter(|t| {
                        t.partitions.len() as i32 >= a.partitions
                            && t.partitions.iter().all(|p| p.leader >= 0)
                    })
            });
        if ready.is_some() {
            return Ok((name, created));
        }
        if Instant::now() > deadline {
            bail!("topic {name} was created but its partitions have no leader after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Outcome of one benchmark.
pub struct BenchResult {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Microseconds.
    pub latency: Histogram<u64>,
    /// Extra lines for the table and fields for the JSON object.
    pub notes: Vec<(String, serde_json::Value)>,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// Which benchmark a report is for: each lists the settings that shaped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Produce,
    Consume,
    E2e,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Consume => "consume",
            Kind::E2e => "e2e",
        }
    }
}

/// The settings of a run, as (name, value): producer settings for produce, consumer
/// settings for consume, both for e2e.
fn settings(a: &ClientBenchArgs, kind: Kind) -> Vec<(&'static str, serde_json::Value)> {
    let mut s = vec![
        ("record_size", a.record_size.into()),
        ("partitions", a.partitions.into()),
    ];
    if kind != Kind::Consume {
        s.push(("acks", acks_name(a.acks).into()));
        s.push(("compression", compression_name(a.compression).into()));
        s.push(("producers", a.producers.into()));
        s.push(("batch_bytes", a.batch_bytes.into()));
        s.push(("max_in_flight", a.max_in_flight.into()));
    }
    if kind != Kind::Produce {
        s.push((
            "fetch_partition_max_bytes",
            a.fetch_partition_max_bytes.into(),
        ));
    }
    s
}

fn report(a: &ClientBenchArgs, topic: &str, kind: Kind, r: &BenchResult, latency_label: &str) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let h = &r.latency;
    let have_latency = !h.is_empty();
    let settings = settings(a, kind);
    if a.json {
        let mut v = serde_json::json!({
            "bench": kind.name(),
            "topic": topic,
            "records": r.records,
            "bytes": r.bytes,
            "elapsed_s": secs,
            "records_per_s": r.records as f64 / secs,
            "mb_per_s": mb_per_s(r.bytes, r.elapsed),
            "latency_ms": if have_latency {
                serde_json::json!({
                    "p50": ms(h.value_at_quantile(0.5)),
                    "p99": ms(h.value_at_quantile(0.99)),
                    "p999": ms(h.value_at_quantile(0.999)),
                    "max": ms(h.max()),
                })
            } else {
                serde_json::Value::Null
            },
        });
        for (k, val) in &settings {
            v[*k] = val.clone();
        }
        for (k, val) in &r.notes {
            v[k] = val.clone();
        }
        outln!("{v}");
        return;
    }
    let listed: Vec<String> = settings
        .iter()
        .skip(2)
        .map(|(k, v)| {
            format!(
                "{}={}",
                k.replace('_', "."),
                v.as_str().map_or(v.to_string(), str::to_string)
            )
        })
        .collect();
    outln!(
        "bench {}: {} records of {} B, topic {topic} ({} partition(s), {})",
        kind.name(),
        r.records,
        a.record_size,
        a.partitions,
        listed.join(", ")
    );
    outln!("  {:<26}{:.3} s", "elapsed", secs);
    outln!(
        "  {:<26}{:.0} records/s   {:.1} MB/s",
        "throughput",
        r.records as f64 / secs,
        mb_per_s(r.bytes, r.elapsed)
    );
    if have_latency {
        outln!(
            "  {:<26}p50 {:.3}   p99 {:.3}   p99.9 {:.3}   max {:.3}",
            latency_label,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );
    }
    for (k, v) in &r.notes {
        outln!("  {:<26}{}", k.replace('_', " "), v);
    }
}

/// Record values: a pool of distinct pseudo-random letter strings, so that compression has
/// work to do but cannot fold identical records together.
fn payload_pool(record_size: usize) -> Vec<Bytes> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..64)
        .map(|_| {
            (0..record_size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b'A' + (state % 26) as u8
                })
                .collect::<Vec<u8>>()
                .into()
        })
        .collect()
}

/// Live counters for progress lines.
#[derive(Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    done: AtomicBool,
}

/// Prints a progress line to stderr every second until `done`.
fn spawn_progress(label: &'static str, progress: Arc<Progress>) {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_records, mut last_bytes) = (0, 0);
        loop {
            tick.tick().await;
            if progress.done.load(Ordering::Relaxed) {
                return;
            }
            let records = progress.records.load(Ordering::Relaxed);
            let bytes = progress.bytes.load(Ordering::Relaxed);
            errln!(
                "[{:>5.1} s] {label}: {records} records, {:.0} records/s, {:.1} MB/s",
                start.elapsed().as_secs_f64(),
                (records - last_records) as f64,
                (bytes - last_bytes) as f64 / 1e6
            );
            (last_records, last_bytes) = (records, bytes);
        }
    });
}

/// A fixed-rate schedule: how many records are due by now.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: u64,
}

/// Producing on a schedule from `clock`; with `stamp`, each value starts with its send
/// time (ns since `clock`), for the end-to-end consumer.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: Rate,
    clock: Instant,
    stamp: bool,
}

impl Rate {
    fn due(&self, elapsed: Duration) -> u64 {
        (elapsed.as_secs_f64() * self.per_second as f64) as u64
    }
}

/// Runs `producers` connections producing to `topic` until `limit`, on `schedule` if any
/// (shared out between the producers).
async fn produce_load(
    a: &ClientBenchArgs,
    topic: &str,
    limit: Limit,
    schedule: Option<Schedule>,
    show_progress: bool,
) -> anyhow::Result<BenchResult> {
    let progress = Arc::new(Progress::default());
    let pool = Arc::new(payload_pool(a.record_size));
    let start = Instant::now();
    if show_progress {
        spawn_progress("produced", progress.clone());
    }
    let mut workers = JoinSet::new();
    for id in 0..a.producers as u64 {
        let client = a.conn.connect(ClientConfig::default()).await?;
        let share = match limit {
            Limit::Count(c) => {
                Limit::Count(c / a.producers as u64 + u64::from(id < c % a.producers as u64))
            }
            d => d,
        };
        let rate = schedule.map(|s| {
            let total = s.rate.per_second;
            let per_second =
                total / a.producers as u64 + u64::from(id < total % a.producers as u64);
            Schedule {
                rate: Rate {
                    per_second: per_second.max(1),
                },
                ..s
            }
        });
        let (a, topic, pool, progress) =
            (a.clone(), topic.to_string(), pool.clone(), progress.clone());
        workers.spawn(async move {
            produce_worker(id, client, a, topic, share, rate, pool, progress).await
        });
    }
    let mut latency = new_histogram();
    let mut records = 0;
    while let Some(joined) = workers.join_next().await {
        let (n, h) = joined.context("a producer task failed")??;
        records += n;
        latency.add(h).expect("histograms share bounds");
    }
    progress.done.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    Ok(BenchResult {
        records,
        bytes: records * a.record_size as u64,
        elapsed,
        latency,
        notes: vec![],
    })
}

#[allow(clippy::too_many_arguments)]
async fn produce_worker(
    id: u64,
    client: Client,
    a: ClientBenchArgs,
    topic: String,
    limit: Limit,
    rate: Option<Schedule>,
    pool: Arc<Vec<Bytes>>,
    progress: Arc<Progress>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let per_batch = (a.batch_bytes / a.record_size).max(1) as u64;
    let options = ProduceOptions {
        acks: a.acks,
        timeout_ms: 30_000,
        compression: a.compression,
    };
    let partitions = a.partitions as u64;
    let start = Instant::now();
    let mut in_flight: JoinSet<(
        u64,
        Instant,
        runnel_client::Result<runnel_client::ProduceAck>,
    )> = JoinSet::new();
    let mut latency = new_histogram();
    let (mut sent, mut acked, mut batch_no) = (0u64, 0u64, id);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut encoded = EncodedBatches::default();
    loop {
        let remaining = match limit {
            Limit::Count(c) => c - sent,
            Limit::Duration(d) if start.elapsed() >= d => 0,
            Limit::Duration(_) => u64::MAX,
        };
        let mut n = remaining.min(per_batch);
        if let Some(s) = rate {
            n = n.min(s.rate.due(start.elapsed()).saturating_sub(sent));
        }
        if n > 0 && in_flight.len() < a.max_in_flight as usize {
            let now_ns = rate
                .filter(|s| s.stamp)
                .map(|s| s.clock.elapsed().as_nanos() as u64);
            let first_value = sent % pool.len() as u64;
            let reusable = now_ns.is_none() && a.compression == Compression::None;
            let partition = (batch_no % partitions) as i32;
            batch_no += 1;
            let batch = match encoded.get(n, first_value).filter(|_| reusable) {
                Some(batch) => batch,
                None => {
                    let records: Vec<ProducerRecord> = (0..n)
                        .map(|i| {
                            let mut value = pool[((sent + i) % pool.len() as u64) as usize].clone();
                            if let Some(ns) = now_ns {
                                let mut v = value.to_vec();
                                v[..8].copy_from_slice(&ns.to_be_bytes());
                                value = v.into();
                            }
                            ProducerRecord {
                                value: Some(value),
                                ..Default::default()
                            }
                        })
                        .collect();
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as i64;
                    let batch = encode_batch(&records, a.compression, None, now_ms)?;
                    if reusable {
                        encoded.put(n, first_value, batch.clone());
                    }
                    batch
                }
            };
            let (client, topic) = (client.clone(), topic.clone());
            in_flight.spawn(async move {
                let sent_at = Instant::now();
                (
                    n,
                    sent_at,
                    client
                        .produce_batch(&topic, partition, batch, &options)
                        .await,
                )
            });
            sent += n;
            continue;
        }
        if in_flight.is_empty() && remaining == 0 {
            break;
        }
        // Wait for an answer, or (on a schedule, or with nothing in flight) for the next tick.
        let waiting_on_rate = rate.is_some() && n == 0 && remaining > 0;
        if in_flight.is_empty() || (waiting_on_rate && in_flight.len() < a.max_in_flight as usize) {
            tokio::select! {
                _ = tick.tick() => continue,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    acked += record_ack(joined, &topic, &mut latency, &progress, a.record_size)?;
                }
            }
        } else if let Some(joined) = in_flight.join_next().await {
            acked += record_ack(joined, &topic, &mut latency, &progress, a.record_size)?;
        }
    }
    debug_assert_eq!(acked, sent);
    Ok((acked, latency))
}

/// Batches already encoded, by record count and first pool value: without compression or
/// per-record send stamps, a batch of the same records encodes to the same bytes, so it
/// is encoded once and sent again for up to [`EncodedBatches::FRESH`] (its timestamps are
/// that old at most). The bench then spends its CPU, which it shares with the broker,
/// sending rather than re-encoding (two copies and a CRC pass per byte); the broker still
/// validates every batch it is sent.
#[derive(Default)]
struct EncodedBatches {
    batches: std::collections::HashMap<(u64, u64), (Instant, Bytes)>,
}

impl EncodedBatches {
    const FRESH: Duration = Duration::from_secs(1);

    fn get(&self, records: u64, first_value: u64) -> Option<Bytes> {
        self.batches
            .get(&(records, first_value))
            .filter(|(at, _)| at.elapsed() < Self::FRESH)
            .map(|(_, b)| b.clone())
    }

    fn put(&mut self, records: u64, first_value: u64, batch: Bytes) {
        self.batches
            .insert((records, first_value), (Instant::now(), batch));
    }
}

type Joined = Result<
    (
        u64,
        Instant,
        runnel_client::Result<runnel_client::ProduceAck>,
    ),
    tokio::task::JoinError,
>;

fn record_ack(
    joined: Joined,
    topic: &str,
    latency: &mut Histogram<u64>,
    progress: &Progress,
    record_size: usize,
) -> anyhow::Result<u64> {
    let (n, sent_at, result) = joined.context("a produce request task failed")?;
    result.with_context(|| format!("benchmark produce to {topic} failed"))?;
    latency.saturating_record_n(sent_at.elapsed().as_micros().max(1) as u64, n);
    progress.records.fetch_add(n, Ordering::Relaxed);
    progress
        .bytes
        .fetch_add(n * record_size as u64, Ordering::Relaxed);
    Ok(n)
}

/// Reads `count` records from the beginning of every partition, producing the shortfall
/// first. Latency is the round trip of each fetch.
async fn consume_load(
    client: &Client,
    a: &ClientBenchArgs,
    topic: &str,
) -> anyhow::Result<BenchResult> {
    let meta = client.topic(topic).await?;
    let partitions: Vec<i32> = meta.partitions.iter().map(|p| p.partition).collect();
    let earliest = client
        .list_offsets(topic, &partitions, OffsetSpec::Earliest)
        .await?;
    let latest = client
        .list_offsets(topic, &partitions, OffsetSpec::Latest)
        .await?;
    let available: u64 = earliest
        .iter()
        .zip(&latest)
        .map(|(e, l)| (l.offset - e.offset).max(0) as u64)
        .sum();
    let (target, deadline) = match (a.count, a.duration_secs) {
        (Some(c), _) => (c, None),
        (None, Some(d)) => (u64::MAX, Some(Duration::from_secs_f64(d))),
        (None, None) => (DEFAULT_COUNT, None),
    };
    let wanted = if target == u64::MAX {
        DEFAULT_COUNT.max(available)
    } else {
        target
    };
    if available < wanted {
        let missing = wanted - available;
        errln!("topic {topic} holds {available} records; producing {missing} more first");
        produce_load(a, topic, Limit::Count(missing), None, false).await?;
    }
    let positions: Vec<(i32, i64)> = earliest.iter().map(|o| (o.partition, o.offset)).collect();
    let options = FetchOptions {
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes: 64 << 20,
        partition_max_bytes: a.fetch_partition_max_bytes,
        isolation_level: 0,
    };
    let progress = Arc::new(Progress::default());
    spawn_progress("consumed", progress.clone());
    // The partitions are read in up to `FETCH_LANES` lanes, each a fetch loop over its
    // share, so one lane decodes while the broker serves another's fetch (a Kafka
    // consumer overlaps the same way: it fetches in the background while the application
    // handles the last records).
    let lanes: Vec<Vec<(i32, i64)>> = {
        let n = positions.len().clamp(1, FETCH_LANES);
        let mut lanes = vec![Vec::new(); n];
        for (i, p) in positions.into_iter().enumerate() {
            lanes[i % n].push(p);
        }
        lanes
    };
    let shared = Lanes {
        target,
        deadline,
        start: Instant::now(),
        progress: progress.clone(),
        last_progress: std::sync::Mutex::new(Instant::now()),
    };
    let mut lanes = lanes.into_iter();
    let first = lanes.next().expect("at least one lane");
    let results = match lanes.next() {
        None => vec![consume_lane(client, topic, first, &options, &shared).await?],
        Some(second) => {
            let (a, b) = tokio::try_join!(
                consume_lane(client, topic, first, &options, &shared),
                consume_lane(client, topic, second, &options, &shared)
            )?;
            vec![a, b]
        }
    };
    let mut latency = new_histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let (mut fetches, mut wire_bytes, mut partitions_with_data) = (0u64, 0u64, 0u64);
    for r in results {
        latency.add(&r.latency).context("merging fetch latencies")?;
        records += r.records;
        bytes += r.bytes;
        fetches += r.fetches;
        wire_bytes += r.wire_bytes;
        partitions_with_data += r.partitions_with_data;
    }
    let start = shared.start;
    progress.done.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    Ok(BenchResult {
        records,
        bytes,
        elapsed,
        latency,
        notes: vec![
            ("fetch_requests".to_string(), serde_json::json!(fetches)),
            (
                "mean_fetch_response_bytes".to_string(),
                serde_json::json!(wire_bytes / fetches.max(1)),
            ),
            (
                "mean_partitions_with_data".to_string(),
                serde_json::json!(
                    (partitions_with_data as f64 / fetches.max(1) as f64 * 10.0).round() / 10.0
                ),
            ),
        ],
    })
}

/// Fetch loops a consume benchmark runs at once over disjoint shares of the partitions
/// (`consume_load` joins at most two).
const FETCH_LANES: usize = 2;

/// What the lanes of one consume benchmark share.
struct Lanes {
    target: u64,
    deadline: Option<Duration>,
    start: Instant,
    progress: Arc<Progress>,
    /// When any lane last got records (a stall is judged over every lane).
    last_progress: std::sync::Mutex<Instant>,
}

/// What one lane read.
struct LaneResult {
    records: u64,
    bytes: u64,
    fetches: u64,
    wire_bytes: u64,
    partitions_with_data: u64,
    latency: Histogram<u64>,
}

/// One fetch loop over `positions` until the lanes together have `target` records (or
/// the deadline passes); fails when no lane got anything for 5 s.
async fn consume_lane(
    client: &Client,
    topic: &str,
    mut positions: Vec<(i32, i64)>,
    options: &FetchOptions,
    shared: &Lanes,
) -> anyhow::Result<LaneResult> {
    let mut r = LaneResult {
        records: 0,
        bytes: 0,
        fetches: 0,
        wire_bytes: 0,
        partitions_with_data: 0,
        latency: new_histogram(),
    };
    let done = || {
        shared.progress.records.load(Ordering::Relaxed) >= shared.target
            || shared.deadline.is_some_and(|d| shared.start.elapsed() >= d)
    };
    while !done() {
        let sent_at = Instant::now();
        let results = client.fetch_many(topic, &positions, options).await?;
        r.latency
            .saturating_record(sent_at.elapsed().as_micros().max(1) as u64);
        r.fetches += 1;
        let (mut got, mut got_bytes) = (0u64, 0u64);
        let mut caught_up = true;
        for (partition, result) in results {
            let f = result
                .with_context(|| format!("benchmark fetch from {topic}/{partition} failed"))?;
            r.wire_bytes += f.bytes as u64;
            r.partitions_with_data += u64::from(f.bytes > 0);
            if f.batch_exceeds_limit {
                bail!("a batch in {topic}/{partition} is larger than --fetch-partition-max-bytes");
            }
            got += f.records.len() as u64;
            got_bytes += f
                .records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                .sum::<u64>();
            for p in positions.iter_mut().filter(|p| p.0 == partition) {
                p.1 = f.next_offset;
            }
            caught_up &= f.next_offset >= f.high_watermark;
        }
        r.records += got;
        r.bytes += got_bytes;
        let total = shared.progress.records.fetch_add(got, Ordering::Relaxed) + got;
        shared
            .progress
            .bytes
            .fetch_add(got_bytes, Ordering::Relaxed);
        if caught_up && shared.target != u64::MAX {
            // A count run: this lane's share is read. Long-polling on would hold the
            // other lanes' fetches behind it on the connection (responses come in
            // request order), and the records still wanted are theirs.
            break;
        }
        if got > 0 {
            *shared.last_progress.lock().expect("not poisoned") = Instant::now();
        } else if shared.last_progress.lock().expect("not poisoned").elapsed()
            > Duration::from_secs(5)
        {
            bail!(
                "consumed {total} of {} records, then nothing for 5 s",
                shared.target
            );
        }
    }
    Ok(r)
}

/// Produces at `--rate` and measures, per record, the time from building it to a
/// long-polling consumer decoding it.
async fn e2e(client: &Client, e: &E2eArgs, topic: &str) -> anyhow::Result<BenchResult> {
    let a = &e.common;
    let meta = client.topic(topic).await?;
    let partitions: Vec<i32> = meta
        .partitions
        .iter()
        .take(a.partitions as usize)
        .map(|p| p.partition)
        .collect();
    let latest = client
        .list_offsets(topic, &partitions, OffsetSpec::Latest)
        .await?;
    let positions: Vec<(i32, i64)> = latest.iter().map(|o| (o.partition, o.offset)).collect();
    let limit = match (a.count, a.duration_secs) {
        (Some(c), _) => Limit::Count(c),
        (None, d) => Limit::Count((d.unwrap_or(DEFAULT_E2E_SECS) * e.rate as f64).ceil() as u64),
    };
    let Limit::Count(total) = limit else {
        unreachable!("e2e always runs a count")
    };
    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (client, topic, stop) = (client.clone(), topic.to_string(), stop.clone());
        tokio::spawn(
            async move { e2e_consumer(client, topic, positions, total, clock, stop).await },
        )
    };
    let produced = produce_load(
        a,
        topic,
        limit,
        Some(Schedule {
            rate: Rate { per_second: e.rate },
            clock,
            stamp: true,
        }),
        true,
    )
    .await?;
    // Give the consumer time to see the last records.
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !consumer.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (seen, latency) = consumer.await.context("the e2e consumer task failed")??;
    if waited.is_err() || seen < produced.records {
        errln!(
            "warning: the consumer saw {seen} of {} produced records within 10 s",
            produced.records
        );
    }
    let notes = vec![
        (
            "target_rate_records_per_s".to_string(),
            serde_json::json!(e.rate),
        ),
        ("records_seen".to_string(), serde_json::json!(seen)),
        (
            "produce_ack_p99_ms".to_string(),
            serde_json::json!(ms(produced.latency.value_at_quantile(0.99))),
        ),
    ];
    Ok(BenchResult {
        records: produced.records,
        bytes: produced.bytes,
        elapsed: produced.elapsed,
        latency,
        notes,
    })
}

async fn e2e_consumer(
    client: Client,
    topic: String,
    mut positions: Vec<(i32, i64)>,
    total: u64,
    clock: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let options = FetchOptions {
        max_wait_ms: 100,
        min_bytes: 1,
        ..FetchOptions::default()
    };
    let mut latency = new_histogram();
    let mut seen = 0;
    while seen < total && !stop.load(Ordering::Relaxed) {
        for (partition, result) in client.fetch_many(&topic, &positions, &options).await? {
            let f = result.with_context(|| format!("e2e fetch from {topic}/{partition} failed"))?;
            let now_ns = clock.elapsed().as_nanos() as u64;
            for r in &f.records {
                let Some(v) = r.value.as_ref().filter(|v| v.len() >= 8) else {
                    continue;
                };
                let sent_ns = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                latency.saturating_record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                seen += 1;
            }
            for p in positions.iter_mut().filter(|p| p.0 == partition) {
                p.1 = f.next_offset;
            }
        }
    }
    Ok((seen, latency))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch kept for reuse is exactly what encoding the same records gives, and is
    /// found only by its own record count and first value, and only while fresh.
    #[test]
    fn encoded_batches_are_reused_by_records_and_first_value_while_fresh() {
        let pool = payload_pool(100);
        let records: Vec<ProducerRecord> = (0..4)
            .map(|i| ProducerRecord {
                value: Some(pool[i].clone()),
                ..Default::default()
            })
            .collect();
        let batch = encode_batch(&records, Compression::None, None, 1_000).unwrap();
        let mut cache = EncodedBatches::default();
        assert!(cache.get(4, 0).is_none());
        cache.put(4, 0, batch.clone());
        assert_eq!(
            cache.get(4, 0).unwrap(),
            encode_batch(&records, Compression::None, None, 1_000).unwrap()
        );
        assert!(cache.get(4, 1).is_none() && cache.get(3, 0).is_none());
        cache.batches.get_mut(&(4, 0)).unwrap().0 -= EncodedBatches::FRESH;
        assert!(cache.get(4, 0).is_none(), "a stale batch is encoded afresh");
    }

    #[test]
    fn each_summary_lists_its_own_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: ClientBenchArgs,
        }
        let a = P::parse_from(["bench"]).a;
        let names = |k| {
            settings(&a, k)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert!(!names(Kind::Consume).contains(&"acks"));
        assert!(!names(Kind::Consume).contains(&"producers"));
        assert!(names(Kind::Consume).contains(&"fetch_partition_max_bytes"));
        assert!(names(Kind::Produce).contains(&"acks"));
        assert!(!names(Kind::Produce).contains(&"fetch_partition_max_bytes"));
        assert!(
            names(Kind::E2e).contains(&"acks")
                && names(Kind::E2e).contains(&"fetch_partition_max_bytes")
        );
    }

    #[test]
    fn payloads_are_distinct_letters() {
        let pool = payload_pool(100);
        assert_eq!(pool.len(), 64);
        assert!(pool
            .iter()
            .all(|p| p.len() == 100 && p.iter().all(u8::is_ascii_uppercase)));
        assert_ne!(pool[0], pool[1]);
    }

    #[test]
    fn rates_schedule_records() {
        let r = Rate { per_second: 1000 };
        assert_eq!(r.due(Duration::from_millis(0)), 0);
        assert_eq!(r.due(Duration::from_millis(1500)), 1500);
    }

    #[test]
    fn histograms_hold_an_hour_in_microseconds() {
        let mut h = new_histogram();
        h.saturating_record(3_600_000_000);
        h.saturating_record_n(500, 99);
        assert_eq!(h.len(), 100);
        assert!(ms(h.value_at_quantile(0.5)) < 0.6);
        assert!(mb_per_s(2_000_000, Duration::from_secs(2)) - 1.0 < 1e-9);
    }
}
