//! `runnel links`: cluster links on the target cluster (`-b`): create, list, describe,
//! promote and delete. The broker side is the links admin API carried by
//! DescribeConfigs/IncrementalAlterConfigs on Runnel's cluster-link resource type
//! (crates/broker/src/mirror/admin.rs), so any broker of the target answers.

use std::collections::BTreeMap;

use super::{ConnArgs, UsageError};
use clap::Subcommand;
use runnel_client::{AlterConfigOp, ClientConfig, ConfigResource};

const ACTION: &str = "runnel.link.action";
const PROMOTE_TOPIC: &str = "runnel.link.promote.topic";
const STATUS: &str = "runnel.link.status";

#[derive(Subcommand)]
pub enum LinksCommand {
    /// Create a link that mirrors the source's topics (and group offsets) into this cluster.
    Create {
        name: String,
        /// The source cluster's bootstrap servers.
        #[arg(long, value_name = "HOST:PORT[,...]")]
        source: String,
        /// Client properties for reaching the source (a properties file).
        #[arg(long = "source-config", value_name = "FILE")]
        source_config: Option<std::path::PathBuf>,
        /// Mirror the source topics whose whole name matches (default: every topic).
        #[arg(long, value_name = "REGEX")]
        topics: Option<String>,
        /// Sync the offsets of the source groups whose whole id matches (default: every group).
        #[arg(long, value_name = "REGEX")]
        groups: Option<String>,
        /// A link config, e.g. --set consumer.offset.sync.ms=1000 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
        set: Vec<(String, String)>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List the links.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// A link's state, its mirror topics and the lag of each mirrored partition.
    Describe {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Stop mirroring a topic (or every topic of the link) and make it writable.
    Promote {
        name: String,
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a link; its mirror topics are promoted first and stay.
    Delete {
        name: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// The link configs `create` sends.
fn create_configs(
    source: &str,
    source_config: Option<&std::path::Path>,
    topics: Option<&str>,
    groups: Option<&str>,
    set: &[(String, String)],
) -> Result<BTreeMap<String, String>, UsageError> {
    let mut configs = BTreeMap::new();
    if let Some(path) = source_config {
        let pairs = runnel_broker::BrokerConfig::read_properties(path)
            .map_err(|e| UsageError(format!("--source-config: {e}")))?;
        configs.extend(pairs);
    }
    configs.insert("bootstrap.servers".to_string(), source.to_string());
    if let Some(t) = topics {
        configs.insert("auto.create.mirror.topics.regex".to_string(), t.to_string());
    }
    if let Some(g) = groups {
        configs.insert("consumer.offset.group.regex".to_string(), g.to_string());
    }
    configs.extend(set.iter().cloned());
    Ok(configs)
}

async fn alter(conn: &ConnArgs, name: &str, ops: Vec<AlterConfigOp>) -> anyhow::Result<()> {
    let client = conn.connect(ClientConfig::default()).await?;
    client
        .incremental_alter_configs(&ConfigResource::ClusterLink(name.to_string()), &ops, false)
        .await?;
    Ok(())
}

pub async fn run(cmd: LinksCommand) -> anyhow::Result<()> {
    match cmd {
        LinksCommand::Create {
            name,
            source,
            source_config,
            topics,
            groups,
            set,
            conn,
        } => {
            let configs = create_configs(
                &source,
                source_config.as_deref(),
                topics.as_deref(),
                groups.as_deref(),
                &set,
            )?;
            let mut ops = vec![AlterConfigOp::Set(ACTION.into(), "create".into())];
            ops.extend(configs.into_iter().map(|(k, v)| AlterConfigOp::Set(k, v)));
            alter(&conn, &name, ops).await?;
            outln!("Created cluster link {name} from {source}.");
        }
        LinksCommand::List { json, conn } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let entries = client
                .describe_configs(&ConfigResource::ClusterLink(String::new()), None)
                .await?;
            let links: Vec<serde_json::Value> = entries
                .iter()
                .filter_map(|e| serde_json::from_str(e.value.as_deref()?).ok())
                .collect();
            if json {
                outln!("{}", serde_json::Value::Array(links));
            } else {
                outln!(
                    "{:<24} {:<32} {:>8} {:>9} STATE",
                    "LINK",
                    "SOURCE",
                    "MIRRORS",
                    "PROMOTED"
                );
                for l in links {
                    outln!(
                        "{:<24} {:<32} {:>8} {:>9} {}",
                        l["name"].as_str().unwrap_or(""),
                        l["source"].as_str().unwrap_or(""),
                        l["mirror_topics"],
                        l["promoted_topics"],
                        l["state"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        LinksCommand::Describe { name, json, conn } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let entries = client
                .describe_configs(&ConfigResource::ClusterLink(name.clone()), None)
                .await?;
            let status: serde_json::Value = entries
                .iter()
                .find(|e| e.name == STATUS)
                .and_then(|e| serde_json::from_str(e.value.as_deref()?).ok())
                .ok_or_else(|| anyhow::anyhow!("the broker sent no status for link {name}"))?;
            if json {
                outln!("{status}");
            } else {
                print_describe(&status);
            }
        }
        LinksCommand::Promote { name, topic, conn } => {
            let mut ops = vec![AlterConfigOp::Set(ACTION.into(), "promote".into())];
            if let Some(t) = &topic {
                ops.push(AlterConfigOp::Set(PROMOTE_TOPIC.into(), t.clone()));
            }
            alter(&conn, &name, ops).await?;
            match topic {
                Some(t) => {
                    outln!("Promoted {t} (link {name}): it is writable and no longer mirrored.")
                }
                None => outln!("Promoted every mirror topic of link {name}."),
            }
        }
        LinksCommand::Delete { name, conn } => {
            alter(
                &conn,
                &name,
                vec![AlterConfigOp::Set(ACTION.into(), "delete".into())],
            )
            .await?;
            outln!("Deleted cluster link {name} (its mirror topics were promoted).");
        }
    }
    Ok(())
}

fn print_describe(s: &serde_json::Value) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    outln!("Link: {}\tState: {}", text(&s["name"]), text(&s["state"]));
    if let Some(e) = s["error"].as_str() {
        outln!("Error: {e}");
    }
    if let Some(configs) = s["configs"].as_object() {
        for (k, v) in configs {
            if v.is_null() {
                outln!("  {k}=null (sensitive)");
            } else {
                outln!("  {k}={}", text(v));
            }
        }
    }
    if let Some(n) = s["acls_synced"].as_u64().filter(|n| *n > 0) {
        outln!("ACLs synced from the source: {n}");
    }
    if let Some(e) = s["acl_sync_error"].as_str() {
        outln!("ACL sync error: {e}");
    }
    for (key, label) in [
        ("collisions", "Colliding topics (not mirrored)"),
        (
            "groups_skipped_active",
            "Groups active here (offsets not synced)",
        ),
        ("source_missing", "Mirror topics deleted on the source"),
    ] {
        if let Some(list) = s[key].as_array().filter(|l| !l.is_empty()) {
            let names: Vec<String> = list.iter().map(text).collect();
            outln!("{label}: {}", names.join(", "));
        }
    }
    outln!(
        "{:<32} {:>9} {:<18} {:>15} {:>12} {:>10}",
        "TOPIC",
        "PARTITION",
        "STATE",
        "MIRRORED-OFFSET",
        "SOURCE-END",
        "LAG"
    );
    for t in s["topics"].as_array().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            outln!(
                "{:<32} {:>9} {:<18} {:>15} {:>12} {:>10}",
                text(&t["topic"]),
                text(&p["partition"]),
                text(&p["state"]),
                text(&p["mirrored_offset"]),
                text(&p["source_end"]),
                text(&p["lag"])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_flags_become_link_configs() {
        let c = create_configs(
            "a:1,b:2",
            None,
            Some("orders.*"),
            None,
            &[("consumer.offset.sync.ms".into(), "1000".into())],
        )
        .unwrap();
        assert_eq!(c["bootstrap.servers"], "a:1,b:2");
        assert_eq!(c["auto.create.mirror.topics.regex"], "orders.*");
        assert_eq!(c["consumer.offset.sync.ms"], "1000");
        assert!(!c.contains_key("consumer.offset.group.regex"));
    }
}
