//! Broker and topic configuration with Kafka's key names.
//!
//! A server is configured from a `server.properties` file and `--set key=value` overrides.
//! Every key is checked at start: an unknown key or a malformed value stops the server
//! with a message naming the key, because a typo silently ignored is a production outage.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use runnel_log::{LogConfig, TimestampType};
use thiserror::Error;

pub mod describe;
#[cfg(test)]
mod docs;
pub mod keys;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown configuration key '{key}'{hint}")]
    UnknownKey { key: String, hint: String },
    #[error("invalid value '{value}' for '{key}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("malformed line {line} in {path}: expected key=value")]
    Syntax { path: String, line: usize },
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// KIP-392's rack-aware replica selector, the one `replica.selector.class` Runnel has.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// Bounds on what one request, one connection and all connections may hold. Kafka's
/// keys where Kafka has one; `connection.queued.max.request.bytes`,
/// `request.read.timeout.ms` and `max.partitions.per.*` are Runnel's.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// `fetch.max.bytes`: the most a consumer's Fetch response carries, whatever it asks.
    pub fetch_max_bytes: usize,
    /// `replica.fetch.response.max.bytes`: the same for a follower's Fetch.
    pub replica_fetch_response_max_bytes: usize,
    /// `queued.max.request.bytes`: request bytes read but not yet answered, all
    /// connections together; None = unbounded (Kafka's -1). A reader waits for room.
    pub queued_max_request_bytes: Option<usize>,
    /// `connection.queued.max.request.bytes`: the same for one connection.
    pub connection_queued_max_request_bytes: usize,
    /// `connections.max.idle.ms`: a connection that sends nothing this long is closed.
    pub connections_max_idle_ms: u64,
    /// `request.read.timeout.ms`: a frame must arrive whole within this of its first byte.
    pub request_read_timeout_ms: u64,
    /// `max.connections`: client connections at once (a newer one is closed).
    pub max_connections: usize,
    /// `max.connections.per.ip` and `max.connections.per.ip.overrides`.
    pub max_connections_per_ip: usize,
    pub max_connections_per_ip_overrides: BTreeMap<std::net::IpAddr, usize>,
    /// `max.partitions.per.request`: partitions one CreateTopics or CreatePartitions may
    /// add, all its topics together.
    pub max_partitions_per_request: usize,
    /// `max.partitions.per.broker`: partitions this broker may hold.
    pub max_partitions_per_broker: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            fetch_max_bytes: 57_671_680,
            replica_fetch_response_max_bytes: 10_485_760,
            queued_max_request_bytes: Some(512 * 1024 * 1024),
            connection_queued_max_request_bytes: 104_857_600,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            max_connections: i32::MAX as usize,
            max_connections_per_ip: i32::MAX as usize,
            max_connections_per_ip_overrides: BTreeMap::new(),
            max_partitions_per_request: 10_000,
            max_partitions_per_broker: 50_000,
        }
    }
}

/// `ip:count,ip:count` (Kafka also takes host names; Runnel takes addresses).
fn parse_ip_overrides(
    key: &str,
    v: &str,
) -> Result<BTreeMap<std::net::IpAddr, usize>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (ip, n) = item
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, v, "expected ip:count,ip:count"))?;
        let ip: std::net::IpAddr = ip
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| invalid(key, v, format!("'{ip}' is not an IP address")))?;
        let n = parse_int(key, n, 0)? as usize;
        out.insert(ip, n);
    }
    Ok(out)
}

/// Replication and cluster membership (Kafka's KRaft keys).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `controller.quorum.voters` ("1@127.0.0.1:19093,2@..."): empty for a single node.
    pub voters: Vec<(i32, SocketAddr)>,
    /// Each voter's host as `controller.quorum.voters` spells it (a name or an IP): what
    /// a secured quorum port's certificate is checked against.
    pub voter_hosts: BTreeMap<i32, String>,
    /// No voters were configured: this node is its own single voter, on a loopback port
    /// chosen at start (`Server::start` fills `voters`).
    pub single_voter: bool,
    pub broker_role: bool,
    pub controller_role: bool,
    /// `metadata.log.dir`: where the quorum keeps its log (default: first log dir).
    pub metadata_dir: Option<PathBuf>,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_wait_max_ms: u64,
    pub replica_fetch_max_bytes: usize,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    /// `controller.quorum.election.timeout.ms`: a voter that hears no leader waits a random
    /// time between this and twice this before it stands for election (Kafka's range).
    pub quorum_election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms`: the quorum leader contacts every voter at
    /// least four times within this (Runnel's Raft heartbeat is a quarter of it, capped
    /// below the election timeout).
    pub quorum_fetch_timeout_ms: u64,
    /// Capped at the number of live brokers when the topic is created.
    pub offsets_topic_replication_factor: i16,
    pub transaction_state_replication_factor: i16,
    pub controlled_shutdown: bool,
    /// `follower.replication.throttled.rate`: bytes/s this broker copies for replicas it
    /// is being added as (a reassignment); None = unlimited.
    pub follower_throttle_rate: Option<u64>,
    /// `replica.selector.class` = Kafka's `RackAwareReplicaSelector` (KIP-392): a leader
    /// points a consumer at an in-sync follower in the consumer's `client.rack`.
    pub rack_aware_replica_selector: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            voters: Vec::new(),
            voter_hosts: BTreeMap::new(),
            single_voter: false,
            broker_role: true,
            controller_role: true,
            metadata_dir: None,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            quorum_election_timeout_ms: 1_000,
            quorum_fetch_timeout_ms: 2_000,
            offsets_topic_replication_factor: 3,
            transaction_state_replication_factor: 3,
            controlled_shutdown: true,
            follower_throttle_rate: None,
            rack_aware_replica_selector: false,
        }
    }
}

impl ClusterConfig {
    /// Whether other nodes exist that this one connects to (a voter or broker besides
    /// itself): only then does it need inter-broker credentials.
    pub fn has_peers(&self, node_id: i32) -> bool {
        !self.broker_role
            || !self.controller_role
            || self.voters.iter().any(|(id, _)| *id != node_id)
    }
}

/// The broker's settings, parsed and validated.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// The listener keys as set (`listeners`, `advertised.listeners`, ...).
    pub listener_config: crate::server::listeners::ListenerConfig,
    /// The same, validated together: what the server binds and what clients are told.
    pub listeners: crate::server::listeners::Listeners,
    /// `http.listeners`: the HTTP admin API's address (host:port, port 0 for a free
    /// port); None when set to an empty value (disabled).
    pub http_listener: Option<SocketAddr>,
    /// `http.listeners` is `https://...`: the API is served over TLS (`security::HttpSecurity`).
    pub http_tls: bool,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub delete_topic_enable: bool,
    pub socket_request_max_bytes: usize,
    /// Memory and connection bounds of the request path.
    pub limits: RequestLimits,
    pub retention_check_interval_ms: u64,
    /// `log.cleaner.backoff.ms`: how often compacted topics are checked for cleaning.
    pub cleaner_backoff_ms: u64,
    pub flush_interval_ms: Option<u64>,
    /// Runnel's durability switch: acknowledge acks=all only after fdatasync (group
    /// committed). Kafka acknowledges once the data is in the OS page cache.
    pub flush_on_acks_all: bool,
    pub rack: Option<String>,
    /// Defaults for topic-level settings, from the broker's `log.*` keys.
    pub log_defaults: LogConfig,
    pub min_insync_replicas: i32,
    /// Consumer-group coordinator settings (`group.*`, `offsets.*`).
    pub groups: crate::coordinators::groups::GroupConfig,
    /// Share-group settings (`group.share.*`).
    pub share: crate::coordinators::share::ShareConfig,
    /// Transaction coordinator settings (`transaction.*`).
    pub txn: crate::coordinators::txn::TxnConfig,
    /// Replication and the metadata quorum; `voters` empty means a single node.
    pub cluster: ClusterConfig,
    /// `authorizer.class.name`, `super.users`, `allow.everyone.if.no.acl.found`.
    pub authz: crate::authz::AuthzConfig,
    /// `quota.window.num`, `quota.window.size.seconds`.
    pub quota: crate::server::quota::QuotaConfig,
    /// The keys that were set, with their values, for DescribeConfigs and logging.
    pub explicit: BTreeMap<String, String>,
    /// TLS and SASL (`ssl.*`, `sasl.*`, `listener.name.<l>.*`), see `security/`.
    pub security: crate::server::security::SecurityConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::from_pairs(&[]).expect("defaults are valid")
    }
}

fn parse_i64(key: &str, v: &str, min: i64) -> Result<i64, ConfigError> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| invalid(key, v, "expected an integer"))?;
    if n < min {
        return Err(invalid(key, v, format!("must be at least {min}")));
    }
    Ok(n)
}

/// An integer in `min..=max`; outside it is an error naming the range (never clamped).
fn parse_range(key: &str, v: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let n = parse_i64(key, v, min)?;
    if n > max {
        return Err(invalid(key, v, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

/// A Kafka int: `min..=2147483647`.
fn parse_int(key: &str, v: &str, min: i64) -> Result<i64, ConfigError> {
    parse_range(key, v, min, i32::MAX as i64)
}

/// `n * unit` (a value given in hours or minutes, in ms); an overflow is an error
/// naming the key, never a wrapped or saturated number.
fn checked_mul(key: &str, v: &str, n: i64, unit: i64) -> Result<i64, ConfigError> {
    n.checked_mul(unit).ok_or_else(|| {
        invalid(
            key,
            v,
            format!("too large: {n} x {unit} ms overflows a 64-bit millisecond count"),
        )
    })
}

/// Two entries of `log.dirs` naming one directory (spelled alike, or reached through
/// `..`, `.` or a symlink) would hold the same partitions twice.
fn refuse_duplicate_dirs(key: &str, v: &str, dirs: &[PathBuf]) -> Result<(), ConfigError> {
    let mut seen: Vec<(PathBuf, &PathBuf)> = Vec::with_capacity(dirs.len());
    for d in dirs {
        let same = comparable_path(d);
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == same) {
            return Err(invalid(
                key,
                v,
                format!(
                    "'{}' and '{}' are the same directory; list each data directory once",
                    first.display(),
                    d.display()
                ),
            ));
        }
        seen.push((same, d));
    }
    Ok(())
}

/// The path with `.`/`..` resolved and, as far as it exists, symlinks followed (a log
/// dir need not exist before the first start).
fn comparable_path(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::env::current_dir().map_or_else(|_| p.to_path_buf(), |cwd| cwd.join(p));
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    // Canonicalize the longest existing ancestor, then append the rest.
    let mut rest = Vec::new();
    let mut head = lexical.clone();
    loop {
        if let Ok(real) = head.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(real, |acc, part: &std::ffi::OsString| acc.join(part));
        }
        match (head.file_name().map(|f| f.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                head = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, v, "expected true or false")),
    }
}

fn parse_timestamp_type(key: &str, v: &str) -> Result<TimestampType, ConfigError> {
    match v.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(invalid(key, v, "expected CreateTime or LogAppendTime")),
    }
}

/// A configuration being built from `key=value` pairs: the setters of `keys::CONFIGS`
/// write into it.
pub struct Parsing {
    c: BrokerConfig,
    /// `log.retention.ms`, `.minutes`, `.hours`, in ms: the finest given wins (Kafka).
    retention: [Option<i64>; 3],
    /// `log.roll.ms`, `log.roll.hours`, in ms.
    roll: [Option<i64>; 2],
    /// `controller.quorum.bootstrap.servers`, resolved once the voters are known.
    quorum_bootstrap: Option<String>,
}

impl BrokerConfig {
    /// Reads a properties file (Kafka's format: `key=value`, `#` and `!` comments).
    pub fn read_properties(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line.split_once(['=', ':']).ok_or(ConfigError::Syntax {
                path: path.display().to_string(),
                line: i + 1,
            })?;
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(pairs)
    }

    /// Parses `key=value` from the command line.
    pub fn parse_override(s: &str) -> Result<(String, String), ConfigError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| invalid(s, "", "expected key=value"))?;
        Ok((k.trim().to_string(), v.trim().to_string()))
    }

    /// Builds a config from pairs in order (later pairs win), validating every key.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, ConfigError> {
        let c = BrokerConfig {
            node_id: 1,
            listener_config: Default::default(),
            listeners: crate::server::listeners::ListenerConfig::default()
                .validate(true, None)
                .expect("the default listener is valid"),
            http_listener: Some("127.0.0.1:9644".parse().expect("valid")),
            http_tls: false,
            log_dirs: vec![PathBuf::from("./runnel-data")],
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            delete_topic_enable: true,
            socket_request_max_bytes: runnel_protocol::frame::DEFAULT_MAX_REQUEST_BYTES,
            limits: RequestLimits::default(),
            retention_check_interval_ms: 300_000,
            cleaner_backoff_ms: 15_000,
            flush_interval_ms: None,
            flush_on_acks_all: true,
            rack: None,
            log_defaults: LogConfig::default(),
            min_insync_replicas: 1,
            groups: crate::coordinators::groups::GroupConfig::default(),
            share: crate::coordinators::share::ShareConfig::default(),
            txn: crate::coordinators::txn::TxnConfig::default(),
            cluster: ClusterConfig::default(),
            authz: Default::default(),
            quota: Default::default(),
            explicit: BTreeMap::new(),
            security: Default::default(),
        };
        let mut p = Parsing {
            c,
            retention: [None; 3],
            roll: [None; 2],
            quorum_bootstrap: None,
        };
        for (key, v) in pairs {
            let k = key.as_str();
            match keys::broker_key(k) {
                Some(def) => {
                    let n = def.kind.check(k, v)?;
                    if let Some(set) = def.set {
                        set(&mut p, &keys::Value { key: k, raw: v, n })?;
                    }
                }
                // Also per listener (`listener.name.<l>.<key>`): security/ reads them.
                None if crate::server::security::is_security_key(k) => {
                    p.c.security.keys.insert(k.to_string(), v.clone());
                }
                None => {
                    let hint = " (see docs/configuration.md for the keys Runnel knows)".to_string();
                    return Err(ConfigError::UnknownKey {
                        key: k.to_string(),
                        hint,
                    });
                }
            }
            if !is_sensitive(k) {
                // Passwords and JAAS configs are never shown (Kafka reports them null).
                p.c.explicit.insert(k.to_string(), v.clone());
            }
        }
        let mut c = p.c;
        c.share.validate().map_err(|why| {
            invalid(
                "group.share.record.lock.duration.ms",
                &c.share.record_lock_duration_ms.to_string(),
                why,
            )
        })?;
        let frame = c.socket_request_max_bytes;
        for (key, n) in [
            (
                "queued.max.request.bytes",
                c.limits.queued_max_request_bytes,
            ),
            (
                "connection.queued.max.request.bytes",
                Some(c.limits.connection_queued_max_request_bytes),
            ),
        ] {
            if n.is_some_and(|n| n < frame) {
                let v = n.unwrap_or(0).to_string();
                return Err(invalid(
                    key,
                    &v,
                    format!("must be at least socket.request.max.bytes ({frame}), or a largest request could never be read"),
                ));
            }
        }
        // Kafka resolves retention and roll from the most precise unit given.
        if let Some(ms) = p.retention.iter().flatten().next() {
            c.log_defaults.retention_ms = *ms;
        }
        if let Some(ms) = p.roll.iter().flatten().next() {
            c.log_defaults.segment_ms = *ms;
        }
        if let Some(servers) = p.quorum_bootstrap.filter(|_| c.cluster.voters.is_empty()) {
            c.cluster.voters = standalone_voter(&c, &servers)?;
        }
        let voter_port = c
            .cluster
            .voters
            .iter()
            .find(|(id, _)| *id == c.node_id)
            .map(|(_, addr)| addr.port());
        c.listeners = c
            .listener_config
            .validate(c.cluster.broker_role, voter_port)?;
        c.security = crate::server::security::SecurityConfig::validate(
            std::mem::take(&mut c.security.keys),
            &c.listeners,
        )?;
        c.security.http = c.security.http_settings(c.http_tls)?;
        // A node without voters runs its one-voter quorum on a loopback port nobody else
        // dials: it has no controller listener to secure.
        if !c.cluster.voters.is_empty() {
            c.security.controller = c
                .security
                .controller_settings(&c.listeners, c.cluster.controller_role)?;
        }
        Ok(c)
    }

    /// Keys accepted for compatibility that have no effect, among those set.
    pub fn ignored_keys(&self) -> Vec<&str> {
        self.explicit
            .keys()
            .map(String::as_str)
            .filter(|k| keys::broker_key(k).is_some_and(|d| d.set.is_none()))
            .collect()
    }
}

/// Checks one topic config; the error names the key and says what is wrong.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), ConfigError> {
    let Some(def) = keys::topic_key(key) else {
        return Err(ConfigError::UnknownKey {
            key: key.to_string(),
            hint: " (not a Kafka topic config)".into(),
        });
    };
    def.kind.check(key, value).map(drop)
}

/// The effective log settings of a topic: broker defaults overlaid by topic configs
/// (which were validated when they were set).
pub fn topic_log_config(
    defaults: &LogConfig,
    topic_configs: &BTreeMap<String, String>,
) -> LogConfig {
    let mut c = defaults.clone();
    for (k, v) in topic_configs {
        let n = v.trim().parse::<i64>().ok();
        match (k.as_str(), n) {
            ("retention.ms", Some(n)) => c.retention_ms = n,
            ("retention.bytes", Some(n)) => c.retention_bytes = n,
            ("segment.bytes", Some(n)) => c.segment_bytes = n.max(14) as u64,
            ("segment.ms", Some(n)) => c.segment_ms = n,
            ("max.message.bytes", Some(n)) => c.max_message_bytes = n.max(0) as usize,
            ("index.interval.bytes", Some(n)) => c.index_interval_bytes = n.max(0) as u64,
            ("flush.messages", Some(n)) => c.flush_messages = n.max(1),
            ("cleanup.policy", _) => c.compacted = v.split(',').any(|p| p.trim() == "compact"),
            ("message.timestamp.type", _) => {
                c.timestamp_type = if v == "LogAppendTime" {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                }
            }
            _ => {}
        }
    }
    c
}

/// The compaction settings of a topic whose `cleanup.policy` includes `compact`.
pub fn topic_compaction(
    topic_configs: &BTreeMap<String, String>,
) -> Option<runnel_log::CompactionConfig> {
    let policy = topic_configs.get("cleanup.policy")?;
    if !policy.split(',').any(|p| p.trim() == "compact") {
        return None;
    }
    let mut c = runnel_log::CompactionConfig::default();
    if let Some(v) = topic_configs
        .get("delete.retention.ms")
        .and_then(|v| v.trim().parse().ok())
    {
        c.delete_retention_ms = v;
    }
    if let Some(v) = topic_configs
        .get("min.compaction.lag.ms")
        .and_then(|v| v.trim().parse().ok())
    {
        c.min_compaction_lag_ms = v;
    }
    if let Some(v) = topic_configs
        .get("min.cleanable.dirty.ratio")
        .and_then(|v| v.trim().parse().ok())
    {
        c.min_cleanable_dirty_ratio = v;
    }
    Some(c)
}

/// Whether time and size retention apply: `cleanup.policy` includes `delete` (the default).
pub fn topic_deletes(topic_configs: &BTreeMap<String, String>) -> bool {
    topic_configs
        .get("cleanup.policy")
        .is_none_or(|p| p.split(',').any(|x| x.trim() == "delete"))
}

/// The value Kafka reports for a topic config nobody set: the value in force of its
/// broker synonym (`log.retention.ms` for `retention.ms`), else Kafka's default.
pub fn topic_config_default(key: &str, broker: &BrokerConfig) -> Option<String> {
    let def = keys::topic_key(key)?;
    keys::broker_synonyms(key)
        .find_map(|b| b.get.and_then(|get| get(broker)))
        .or_else(|| def.default_value().map(String::from))
}

/// Whether a key's value is a secret (never logged, described without its value).
pub fn is_sensitive(key: &str) -> bool {
    crate::server::security::is_sensitive(key)
        || keys::broker_key(key).is_some_and(|d| d.sensitive())
}

impl BrokerConfig {
    /// The static configuration with dynamic overrides applied (validated like a file).
    pub fn with_dynamic(
        &self,
        dynamic: &BTreeMap<String, String>,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut pairs: Vec<(String, String)> = self
            .explicit
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Secrets are kept out of `explicit` (never described) but still configure.
        pairs.extend(
            self.security
                .keys
                .iter()
                .filter(|(k, _)| crate::server::security::is_sensitive(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        for (k, v) in dynamic {
            let def = keys::broker_key(k).filter(|d| d.dynamic != keys::Dynamic::ReadOnly);
            let Some(def) = def else {
                let dynamic: Vec<&str> = keys::applied_dynamic_keys().collect();
                return Err(ConfigError::UnknownKey {
                    key: k.clone(),
                    hint: format!(
                        " (not changeable while the broker runs; dynamic keys: {})",
                        dynamic.join(", ")
                    ),
                });
            };
            if def.dynamic == keys::Dynamic::Stored {
                def.kind.check(k, v)?;
                continue;
            }
            // A finer retention or roll unit set statically would shadow the dynamic one.
            if k == "log.retention.ms" {
                pairs.retain(|(key, _)| {
                    key != "log.retention.minutes" && key != "log.retention.hours"
                });
            }
            if k == "log.roll.ms" {
                pairs.retain(|(key, _)| key != "log.roll.hours");
            }
            pairs.push((k.clone(), v.clone()));
        }
        let mut c = BrokerConfig::from_pairs(&pairs)?;
        c.explicit = self.explicit.clone();
        Ok(c)
    }
}

/// The host part of each `id@host:port` of `controller.quorum.voters` (already validated
/// by `parse_voters`), brackets of an IPv6 address removed.
fn voter_hosts(v: &str) -> BTreeMap<i32, String> {
    v.split(',')
        .filter_map(|part| {
            let (id, addr) = part.trim().split_once('@')?;
            let (host, _) = addr.trim().rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((id.trim().parse().ok()?, host.to_string()))
        })
        .collect()
}

/// KIP-853's `controller.quorum.bootstrap.servers` without `controller.quorum.voters`:
/// Runnel's quorum has a static voter set, so it can only be the one node given, this
/// controller itself (what `kafka-storage format --standalone` makes). Any other shape
/// needs the voters' ids, which only `controller.quorum.voters` gives.
fn standalone_voter(
    c: &BrokerConfig,
    servers: &str,
) -> Result<Vec<(i32, SocketAddr)>, ConfigError> {
    let key = "controller.quorum.bootstrap.servers";
    let entries: Vec<&str> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if entries.len() != 1 || !c.cluster.controller_role {
        return Err(invalid(
            key,
            servers,
            "Runnel's metadata quorum has a fixed voter set: set controller.quorum.voters \
             (id@host:port for each voter); a bootstrap list alone works only for one \
             combined node that is its own single voter",
        ));
    }
    runnel_meta::parse_voters(&format!("{}@{}", c.node_id, entries[0]))
        .map_err(|why| invalid(key, servers, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::default();
        assert_eq!(
            c.listeners.broker[0].to_string(),
            "PLAINTEXT://127.0.0.1:9092"
        );
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics);
        assert_eq!(c.log_defaults.retention_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(c.log_defaults.max_message_bytes, 1_048_588);
    }

    #[test]
    fn unknown_and_malformed_keys_are_refused_by_name() {
        let e = BrokerConfig::from_pairs(&pairs(&[("num.partitons", "3")])).unwrap_err();
        assert!(e.to_string().contains("num.partitons"));
        let e = BrokerConfig::from_pairs(&pairs(&[("num.partitions", "three")])).unwrap_err();
        assert!(e.to_string().contains("num.partitions") && e.to_string().contains("three"));
        assert!(BrokerConfig::from_pairs(&pairs(&[("listeners", "127.0.0.1:9092")])).is_err());
    }

    #[test]
    fn kafkas_kraft_server_properties_are_accepted() {
        let c = BrokerConfig::from_pairs(&pairs(&[
            ("process.roles", "broker,controller"),
            ("node.id", "2"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:19093,2@127.0.0.1:19094,3@127.0.0.1:19095",
            ),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19094",
            ),
            ("advertised.listeners", "PLAINTEXT://localhost:9092"),
            ("controller.listener.names", "CONTROLLER"),
            ("inter.broker.listener.name", "PLAINTEXT"),
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ),
        ]))
        .unwrap();
        assert_eq!(c.listeners.broker.len(), 1);
        assert_eq!(c.listeners.advertised["PLAINTEXT"].host, "localhost");
        let e = BrokerConfig::from_pairs(&pairs(&[
            ("node.id", "2"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:19093,2@127.0.0.1:19094",
            ),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("19094"), "{e}");
    }

    #[test]
    fn a_secured_controller_listener_is_checked_at_start_naming_the_key() {
        let base = [
            ("process.roles", "broker,controller"),
            ("node.id", "1"),
            (
                "controller.quorum.voters",
                "1@localhost:19093,2@127.0.0.1:19094",
            ),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19093",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            BrokerConfig::from_pairs(&pairs(&all))
        };
        let ssl = (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
        );
        let sasl_ssl = (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL",
        );
        let stores = [
            ("listener.name.controller.ssl.keystore.type", "PEM"),
            ("listener.name.controller.ssl.keystore.location", "/k.pem"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.location", "/ca.pem"),
        ];
        let err = |extra: &[(&'static str, &'static str)]| with(extra).unwrap_err().to_string();
        // SSL with no keystore, or no truststore.
        let e = err(&[ssl]);
        assert!(
            e.contains("listener.name.controller.ssl.keystore.location"),
            "{e}"
        );
        let e = err(&[ssl, stores[0], stores[1]]);
        assert!(
            e.contains("listener.name.controller.ssl.truststore.location"),
            "{e}"
        );
        let c = with(&[ssl, stores[0], stores[1], stores[2], stores[3]]).unwrap();
        let cs = c.security.controller.as_ref().unwrap();
        assert_eq!(
            (cs.listener.as_str(), cs.protocol),
            ("CONTROLLER", crate::server::security::Protocol::Ssl)
        );
        assert_eq!(c.cluster.voter_hosts[&1], "localhost");
        // SASL: the mechanism must be set, known and PLAIN; the JAAS config names users.
        let sasl = |extra: &[(&'static str, &'static str)]| {
            let mut all = vec![sasl_ssl];
            all.extend_from_slice(&stores);
            all.extend_from_slice(extra);
            with(&all)
        };
        let sasl_err =
            |extra: &[(&'static str, &'static str)]| sasl(extra).unwrap_err().to_string();
        let e = sasl_err(&[]);
        assert!(
            e.contains("sasl.mechanism.controller.protocol") && e.contains("GSSAPI"),
            "{e}"
        );
        let e = sasl_err(&[("sasl.mechanism.controller.protocol", "KERBEROS-9")]);
        assert!(
            e.contains("sasl.mechanism.controller.protocol") && e.contains("KERBEROS-9"),
            "{e}"
        );
        let e = sasl_err(&[("sasl.mechanism.controller.protocol", "SCRAM-SHA-256")]);
        assert!(e.contains("PLAIN only"), "{e}");
        let plain = [
            ("sasl.mechanism.controller.protocol", "PLAIN"),
            ("listener.name.controller.sasl.enabled.mechanisms", "PLAIN"),
        ];
        let jaas = "listener.name.controller.plain.sasl.jaas.config";
        let good = "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\" password=\"p\" user_a=\"p\";";
        let e = sasl_err(&[
            plain[0],
            plain[1],
            (
                jaas,
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=\"p\";",
            ),
        ]);
        assert!(e.contains(jaas) && e.contains("username"), "{e}");
        let e = sasl_err(&[
            plain[0],
            (jaas, good),
            (
                "listener.name.controller.sasl.enabled.mechanisms",
                "SCRAM-SHA-512",
            ),
        ]);
        assert!(
            e.contains("listener.name.controller.sasl.enabled.mechanisms"),
            "{e}"
        );
        let c = sasl(&[plain[0], plain[1], (jaas, good)]).unwrap();
        let cs = c.security.controller.as_ref().unwrap();
        assert_eq!(cs.plain_users.as_ref().unwrap()["a"], "p");
        assert_eq!(cs.credentials.as_ref().unwrap().username, "a");
        // The files are read when the broker's security is built: an error names them.
        let e = crate::server::security::Security::build(&c).err().unwrap();
        assert!(
            e.contains("controller listener CONTROLLER") && e.contains("/k.pem"),
            "{e}"
        );
    }

    #[test]
    fn retention_uses_the_finest_unit() {
        let c = BrokerConfig::from_pairs(&pairs(&[
            ("log.retention.hours", "1"),
            ("log.retention.ms", "5000"),
        ]))
        .unwrap();
        assert_eq!(c.log_defaults.retention_ms, 5000);
        let c = BrokerConfig::from_pairs(&pairs(&[("log.retention.hours", "2")])).unwrap();
        assert_eq!(c.log_defaults.retention_ms, 7_200_000);
    }

    #[test]
    fn overflowing_units_are_errors_naming_the_key() {
        for (k, v) in [
            ("log.retention.hours", "26476201841349237"),
            ("log.retention.minutes", "2147483648"),
            ("log.roll.hours", "9999999999"),
            ("offsets.retention.minutes", "9223372036854775807"),
        ] {
            let e = BrokerConfig::from_pairs(&pairs(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}: {e}");
        }
        // The largest int of hours is still a valid (long) number of ms.
        let c = BrokerConfig::from_pairs(&pairs(&[("log.retention.hours", "2147483647")])).unwrap();
        assert_eq!(c.log_defaults.retention_ms, 2_147_483_647 * 3_600_000);
    }

    #[test]
    fn out_of_range_values_are_refused_not_clamped() {
        for (k, v) in [
            ("log.segment.bytes", "1099511627776"),
            ("log.segment.bytes", "13"),
            ("num.partitions", "3000000000"),
            ("offsets.topic.num.partitions", "100001"),
            ("replica.fetch.wait.max.ms", "60001"),
            ("fetch.max.bytes", "100"),
            ("queued.max.request.bytes", "0"),
            ("queued.max.request.bytes", "1024"),
            ("max.connections.per.ip.overrides", "somehost:3"),
        ] {
            let e = BrokerConfig::from_pairs(&pairs(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
        let c = BrokerConfig::from_pairs(&pairs(&[
            ("log.segment.bytes", "2147483647"),
            ("queued.max.request.bytes", "-1"),
            ("max.connections.per.ip.overrides", "127.0.0.1:3,[::1]:4"),
        ]))
        .unwrap();
        assert_eq!(c.log_defaults.segment_bytes, 2_147_483_647);
        assert_eq!(c.limits.queued_max_request_bytes, None);
        assert_eq!(c.limits.max_connections_per_ip_overrides.len(), 2);
    }

    #[test]
    fn a_log_dir_listed_twice_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::symlink(&d, tmp.path().join("link")).unwrap();
        let t = tmp.path().display();
        for dirs in [
            format!("{t}/d,{t}/d"),
            format!("{t}/d,{t}/x/../d"),
            format!("{t}/d,{t}/./link"),
            format!("{t}/new,{t}/new/"),
        ] {
            let e = BrokerConfig::from_pairs(&pairs(&[("log.dirs", &dirs)])).unwrap_err();
            assert!(e.to_string().contains("same directory"), "{dirs}: {e}");
        }
        assert!(BrokerConfig::from_pairs(&pairs(&[("log.dirs", &format!("{t}/a,{t}/b"))])).is_ok());
    }

    #[test]
    fn kafkas_empty_defaults_and_dynamic_keys_are_accepted_from_the_file() {
        // Kafka's defaults for these are the empty list; they used to be refused.
        let c = BrokerConfig::from_pairs(&pairs(&[
            ("controller.quorum.voters", ""),
            ("controller.quorum.bootstrap.servers", ""),
            ("background.threads", "4"),
        ]))
        .unwrap();
        assert!(c.cluster.voters.is_empty());
        assert_eq!(c.ignored_keys(), ["background.threads"]);
        let e = BrokerConfig::from_pairs(&pairs(&[("background.threads", "0")])).unwrap_err();
        assert!(e.to_string().contains("background.threads"), "{e}");
    }

    #[test]
    fn dynamic_changes_follow_each_keys_update_mode() {
        let c = BrokerConfig::default();
        let set = |k: &str, v: &str| c.with_dynamic(&BTreeMap::from([(k.into(), v.into())]));
        assert_eq!(
            set("log.retention.ms", "5000")
                .unwrap()
                .log_defaults
                .retention_ms,
            5000
        );
        // Stored only: type-checked, not applied.
        let kept = set("max.connections", "7").unwrap();
        assert_eq!(kept.limits.max_connections, c.limits.max_connections);
        assert!(set("max.connections", "many").is_err());
        // Read-only: refused, naming the keys that may change.
        let e = set("num.partitions", "3").unwrap_err().to_string();
        assert!(
            e.contains("num.partitions") && e.contains("log.retention.ms"),
            "{e}"
        );
    }

    #[test]
    fn topic_configs_are_validated() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-5").is_err());
        assert!(validate_topic_config("retention.mss", "1").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
    }
}
