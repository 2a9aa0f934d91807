//! Runnel's streaming SQL engine: Spark Structured Streaming semantics over Kafka topics.
//!
//! Code map (see README.md for the design and what state grows):
//! - `script`     the query file: statements, declarations, WATERMARK clause
//! - `ddl`        Spark DDL schema strings and interval strings
//! - `functions`  Spark functions as DataFusion UDFs (from_json, window, ...)
//! - `json_projection` JSON objects cut to the members a from_json schema names
//! - `source`     the Kafka source (Spark's options and row schema)
//! - `file_source` the streaming text-file source; `StreamSource`, any streaming source
//! - `table`      slot tables: how per-batch rows reach DataFusion plans
//! - `plan`       splitting a query around its stateful operator; Spark's rules
//! - `operator`   the interface of the stateful operators; `execute`
//! - `aggregate`  the stateful aggregation operator
//! - `aggregate_state` an aggregation's state: keys, windows, eviction, state files
//! - `accumulator` the aggregate functions' accumulators
//! - `output_mode` Spark's output modes
//! - `join`       the stream-stream join operator and its state
//! - `dedup`      deduplication (DISTINCT [ON (...)] [WITHIN WATERMARK]) and its state
//! - `checkpoint` offsets/commits logs and state snapshots
//! - `options`    the option names each source and sink knows; typo suggestions
//! - `sink`       console, kafka, files, memory, callback sinks
//! - `engine`     the micro-batch driver, triggers, recovery
//! - `group`      multi-process queries: a consumer group, repartition and changelog topics, transactions
//! - `progress`   Spark-shaped progress reports
//! - `http`       progress and memory tables over HTTP
//! - `tweets`, `demo`  the deterministic tweet generator and its producer
//! - `api`        the Rust builder API (no SQL)

pub mod accumulator;
pub mod aggregate;
pub mod aggregate_state;
pub mod api;
pub mod casts;
pub mod checkpoint;
pub mod ddl;
pub mod dedup;
pub mod demo;
pub mod dialect;
pub mod engine;
pub mod error;
pub mod file_source;
pub mod functions;
pub mod group;
pub mod http;
pub mod join;
pub mod json_projection;
pub mod operator;
pub mod options;
pub mod output_mode;
pub mod plan;
pub mod progress;
pub mod script;
pub mod sink;
pub mod source;
pub mod table;
pub mod tweets;

pub use engine::{QueryOptions, StreamingQuery, Trigger};
pub use error::{Result, SqlError};
pub use group::GroupQuery;
pub use output_mode::OutputMode;
pub use progress::ProgressOutput;
pub use script::Script;

/// Re-exported so users of the API get matching versions.
pub use datafusion;
