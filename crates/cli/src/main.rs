//! The `runnel` binary: one executable for the broker and every tool around it.
//!
//! Output never panics: `outln!`/`out!` write to stdout and end the process quietly
//! (exit 0) when its reader went away (`runnel topics list | head -1`), as `head`'s
//! partners do in a shell; `errln!` writes to stderr and ignores a closed stderr. Plain
//! `println!` would panic on EPIPE ("failed printing to stdout").

/// `println!` to stdout; a closed stdout ends the process with status 0.
macro_rules! outln {
    () => { $crate::output::stdout_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::stdout_line(format_args!($($arg)*)) };
}
/// `print!` to stdout; a closed stdout ends the process with status 0.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout_text(format_args!($($arg)*)) };
}
/// `eprintln!` that ignores a closed stderr.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::stderr_line(format_args!($($arg)*)) };
}

mod cluster_cmd;
mod cluster_security;
mod output;
mod server;
#[cfg(feature = "sql")]
mod sql_cmd;
mod tools;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A Kafka-compatible broker and streaming engine in one binary",
    after_help = "Tools find the cluster with -b/--bootstrap-server, -X bootstrap.servers=..., \
                  --command-config FILE or $RUNNEL_BROKERS (default 127.0.0.1:9092)."
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
    /// A local multi-node cluster (`runnel cluster local --nodes 3`) and `cluster info`.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Run a streaming SQL query (Spark Structured Streaming semantics) from a file.
    #[cfg(feature = "sql")]
    Sql(sql_cmd::SqlArgs),
    /// Demo data generators (`runnel demo tweets`).
    #[cfg(feature = "sql")]
    #[command(subcommand)]
    Demo(sql_cmd::DemoCommand),
    /// Not in this build: it was built without the `sql` feature.
    #[cfg(not(feature = "sql"))]
    #[command(hide = true, disable_help_flag = true)]
    Sql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Not in this build: it was built without the `sql` feature.
    #[cfg(not(feature = "sql"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell
    /// (e.g. `runnel completions bash > ~/.local/share/bash-completion/completions/runnel`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of runnel (e.g. `runnel man | man -l -`).
    Man,
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
        #[cfg(not(feature = "sql"))]
        Command::Sql { .. } | Command::Demo { .. } => {
            errln!("{}", WITHOUT_SQL);
            ExitCode::from(2)
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "runnel", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
            ExitCode::SUCCESS
        }
        Command::Man => {
            let mut buf = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut buf) {
                Ok(()) => {
                    out!("{}", String::from_utf8_lossy(&buf));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    errln!("runnel man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What `runnel sql` and `runnel demo` say in a broker-only build.
#[cfg(not(feature = "sql"))]
const WITHOUT_SQL: &str = "runnel: `sql` and `demo` are not in this build (it was built without \
the `sql` feature, which brings the SQL engine, DataFusion).\n\
hint: build the full binary: cargo install --path crates/cli (or cargo build --release -p runnel); \
it takes much longer to compile than the broker alone";

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM: how every long-running command
/// learns to stop cleanly. The handlers are installed by this call, not at the first poll,
/// so a signal that comes right after a start-up line is caught. Needs a Tokio runtime.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Logs go to stderr (stdout is for data and the start-up line); `RUST_LOG` filters them.
/// Colours only when stderr is a terminal: a log file or a pipe gets plain text.
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::stderr_is_terminal())
        // Its own report of a failed write is an eprintln!, which panics when stderr is
        // closed: a broker must outlive whoever read its stderr.
        .log_internal_errors(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap checks duplicate flags, conflicting ids and defaults here, not at build time.
        Cli::command().debug_assert();
    }

    #[test]
    fn kafka_and_kcat_spellings_parse() {
        for line in [
            "runnel topics create --topic t --partitions 3 --replication-factor 1",
            "runnel topics create t -p 3",
            "runnel topics delete --topic t",
            "runnel topics describe --topic t",
            "runnel topics list --json",
            "runnel consume -t t -o beginning -e",
            "runnel consume -t t -o -5",
            "runnel consume -t t -o s@1700000000000",
            "runnel consume --topic t --group g -X auto.offset.reset=earliest",
            "runnel topics list --command-config c.properties",
            "runnel topics list -X bootstrap.servers=h:1 --timeout 2",
            "runnel consume --topic t --consumer.config c.properties --consumer-property client.id=x",
            "runnel produce --topic t --broker-list h:1 --producer-property client.id=x",
            "runnel cluster info --json -b h:1",
            "runnel completions bash",
            "runnel man",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{line}: {e}");
            }
        }
    }

    #[test]
    fn a_misspelled_flag_names_the_closest_one() {
        let Err(e) = Cli::try_parse_from(["runnel", "topics", "list", "--bootstrap-sever", "x"])
        else {
            panic!("a misspelled flag parsed");
        };
        let text = e.to_string();
        assert!(text.contains("--bootstrap-server"), "{text}");
    }
}
