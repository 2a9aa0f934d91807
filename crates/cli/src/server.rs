//! `runnel server`: parse the configuration and run the broker until SIGTERM/SIGINT.

use clap::Args;
use runnel_broker::{BrokerConfig, Server};
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

fn load_config(args: &ServerArgs) -> Result<BrokerConfig, runnel_broker::ConfigError> {
    let mut pairs = match &args.config {
        Some(path) => BrokerConfig::read_properties(path)?,
        None => Vec::new(),
    };
    for o in &args.overrides {
        pairs.push(BrokerConfig::parse_override(o)?);
    }
    BrokerConfig::from_pairs(&pairs)
}

pub fn run(args: ServerArgs) -> ExitCode {
    crate::init_logging();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            errln!("runnel server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    for key in config.ignored_keys() {
        tracing::info!(
            key,
            "configuration key accepted for Kafka compatibility; it has no effect in Runnel"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("runnel server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let dirs: Vec<String> = config
            .log_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        // Before the start-up line: a SIGTERM right after it must stop the broker cleanly.
        let stop = crate::stop_signal();
        let server = match Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                errln!("runnel server: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Tests and scripts read this line to learn the port when listeners asks for 0.
        // Written with errors ignored: a reader that went away (a launcher that read only
        // this line) must not stop the broker.
        crate::output::stdout_line_lossy(format_args!("listening on {}", server.local_addr()));
        // Only when `http.listeners` is set: the client-suite harness expects exactly one
        // start-up line from a broker it configures itself.
        let http_set = server
            .broker()
            .config
            .explicit
            .contains_key("http.listeners");
        if let (Some(addr), true) = (server.http_addr(), http_set) {
            crate::output::stdout_line_lossy(format_args!("http listening on {addr}"));
        }
        for (listener, addr) in server.local_addrs() {
            tracing::info!(%listener, %addr, "listening");
        }
        tracing::info!(addr = %server.local_addr(), log_dirs = ?dirs, "broker started");
        server.run(stop).await;
        tracing::info!("broker stopped cleanly");
        ExitCode::SUCCESS
    })
}
