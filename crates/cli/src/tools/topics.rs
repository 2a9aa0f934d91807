//! `runnel topics create|list|describe|delete|alter`, with kafka-topics' output shapes.

use super::{parse_key_value, ConnArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use runnel_client::{ClientConfig, ClusterMetadata, Error, NewTopic, ResponseError, TopicMetadata};

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        #[command(flatten)]
        name: TopicArg,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's default).
        #[arg(long, short = 'r', value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: Option<i16>,
        /// A topic configuration, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List topic names, one a line.
    List {
        /// One JSON object per topic: name, partitions, replication factor, internal.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show partitions, leaders, replicas and in-sync replicas of one topic or all.
    Describe {
        #[command(flatten)]
        name: OptionalTopicArg,
        /// One JSON object per topic instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add partitions to a topic and change its configs (keys not named keep their values).
    Alter {
        #[command(flatten)]
        name: TopicArg,
        /// The new total number of partitions (Kafka can add partitions, not remove them).
        #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        #[command(flatten)]
        ops: super::configs::AlterOps,
        /// Ask the broker to validate the changes without applying them.
        #[arg(long)]
        validate_only: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a topic and its data.
    Delete {
        #[command(flatten)]
        name: TopicArg,
        /// Succeed if the topic does not exist.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// A topic named positionally (`topics create T`) or as Kafka's tools do (`--topic T`).
#[derive(Args, Debug)]
pub struct TopicArg {
    /// Topic name.
    #[arg(value_name = "TOPIC", required_unless_present = "topic")]
    name: Option<String>,
    /// Topic name (kafka-topics' spelling of the positional TOPIC).
    #[arg(long = "topic", value_name = "TOPIC", conflicts_with = "name")]
    topic: Option<String>,
}

impl TopicArg {
    fn get(self) -> String {
        self.name.or(self.topic).unwrap_or_default()
    }
}

/// [`TopicArg`] where leaving the topic out means every topic.
#[derive(Args, Debug)]
pub struct OptionalTopicArg {
    /// Topic name (every topic when omitted).
    #[arg(value_name = "TOPIC")]
    name: Option<String>,
    /// Topic name (kafka-topics' spelling of the positional TOPIC).
    #[arg(long = "topic", value_name = "TOPIC", conflicts_with = "name")]
    topic: Option<String>,
}

pub async fn run(cmd: TopicsCommand) -> anyhow::Result<()> {
    match cmd {
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            conn,
        } => {
            let name = name.get();
            let client = conn.connect(ClientConfig::default()).await?;
            let topic = NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs,
            };
            match client.create_topic(&topic).await {
                Ok(()) => outln!("Created topic {name}."),
                Err(e)
                    if if_not_exists
                        && e.kafka_error() == Some(ResponseError::TopicAlreadyExists) =>
                {
                    outln!("Topic {name} already exists.")
                }
                Err(e) => return Err(e.into()),
            }
        }
        TopicsCommand::List { json, conn } => {
            let client = conn.connect(ClientConfig::default()).await?;
            if json {
                let metadata = client.metadata(None, false).await?;
                let mut topics = select_topics(&metadata, None)?;
                topics.sort_by(|a, b| a.name.cmp(&b.name));
                for t in topics {
                    outln!("{}", list_json(t));
                }
            } else {
                for name in client.list_topics().await? {
                    outln!("{name}");
                }
            }
        }
        TopicsCommand::Describe { name, json, conn } => {
            let name = name.name.or(name.topic);
            let client = conn.connect(ClientConfig::default()).await?;
            let names = name.as_ref().map(|n| vec![n.clone()]);
            let metadata = client.metadata(names.as_deref(), false).await?;
            let topics = select_topics(&metadata, name.as_deref())?;
            for t in topics {
                if json {
                    outln!("{}", describe_json(t));
                } else {
                    out!("{}", describe_text(t));
                }
            }
        }
        TopicsCommand::Alter {
            name,
            partitions,
            ops,
            validate_only,
            conn,
        } => alter(name.get(), partitions, ops, validate_only, conn).await?,
        TopicsCommand::Delete {
            name,
            if_exists,
            conn,
        } => {
            let name = name.get();
            let client = conn.connect(ClientConfig::default()).await?;
            match client.delete_topic(&name).await {
                Ok(()) => outln!("Deleted topic {name}."),
                Err(e) if e.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => {
                    if !if_exists {
                        // The client's hint says "create it", which is no advice for a delete.
                        anyhow::bail!(
                            "cannot delete topic {name}: it does not exist\n\
                             hint: runnel topics list shows the topics there are \
                             (--if-exists makes this a success)"
                        );
                    }
                    outln!("Topic {name} does not exist.")
                }
                Err(e) => return Err(e).with_context(|| format!("cannot delete topic {name}")),
            }
        }
    }
    Ok(())
}

/// `topics alter`: partitions first, then configs.
async fn alter(
    name: String,
    partitions: Option<i32>,
    ops: super::configs::AlterOps,
    validate_only: bool,
    conn: ConnArgs,
) -> anyhow::Result<()> {
    if partitions.is_none() && ops.is_empty() {
        return Err(super::UsageError(
            "nothing to change: give --partitions N and/or --set KEY=VALUE, --delete KEY".into(),
        )
        .into());
    }
    let ops = ops.to_ops()?;
    let client = conn.connect(ClientConfig::default()).await?;
    let verb = if validate_only {
        "Validated"
    } else {
        "Updated"
    };
    if let Some(n) = partitions {
        let current = client
            .metadata(Some(std::slice::from_ref(&name)), false)
            .await
            .ok()
            .and_then(|m| {
                m.topics
                    .into_iter()
                    .find(|t| t.name == name && t.error_code == 0)
            })
            .map(|t| t.partitions.len());
        if current == Some(n as usize) {
            outln!("Topic {name} already has {n} partitions.");
        } else {
            match client.create_partitions(&name, n, validate_only).await {
                Ok(()) => {}
                // The client's hint is about creating topics; this is about growing one.
                Err(e) if e.kafka_error() == Some(ResponseError::InvalidPartitions) => {
                    anyhow::bail!(
                        "{e}\nhint: Kafka can add partitions but not remove them: give \
                         --partitions more than the current count{}",
                        current.map(|c| format!(" ({c})")).unwrap_or_default()
                    );
                }
                Err(e) => return Err(e.into()),
            }
            match (validate_only, current) {
                (true, _) => outln!("Validated: topic {name} can grow to {n} partitions."),
                (false, Some(c)) => outln!("Topic {name} now has {n} partitions (was {c})."),
                (false, None) => outln!("Topic {name} now has {n} partitions."),
            }
        }
    }
    if !ops.is_empty() {
        let resource = runnel_client::ConfigResource::Topic(name.clone());
        client
            .incremental_alter_configs(&resource, &ops, validate_only)
            .await?;
        outln!(
            "{verb} configs of topic {name}: {}.",
            super::configs::describe_ops(&ops)
        );
    }
    Ok(())
}

/// The topics to describe; a named topic that the broker reports with an error fails.
fn select_topics<'a>(
    metadata: &'a ClusterMetadata,
    name: Option<&str>,
) -> anyhow::Result<Vec<&'a TopicMetadata>> {
    match name {
        None => Ok(metadata
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .collect()),
        Some(name) => {
            let t = metadata.topics.iter().find(|t| t.name == name);
            let code = t.map_or(ResponseError::UnknownTopicOrPartition.code(), |t| {
                t.error_code
            });
            if code != 0 {
                return Err(Error::kafka(format!("describe topic {name}"), code, None).into());
            }
            Ok(t.into_iter().collect())
        }
    }
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// kafka-topics --describe's layout.
fn describe_text(t: &TopicMetadata) -> String {
    let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
    let mut s = format!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\n",
        t.name,
        t.topic_id,
        t.partitions.len(),
        rf
    );
    for p in &t.partitions {
        s.push_str(&format!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            t.name,
            p.partition,
            if p.leader < 0 {
                "none".to_string()
            } else {
                p.leader.to_string()
            },
            join_ids(&p.replicas),
            join_ids(&p.isr)
        ));
        if !p.offline_replicas.is_empty() {
            s.push_str(&format!("\tOffline: {}", join_ids(&p.offline_replicas)));
        }
        if p.error_code != 0 {
            s.push_str(&format!(
                "\tError: {}",
                Error::kafka("", p.error_code, None).kafka_error().unwrap()
            ));
        }
        s.push('\n');
    }
    s
}

fn list_json(t: &TopicMetadata) -> serde_json::Value {
    serde_json::json!({
        "topic": t.name,
        "partitions": t.partitions.len(),
        "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
        "internal": t.is_internal,
    })
}

fn describe_json(t: &TopicMetadata) -> serde_json::Value {
    serde_json::json!({
        "topic": t.name,
        "topic_id": t.topic_id,
        "internal": t.is_internal,
        "partitions": t.partitions.iter().map(|p| serde_json::json!({
            "partition": p.partition,
            "leader": p.leader,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "offline": p.offline_replicas,
            "error_code": p.error_code,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::PartitionMetadata;

    fn topic() -> TopicMetadata {
        TopicMetadata {
            name: "t".into(),
            topic_id: "id".into(),
            is_internal: false,
            partitions: (0..2)
                .map(|p| PartitionMetadata {
                    partition: p,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    offline_replicas: vec![],
                    error_code: 0,
                })
                .collect(),
            error_code: 0,
        }
    }

    #[test]
    fn describe_looks_like_kafka_topics() {
        let text = describe_text(&topic());
        assert_eq!(
            text,
            "Topic: t\tTopicId: id\tPartitionCount: 2\tReplicationFactor: 1\n\
             \tTopic: t\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1\n\
             \tTopic: t\tPartition: 1\tLeader: 1\tReplicas: 1\tIsr: 1\n"
        );
        assert_eq!(describe_json(&topic())["partitions"][1]["partition"], 1);
    }

    #[test]
    fn describing_a_missing_topic_names_it() {
        let metadata = ClusterMetadata {
            cluster_id: None,
            controller_id: 1,
            brokers: vec![],
            topics: vec![],
        };
        let err = select_topics(&metadata, Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains("UnknownTopicOrPartition"),
            "{err}"
        );
        assert!(select_topics(&metadata, None).unwrap().is_empty());
    }
}
