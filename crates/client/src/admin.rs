//! Cluster administration beyond topics, as `kafka-configs`, `kafka-topics --alter`,
//! `kafka-log-dirs` and `kafka-delete-records` do it: describe and (incrementally) alter
//! topic and broker configs, add partitions, delete records before an offset, describe
//! each broker's log directories and move a partition between them.
//!
//! Requests go where Kafka's admin client sends them: broker configs and log-dir requests
//! to that broker, DeleteRecords to each partition's leader, the rest to any broker.

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::versions;
use crate::Client;
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    alter_configs_request, AlterConfigsRequest, AlterReplicaLogDirsRequest, ApiKey,
    CreatePartitionsRequest, DeleteRecordsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashMap};

/// What a config belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    /// A broker by node id.
    Broker(i32),
    /// A Runnel cluster link by name (empty: every link); Runnel's own resource type,
    /// which Kafka brokers refuse.
    ClusterLink(String),
}

impl ConfigResource {
    /// Kafka's ConfigResource.Type code.
    pub fn type_code(&self) -> i8 {
        match self {
            ConfigResource::Topic(_) => 2,
            ConfigResource::Broker(_) => 4,
            ConfigResource::ClusterLink(_) => 101,
        }
    }

    /// The resource name on the wire (a broker's is its node id).
    pub fn name(&self) -> String {
        match self {
            ConfigResource::Topic(t) => t.clone(),
            ConfigResource::Broker(id) => id.to_string(),
            ConfigResource::ClusterLink(l) => l.clone(),
        }
    }
}

impl std::fmt::Display for ConfigResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigResource::Topic(t) => write!(f, "topic {t}"),
            ConfigResource::Broker(id) => write!(f, "broker {id}"),
            ConfigResource::ClusterLink(l) => write!(f, "cluster link {l}"),
        }
    }
}

/// Kafka's name for a DescribeConfigs config source.
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Kafka's name for a DescribeConfigs config type (v3+).
pub fn config_type_name(t: i8) -> &'static str {
    match t {
        1 => "BOOLEAN",
        2 => "STRING",
        3 => "INT",
        4 => "SHORT",
        5 => "LONG",
        6 => "DOUBLE",
        7 => "LIST",
        8 => "CLASS",
        9 => "PASSWORD",
        _ => "UNKNOWN",
    }
}

/// Another value a config key has at a lower precedence (a broker default, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
}

/// One described config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values and for keys with no value.
    pub value: Option<String>,
    /// See [`config_source_name`].
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
    /// See [`config_type_name`]; 0 when the broker did not say.
    pub config_type: i8,
    pub synonyms: Vec<ConfigSynonym>,
    pub documentation: Option<String>,
}

impl ConfigEntry {
    /// Whether the value was set for this resource rather than inherited or defaulted.
    pub fn is_override(&self) -> bool {
        matches!(self.source, 1 | 2 | 8)
    }
}

/// One change of an IncrementalAlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    Set(String, String),
    /// Back to the inherited or default value.
    Delete(String),
    /// Add items to a list config (those not yet in it).
    Append(String, String),
    /// Remove items from a list config.
    Subtract(String, String),
}

impl AlterConfigOp {
    pub fn key(&self) -> &str {
        match self {
            AlterConfigOp::Set(k, _)
            | AlterConfigOp::Delete(k)
            | AlterConfigOp::Append(k, _)
            | AlterConfigOp::Subtract(k, _) => k,
        }
    }

    fn wire(&self) -> AlterableConfig {
        let (op, value) = match self {
            AlterConfigOp::Set(_, v) => (0, Some(v)),
            AlterConfigOp::Delete(_) => (1, None),
            AlterConfigOp::Append(_, v) => (2, Some(v)),
            AlterConfigOp::Subtract(_, v) => (3, Some(v)),
        };
        AlterableConfig::default()
            .with_name(str_bytes(self.key()))
            .with_config_operation(op)
            .with_value(value.map(|v| str_bytes(v)))
    }
}

/// One partition in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirPartition {
    pub topic: String,
    pub partition: i32,
    pub size_bytes: i64,
    pub offset_lag: i64,
    /// A replica being copied here by AlterReplicaLogDirs (not yet the current one).
    pub is_future: bool,
}

/// One log directory of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    pub broker: i32,
    pub path: String,
    /// Non-zero when the directory is offline (KAFKA_STORAGE_ERROR) or another failure.
    pub error_code: i16,
    /// Sorted by topic and partition.
    pub partitions: Vec<LogDirPartition>,
    /// Size of the filesystem holding the directory, when the broker reports it (v4+).
    pub total_bytes: Option<i64>,
    pub usable_bytes: Option<i64>,
}

impl LogDirDescription {
    pub fn size_bytes(&self) -> i64 {
        self.partitions.iter().map(|p| p.size_bytes.max(0)).sum()
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

fn message(m: &Option<StrBytes>) -> Option<String> {
    m.as_ref().map(|m| m.as_str().to_string())
}

fn missing(conn: &Connection, api: ApiKey, what: String) -> Error {
    Error::Protocol {
        addr: conn.addr().to_string(),
        api,
        detail: format!("the response has no result for {what}"),
    }
}

impl Client {
    /// A connection to broker `node_id` (looked up in fresh metadata), reusing the
    /// bootstrap connection when it is the same address.
    pub async fn node_connection(&self, node_id: i32) -> Result<Connection> {
        let metadata = self.metadata(Some(&[]), false).await?;
        let broker = metadata
            .brokers
            .iter()
            .find(|b| b.node_id == node_id)
            .ok_or_else(|| {
                let known: Vec<String> = metadata
                    .brokers
                    .iter()
                    .map(|b| b.node_id.to_string())
                    .collect();
                Error::InvalidArgument(format!(
                    "broker {node_id} is not in the cluster (its brokers are: {})",
                    known.join(", ")
                ))
            })?;
        let bootstrap = self.bootstrap_connection().await?;
        let addr = broker.addr();
        if addr == bootstrap.addr() {
            return Ok(bootstrap);
        }
        Connection::connect(&addr, &self.config().connection).await
    }

    /// Node ids of the cluster's brokers, sorted.
    pub async fn broker_ids(&self) -> Result<Vec<i32>> {
        let metadata = self.metadata(Some(&[]), false).await?;
        let mut ids: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The node id of the broker the client bootstrapped from (the first broker when
    /// its address is not among the advertised ones).
    pub async fn bootstrap_broker_id(&self) -> Result<i32> {
        let metadata = self.metadata(Some(&[]), false).await?;
        let bootstrap = self.bootstrap_connection().await?;
        metadata
            .brokers
            .iter()
            .find(|b| b.addr() == bootstrap.addr())
            .or_else(|| metadata.brokers.iter().min_by_key(|b| b.node_id))
            .map(|b| b.node_id)
            .ok_or_else(|| Error::Protocol {
                addr: bootstrap.addr().to_string(),
                api: ApiKey::Metadata,
                detail: "the cluster metadata lists no brokers".into(),
            })
    }

    async fn resource_connection(&self, resource: &ConfigResource) -> Result<Connection> {
        match resource {
            ConfigResource::Topic(_) | ConfigResource::ClusterLink(_) => {
                self.bootstrap_connection().await
            }
            ConfigResource::Broker(id) => self.node_connection(*id).await,
        }
    }

    /// Describes the configs of `resource` (all keys when `keys` is `None` or empty),
    /// with synonyms, sorted by name.
    pub async fn describe_configs(
        &self,
        resource: &ConfigResource,
        keys: Option<&[String]>,
    ) -> Result<Vec<ConfigEntry>> {
        let conn = self.resource_connection(resource).await?;
        let request = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(false)
            .with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(resource.type_code())
                .with_resource_name(str_bytes(&resource.name()))
                .with_configuration_keys(
                    keys.filter(|k| !k.is_empty())
                        .map(|k| k.iter().map(|k| str_bytes(k)).collect()),
                )]);
        let response = conn.send(&request, versions::DESCRIBE_CONFIGS).await?;
        let r = response
            .results
            .into_iter()
            .find(|r| r.resource_type == resource.type_code())
            .ok_or_else(|| missing(&conn, ApiKey::DescribeConfigs, resource.to_string()))?;
        Error::check(
            r.error_code,
            || format!("describe the configs of {resource}"),
            message(&r.error_message),
        )?;
        let mut entries: Vec<ConfigEntry> = r
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.as_str().to_string(),
                value: message(&c.value),
                source: c.config_source,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
                config_type: c.config_type,
                synonyms: c
                    .synonyms
                    .into_iter()
                    .map(|s| ConfigSynonym {
                        name: s.name.as_str().to_string(),
                        value: message(&s.value),
                        source: s.source,
                    })
                    .collect(),
                documentation: message(&c.documentation),
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Applies `ops` to `resource`'s configs (IncrementalAlterConfigs); keys not named
    /// keep their values. Fails with the broker's error and message (INVALID_CONFIG ...).
    pub async fn incremental_alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[AlterConfigOp],
        validate_only: bool,
    ) -> Result<()> {
        let conn = self.resource_connection(resource).await?;
        let request = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(resource.type_code())
                .with_resource_name(str_bytes(&resource.name()))
                .with_configs(ops.iter().map(AlterConfigOp::wire).collect())]);
        let response = conn
            .send(&request, versions::INCREMENTAL_ALTER_CONFIGS)
            .await?;
        let r = response
            .responses
            .into_iter()
            .find(|r| r.resource_type == resource.type_code())
            .ok_or_else(|| missing(&conn, ApiKey::IncrementalAlterConfigs, resource.to_string()))?;
        Error::check(
            r.error_code,
            || format!("alter the configs of {resource}"),
            message(&r.error_message),
        )
    }

    /// Replaces `resource`'s whole config set with `configs` (legacy AlterConfigs: keys
    /// not named return to their defaults).
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<()> {
        let conn = self.resource_connection(resource).await?;
        let request = AlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(resource.type_code())
                .with_resource_name(str_bytes(&resource.name()))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                        })
                        .collect(),
                )]);
        let response = conn.send(&request, versions::ALTER_CONFIGS).await?;
        let r = response
            .responses
            .into_iter()
            .find(|r| r.resource_type == resource.type_code())
            .ok_or_else(|| missing(&conn, ApiKey::AlterConfigs, resource.to_string()))?;
        Error::check(
            r.error_code,
            || format!("replace the configs of {resource}"),
            message(&r.error_message),
        )
    }

    /// Grows `topic` to `total` partitions (CreatePartitions; Kafka cannot shrink one).
    pub async fn create_partitions(
        &self,
        topic: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<()> {
        let conn = self.bootstrap_connection().await?;
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total)
                .with_assignments(None)]);
        let response = conn.send(&request, versions::CREATE_PARTITIONS).await?;
        let r = response
            .results
            .into_iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| missing(&conn, ApiKey::CreatePartitions, format!("topic {topic}")))?;
        let result = Error::check(
            r.error_code,
            || format!("grow topic {topic} to {total} partitions"),
            message(&r.error_message),
        );
        // The cached partition list is stale either way.
        let _ = self.metadata(Some(&[topic.to_string()]), false).await;
        result
    }

    /// Deletes the records of `topic` before each given offset (-1: before the high
    /// watermark, i.e. all). Returns each partition's new low watermark (log start
    /// offset) or its error, in the order given.
    pub async fn delete_records(
        &self,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<Vec<(i32, Result<i64>)>> {
        let t = self.metadata(Some(&[topic.to_string()]), false).await?;
        let t = t
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                Error::kafka(
                    format!("delete records of {topic}"),
                    kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
                    None,
                )
            })?;
        Error::check(t.error_code, || format!("delete records of {topic}"), None)?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        let mut results: HashMap<i32, Result<i64>> = HashMap::new();
        for &(partition, offset) in offsets {
            match t.partitions.iter().find(|p| p.partition == partition) {
                None => {
                    results.insert(
                        partition,
                        Err(Error::UnknownPartition {
                            topic: topic.into(),
                            partition,
                            count: t.partitions.len(),
                        }),
                    );
                }
                Some(p) if p.leader < 0 => {
                    results.insert(
                        partition,
                        Err(Error::NoLeader {
                            topic: topic.into(),
                            partition,
                        }),
                    );
                }
                Some(p) => by_leader
                    .entry(p.leader)
                    .or_default()
                    .push((partition, offset)),
            }
        }
        for (leader, parts) in by_leader {
            let conn = self.node_connection(leader).await?;
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&(p, o)| {
                                DeleteRecordsPartition::default()
                                    .with_partition_index(p)
                                    .with_offset(o)
                            })
                            .collect(),
                    )]);
            let response = conn.send(&request, versions::DELETE_RECORDS).await?;
            for &(partition, offset) in &parts {
                let result = response
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition)
                    .ok_or_else(|| {
                        missing(
                            &conn,
                            ApiKey::DeleteRecords,
                            format!("{topic}/{partition}"),
                        )
                    })
                    .and_then(|p| {
                        Error::check(
                            p.error_code,
                            || {
                                if offset < 0 {
                                    format!("delete all records of {topic}/{partition}")
                                } else {
                                    format!(
                                        "delete records of {topic}/{partition} before offset {offset}"
                                    )
                                }
                            },
                            None,
                        )
                        .map(|()| p.low_watermark)
                    });
                results.insert(partition, result);
            }
        }
        Ok(offsets
            .iter()
            .map(|&(p, _)| {
                let r = results.remove(&p).unwrap_or_else(|| {
                    Err(Error::InvalidArgument(format!(
                        "partition {p} was named twice"
                    )))
                });
                (p, r)
            })
            .collect())
    }

    /// The log directories of broker `broker` and the partitions in each (all
    /// partitions when `topics` is `None`; else only those of the named topics).
    pub async fn describe_log_dirs(
        &self,
        broker: i32,
        topics: Option<&[String]>,
    ) -> Result<Vec<LogDirDescription>> {
        let filter = match topics {
            None => None,
            Some(names) => {
                let metadata = self.metadata(Some(names), false).await?;
                let mut wanted = Vec::new();
                for name in names {
                    let t = metadata.topics.iter().find(|t| &t.name == name);
                    let code = t.map_or(
                        kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
                        |t| t.error_code,
                    );
                    Error::check(
                        code,
                        || format!("describe the log dirs of topic {name}"),
                        None,
                    )?;
                    let t = t.expect("checked above");
                    wanted.push(
                        DescribableLogDirTopic::default()
                            .with_topic(topic_name(name))
                            .with_partitions(t.partitions.iter().map(|p| p.partition).collect()),
                    );
                }
                Some(wanted)
            }
        };
        let conn = self.node_connection(broker).await?;
        let request = DescribeLogDirsRequest::default().with_topics(filter);
        let response = conn.send(&request, versions::DESCRIBE_LOG_DIRS).await?;
        Error::check(
            response.error_code,
            || format!("describe the log dirs of broker {broker}"),
            None,
        )?;
        let mut dirs: Vec<LogDirDescription> = response
            .results
            .into_iter()
            .map(|d| {
                let mut partitions: Vec<LogDirPartition> = d
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| LogDirPartition {
                            topic: t.name.0.as_str().to_string(),
                            partition: p.partition_index,
                            size_bytes: p.partition_size,
                            offset_lag: p.offset_lag,
                            is_future: p.is_future_key,
                        })
                    })
                    .collect();
                partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                LogDirDescription {
                    broker,
                    path: d.log_dir.as_str().to_string(),
                    error_code: d.error_code,
                    partitions,
                    total_bytes: (d.total_bytes >= 0).then_some(d.total_bytes),
                    usable_bytes: (d.usable_bytes >= 0).then_some(d.usable_bytes),
                }
            })
            .collect();
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(dirs)
    }

    /// Moves `topic`/`partition`'s replica on broker `broker` to log directory `dir`
    /// (an absolute path among the broker's `log.dirs`).
    pub async fn alter_replica_log_dir(
        &self,
        broker: i32,
        topic: &str,
        partition: i32,
        dir: &str,
    ) -> Result<()> {
        let conn = self.node_connection(broker).await?;
        let request =
            AlterReplicaLogDirsRequest::default().with_dirs(vec![AlterReplicaLogDir::default()
                .with_path(str_bytes(dir))
                .with_topics(vec![AlterReplicaLogDirTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![partition])])]);
        let response = conn
            .send(&request, versions::ALTER_REPLICA_LOG_DIRS)
            .await?;
        let p = response
            .results
            .iter()
            .filter(|t| t.topic_name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                missing(
                    &conn,
                    ApiKey::AlterReplicaLogDirs,
                    format!("{topic}/{partition}"),
                )
            })?;
        Error::check(
            p.error_code,
            || format!("move {topic}/{partition} to log dir {dir} on broker {broker}"),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_ops_encode_as_kafka_does() {
        let t = ConfigResource::Topic("t".into());
        assert_eq!((t.type_code(), t.name()), (2, "t".to_string()));
        let b = ConfigResource::Broker(3);
        assert_eq!((b.type_code(), b.name()), (4, "3".to_string()));
        assert_eq!(b.to_string(), "broker 3");
        let w = AlterConfigOp::Set("retention.ms".into(), "5".into()).wire();
        assert_eq!(
            (w.name.as_str(), w.config_operation, w.value.as_deref()),
            ("retention.ms", 0, Some("5"))
        );
        let w = AlterConfigOp::Delete("x".into()).wire();
        assert_eq!((w.config_operation, w.value), (1, None));
        assert_eq!(
            AlterConfigOp::Append("a".into(), "b".into())
                .wire()
                .config_operation,
            2
        );
        assert_eq!(
            AlterConfigOp::Subtract("a".into(), "b".into())
                .wire()
                .config_operation,
            3
        );
    }

    #[test]
    fn sources_have_kafkas_names() {
        assert_eq!(config_source_name(1), "DYNAMIC_TOPIC_CONFIG");
        assert_eq!(config_source_name(5), "DEFAULT_CONFIG");
        assert_eq!(config_source_name(42), "UNKNOWN");
        assert_eq!(config_type_name(7), "LIST");
    }
}
