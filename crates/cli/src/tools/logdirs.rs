//! `runnel logdirs describe|move`: each broker's data directories, the partitions in each
//! with their sizes and the disk's space (like `kafka-log-dirs`), and moving a partition
//! to another directory of the same broker (AlterReplicaLogDirs).

use super::{human_bytes, ConnArgs};
use anyhow::Context;
use clap::Subcommand;
use runnel_client::{Client, ClientConfig, Error, LogDirDescription, ResponseError};

#[derive(Subcommand)]
pub enum LogdirsCommand {
    /// Show each log directory: its partitions with their sizes, and the disk's total and
    /// usable bytes.
    Describe {
        /// Only this broker (all brokers when omitted).
        #[arg(long, value_name = "ID")]
        broker: Option<i32>,
        /// Only partitions of these topics (repeatable).
        #[arg(long = "topic", value_name = "NAME")]
        topics: Vec<String>,
        /// One JSON object per directory instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Move a partition to another log directory of the broker that holds it, online.
    Move {
        #[arg(long, value_name = "NAME")]
        topic: String,
        #[arg(long, value_name = "P")]
        partition: i32,
        /// The target directory: one of the broker's log.dirs (see `runnel logdirs describe`).
        #[arg(long, value_name = "PATH")]
        dir: String,
        /// The broker whose replica moves (default: the partition's leader).
        #[arg(long, value_name = "ID")]
        broker: Option<i32>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub async fn run(cmd: LogdirsCommand) -> anyhow::Result<()> {
    match cmd {
        LogdirsCommand::Describe {
            broker,
            topics,
            json,
            conn,
        } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let brokers = match broker {
                Some(id) => vec![id],
                None => client.broker_ids().await?,
            };
            let filter = (!topics.is_empty()).then_some(topics.as_slice());
            for id in brokers {
                let dirs = client.describe_log_dirs(id, filter).await?;
                for d in &dirs {
                    if json {
                        outln!("{}", dir_json(d));
                    } else {
                        out!("{}", dir_text(d));
                    }
                }
            }
        }
        LogdirsCommand::Move {
            topic,
            partition,
            dir,
            broker,
            conn,
        } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let broker = match broker {
                Some(b) => b,
                None => leader_of(&client, &topic, partition).await?,
            };
            match client
                .alter_replica_log_dir(broker, &topic, partition, &dir)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kafka_error() == Some(ResponseError::LogDirNotFound) => {
                    let dirs = client
                        .describe_log_dirs(broker, None)
                        .await
                        .unwrap_or_default();
                    let paths: Vec<&str> = dirs.iter().map(|d| d.path.as_str()).collect();
                    return Err(anyhow::Error::from(e).context(format!(
                        "{dir} is not a log directory of broker {broker}; use one of: {}",
                        paths.join(", ")
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            let topics = [topic.clone()];
            let dirs = client
                .describe_log_dirs(broker, Some(&topics))
                .await
                .context("the move was accepted, but the log dirs cannot be described")?;
            match where_is(&dirs, &topic, partition) {
                Some((path, false)) if same_dir(path, &dir) => {
                    outln!("Moved {topic}/{partition} to {path} on broker {broker}.")
                }
                _ => outln!(
                    "Moving {topic}/{partition} to {dir} on broker {broker}; \
                     runnel logdirs describe --topic {topic} shows when it is done."
                ),
            }
        }
    }
    Ok(())
}

async fn leader_of(client: &Client, topic: &str, partition: i32) -> anyhow::Result<i32> {
    let t = client.topic(topic).await?;
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .ok_or(Error::UnknownPartition {
            topic: topic.into(),
            partition,
            count: t.partitions.len(),
        })?;
    if p.leader < 0 {
        return Err(Error::NoLeader {
            topic: topic.into(),
            partition,
        }
        .into());
    }
    Ok(p.leader)
}

fn same_dir(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The directory holding `topic`/`partition` and whether it is a future (moving) replica;
/// the current replica wins over a future one.
fn where_is<'a>(
    dirs: &'a [LogDirDescription],
    topic: &str,
    partition: i32,
) -> Option<(&'a str, bool)> {
    let mut found = None;
    for d in dirs {
        for p in &d.partitions {
            if p.topic == topic && p.partition == partition {
                if !p.is_future {
                    return Some((d.path.as_str(), false));
                }
                found = Some((d.path.as_str(), true));
            }
        }
    }
    found
}

fn opt_bytes(b: Option<i64>) -> String {
    b.map_or("unknown".to_string(), |b| human_bytes(b.max(0) as u64))
}

/// One directory: a header line, then one line per partition.
pub fn dir_text(d: &LogDirDescription) -> String {
    let mut s = format!(
        "Broker: {}\tLogDir: {}\tPartitions: {}\tSize: {}\tTotal: {}\tUsable: {}",
        d.broker,
        d.path,
        d.partitions.len(),
        human_bytes(d.size_bytes().max(0) as u64),
        opt_bytes(d.total_bytes),
        opt_bytes(d.usable_bytes),
    );
    if d.error_code != 0 {
        let e = Error::kafka("", d.error_code, None).kafka_error();
        s.push_str(&format!(
            "\tError: {}",
            e.map(|e| format!("{e:?}")).unwrap_or_default()
        ));
    }
    s.push('\n');
    for p in &d.partitions {
        s.push_str(&format!(
            "\t{}-{}\tSize: {} ({} bytes)\tOffsetLag: {}{}\n",
            p.topic,
            p.partition,
            human_bytes(p.size_bytes.max(0) as u64),
            p.size_bytes,
            p.offset_lag,
            if p.is_future { "\t(moving here)" } else { "" }
        ));
    }
    s
}

pub fn dir_json(d: &LogDirDescription) -> serde_json::Value {
    serde_json::json!({
        "broker": d.broker,
        "log_dir": d.path,
        "error_code": d.error_code,
        "total_bytes": d.total_bytes,
        "usable_bytes": d.usable_bytes,
        "size_bytes": d.size_bytes(),
        "partitions": d.partitions.iter().map(|p| serde_json::json!({
            "topic": p.topic,
            "partition": p.partition,
            "size_bytes": p.size_bytes,
            "offset_lag": p.offset_lag,
            "is_future": p.is_future,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use runnel_client::LogDirPartition;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: LogdirsCommand,
    }

    fn dir(path: &str, parts: &[(&str, i32, bool)]) -> LogDirDescription {
        LogDirDescription {
            broker: 1,
            path: path.into(),
            error_code: 0,
            partitions: parts
                .iter()
                .map(|&(t, p, f)| LogDirPartition {
                    topic: t.into(),
                    partition: p,
                    size_bytes: 2048,
                    offset_lag: 0,
                    is_future: f,
                })
                .collect(),
            total_bytes: Some(1 << 30),
            usable_bytes: None,
        }
    }

    #[test]
    fn move_needs_topic_partition_and_dir() {
        let parse =
            |a: &[&str]| Cli::try_parse_from(std::iter::once("logdirs").chain(a.iter().copied()));
        assert!(parse(&["move", "--topic", "t", "--partition", "0", "--dir", "/d"]).is_ok());
        assert!(parse(&["move", "--topic", "t", "--dir", "/d"]).is_err());
        assert!(parse(&["move", "--topic", "t", "--partition", "x", "--dir", "/d"]).is_err());
        assert!(parse(&["describe", "--topic", "a", "--topic", "b", "--json"]).is_ok());
    }

    #[test]
    fn directories_print_sizes_and_space() {
        let d = dir("/d1", &[("t", 0, false), ("t", 1, true)]);
        let text = dir_text(&d);
        assert!(
            text.starts_with("Broker: 1\tLogDir: /d1\tPartitions: 2\tSize: 4.0 KiB\tTotal: 1.0 GiB\tUsable: unknown\n"),
            "{text}"
        );
        assert!(
            text.contains("\tt-1\tSize: 2.0 KiB (2048 bytes)\tOffsetLag: 0\t(moving here)\n"),
            "{text}"
        );
        let j = dir_json(&d);
        assert_eq!(j["size_bytes"], 4096);
        assert_eq!(j["usable_bytes"], serde_json::Value::Null);
        assert_eq!(j["partitions"][1]["is_future"], true);
    }

    #[test]
    fn the_current_replica_is_found_before_a_future_one() {
        let dirs = vec![dir("/a", &[("t", 0, true)]), dir("/b", &[("t", 0, false)])];
        assert_eq!(where_is(&dirs, "t", 0), Some(("/b", false)));
        assert_eq!(where_is(&dirs[..1], "t", 0), Some(("/a", true)));
        assert_eq!(where_is(&dirs, "t", 1), None);
        assert!(same_dir("/a/", "/a"));
    }
}
