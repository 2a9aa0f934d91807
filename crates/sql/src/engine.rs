//! The micro-batch driver: Spark's trigger loop, offsets log before a batch and commit log
//! after, the watermark, progress reports, and recovery from a checkpoint.
//!
//! One batch: take new rows from every source (or replay a logged range) -> log offsets ->
//! run the plan (stateless part, stateful operator, part above it) -> write the sink ->
//! snapshot state -> commit -> report progress. A batch with no new data runs only when
//! the watermark moved far enough to close state (Spark's no-data batch).

use crate::checkpoint::{Checkpoint, OffsetEntry, QueryIdentity};
use crate::dialect::{self, Names};
use crate::error::{Result, SqlError};
use crate::file_source::{FileSource, StreamSource};
use crate::functions;
pub use crate::operator::execute;
use crate::operator::StateOperator;
use crate::output_mode::OutputMode;
use crate::plan::{plan_query, StreamingPlan};
use crate::progress::{
    Progress, ProgressLog, ProgressOutput, SourceProgress, StateOperatorProgress,
};
use crate::script::{Declaration, QuerySource, Script, Statement};
use crate::sink::{now_ms, Sink};
use crate::source::{offset_span, KafkaSource, KafkaSourceOptions, PartitionOffsets};
use crate::table::SlotTable;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spark's triggers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// Next batch as soon as the previous one is done (the default).
    AsFastAsPossible,
    /// A batch every interval (skipped when there is nothing to do).
    ProcessingTime(Duration),
    /// Process what is available at start, in as many batches as needed, then stop.
    AvailableNow,
}

impl Trigger {
    /// `'10 seconds'`, `ProcessingTime '10 seconds'`, `availableNow`, `once`.
    pub fn parse(s: &str) -> Result<Trigger> {
        let t = s.trim();
        let low = t.to_ascii_lowercase();
        if low == "availablenow" || low == "available-now" || low == "once" {
            return Ok(Trigger::AvailableNow);
        }
        if low.is_empty() || low == "default" {
            return Ok(Trigger::AsFastAsPossible);
        }
        let interval = low
            .strip_prefix("processingtime")
            .unwrap_or(&low)
            .trim_matches(|c: char| c == ' ' || c == '(' || c == ')');
        let ms = crate::ddl::parse_interval_ms(interval)
            .map_err(|e| SqlError::option("trigger", e.to_string()))?;
        if ms == 0 {
            return Ok(Trigger::AsFastAsPossible);
        }
        Ok(Trigger::ProcessingTime(Duration::from_millis(ms as u64)))
    }
}

/// Query settings; each may also come from the sink's OPTIONS.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    pub output_mode: Option<OutputMode>,
    pub trigger: Option<Trigger>,
    pub checkpoint_location: Option<PathBuf>,
    pub query_name: Option<String>,
    /// Stop after this many batches (tests, benchmarks).
    pub max_batches: Option<u64>,
    /// What to print to stderr after each batch (nothing, a line, Spark's JSON).
    pub progress: ProgressOutput,
}

pub(crate) struct SourceSlot {
    source: StreamSource,
    table: Arc<SlotTable>,
}

/// A running streaming query. Not thread-safe: drive it from one task; read its
/// progress through `progress_log()`, which is shared.
pub struct StreamingQuery {
    ctx: SessionContext,
    sources: Vec<SourceSlot>,
    plan: StreamingPlan,
    /// The stateful operator, if the query has one.
    operator: Option<Box<dyn StateOperator>>,
    sink: Sink,
    trigger: Trigger,
    checkpoint: Option<Checkpoint>,
    query_id: String,
    run_id: String,
    name: Option<String>,
    next_batch_id: u64,
    watermark_ms: i64,
    max_batches: Option<u64>,
    progress_output: ProgressOutput,
    progress: ProgressLog,
    /// A logged but uncommitted batch to re-run first (after a restart).
    pending_replay: Option<OffsetEntry>,
    stop: Arc<AtomicBool>,
    /// Also print each batch in the console format (Runnel's `echoConsole` option).
    echo_console: bool,
}

/// A fresh DataFusion session with Runnel's functions.
pub fn new_session() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(8192);
    {
        let o = config.options_mut();
        o.sql_parser.map_string_types_to_utf8view = false;
        // Errors carry where in the query they are (dialect::locate shows the line).
        o.sql_parser.collect_spans = true;
        o.execution.parquet.schema_force_view_types = false;
    }
    let ctx = SessionContext::new_with_config(config);
    functions::register_all(&ctx);
    // Casts between timestamps and numbers count seconds, as in Spark.
    ctx.add_analyzer_rule(Arc::new(crate::casts::SparkCasts));
    ctx
}

/// The names a statement may refer to: the columns (and nested fields) of every table
/// and view registered so far, and what the statement declares itself.
async fn names_in_scope(ctx: &SessionContext, source: &QuerySource) -> Result<Names> {
    let mut names = Names::default();
    if let Some(schema) = ctx.catalog("datafusion").and_then(|c| c.schema("public")) {
        for table in schema.table_names() {
            if let Some(t) = schema.table(&table).await? {
                names.add_fields(&table, t.schema().fields());
            }
        }
    }
    let (tokens, _) = dialect::tokenize_located(&source.text)?;
    names.add_statement(&tokens[source.from_token.min(tokens.len())..]);
    Ok(names)
}

/// Spark's settings for changelog checkpointing, from the file's `SET`s: how many state
/// deltas between full snapshots (`spark.sql.streaming.stateStore.minDeltasForSnapshot`,
/// default 10), or none (`...changelogCheckpointing.enabled = false`: a full snapshot
/// every batch).
pub(crate) fn deltas_per_snapshot(vars: &BTreeMap<String, String>) -> Result<u32> {
    const ENABLED: &str = "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled";
    const EVERY: &str = "spark.sql.streaming.stateStore.minDeltasForSnapshot";
    if let Some(v) = opt(vars, ENABLED) {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => {}
            "false" => return Ok(0),
            _ => {
                return Err(SqlError::option(
                    ENABLED,
                    format!("{v:?} is not true or false"),
                ))
            }
        }
    }
    match opt(vars, EVERY) {
        None => Ok(crate::checkpoint::DEFAULT_DELTAS_PER_SNAPSHOT),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                SqlError::option(EVERY, format!("{v:?} is not a number from 1 to 10000"))
            }),
    }
}

pub(crate) fn opt<'a>(o: &'a BTreeMap<String, String>, k: &str) -> Option<&'a String> {
    o.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
}

/// A Kafka source of a multi-process query: its options, as declared, and its table.
pub(crate) struct GroupSource {
    pub name: String,
    pub options: KafkaSourceOptions,
    pub declared: BTreeMap<String, String>,
    pub table: Arc<SlotTable>,
}

/// What a script declares, planned: the session with its tables and views, the sources,
/// the plan, the query's text (its identity), the sink's declaration and the options
/// with the sink's OPTIONS folded in.
pub(crate) struct Prepared {
    pub ctx: SessionContext,
    /// The streaming sources (single-process mode).
    pub sources: Vec<SourceSlot>,
    /// The Kafka sources, not started (multi-process mode: a consumer group reads them).
    pub group_sources: Vec<GroupSource>,
    pub plan: StreamingPlan,
    pub text: String,
    pub sink_decl: Option<Declaration>,
    pub options: QueryOptions,
}

/// Registers a script's sources, tables and views and plans its query. With `group`,
/// Kafka sources are only declared (their rows come from a consumer group) and other
/// streaming sources are refused.
pub(crate) async fn prepare(
    script: &Script,
    options: QueryOptions,
    group: bool,
) -> Result<Prepared> {
    let ctx = new_session();
    let (sink_name, sql) = script.query();
    let sink_decl: Option<Declaration> = match sink_name {
        Some(n) => Some(script.declaration(n).cloned().ok_or_else(|| {
            SqlError::Query(format!("INSERT INTO {n}: no sink declared with that name"))
        })?),
        None => None,
    };
    let sink_opts = sink_decl
        .as_ref()
        .map(|d| d.options.clone())
        .unwrap_or_default();
    let mut options = options;
    if options.output_mode.is_none() {
        options.output_mode = opt(&sink_opts, "outputMode")
            .map(|m| OutputMode::parse(m))
            .transpose()?;
    }
    if options.trigger.is_none() {
        options.trigger = opt(&sink_opts, "trigger")
            .map(|t| Trigger::parse(t))
            .transpose()?;
    }
    if options.checkpoint_location.is_none() {
        options.checkpoint_location = opt(&sink_opts, "checkpointLocation").map(PathBuf::from);
    }
    if options.query_name.is_none() {
        options.query_name = opt(&sink_opts, "queryName").cloned();
    }
    let mut sources = Vec::new();
    let mut group_sources = Vec::new();
    // The query's text for the checkpoint's identity: its views, then the query.
    let mut views = String::new();
    for stmt in &script.statements {
        match stmt {
            Statement::Declare(d) if Some(d.name.as_str()) == sink_name => {}
            Statement::Declare(d) => match d.format.as_str() {
                "kafka" if group => {
                    let opts = KafkaSourceOptions::from_options(&d.options)?;
                    let table = Arc::new(SlotTable::new(
                        crate::source::kafka_schema(opts.include_headers),
                        true,
                        Some(group_sources.len()),
                    ));
                    ctx.register_table(d.name.as_str(), table.clone())?;
                    group_sources.push(GroupSource {
                        name: d.name.clone(),
                        options: opts,
                        declared: d.options.clone(),
                        table,
                    });
                }
                "text" if group => {
                    return Err(SqlError::Unsupported(format!(
                        "{}: a multi-process query (application.id) reads Kafka topics only, not text files",
                        d.name
                    )))
                }
                "kafka" | "text" => {
                    let source = if d.format == "kafka" {
                        StreamSource::Kafka(Box::new(KafkaSource::new(
                            KafkaSourceOptions::from_options(&d.options)?,
                        )?))
                    } else {
                        StreamSource::Files(FileSource::from_options(&d.options)?)
                    };
                    let table =
                        Arc::new(SlotTable::new(source.schema(), true, Some(sources.len())));
                    ctx.register_table(d.name.as_str(), table.clone())?;
                    sources.push(SourceSlot { source, table });
                }
                "json" | "parquet" | "csv" => register_static(&ctx, d).await?,
                // A (compacted) topic read to its end as a table: latest value per key.
                "kafka_table" => {
                    let opts = KafkaSourceOptions::from_options(&d.options)?;
                    let (schema, rows) = crate::source::read_latest_per_key(&opts)?;
                    tracing::info!(table = %d.name, rows = rows.iter().map(|b| b.num_rows()).sum::<usize>(), "read {} as a table", opts.description());
                    let table = datafusion::datasource::MemTable::try_new(schema, vec![rows])?;
                    ctx.register_table(d.name.as_str(), Arc::new(table))?;
                }
                other => {
                    return Err(SqlError::Query(format!(
                        "{}: unknown source format {other:?} (kafka, text, kafka_table, json, parquet, csv)",
                        d.name
                    )))
                }
            },
            Statement::View { name, sql, source } => {
                let names = names_in_scope(&ctx, source).await?;
                let (resolved, map) = script.resolve(source, &names)?;
                // The view's text on a line of its own: errors count lines from it.
                ctx.sql(&format!("CREATE OR REPLACE VIEW {name} AS\n{resolved}"))
                    .await
                    .map_err(|e| dialect::locate(e.into(), script.place(source), &resolved, &map, 1, &names))?;
                // The checkpoint's identity is the text before names are resolved,
                // as older Runnel recorded it.
                views.push_str(&format!("VIEW {name} AS {sql}; "));
            }
            Statement::Query { .. } => {}
        }
    }
    let source = script.query_source();
    let names = names_in_scope(&ctx, source).await?;
    let (resolved, map) = script.resolve(source, &names)?;
    let plan = plan_query(&ctx, &resolved, options.output_mode, &script.watermarks)
        .await
        .map_err(|e| dialect::locate(e, script.place(source), &resolved, &map, 0, &names))?;
    views.push_str(sql);
    Ok(Prepared {
        ctx,
        sources,
        group_sources,
        plan,
        text: views,
        sink_decl,
        options,
    })
}

impl StreamingQuery {
    /// Builds a query from a parsed script. `options` override the sink's OPTIONS.
    pub async fn from_script(script: &Script, options: QueryOptions) -> Result<StreamingQuery> {
        if crate::group::application_id(script, None)?.is_some() {
            return Err(SqlError::Unsupported(
                "SET application.id runs the query in multi-process mode (runnel_sql::group::GroupQuery)".into(),
            ));
        }
        let p = prepare(script, options, false).await?;
        let Prepared {
            ctx,
            sources,
            plan,
            text,
            sink_decl,
            options,
            ..
        } = p;
        let (checkpoint, query_id) = open_checkpoint(&options, &sources, Some(text))?;
        let sink = match &sink_decl {
            Some(d) => Sink::from_options(&d.format, &d.name, &d.options, &query_id)?,
            None => Sink::Console {
                num_rows: 20,
                truncate: true,
            },
        };
        let sink_opts = sink_decl
            .as_ref()
            .map(|d| d.options.clone())
            .unwrap_or_default();
        let mut q = Self::assemble(ctx, sources, plan, sink, checkpoint, query_id, options)?;
        q.echo_console = opt(&sink_opts, "echoConsole").is_some_and(|v| v == "true");
        let deltas = deltas_per_snapshot(&script.vars)?;
        if let Some(op) = &mut q.operator {
            op.set_deltas_per_snapshot(deltas);
        }
        Ok(q)
    }

    /// Builds a query from parts (the Rust API uses this).
    pub(crate) fn assemble_parts(
        ctx: SessionContext,
        sources: Vec<(KafkaSource, Arc<SlotTable>)>,
        plan: StreamingPlan,
        sink: Sink,
        options: QueryOptions,
    ) -> Result<StreamingQuery> {
        let sources: Vec<SourceSlot> = sources
            .into_iter()
            .map(|(source, table)| SourceSlot {
                source: StreamSource::Kafka(Box::new(source)),
                table,
            })
            .collect();
        let (checkpoint, query_id) = open_checkpoint(&options, &sources, None)?;
        Self::assemble(ctx, sources, plan, sink, checkpoint, query_id, options)
    }

    fn assemble(
        ctx: SessionContext,
        sources: Vec<SourceSlot>,
        plan: StreamingPlan,
        sink: Sink,
        checkpoint: Option<Checkpoint>,
        query_id: String,
        options: QueryOptions,
    ) -> Result<StreamingQuery> {
        sink.check_mode(plan.mode)?;
        if sources.is_empty() {
            return Err(SqlError::Unsupported(
                "the query reads no streaming source".into(),
            ));
        }
        let mut plan = plan;
        let operator = plan.operator.take();
        // An operator that folds its input in any order (an aggregation) lets its
        // sources' rows spread over the session's partitions (cores). Elsewhere order is
        // kept (a source partition's rows reach the sink in offset order; dedup keeps the
        // first row). Spark's minPartitions asks for more.
        if operator.as_ref().is_some_and(|o| !o.input_order_matters()) {
            let n = ctx.state().config().target_partitions();
            for s in &sources {
                let min = match &s.source {
                    StreamSource::Kafka(k) => k.options().min_partitions.unwrap_or(0),
                    StreamSource::Files(_) => 0,
                };
                s.table.set_partitions(n.max(min));
            }
        }
        Ok(StreamingQuery {
            ctx,
            sources,
            plan,
            operator,
            sink,
            trigger: options.trigger.unwrap_or(Trigger::AsFastAsPossible),
            checkpoint,
            query_id,
            run_id: uuid::Uuid::new_v4().to_string(),
            name: options.query_name,
            next_batch_id: 0,
            watermark_ms: 0,
            max_batches: options.max_batches,
            progress_output: options.progress,
            progress: ProgressLog::default(),
            pending_replay: None,
            stop: Arc::new(AtomicBool::new(false)),
            echo_console: false,
        })
    }

    pub fn progress_log(&self) -> ProgressLog {
        self.progress.clone()
    }

    pub fn output_mode(&self) -> OutputMode {
        self.plan.mode
    }

    pub fn memory_table(&self) -> Option<(String, crate::sink::MemoryTable)> {
        self.sink.memory_table()
    }

    /// A flag that stops the query after the current batch.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Restores from the checkpoint (or starts sources fresh).
    async fn recover(&mut self) -> Result<()> {
        let Some(cp) = &self.checkpoint else {
            for s in &mut self.sources {
                s.source.start(None)?;
            }
            return Ok(());
        };
        let latest = cp.latest_offsets()?;
        let committed = cp.latest_commit()?;
        let Some(latest) = latest else {
            for (i, s) in self.sources.iter_mut().enumerate() {
                s.source.start(None)?;
                // Spark records a query's initial offsets so batch 0 replays identically.
                let init = crate::source::offsets_json(&s.source.positions()).to_string();
                crate::checkpoint::write_atomic(
                    &cp.root().join("sources").join(i.to_string()).join("0"),
                    init.as_bytes(),
                )?;
            }
            return Ok(());
        };
        if latest.sources.len() != self.sources.len() {
            return Err(SqlError::Checkpoint {
                path: cp.root().display().to_string(),
                message: format!(
                    "written by a query with {} sources, this one has {}",
                    latest.sources.len(),
                    self.sources.len()
                ),
            });
        }
        let (resume_from, state_batch, replay) = if committed == Some(latest.batch_id) {
            (latest.sources.clone(), Some(latest.batch_id), None)
        } else {
            let start = if latest.batch_id == 0 {
                let mut v = Vec::new();
                for i in 0..self.sources.len() {
                    let p = cp.root().join("sources").join(i.to_string()).join("0");
                    let text = std::fs::read_to_string(&p)
                        .map_err(|e| SqlError::io(p.display().to_string(), e))?;
                    v.push(crate::source::parse_offsets_json(&text).map_err(|m| {
                        SqlError::Checkpoint {
                            path: p.display().to_string(),
                            message: m,
                        }
                    })?);
                }
                v
            } else {
                cp.read_offsets(latest.batch_id - 1)?.sources
            };
            (start, latest.batch_id.checked_sub(1), Some(latest.clone()))
        };
        for (s, from) in self.sources.iter_mut().zip(&resume_from) {
            s.source.start(Some(from))?;
        }
        if let (Some(op), Some(b)) = (&mut self.operator, state_batch) {
            op.restore_chain(&cp.read_state_chain(b)?)?;
        }
        self.watermark_ms = match &replay {
            Some(e) => e.watermark_ms,
            None => {
                let from_state = self.operator.as_ref().and_then(|o| o.watermark_ms());
                match from_state {
                    Some(w) => w.max(latest.watermark_ms),
                    None => latest.watermark_ms,
                }
            }
        };
        self.next_batch_id = latest.batch_id + if replay.is_some() { 0 } else { 1 };
        tracing::info!(
            batch = self.next_batch_id,
            replay = replay.is_some(),
            watermark_ms = self.watermark_ms,
            "resuming from checkpoint"
        );
        self.pending_replay = replay;
        Ok(())
    }

    /// Runs until `endingOffsets`/availableNow/max_batches end it, `stop_handle()` is
    /// set, or an error.
    pub async fn run(&mut self) -> Result<()> {
        self.recover().await?;
        let mut targets: Option<Vec<PartitionOffsets>> = None;
        if self.trigger == Trigger::AvailableNow {
            for s in &mut self.sources {
                if let StreamSource::Kafka(k) = &mut s.source {
                    k.set_read_all_available();
                }
            }
            targets = Some(
                self.sources
                    .iter()
                    .map(|s| s.source.latest_offsets())
                    .collect::<Result<_>>()?,
            );
        }
        let mut batches_run = 0u64;
        let mut next_trigger = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed)
                || self.max_batches.is_some_and(|m| batches_run >= m)
            {
                return Ok(());
            }
            if let Trigger::ProcessingTime(iv) = self.trigger {
                let now = Instant::now();
                if next_trigger > now {
                    tokio::time::sleep(next_trigger - now).await;
                }
                next_trigger = Instant::now() + iv;
            }
            let trigger_start = Instant::now();
            let timestamp_ms = now_ms();
            // Rows for this batch.
            let starts: Vec<PartitionOffsets> =
                self.sources.iter().map(|s| s.source.positions()).collect();
            let mut inputs: Vec<Vec<RecordBatch>> = Vec::new();
            let mut ends = Vec::new();
            let replay = self.pending_replay.take();
            let wait = match self.trigger {
                Trigger::AsFastAsPossible => Duration::from_millis(100),
                _ => Duration::ZERO,
            };
            for (i, s) in self.sources.iter_mut().enumerate() {
                match &replay {
                    Some(e) => {
                        inputs.push(
                            s.source
                                .replay(&e.sources[i], Duration::from_secs(60))
                                .await?,
                        );
                        ends.push(e.sources[i].clone());
                    }
                    None => {
                        let max = s.source.max_per_trigger();
                        let (rows, end) = s.source.next_batch(max, wait).await?;
                        inputs.push(rows);
                        ends.push(end);
                    }
                }
            }
            let get_offset_ms = trigger_start.elapsed().as_millis() as u64;
            let num_rows: u64 = inputs.iter().flatten().map(|b| b.num_rows() as u64).sum();
            let has_new_offsets = starts != ends;
            let no_data_batch = !has_new_offsets && self.state_expired();
            if !has_new_offsets && !no_data_batch && replay.is_none() {
                let all_done = self.sources.iter().all(|s| s.source.finished())
                    || targets.as_ref().is_some_and(|t| {
                        self.sources
                            .iter()
                            .zip(t)
                            .all(|(s, t)| reached(&s.source.positions(), t))
                    });
                if all_done {
                    return Ok(());
                }
                continue;
            }
            let batch_id = self.next_batch_id;
            let wal_start = Instant::now();
            if let (Some(cp), None) = (&self.checkpoint, &replay) {
                cp.write_offsets(&OffsetEntry {
                    batch_id,
                    watermark_ms: self.watermark_ms,
                    timestamp_ms,
                    sources: ends.clone(),
                })?;
            }
            let wal_ms = wal_start.elapsed().as_millis() as u64;
            let exec_start = Instant::now();
            let (out_rows, event_time) = self.run_batch(batch_id, inputs).await?;
            let add_batch_ms = exec_start.elapsed().as_millis() as u64;
            // Watermark for the next batch.
            let batch_watermark = self.watermark_ms;
            if let Some(w) = self.operator.as_ref().and_then(|o| o.watermark_ms()) {
                self.watermark_ms = self.watermark_ms.max(w);
            }
            let commit_start = Instant::now();
            if let Some(cp) = &self.checkpoint {
                if let Some(op) = &mut self.operator {
                    cp.write_state(batch_id, &op.checkpoint()?)?;
                }
                cp.write_commit(batch_id, self.watermark_ms)?;
            }
            let commit_ms = commit_start.elapsed().as_millis() as u64;
            self.next_batch_id += 1;
            batches_run += 1;
            let total_ms = trigger_start.elapsed().as_millis() as u64;
            let p = self.make_progress(
                batch_id,
                timestamp_ms,
                num_rows,
                out_rows,
                &starts,
                &ends,
                batch_watermark,
                event_time,
                [
                    ("addBatch", add_batch_ms),
                    ("commitOffsets", commit_ms),
                    ("getBatch", 0),
                    ("latestOffset", get_offset_ms),
                    ("queryPlanning", 0),
                    ("triggerExecution", total_ms),
                    ("walCommit", wal_ms),
                ],
            );
            if let Some(text) = self.progress_output.render(&p) {
                eprintln!("{text}");
            }
            self.progress.push(p);
            let finished = self.sources.iter().all(|s| s.source.finished())
                || targets.as_ref().is_some_and(|t| {
                    self.sources
                        .iter()
                        .zip(t)
                        .all(|(s, t)| reached(&s.source.positions(), t))
                });
            let more_to_close = self.state_expired();
            if finished && !more_to_close {
                return Ok(());
            }
        }
    }

    /// Whether the watermark lets state go that is still held: then a batch runs even
    /// without new data (Spark's no-data batch), to emit and evict it.
    fn state_expired(&self) -> bool {
        self.operator
            .as_ref()
            .is_some_and(|o| o.has_expired(self.watermark_ms))
    }

    /// Executes one batch over `inputs` and writes the sink. Returns output rows and the
    /// batch's event-time statistics.
    async fn run_batch(
        &mut self,
        batch_id: u64,
        inputs: Vec<Vec<RecordBatch>>,
    ) -> Result<(u64, Option<EventTimeStats>)> {
        for (s, rows) in self.sources.iter().zip(inputs) {
            s.table.set(rows);
        }
        let mut event_time = None;
        if let Some(op) = &mut self.operator {
            op.run_batch(&self.ctx, batch_id, self.watermark_ms).await?;
            event_time = op.max_event_time_ms().map(|m| EventTimeStats { max_ms: m });
        }
        let result = execute(&self.ctx, &self.plan.upper).await;
        if let Some(op) = &self.operator {
            op.clear_output();
        }
        let result = result?;
        for s in &self.sources {
            s.table.set(Vec::new());
        }
        let rows = self
            .sink
            .add_batch(batch_id, &result, self.plan.mode)
            .await?;
        if self.echo_console {
            print!(
                "{}",
                crate::sink::console_table(batch_id, &result, 20, true)?
            );
        }
        Ok((rows, event_time))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_progress(
        &self,
        batch_id: u64,
        timestamp_ms: i64,
        num_rows: u64,
        out_rows: u64,
        starts: &[PartitionOffsets],
        ends: &[PartitionOffsets],
        batch_watermark: i64,
        event_time: Option<EventTimeStats>,
        durations: [(&str, u64); 7],
    ) -> Progress {
        let total_ms = durations
            .iter()
            .find(|d| d.0 == "triggerExecution")
            .map_or(0, |d| d.1);
        let processed_rate = if total_ms > 0 {
            num_rows as f64 * 1000.0 / total_ms as f64
        } else {
            num_rows as f64
        };
        let input_rate = self.progress.input_rate(num_rows, timestamp_ms);
        let mut et = BTreeMap::new();
        if self.plan.watermark_delay_ms.is_some() {
            et.insert(
                "watermark".to_string(),
                crate::progress::iso_time(batch_watermark),
            );
        }
        if let Some(e) = event_time {
            et.insert("max".to_string(), crate::progress::iso_time(e.max_ms));
        }
        let state_ops: Vec<StateOperatorProgress> =
            self.operator.iter().map(|op| op.progress()).collect();
        Progress {
            id: self.query_id.clone(),
            run_id: self.run_id.clone(),
            name: self.name.clone(),
            timestamp: crate::progress::iso_time(timestamp_ms),
            batch_id,
            batch_duration: total_ms,
            num_input_rows: num_rows,
            input_rows_per_second: input_rate,
            processed_rows_per_second: processed_rate,
            duration_ms: durations.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            event_time: et,
            state_operators: state_ops,
            sources: self
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| SourceProgress {
                    description: s.source.description(),
                    start_offset: crate::source::offsets_json(&starts[i]),
                    end_offset: crate::source::offsets_json(&ends[i]),
                    latest_offset: crate::source::offsets_json(&ends[i]),
                    num_input_rows: offset_span(&starts[i], &ends[i]).max(0) as u64,
                    input_rows_per_second: input_rate,
                    processed_rows_per_second: processed_rate,
                })
                .collect(),
            sink: crate::progress::SinkProgress {
                description: self.sink.description(),
                num_output_rows: out_rows as i64,
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct EventTimeStats {
    max_ms: i64,
}

fn reached(pos: &PartitionOffsets, target: &PartitionOffsets) -> bool {
    target.iter().all(|(t, ps)| {
        ps.iter()
            .all(|(p, o)| pos.get(t).and_then(|m| m.get(p)).is_some_and(|x| x >= o))
    })
}

/// Opens the query's checkpoint, if it has one, refusing one written by another query
/// (see `Checkpoint::check_identity`). Returns it and the query id.
fn open_checkpoint(
    options: &QueryOptions,
    sources: &[SourceSlot],
    text: Option<String>,
) -> Result<(Option<Checkpoint>, String)> {
    let Some(dir) = &options.checkpoint_location else {
        return Ok((None, uuid::Uuid::new_v4().to_string()));
    };
    let mut cp = Checkpoint::open(dir)?;
    cp.check_identity(&QueryIdentity {
        text,
        sources: sources.iter().map(|s| s.source.description()).collect(),
    })?;
    let id = cp.query_id.clone();
    Ok((Some(cp), id))
}

async fn register_static(ctx: &SessionContext, d: &Declaration) -> Result<()> {
    crate::options::check(&crate::options::STATIC_FILE, &d.options)?;
    let path = opt(&d.options, "path").ok_or_else(|| {
        SqlError::option(
            "path",
            format!("{}: required for a {} source", d.name, d.format),
        )
    })?;
    match d.format.as_str() {
        "json" => {
            let ext = std::path::Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("json")
                .to_string();
            let ext = format!(".{ext}");
            let o = datafusion::prelude::JsonReadOptions::default().file_extension(&ext);
            ctx.register_json(d.name.as_str(), path, o).await?
        }
        "parquet" => {
            ctx.register_parquet(d.name.as_str(), path, Default::default())
                .await?
        }
        "csv" => {
            let header = opt(&d.options, "header").is_some_and(|v| v == "true");
            ctx.register_csv(
                d.name.as_str(),
                path,
                datafusion::prelude::CsvReadOptions::new().has_header(header),
            )
            .await?
        }
        _ => unreachable!("checked by the caller"),
    }
    Ok(())
}
