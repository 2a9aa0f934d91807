//! `runnel produce`: stdin lines to records, batched per partition, several requests in
//! flight, a summary on stderr.

use super::{acks_name, human_bytes, parse_acks, parse_compression, ConnArgs, UsageError};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use runnel_client::records::{encode_batch, partition_for_key};
use runnel_client::{
    Client, ClientConfig, Compression, ProduceOptions, ProducerIdentity, ProducerRecord,
};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to.
    #[arg(short, long)]
    pub topic: String,
    /// Split each line at the first SEP into key and value (a line without SEP is an error).
    #[arg(short = 'K', long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header for every record: KEY=VALUE, or KEY alone for a null value (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every record to this partition (default: by key hash, as Kafka's Java
    /// producer does, and unkeyed records to one partition per batch in turn).
    #[arg(short, long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Acknowledgements: 0 (none), 1 (leader), all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Compression codec: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Use an idempotent producer id and sequence numbers (as Kafka producers do by default).
    #[arg(long)]
    pub idempotent: bool,
    /// Most records in one batch.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_records: u32,
    /// Most payload bytes in one batch.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_bytes: u32,
    /// How long to wait for more lines before sending a partial batch.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Most produce requests awaiting an answer at once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_in_flight: u32,
    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Parses `--header` values.
fn parse_headers(raw: &[String]) -> Result<Vec<(String, Option<Bytes>)>, UsageError> {
    raw.iter()
        .map(|h| match h.split_once('=') {
            Some((k, _)) if k.is_empty() => {
                Err(UsageError(format!("--header {h:?} has an empty key")))
            }
            Some((k, v)) => Ok((k.to_string(), Some(Bytes::copy_from_slice(v.as_bytes())))),
            None if h.is_empty() => Err(UsageError("--header needs KEY=VALUE".into())),
            None => Ok((h.clone(), None)),
        })
        .collect()
}

/// Turns one input line into a record.
fn line_to_record(
    line: Vec<u8>,
    number: u64,
    separator: Option<&[u8]>,
    headers: &[(String, Option<Bytes>)],
) -> anyhow::Result<ProducerRecord> {
    let (key, value) = match separator {
        None => (None, Bytes::from(line)),
        Some(sep) => {
            let Some(at) = line.windows(sep.len()).position(|w| w == sep) else {
                bail!(
                    "line {number} has no key separator {:?}; every line must be KEY{}VALUE",
                    String::from_utf8_lossy(sep),
                    String::from_utf8_lossy(sep)
                );
            };
            let line = Bytes::from(line);
            (Some(line.slice(..at)), line.slice(at + sep.len()..))
        }
    };
    Ok(ProducerRecord {
        key,
        value: Some(value),
        headers: headers.to_vec(),
        timestamp_ms: None,
    })
}

/// Reads stdin on a plain thread (stdin has no async reader here) and sends lines without
/// their line ending. Stops when the receiver is gone.
fn spawn_stdin_reader(tx: mpsc::Sender<std::io::Result<Vec<u8>>>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
}

/// Records waiting to be sent, per partition.
struct Pending {
    records: Vec<ProducerRecord>,
    bytes: usize,
}

struct Producer {
    client: Client,
    topic: String,
    options: ProduceOptions,
    identity: Option<ProducerIdentity>,
    /// Next sequence number per partition (idempotent only).
    sequences: HashMap<i32, i32>,
    in_flight: JoinSet<(i32, usize, runnel_client::Result<runnel_client::ProduceAck>)>,
    max_in_flight: usize,
    acked_records: u64,
    /// First and last acknowledged offset per partition.
    offsets: BTreeMap<i32, (i64, i64)>,
}

impl Producer {
    async fn send(&mut self, partition: i32, records: Vec<ProducerRecord>) -> anyhow::Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.reap_one().await?;
        }
        let identity = self.identity.map(|id| {
            let seq = self.sequences.entry(partition).or_insert(0);
            let base_sequence = *seq;
            *seq = seq.wrapping_add(records.len() as i32) & i32::MAX;
            ProducerIdentity {
                base_sequence,
                ..id
            }
        });
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let batch = encode_batch(&records, self.options.compression, identity, now_ms as i64)?;
        let (client, topic, options, n) = (
            self.client.clone(),
            self.topic.clone(),
            self.options,
            records.len(),
        );
        self.in_flight.spawn(async move {
            (
                partition,
                n,
                client
                    .produce_batch(&topic, partition, batch, &options)
                    .await,
            )
        });
        Ok(())
    }

    async fn reap_one(&mut self) -> anyhow::Result<()> {
        let Some(joined) = self.in_flight.join_next().await else {
            return Ok(());
        };
        let (partition, n, result) = joined.context("a produce task failed")?;
        let ack = result.with_context(|| {
            format!(
                "cannot produce to {}/{partition} ({} records acknowledged before this failure)",
                self.topic, self.acked_records
            )
        })?;
        self.acked_records += n as u64;
        if let Some(base) = ack.base_offset {
            let last = base + n as i64 - 1;
            let entry = self.offsets.entry(partition).or_insert((base, last));
            entry.0 = entry.0.min(base);
            entry.1 = entry.1.max(last);
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        Ok(())
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let headers = parse_headers(&args.headers)?;
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    if separator == Some(b"") {
        return Err(UsageError("--key-separator must not be empty".into()).into());
    }
    let config = ClientConfig {
        allow_auto_create_topics: true,
        ..ClientConfig::default()
    };
    let client = args.conn.connect(config).await?;
    let topic = client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot produce to topic {}", args.topic))?;
    let partitions = topic.partitions.len();
    if let Some(p) = args.partition {
        if p as usize >= partitions {
            bail!(
                "topic {} has {partitions} partition(s), so --partition {p} does not exist",
                args.topic
            );
        }
    }
    let identity = if args.idempotent {
        Some(client.init_producer_id().await?)
    } else {
        None
    };
    let mut producer = Producer {
        client,
        topic: args.topic.clone(),
        options: ProduceOptions {
            acks: args.acks,
            timeout_ms: 30_000,
            compression: args.compression,
        },
        identity,
        sequences: HashMap::new(),
        in_flight: JoinSet::new(),
        max_in_flight: args.max_in_flight as usize,
        acked_records: 0,
        offsets: BTreeMap::new(),
    };

    let (tx, mut rx) = mpsc::channel(8192);
    spawn_stdin_reader(tx);
    let start = Instant::now();
    let linger = Duration::from_millis(args.linger_ms);
    let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
    let mut sticky = 0i32;
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            None => rx.recv().await,
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    // Linger expired: send everything that waits.
                    for (p, batch) in std::mem::take(&mut pending) {
                        producer.send(p, batch.records).await?;
                    }
                    sticky = (sticky + 1) % partitions as i32;
                    deadline = None;
                    continue;
                }
            },
        };
        let Some(line) = next else { break };
        let line = line.context("cannot read stdin")?;
        lines += 1;
        let record = line_to_record(line, lines, separator, &headers)?;
        bytes += record.payload_bytes() as u64;
        let partition = match (args.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => sticky,
        };
        let batch = pending.entry(partition).or_insert_with(|| Pending {
            records: Vec::new(),
            bytes: 0,
        });
        batch.bytes += record.payload_bytes();
        batch.records.push(record);
        if batch.records.len() >= args.batch_records as usize
            || batch.bytes >= args.batch_bytes as usize
        {
            let batch = pending.remove(&partition).expect("just filled");
            producer.send(partition, batch.records).await?;
            if args.partition.is_none() {
                sticky = (sticky + 1) % partitions as i32;
            }
        }
        if deadline.is_none() && !pending.is_empty() {
            deadline = Some(tokio::time::Instant::now() + linger);
        } else if pending.is_empty() {
            deadline = None;
        }
    }
    for (p, batch) in std::mem::take(&mut pending) {
        producer.send(p, batch.records).await?;
    }
    producer.finish().await?;
    if !args.quiet {
        let elapsed = start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            lines as f64 / elapsed
        } else {
            0.0
        };
        let what = if args.acks == 0 {
            "sent (acks=0: not confirmed)"
        } else {
            "produced"
        };
        let mut offsets: Vec<String> = producer
            .offsets
            .iter()
            .map(|(p, (a, b))| format!("{p}:{a}..{b}"))
            .collect();
        if offsets.len() > 8 {
            let n = offsets.len();
            offsets.truncate(8);
            offsets.push(format!("... ({n} partitions)"));
        }
        let offsets = if offsets.is_empty() {
            String::new()
        } else {
            format!(", offsets {}", offsets.join(" "))
        };
        errln!(
            "{what} {lines} records ({}) to {} in {elapsed:.3} s ({rate:.0} records/s, acks={}){offsets}",
            human_bytes(bytes),
            args.topic,
            acks_name(args.acks),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_with_null_values() {
        let h = parse_headers(&["a=1".into(), "b".into(), "c=".into(), "d=x=y".into()]).unwrap();
        assert_eq!(h[0], ("a".into(), Some(Bytes::from("1"))));
        assert_eq!(h[1], ("b".into(), None));
        assert_eq!(h[2], ("c".into(), Some(Bytes::new())));
        assert_eq!(h[3], ("d".into(), Some(Bytes::from("x=y"))));
        assert!(parse_headers(&["=1".into()]).is_err());
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        let r = line_to_record(b"k::v::w".to_vec(), 1, Some(b"::"), &[]).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v::w"[..]));
        let r = line_to_record(b"plain".to_vec(), 1, None, &[]).unwrap();
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"plain"[..])));
        let err = line_to_record(b"nokey".to_vec(), 7, Some(b"\t"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 7"), "{err}");
    }
}
