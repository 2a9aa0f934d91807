//! Client-side tools: topics, produce, consume, bench. (Owned by the tools work.)
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ToolCommand {}

pub fn run(cmd: ToolCommand) -> ExitCode {
    match cmd {}
}
