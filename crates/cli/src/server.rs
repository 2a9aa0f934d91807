//! `runnel server`: parse the configuration and run the broker until SIGTERM/SIGINT.
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct ServerArgs {
    /// A server.properties file with Kafka's key names.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override one configuration key, e.g. `--set num.partitions=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(_args: ServerArgs) -> ExitCode {
    ExitCode::FAILURE
}
