//! `runnel acls`: add, remove and list ACLs with kafka-acls.sh's flags (--add, --remove,
//! --list, --allow-principal, --deny-principal, --allow-host, --deny-host, --operation,
//! --topic, --group, --cluster, --transactional-id, --resource-pattern-type, and the
//! --producer / --consumer conveniences). Needs an authorizer on the broker
//! (`authorizer.class.name`); without one the broker answers SECURITY_DISABLED.

use super::{ConnArgs, UsageError};
use clap::Args;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;
use runnel_broker::authz::acl::{
    AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType, CLUSTER_NAME,
};
use runnel_client::{ClientConfig, Connection, Error};

/// The ACL API versions the tool speaks (Kafka 4 serves 1-3).
const VERSION: i16 = 3;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["add", "remove", "list"])))]
pub struct AclsArgs {
    /// Add the ACLs the other flags describe.
    #[arg(long)]
    add: bool,
    /// Remove the matching ACLs (every ACL of the resources when no principal is given).
    #[arg(long)]
    remove: bool,
    /// List ACLs (of the resources given, else all).
    #[arg(long)]
    list: bool,
    /// Principal to ALLOW, e.g. User:alice (repeatable).
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    allow_principals: Vec<String>,
    /// Principal to DENY (repeatable).
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    deny_principals: Vec<String>,
    /// Host (IP) the ALLOW applies from [default: *] (repeatable).
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Host (IP) the DENY applies from [default: *] (repeatable).
    #[arg(long = "deny-host", value_name = "HOST")]
    deny_hosts: Vec<String>,
    /// With --list: only ACLs of this principal (repeatable).
    #[arg(long = "principal", value_name = "PRINCIPAL")]
    principals: Vec<String>,
    /// Operation: Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All [default: All] (repeatable).
    #[arg(long = "operation", value_name = "OP")]
    operations: Vec<String>,
    /// Topic (repeatable; `*` for every topic).
    #[arg(long = "topic", value_name = "NAME")]
    topics: Vec<String>,
    /// Consumer group (repeatable; `*` for every group).
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// The cluster resource.
    #[arg(long)]
    cluster: bool,
    /// Transactional id (repeatable; `*` for every id).
    #[arg(long = "transactional-id", value_name = "ID")]
    transactional_ids: Vec<String>,
    /// literal or prefixed; --list and --remove also take match and any.
    #[arg(
        long = "resource-pattern-type",
        value_name = "TYPE",
        default_value = "literal"
    )]
    resource_pattern_type: String,
    /// Convenience: WRITE, DESCRIBE, CREATE on the topics (WRITE, DESCRIBE on the
    /// transactional ids).
    #[arg(long)]
    producer: bool,
    /// Convenience: READ, DESCRIBE on the topics and READ on the groups.
    #[arg(long)]
    consumer: bool,
    /// With --producer: IDEMPOTENT_WRITE on the cluster too.
    #[arg(long)]
    idempotent: bool,
    /// Remove without asking (the tool never asks; accepted for kafka-acls scripts).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

fn usage(m: impl Into<String>) -> anyhow::Error {
    UsageError(m.into()).into()
}

impl AclsArgs {
    fn pattern(&self) -> anyhow::Result<PatternType> {
        let p = PatternType::parse(&self.resource_pattern_type).ok_or_else(|| {
            usage(format!(
                "--resource-pattern-type {} is not literal, prefixed, match or any",
                self.resource_pattern_type
            ))
        })?;
        if self.add && !matches!(p, PatternType::Literal | PatternType::Prefixed) {
            return Err(usage(
                "--add takes --resource-pattern-type literal or prefixed",
            ));
        }
        Ok(p)
    }

    /// The resources named on the command line.
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let mut out: Vec<(ResourceType, String)> = Vec::new();
        out.extend(self.topics.iter().map(|t| (ResourceType::Topic, t.clone())));
        out.extend(self.groups.iter().map(|g| (ResourceType::Group, g.clone())));
        out.extend(
            self.transactional_ids
                .iter()
                .map(|t| (ResourceType::TransactionalId, t.clone())),
        );
        if self.cluster || (self.producer && self.idempotent) {
            out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        out
    }

    fn operations(&self) -> anyhow::Result<Vec<Operation>> {
        if self.operations.is_empty() {
            return Ok(vec![Operation::All]);
        }
        self.operations
            .iter()
            .map(|o| {
                let spelled = camel_to_snake(o);
                Operation::parse(&spelled)
                    .filter(|op| !matches!(op, Operation::Any))
                    .ok_or_else(|| usage(format!("--operation {o} is not a Kafka ACL operation")))
            })
            .collect()
    }

    /// The operations for one resource: --producer/--consumer's, else --operation's
    /// (checked against what the resource type has).
    fn operations_for(&self, rt: ResourceType) -> anyhow::Result<Vec<Operation>> {
        use Operation::*;
        let ops = match (self.producer, self.consumer, rt) {
            (true, _, ResourceType::Topic) => vec![Write, Describe, Create],
            (true, _, ResourceType::TransactionalId) => vec![Write, Describe],
            (true, _, ResourceType::Cluster) => vec![IdempotentWrite],
            (_, true, ResourceType::Topic) => vec![Read, Describe],
            (_, true, ResourceType::Group) => vec![Read],
            (true, _, _) | (_, true, _) => vec![],
            _ => self.operations()?,
        };
        if let Some(bad) = ops
            .iter()
            .find(|op| **op != All && !rt.supported_operations().contains(op))
        {
            return Err(usage(format!(
                "{rt} has no operation {bad}; it has {}",
                rt.supported_operations()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(ops)
    }

    /// (principal, host, permission) entries from the --allow/--deny flags.
    fn entries(&self) -> Vec<(String, String, Permission)> {
        let hosts = |h: &Vec<String>| {
            if h.is_empty() {
                vec!["*".to_string()]
            } else {
                h.clone()
            }
        };
        let mut out = Vec::new();
        for (principals, hs, perm) in [
            (
                &self.allow_principals,
                hosts(&self.allow_hosts),
                Permission::Allow,
            ),
            (
                &self.deny_principals,
                hosts(&self.deny_hosts),
                Permission::Deny,
            ),
        ] {
            for p in principals {
                for h in &hs {
                    out.push((p.clone(), h.clone(), perm));
                }
            }
        }
        out
    }

    fn bindings(&self) -> anyhow::Result<Vec<AclBinding>> {
        let pattern = self.pattern()?;
        if self.producer && self.topics.is_empty() {
            return Err(usage("--producer needs --topic"));
        }
        if self.consumer && (self.topics.is_empty() || self.groups.is_empty()) {
            return Err(usage("--consumer needs --topic and --group"));
        }
        let entries = self.entries();
        if entries.is_empty() {
            return Err(usage("--add needs --allow-principal or --deny-principal"));
        }
        let resources = self.resources();
        if resources.is_empty() {
            return Err(usage(
                "name a resource: --topic, --group, --cluster or --transactional-id",
            ));
        }
        let mut out = Vec::new();
        for (rt, name) in resources {
            for op in self.operations_for(rt)? {
                for (principal, host, permission) in &entries {
                    let acl = AclBinding {
                        resource_type: rt,
                        name: name.clone(),
                        pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: op,
                        permission: *permission,
                    };
                    acl.validate().map_err(usage)?;
                    out.push(acl);
                }
            }
        }
        Ok(out)
    }

    /// Filters for --list and --remove: per resource (or everything), narrowed by the
    /// principals, hosts and operations given.
    fn filters(&self) -> anyhow::Result<Vec<AclFilter>> {
        let pattern = self.pattern()?;
        let mut resources: Vec<(ResourceType, Option<String>, PatternType)> = self
            .resources()
            .into_iter()
            .map(|(rt, n)| (rt, Some(n), pattern))
            .collect();
        if resources.is_empty() {
            resources.push((ResourceType::Any, None, PatternType::Any));
        }
        let mut entries: Vec<(Option<String>, Option<String>, Permission)> = self
            .entries()
            .into_iter()
            .map(|(p, h, perm)| (Some(p), Some(h), perm))
            .collect();
        entries.extend(
            self.principals
                .iter()
                .map(|p| (Some(p.clone()), None, Permission::Any)),
        );
        if entries.is_empty() {
            entries.push((None, None, Permission::Any));
        }
        let explicit_ops = !self.operations.is_empty() || self.producer || self.consumer;
        let mut out = Vec::new();
        for (rt, name, pattern) in &resources {
            let ops = if explicit_ops && *rt != ResourceType::Any {
                self.operations_for(*rt)?
            } else {
                vec![Operation::Any]
            };
            for op in ops {
                for (principal, host, permission) in &entries {
                    out.push(AclFilter {
                        resource_type: *rt,
                        name: name.clone(),
                        pattern: *pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: op,
                        permission: *permission,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// `IdempotentWrite` and `idempotent-write` both name IDEMPOTENT_WRITE.
fn camel_to_snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 && !s.contains(['_', '-']) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn resource_line(rt: i8, name: &str, pattern: i8) -> String {
    let rt = ResourceType::from_code(rt).map_or("UNKNOWN", |r| r.name());
    let pattern = PatternType::from_code(pattern).map_or("UNKNOWN", |p| p.name());
    format!("ResourcePattern(resourceType={rt}, name={name}, patternType={pattern})")
}

fn entry_line(principal: &str, host: &str, op: i8, perm: i8) -> String {
    let op = Operation::from_code(op).map_or("UNKNOWN", |o| o.name());
    let perm = Permission::from_code(perm).map_or("UNKNOWN", |p| p.name());
    format!("\t(principal={principal}, host={host}, operation={op}, permissionType={perm})")
}

/// A filter in the wire form of DeleteAcls (DescribeAcls: `AclFilter::describe_request`).
macro_rules! wire_filter {
    ($ty:ty, $f:expr) => {{
        let f: &AclFilter = $f;
        <$ty>::default()
            .with_resource_type_filter(f.resource_type.code())
            .with_resource_name_filter(f.name.as_deref().map(sb))
            .with_pattern_type_filter(f.pattern.code())
            .with_principal_filter(f.principal.as_deref().map(sb))
            .with_host_filter(f.host.as_deref().map(sb))
            .with_operation(f.operation.code())
            .with_permission_type(f.permission.code())
    }};
}

async fn describe(conn: &Connection, f: &AclFilter) -> anyhow::Result<DescribeAclsResponse> {
    let request = f.describe_request();
    let r = conn.send(&request, VERSION).await?;
    Error::check(
        r.error_code,
        || "list ACLs".into(),
        r.error_message.as_ref().map(|m| m.to_string()),
    )?;
    Ok(r)
}

pub async fn run(args: AclsArgs) -> anyhow::Result<()> {
    let _ = args.force;
    let client = args.conn.connect(ClientConfig::default()).await?;
    let conn = client.bootstrap_connection().await?;
    if args.add {
        let acls = args.bindings()?;
        let creations = acls
            .iter()
            .map(|a| {
                AclCreation::default()
                    .with_resource_type(a.resource_type.code())
                    .with_resource_name(sb(&a.name))
                    .with_resource_pattern_type(a.pattern.code())
                    .with_principal(sb(&a.principal))
                    .with_host(sb(&a.host))
                    .with_operation(a.operation.code())
                    .with_permission_type(a.permission.code())
            })
            .collect();
        let r = conn
            .send(
                &CreateAclsRequest::default().with_creations(creations),
                VERSION,
            )
            .await?;
        for (a, result) in acls.iter().zip(&r.results) {
            Error::check(
                result.error_code,
                || format!("add ACL for {}", a.principal),
                result.error_message.as_ref().map(|m| m.to_string()),
            )?;
        }
        let mut last = None;
        for a in &acls {
            let key = (a.resource_type, a.name.clone(), a.pattern);
            if last.as_ref() != Some(&key) {
                outln!(
                    "Adding ACLs for resource `{}`: ",
                    resource_line(a.resource_type.code(), &a.name, a.pattern.code())
                );
                last = Some(key);
            }
            outln!(
                "{}",
                entry_line(
                    &a.principal,
                    &a.host,
                    a.operation.code(),
                    a.permission.code()
                )
            );
        }
        return Ok(());
    }
    let filters = args.filters()?;
    if args.remove {
        let wire: Vec<DeleteAclsFilter> = filters
            .iter()
            .map(|f| wire_filter!(DeleteAclsFilter, f))
            .collect();
        let r = conn
            .send(&DeleteAclsRequest::default().with_filters(wire), VERSION)
            .await?;
        for result in &r.filter_results {
            Error::check(
                result.error_code,
                || "remove ACLs".into(),
                result.error_message.as_ref().map(|m| m.to_string()),
            )?;
            for m in &result.matching_acls {
                outln!(
                    "Removed ACL from `{}`:",
                    resource_line(m.resource_type, &m.resource_name, m.pattern_type)
                );
                outln!(
                    "{}",
                    entry_line(&m.principal, &m.host, m.operation, m.permission_type)
                );
            }
        }
        return Ok(());
    }
    for f in &filters {
        let r = describe(&conn, f).await?;
        for res in &r.resources {
            outln!(
                "Current ACLs for resource `{}`: ",
                resource_line(res.resource_type, &res.resource_name, res.pattern_type)
            );
            for a in &res.acls {
                outln!(
                    "{}",
                    entry_line(&a.principal, &a.host, a.operation, a.permission_type)
                );
            }
            outln!();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> AclsArgs {
        crate::tools::parse_args(argv)
    }

    #[test]
    fn producer_and_consumer_expand_as_kafka_acls() {
        let a = parse(&[
            "--add",
            "--allow-principal",
            "User:a",
            "--producer",
            "--topic",
            "t",
            "--transactional-id",
            "x",
        ]);
        let ops: Vec<(ResourceType, Operation)> = a
            .bindings()
            .unwrap()
            .iter()
            .map(|b| (b.resource_type, b.operation))
            .collect();
        assert_eq!(
            ops,
            vec![
                (ResourceType::Topic, Operation::Write),
                (ResourceType::Topic, Operation::Describe),
                (ResourceType::Topic, Operation::Create),
                (ResourceType::TransactionalId, Operation::Write),
                (ResourceType::TransactionalId, Operation::Describe),
            ]
        );
        let c = parse(&[
            "--add",
            "--allow-principal",
            "User:a",
            "--consumer",
            "--topic",
            "t",
            "--group",
            "g",
        ]);
        assert_eq!(c.bindings().unwrap().len(), 3);
        let bad = parse(&[
            "--add",
            "--allow-principal",
            "User:a",
            "--consumer",
            "--topic",
            "t",
        ]);
        assert!(bad.bindings().is_err());
    }

    #[test]
    fn operations_are_checked_against_the_resource() {
        let a = parse(&[
            "--add",
            "--deny-principal",
            "User:a",
            "--deny-host",
            "10.0.0.1",
            "--operation",
            "IdempotentWrite",
            "--topic",
            "t",
        ]);
        assert!(a.bindings().is_err());
        let ok = parse(&[
            "--add",
            "--deny-principal",
            "User:a",
            "--deny-host",
            "10.0.0.1",
            "--operation",
            "Read",
            "--topic",
            "t",
            "--resource-pattern-type",
            "prefixed",
        ]);
        let b = ok.bindings().unwrap();
        assert_eq!(b[0].permission, Permission::Deny);
        assert_eq!(b[0].host, "10.0.0.1");
        assert_eq!(b[0].pattern, PatternType::Prefixed);
        let m = parse(&[
            "--add",
            "--allow-principal",
            "User:a",
            "--topic",
            "t",
            "--resource-pattern-type",
            "match",
        ]);
        assert!(m.bindings().is_err());
    }

    #[test]
    fn list_without_resources_lists_everything() {
        let f = parse(&["--list"]).filters().unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].resource_type, ResourceType::Any);
        assert_eq!(f[0].pattern, PatternType::Any);
        let f = parse(&["--list", "--topic", "t", "--resource-pattern-type", "match"])
            .filters()
            .unwrap();
        assert_eq!(f[0].pattern, PatternType::Match);
        assert_eq!(f[0].operation, Operation::Any);
    }
}
