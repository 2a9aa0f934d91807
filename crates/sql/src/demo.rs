//! `runnel demo tweets`: produce generated (or file) tweets to a topic with rdkafka.

use crate::error::{Result, SqlError};
use crate::sink::BoundedSender;
use crate::tweets::{Generator, GeneratorConfig};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the producer may wait for the first broker answer before the demo fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which field keys each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBy {
    None,
    Id,
    User,
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub bootstrap: String,
    pub topic: String,
    /// Tweets per second of wall-clock time; 0 = as fast as possible.
    pub rate: u64,
    /// Stop after this many tweets (None: run until interrupted).
    pub count: Option<u64>,
    pub key: KeyBy,
    pub from_file: Option<PathBuf>,
    pub generator: GeneratorConfig,
    /// Extra producer settings.
    pub producer: Vec<(String, String)>,
    /// Print a line (tweets sent, rate) to stderr this often; None: quiet.
    pub progress_every: Option<Duration>,
    /// Set to stop producing: what was sent is flushed and summed up.
    pub stop: Arc<AtomicBool>,
}

/// Prints how many tweets were sent, and the rate since the last line, every `every`.
/// Not thread-safe: the producing task owns it.
struct ProgressLines<'a> {
    topic: &'a str,
    every: Option<Duration>,
    last: Instant,
    last_sent: u64,
}

impl ProgressLines<'_> {
    fn tick(&mut self, sent: u64) {
        let Some(every) = self.every else { return };
        let dt = self.last.elapsed();
        if dt < every {
            return;
        }
        eprintln!(
            "runnel demo tweets: {sent} sent to {} ({:.0}/s)",
            self.topic,
            (sent - self.last_sent) as f64 / dt.as_secs_f64()
        );
        self.last = Instant::now();
        self.last_sent = sent;
    }
}

/// What was sent.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    pub sent: u64,
    pub elapsed: Duration,
}

/// Produces tweets until `count` is reached (or forever). Deterministic content for a
/// given seed and start time, whatever the rate.
pub async fn produce_tweets(opts: &DemoOptions) -> Result<DemoSummary> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("log_level", "3");
    for (k, v) in &opts.producer {
        cfg.set(k, v);
    }
    let producer: FutureProducer = cfg.create()?;
    // A wrong address fails here, not after librdkafka's 5-minute delivery timeout.
    rdkafka::producer::Producer::client(&producer)
        .fetch_metadata(None, CONNECT_TIMEOUT)
        .map_err(|e| {
            SqlError::Broker(format!(
                "no Kafka broker answered at {} (--bootstrap-server) within {} s: {e}",
                opts.bootstrap,
                CONNECT_TIMEOUT.as_secs()
            ))
        })?;
    let mut sender = BoundedSender::new(50_000);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut progress = ProgressLines {
        topic: &opts.topic,
        every: opts.progress_every,
        last: started,
        last_sent: 0,
    };
    let stopped = || opts.stop.load(Ordering::Relaxed);
    let pace = |sent: u64| async move {
        if opts.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / opts.rate as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
    };
    if let Some(path) = &opts.from_file {
        let f =
            std::fs::File::open(path).map_err(|e| SqlError::io(path.display().to_string(), e))?;
        for line in std::io::BufReader::new(f).lines() {
            if opts.count.is_some_and(|c| sent >= c) || stopped() {
                break;
            }
            let line = line.map_err(|e| SqlError::io(path.display().to_string(), e))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a line that is not JSON");
                    continue;
                }
            };
            let key = match opts.key {
                KeyBy::None => None,
                KeyBy::Id => v["id_str"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| v["id"].as_u64().map(|i| i.to_string())),
                KeyBy::User => v["user"]["id_str"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| v["user"]["id"].as_u64().map(|i| i.to_string())),
            };
            let ts = v["timestamp_ms"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or_else(|| v["timestamp_ms"].as_i64());
            pace(sent).await;
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&opts.topic).payload(line.as_bytes());
            if let Some(k) = &key {
                rec = rec.key(k.as_bytes());
            }
            if let Some(ts) = ts {
                rec = rec.timestamp(ts);
            }
            sender.send(&producer, rec).await?;
            sent += 1;
            progress.tick(sent);
        }
    } else {
        let mut g = Generator::new(opts.generator.clone());
        let mut i = 0u64;
        loop {
            if opts.count.is_some_and(|c| i >= c) || stopped() {
                break;
            }
            let t = g.tweet(i);
            let json = g.to_json(&t).to_string();
            let key = match opts.key {
                KeyBy::None => None,
                KeyBy::Id => Some(t.id.to_string()),
                KeyBy::User => Some(g.users()[t.user].id.to_string()),
            };
            pace(sent).await;
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&opts.topic)
                .payload(json.as_bytes())
                .timestamp(t.timestamp_ms);
            if let Some(k) = &key {
                rec = rec.key(k.as_bytes());
            }
            sender.send(&producer, rec).await?;
            sent += 1;
            progress.tick(sent);
            i += 1;
        }
    }
    sender.finish().await?;
    Ok(DemoSummary {
        sent,
        elapsed: started.elapsed(),
    })
}

/// Writes `count` generated tweets as JSON lines (for `--from-file` and benchmarks).
pub fn write_tweets_file(
    path: &std::path::Path,
    config: &GeneratorConfig,
    count: u64,
) -> Result<()> {
    use std::io::Write;
    let f = std::fs::File::create(path).map_err(|e| SqlError::io(path.display().to_string(), e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut g = Generator::new(config.clone());
    for i in 0..count {
        let t = g.tweet(i);
        serde_json::to_writer(&mut w, &g.to_json(&t))
            .map_err(|e| SqlError::Query(e.to_string()))?;
        w.write_all(b"\n")
            .map_err(|e| SqlError::io(path.display().to_string(), e))?;
    }
    w.flush()
        .map_err(|e| SqlError::io(path.display().to_string(), e))
}
