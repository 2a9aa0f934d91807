//! Link definitions and mirror-topic states, as a flat map of records persisted like
//! group configs: a single node keeps them in `__cluster_metadata/cluster-links.json`, a
//! cluster in the metadata log's cluster-wide config records. One record per link
//! (`link:<name>`, its configs as JSON) and one per mirror topic
//! (`link-topic:<name>:<topic>`, `active` or `promoted`), so the managing broker adding
//! a topic and an admin promoting another never overwrite each other's change. One per
//! ACL a link created here (`link-acl:<name>:<binding JSON>`), the only ones it removes.
//!
//! Thread-safe: the records are behind a read-write lock.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::RwLock;

use crate::authz::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use crate::broker::Broker;
use crate::error::{BrokerError, ErrorCode};

const LINK_PREFIX: &str = "link:";
const TOPIC_PREFIX: &str = "link-topic:";
/// `link-acl:<link>:<binding as JSON>`: an ACL this link created here (acl.sync), so
/// that only those are ever removed when the source drops them.
const ACL_PREFIX: &str = "link-acl:";

/// A mirror topic's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MirrorState {
    /// Copied from the source; read-only for clients.
    Active,
    /// Mirroring stopped for good; an ordinary writable topic.
    Promoted,
}

impl MirrorState {
    fn record(self) -> &'static str {
        match self {
            MirrorState::Active => "active",
            MirrorState::Promoted => "promoted",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MirrorState::Active => "ACTIVE",
            MirrorState::Promoted => "PROMOTED",
        }
    }
}

/// A cluster link: its configs and its mirror topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkDef {
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub mirrors: BTreeMap<String, MirrorState>,
    /// The ACLs this link created here (acl.sync).
    pub acls: std::collections::BTreeSet<AclBinding>,
}

/// A link's configs, parsed. Names are Confluent Cluster Linking's where one exists.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bootstrap: String,
    pub topics: regex_lite::Regex,
    pub auto_create: bool,
    pub groups: regex_lite::Regex,
    pub offset_sync: bool,
    pub offset_sync_ms: u64,
    pub config_sync_ms: u64,
    pub metadata_max_age_ms: u64,
    pub backoff_max: Duration,
    pub fetch_max_bytes: i32,
    pub fetch_wait_max_ms: i32,
    pub request_timeout: Duration,
    pub client_id: String,
    /// TLS and SASL to the source (None: PLAINTEXT).
    pub security: Option<std::sync::Arc<runnel_client::security::ClientSecurity>>,
    /// `acl.sync.enable`: copy the source's ACLs matching `acl_filters` here.
    pub acl_sync: bool,
    pub acl_sync_ms: u64,
    pub acl_filters: Vec<AclFilter>,
}

pub const BOOTSTRAP: &str = "bootstrap.servers";
pub const TOPICS_REGEX: &str = "auto.create.mirror.topics.regex";
pub const GROUPS_REGEX: &str = "consumer.offset.group.regex";

/// Every key a link takes, its default, and what it means (docs/mirroring.md lists them).
pub const KEYS: &[(&str, &str)] = &[
    (BOOTSTRAP, ""),
    ("auto.create.mirror.topics.enable", "true"),
    (TOPICS_REGEX, ".*"),
    ("consumer.offset.sync.enable", "true"),
    (GROUPS_REGEX, ".*"),
    ("consumer.offset.sync.ms", "5000"),
    ("topic.config.sync.ms", "5000"),
    ("metadata.max.age.ms", "5000"),
    ("reconnect.backoff.max.ms", "10000"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.wait.max.ms", "500"),
    ("request.timeout.ms", "30000"),
    ("client.id", "runnel-cluster-link"),
    ("acl.sync.enable", "false"),
    ("acl.sync.ms", "5000"),
    ("acl.filters", ""),
];

/// Whether `key` is a link config: one of [`KEYS`] or a Kafka client security key
/// (`runnel_client::security::SECURITY_KEYS`: `security.protocol`, `sasl.*`, `ssl.*`).
pub fn is_known(key: &str) -> bool {
    KEYS.iter().any(|(k, _)| *k == key) || runnel_client::security::SECURITY_KEYS.contains(&key)
}

fn invalid(message: String) -> BrokerError {
    BrokerError::new(ErrorCode::InvalidConfig, message)
}

impl Settings {
    /// Validates a link's whole config set (unknown keys, bad numbers and regexes are
    /// refused with INVALID_CONFIG naming the key).
    pub fn parse(configs: &BTreeMap<String, String>) -> Result<Settings, BrokerError> {
        for k in configs.keys() {
            if !is_known(k) {
                let known: Vec<&str> = KEYS
                    .iter()
                    .map(|(k, _)| *k)
                    .chain(runnel_client::security::SECURITY_KEYS.iter().copied())
                    .collect();
                return Err(invalid(format!(
                    "unknown cluster link config '{k}' (known: {})",
                    known.join(", ")
                )));
            }
        }
        let get = |k: &str| -> &str {
            configs
                .get(k)
                .map(String::as_str)
                .or_else(|| KEYS.iter().find(|(key, _)| *key == k).map(|(_, d)| *d))
                .unwrap_or_default()
        };
        let bool_of = |k: &str| -> Result<bool, BrokerError> {
            match get(k).trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                v => Err(invalid(format!(
                    "invalid value '{v}' for '{k}': expected true or false"
                ))),
            }
        };
        let ms = |k: &str, min: u64| -> Result<u64, BrokerError> {
            let v = get(k).trim();
            match v.parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(invalid(format!(
                    "invalid value '{v}' for '{k}': expected an integer of at least {min}"
                ))),
            }
        };
        let regex = |k: &str| -> Result<regex_lite::Regex, BrokerError> {
            // Kafka's topic and group filters match whole names.
            regex_lite::Regex::new(&format!("^(?:{})$", get(k)))
                .map_err(|e| invalid(format!("invalid regular expression for '{k}': {e}")))
        };
        let bootstrap = get(BOOTSTRAP).trim().to_string();
        runnel_client::parse_bootstrap(&bootstrap).map_err(|_| {
            invalid(format!(
                "'{BOOTSTRAP}' must name the source cluster (host:port[,host:port...])"
            ))
        })?;
        let security = runnel_client::security::security_from_properties(configs)
            .map_err(|e| invalid(format!("cluster link security: {e}")))?
            .map(std::sync::Arc::new);
        let acl_filters = parse_acl_filters(get("acl.filters"))
            .map_err(|e| invalid(format!("invalid value for 'acl.filters': {e}")))?;
        let fetch_max_bytes = ms("replica.fetch.max.bytes", 1024)?.min(i32::MAX as u64) as i32;
        Ok(Settings {
            bootstrap,
            topics: regex(TOPICS_REGEX)?,
            auto_create: bool_of("auto.create.mirror.topics.enable")?,
            groups: regex(GROUPS_REGEX)?,
            offset_sync: bool_of("consumer.offset.sync.enable")?,
            offset_sync_ms: ms("consumer.offset.sync.ms", 100)?,
            config_sync_ms: ms("topic.config.sync.ms", 100)?,
            metadata_max_age_ms: ms("metadata.max.age.ms", 100)?,
            backoff_max: Duration::from_millis(ms("reconnect.backoff.max.ms", 100)?),
            fetch_max_bytes,
            fetch_wait_max_ms: ms("replica.fetch.wait.max.ms", 0)?.min(30_000) as i32,
            request_timeout: Duration::from_millis(ms("request.timeout.ms", 1000)?),
            client_id: get("client.id").to_string(),
            security,
            acl_sync: bool_of("acl.sync.enable")?,
            acl_sync_ms: ms("acl.sync.ms", 100)?,
            acl_filters,
        })
    }

    pub fn client_config(&self) -> runnel_client::ClientConfig {
        let mut c = runnel_client::ClientConfig::default();
        c.connection.client_id = self.client_id.clone();
        c.connection.connect_timeout = Duration::from_secs(5);
        c.connection.request_timeout =
            self.request_timeout + Duration::from_millis(self.fetch_wait_max_ms as u64);
        c.connection.security = self.security.clone();
        c.retries = 1;
        c
    }
}

/// Link names follow topic-name rules (no ':', which separates record keys).
pub fn validate_name(name: &str) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!("invalid cluster link name '{name}': use 1 to 200 of a-z A-Z 0-9 . _ -"),
        ))
    }
}

#[derive(Default)]
pub struct LinkStore {
    records: RwLock<BTreeMap<String, String>>,
}

impl LinkStore {
    /// Reads the file an older single node kept in `meta_dir` (missing = empty), for
    /// the import into the metadata log.
    pub fn read_legacy_file(&self, meta_dir: &std::path::Path) -> Result<(), BrokerError> {
        let path = meta_dir.join("cluster-links.json");
        *self.records.write() = crate::storage::topics::read_json_file(&path)?;
        Ok(())
    }

    /// The metadata-log records of every link (a single node's file being imported).
    pub fn image_records(&self) -> BTreeMap<String, Option<String>> {
        self.records
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect()
    }

    pub fn apply_image(&self, image_configs: &BTreeMap<String, String>) {
        let records = image_configs
            .iter()
            .filter(|(k, _)| {
                k.starts_with(LINK_PREFIX)
                    || k.starts_with(TOPIC_PREFIX)
                    || k.starts_with(ACL_PREFIX)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *self.records.write() = records;
    }

    pub fn get(&self, name: &str) -> Option<LinkDef> {
        parse(&self.records.read(), Some(name)).pop()
    }

    pub fn all(&self) -> Vec<LinkDef> {
        parse(&self.records.read(), None)
    }

    pub fn active_link_of(&self, topic: &str) -> Option<String> {
        self.records.read().iter().find_map(|(k, v)| {
            let (link, t) = k.strip_prefix(TOPIC_PREFIX)?.split_once(':')?;
            (t == topic && v == MirrorState::Active.record()).then(|| link.to_string())
        })
    }

    /// Any link that has `topic` as a mirror (active or promoted).
    pub fn owner_of(&self, topic: &str) -> Option<(String, MirrorState)> {
        let records = self.records.read();
        records.iter().find_map(|(k, v)| {
            let (link, t) = k.strip_prefix(TOPIC_PREFIX)?.split_once(':')?;
            (t == topic).then(|| (link.to_string(), state_of(v)))
        })
    }
}

fn state_of(record: &str) -> MirrorState {
    if record == MirrorState::Active.record() {
        MirrorState::Active
    } else {
        MirrorState::Promoted
    }
}

fn parse(records: &BTreeMap<String, String>, only: Option<&str>) -> Vec<LinkDef> {
    let mut links: BTreeMap<String, LinkDef> = BTreeMap::new();
    for (k, v) in records {
        let Some(name) = k.strip_prefix(LINK_PREFIX) else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        match serde_json::from_str(v) {
            Ok(configs) => {
                links.insert(
                    name.to_string(),
                    LinkDef {
                        name: name.to_string(),
                        configs,
                        mirrors: BTreeMap::new(),
                        acls: Default::default(),
                    },
                );
            }
            Err(e) => tracing::error!(link = name, error = %e, "malformed cluster link record"),
        }
    }
    for (k, v) in records {
        let Some((link, topic)) = k.strip_prefix(TOPIC_PREFIX).and_then(|r| r.split_once(':'))
        else {
            continue;
        };
        if let Some(l) = links.get_mut(link) {
            l.mirrors.insert(topic.to_string(), state_of(v));
        }
    }
    for k in records.keys() {
        let Some((link, json)) = k.strip_prefix(ACL_PREFIX).and_then(|r| r.split_once(':')) else {
            continue;
        };
        match (
            links.get_mut(link),
            serde_json::from_str::<AclBinding>(json),
        ) {
            (Some(l), Ok(acl)) => {
                l.acls.insert(acl);
            }
            (Some(_), Err(e)) => {
                tracing::error!(link, record = %k, error = %e, "malformed link ACL record skipped")
            }
            (None, _) => {}
        }
    }
    links.into_values().collect()
}

/// The record of an ACL `link` created here (None deletes it).
pub fn acl_record(link: &str, acl: &AclBinding, present: bool) -> Change {
    (
        format!(
            "{ACL_PREFIX}{link}:{}",
            serde_json::to_string(acl).expect("ACL bindings serialise")
        ),
        present.then(String::new),
    )
}

/// Confluent Cluster Linking's `acl.filters`:
/// `{"aclFilters":[{"resourceFilter":{"resourceType":"topic","name":"orders",
/// "patternType":"literal"},"accessFilter":{"principal":"User:alice","host":"*",
/// "operation":"read","permissionType":"allow"}}]}`; an absent field matches anything.
/// Empty: every ACL.
pub fn parse_acl_filters(text: &str) -> Result<Vec<AclFilter>, String> {
    let any = || AclFilter {
        resource_type: ResourceType::Any,
        name: None,
        pattern: PatternType::Any,
        principal: None,
        host: None,
        operation: Operation::Any,
        permission: Permission::Any,
    };
    if text.trim().is_empty() {
        return Ok(vec![any()]);
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let list = v
        .get("aclFilters")
        .and_then(|l| l.as_array())
        .ok_or("expected an object with an \"aclFilters\" array")?;
    fn field<'a>(
        v: &'a serde_json::Value,
        obj: &str,
        key: &str,
    ) -> Result<Option<&'a str>, String> {
        match v.get(obj).and_then(|o| o.get(key)) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("{obj}.{key} must be a string")),
        }
    }
    fn coded<T>(
        v: Option<&str>,
        any: T,
        parse: fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<T, String> {
        match v {
            None => Ok(any),
            Some(s) => parse(s).ok_or_else(|| format!("unknown {what} '{s}'")),
        }
    }
    list.iter()
        .map(|f| {
            Ok(AclFilter {
                resource_type: coded(
                    field(f, "resourceFilter", "resourceType")?,
                    ResourceType::Any,
                    ResourceType::parse,
                    "resourceType",
                )?,
                name: field(f, "resourceFilter", "name")?.map(str::to_string),
                pattern: coded(
                    field(f, "resourceFilter", "patternType")?,
                    PatternType::Any,
                    PatternType::parse,
                    "patternType",
                )?,
                principal: field(f, "accessFilter", "principal")?.map(str::to_string),
                host: field(f, "accessFilter", "host")?.map(str::to_string),
                operation: coded(
                    field(f, "accessFilter", "operation")?,
                    Operation::Any,
                    Operation::parse,
                    "operation",
                )?,
                permission: coded(
                    field(f, "accessFilter", "permissionType")?,
                    Permission::Any,
                    Permission::parse,
                    "permissionType",
                )?,
            })
        })
        .collect()
}

/// One change to the records (None deletes).
pub type Change = (String, Option<String>);

pub fn link_record(name: &str, configs: Option<&BTreeMap<String, String>>) -> Change {
    (
        format!("{LINK_PREFIX}{name}"),
        configs.map(|c| serde_json::to_string(c).expect("string maps serialise")),
    )
}

pub fn topic_record(link: &str, topic: &str, state: Option<MirrorState>) -> Change {
    (
        format!("{TOPIC_PREFIX}{link}:{topic}"),
        state.map(|s| s.record().to_string()),
    )
}

/// Writes `changes` through the controller, returning once this broker's image holds
/// them.
pub async fn save(broker: &Broker, changes: Vec<Change>) -> Result<(), BrokerError> {
    if changes.is_empty() {
        return Ok(());
    }
    let cluster = broker.cluster();
    let map: BTreeMap<String, Option<String>> = changes.into_iter().collect();
    cluster.write_config_records(map).await?;
    // Apply at once here (reconcile applies it too): the caller acts on it next.
    let image = cluster.current_image();
    broker.links.apply_image(broker, &image.broker_configs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_filters_take_confluents_json() {
        let all = parse_acl_filters("").unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].resource_type, ResourceType::Any);
        let f = parse_acl_filters(
            r#"{"aclFilters":[{"resourceFilter":{"resourceType":"topic","name":"orders","patternType":"literal"},
                "accessFilter":{"principal":"User:alice","operation":"read","permissionType":"allow"}}]}"#,
        )
        .unwrap();
        assert_eq!(f.len(), 1);
        let f = &f[0];
        assert_eq!(
            (f.resource_type, f.name.as_deref(), f.pattern),
            (ResourceType::Topic, Some("orders"), PatternType::Literal)
        );
        assert_eq!(
            (
                f.principal.as_deref(),
                f.host.as_deref(),
                f.operation,
                f.permission
            ),
            (Some("User:alice"), None, Operation::Read, Permission::Allow)
        );
        for (bad, says) in [
            ("[]", "aclFilters"),
            ("{", "not JSON"),
            (
                r#"{"aclFilters":[{"resourceFilter":{"resourceType":"table"}}]}"#,
                "resourceType 'table'",
            ),
            (
                r#"{"aclFilters":[{"accessFilter":{"operation":7}}]}"#,
                "accessFilter.operation",
            ),
        ] {
            let e = parse_acl_filters(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut c = linked(&[("acl.sync.enable", "true")]);
        assert!(Settings::parse(&c).unwrap().acl_sync);
        c.insert("acl.filters".into(), "{}".into());
        let e = Settings::parse(&c).err().unwrap();
        assert!(e.message.contains("acl.filters"), "{}", e.message);
    }

    /// A link's configs: the source's bootstrap servers and `extra`.
    fn linked(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        std::iter::once(&(BOOTSTRAP, "a:1"))
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn settings(extra: &[(&str, &str)]) -> Result<Settings, BrokerError> {
        Settings::parse(&linked(extra))
    }

    #[test]
    fn settings_validate_and_default() {
        let s = settings(&[]).unwrap();
        assert!(s.topics.is_match("orders"));
        assert!(s.offset_sync);
        let s = settings(&[(TOPICS_REGEX, "ord.*")]).unwrap();
        assert!(s.topics.is_match("orders"));
        assert!(!s.topics.is_match("xorders"), "filters match whole names");
        let no_bootstrap = Settings::parse(&BTreeMap::new()).unwrap_err();
        assert_eq!(no_bootstrap.code, ErrorCode::InvalidConfig);
        for bad in [
            &[("no.such", "1")][..],
            &[(TOPICS_REGEX, "(")],
            &[("consumer.offset.sync.ms", "x")],
            // TLS without the CA that signed the source's certificate.
            &[("security.protocol", "SSL")],
            &[("security.protocol", "SASL_SSL2")],
            // SASL without a password.
            &[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
            ],
        ] {
            let e = settings(bad).err().expect("refused");
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{bad:?}");
        }
    }

    #[test]
    fn sasl_settings_reach_the_client_config() {
        let s = settings(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="link" password="pw";"#,
            ),
        ])
        .unwrap();
        let security = s.client_config().connection.security.unwrap();
        let sasl = security.sasl.as_ref().unwrap();
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("link", "pw")
        );
        assert!(security.tls.is_none());
        assert!(settings(&[]).unwrap().security.is_none());
    }

    #[test]
    fn records_round_trip() {
        let store = LinkStore::default();
        let c = linked(&[]);
        let (k1, v1) = link_record("dr", Some(&c));
        let (k2, v2) = topic_record("dr", "orders", Some(MirrorState::Active));
        let (k3, v3) = topic_record("dr", "old", Some(MirrorState::Promoted));
        let image = BTreeMap::from([
            (k1, v1.unwrap()),
            (k2, v2.unwrap()),
            (k3, v3.unwrap()),
            ("group:g".into(), "{}".into()),
        ]);
        store.apply_image(&image);
        let l = store.get("dr").unwrap();
        assert_eq!(l.configs, c);
        assert_eq!(l.mirrors.len(), 2);
        assert_eq!(store.active_link_of("orders").as_deref(), Some("dr"));
        assert_eq!(store.active_link_of("old"), None);
        assert_eq!(
            store.owner_of("old"),
            Some(("dr".into(), MirrorState::Promoted))
        );
        assert!(validate_name("dr-1.x").is_ok());
        assert!(validate_name("a:b").is_err());
        assert!(validate_name("").is_err());
    }
}
