//! `runnel configs describe|alter`: topic and broker configs, like `kafka-configs`.
//!
//! Changes are incremental (IncrementalAlterConfigs): keys not named keep their values.
//! A value the broker refuses is reported with the broker's own message and exit code 1.

use super::{parse_key_value, ConnArgs, UsageError};
use clap::{ArgGroup, Args, Subcommand};
use runnel_client::{
    config_source_name, config_type_name, AlterConfigOp, Client, ClientConfig, ConfigEntry,
    ConfigResource, Error, ResponseError,
};
use std::collections::BTreeSet;

#[derive(Subcommand)]
pub enum ConfigsCommand {
    /// Show the configs of a topic or a broker: key, value and where the value comes from.
    Describe {
        #[command(flatten)]
        resource: ResourceArgs,
        /// Only these keys (repeatable).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Only values set for this resource (not defaults or inherited ones).
        #[arg(long)]
        overrides: bool,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Change configs of a topic or a broker; keys not named keep their values.
    Alter {
        #[command(flatten)]
        resource: ResourceArgs,
        #[command(flatten)]
        ops: AlterOps,
        /// Ask the broker to validate the change without applying it.
        #[arg(long)]
        validate_only: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Which resource: `--topic NAME` or `--broker [ID]`.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("resource").required(true).args(["topic", "broker"])))]
pub struct ResourceArgs {
    /// A topic.
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// A broker by node id (the broker bootstrapped from when no id is given).
    #[arg(long, value_name = "ID", num_args = 0..=1)]
    pub broker: Option<Option<i32>>,
}

impl ResourceArgs {
    pub async fn resolve(&self, client: &Client) -> anyhow::Result<ConfigResource> {
        Ok(match (&self.topic, self.broker) {
            (Some(t), _) => ConfigResource::Topic(t.clone()),
            (None, Some(Some(id))) => ConfigResource::Broker(id),
            (None, _) => ConfigResource::Broker(client.bootstrap_broker_id().await?),
        })
    }
}

/// Config changes, shared by `configs alter` and `topics alter`.
#[derive(Args, Debug, Clone, Default)]
pub struct AlterOps {
    /// Set a key, e.g. --set retention.ms=60000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Return a key to its default (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    /// Add comma-separated items to a list config, e.g. --append cleanup.policy=compact.
    #[arg(long = "append", value_name = "KEY=ITEMS", value_parser = parse_key_value)]
    pub append: Vec<(String, String)>,
    /// Remove comma-separated items from a list config.
    #[arg(long = "subtract", value_name = "KEY=ITEMS", value_parser = parse_key_value)]
    pub subtract: Vec<(String, String)>,
}

impl AlterOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.delete.is_empty()
            && self.append.is_empty()
            && self.subtract.is_empty()
    }

    /// The operations, each key at most once (a usage error otherwise).
    pub fn to_ops(&self) -> Result<Vec<AlterConfigOp>, UsageError> {
        let mut ops = Vec::new();
        ops.extend(
            self.set
                .iter()
                .map(|(k, v)| AlterConfigOp::Set(k.clone(), v.clone())),
        );
        ops.extend(self.delete.iter().map(|k| AlterConfigOp::Delete(k.clone())));
        ops.extend(
            self.append
                .iter()
                .map(|(k, v)| AlterConfigOp::Append(k.clone(), v.clone())),
        );
        ops.extend(
            self.subtract
                .iter()
                .map(|(k, v)| AlterConfigOp::Subtract(k.clone(), v.clone())),
        );
        let mut seen = BTreeSet::new();
        for op in &ops {
            if op.key().is_empty() {
                return Err(UsageError("a config key must not be empty".into()));
            }
            if !seen.insert(op.key()) {
                return Err(UsageError(format!(
                    "config key {} is named more than once; change each key once per command",
                    op.key()
                )));
            }
        }
        Ok(ops)
    }
}

/// A one-line summary of the changes, e.g. "set retention.ms=5; deleted cleanup.policy".
pub fn describe_ops(ops: &[AlterConfigOp]) -> String {
    ops.iter()
        .map(|op| match op {
            AlterConfigOp::Set(k, v) => format!("set {k}={v}"),
            AlterConfigOp::Delete(k) => format!("deleted {k}"),
            AlterConfigOp::Append(k, v) => format!("appended {v} to {k}"),
            AlterConfigOp::Subtract(k, v) => format!("removed {v} from {k}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn run(cmd: ConfigsCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigsCommand::Describe {
            resource,
            keys,
            overrides,
            json,
            conn,
        } => {
            let client = conn.connect(ClientConfig::default()).await?;
            let resource = resource.resolve(&client).await?;
            let mut entries = client.describe_configs(&resource, Some(&keys)).await?;
            if overrides {
                entries.retain(ConfigEntry::is_override);
            }
            if json {
                outln!("{}", entries_json(&resource, &entries));
            } else {
                out!("{}", entries_table(&entries));
            }
        }
        ConfigsCommand::Alter {
            resource,
            ops,
            validate_only,
            conn,
        } => {
            if ops.is_empty() {
                return Err(UsageError(
                    "nothing to change: give --set KEY=VALUE, --delete KEY, --append or --subtract"
                        .into(),
                )
                .into());
            }
            let ops = ops.to_ops()?;
            let client = conn.connect(ClientConfig::default()).await?;
            let resource = resource.resolve(&client).await?;
            match client
                .incremental_alter_configs(&resource, &ops, validate_only)
                .await
            {
                Ok(()) => {}
                // The client's hint speaks of topic configs; say what fits a broker.
                Err(e @ Error::Kafka { .. })
                    if matches!(resource, ConfigResource::Broker(_))
                        && e.kafka_error() == Some(ResponseError::InvalidConfig) =>
                {
                    anyhow::bail!(
                        "{e}\nhint: runnel configs describe --broker lists the broker's keys; \
                         read-only ones change only in server.properties with a restart"
                    );
                }
                Err(e) => return Err(e.into()),
            }
            if validate_only {
                outln!(
                    "Validated configs of {resource} (nothing changed): {}.",
                    describe_ops(&ops)
                );
            } else {
                outln!("Updated configs of {resource}: {}.", describe_ops(&ops));
            }
        }
    }
    Ok(())
}

fn shown_value(e: &ConfigEntry) -> String {
    match &e.value {
        Some(v) => v.clone(),
        None if e.sensitive => "(sensitive)".into(),
        None => "(none)".into(),
    }
}

/// KEY, VALUE and SOURCE columns, aligned.
pub fn entries_table(entries: &[ConfigEntry]) -> String {
    let rows: Vec<[String; 3]> = entries
        .iter()
        .map(|e| {
            let mut source = config_source_name(e.source).to_string();
            if e.read_only {
                source.push_str(" (read-only)");
            }
            [e.name.clone(), shown_value(e), source]
        })
        .collect();
    let header = ["KEY".to_string(), "VALUE".to_string(), "SOURCE".to_string()];
    let w0 = rows
        .iter()
        .chain([&header])
        .map(|r| r[0].len())
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .chain([&header])
        .map(|r| r[1].len())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        s.push_str(&format!("{:w0$}  {:w1$}  {}\n", r[0], r[1], r[2]));
    }
    s
}

pub fn entries_json(resource: &ConfigResource, entries: &[ConfigEntry]) -> serde_json::Value {
    let (kind, name) = match resource {
        ConfigResource::Topic(t) => ("topic", serde_json::json!(t)),
        ConfigResource::Broker(id) => ("broker", serde_json::json!(id)),
        ConfigResource::ClusterLink(l) => ("cluster_link", serde_json::json!(l)),
    };
    serde_json::json!({
        "resource_type": kind,
        "resource_name": name,
        "configs": entries.iter().map(|e| serde_json::json!({
            "name": e.name,
            "value": e.value,
            "source": config_source_name(e.source),
            "read_only": e.read_only,
            "sensitive": e.sensitive,
            "type": config_type_name(e.config_type),
            "synonyms": e.synonyms.iter().map(|s| serde_json::json!({
                "name": s.name,
                "value": s.value,
                "source": config_source_name(s.source),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ConfigsCommand,
    }

    fn parse(args: &[&str]) -> Result<ConfigsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("configs").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn resources_parse() {
        let Ok(ConfigsCommand::Describe { resource, .. }) = parse(&["describe", "--topic", "t"])
        else {
            panic!()
        };
        assert_eq!(resource.topic.as_deref(), Some("t"));
        let Ok(ConfigsCommand::Describe { resource, .. }) = parse(&["describe", "--broker"]) else {
            panic!()
        };
        assert_eq!(resource.broker, Some(None));
        let Ok(ConfigsCommand::Describe { resource, json, .. }) =
            parse(&["describe", "--broker", "3", "--json"])
        else {
            panic!()
        };
        assert_eq!((resource.broker, json), (Some(Some(3)), true));
        assert!(parse(&["describe"]).is_err(), "a resource is required");
        assert!(parse(&["describe", "--topic", "t", "--broker"]).is_err());
        assert!(parse(&["describe", "--broker", "x"]).is_err());
    }

    #[test]
    fn alter_ops_parse_and_each_key_is_named_once() {
        let Ok(ConfigsCommand::Alter { ops, .. }) = parse(&[
            "alter",
            "--topic",
            "t",
            "--set",
            "retention.ms=5",
            "--delete",
            "cleanup.policy",
            "--append",
            "a=b,c",
        ]) else {
            panic!()
        };
        let ops = ops.to_ops().unwrap();
        assert_eq!(
            ops,
            vec![
                AlterConfigOp::Set("retention.ms".into(), "5".into()),
                AlterConfigOp::Delete("cleanup.policy".into()),
                AlterConfigOp::Append("a".into(), "b,c".into()),
            ]
        );
        assert_eq!(
            describe_ops(&ops),
            "set retention.ms=5; deleted cleanup.policy; appended b,c to a"
        );
        let Ok(ConfigsCommand::Alter { ops, .. }) =
            parse(&["alter", "--topic", "t", "--set", "a=1", "--delete", "a"])
        else {
            panic!()
        };
        assert!(ops.to_ops().unwrap_err().0.contains("more than once"));
        assert!(parse(&["alter", "--topic", "t", "--set", "novalue"]).is_err());
        let Ok(ConfigsCommand::Alter { ops, .. }) = parse(&["alter", "--topic", "t"]) else {
            panic!()
        };
        assert!(ops.is_empty());
    }

    #[test]
    fn tables_align_and_json_names_sources() {
        let entries = vec![
            ConfigEntry {
                name: "retention.ms".into(),
                value: Some("5".into()),
                source: 1,
                read_only: false,
                sensitive: false,
                config_type: 5,
                synonyms: vec![],
                documentation: None,
            },
            ConfigEntry {
                name: "x".into(),
                value: None,
                source: 5,
                read_only: true,
                sensitive: true,
                config_type: 9,
                synonyms: vec![],
                documentation: None,
            },
        ];
        assert_eq!(
            entries_table(&entries),
            "KEY           VALUE        SOURCE\n\
             retention.ms  5            DYNAMIC_TOPIC_CONFIG\n\
             x             (sensitive)  DEFAULT_CONFIG (read-only)\n"
        );
        let j = entries_json(&ConfigResource::Topic("t".into()), &entries);
        assert_eq!(j["resource_type"], "topic");
        assert_eq!(j["configs"][0]["source"], "DYNAMIC_TOPIC_CONFIG");
        assert_eq!(j["configs"][1]["value"], serde_json::Value::Null);
        assert!(entries[0].is_override() && !entries[1].is_override());
    }
}
