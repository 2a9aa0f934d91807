//! `runnel consume`: print a topic's records from a chosen position, as text with a
//! kcat-style format or as JSON lines; with `--group`, as a member of a consumer group
//! (KIP-848) that reads what the coordinator assigns it and commits what it printed.

use super::format::{json_line, Format};
use super::{ConnArgs, UsageError};
use anyhow::{bail, Context};
use clap::Args;
use runnel_client::{Client, ClientConfig, FetchOptions, Membership, OffsetSpec, ResponseError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

/// How often a group member commits what it printed (Kafka's auto.commit.interval.ms).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

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
    /// Where to start, as kcat's -o: beginning, end, stored (the group's committed
    /// offset), N (an offset), -N (N records before the end), s@MS (the first record at or
    /// after MS, ms since the epoch). With --group it applies to partitions the group has
    /// no committed offset for.
    #[arg(
        short,
        long,
        allow_negative_numbers = true,
        conflicts_with = "from_timestamp",
        value_parser = parse_start,
        value_name = "OFFSET"
    )]
    pub offset: Option<Start>,
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
    /// Consume as a member of this consumer group (as kafka-console-consumer --group and
    /// kcat -G): partitions are assigned by the group coordinator, printed records are
    /// committed every 5 s and at exit, and the member shows in `runnel groups describe`.
    /// Same as -X group.id=GROUP.
    #[arg(short = 'G', long, value_name = "GROUP", conflicts_with = "partition")]
    pub group: Option<String>,
    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Parses kcat's `-o`: beginning, end, stored, N, -N, s@MS.
pub fn parse_start(s: &str) -> Result<Start, String> {
    let number = |t: &str| t.parse::<i64>().ok();
    match s {
        "beginning" | "earliest" | "smallest" => Ok(Start::Earliest),
        "end" | "latest" | "largest" => Ok(Start::Latest),
        "stored" => Ok(Start::Stored),
        _ if s.starts_with("s@") => number(&s[2..])
            .filter(|&t| t >= 0)
            .map(Start::Timestamp)
            .ok_or_else(|| format!("{s:?}: s@ needs a timestamp in ms since the epoch")),
        _ if s.starts_with("e@") => Err(format!(
            "{s:?}: stopping at a timestamp (e@) is not supported; use --max-messages or --end"
        )),
        _ => match number(s) {
            Some(o) if o >= 0 => Ok(Start::Offset(o)),
            Some(o) => Ok(Start::FromEnd(o.unsigned_abs() as i64)),
            None => Err(format!(
                "{s:?} is not an offset: expected beginning, end, stored, N, -N (N before the \
                 end) or s@MS (a timestamp in ms)"
            )),
        },
    }
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    Offset(i64),
    FromEnd(i64),
    Timestamp(i64),
    /// The group's committed offset (only with a group).
    Stored,
}

impl Start {
    /// The start the flags ask for; `reset` (auto.offset.reset) when they name none.
    fn from_args(args: &ConsumeArgs, reset: Start) -> Start {
        match (args.from_beginning, args.offset, args.from_timestamp) {
            (true, _, _) => Start::Earliest,
            (_, Some(o), _) => o,
            (_, _, Some(t)) => Start::Timestamp(t),
            _ => reset,
        }
    }
}

/// Parses auto.offset.reset (Java's earliest/latest, librdkafka's beginning/end too).
fn parse_reset(v: &str) -> Result<Start, UsageError> {
    match parse_start(v) {
        Ok(s @ (Start::Earliest | Start::Latest)) => Ok(s),
        _ => Err(UsageError(format!(
            "auto.offset.reset={v}: expected earliest or latest"
        ))),
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
        // The caller resolves Stored against the group's commits first.
        Start::Stored => lookup(OffsetSpec::Latest)
            .await?
            .iter()
            .map(|o| (o.partition, o.offset))
            .collect(),
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

/// A group member's bookkeeping in the poll loop.
struct Group {
    member: Membership,
    name: String,
    /// Where the starts of newly assigned partitions come from when nothing is committed.
    reset: Start,
    next_heartbeat: Instant,
    last_commit: Instant,
    /// What was last committed, so an idle member does not commit again.
    committed: BTreeMap<i32, i64>,
}

impl Group {
    /// Heartbeats when due and applies a changed assignment to `positions`: revoked
    /// partitions are committed and dropped, new ones start at the group's committed
    /// offset (or `reset`).
    async fn heartbeat(
        &mut self,
        client: &Client,
        topic: &str,
        positions: &mut BTreeMap<i32, i64>,
    ) -> anyhow::Result<()> {
        if Instant::now() < self.next_heartbeat {
            return Ok(());
        }
        let assigned = match self.member.heartbeat().await {
            Ok(a) => a,
            Err(e) if e.is_retriable() => {
                self.next_heartbeat = Instant::now() + Duration::from_millis(500);
                return Ok(());
            }
            Err(e) => return Err(e).context(format!("cannot stay in group {}", self.name)),
        };
        self.next_heartbeat = Instant::now() + self.member.heartbeat_interval();
        let mine: BTreeSet<i32> = assigned.get(topic).into_iter().flatten().copied().collect();
        let revoked: Vec<i32> = positions
            .keys()
            .filter(|p| !mine.contains(p))
            .copied()
            .collect();
        if !revoked.is_empty() {
            let _ = self.commit(topic, positions, &revoked).await;
            for p in &revoked {
                positions.remove(p);
            }
            // Tell the coordinator at once that they are released (as Kafka's consumer
            // does after reconciling), so the next owner need not wait an interval.
            self.next_heartbeat = Instant::now();
        }
        let added: Vec<i32> = mine
            .iter()
            .filter(|p| !positions.contains_key(p))
            .copied()
            .collect();
        if !added.is_empty() {
            let committed: BTreeMap<i32, i64> = client
                .committed_offsets(&self.name)
                .await?
                .into_iter()
                .filter(|c| c.topic == topic && c.offset >= 0)
                .map(|c| (c.partition, c.offset))
                .collect();
            let fresh: Vec<i32> = added
                .iter()
                .filter(|p| !committed.contains_key(p))
                .copied()
                .collect();
            let mut starts = if fresh.is_empty() {
                BTreeMap::new()
            } else {
                start_positions(client, topic, &fresh, self.reset).await?
            };
            for p in added {
                if let Some(&o) = committed.get(&p) {
                    starts.insert(p, o);
                    self.committed.insert(p, o);
                }
            }
            positions.extend(starts);
            self.next_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// Commits the positions of `partitions` that moved since the last commit.
    async fn commit(
        &mut self,
        topic: &str,
        positions: &BTreeMap<i32, i64>,
        partitions: &[i32],
    ) -> anyhow::Result<()> {
        let offsets: Vec<(String, i32, i64)> = partitions
            .iter()
            .filter_map(|p| positions.get(p).map(|&o| (*p, o)))
            .filter(|(p, o)| self.committed.get(p) != Some(o))
            .map(|(p, o)| (topic.to_string(), p, o))
            .collect();
        self.member
            .commit(&offsets)
            .await
            .with_context(|| format!("cannot commit the offsets of group {}", self.name))?;
        for (_, p, o) in offsets {
            self.committed.insert(p, o);
        }
        self.last_commit = Instant::now();
        Ok(())
    }
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let format = if args.json {
        None
    } else {
        Some(Format::parse(&args.format).map_err(UsageError)?)
    };
    let resolved = args.conn.resolve()?;
    let group_name = args
        .group
        .clone()
        .or_else(|| resolved.property("group.id").map(str::to_string));
    let reset = match resolved.property("auto.offset.reset") {
        Some(v) => parse_reset(v)?,
        None => Start::Latest,
    };
    let start = Start::from_args(&args, reset);
    match (&group_name, start, args.partition) {
        (None, Start::Stored, _) => {
            return Err(UsageError(
                "-o stored reads the group's committed offsets: give --group GROUP".into(),
            )
            .into())
        }
        (Some(g), _, Some(p)) => {
            return Err(UsageError(format!(
                "--partition {p} and group {g}: a group member reads what the group assigns it; \
                 drop one of them"
            ))
            .into())
        }
        _ => {}
    }
    let client = args
        .conn
        .connect_resolved(&resolved, ClientConfig::default())
        .await?;
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
    let mut group = group_name.map(|name| Group {
        member: Membership::new(client.clone(), &name, vec![args.topic.clone()]),
        // -o stored falls back as Kafka's consumer does, to auto.offset.reset.
        reset: if start == Start::Stored { reset } else { start },
        name,
        next_heartbeat: Instant::now(),
        last_commit: Instant::now(),
        committed: BTreeMap::new(),
    });
    let mut positions = match group {
        Some(_) => BTreeMap::new(),
        None => start_positions(&client, &args.topic, &partitions, start).await?,
    };
    let mut printed = 0u64;
    let stop = crate::stop_signal();
    let polled = tokio::select! {
        r = poll(&args, &format, &client, &mut group, &mut positions, &mut printed) => r,
        // Ctrl-C or SIGTERM: stop, commit and leave the group, print the summary.
        _ = stop => Ok(()),
    };
    if let Some(g) = &mut group {
        let all: Vec<i32> = positions.keys().copied().collect();
        let committed = g.commit(&args.topic, &positions, &all).await;
        let _ = g.member.leave().await;
        committed?;
    }
    polled?;
    if !args.quiet {
        match &group {
            Some(g) => errln!(
                "consumed {printed} records from {} as a member of group {}",
                args.topic,
                g.name
            ),
            None => errln!("consumed {printed} records from {}", args.topic),
        }
    }
    Ok(())
}

/// Fetches and prints until --max-messages, --end or --timeout-ms says to stop.
async fn poll(
    args: &ConsumeArgs,
    format: &Option<Format>,
    client: &Client,
    group: &mut Option<Group>,
    positions: &mut BTreeMap<i32, i64>,
    printed: &mut u64,
) -> anyhow::Result<()> {
    let mut options = FetchOptions::default();
    let stdout = std::io::stdout();
    let mut out = Vec::with_capacity(1 << 20);
    let mut last_record = Instant::now();
    let mut retries = 0;
    let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
    'poll: loop {
        if args.max_messages.is_some_and(|max| *printed >= max) {
            break;
        }
        if let Some(t) = args.timeout_ms {
            // Wait no longer than the idle time left, so the exit comes on time.
            let left = Duration::from_millis(t).saturating_sub(last_record.elapsed());
            options.max_wait_ms = (left.as_millis() as i32).clamp(1, 500);
        }
        if let Some(g) = group.as_mut() {
            g.heartbeat(client, &args.topic, positions).await?;
            at_end.retain(|p, _| positions.contains_key(p));
            if g.last_commit.elapsed() >= COMMIT_INTERVAL {
                let all: Vec<i32> = positions.keys().copied().collect();
                g.commit(&args.topic, positions, &all).await?;
            }
            // Heartbeats must not wait behind a long fetch.
            options.max_wait_ms = options.max_wait_ms.min(500);
        }
        if positions.is_empty() {
            // A member with nothing assigned (yet): wait for the next heartbeat.
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            let wanted: Vec<(i32, i64)> = positions.iter().map(|(&p, &o)| (p, o)).collect();
            let results = match client.fetch_many(&args.topic, &wanted, &options).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() && retries < 10 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot fetch from {}", args.topic))
                }
            };
            for (partition, result) in results {
                let fetched = match result {
                    Ok(f) => f,
                    Err(e) if e.kafka_error() == Some(ResponseError::OffsetOutOfRange) => {
                        let range = describe_range(client, &args.topic, partition).await;
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
                    if args.max_messages.is_some_and(|max| *printed >= max) {
                        break;
                    }
                    match format {
                        Some(f) => f.write(&mut out, &args.topic, partition, r),
                        None => json_line(&mut out, &args.topic, partition, r),
                    }
                    *printed += 1;
                    positions.insert(partition, r.offset + 1);
                }
                if !fetched.records.is_empty() {
                    last_record = Instant::now();
                }
                // Past the last printed record, skip what the batches said was consumed
                // (control batches, compacted gaps) unless --max-messages stopped us early.
                if args.max_messages.is_none_or(|max| *printed < max) {
                    positions.insert(partition, fetched.next_offset.max(positions[&partition]));
                }
                at_end.insert(partition, positions[&partition] >= fetched.high_watermark);
            }
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
        if args.end
            && !positions.is_empty()
            && at_end.len() == positions.len()
            && at_end.values().all(|&e| e)
        {
            break;
        }
        if args
            .timeout_ms
            .is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t))
        {
            break;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcat_offsets_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Earliest));
        assert_eq!(parse_start("end"), Ok(Start::Latest));
        assert_eq!(parse_start("stored"), Ok(Start::Stored));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert_eq!(parse_start("-10"), Ok(Start::FromEnd(10)));
        assert_eq!(
            parse_start("s@1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        for bad in ["begining", "s@", "s@x", "e@5", "1.5", ""] {
            let e = parse_start(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(parse_reset("earliest").unwrap(), Start::Earliest);
        assert!(parse_reset("42").is_err());
    }
}
