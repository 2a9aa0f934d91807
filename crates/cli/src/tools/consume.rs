//! `runnel consume`: print a topic's records from a chosen position, as text with a
//! kcat-style format or as JSON lines.

use super::format::{json_line, Format};
use super::{ConnArgs, UsageError};
use anyhow::{bail, Context};
use clap::Args;
use runnel_client::{Client, ClientConfig, FetchOptions, OffsetSpec, ResponseError};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(short, long)]
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(short, long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Start at the earliest offset (default: only new records).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    pub from_beginning: bool,
    /// Start at this offset; negative counts back from the end (-10: the last ten).
    #[arg(
        short,
        long,
        allow_negative_numbers = true,
        conflicts_with = "from_timestamp"
    )]
    pub offset: Option<i64>,
    /// Start at the first record whose timestamp is at or after MS (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub from_timestamp: Option<i64>,
    /// Exit after printing this many records.
    #[arg(short = 'n', long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Exit when no record arrives for this long.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Exit when the end of every partition is reached (like kcat -e).
    #[arg(short, long)]
    pub end: bool,
    /// Output format: %t topic, %p partition, %o offset, %T timestamp, %k key, %v value,
    /// %h headers, %K/%S key/value length, %% and \n \t escapes.
    #[arg(short, long, default_value = "%v\\n", conflicts_with = "json")]
    pub format: String,
    /// One JSON object a line: {"topic","partition","offset","timestamp","key","value","headers"}.
    #[arg(long)]
    pub json: bool,
    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    FromEnd(i64),
    Timestamp(i64),
}

impl Start {
    fn from_args(args: &ConsumeArgs) -> Start {
        match (args.from_beginning, args.offset, args.from_timestamp) {
            (true, _, _) => Start::Earliest,
            (_, Some(o), _) if o >= 0 => Start::Offset(o),
            (_, Some(o), _) => Start::FromEnd(o.unsigned_abs() as i64),
            (_, _, Some(t)) => Start::Timestamp(t),
            _ => Start::Latest,
        }
    }
}

/// The starting offset of each partition.
async fn start_positions(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    start: Start,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let lookup = |spec| async move {
        client
            .list_offsets(topic, partitions, spec)
            .await
            .with_context(|| format!("cannot look up the start offsets of {topic}"))
    };
    let positions = match start {
        Start::Offset(o) => partitions.iter().map(|&p| (p, o)).collect(),
        Start::Earliest => lookup(OffsetSpec::Earliest)
            .await?
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect(),
        Start::Latest => lookup(OffsetSpec::Latest)
            .await?
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect(),
        Start::FromEnd(n) => {
            let earliest = lookup(OffsetSpec::Earliest).await?;
            let latest = lookup(OffsetSpec::Latest).await?;
            earliest
                .iter()
                .zip(&latest)
                .map(|(e, l)| (l.partition, (l.offset - n).max(e.offset)))
                .collect()
        }
        Start::Timestamp(t) => {
            let found = lookup(OffsetSpec::Timestamp(t)).await?;
            let latest = lookup(OffsetSpec::Latest).await?;
            // No record at or after the time: start at the end.
            found
                .iter()
                .zip(&latest)
                .map(|(f, l)| (f.partition, if f.offset < 0 { l.offset } else { f.offset }))
                .collect()
        }
    };
    Ok(positions)
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let format = if args.json {
        None
    } else {
        Some(Format::parse(&args.format).map_err(UsageError)?)
    };
    let client = args.conn.connect(ClientConfig::default()).await?;
    let topic = client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot consume topic {}", args.topic))?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if topic.partitions.iter().any(|m| m.partition == p) => vec![p],
        Some(p) => bail!(
            "topic {} has {} partition(s), so --partition {p} does not exist",
            args.topic,
            topic.partitions.len()
        ),
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut positions =
        start_positions(&client, &args.topic, &partitions, Start::from_args(&args)).await?;
    let mut options = FetchOptions::default();
    let stdout = std::io::stdout();
    let mut out = Vec::with_capacity(1 << 20);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut retries = 0;
    let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
    'poll: loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if let Some(t) = args.timeout_ms {
            // Wait no longer than the idle time left, so the exit comes on time.
            let left = Duration::from_millis(t).saturating_sub(last_record.elapsed());
            options.max_wait_ms = (left.as_millis() as i32).clamp(1, 500);
        }
        let wanted: Vec<(i32, i64)> = positions.iter().map(|(&p, &o)| (p, o)).collect();
        let results = match client.fetch_many(&args.topic, &wanted, &options).await {
            Ok(r) => r,
            Err(e) if e.is_retriable() && retries < 10 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot fetch from {}", args.topic)),
        };
        for (partition, result) in results {
            let fetched = match result {
                Ok(f) => f,
                Err(e) if e.kafka_error() == Some(ResponseError::OffsetOutOfRange) => {
                    let range = describe_range(&client, &args.topic, partition).await;
                    return Err(e).context(format!(
                        "offset {} is outside {}/{partition}{range}; pick another --offset or use --from-beginning",
                        positions[&partition], args.topic
                    ));
                }
                Err(e) if e.is_retriable() && retries < 10 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'poll;
                }
                Err(e) => return Err(e.into()),
            };
            retries = 0;
            if fetched.batch_exceeds_limit {
                if options.partition_max_bytes >= 256 << 20 {
                    bail!(
                        "a record batch in {}/{partition} is larger than 256 MiB",
                        args.topic
                    );
                }
                options.partition_max_bytes *= 2;
                options.max_bytes = options.max_bytes.max(options.partition_max_bytes);
            }
            for r in &fetched.records {
                if args.max_messages.is_some_and(|max| printed >= max) {
                    break;
                }
                match &format {
                    Some(f) => f.write(&mut out, &args.topic, partition, r),
                    None => json_line(&mut out, &args.topic, partition, r),
                }
                printed += 1;
                positions.insert(partition, r.offset + 1);
            }
            if !fetched.records.is_empty() {
                last_record = Instant::now();
            }
            // Past the last printed record, skip what the batches said was consumed (control
            // batches, compacted gaps) unless --max-messages stopped us early.
            if args.max_messages.is_none_or(|max| printed < max) {
                positions.insert(partition, fetched.next_offset.max(positions[&partition]));
            }
            at_end.insert(partition, positions[&partition] >= fetched.high_watermark);
        }
        if !out.is_empty() {
            let mut lock = stdout.lock();
            match lock.write_all(&out).and_then(|_| lock.flush()) {
                Ok(()) => out.clear(),
                // The reader went away (`| head`): that is a normal way to stop.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e).context("cannot write to stdout"),
            }
        }
        if args.end && at_end.len() == positions.len() && at_end.values().all(|&e| e) {
            break;
        }
        if args
            .timeout_ms
            .is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t))
        {
            break;
        }
    }
    if !args.quiet {
        eprintln!("consumed {printed} records from {}", args.topic);
    }
    Ok(())
}

/// " (valid offsets A..B)" for an error message, or nothing if the lookup fails.
async fn describe_range(client: &Client, topic: &str, partition: i32) -> String {
    let earliest = client
        .list_offsets(topic, &[partition], OffsetSpec::Earliest)
        .await;
    let latest = client
        .list_offsets(topic, &[partition], OffsetSpec::Latest)
        .await;
    match (earliest, latest) {
        (Ok(e), Ok(l)) => format!(
            " (earliest offset {}, end offset {})",
            e[0].offset, l[0].offset
        ),
        _ => String::new(),
    }
}
