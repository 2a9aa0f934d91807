//! The Rust builder API: the same engine without SQL text (Kafka Streams' role for Java).
//!
//! A query is a DataFusion `DataFrame` over streaming sources, built with DataFusion's
//! expression API plus the helpers here (`from_json`, `window`), then started with a
//! sink. The same planner splits it around the stateful operator and applies Spark's
//! rules, so SQL and the builder behave the same.
//!
//! ```no_run
//! use runnel_sql::api::{self, StreamBuilder};
//! use runnel_sql::datafusion::functions_aggregate::expr_fn::count;
//! use runnel_sql::datafusion::prelude::*;
//! # async fn demo() -> runnel_sql::Result<()> {
//! let mut b = StreamBuilder::new();
//! let raw = b.kafka("raw", &[("kafka.bootstrap.servers", "127.0.0.1:9092"), ("subscribe", "tweets")])?;
//! let counts = raw
//!     .aggregate(vec![api::window(col("timestamp"), "1 minute")], vec![count(lit(1)).alias("n")])?;
//! let mut query = b
//!     .watermark("timestamp", std::time::Duration::from_secs(30))
//!     .output_mode(runnel_sql::OutputMode::Update)
//!     .foreach_batch(|id, rows| { println!("batch {id}: {} batches", rows.len()); Ok(()) })
//!     .start(counts)?;
//! query.run().await
//! # }
//! ```

use crate::engine::{new_session, QueryOptions, StreamingQuery, Trigger};
use crate::error::{Result, SqlError};
use crate::output_mode::OutputMode;
use crate::plan::plan_logical;
use crate::script::WatermarkDecl;
use crate::sink::Sink;
use crate::source::{KafkaSource, KafkaSourceOptions};
use crate::table::SlotTable;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::SessionContext;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Builds a streaming query. Not thread-safe; consumed by `start`.
pub struct StreamBuilder {
    ctx: SessionContext,
    sources: Vec<(KafkaSource, Arc<SlotTable>)>,
    watermarks: Vec<WatermarkDecl>,
    options: QueryOptions,
    sink: Option<Sink>,
}

impl Default for StreamBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn udf(ctx: &SessionContext, name: &str) -> Arc<ScalarUDF> {
    ctx.state()
        .scalar_functions()
        .get(name)
        .cloned()
        .expect("runnel functions are registered")
}

fn lit_str(s: &str) -> Expr {
    Expr::Literal(ScalarValue::Utf8(Some(s.to_string())), None)
}

/// `window(ts, size)`: a tumbling event-time window (group by it).
pub fn window(ts: Expr, size: &str) -> Expr {
    udf(&new_session_cached(), "window").call(vec![ts, lit_str(size)])
}

/// `window(ts, size, slide)`: a sliding event-time window.
pub fn sliding_window(ts: Expr, size: &str, slide: &str) -> Expr {
    udf(&new_session_cached(), "window").call(vec![ts, lit_str(size), lit_str(slide)])
}

/// `from_json(CAST(json AS STRING), ddl)`: parses JSON text with a Spark DDL schema.
pub fn from_json(json: Expr, ddl: &str) -> Expr {
    let text = datafusion::logical_expr::cast(json, datafusion::arrow::datatypes::DataType::Utf8);
    udf(&new_session_cached(), "from_json").call(vec![text, lit_str(ddl)])
}

fn new_session_cached() -> SessionContext {
    static CTX: std::sync::OnceLock<SessionContext> = std::sync::OnceLock::new();
    CTX.get_or_init(new_session).clone()
}

impl StreamBuilder {
    pub fn new() -> Self {
        StreamBuilder {
            ctx: new_session(),
            sources: Vec::new(),
            watermarks: Vec::new(),
            options: QueryOptions::default(),
            sink: None,
        }
    }

    /// The session, to register static tables (files) for stream-static joins.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// A Kafka source with Spark's options; returns its rows (Spark's Kafka schema).
    pub fn kafka(&mut self, name: &str, options: &[(&str, &str)]) -> Result<DataFrame> {
        let opts: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let source = KafkaSource::new(KafkaSourceOptions::from_options(&opts)?)?;
        let table = Arc::new(SlotTable::new(
            source.schema(),
            true,
            Some(self.sources.len()),
        ));
        self.ctx.register_table(name, table.clone())?;
        self.sources.push((source, table));
        let plan = datafusion::logical_expr::LogicalPlanBuilder::scan(
            name,
            datafusion::catalog::default_table_source::provider_as_source(
                self.sources.last().expect("pushed").1.clone(),
            ),
            None,
        )?
        .build()?;
        Ok(DataFrame::new(self.ctx.state(), plan))
    }

    /// Declares a watermark on a column (by name) with a delay.
    pub fn watermark(mut self, column: &str, delay: Duration) -> Self {
        self.watermarks.push(WatermarkDecl {
            column: column.to_string(),
            delay_ms: delay.as_millis() as i64,
        });
        self
    }

    pub fn output_mode(mut self, mode: OutputMode) -> Self {
        self.options.output_mode = Some(mode);
        self
    }

    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.options.trigger = Some(trigger);
        self
    }

    pub fn checkpoint(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.checkpoint_location = Some(dir.into());
        self
    }

    pub fn max_batches(mut self, n: u64) -> Self {
        self.options.max_batches = Some(n);
        self
    }

    /// Calls `f` with every batch's output rows (Spark's foreachBatch).
    pub fn foreach_batch(
        mut self,
        f: impl FnMut(u64, &[RecordBatch]) -> Result<()> + Send + 'static,
    ) -> Self {
        self.sink = Some(Sink::Callback(Box::new(f)));
        self
    }

    /// Writes to a sink given by format and options, as `USING format OPTIONS (...)`.
    pub fn sink(mut self, format: &str, options: &[(&str, &str)]) -> Result<Self> {
        let opts: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.sink = Some(Sink::from_options(
            format,
            "sink",
            &opts,
            &uuid::Uuid::new_v4().to_string(),
        )?);
        Ok(self)
    }

    /// Plans the query; run it with `StreamingQuery::run`.
    pub fn start(self, df: DataFrame) -> Result<StreamingQuery> {
        let (_, plan) = df.into_parts();
        let planned = plan_logical(&self.ctx, plan, self.options.output_mode, &self.watermarks)?;
        let sink = self
            .sink
            .ok_or_else(|| SqlError::Query("no sink: call foreach_batch or sink".into()))?;
        StreamingQuery::assemble_parts(self.ctx, self.sources, planned, sink, self.options)
    }
}
