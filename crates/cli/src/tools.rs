//! Client-side tools: `topics`, `produce`, `consume`, `acls`, `quotas`, `links`, `mirror`, `bench`
//! and the rest, on `runnel-client`.
//!
//! Exit codes a script can rely on: 0 success, 1 an error (the message names the topic,
//! partition and Kafka error, and says what to do), 2 a usage error (clap's own, or a
//! value only found wrong at run time).

mod acls;
mod baseline;
mod bench;
mod cluster_info;
mod configs;
mod conn;
mod consume;
mod format;
mod groups;
mod links;
mod logdirs;
mod mirror;
mod partitions;
mod produce;
mod quotas;
mod records;
mod topics;

use clap::Subcommand;
use runnel_client::Compression;
use std::future::Future;
use std::process::ExitCode;

pub use cluster_info::InfoArgs;
pub use conn::ConnArgs;

#[derive(Subcommand)]
pub enum ToolCommand {
    /// Create, list, describe and delete topics (like kafka-topics).
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Produce stdin lines as records (like kafka-console-producer).
    Produce(produce::ProduceArgs),
    /// Print records of a topic (like kafka-console-consumer and kcat -C).
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups and reset their offsets (like
    /// kafka-consumer-groups).
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Describe and change topic and broker configs (like kafka-configs).
    #[command(subcommand)]
    Configs(configs::ConfigsCommand),
    /// Show each broker's log directories and move partitions between them (like
    /// kafka-log-dirs).
    #[command(subcommand)]
    Logdirs(logdirs::LogdirsCommand),
    /// Reassign partitions over brokers and elect preferred leaders (like
    /// kafka-reassign-partitions and kafka-leader-election).
    #[command(subcommand)]
    Partitions(partitions::PartitionsCommand),
    /// Delete records before an offset (like kafka-delete-records).
    #[command(subcommand)]
    Records(records::RecordsCommand),
    /// Add, remove and list ACLs (like kafka-acls).
    Acls(acls::AclsArgs),
    /// Describe and change client quotas (like kafka-configs --entity-type users/clients).
    Quotas(quotas::QuotasArgs),
    /// Measure throughput and latency, and this machine's loopback and disk baselines.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Cluster links: mirror another cluster's topics here at the same offsets, with
    /// their group offsets; promote a mirror topic to fail over.
    #[command(subcommand)]
    Links(links::LinksCommand),
    /// Copy topics to another (any Kafka-compatible) cluster as MirrorMaker 2 does:
    /// renamed topics, checkpoints, heartbeats; resumable without duplicates.
    Mirror(mirror::MirrorArgs),
}

/// Parses one tool's flags (`argv` without the program name), for unit tests.
#[cfg(test)]
pub fn parse_args<A: clap::Args>(argv: &[&str]) -> A {
    #[derive(clap::Parser)]
    struct Cli<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }
    <Cli<A> as clap::Parser>::try_parse_from(std::iter::once("tool").chain(argv.iter().copied()))
        .expect("the flags parse")
        .args
}

/// A value that is wrong for reasons clap cannot see; exits with status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn run(cmd: ToolCommand) -> ExitCode {
    block_on(async move {
        match cmd {
            ToolCommand::Topics(c) => topics::run(c).await,
            ToolCommand::Produce(a) => produce::run(a).await,
            ToolCommand::Consume(a) => consume::run(a).await,
            ToolCommand::Bench(c) => bench::run(c).await,
            ToolCommand::Configs(c) => configs::run(c).await,
            ToolCommand::Logdirs(c) => logdirs::run(c).await,
            ToolCommand::Records(c) => records::run(c).await,
            ToolCommand::Partitions(c) => partitions::run(c).await,
            ToolCommand::Groups(c) => groups::run(c).await,
            ToolCommand::Acls(a) => acls::run(a).await,
            ToolCommand::Quotas(a) => quotas::run(a).await,
            ToolCommand::Links(c) => links::run(c).await,
            ToolCommand::Mirror(a) => mirror::run(a).await,
        }
    })
}

/// `runnel cluster info`.
pub fn cluster_info(args: InfoArgs) -> ExitCode {
    block_on(cluster_info::run(args))
}

/// Runs one tool on a fresh runtime and turns its result into an exit code.
fn block_on(tool: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(tool);
    // Tasks still running (a blocked stdin reader, say) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// The reader of our stdout went away (`| head`): a normal way to stop.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints an error with its causes and a hint, and picks the exit code.
fn report(e: &anyhow::Error) -> ExitCode {
    errln!("error: {e:#}");
    if let Some(hint) = e
        .chain()
        .find_map(|c| c.downcast_ref::<runnel_client::Error>())
        .and_then(|c| c.hint())
    {
        errln!("hint: {hint}");
    }
    if e.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// Parses `--acks`: 0, 1, all (or -1).
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("{s:?} is not one of 0, 1, all")),
    }
}

pub fn acks_name(acks: i16) -> &'static str {
    match acks {
        0 => "0",
        1 => "1",
        _ => "all",
    }
}

/// Parses `--compression`: none, gzip, snappy, lz4, zstd.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    runnel_client::records::parse_compression(s)
        .ok_or_else(|| format!("{s:?} is not one of none, gzip, snappy, lz4, zstd"))
}

pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Parses `key=value` (the value may be empty or contain '=').
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Formats a byte count with binary units, e.g. "1.5 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_codecs_parse() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("-1"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
        assert_eq!(parse_compression("lz4"), Ok(Compression::Lz4));
        assert!(parse_compression("lzma").is_err());
        for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
            assert_eq!(compression_name(parse_compression(c).unwrap()), c);
        }
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), "".into())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
