//! The `runnel` binary: one executable for the broker and every tool around it.

mod cluster_cmd;
mod server;
#[cfg(feature = "sql")]
mod sql_cmd;
mod tools;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A Kafka-compatible broker and streaming engine in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (Kafka protocol on 127.0.0.1:9092 by default).
    Server(server::ServerArgs),
    #[command(flatten)]
    Tools(tools::ToolCommand),
    /// Run a local multi-node cluster (`runnel cluster local --nodes 3`).
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Run a streaming SQL query (Spark Structured Streaming semantics) from a file.
    #[cfg(feature = "sql")]
    Sql(sql_cmd::SqlArgs),
    /// Demo data generators (`runnel demo tweets`).
    #[cfg(feature = "sql")]
    #[command(subcommand)]
    Demo(sql_cmd::DemoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::run(args),
        Command::Tools(cmd) => tools::run(cmd),
        Command::Cluster(cmd) => cluster_cmd::run(cmd),
        #[cfg(feature = "sql")]
        Command::Sql(args) => sql_cmd::run_sql(args),
        #[cfg(feature = "sql")]
        Command::Demo(cmd) => sql_cmd::run_demo(cmd),
    }
}

/// Logs go to stderr (stdout is for data and the start-up line); `RUST_LOG` filters them.
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
