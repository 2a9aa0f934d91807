//! The `runnel` binary: one executable for the broker and every tool around it.

mod server;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::run(args),
        Command::Tools(cmd) => tools::run(cmd),
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
