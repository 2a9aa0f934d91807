//! The `runnel` binary: one executable for the broker and every tool around it.

mod server;
mod tools;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "runnel", version, about = "A Kafka-compatible broker and streaming engine in one binary")]
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
