//! `runnel records delete`: delete a partition's records before an offset (DeleteRecords,
//! like `kafka-delete-records`); prints each partition's new low watermark.

use super::{ConnArgs, UsageError};
use clap::Subcommand;
use runnel_client::ClientConfig;

#[derive(Subcommand)]
pub enum RecordsCommand {
    /// Delete records before an offset; consumers then start at the new low watermark.
    Delete {
        #[arg(long, value_name = "NAME")]
        topic: String,
        /// Only this partition (repeatable; all partitions when omitted).
        #[arg(long = "partition", value_name = "P")]
        partitions: Vec<i32>,
        /// Delete records with offsets below this one; "end" deletes every record.
        #[arg(long, value_name = "OFFSET", value_parser = parse_before, allow_hyphen_values = true)]
        before: i64,
        /// One JSON object per partition instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// An offset (0 or more), or "end"/"latest"/-1 for the high watermark (Kafka's -1).
pub fn parse_before(s: &str) -> Result<i64, String> {
    match s {
        "end" | "latest" | "-1" => Ok(-1),
        _ => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(format!(
                "{s:?} is not an offset (a number of 0 or more, or \"end\")"
            )),
        },
    }
}

pub async fn run(cmd: RecordsCommand) -> anyhow::Result<()> {
    match cmd {
        RecordsCommand::Delete {
            topic,
            partitions,
            before,
            json,
            conn,
        } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let partitions = if partitions.is_empty() {
                let t = client.topic(&topic).await?;
                t.partitions.iter().map(|p| p.partition).collect()
            } else {
                let mut ps = partitions;
                ps.sort_unstable();
                ps.dedup();
                if let Some(p) = ps.iter().find(|&&p| p < 0) {
                    return Err(
                        UsageError(format!("--partition {p} is not a partition number")).into(),
                    );
                }
                ps
            };
            let offsets: Vec<(i32, i64)> = partitions.iter().map(|&p| (p, before)).collect();
            let results = client.delete_records(&topic, &offsets).await?;
            let mut failed = Vec::new();
            for (partition, result) in results {
                match result {
                    Ok(low) if json => outln!(
                        "{}",
                        serde_json::json!({"topic": topic, "partition": partition, "low_watermark": low})
                    ),
                    Ok(low) => {
                        outln!("Topic: {topic}\tPartition: {partition}\tLowWatermark: {low}")
                    }
                    Err(e) => {
                        errln!("error: {e}");
                        if let Some(h) = e.hint() {
                            errln!("hint: {h}");
                        }
                        failed.push(partition);
                    }
                }
            }
            if !failed.is_empty() {
                let list: Vec<String> = failed.iter().map(|p| format!("{topic}/{p}")).collect();
                anyhow::bail!(
                    "records were not deleted from {} (see the errors above)",
                    list.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: RecordsCommand,
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_before("0"), Ok(0));
        assert_eq!(parse_before("42"), Ok(42));
        assert_eq!(parse_before("end"), Ok(-1));
        assert_eq!(parse_before("-1"), Ok(-1));
        assert!(parse_before("-2").is_err());
        assert!(parse_before("x").is_err());
    }

    #[test]
    fn delete_needs_topic_and_before() {
        let parse =
            |a: &[&str]| Cli::try_parse_from(std::iter::once("records").chain(a.iter().copied()));
        let Ok(Cli {
            cmd: RecordsCommand::Delete {
                partitions, before, ..
            },
        }) = parse(&[
            "delete",
            "--topic",
            "t",
            "--partition",
            "1",
            "--partition",
            "2",
            "--before",
            "5",
        ])
        else {
            panic!()
        };
        assert_eq!((partitions, before), (vec![1, 2], 5));
        assert!(parse(&["delete", "--topic", "t"]).is_err());
        assert!(parse(&["delete", "--before", "5"]).is_err());
        assert!(parse(&["delete", "--topic", "t", "--before", "-1"]).is_ok());
    }
}
