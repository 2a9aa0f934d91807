//! End to end: generator -> topic (an in-process Runnel broker) -> query -> sink, checked
//! against answers computed independently from the same seed.

use runnel_sql::demo::{produce_tweets, DemoOptions, KeyBy};
use runnel_sql::tweets::{Generator, GeneratorConfig};
use runnel_sql::{OutputMode, QueryOptions, Script, StreamingQuery};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const START_MS: i64 = 1_700_000_000_000;

struct Broker {
    addr: String,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let config = runnel_broker::BrokerConfig::from_pairs(&[
        ("listeners".into(), "PLAINTEXT://127.0.0.1:0".into()),
        ("log.dirs".into(), dir.path().display().to_string()),
        ("num.partitions".into(), "3".into()),
    ])
    .unwrap();
    let server = runnel_broker::Server::start(config).await.unwrap();
    let addr = server.local_addr().to_string();
    tokio::spawn(server.run(std::future::pending()));
    Broker { addr, _dir: dir }
}

/// No late tweets and jitter well under the 30 s watermark delay: answers do not depend
/// on how rows fall into batches.
fn orderly(seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        start_ms: START_MS,
        events_per_second: 20,
        max_jitter_ms: 2_000,
        very_late_every: 0,
        ..GeneratorConfig::default()
    }
}

async fn produce(broker: &Broker, topic: &str, config: &GeneratorConfig, count: u64) {
    let opts = DemoOptions {
        bootstrap: broker.addr.clone(),
        topic: topic.to_string(),
        rate: 0,
        count: Some(count),
        key: KeyBy::Id,
        from_file: None,
        generator: config.clone(),
        producer: vec![],
        progress_every: None,
        stop: Default::default(),
    };
    let s = produce_tweets(&opts).await.unwrap();
    assert_eq!(s.sent, count);
}

/// An example query file with its sink declaration replaced.
fn example_with_sink(file: &str, sink: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/tweets")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("CREATE TEMPORARY VIEW out USING")
        .expect("example declares a sink 'out'");
    let end = start + text[start..].find(';').unwrap() + 1;
    format!("{}{}{}", &text[..start], sink, &text[end..])
}

fn defines(broker: &Broker, topic: &str) -> BTreeMap<String, String> {
    [
        ("bootstrap", broker.addr.as_str()),
        ("topic", topic),
        ("startingOffsets", "earliest"),
        ("endingOffsets", "latest"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Spark's availableNow trigger: what is there, then stop.
fn available_now() -> QueryOptions {
    QueryOptions {
        trigger: Some(runnel_sql::Trigger::AvailableNow),
        ..Default::default()
    }
}

async fn run_script(
    text: &str,
    defines: &BTreeMap<String, String>,
    options: QueryOptions,
) -> StreamingQuery {
    let script = Script::parse(text, defines).unwrap();
    let mut q = StreamingQuery::from_script(&script, options).await.unwrap();
    q.run().await.unwrap();
    q
}

/// The string column `col` of `rows`, sorted.
fn sorted_strings(rows: &[serde_json::Map<String, serde_json::Value>], col: &str) -> Vec<String> {
    let mut got: Vec<String> = rows
        .iter()
        .map(|r| r[col].as_str().unwrap().to_string())
        .collect();
    got.sort();
    got
}

fn memory_rows(q: &StreamingQuery) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let (_, table) = q.memory_table().expect("memory sink");
    let (_, batches) = table.snapshot();
    let mut buf = Vec::new();
    {
        let mut w = runnel_sql::datafusion::arrow::json::ArrayWriter::new(&mut buf);
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    if buf.is_empty() {
        return vec![];
    }
    serde_json::from_slice(&buf).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_query_returns_every_tweet() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = orderly(1);
        produce(&broker, "tweets1", &cfg, 1500).await;
        let text = example_with_sink(
            "select.sql",
            "CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'rows');",
        );
        let q = run_script(&text, &defines(&broker, "tweets1"), QueryOptions::default()).await;
        let rows = memory_rows(&q);
        let mut g = Generator::new(cfg);
        let expected: BTreeMap<i64, (String, String)> = (0..1500)
            .map(|i| {
                let t = g.tweet(i);
                (
                    t.id as i64,
                    (g.users()[t.user].name.clone(), t.text.clone()),
                )
            })
            .collect();
        assert_eq!(rows.len(), 1500);
        let got: BTreeMap<i64, (String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    (
                        r["name"].as_str().unwrap().to_string(),
                        r["text"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect();
        assert_eq!(got, expected);
        let p = q.progress_log().last().unwrap();
        assert!(p.sources[0].description.contains("tweets1"));
    })
    .await
    .expect("test timed out");
}

/// Exact (window start, hashtag) -> count from the generator.
fn expected_trending(cfg: &GeneratorConfig, n: u64) -> (HashMap<(i64, String), i64>, i64) {
    let mut g = Generator::new(cfg.clone());
    let mut m = HashMap::new();
    let mut max_ts = i64::MIN;
    for i in 0..n {
        let t = g.tweet(i);
        max_ts = max_ts.max(t.timestamp_ms);
        for h in &t.hashtags {
            *m.entry((
                t.timestamp_ms - t.timestamp_ms.rem_euclid(60_000),
                h.to_lowercase(),
            ))
            .or_insert(0) += 1;
        }
    }
    (m, max_ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trending_hashtags_update_mode_matches_generator() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = orderly(2);
        produce(&broker, "tweets2", &cfg, 4000).await;
        let ck = tempfile::tempdir().unwrap();
        let text = example_with_sink(
            "trending.sql",
            &format!("CREATE TEMPORARY VIEW out USING memory OPTIONS (outputMode 'update', checkpointLocation '{}');", ck.path().display()),
        );
        let mut d = defines(&broker, "tweets2");
        d.insert("maxOffsetsPerTrigger".into(), "700".into());
        let q = run_script(&text, &d, QueryOptions::default()).await;
        let (expected, _) = expected_trending(&cfg, 4000);
        // Update mode: the last row per key is the final count.
        let mut got: HashMap<(i64, String), i64> = HashMap::new();
        for r in memory_rows(&q) {
            let v: serde_json::Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            let start = v["window_start"].as_str().unwrap().to_string();
            let key = (parse_ts(&start), v["hashtag"].as_str().unwrap().to_string());
            assert_eq!(r["key"].as_str().unwrap(), key.1);
            got.insert(key, v["tweets"].as_i64().unwrap());
        }
        assert_counts_eq(&got, &expected);
        let progress = q.progress_log().recent();
        assert!(progress.len() >= 6, "maxOffsetsPerTrigger should split the input");
        assert!(progress.iter().all(|p| p.state_operators.len() == 1));
        assert!(progress.iter().any(|p| p.event_time.contains_key("watermark")));
    })
    .await
    .expect("test timed out");
}

/// Asserts two (window start, hashtag) -> count maps are equal, listing the differences.
fn assert_counts_eq(got: &HashMap<(i64, String), i64>, expected: &HashMap<(i64, String), i64>) {
    let mut diffs: Vec<String> = Vec::new();
    let keys: BTreeSet<&(i64, String)> = got.keys().chain(expected.keys()).collect();
    for k in keys {
        if got.get(k) != expected.get(k) {
            diffs.push(format!(
                "{k:?}: got {:?}, expected {:?}",
                got.get(k),
                expected.get(k)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} keys differ:\n{}",
        diffs.len(),
        expected.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `2023-11-14T22:13:00` or `2023-11-14 22:13:00` (seconds precision) to epoch ms.
fn parse_ts(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, mo, d, h, mi, se) = (n(0, 4), n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19));
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + h * 3600 + mi * 60 + se) * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trending_append_mode_to_json_files_emits_each_closed_window_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = orderly(3);
        produce(&broker, "tweets3", &cfg, 3000).await;
        let out = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let text = example_with_sink(
            "trending.sql",
            &format!(
                "CREATE TEMPORARY VIEW out USING json OPTIONS (path '{}', checkpointLocation '{}');",
                out.path().display(),
                ck.path().display()
            ),
        );
        let mut d = defines(&broker, "tweets3");
        d.insert("maxOffsetsPerTrigger".into(), "400".into());
        let opts = QueryOptions { output_mode: Some(OutputMode::Append), ..Default::default() };
        run_script(&text, &d, opts).await;
        let (expected, max_ts) = expected_trending(&cfg, 3000);
        let watermark = max_ts - 30_000;
        let expected: HashMap<(i64, String), i64> =
            expected.into_iter().filter(|((start, _), _)| start + 60_000 <= watermark).collect();
        let mut got: HashMap<(i64, String), i64> = HashMap::new();
        for f in runnel_sql::sink::committed_files(out.path()).unwrap() {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                let r: serde_json::Value = serde_json::from_str(line).unwrap();
                let v: serde_json::Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
                let key = (parse_ts(v["window_start"].as_str().unwrap()), v["hashtag"].as_str().unwrap().to_string());
                assert!(got.insert(key.clone(), v["tweets"].as_i64().unwrap()).is_none(), "{key:?} emitted twice");
            }
        }
        assert!(!expected.is_empty());
        assert_counts_eq(&got, &expected);
    })
    .await
    .expect("test timed out");
}

fn expected_languages(cfg: &GeneratorConfig, n: u64) -> BTreeMap<String, (i64, i64)> {
    let mut g = Generator::new(cfg.clone());
    let mut counts: BTreeMap<String, (i64, BTreeSet<u64>)> = BTreeMap::new();
    for i in 0..n {
        let t = g.tweet(i);
        let e = counts.entry(t.lang.to_string()).or_default();
        e.0 += 1;
        e.1.insert(g.users()[t.user].id);
    }
    counts
        .into_iter()
        .map(|(k, (c, u))| (k, (c, u.len() as i64)))
        .collect()
}

fn check_languages(
    rows: &[serde_json::Map<String, serde_json::Value>],
    expected: &BTreeMap<String, (i64, i64)>,
) {
    assert_eq!(rows.len(), expected.len());
    let mut prev = i64::MAX;
    for r in rows {
        let lang = r["lang"].as_str().unwrap();
        let n = r["tweets"].as_i64().unwrap();
        assert!(n <= prev, "rows are sorted by count, descending");
        prev = n;
        let (count, users) = expected[lang];
        assert_eq!(n, count, "{lang}");
        let approx = r["users"].as_i64().unwrap();
        assert!(
            (approx - users).abs() as f64 <= 0.15 * users as f64 + 2.0,
            "{lang}: {approx} vs {users}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn languages_complete_mode_counts_everything_including_late_tweets() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        // The default generator includes very late tweets: complete mode keeps them.
        let cfg = GeneratorConfig {
            seed: 4,
            start_ms: START_MS,
            ..GeneratorConfig::default()
        };
        produce(&broker, "tweets4", &cfg, 3000).await;
        let text = example_with_sink(
            "languages.sql",
            "CREATE TEMPORARY VIEW out USING memory OPTIONS (outputMode 'complete');",
        );
        let mut d = defines(&broker, "tweets4");
        d.insert("maxOffsetsPerTrigger".into(), "1000".into());
        d.insert("trigger".into(), "default".into());
        let q = run_script(&text, &d, QueryOptions::default()).await;
        check_languages(&memory_rows(&q), &expected_languages(&cfg, 3000));
    })
    .await
    .expect("test timed out");
}

fn read_parquet_ids(dir: &Path) -> (Vec<i64>, BTreeSet<String>) {
    use runnel_sql::datafusion::arrow::array::AsArray;
    use runnel_sql::datafusion::arrow::datatypes::Int64Type;
    use runnel_sql::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut ids = Vec::new();
    let mut hours = BTreeSet::new();
    for f in runnel_sql::sink::committed_files(dir).unwrap() {
        let hour = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        hours.insert(hour);
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let col = b
                .column(b.schema().index_of("id").unwrap())
                .as_primitive::<Int64Type>()
                .clone();
            ids.extend(col.values().iter().copied());
        }
    }
    (ids, hours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_by_hour_survives_kill_and_restart_without_loss_or_duplicates() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        // 5 tweets per event-second over ~2.2 hours: several hour partitions.
        let cfg = GeneratorConfig { seed: 5, start_ms: START_MS, events_per_second: 1, ..orderly(5) };
        produce(&broker, "tweets5", &cfg, 8000).await;
        let out = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let sink = format!(
            "CREATE TEMPORARY VIEW out USING parquet OPTIONS (path '{}', partitionBy 'hour', checkpointLocation '{}');",
            out.path().display(),
            ck.path().display()
        );
        let text = example_with_sink("parquet.sql", &sink);
        let mut d = defines(&broker, "tweets5");
        d.insert("maxOffsetsPerTrigger".into(), "1000".into());
        // First run: three batches, then "killed".
        run_script(&text, &d, QueryOptions { max_batches: Some(3), ..Default::default() }).await;
        // Simulate a crash after batch 2's output was written but before its commit.
        std::fs::remove_file(ck.path().join("commits/2")).unwrap();
        let (partial, _) = read_parquet_ids(out.path());
        assert!(!partial.is_empty() && partial.len() <= 3000, "{}", partial.len());
        // Restart with the same checkpoint: batch 2 is re-run (its files already
        // committed in the sink's log, so not written twice), then the rest.
        let q = run_script(&text, &d, QueryOptions::default()).await;
        assert_eq!(q.progress_log().recent().first().unwrap().batch_id, 2);
        let (mut ids, hours) = read_parquet_ids(out.path());
        let mut g = Generator::new(cfg.clone());
        let mut expected: Vec<i64> = (0..8000).map(|i| g.tweet(i).id as i64).collect();
        ids.sort_unstable();
        expected.sort_unstable();
        assert_eq!(ids.len(), expected.len(), "no loss, no duplicates");
        assert_eq!(ids, expected);
        assert!(hours.len() >= 3, "{hours:?}");
        assert!(hours.iter().all(|h| h.starts_with("hour=2023-11-")), "{hours:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_query_restarts_from_checkpoint_with_its_state() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = GeneratorConfig { seed: 6, start_ms: START_MS, ..GeneratorConfig::default() };
        produce(&broker, "tweets6", &cfg, 3000).await;
        let ck = tempfile::tempdir().unwrap();
        let text = example_with_sink(
            "languages.sql",
            &format!("CREATE TEMPORARY VIEW out USING memory OPTIONS (outputMode 'complete', checkpointLocation '{}');", ck.path().display()),
        );
        let mut d = defines(&broker, "tweets6");
        d.insert("maxOffsetsPerTrigger".into(), "500".into());
        d.insert("trigger".into(), "default".into());
        run_script(&text, &d, QueryOptions { max_batches: Some(2), ..Default::default() }).await;
        // Crash before batch 1's commit: restart re-runs batch 1 on the state of batch 0.
        std::fs::remove_file(ck.path().join("commits/1")).unwrap();
        let q = run_script(&text, &d, QueryOptions::default()).await;
        check_languages(&memory_rows(&q), &expected_languages(&cfg, 3000));
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_is_exactly_once_with_transactions() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = orderly(7);
        produce(&broker, "tweets7", &cfg, 3000).await;
        let ck = tempfile::tempdir().unwrap();
        let text = example_with_sink(
            "trending.sql",
            &format!(
                "CREATE TEMPORARY VIEW out USING kafka OPTIONS (kafka.bootstrap.servers '{}', topic 'trending7', exactlyOnce 'true', checkpointLocation '{}');",
                broker.addr,
                ck.path().display()
            ),
        );
        let mut d = defines(&broker, "tweets7");
        d.insert("maxOffsetsPerTrigger".into(), "500".into());
        let append = QueryOptions { output_mode: Some(OutputMode::Append), ..Default::default() };
        // Four batches of ~25 s of event time: batch 3 is the first to close a window.
        let first = run_script(&text, &d, QueryOptions { max_batches: Some(4), ..append.clone() }).await;
        let last = first.progress_log().recent().last().unwrap().clone();
        assert_eq!(last.batch_id, 3);
        assert!(last.sink.num_output_rows > 0, "batch 3 wrote rows to Kafka");
        // A crash after batch 3's Kafka transaction committed, before its commit log entry:
        // the restarted query re-runs batch 3 and must not write its rows again.
        std::fs::remove_file(ck.path().join("commits/3")).unwrap();
        let second = run_script(&text, &d, append).await;
        let replayed = second.progress_log().recent().first().unwrap().clone();
        assert_eq!(replayed.batch_id, 3);
        assert_eq!(replayed.sink.num_output_rows, 0, "batch 3 was already committed");
        let (expected, max_ts) = expected_trending(&cfg, 3000);
        let expected: HashMap<(i64, String), i64> =
            expected.into_iter().filter(|((s, _), _)| s + 60_000 <= max_ts - 30_000).collect();
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("isolation.level", "read_committed")
            .set("group.id", "e2e-check-trending7")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = consumer.fetch_metadata(Some("trending7"), Duration::from_secs(5)).unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset("trending7", p.id(), rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut got = HashMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while got.len() < expected.len() && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                let key = (parse_ts(v["window_start"].as_str().unwrap()), v["hashtag"].as_str().unwrap().to_string());
                assert!(got.insert(key, v["tweets"].as_i64().unwrap()).is_none(), "duplicate output");
            }
        }
        assert_eq!(got, expected);
    })
    .await
    .expect("test timed out");
}

/// A tiny deterministic generator (splitmix64) for the join tests' events.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// (key, value, timestamp) records to `topic`, in order.
/// A producer that keeps each partition's order through retries.
fn idempotent_producer(broker: &Broker) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .create()
        .unwrap()
}

async fn produce_records(broker: &Broker, topic: &str, records: &[(String, String, i64)]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "5")
        // Keeps order within a partition even when a request is retried (the topic is
        // created by the first request).
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for (k, v, ts) in records {
        let rec = FutureRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_bytes())
            .timestamp(*ts);
        pending.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stream_join_with_watermarks_and_time_bound_matches_independent_answer() {
    check_ad_clicks_join(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stream_left_outer_join_writes_unmatched_rows_when_the_watermark_passes() {
    check_ad_clicks_join(true).await;
}

/// `examples/joins/ad_clicks.sql` (as a LEFT JOIN if `outer`) against generated
/// impressions and clicks, checked against the answer computed here.
async fn check_ad_clicks_join(outer: bool) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        // 1200 impressions, one every 500 ms over 25 ads; about half are clicked 0-90 s
        // later (clicks after 60 s fall outside the bound), some twice. Keyed by ad, so a
        // partition's event time advances unevenly (a few ads each): read in step by
        // offsets, partitions drift apart by up to ~40 s of event time, which the 90 s
        // watermark delay covers (no row but the very late ones is late).
        let mut rng = Rng(11);
        let mut imps = Vec::new();
        let mut clicks = Vec::new();
        for i in 0..1200i64 {
            let ad = format!("ad{}", rng.next() % 25);
            let t = START_MS + i * 500;
            imps.push((ad.clone(), format!("imp{i}"), t));
            for k in 0..(rng.next() % 4).saturating_sub(1) {
                let delay = (rng.next() % 90_000) as i64;
                clicks.push((ad.clone(), format!("click{i}-{k}"), t + delay));
            }
        }
        clicks.sort_by_key(|c| c.2);
        // Very late clicks (event time near the start, sent last): the watermark has long
        // passed them, so they are dropped although impressions of their ad were in range.
        let late: Vec<(String, String, i64)> = (0..5)
            .map(|k| (imps[2].0.clone(), format!("late{k}"), imps[2].2 + 1_000 + k))
            .collect();
        clicks.extend(late.iter().cloned());
        produce_records(&broker, "impressions", &imps).await;
        produce_records(&broker, "clicks", &clicks).await;
        // The answer: every (impression, click) of one ad with the click within a
        // minute after the impression, late clicks excepted.
        let mut expected: Vec<(String, String)> = Vec::new();
        for (ad, imp, it) in &imps {
            for (cad, click, ct) in &clicks[..clicks.len() - late.len()] {
                if ad == cad && *ct >= *it && *ct <= it + 60_000 {
                    expected.push((imp.clone(), click.clone()));
                }
            }
        }
        assert!(expected.len() > 200, "{}", expected.len());
        if outer {
            // Impressions that never matched, once the watermark is a minute past them:
            // the final watermark is the smaller of the two sides' (max - 90 s).
            let max = |v: &[(String, String, i64)]| v.iter().map(|r| r.2).max().unwrap();
            let watermark = (max(&imps) - 90_000).min(max(&clicks) - 90_000);
            let matched: BTreeSet<&String> = expected.iter().map(|(i, _)| i).collect();
            let unmatched: Vec<(String, String)> = imps
                .iter()
                .filter(|(_, imp, it)| !matched.contains(imp) && it + 60_000 <= watermark)
                .map(|(_, imp, _)| (imp.clone(), "-".to_string()))
                .collect();
            assert!(unmatched.len() > 20, "{}", unmatched.len());
            expected.extend(unmatched);
        }
        expected.sort();
        let ck = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/joins/ad_clicks.sql"),
        )
        .unwrap();
        let text = if outer { text.replace("\nJOIN clicks", "\nLEFT JOIN clicks") } else { text };
        let text = text.replace(
            "CREATE TEMPORARY VIEW out USING console OPTIONS (truncate 'false');",
            &format!("CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'joined', checkpointLocation '{}');", ck.path().display()),
        );
        let mut d = defines(&broker, "unused");
        d.insert("maxOffsetsPerTrigger".into(), "120".into());
        d.insert("delay".into(), "90 SECONDS".into());
        // Two runs: a restart in the middle must bring the join state back.
        let first = run_script(&text, &d, QueryOptions { max_batches: Some(4), ..Default::default() }).await;
        let pair = |r: &serde_json::Map<String, serde_json::Value>| {
            let click = r.get("click_id").and_then(|c| c.as_str()).unwrap_or("-");
            (r["imp_id"].as_str().unwrap().to_string(), click.to_string())
        };
        let mut got: Vec<(String, String)> = memory_rows(&first).iter().map(pair).collect();
        let mut progress = first.progress_log().recent();
        let q = run_script(&text, &d, QueryOptions::default()).await;
        got.extend(memory_rows(&q).iter().map(pair));
        progress.extend(q.progress_log().recent());
        got.sort();
        assert_eq!(got.len(), expected.len(), "each pair once");
        assert_eq!(got, expected);
        let ops: Vec<_> = progress.iter().map(|p| p.state_operators[0].clone()).collect();
        assert!(ops.iter().all(|o| o.operator_name == "symmetricHashJoin"));
        let dropped: u64 = ops.iter().map(|o| o.num_rows_dropped_by_watermark).sum();
        assert_eq!(dropped, late.len() as u64, "the late clicks are dropped");
        let removed: u64 = ops.iter().map(|o| o.num_rows_removed).sum();
        let total_in = (imps.len() + clicks.len()) as u64;
        let peak = ops.iter().map(|o| o.num_rows_total).max().unwrap();
        assert!(removed > total_in / 2, "state is evicted: {removed} of {total_in}");
        assert!(peak < total_in / 2, "state stays bounded: peak {peak} of {total_in}");
        assert!(progress.iter().any(|p| p.event_time.contains_key("watermark")));
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_merge_across_batches_and_close_with_the_watermark() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        // 40 users, 2 tweets per event-second: a user tweets every ~20 s on average, so
        // sessions (30 s gap) hold a few tweets and span several batches.
        let cfg = GeneratorConfig {
            num_users: 40,
            events_per_second: 2,
            ..orderly(8)
        };
        produce(&broker, "tweets8", &cfg, 3000).await;
        let text = example_with_sink(
            "sessions.sql",
            "CREATE TEMPORARY VIEW out USING memory OPTIONS (outputMode 'append');",
        );
        let mut d = defines(&broker, "tweets8");
        d.insert("maxOffsetsPerTrigger".into(), "150".into());
        // The file's defaults (5 s gap, 2 s delay) suit the demo's 2,000 tweets/s.
        d.insert("gap".into(), "30 seconds".into());
        d.insert("delay".into(), "30 SECONDS".into());
        let q = run_script(&text, &d, QueryOptions::default()).await;
        // The answer: per user, event times sorted; a tweet within 30 s of the session's
        // last tweet joins it. Append mode emits sessions that end by the final watermark.
        let mut g = Generator::new(cfg.clone());
        let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut max_ts = i64::MIN;
        for i in 0..3000 {
            let t = g.tweet(i);
            max_ts = max_ts.max(t.timestamp_ms);
            times
                .entry(g.users()[t.user].id as i64)
                .or_default()
                .push(t.timestamp_ms);
        }
        let watermark = max_ts - 30_000;
        let mut expected = BTreeSet::new();
        for (user, mut ts) in times {
            ts.sort_unstable();
            let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
            for &t in &ts {
                if t > last + 30_000 {
                    expected.insert((user, start, last + 30_000, n, last));
                    (start, n) = (t, 0);
                }
                last = t;
                n += 1;
            }
            expected.insert((user, start, last + 30_000, n, last));
        }
        expected.retain(|s| s.2 <= watermark);
        let got: BTreeSet<(i64, i64, i64, i64, i64)> = memory_rows(&q)
            .iter()
            .map(|r| {
                (
                    r["user_id"].as_i64().unwrap(),
                    parse_ts(r["session_start"].as_str().unwrap())
                        + ms_part(r["session_start"].as_str().unwrap()),
                    parse_ts(r["session_end"].as_str().unwrap())
                        + ms_part(r["session_end"].as_str().unwrap()),
                    r["tweets"].as_i64().unwrap(),
                    parse_ts(r["last_tweet"].as_str().unwrap())
                        + ms_part(r["last_tweet"].as_str().unwrap()),
                )
            })
            .collect();
        assert_eq!(memory_rows(&q).len(), got.len(), "each session once");
        let merged = expected.iter().filter(|s| s.3 > 1).count();
        assert!(merged > 100, "sessions with several tweets: {merged}");
        assert_eq!(got, expected);
        let progress = q.progress_log().recent();
        assert!(progress.len() >= 15, "{} batches", progress.len());
        let peak = progress
            .iter()
            .map(|p| p.state_operators[0].num_rows_total)
            .max()
            .unwrap();
        // Closed sessions leave the state: it holds the sessions of the last batch or two.
        assert!(
            peak * 4 < expected.len() as u64,
            "state peak {peak} of {} sessions",
            expected.len()
        );
    })
    .await
    .expect("test timed out");
}

/// The milliseconds of `2023-11-14T22:13:00.123` (0 without a fraction).
fn ms_part(s: &str) -> i64 {
    match s.get(19..20) {
        Some(".") => {
            let digits: String = s[20..].chars().take_while(|c| c.is_ascii_digit()).collect();
            format!("{digits:0<3}")[..3].parse().unwrap()
        }
        _ => 0,
    }
}

/// The tweets view the dedup tests read: id and event time only.
const DEDUP_SOURCE: &str = "CREATE TEMPORARY VIEW raw USING kafka OPTIONS (kafka.bootstrap.servers '${bootstrap}', subscribe '${topic}', startingOffsets 'earliest', endingOffsets 'latest', maxOffsetsPerTrigger '500');
CREATE TEMPORARY VIEW tweets AS SELECT from_json(CAST(value AS STRING), 'id BIGINT') AS tweet, timestamp AS ts FROM raw;
CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'dedup');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_by_key_within_watermark_and_without_one_matches_generator() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        // Every third tweet is followed by a re-sent copy of a tweet up to 40 tweets (2 s of
        // event time) earlier, with its original timestamp (an at-least-once producer's
        // retry); at the end, copies of the first five tweets, minutes late.
        let cfg = orderly(9);
        let n = 4000u64;
        let mut g = Generator::new(cfg.clone());
        let mut rng = Rng(9);
        let tweets: Vec<(String, String, i64)> = (0..n)
            .map(|i| {
                let t = g.tweet(i);
                (t.id.to_string(), g.to_json(&t).to_string(), t.timestamp_ms)
            })
            .collect();
        let mut records = Vec::new();
        for i in 0..n as usize {
            records.push(tweets[i].clone());
            if i % 3 == 2 {
                records.push(tweets[i - 1 - (rng.next() % 40).min(i as u64 - 1) as usize].clone());
            }
        }
        let late = 5;
        records.extend(tweets[..late].iter().cloned());
        produce_records(&broker, "tweets9", &records).await;
        let expected: BTreeSet<i64> = tweets.iter().map(|t| t.0.parse().unwrap()).collect();
        let d = defines(&broker, "tweets9");
        let cases = [
            // dropDuplicatesWithinWatermark("id"): bounded state, late copies dropped.
            ("SELECT DISTINCT ON (tweet.id) WITHIN WATERMARK tweet.id AS id, ts FROM tweets WATERMARK ts DELAY OF INTERVAL 30 SECONDS", true, late as u64),
            // dropDuplicates("id", "ts") with a watermark on ts: bounded state.
            ("SELECT DISTINCT ON (tweet.id, ts) tweet.id AS id, ts FROM tweets WATERMARK ts DELAY OF INTERVAL 30 SECONDS", true, late as u64),
            // dropDuplicates() without a watermark: every key is remembered.
            ("SELECT DISTINCT tweet.id AS id, ts FROM tweets", false, 0),
        ];
        for (query, bounded, dropped) in cases {
            let text = format!("{DEDUP_SOURCE}\nINSERT INTO out {query};");
            let q = run_script(&text, &d, QueryOptions::default()).await;
            let rows = memory_rows(&q);
            let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
            let unique: BTreeSet<i64> = ids.iter().copied().collect();
            assert_eq!(ids.len(), unique.len(), "{query}: a duplicate was emitted");
            assert_eq!(unique, expected, "{query}");
            let ops: Vec<_> = q.progress_log().recent().iter().map(|p| p.state_operators[0].clone()).collect();
            assert!(ops.iter().all(|o| o.operator_name == "dedupe"));
            let total_dropped: u64 = ops.iter().map(|o| o.num_rows_dropped_by_watermark).sum();
            assert_eq!(total_dropped, dropped, "{query}");
            let peak = ops.iter().map(|o| o.num_rows_total).max().unwrap();
            if bounded {
                assert!(peak < n / 2, "{query}: state peak {peak}");
                assert!(ops.iter().map(|o| o.num_rows_removed).sum::<u64>() > n / 2, "{query}");
            } else {
                assert_eq!(ops.last().unwrap().num_rows_total, n, "{query}: one entry per key");
            }
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_static_join_reads_a_compacted_topic_as_latest_value_per_key() {
    use rdkafka::producer::FutureRecord;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = GeneratorConfig { num_users: 30, ..orderly(10) };
        produce(&broker, "tweets10", &cfg, 1000).await;
        // The users table: several versions per user (the last one counts); every
        // seventh user deleted at the end with a tombstone (a null value).
        let g = Generator::new(cfg.clone());
        let mut latest: HashMap<i64, Option<String>> = HashMap::new();
        let producer = idempotent_producer(&broker);
        for round in 0..3usize {
            for (i, u) in g.users().iter().enumerate() {
                // User i has versions 0..=i%3; every seventh user's last one deletes it.
                if round > i % 3 {
                    continue;
                }
                let tombstone = i % 7 == 0 && round == i % 3;
                let country = format!("c{i}-{round}");
                let value = format!("{{\"country\":\"{country}\"}}");
                let key = u.id.to_string();
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to("users10").key(key.as_bytes());
                if !tombstone {
                    rec = rec.payload(value.as_bytes());
                }
                producer.send(rec, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
                latest.insert(u.id as i64, (!tombstone).then_some(country));
            }
        }
        let text = "CREATE TEMPORARY VIEW raw USING kafka OPTIONS (kafka.bootstrap.servers '${bootstrap}', subscribe 'tweets10', startingOffsets 'earliest', endingOffsets 'latest');
CREATE TEMPORARY VIEW tweets AS SELECT from_json(CAST(value AS STRING), 'id BIGINT, user STRUCT<id: BIGINT>') AS tweet FROM raw;
CREATE TEMPORARY VIEW users_raw USING kafka_table OPTIONS (kafka.bootstrap.servers '${bootstrap}', subscribe 'users10');
CREATE TEMPORARY VIEW users AS SELECT CAST(CAST(key AS STRING) AS BIGINT) AS uid, get_json_object(CAST(value AS STRING), '$.country') AS country FROM users_raw;
CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'enriched');
INSERT INTO out SELECT tweet.id AS id, country FROM tweets JOIN users ON tweet.user.id = users.uid;";
        let q = run_script(text, &defines(&broker, "tweets10"), QueryOptions::default()).await;
        let mut g = Generator::new(cfg.clone());
        let expected: BTreeMap<i64, String> = (0..1000)
            .filter_map(|i| {
                let t = g.tweet(i);
                let uid = g.users()[t.user].id as i64;
                latest[&uid].clone().map(|c| (t.id as i64, c))
            })
            .collect();
        let got: BTreeMap<i64, String> = memory_rows(&q)
            .iter()
            .map(|r| (r["id"].as_i64().unwrap(), r["country"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(memory_rows(&q).len(), got.len(), "one row per tweet");
        assert!(expected.len() < 1000, "tweets of deleted users are not joined");
        assert!(expected.values().any(|c| c.ends_with("-2")), "later versions win");
        assert_eq!(got, expected);
    })
    .await
    .expect("test timed out");
}

/// GET `path` from the query's HTTP server; returns (status line, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_table_is_served_over_http_while_the_query_runs() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = orderly(12);
        let text = example_with_sink(
            "select.sql",
            "CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'live');",
        );
        let mut d = defines(&broker, "tweets12");
        d.insert("endingOffsets".into(), String::new()); // runs until stopped
        produce(&broker, "tweets12", &cfg, 300).await;
        let script = Script::parse(&text, &d).unwrap();
        let mut q = StreamingQuery::from_script(&script, QueryOptions::default())
            .await
            .unwrap();
        let (name, table) = q.memory_table().unwrap();
        assert_eq!(name, "live");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = runnel_sql::http::HttpState {
            progress: q.progress_log(),
            tables: std::sync::Arc::new([(name, table)].into_iter().collect()),
            query: text.clone(),
            assets: Some(runnel_broker::http::console::asset_for_path),
            content_security_policy: runnel_broker::http::console::CONTENT_SECURITY_POLICY,
        };
        let server = tokio::spawn(runnel_sql::http::serve(listener, state));
        let stop = q.stop_handle();
        let running = tokio::spawn(async move {
            q.run().await.unwrap();
            q
        });
        // Rows appear over HTTP as batches complete, while the query keeps running.
        let rows_over_http = |want: usize| async move {
            loop {
                let (status, body) = http_get(addr, "/tables/live").await;
                assert_eq!(status, "HTTP/1.1 200 OK");
                let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                if rows.len() >= want {
                    return rows;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        // The console's page and its query text are served next to the JSON.
        let (status, body) = http_get(addr, "/").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("Runnel console"), "{body}");
        let (status, body) = http_get(addr, "/query").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["query"], text.as_str());
        let first = rows_over_http(300).await;
        assert_eq!(first.len(), 300);
        assert!(!running.is_finished(), "the query is still running");
        // A second wave of tweets (the generator continues where it stopped).
        let mut g = Generator::new(cfg.clone());
        let second: Vec<(String, String, i64)> = (300..700)
            .map(|i| {
                let t = g.tweet(i);
                (t.id.to_string(), g.to_json(&t).to_string(), t.timestamp_ms)
            })
            .collect();
        produce_records(&broker, "tweets12", &second).await;
        let all = rows_over_http(700).await;
        let ids: BTreeSet<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        let mut g = Generator::new(cfg.clone());
        let expected: BTreeSet<i64> = (0..700).map(|i| g.tweet(i).id as i64).collect();
        assert_eq!(ids, expected);
        let (status, body) = http_get(addr, "/progress").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let progress: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let input: u64 = progress
            .iter()
            .map(|p| p["numInputRows"].as_u64().unwrap())
            .sum();
        assert_eq!(input, 700);
        assert!(progress
            .iter()
            .all(|p| p["sink"]["description"] == "MemorySink[live]"));
        let (status, _) = http_get(addr, "/tables/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let q = running.await.unwrap();
        assert_eq!(q.progress_log().recent().len(), progress.len());
        server.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_file_source_streams_files_in_name_order_and_resumes() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let mut g = Generator::new(orderly(13));
        let mut write = |name: &str, from: u64| {
            let lines: Vec<String> = (from..from + 100)
                .map(|i| {
                    let t = g.tweet(i);
                    g.to_json(&t).to_string()
                })
                .collect();
            std::fs::write(dir.path().join(name), lines.join("\n") + "\n").unwrap();
        };
        write("b.jsonl", 100);
        write("a.jsonl", 0);
        write("c.jsonl", 200);
        std::fs::write(dir.path().join("_ignored"), "not json\n").unwrap();
        let text = format!(
            "CREATE TEMPORARY VIEW lines USING text OPTIONS (path '{}', maxFilesPerTrigger '1');
CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'ids', checkpointLocation '{}');
CREATE TEMPORARY VIEW tweets AS SELECT from_json(value, 'id BIGINT') AS tweet FROM lines;
INSERT INTO out SELECT tweet.id AS id FROM tweets;",
            dir.path().display(),
            ck.path().display()
        );
        let opts = available_now();
        let q = run_script(&text, &BTreeMap::new(), opts.clone()).await;
        let batches = q.progress_log().recent();
        assert_eq!(batches.len(), 3, "one file per batch");
        assert_eq!(
            batches[2].sources[0].end_offset.to_string(),
            format!("{{\"{}\":{{\"0\":3}}}}", dir.path().display())
        );
        let ids: Vec<i64> = memory_rows(&q)
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        let mut g2 = Generator::new(orderly(13));
        let expected: Vec<i64> = (0..300).map(|i| g2.tweet(i).id as i64).collect();
        assert_eq!(ids, expected, "files in name order, lines in file order");
        // A new file; the restarted query reads only it.
        write("d.jsonl", 300);
        let q = run_script(&text, &BTreeMap::new(), opts).await;
        let ids: Vec<i64> = memory_rows(&q)
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (300..400).map(|i| g2.tweet(i).id as i64).collect();
        assert_eq!(ids, expected);
        assert_eq!(q.progress_log().recent()[0].batch_id, 3);
    })
    .await
    .expect("test timed out");
}

// ---- Spark's dialect: queries from Spark's Structured Streaming guide and Kafka
// integration guide, as a Spark user writes them, over Runnel's sources. ----

/// Runs `query` (after the declarations of a text source `lines` over `dir` and a
/// memory sink `out` with `sink_opts`) with the availableNow trigger; its rows.
async fn run_on_lines(
    dir: &Path,
    sink_opts: &str,
    query: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = lines_script(dir, sink_opts, query);
    let opts = available_now();
    memory_rows(&run_script(&text, &BTreeMap::new(), opts).await)
}

fn lines_script(dir: &Path, sink_opts: &str, query: &str) -> String {
    format!(
        "CREATE TEMPORARY VIEW lines USING text OPTIONS (path '{}');
CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'q'{sink_opts});
{query}",
        dir.display()
    )
}

/// The error building `query` over the text source gives.
async fn script_error(dir: &Path, sink_opts: &str, query: &str) -> String {
    let text = lines_script(dir, sink_opts, query);
    let script = match Script::parse(&text, &BTreeMap::new()) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    match StreamingQuery::from_script(&script, QueryOptions::default()).await {
        Ok(_) => panic!("expected an error for {query}"),
        Err(e) => e.to_string(),
    }
}

/// Devices in the guide's shape ("device", "deviceType", "signal", "time"), with
/// camelCase names as Spark users' JSON has them.
struct Device {
    device: String,
    device_type: String,
    signal: i64,
    time_ms: i64,
}

fn devices(n: u64) -> Vec<Device> {
    let mut rng = runnel_sql::tweets::Rng::new(7);
    (0..n)
        .map(|i| Device {
            device: format!("dev{}", rng.below(20)),
            device_type: ["sensorA", "sensorB", "camera"][rng.below(3) as usize].to_string(),
            signal: rng.below(30) as i64,
            time_ms: START_MS + i as i64 * 7_000,
        })
        .collect()
}

fn write_devices(dir: &Path, devs: &[Device]) {
    let lines: Vec<String> = devs
        .iter()
        .map(|d| {
            serde_json::json!({"device": d.device, "deviceType": d.device_type,
                               "signal": d.signal, "timeMs": d.time_ms})
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("devices.jsonl"), lines.join("\n") + "\n").unwrap();
}

const DEVICES_VIEW: &str = "CREATE TEMPORARY VIEW devices AS
  SELECT d.device, d.deviceType, d.signal, timestamp_millis(d.timeMs) AS time
  FROM (SELECT from_json(value, 'device STRING, deviceType STRING, signal BIGINT, timeMs BIGINT') AS d FROM lines);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_guide_word_count_in_complete_mode() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = runnel_sql::tweets::Rng::new(3);
        let vocab = ["apache", "spark", "kafka", "runnel", "stream", "Spark"];
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        let lines: Vec<String> = (0..200)
            .map(|_| {
                let words: Vec<&str> = (0..1 + rng.below(6))
                    .map(|_| vocab[rng.below(vocab.len() as u64) as usize])
                    .collect();
                for w in &words {
                    *expected.entry(w.to_string()).or_default() += 1;
                }
                words.join(" ")
            })
            .collect();
        std::fs::write(dir.path().join("a.txt"), lines.join("\n") + "\n").unwrap();
        // lines.select(explode(split(lines.value, " ")).alias("word")).groupBy("word").count()
        let rows = run_on_lines(
            dir.path(),
            ", outputMode 'complete'",
            "INSERT INTO out SELECT word, count(*) AS `count`
             FROM (SELECT explode(split(Value, \" \")) AS word FROM lines) GROUP BY Word;",
        )
        .await;
        let got: BTreeMap<String, i64> = rows
            .iter()
            .map(|r| {
                (
                    r["word"].as_str().unwrap().to_string(),
                    r["count"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_guide_device_queries_resolve_names_case_insensitively() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let devs = devices(300);
        write_devices(dir.path(), &devs);
        // df.select("device").where("signal > 10"), with names in another case and a
        // double-quoted string (Spark's), not an identifier.
        let rows = run_on_lines(
            dir.path(),
            "",
            &format!(
                "{DEVICES_VIEW}
                 INSERT INTO out SELECT Device, DEVICETYPE FROM devices
                 WHERE SIGNAL > 10 AND devicetype <> \"camera\";"
            ),
        )
        .await;
        let got: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["device"].as_str().unwrap().to_string(),
                    r["deviceType"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = devs
            .iter()
            .filter(|d| d.signal > 10 && d.device_type != "camera")
            .map(|d| (d.device.clone(), d.device_type.clone()))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(got, expected, "names keep their declared case in the output");
        // df.groupBy("deviceType").count()
        let rows = run_on_lines(
            dir.path(),
            ", outputMode 'complete'",
            &format!(
                "{DEVICES_VIEW}
                 INSERT INTO out SELECT `DeviceType`, count(*) AS n FROM devices GROUP BY devicetype;"
            ),
        )
        .await;
        let got: BTreeMap<String, i64> = rows
            .iter()
            .map(|r| (r["deviceType"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
            .collect();
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        for d in &devs {
            *expected.entry(d.device_type.clone()).or_default() += 1;
        }
        assert_eq!(got, expected);
        // With spark.sql.caseSensitive=true only the declared case resolves.
        let e = script_error(
            dir.path(),
            "",
            &format!(
                "SET spark.sql.caseSensitive = true;
                 {DEVICES_VIEW}
                 INSERT INTO out SELECT DEVICETYPE FROM devices;"
            ),
        )
        .await;
        assert!(e.contains("DEVICETYPE") && e.contains("deviceType"), "{e}");
        let rows = run_on_lines(
            dir.path(),
            "",
            &format!(
                "SET spark.sql.caseSensitive = true;
                 {DEVICES_VIEW}
                 INSERT INTO out SELECT deviceType FROM devices;"
            ),
        )
        .await;
        assert_eq!(rows.len(), devs.len());
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_guide_windowed_count_with_watermark() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let devs = devices(400);
        write_devices(dir.path(), &devs);
        // words.withWatermark("timestamp", "10 minutes")
        //      .groupBy(window(words.timestamp, "10 minutes", "5 minutes"), words.word).count()
        let rows = run_on_lines(
            dir.path(),
            ", outputMode 'complete'",
            &format!(
                "{DEVICES_VIEW}
                 INSERT INTO out SELECT unix_millis(window.start) AS startMs, deviceType, count
                 FROM (SELECT window(time, '10 minutes', '5 minutes') AS window, deviceType, count(*) AS count
                       FROM devices WATERMARK time DELAY OF INTERVAL 10 MINUTES
                       GROUP BY window(time, '10 minutes', '5 minutes'), deviceType);"
            ),
        )
        .await;
        let got: BTreeMap<(i64, String), i64> = rows
            .iter()
            .map(|r| {
                (
                    (
                        r["startMs"].as_i64().unwrap(),
                        r["deviceType"].as_str().unwrap().to_string(),
                    ),
                    r["count"].as_i64().unwrap(),
                )
            })
            .collect();
        let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
        let (size, slide) = (600_000i64, 300_000i64);
        for d in &devs {
            let last = d.time_ms - d.time_ms.rem_euclid(slide);
            let mut start = last;
            while start > d.time_ms - size {
                *expected.entry((start, d.device_type.clone())).or_default() += 1;
                start -= slide;
            }
        }
        assert_eq!(got, expected);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_errors_point_at_the_file_and_name_what_there_is() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        write_devices(dir.path(), &devices(5));
        // A syntax error: the line and column in the file (the query starts on line 3),
        // and the line with a caret under the place.
        let e = script_error(
            dir.path(),
            "",
            "-- a comment\nINSERT INTO out\nSELECT value FROM lines WHERE value = = 'x';",
        )
        .await;
        assert!(
            e.contains("at line 5, column 39:") && e.contains("  5 | SELECT value FROM lines WHERE value = = 'x'"),
            "{e}"
        );
        let caret_line = e.lines().last().unwrap();
        assert_eq!(caret_line.find('^'), Some("  5 | SELECT value FROM lines WHERE value = ".len()), "{e}");
        // A column that is not there: the fields there are.
        let e = script_error(dir.path(), "", "INSERT INTO out SELECT valu FROM lines;").await;
        assert!(e.contains("valu") && e.contains("Valid fields are") && e.contains("value"), "{e}");
        // A struct field that is not there: the struct's fields.
        let e = script_error(
            dir.path(),
            "",
            &format!("{DEVICES_VIEW}\nINSERT INTO out SELECT d.nope FROM (SELECT from_json(value, 'fooBar STRING, signal BIGINT') AS d FROM lines);"),
        )
        .await;
        assert!(e.contains("nope") && e.contains("d: fooBar, signal"), "{e}");
        assert!(e.contains("at line 6, column 26:"), "{e}");
        // An append-mode aggregation without a watermark names the WATERMARK clause.
        let e = script_error(
            dir.path(),
            ", outputMode 'append'",
            &format!("{DEVICES_VIEW}\nINSERT INTO out SELECT window(time, '1 minute') AS w, count(*) FROM devices GROUP BY window(time, '1 minute');"),
        )
        .await;
        assert!(e.contains("without watermark") && e.contains("withWatermark") && e.contains("WATERMARK ts DELAY OF INTERVAL"), "{e}");
    })
    .await
    .expect("test timed out");
}

/// The Kafka integration guide's query with every column of the Kafka source, including
/// `partition`, `offset` and `timestampType`, written as Spark users write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_guide_columns_are_usable_by_their_names() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let cfg = orderly(5);
        produce(&broker, "kcols", &cfg, 600).await;
        let source = format!(
            "CREATE TEMPORARY VIEW kafka_view USING kafka OPTIONS (
               kafka.bootstrap.servers '{}', subscribe 'kcols', startingOffsets 'earliest', endingOffsets 'latest');
             CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'k');",
            broker.addr
        );
        let text = format!(
            "{source}
             INSERT INTO out SELECT CAST(key AS STRING) AS key, CAST(value AS STRING) AS value, topic, partition, offset, timestamp, timestampType
             FROM kafka_view;"
        );
        let rows = run_script(&text, &BTreeMap::new(), QueryOptions::default()).await;
        let rows = memory_rows(&rows);
        assert_eq!(rows.len(), 600);
        let mut g = Generator::new(cfg);
        let ids: BTreeSet<String> = (0..600).map(|i| g.tweet(i).id.to_string()).collect();
        let mut per_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in &rows {
            assert_eq!(r["topic"], "kcols");
            assert_eq!(r["timestampType"], 0, "CreateTime");
            let key = r["key"].as_str().unwrap();
            let v: serde_json::Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            assert_eq!(v["id"].to_string(), key, "keyed by id");
            assert!(ids.contains(key));
            per_partition
                .entry(r["partition"].as_i64().unwrap())
                .or_default()
                .push(r["offset"].as_i64().unwrap());
        }
        assert_eq!(per_partition.len(), 3);
        for offsets in per_partition.values() {
            let want: Vec<i64> = (0..offsets.len() as i64).collect();
            assert_eq!(offsets, &want, "each partition's offsets, in order");
        }
        // The issue's query, with names in other cases and backticks.
        let text = format!(
            "{source}
             INSERT INTO out SELECT Partition, `OFFSET`, TimestampType FROM kafka_view WHERE partition = 1 ORDER BY offset;"
        );
        let script = Script::parse(&text, &BTreeMap::new()).unwrap();
        let e = StreamingQuery::from_script(&script, QueryOptions::default())
            .await
            .err()
            .expect("sorting a stream without aggregation is refused")
            .to_string();
        assert!(e.contains("Sorting is not supported"), "{e}");
        let text = format!(
            "{source}
             INSERT INTO out SELECT Partition, `OFFSET`, TimestampType FROM kafka_view WHERE partition = 1;"
        );
        let q = run_script(&text, &BTreeMap::new(), QueryOptions::default()).await;
        let got: Vec<(i64, i64, i64)> = memory_rows(&q)
            .iter()
            .map(|r| {
                (
                    r["partition"].as_i64().unwrap(),
                    r["offset"].as_i64().unwrap(),
                    r["timestampType"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(i64, i64, i64)> = (0..per_partition[&1].len() as i64)
            .map(|o| (1, o, 0))
            .collect();
        assert_eq!(got, want);
    })
    .await
    .expect("test timed out");
}

/// 300 records keyed `k<i>` with timestamps `START_MS + i s`, over the topic's 3
/// partitions; which partition each went to, by key.
async fn timed_records(broker: &Broker, topic: &str) {
    let records: Vec<(String, String, i64)> = (0..300)
        .map(|i| (format!("k{i}"), format!("v{i}"), START_MS + i * 1000))
        .collect();
    produce_records(broker, topic, &records).await;
}

/// Writes `keys` in one transaction of a transactional producer, committed or aborted.
async fn produce_transaction(
    broker: &Broker,
    topic: &str,
    id: &str,
    keys: &[String],
    commit: bool,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("transactional.id", id)
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    for (i, k) in keys.iter().enumerate() {
        let rec = FutureRecord::to(topic)
            .key(k.as_bytes())
            .payload(k.as_bytes())
            .timestamp(START_MS + i as i64);
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    if commit {
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    } else {
        producer.abort_transaction(Duration::from_secs(30)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_reads_committed_records_once_over_markers_and_aborted_ones() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let keys = |prefix: &str, from: usize, n: usize| -> Vec<String> {
            (from..from + n).map(|i| format!("{prefix}{i}")).collect()
        };
        // Committed, aborted, committed: every partition ends with a commit marker and
        // holds aborted records between committed ones.
        produce_transaction(&broker, "txn", "t1", &keys("k", 0, 30), true).await;
        produce_transaction(&broker, "txn", "t2", &keys("a", 0, 30), false).await;
        produce_transaction(&broker, "txn", "t3", &keys("k", 30, 30), true).await;
        // Small batches, so that batch ends fall on markers and aborted records.
        let text = kafka_source_script(
            &broker,
            "txn",
            ", startingOffsets 'earliest', endingOffsets 'latest', maxOffsetsPerTrigger '4'",
            "SELECT CAST(key AS STRING) AS k, partition, offset FROM kv",
        )
        .replace(", outputMode 'complete'", "");
        let q = run_script(&text, &BTreeMap::new(), available_now()).await;
        let rows = memory_rows(&q);
        let got = sorted_strings(&rows, "k");
        let mut want = keys("k", 0, 60);
        want.sort();
        assert_eq!(got, want, "every committed record once, no aborted one");
        // Within a partition, offsets only go up.
        let mut last: HashMap<i64, i64> = HashMap::new();
        for r in &rows {
            let (p, o) = (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            );
            assert!(
                last.insert(p, o).is_none_or(|before| before < o),
                "{rows:?}"
            );
        }
        assert!(q.progress_log().recent().len() > 10, "small batches");
    })
    .await
    .expect("test timed out");
}

fn kafka_source_script(broker: &Broker, topic: &str, options: &str, query: &str) -> String {
    format!(
        "CREATE TEMPORARY VIEW kv USING kafka OPTIONS (
           kafka.bootstrap.servers '{}', subscribe '{topic}'{options});
         CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'kv', outputMode 'complete');
         INSERT INTO out {query};",
        broker.addr
    )
}

async fn keys_read(broker: &Broker, topic: &str, options: &str) -> BTreeSet<i64> {
    let text = kafka_source_script(
        broker,
        topic,
        options,
        "SELECT CAST(key AS STRING) AS k FROM kv",
    );
    let text = text.replace(", outputMode 'complete'", "");
    let q = run_script(&text, &BTreeMap::new(), QueryOptions::default()).await;
    memory_rows(&q)
        .iter()
        .map(|r| r["k"].as_str().unwrap()[1..].parse().unwrap())
        .collect()
}

async fn build_error(text: &str) -> String {
    let script = Script::parse(text, &BTreeMap::new()).unwrap();
    match StreamingQuery::from_script(&script, QueryOptions::default()).await {
        Ok(mut q) => q.run().await.err().expect("the query fails").to_string(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_timestamp_options_start_and_end_by_record_time() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        timed_records(&broker, "timed").await;
        let end = START_MS + 200_000;
        // startingTimestamp, and endingOffsetsByTimestamp naming every partition.
        let ending = format!(r#"{{"timed":{{"0":{end},"1":{end},"2":{end}}}}}"#);
        let got = keys_read(
            &broker,
            "timed",
            &format!(", startingTimestamp '{}', endingOffsetsByTimestamp '{ending}'", START_MS + 100_000),
        )
        .await;
        assert_eq!(got, (100..200).collect::<BTreeSet<i64>>());
        // startingOffsetsByTimestamp per partition, endingTimestamp for all.
        let start = START_MS + 250_500;
        let starting = format!(r#"{{"timed":{{"0":{start},"1":{start},"2":{start}}}}}"#);
        let got = keys_read(
            &broker,
            "timed",
            &format!(", startingOffsetsByTimestamp '{starting}', endingTimestamp '{}'", START_MS + 10_000_000),
        )
        .await;
        assert_eq!(got, (251..300).collect::<BTreeSet<i64>>());
        // A timestamp after every record: Spark's default strategy is an error...
        let late = START_MS + 10_000_000;
        let e = build_error(&kafka_source_script(
            &broker,
            "timed",
            &format!(", startingTimestamp '{late}', endingOffsets 'latest'"),
            "SELECT count(*) AS n FROM kv",
        ))
        .await;
        assert!(e.contains("startingTimestamp") && e.contains("startingOffsetsByTimestampStrategy is 'error'"), "{e}");
        // ... and 'latest' starts there.
        let got = keys_read(
            &broker,
            "timed",
            &format!(", startingTimestamp '{late}', startingOffsetsByTimestampStrategy 'latest', endingOffsets 'latest'"),
        )
        .await;
        assert!(got.is_empty(), "{got:?}");
        // Every partition must be named.
        let e = build_error(&kafka_source_script(
            &broker,
            "timed",
            &format!(r#", startingOffsetsByTimestamp '{{"timed":{{"0":{start}}}}}', endingOffsets 'latest'"#),
            "SELECT count(*) AS n FROM kv",
        ))
        .await;
        assert!(e.contains("no timestamp given for partition timed-1"), "{e}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_min_offsets_per_trigger_waits_for_rows_or_the_delay() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        timed_records(&broker, "minrows").await;
        let source = |min: &str| {
            let o = runnel_sql::source::KafkaSourceOptions::from_options(
                &[
                    ("kafka.bootstrap.servers", broker.addr.as_str()),
                    ("subscribe", "minrows"),
                    ("startingOffsets", "earliest"),
                    ("minOffsetsPerTrigger", min),
                    ("maxTriggerDelay", "1 second"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            )
            .unwrap();
            let mut s = runnel_sql::source::KafkaSource::new(o).unwrap();
            s.start(None).unwrap();
            s
        };
        // 300 offsets are there: enough for 100.
        let mut s = source("100");
        let (rows, _) = s.next_batch(u64::MAX, Duration::ZERO).await.unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 300);
        // Not enough for 1000: no batch until maxTriggerDelay has passed.
        let started = std::time::Instant::now();
        let mut s = source("1000");
        let (rows, _) = s.next_batch(u64::MAX, Duration::ZERO).await.unwrap();
        assert!(rows.is_empty());
        let mut n = 0;
        while n == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (rows, _) = s.next_batch(u64::MAX, Duration::ZERO).await.unwrap();
            n = rows.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        assert_eq!(n, 300);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_id_and_min_partitions_are_taken() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        timed_records(&broker, "grouped").await;
        let text = kafka_source_script(
            &broker,
            "grouped",
            ", startingOffsets 'earliest', endingOffsets 'latest', kafka.group.id 'analytics', minPartitions '5'",
            "SELECT substr(CAST(value AS STRING), 1, 2) AS prefix, count(*) AS n FROM kv GROUP BY substr(CAST(value AS STRING), 1, 2)",
        );
        let q = run_script(&text, &BTreeMap::new(), QueryOptions::default()).await;
        let got: BTreeMap<String, i64> = memory_rows(&q)
            .iter()
            .map(|r| (r["prefix"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
            .collect();
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for i in 0..300 {
            *want.entry(format!("v{i}")[..2].to_string()).or_default() += 1;
        }
        assert_eq!(got, want);
    })
    .await
    .expect("test timed out");
}

/// Changelog checkpointing: a batch that changes few keys of a large state writes a
/// small delta, and a restart rebuilds the state from the snapshot and the deltas. The
/// same run measures both ways (figures printed; RUNNEL_STATE_KEYS=1000000 for the large
/// form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_deltas_cost_what_changed_and_restore_the_state() {
    let keys: usize = std::env::var("RUNNEL_STATE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    tokio::time::timeout(TEST_TIMEOUT * 10, async {
        let mut figures = Vec::new();
        for changelog in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let ck = tempfile::tempdir().unwrap();
            let lines = |r: std::ops::Range<usize>| {
                r.map(|i| format!("key{i}")).collect::<Vec<_>>().join("\n") + "\n"
            };
            std::fs::write(dir.path().join("a"), lines(0..keys)).unwrap();
            std::fs::write(dir.path().join("b"), lines(0..1000)).unwrap();
            let text = format!(
                "SET spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled = {changelog};
CREATE TEMPORARY VIEW lines USING text OPTIONS (path '{}', maxFilesPerTrigger '1');
CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'counts', outputMode 'update', checkpointLocation '{}');
INSERT INTO out SELECT value AS k, count(*) AS n FROM lines GROUP BY value;",
                dir.path().display(),
                ck.path().display()
            );
            let opts = available_now();
            let q = run_script(&text, &BTreeMap::new(), opts.clone()).await;
            let size = |b: u64| std::fs::metadata(ck.path().join("state").join(b.to_string())).unwrap().len();
            let (full, batch1) = (size(0), size(1));
            let commit_ms = q.progress_log().recent()[1].duration_ms["commitOffsets"];
            figures.push(format!(
                "changelog {changelog}: {keys} keys; state file after batch 0 {full} bytes, after batch 1 (1000 keys changed) {batch1} bytes, commit {commit_ms} ms"
            ));
            if changelog {
                assert!(batch1 * 10 < full, "{batch1} vs {full}");
            } else {
                assert!(batch1 >= full, "{batch1} vs {full}");
            }
            // A restart rebuilds the state (snapshot + delta): 100 keys seen a third time.
            std::fs::write(dir.path().join("c"), lines(0..100)).unwrap();
            let q = run_script(&text, &BTreeMap::new(), opts).await;
            let rows = memory_rows(&q);
            assert_eq!(rows.len(), 100);
            assert!(rows.iter().all(|r| r["n"] == 3), "{rows:?}");
        }
        for f in figures {
            println!("{f}");
        }
    })
    .await
    .expect("test timed out");
}

/// Deduplication's state files are deltas too: a batch that adds few keys to a large
/// state writes a small file, and a restart rebuilds the state from the snapshot and
/// the deltas (a key seen before the restart is still a duplicate after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_state_deltas_cost_what_changed_and_restore_the_state() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let lines = |r: std::ops::Range<usize>| {
            r.map(|i| format!("key{i}")).collect::<Vec<_>>().join("\n") + "\n"
        };
        std::fs::write(dir.path().join("a"), lines(0..20_000)).unwrap();
        std::fs::write(dir.path().join("b"), lines(19_900..20_100)).unwrap();
        let text = format!(
            "CREATE TEMPORARY VIEW lines USING text OPTIONS (path '{}', maxFilesPerTrigger '1');
CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'ids', checkpointLocation '{}');
INSERT INTO out SELECT DISTINCT value AS k FROM lines;",
            dir.path().display(),
            ck.path().display()
        );
        let q = run_script(&text, &BTreeMap::new(), available_now()).await;
        assert_eq!(memory_rows(&q).len(), 20_100);
        let size = |b: u64| {
            std::fs::metadata(ck.path().join("state").join(b.to_string()))
                .unwrap()
                .len()
        };
        let (full, delta) = (size(0), size(1));
        assert!(
            delta * 20 < full,
            "state file of batch 1 (100 new keys) {delta} bytes vs {full}"
        );
        // A restart: the state of 20,100 keys comes back from the snapshot and the delta.
        std::fs::write(dir.path().join("c"), lines(20_050..20_150)).unwrap();
        let q = run_script(&text, &BTreeMap::new(), available_now()).await;
        let got = sorted_strings(&memory_rows(&q), "k");
        let mut want: Vec<String> = (20_100..20_150).map(|i| format!("key{i}")).collect();
        want.sort();
        assert_eq!(got, want);
    })
    .await
    .expect("test timed out");
}

/// A LEFT JOIN of two text-file streams of `key,epoch_ms` lines (one file a batch each),
/// watermarked `delay_s` on both sides, rows matching within 5 s.
fn join_files_script(l: &Path, r: &Path, sink: &str, settings: &str, delay_s: u32) -> String {
    format!(
        "{settings}
CREATE TEMPORARY VIEW l_raw USING text OPTIONS (path '{}', maxFilesPerTrigger '1');
CREATE TEMPORARY VIEW r_raw USING text OPTIONS (path '{}', maxFilesPerTrigger '1');
CREATE TEMPORARY VIEW l AS SELECT split_part(value, ',', 1) AS lk, timestamp_millis(CAST(split_part(value, ',', 2) AS BIGINT)) AS lt FROM l_raw;
CREATE TEMPORARY VIEW r AS SELECT split_part(value, ',', 1) AS rk, timestamp_millis(CAST(split_part(value, ',', 2) AS BIGINT)) AS rt FROM r_raw;
{sink}
INSERT INTO out SELECT lk, rk, unix_millis(lt) AS lt, unix_millis(rt) AS rt
FROM l WATERMARK lt DELAY OF INTERVAL {delay_s} SECONDS
LEFT JOIN r WATERMARK rt DELAY OF INTERVAL {delay_s} SECONDS
  ON lk = rk AND rt BETWEEN lt - INTERVAL 5 SECONDS AND lt + INTERVAL 5 SECONDS;",
        l.display(),
        r.display()
    )
}

/// The json sink's committed rows, sorted.
fn committed_lines(out: &Path) -> Vec<String> {
    let mut lines: Vec<String> = runnel_sql::sink::committed_files(out)
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

/// A stream-stream join whose process dies after a batch's output and state were
/// written but before its commit resumes from the last snapshot and the deltas after it,
/// re-runs that batch, and ends with exactly the output of an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_join_resumes_from_state_deltas_with_the_output_of_an_uninterrupted_run() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (l, r) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Eight files a side, 200 rows each over 9 s of event time: left keys k0-k39,
        // right keys k0-k34. Rows match within 5 s; left rows of k35-k39 never match and
        // are written unmatched once the watermark passes them.
        for f in 0..8i64 {
            for (dir, side, mul, keys) in [(&l, "l", 0, 40), (&r, "r", 7, 35)] {
                let text: String = (0..200i64)
                    .map(|i| format!("k{},{}\n", (i * mul + i / 3) % keys, START_MS + f * 10_000 + i * 45 + mul * 100))
                    .collect();
                std::fs::write(dir.path().join(format!("{f:02}-{side}")), text).unwrap();
            }
        }
        let settings = "SET spark.sql.streaming.stateStore.minDeltasForSnapshot = 3;";
        let run = |crash_after: Option<u64>| {
            let (l, r) = (l.path().to_path_buf(), r.path().to_path_buf());
            async move {
                let (out, ck) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
                let sink = format!(
                    "CREATE TEMPORARY VIEW out USING json OPTIONS (path '{}', checkpointLocation '{}');",
                    out.path().display(),
                    ck.path().display()
                );
                let text = join_files_script(&l, &r, &sink, settings, 2);
                if let Some(n) = crash_after {
                    let opts = QueryOptions { max_batches: Some(n + 1), ..available_now() };
                    run_script(&text, &BTreeMap::new(), opts).await;
                    // The crash: batch n's output and state are written, its commit is not.
                    let state = ck.path().join("state");
                    let deltas = (0..=n)
                        .filter(|b| {
                            std::fs::read(state.join(b.to_string()))
                                .is_ok_and(|f| f.starts_with(b"RUNNEL-DELTA-1\n"))
                        })
                        .count();
                    assert!(deltas >= 2, "the join wrote deltas: {deltas} of {}", n + 1);
                    std::fs::remove_file(ck.path().join("commits").join(n.to_string())).unwrap();
                }
                run_script(&text, &BTreeMap::new(), available_now()).await;
                (committed_lines(out.path()), out, ck)
            }
        };
        let (whole, ..) = run(None).await;
        let unmatched = whole.iter().filter(|l| l.contains("\"rk\":null") || !l.contains("\"rk\"")).count();
        assert!(unmatched > 10 && whole.len() - unmatched > 100, "{unmatched} of {}", whole.len());
        for crash_after in [4, 6] {
            let (resumed, ..) = run(Some(crash_after)).await;
            assert_eq!(resumed.len(), whole.len(), "crash after batch {crash_after}");
            assert!(resumed == whole, "crash after batch {crash_after}: the output differs");
        }
    })
    .await
    .expect("test timed out");
}

/// Join state files cost what a batch changed: with a large state and a few thousand
/// rows added and evicted per batch, a delta is a fraction of a full snapshot. The same
/// run measures both ways (figures printed; RUNNEL_JOIN_STATE_ROWS=1000000 for the large
/// form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_state_deltas_cost_what_changed() {
    let rows: i64 = std::env::var("RUNNEL_JOIN_STATE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    tokio::time::timeout(TEST_TIMEOUT * 10, async {
        let (l, r) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // A first file of rows/2 a side, 10 ms apart, then files of 2000 rows: the state
        // holds about `rows` rows and each batch adds and evicts about 2000 a side.
        let per_side = rows / 2;
        let file = |dir: &Path, name: &str, side: &str, range: std::ops::Range<i64>| {
            let text: String = range
                .map(|i| format!("{side}{i},{}\n", START_MS + i * 10))
                .collect();
            std::fs::write(dir.join(name), text).unwrap();
        };
        for (dir, side) in [(l.path(), "l"), (r.path(), "r")] {
            file(dir, "0", side, 0..per_side);
            for f in 1..5 {
                let from = per_side + (f - 1) * 2000;
                file(dir, &f.to_string(), side, from..from + 2000);
            }
        }
        // The delay spans the first file's event time, so it is held, then evicted as
        // later files come.
        let delay_s = (per_side * 10 / 1000) as u32;
        let (mut figures, mut all_sizes) = (Vec::new(), Vec::new());
        for changelog in [false, true] {
            let ck = tempfile::tempdir().unwrap();
            let sink = format!(
                "CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'j', checkpointLocation '{}');",
                ck.path().display()
            );
            let settings = format!(
                "SET spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled = {changelog};"
            );
            let text = join_files_script(l.path(), r.path(), &sink, &settings, delay_s);
            // Batch by batch (state files are purged as later ones come): the first
            // two, then one a run, each restarting from the checkpoint.
            let batches = |n| QueryOptions { max_batches: Some(n), ..available_now() };
            run_script(&text, &BTreeMap::new(), batches(2)).await;
            let mut sizes = Vec::new();
            for b in 2..5u64 {
                let q = run_script(&text, &BTreeMap::new(), batches(1)).await;
                let p = &q.progress_log().recent()[0];
                assert_eq!(p.batch_id, b);
                let op = &p.state_operators[0];
                let size = std::fs::metadata(ck.path().join("state").join(b.to_string()))
                    .unwrap()
                    .len();
                figures.push(format!(
                    "changelog {changelog}: batch {b}: state {} rows ({} added, {} evicted); state file {size} bytes; commit {} ms",
                    op.num_rows_total,
                    op.num_rows_updated,
                    op.num_rows_removed,
                    p.duration_ms["commitOffsets"]
                ));
                assert!(
                    op.num_rows_removed > 1000 && op.num_rows_total as i64 > rows * 8 / 10,
                    "{op:?}"
                );
                sizes.push(size);
            }
            all_sizes.push(sizes);
        }
        // Each batch's delta is a fraction of the full snapshot the same batch writes
        // with the changelog off.
        for (delta, full) in all_sizes[1].iter().zip(&all_sizes[0]) {
            assert!(delta * 4 < *full, "{all_sizes:?}");
        }
        for f in figures {
            println!("{f}");
        }
    })
    .await
    .expect("test timed out");
}

/// The Kafka source's row, field by field, as librdkafka hands each record over: keys and
/// values (null, empty, bytes), create-time timestamps, and with `includeHeaders` the
/// headers in order (repeated names, null values). Read in batches of 3 so that rows are
/// handed out from the stash of a poll that ran past a batch's end, too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_rows_carry_keys_values_timestamps_and_headers() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = start_broker().await;
        let producer = idempotent_producer(&broker);
        for i in 0..20i64 {
            let key = format!("k{i}");
            let value = format!("v{i}");
            let mut headers = OwnedHeaders::new();
            for h in 0..(i % 3) {
                headers = headers.insert(Header {
                    key: "h",
                    value: Some(format!("{i}.{h}").as_bytes()),
                });
            }
            if i % 5 == 0 {
                headers = headers.insert(Header {
                    key: "nothing",
                    value: None::<&[u8]>,
                });
            }
            let mut rec = FutureRecord::to("rows")
                .partition(0)
                .timestamp(START_MS + i)
                .headers(headers);
            // Null keys and values on some records, an empty value on one.
            if i % 4 != 1 {
                rec = rec.key(key.as_bytes());
            }
            if i == 7 {
                rec = rec.payload(b"".as_slice());
            } else if i % 6 != 2 {
                rec = rec.payload(value.as_bytes());
            }
            producer
                .send(rec, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
        let text = kafka_source_script(
            &broker,
            "rows",
            ", startingOffsets 'earliest', endingOffsets 'latest', maxOffsetsPerTrigger '3', includeHeaders 'true'",
            "SELECT offset, CAST(key AS STRING) AS k, CAST(value AS STRING) AS v, \
             timestamp, timestampType, topic, partition, headers FROM kv",
        )
        .replace(", outputMode 'complete'", "");
        let q = run_script(&text, &BTreeMap::new(), available_now()).await;
        let mut rows = memory_rows(&q);
        rows.sort_by_key(|r| r["offset"].as_i64().unwrap());
        assert_eq!(rows.len(), 20, "{rows:?}");
        for (i, r) in rows.iter().enumerate() {
            let i = i as i64;
            assert_eq!(r["offset"].as_i64(), Some(i));
            assert_eq!(r["topic"].as_str(), Some("rows"));
            assert_eq!(r["partition"].as_i64(), Some(0));
            assert_eq!(r["timestampType"].as_i64(), Some(0), "create time: {r:?}");
            let ts = r["timestamp"].as_str().expect("a timestamp");
            assert_eq!(parse_ts(ts) + ms_part(ts), START_MS + i, "{r:?}");
            let key = (i % 4 != 1).then(|| format!("k{i}"));
            assert_eq!(r.get("k").and_then(|v| v.as_str()), key.as_deref(), "{r:?}");
            let value = match i {
                7 => Some(String::new()),
                _ if i % 6 == 2 => None,
                _ => Some(format!("v{i}")),
            };
            assert_eq!(r.get("v").and_then(|v| v.as_str()), value.as_deref(), "{r:?}");
            let headers = r["headers"].as_array().expect("a list of headers");
            let mut want: Vec<(String, Option<String>)> = (0..(i % 3))
                .map(|h| ("h".to_string(), Some(format!("{i}.{h}"))))
                .collect();
            if i % 5 == 0 {
                want.push(("nothing".to_string(), None));
            }
            let got: Vec<(String, Option<String>)> = headers
                .iter()
                .map(|h| {
                    let key = h["key"].as_str().unwrap().to_string();
                    // Binary values are written as hex.
                    let value = h.get("value").and_then(|v| v.as_str()).map(|hex| {
                        let bytes: Vec<u8> = (0..hex.len())
                            .step_by(2)
                            .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap())
                            .collect();
                        String::from_utf8(bytes).unwrap()
                    });
                    (key, value)
                })
                .collect();
            assert_eq!(got, want, "row {i}: {r:?}");
        }
        assert!(q.progress_log().recent().len() >= 7, "batches of 3");
    })
    .await
    .expect("test timed out");
}
