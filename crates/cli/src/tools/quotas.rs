//! `runnel quotas`: client quotas with kafka-configs' flags (`--describe` / `--alter`,
//! `--entity-type users|clients` with `--entity-name` or `--entity-default`, or KIP-543's
//! `--user`, `--client`, `--user-defaults`, `--client-defaults`; `--add-config
//! 'producer_byte_rate=1048576,consumer_byte_rate=2097152'`, `--delete-config k1,k2`).

use super::{ConnArgs, UsageError};
use clap::Args;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;
use runnel_client::{ClientConfig, Error};

const VERSION: i16 = 1;
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["describe", "alter"])))]
pub struct QuotasArgs {
    /// Show quotas (of the entity given; every entity when none is).
    #[arg(long)]
    describe: bool,
    /// Change quotas (--add-config, --delete-config).
    #[arg(long)]
    alter: bool,
    /// users or clients (with --entity-name or --entity-default).
    #[arg(long = "entity-type", value_name = "TYPE")]
    entity_type: Option<String>,
    #[arg(long = "entity-name", value_name = "NAME")]
    entity_name: Option<String>,
    /// The default entity of --entity-type.
    #[arg(long = "entity-default")]
    entity_default: bool,
    /// A user principal name (as `--entity-type users --entity-name NAME`).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// A client id (as `--entity-type clients --entity-name NAME`).
    #[arg(long, value_name = "ID")]
    client: Option<String>,
    /// The default user.
    #[arg(long = "user-defaults")]
    user_defaults: bool,
    /// The default client id.
    #[arg(long = "client-defaults")]
    client_defaults: bool,
    /// key=value[,key=value...]: producer_byte_rate, consumer_byte_rate,
    /// request_percentage, controller_mutation_rate.
    #[arg(long = "add-config", value_name = "K=V,...")]
    add_config: Option<String>,
    /// key[,key...] to remove.
    #[arg(long = "delete-config", value_name = "K,...")]
    delete_config: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

fn usage(m: impl Into<String>) -> anyhow::Error {
    UsageError(m.into()).into()
}

/// One part of an entity: ("user" | "client-id", Some(name) or None for the default).
type Part = (&'static str, Option<String>);

impl QuotasArgs {
    fn entity(&self) -> anyhow::Result<Vec<Part>> {
        let mut parts: Vec<Part> = Vec::new();
        if let Some(t) = &self.entity_type {
            let kind = match t.as_str() {
                "users" | "user" => "user",
                "clients" | "client" | "client-id" => "client-id",
                other => {
                    return Err(usage(format!(
                        "--entity-type {other}: quotas apply to users or clients"
                    )))
                }
            };
            match (&self.entity_name, self.entity_default) {
                (Some(n), false) => parts.push((kind, Some(n.clone()))),
                (None, true) => parts.push((kind, None)),
                (None, false) if self.describe => {}
                _ => {
                    return Err(usage(
                        "--entity-type takes one of --entity-name or --entity-default",
                    ))
                }
            }
        }
        if let Some(u) = &self.user {
            parts.push(("user", Some(u.clone())));
        }
        if self.user_defaults {
            parts.push(("user", None));
        }
        if let Some(c) = &self.client {
            parts.push(("client-id", Some(c.clone())));
        }
        if self.client_defaults {
            parts.push(("client-id", None));
        }
        let mut kinds: Vec<&str> = parts.iter().map(|(k, _)| *k).collect();
        kinds.sort_unstable();
        if kinds.windows(2).any(|w| w[0] == w[1]) {
            return Err(usage("name at most one user and one client id"));
        }
        Ok(parts)
    }

    fn ops(&self) -> anyhow::Result<Vec<(String, Option<f64>)>> {
        let mut ops = Vec::new();
        for kv in self.add_config.iter().flat_map(|s| s.split(',')) {
            let kv = kv.trim();
            if kv.is_empty() {
                continue;
            }
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| usage(format!("--add-config {kv}: expected key=value")))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| usage(format!("--add-config {kv}: the value is not a number")))?;
            ops.push((k.trim().to_string(), Some(v)));
        }
        for k in self.delete_config.iter().flat_map(|s| s.split(',')) {
            if !k.trim().is_empty() {
                ops.push((k.trim().to_string(), None));
            }
        }
        Ok(ops)
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Kafka's wording: `user-principal 'alice', client-id 'c1'`, `the default client-id`.
fn describe_entity(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(t, n)| {
            let t = if t == "user" {
                "user-principal"
            } else {
                t.as_str()
            };
            match n {
                Some(n) => format!("{t} '{n}'"),
                None => format!("the default {t}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(args: QuotasArgs) -> anyhow::Result<()> {
    let entity = args.entity()?;
    let client = args.conn.connect(ClientConfig::default()).await?;
    let conn = client.bootstrap_connection().await?;
    if args.alter {
        let ops = args.ops()?;
        if entity.is_empty() || ops.is_empty() {
            return Err(usage(
                "--alter needs an entity (--user/--client/... or --entity-type) and \
                 --add-config or --delete-config",
            ));
        }
        let entry = EntryData::default()
            .with_entity(
                entity
                    .iter()
                    .map(|(t, n)| {
                        EntityData::default()
                            .with_entity_type(sb(t))
                            .with_entity_name(n.as_deref().map(sb))
                    })
                    .collect(),
            )
            .with_ops(
                ops.iter()
                    .map(|(k, v)| {
                        OpData::default()
                            .with_key(sb(k))
                            .with_value(v.unwrap_or(0.0))
                            .with_remove(v.is_none())
                    })
                    .collect(),
            );
        let r = conn
            .send(
                &AlterClientQuotasRequest::default().with_entries(vec![entry]),
                VERSION,
            )
            .await?;
        for e in &r.entries {
            Error::check(
                e.error_code,
                || "alter client quotas".into(),
                e.error_message.as_ref().map(|m| m.to_string()),
            )?;
        }
        let parts: Vec<(String, Option<String>)> = entity
            .iter()
            .map(|(t, n)| (t.to_string(), n.clone()))
            .collect();
        outln!("Completed updating config for {}.", describe_entity(&parts));
        return Ok(());
    }
    let components: Vec<ComponentData> = match (&args.entity_type, entity.is_empty()) {
        // --entity-type alone: every entity of that type.
        (Some(t), true) => vec![ComponentData::default()
            .with_entity_type(sb(if t.starts_with("user") {
                "user"
            } else {
                "client-id"
            }))
            .with_match_type(MATCH_SPECIFIED)],
        _ => entity
            .iter()
            .map(|(t, n)| {
                ComponentData::default()
                    .with_entity_type(sb(t))
                    .with_match_type(if n.is_some() {
                        MATCH_EXACT
                    } else {
                        MATCH_DEFAULT
                    })
                    .with_match(n.as_deref().map(sb))
            })
            .collect(),
    };
    let request = DescribeClientQuotasRequest::default()
        .with_components(components)
        .with_strict(!entity.is_empty());
    let r = conn.send(&request, VERSION).await?;
    Error::check(
        r.error_code,
        || "describe client quotas".into(),
        r.error_message.as_ref().map(|m| m.to_string()),
    )?;
    for e in r.entries.unwrap_or_default() {
        let mut parts: Vec<(String, Option<String>)> = e
            .entity
            .iter()
            .map(|x| {
                (
                    x.entity_type.to_string(),
                    x.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect();
        // Kafka lists the user before the client id.
        parts.sort_by_key(|(t, _)| t != "user");
        let values: Vec<String> = e
            .values
            .iter()
            .map(|v| format!("{}={:?}", v.key.as_str(), v.value))
            .collect();
        outln!(
            "Quota configs for {} are {}",
            describe_entity(&parts),
            values.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> QuotasArgs {
        crate::tools::parse_args(argv)
    }

    #[test]
    fn entities_and_configs_parse_as_kafka_configs() {
        let a = parse(&[
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--client",
            "c1",
            "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048",
            "--delete-config",
            "request_percentage",
        ]);
        assert_eq!(
            a.entity().unwrap(),
            vec![
                ("user", Some("alice".into())),
                ("client-id", Some("c1".into()))
            ]
        );
        assert_eq!(
            a.ops().unwrap(),
            vec![
                ("producer_byte_rate".into(), Some(1024.0)),
                ("consumer_byte_rate".into(), Some(2048.0)),
                ("request_percentage".into(), None),
            ]
        );
        let d = parse(&["--describe", "--entity-type", "clients", "--entity-default"]);
        assert_eq!(d.entity().unwrap(), vec![("client-id", None)]);
        assert!(parse(&["--alter", "--user", "a", "--user-defaults"])
            .entity()
            .is_err());
        assert!(parse(&["--alter", "--user", "a", "--add-config", "x"])
            .ops()
            .is_err());
        assert_eq!(
            describe_entity(&[
                ("user".into(), Some("a".into())),
                ("client-id".into(), None)
            ]),
            "user-principal 'a', the default client-id"
        );
    }
}
