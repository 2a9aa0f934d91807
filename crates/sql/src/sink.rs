//! Sinks: console (Spark's table format), kafka (optionally transactional), files (JSON
//! lines or Parquet, exactly-once through a `_spark_metadata` commit log), memory (a
//! table readable over HTTP while the query runs), and a callback for the Rust API.

use crate::error::{Result, SqlError};
use crate::output_mode::OutputMode;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use parking_lot::RwLock;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A user callback sink: called with each batch's id and rows.
pub type BatchCallback = Box<dyn FnMut(u64, &[RecordBatch]) -> Result<()> + Send>;

/// A memory sink's table, shared with the HTTP server.
#[derive(Clone, Default)]
pub struct MemoryTable {
    inner: Arc<RwLock<(Option<SchemaRef>, Vec<RecordBatch>)>>,
}

impl MemoryTable {
    pub fn snapshot(&self) -> (Option<SchemaRef>, Vec<RecordBatch>) {
        self.inner.read().clone()
    }
    pub fn num_rows(&self) -> usize {
        self.inner.read().1.iter().map(|b| b.num_rows()).sum()
    }
}

/// Rows kept by a memory sink; older rows are dropped first (it is a debugging sink).
pub const MEMORY_SINK_MAX_ROWS: usize = 1_000_000;

pub enum Sink {
    Console {
        num_rows: usize,
        truncate: bool,
    },
    Kafka(KafkaSink),
    File(FileSink),
    Memory {
        name: String,
        table: MemoryTable,
        last_batch: Option<u64>,
    },
    Callback(BatchCallback),
}

fn opt<'a>(o: &'a BTreeMap<String, String>, k: &str) -> Option<&'a String> {
    o.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
}

impl Sink {
    /// Builds a sink from `USING format OPTIONS (...)`.
    pub fn from_options(
        format: &str,
        name: &str,
        options: &BTreeMap<String, String>,
        query_id: &str,
    ) -> Result<Sink> {
        if let Some(known) = crate::options::sink_options(format) {
            crate::options::check_sink(known, options)?;
        }
        Ok(match format {
            "console" => Sink::Console {
                num_rows: opt(options, "numRows").map_or(Ok(20), |v| {
                    v.parse()
                        .map_err(|_| SqlError::option("numRows", format!("{v:?} is not a number")))
                })?,
                truncate: opt(options, "truncate").is_none_or(|v| v != "false"),
            },
            "kafka" => Sink::Kafka(KafkaSink::new(options, query_id)?),
            "json" | "parquet" => Sink::File(FileSink::new(format, options)?),
            "memory" => Sink::Memory {
                name: opt(options, "queryName")
                    .cloned()
                    .unwrap_or_else(|| name.to_string()),
                table: MemoryTable::default(),
                last_batch: None,
            },
            other => {
                return Err(SqlError::Query(format!(
                    "unknown sink format {other:?} (console, kafka, json, parquet, memory)"
                )))
            }
        })
    }

    pub fn description(&self) -> String {
        match self {
            Sink::Console { .. } => "org.apache.spark.sql.execution.streaming.ConsoleTable$".into(),
            Sink::Kafka(k) => format!(
                "KafkaTable[{}]",
                k.topic.as_deref().unwrap_or("<topic column>")
            ),
            Sink::File(f) => format!("FileSink[{}]", f.path.display()),
            Sink::Memory { name, .. } => format!("MemorySink[{name}]"),
            Sink::Callback(_) => "ForeachBatchSink".into(),
        }
    }

    /// Spark's rule: file sinks support only append mode.
    pub fn check_mode(&self, mode: OutputMode) -> Result<()> {
        if let Sink::File(f) = self {
            if mode != OutputMode::Append {
                return Err(SqlError::Unsupported(format!(
                    "Data source {} does not support {} output mode",
                    f.format,
                    mode.name()
                )));
            }
        }
        Ok(())
    }

    pub fn memory_table(&self) -> Option<(String, MemoryTable)> {
        match self {
            Sink::Memory { name, table, .. } => Some((name.clone(), table.clone())),
            _ => None,
        }
    }

    /// Writes one micro-batch's output. Returns the number of rows written.
    pub async fn add_batch(
        &mut self,
        batch_id: u64,
        batches: &[RecordBatch],
        mode: OutputMode,
    ) -> Result<u64> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        match self {
            Sink::Console { num_rows, truncate } => {
                let text = console_table(batch_id, batches, *num_rows, *truncate)?;
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Sink::Kafka(k) => {
                if !k.write(batch_id, batches).await? {
                    return Ok(0);
                }
            }
            Sink::File(f) => f.write(batch_id, batches)?,
            Sink::Memory {
                table, last_batch, ..
            } => {
                if last_batch.is_some_and(|l| batch_id <= l) {
                    return Ok(0); // a replayed batch: already applied
                }
                *last_batch = Some(batch_id);
                let mut t = table.inner.write();
                if let Some(b) = batches.first() {
                    t.0 = Some(b.schema());
                }
                if mode == OutputMode::Complete {
                    t.1.clear();
                }
                t.1.extend(batches.iter().filter(|b| b.num_rows() > 0).cloned());
                let mut total: usize = t.1.iter().map(|b| b.num_rows()).sum();
                while total > MEMORY_SINK_MAX_ROWS && t.1.len() > 1 {
                    total -= t.1.remove(0).num_rows();
                }
            }
            Sink::Callback(f) => f(batch_id, batches)?,
        }
        Ok(rows)
    }
}

/// Formats one value the way Spark's `show()` does.
pub fn format_value(a: &ArrayRef, i: usize) -> String {
    match ScalarValue::try_from_array(a, i) {
        Ok(v) => format_scalar(&v),
        Err(_) => "?".into(),
    }
}

fn format_scalar(v: &ScalarValue) -> String {
    if v.is_null() {
        return "NULL".into();
    }
    match v {
        ScalarValue::TimestampMillisecond(Some(t), _) => {
            crate::functions::format_java(*t, "yyyy-MM-dd HH:mm:ss")
        }
        ScalarValue::TimestampMicrosecond(Some(t), _) => {
            crate::functions::format_java(t.div_euclid(1000), "yyyy-MM-dd HH:mm:ss")
        }
        ScalarValue::TimestampNanosecond(Some(t), _) => {
            crate::functions::format_java(t.div_euclid(1_000_000), "yyyy-MM-dd HH:mm:ss")
        }
        ScalarValue::TimestampSecond(Some(t), _) => {
            crate::functions::format_java(t * 1000, "yyyy-MM-dd HH:mm:ss")
        }
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b)) => {
            format!(
                "[{}]",
                b.iter()
                    .map(|x| format!("{x:02X}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        ScalarValue::Struct(s) => {
            let parts: Vec<String> = (0..s.num_columns())
                .map(|c| format_value(s.column(c), 0))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        ScalarValue::List(l) => {
            let vals = l.value(0);
            let parts: Vec<String> = (0..vals.len()).map(|i| format_value(&vals, i)).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// Spark's console sink output for one batch.
pub fn console_table(
    batch_id: u64,
    batches: &[RecordBatch],
    num_rows: usize,
    truncate: bool,
) -> Result<String> {
    let mut out = format!("-------------------------------------------\nBatch: {batch_id}\n-------------------------------------------\n");
    let Some(first) = batches.first() else {
        out.push_str("++\n||\n++\n++\n\n");
        return Ok(out);
    };
    let schema = first.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut rows: Vec<Vec<String>> = Vec::new();
    'outer: for b in batches {
        for i in 0..b.num_rows() {
            if rows.len() >= num_rows {
                break 'outer;
            }
            rows.push(
                (0..b.num_columns())
                    .map(|c| {
                        let s = format_value(b.column(c), i);
                        if truncate && s.chars().count() > 20 {
                            format!("{}...", s.chars().take(17).collect::<String>())
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    let widths: Vec<usize> = (0..names.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain(std::iter::once(names[c].chars().count()))
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let sep: String = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let pad = w - c.chars().count();
                if truncate {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("|{}|\n", parts.join("|"))
    };
    out.push_str(&sep);
    out.push_str(&line(&names));
    out.push_str(&sep);
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&sep);
    if total > num_rows {
        out.push_str(&format!(
            "only showing top {num_rows} row{}\n",
            if num_rows == 1 { "" } else { "s" }
        ));
    }
    out.push('\n');
    Ok(out)
}

/// Produces records with a bounded number in flight; returns once all are delivered.
pub struct BoundedSender {
    pending: VecDeque<rdkafka::producer::DeliveryFuture>,
    max_in_flight: usize,
}

impl BoundedSender {
    pub fn new(max_in_flight: usize) -> Self {
        BoundedSender {
            pending: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
        }
    }

    async fn wait_one(&mut self) -> Result<()> {
        if let Some(f) = self.pending.pop_front() {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(SqlError::Kafka(e)),
                Err(_) => return Err(SqlError::Query("kafka producer closed".into())),
            }
        }
        Ok(())
    }

    pub async fn send(
        &mut self,
        producer: &FutureProducer,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<()> {
        loop {
            if self.pending.len() >= self.max_in_flight {
                self.wait_one().await?;
            }
            match producer.send_result(record) {
                Ok(f) => {
                    self.pending.push_back(f);
                    return Ok(());
                }
                Err((e, r)) => {
                    record = r;
                    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                        if self.pending.is_empty() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        } else {
                            self.wait_one().await?;
                        }
                    } else {
                        return Err(SqlError::Kafka(e));
                    }
                }
            }
        }
    }

    pub async fn finish(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }
}

/// Builds a producer from `kafka.*` options.
pub fn producer_config(options: &BTreeMap<String, String>) -> Result<ClientConfig> {
    let bootstrap = opt(options, "kafka.bootstrap.servers")
        .ok_or_else(|| SqlError::option("kafka.bootstrap.servers", "is required"))?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("log_level", "3");
    for (k, v) in options {
        if let Some(key) = k.strip_prefix("kafka.") {
            if key != "bootstrap.servers" {
                cfg.set(key, v);
            }
        }
    }
    Ok(cfg)
}

/// The Kafka sink: `value` (string or binary) and optional `key`, `topic`, `partition`
/// columns, as in Spark. With `exactlyOnce 'true'` each batch is one Kafka transaction
/// (transactional id derived from the checkpoint's query id).
pub struct KafkaSink {
    producer: FutureProducer,
    topic: Option<String>,
    transactional: bool,
    query_id: String,
    options: BTreeMap<String, String>,
    /// The highest batch id this query committed to the topic, read back once, at the
    /// first batch after a (re)start: a replayed batch at or below it is not written
    /// again. `None` until checked.
    committed_batch: Option<Option<u64>>,
}

/// How long reading the output topic back for committed batches may take.
const COMMITTED_SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Offsets per partition read back first when looking for the query's last batch;
/// doubled while a partition holds none of the query's records.
const COMMITTED_SCAN_FIRST_WINDOW: i64 = 1_000;

impl KafkaSink {
    pub fn new(options: &BTreeMap<String, String>, query_id: &str) -> Result<KafkaSink> {
        let transactional = opt(options, "exactlyOnce").is_some_and(|v| v == "true");
        let mut cfg = producer_config(options)?;
        if transactional {
            cfg.set("transactional.id", format!("runnel-sql-{query_id}"));
        }
        let producer: FutureProducer = cfg.create()?;
        if transactional {
            producer.init_transactions(Duration::from_secs(30))?;
        }
        Ok(KafkaSink {
            producer,
            topic: opt(options, "topic").cloned(),
            transactional,
            query_id: query_id.to_string(),
            options: options.clone(),
            committed_batch: None,
        })
    }

    /// Writes a batch; returns false if it was skipped because an earlier run of this
    /// query already committed it (a crash between the Kafka commit and the commit log).
    async fn write(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<bool> {
        if self.transactional {
            if self.committed_batch.is_none() {
                let found = match &self.topic {
                    Some(t) => last_committed_batch(&self.options, t, &self.query_id)?,
                    None => {
                        tracing::warn!("kafka sink with exactlyOnce and no 'topic' option: a batch re-run after a crash is not checked against the topics");
                        None
                    }
                };
                tracing::info!(committed = ?found, "kafka sink: last batch committed by this query");
                self.committed_batch = Some(found);
            }
            if self
                .committed_batch
                .flatten()
                .is_some_and(|c| batch_id <= c)
            {
                tracing::info!(
                    batch_id,
                    "kafka sink: batch already committed, not written again"
                );
                return Ok(false);
            }
            self.producer.begin_transaction()?;
        }
        let result = self.send_all(batch_id, batches).await;
        if self.transactional {
            match &result {
                Ok(()) => self.producer.commit_transaction(Duration::from_secs(60))?,
                Err(_) => {
                    let _ = self.producer.abort_transaction(Duration::from_secs(60));
                }
            }
        }
        result.map(|()| true)
    }

    async fn send_all(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let mut sender = BoundedSender::new(100_000);
        let batch_str = batch_id.to_string();
        let headers = [
            ("runnel.query.id", self.query_id.as_str()),
            ("runnel.batch.id", batch_str.as_str()),
        ];
        let headers = self.transactional.then_some(&headers[..]);
        send_rows(
            &self.producer,
            &mut sender,
            batches,
            self.topic.as_deref(),
            headers,
        )
        .await?;
        sender.finish().await
    }
}

/// Sends the rows of a Kafka sink's batches as Spark's Kafka sink writes them: the
/// `value` column (string or binary), the optional `key`, `topic` and `partition`
/// columns; `topic` (the sink's option) beats the column. `headers` go on every record.
/// Returns once every record is handed to `sender` (not yet acknowledged).
pub(crate) async fn send_rows(
    producer: &FutureProducer,
    sender: &mut BoundedSender,
    batches: &[RecordBatch],
    default_topic: Option<&str>,
    headers: Option<&[(&str, &str)]>,
) -> Result<()> {
    for b in batches {
        let col = |name: &str| b.schema().index_of(name).ok().map(|i| b.column(i).clone());
        let value = col("value").ok_or_else(|| {
            SqlError::Unsupported(
                "Required attribute 'value' not found (the kafka sink writes the value column)"
                    .into(),
            )
        })?;
        let value = to_binary(&value, "value")?;
        let key = col("key").map(|k| to_binary(&k, "key")).transpose()?;
        let topic_col = col("topic")
            .map(|t| cast(&t, &DataType::Utf8))
            .transpose()?;
        let partition = col("partition")
            .map(|p| cast(&p, &DataType::Int32))
            .transpose()?;
        for i in 0..b.num_rows() {
            let topic = match (&topic_col, default_topic) {
                (_, Some(t)) => t,
                (Some(tc), None) if tc.is_valid(i) => tc.as_string::<i32>().value(i),
                _ => {
                    return Err(SqlError::Unsupported(
                        "topic option required when no 'topic' attribute is present".into(),
                    ))
                }
            };
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if value.is_valid(i) {
                rec = rec.payload(value.value(i));
            }
            if let Some(k) = &key {
                if k.is_valid(i) {
                    rec = rec.key(k.value(i));
                }
            }
            if let Some(p) = &partition {
                let p = p.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
                if p.is_valid(i) {
                    rec = rec.partition(p.value(i));
                }
            }
            if let Some(hs) = headers {
                let mut h = OwnedHeaders::new();
                for (key, value) in hs {
                    h = h.insert(Header {
                        key,
                        value: Some(*value),
                    });
                }
                rec = rec.headers(h);
            }
            sender.send(producer, rec).await?;
        }
    }
    Ok(())
}

/// The highest `runnel.batch.id` among committed records of query `query_id` in `topic`
/// (read_committed), or None. Reads the tail of each partition, a window that doubles
/// until it holds one of the query's records or covers the partition: the query's newest
/// record in a partition is at its tail unless other producers wrote after it.
fn last_committed_batch(
    options: &BTreeMap<String, String>,
    topic: &str,
    query_id: &str,
) -> Result<Option<u64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let bootstrap = opt(options, "kafka.bootstrap.servers")
        .ok_or_else(|| SqlError::option("kafka.bootstrap.servers", "is required"))?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap);
    for (k, v) in options {
        if let Some(key) = k.strip_prefix("kafka.") {
            if key != "bootstrap.servers" && !key.starts_with("transaction") {
                cfg.set(key, v);
            }
        }
    }
    cfg.set(
        "group.id",
        format!("runnel-sql-sink-check-{}", uuid::Uuid::new_v4()),
    )
    .set("isolation.level", "read_committed")
    .set("enable.auto.commit", "false")
    .set("enable.partition.eof", "true")
    .set("auto.offset.reset", "earliest")
    .set("log_level", "3");
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    else {
        return Ok(None); // no topic yet: nothing committed
    };
    // Partition -> (low, high, start of the window still to read).
    let mut todo: BTreeMap<i32, (i64, i64, i64)> = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        if high > low {
            todo.insert(
                p.id(),
                (low, high, (high - COMMITTED_SCAN_FIRST_WINDOW).max(low)),
            );
        }
    }
    let deadline = std::time::Instant::now() + COMMITTED_SCAN_TIMEOUT;
    let mut best: Option<u64> = None;
    while !todo.is_empty() {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, (_, _, start)) in &todo {
            tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*start))?;
        }
        consumer.assign(&tpl)?;
        let mut reading: std::collections::BTreeSet<i32> = todo.keys().copied().collect();
        let mut found: std::collections::BTreeSet<i32> = Default::default();
        while !reading.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(SqlError::Query(format!(
                    "kafka sink: could not read topic {topic} back within {COMMITTED_SCAN_TIMEOUT:?} to find the batches this query committed"
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    reading.remove(&p);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "kafka sink check: transient error"),
                Some(Ok(m)) => {
                    let Some(h) = m.headers() else { continue };
                    let header = |name: &str| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                    };
                    if header("runnel.query.id") != Some(query_id) {
                        continue;
                    }
                    if let Some(b) = header("runnel.batch.id").and_then(|v| v.parse::<u64>().ok()) {
                        best = best.max(Some(b));
                        found.insert(m.partition());
                    }
                }
            }
        }
        // Partitions with none of the query's records in the window: read a window twice
        // as long, further back, unless the whole partition was read.
        todo = todo
            .into_iter()
            .filter(|(p, (low, _, start))| !found.contains(p) && start > low)
            .map(|(p, (low, high, start))| (p, (low, high, (start - 2 * (high - start)).max(low))))
            .collect();
    }
    Ok(best)
}

fn to_binary(a: &ArrayRef, what: &str) -> Result<datafusion::arrow::array::BinaryArray> {
    match a.data_type() {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => Ok(cast(a, &DataType::Binary)?.as_binary::<i32>().clone()),
        other => Err(SqlError::Unsupported(format!(
            "{what} attribute type must be a string or binary, not {other}"
        ))),
    }
}

/// The file sink. Files of batch N are named `part-N-M.<ext>` (so a replayed batch
/// overwrites rather than duplicates) and listed in `_spark_metadata/N` once complete;
/// a batch whose metadata entry exists is skipped on replay.
pub struct FileSink {
    format: String,
    path: PathBuf,
    partition_by: Vec<String>,
}

impl FileSink {
    fn new(format: &str, options: &BTreeMap<String, String>) -> Result<FileSink> {
        let path = opt(options, "path")
            .ok_or_else(|| SqlError::option("path", "is required for file sinks"))?;
        let partition_by = opt(options, "partitionBy")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        std::fs::create_dir_all(path).map_err(|e| SqlError::io(path.clone(), e))?;
        Ok(FileSink {
            format: format.to_string(),
            path: PathBuf::from(path),
            partition_by,
        })
    }

    fn write(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let log = self.path.join("_spark_metadata").join(batch_id.to_string());
        if log.exists() {
            return Ok(()); // committed before a restart
        }
        let mut files: Vec<(PathBuf, u64)> = Vec::new();
        let mut groups: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            for (dir, part) in self.split(b)? {
                groups.entry(dir).or_default().push(part);
            }
        }
        for (n, (dir, parts)) in groups.into_iter().enumerate() {
            let d = if dir.is_empty() {
                self.path.clone()
            } else {
                self.path.join(&dir)
            };
            std::fs::create_dir_all(&d).map_err(|e| SqlError::io(d.display().to_string(), e))?;
            let ext = if self.format == "parquet" {
                "parquet"
            } else {
                "json"
            };
            let file = d.join(format!("part-{batch_id:05}-{n:05}.{ext}"));
            let bytes = self.encode(&parts)?;
            crate::checkpoint::write_atomic(&file, &bytes)?;
            files.push((file, bytes.len() as u64));
        }
        let mut text = String::from("v1");
        for (f, size) in &files {
            text.push('\n');
            text.push_str(
                &serde_json::json!({"path": f.display().to_string(), "size": size, "isDir": false,
                    "modificationTime": now_ms(), "blockReplication": 1, "blockSize": size, "action": "add"})
                .to_string(),
            );
        }
        crate::checkpoint::write_atomic(&log, text.as_bytes())
    }

    /// Splits a batch by the `partitionBy` columns into `col=value/...` directories,
    /// dropping those columns from the data (as Spark does).
    fn split(&self, b: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        if self.partition_by.is_empty() {
            return Ok(vec![(String::new(), b.clone())]);
        }
        let schema = b.schema();
        let mut idx = Vec::new();
        for p in &self.partition_by {
            idx.push(
                schema
                    .index_of(p)
                    .map_err(|_| SqlError::option("partitionBy", format!("no column {p:?}")))?,
            );
        }
        let mut dirs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for i in 0..b.num_rows() {
            let dir: Vec<String> = idx
                .iter()
                .zip(&self.partition_by)
                .map(|(&c, name)| {
                    let v = if b.column(c).is_null(i) {
                        "__HIVE_DEFAULT_PARTITION__".to_string()
                    } else {
                        format_value(b.column(c), i)
                    };
                    format!("{name}={}", escape_path(&v))
                })
                .collect();
            dirs.entry(dir.join("/")).or_default().push(i as u32);
        }
        let keep: Vec<usize> = (0..b.num_columns()).filter(|c| !idx.contains(c)).collect();
        let out_schema = Arc::new(Schema::new(
            keep.iter()
                .map(|&c| schema.field(c).clone())
                .collect::<Vec<_>>(),
        ));
        dirs.into_iter()
            .map(|(d, rows)| {
                let rows = UInt32Array::from(rows);
                let cols = keep
                    .iter()
                    .map(|&c| take(b.column(c), &rows, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok((d, RecordBatch::try_new(out_schema.clone(), cols)?))
            })
            .collect()
    }

    fn encode(&self, parts: &[RecordBatch]) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        if self.format == "parquet" {
            let schema = parts[0].schema();
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None)
                .map_err(|e| SqlError::Query(format!("parquet: {e}")))?;
            for p in parts {
                w.write(p)
                    .map_err(|e| SqlError::Query(format!("parquet: {e}")))?;
            }
            w.close()
                .map_err(|e| SqlError::Query(format!("parquet: {e}")))?;
        } else {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
            for p in parts {
                w.write(p)?;
            }
            w.finish()?;
        }
        Ok(buf)
    }
}

fn escape_path(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.:".contains(c) {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32 & 0xFF)
            }
        })
        .collect::<String>()
        .replace(':', "%3A")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Lists the files a file sink committed (reads `_spark_metadata`), for readers and tests.
pub fn committed_files(path: &std::path::Path) -> Result<Vec<PathBuf>> {
    let dir = path.join("_spark_metadata");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut ids: Vec<u64> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    for id in ids {
        let text = std::fs::read_to_string(dir.join(id.to_string()))
            .map_err(|e| SqlError::io(dir.display().to_string(), e))?;
        for line in text.lines().skip(1) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| SqlError::Checkpoint {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?;
            if let Some(p) = v["path"].as_str() {
                out.push(PathBuf::from(p));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn console_format_matches_spark() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("lang", DataType::Utf8, true),
            Field::new("count", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("en"),
                    None,
                    Some("a very long string of text here"),
                ])),
                Arc::new(Int64Array::from(vec![12, 3, 1])),
            ],
        )
        .unwrap();
        let t = console_table(3, &[b], 2, true).unwrap();
        let expected = "-------------------------------------------\nBatch: 3\n-------------------------------------------\n\
+----+-----+\n|lang|count|\n+----+-----+\n|  en|   12|\n|NULL|    3|\n+----+-----+\nonly showing top 2 rows\n\n";
        assert_eq!(t, expected);
        let _ = StringArray::from(vec!["x"]);
    }
}
