//! `runnel sql` (run a streaming SQL query file) and `runnel demo tweets` (the tweet
//! generator), on `runnel-sql`. Built only with the `sql` feature.
//!
//! Exit codes: 0 the query ended (endingOffsets, availableNow, --max-batches) or was
//! interrupted; 1 an error (the message says what and where); 2 a usage error.

use clap::{Args, Subcommand};
use runnel_sql::demo::{DemoOptions, KeyBy};
use runnel_sql::tweets::GeneratorConfig;
use runnel_sql::{OutputMode, ProgressOutput, QueryOptions, Script, StreamingQuery, Trigger};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The query file (Spark SQL: see examples/tweets/).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The query text itself, instead of a file.
    #[arg(
        short = 'e',
        long = "execute",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    pub execute: Option<String>,
    /// Define ${NAME} for the query file (wins over SET NAME = ... in the file).
    #[arg(short = 'd', long = "define", value_name = "NAME=VALUE")]
    pub define: Vec<String>,
    /// Shortcut for --define bootstrap=HOST:PORT.
    #[arg(short = 'b', long = "bootstrap-server", value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Output mode (append, update, complete); overrides the sink's outputMode option.
    #[arg(long = "output-mode")]
    pub output_mode: Option<String>,
    /// Trigger: an interval ('10 seconds'), 'availableNow', or 'default'.
    #[arg(long)]
    pub trigger: Option<String>,
    /// Checkpoint directory; overrides the sink's checkpointLocation option.
    #[arg(long = "checkpoint", value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Progress on stderr after each batch: `line` (one summary line per batch that read
    /// or wrote rows), `json` (Spark's StreamingQueryProgress; a bare --progress means
    /// json) or `none`.
    #[arg(
        long,
        value_name = "FORMAT",
        num_args = 0..=1,
        default_value = "line",
        default_missing_value = "json"
    )]
    pub progress: String,
    /// Serve the query's page (the web console), and its progress and memory tables as
    /// JSON, at this address (e.g. 127.0.0.1:4040).
    #[arg(long = "http", value_name = "ADDR")]
    pub http: Option<String>,
    /// Stop after this many batches.
    #[arg(long = "max-batches")]
    pub max_batches: Option<u64>,
    /// Run the query as one of a group of processes sharing its work (Kafka Streams'
    /// application.id; also `SET application.id = ID` in the file): the processes with
    /// the same id split the source partitions, state moves between them through
    /// changelog topics, and output is exactly-once.
    #[arg(long = "application-id", value_name = "ID")]
    pub application_id: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum DemoCommand {
    /// Produce generated tweets (Twitter v1.1 JSON) to a topic.
    Tweets(TweetsArgs),
}

#[derive(Args, Debug)]
pub struct TweetsArgs {
    /// Broker(s) to produce to, host:port[,host:port...] (--bootstrap is the old spelling).
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        visible_alias = "bootstrap-servers",
        alias = "bootstrap",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    #[arg(short = 't', long, default_value = "tweets")]
    pub topic: String,
    /// Tweets per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Stop after this many tweets (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Seed of the generator: the same seed and --start-ms give the same tweets.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first tweet, ms since the epoch (default: now).
    #[arg(long = "start-ms")]
    pub start_ms: Option<i64>,
    /// Tweets per second of event time (default: --rate, or 1000 when --rate is 0).
    #[arg(long = "events-per-second")]
    pub events_per_second: Option<u64>,
    /// Record key: id, user or none.
    #[arg(long, default_value = "id")]
    pub key: String,
    /// Produce tweets from a JSON-lines file instead of generating them.
    #[arg(long = "from-file", value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// Write generated tweets to a JSON-lines file instead of producing them.
    #[arg(long = "to-file", value_name = "FILE", conflicts_with = "from_file")]
    pub to_file: Option<PathBuf>,
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    errln!("runnel: {msg}");
    ExitCode::from(2)
}

pub fn run_sql(args: SqlArgs) -> ExitCode {
    crate::init_logging();
    let text = match (&args.file, &args.execute) {
        (Some(f), _) => match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                errln!("runnel sql: cannot read {}: {e}", f.display());
                return ExitCode::from(1);
            }
        },
        (None, Some(sql)) => sql.clone(),
        (None, None) => return usage("sql: give a query file with -f FILE or a query with -e SQL"),
    };
    let mut defines = BTreeMap::new();
    for d in &args.define {
        match d.split_once('=') {
            Some((k, v)) => {
                defines.insert(k.trim().to_string(), v.to_string());
            }
            None => return usage(format!("--define {d:?}: expected NAME=VALUE")),
        }
    }
    if let Some(b) = &args.bootstrap {
        defines.insert("bootstrap".into(), b.clone());
    }
    let output_mode = match args
        .output_mode
        .as_deref()
        .map(OutputMode::parse)
        .transpose()
    {
        Ok(m) => m,
        Err(e) => return usage(e),
    };
    let trigger = match args.trigger.as_deref().map(Trigger::parse).transpose() {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let progress = match ProgressOutput::parse(&args.progress) {
        Ok(p) => p,
        Err(e) => return usage(format!("--progress: {e}")),
    };
    let script = match Script::parse(&text, &defines) {
        Ok(s) => s,
        Err(e) => {
            errln!("runnel sql: {e}");
            return ExitCode::from(1);
        }
    };
    let options = QueryOptions {
        output_mode,
        trigger,
        checkpoint_location: args.checkpoint.clone(),
        query_name: None,
        max_batches: args.max_batches,
        progress,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("runnel sql: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let app_id = match runnel_sql::group::application_id(&script, args.application_id.as_deref()) {
        Ok(id) => id,
        Err(e) => return usage(e),
    };
    if let Some(id) = app_id {
        if args.http.is_some() {
            return usage("--http is not supported with an application id yet");
        }
        return finish(rt.block_on(async move {
            let mut query = runnel_sql::GroupQuery::from_script(&script, options, &id).await?;
            let stop = query.stop_handle();
            tokio::spawn(async move {
                crate::stop_signal().await;
                errln!("runnel sql: stopping after the current batch");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            errln!("runnel sql: query running as part of application {id}; Ctrl-C or SIGTERM stops this process (its partitions move to the others)");
            query.run().await
        }));
    }
    let query_text = text.clone();
    let result = rt.block_on(async move {
        let mut query = StreamingQuery::from_script(&script, options).await?;
        if let Some(addr) = &args.http {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| runnel_sql::SqlError::io(format!("--http {addr}"), e))?;
            errln!(
                "runnel sql: console at http://{}/ (progress as JSON at /progress)",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            let mut tables = BTreeMap::new();
            if let Some((name, t)) = query.memory_table() {
                tables.insert(name, t);
            }
            let state = runnel_sql::http::HttpState {
                progress: query.progress_log(),
                tables: std::sync::Arc::new(tables),
                query: query_text,
                // The broker's console: its streaming-queries page renders this server.
                assets: Some(runnel_broker::http::console::asset_for_path),
                content_security_policy: runnel_broker::http::console::CONTENT_SECURITY_POLICY,
            };
            tokio::spawn(runnel_sql::http::serve(listener, state));
        }
        let stop = query.stop_handle();
        // Ctrl-C or SIGTERM (a service manager, `kill`): stop after the current batch.
        tokio::spawn(async move {
            crate::stop_signal().await;
            errln!("runnel sql: stopping after the current batch");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        errln!(
            "runnel sql: query running ({}); Ctrl-C or SIGTERM stops it after the current batch",
            args.file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "-e".to_string())
        );
        query.run().await
    });
    finish(result)
}

fn finish(result: runnel_sql::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("runnel sql: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn run_demo(cmd: DemoCommand) -> ExitCode {
    crate::init_logging();
    let DemoCommand::Tweets(a) = cmd;
    let key = match a.key.as_str() {
        "id" => KeyBy::Id,
        "user" => KeyBy::User,
        "none" => KeyBy::None,
        other => return usage(format!("--key {other:?}: expected id, user or none")),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let generator = GeneratorConfig {
        seed: a.seed,
        start_ms: a.start_ms.unwrap_or(now),
        events_per_second: a
            .events_per_second
            .unwrap_or(if a.rate == 0 { 1000 } else { a.rate })
            .max(1),
        ..GeneratorConfig::default()
    };
    if let Some(path) = &a.to_file {
        let Some(count) = a.count else {
            return usage("--to-file needs --count");
        };
        return match runnel_sql::demo::write_tweets_file(path, &generator, count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("runnel demo tweets: {e}");
                ExitCode::from(1)
            }
        };
    }
    let opts = DemoOptions {
        bootstrap: a.bootstrap,
        topic: a.topic,
        rate: a.rate,
        count: a.count,
        key,
        from_file: a.from_file,
        generator,
        producer: Vec::new(),
        progress_every: Some(std::time::Duration::from_secs(5)),
        stop: Default::default(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("runnel demo: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = opts.stop.clone();
    let result = rt.block_on(async {
        // Ctrl-C or SIGTERM: flush what was sent and print the summary.
        tokio::spawn(async move {
            crate::stop_signal().await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        runnel_sql::demo::produce_tweets(&opts).await
    });
    match result {
        Ok(s) => {
            errln!(
                "runnel demo tweets: sent {} tweets to {} in {:.1} s ({:.0}/s)",
                s.sent,
                opts.topic,
                s.elapsed.as_secs_f64(),
                s.sent as f64 / s.elapsed.as_secs_f64().max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("runnel demo tweets: {e}");
            ExitCode::from(1)
        }
    }
}
