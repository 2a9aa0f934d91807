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

/// Kafka keys Runnel accepts in server.properties but that change nothing here (thread
/// pools and buffers Runnel sizes itself, settings of features not yet built). They are
/// accepted so an existing Kafka properties file starts; each one is logged at start.
const ACCEPTED_WITHOUT_EFFECT: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.replica.fetchers",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "queued.max.requests",
    "transaction.state.log.min.isr",
    "log.cleaner.threads",
    "compression.type",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
];

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
    pub listener_config: crate::listeners::ListenerConfig,
    /// The same, validated together: what the server binds and what clients are told.
    pub listeners: crate::listeners::Listeners,
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
    pub groups: crate::groups::GroupConfig,
    /// Share-group settings (`group.share.*`).
    pub share: crate::share::ShareConfig,
    /// Transaction coordinator settings (`transaction.*`).
    pub txn: crate::txn::TxnConfig,
    /// Replication and the metadata quorum; `voters` empty means a single node.
    pub cluster: ClusterConfig,
    /// `authorizer.class.name`, `super.users`, `allow.everyone.if.no.acl.found`.
    pub authz: crate::authz::AuthzConfig,
    /// `quota.window.num`, `quota.window.size.seconds`.
    pub quota: crate::quota::QuotaConfig,
    /// The keys that were set, with their values, for DescribeConfigs and logging.
    pub explicit: BTreeMap<String, String>,
    /// TLS and SASL (`ssl.*`, `sasl.*`, `listener.name.<l>.*`), see `security/`.
    pub security: crate::security::SecurityConfig,
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
        let mut c = BrokerConfig {
            node_id: 1,
            listener_config: Default::default(),
            listeners: crate::listeners::ListenerConfig::default()
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
            groups: crate::groups::GroupConfig::default(),
            share: crate::share::ShareConfig::default(),
            txn: crate::txn::TxnConfig::default(),
            cluster: ClusterConfig::default(),
            authz: Default::default(),
            quota: Default::default(),
            explicit: BTreeMap::new(),
            security: Default::default(),
        };
        // Kafka resolves retention and roll from the most precise unit given.
        let (mut retention_ms, mut retention_minutes, mut retention_hours) = (None, None, None);
        let (mut roll_ms, mut roll_hours) = (None, None);
        let mut quorum_bootstrap: Option<String> = None;
        for (key, v) in pairs {
            let k = key.as_str();
            match k {
                "node.id" | "broker.id" => {
                    c.node_id = parse_i64(k, v, 0)?
                        .try_into()
                        .map_err(|_| invalid(k, v, "too large"))?
                }
                "listeners" => {
                    let endpoints = crate::listeners::parse_endpoints(k, v)?;
                    for e in &endpoints {
                        e.bind_addr().map_err(|why| invalid(k, v, why))?;
                    }
                    c.listener_config.listeners = endpoints;
                }
                "advertised.listeners" => {
                    c.listener_config.advertised = crate::listeners::parse_endpoints(k, v)?
                }
                "listener.security.protocol.map" => {
                    c.listener_config.protocol_map = crate::listeners::parse_protocol_map(k, v)?;
                    c.listener_config.protocol_map_set = true;
                }
                "inter.broker.listener.name" => {
                    c.listener_config.inter_broker = Some(v.trim().to_ascii_uppercase())
                }
                "security.inter.broker.protocol" => {
                    if v.trim() != "PLAINTEXT" {
                        return Err(invalid(
                            k,
                            v,
                            "only PLAINTEXT is served yet (TLS and SASL are not built)",
                        ));
                    }
                }
                "controller.listener.names" => {
                    c.listener_config.controller_names = crate::listeners::parse_names(v)
                }
                "controller.quorum.bootstrap.servers" => {
                    quorum_bootstrap = Some(v.trim().to_string());
                }
                "http.listeners" => {
                    let v_trim = v.trim();
                    c.http_tls = v_trim.starts_with("https://");
                    let addr = v_trim
                        .strip_prefix("https://")
                        .or_else(|| v_trim.strip_prefix("http://"))
                        .unwrap_or(v_trim);
                    c.http_listener = if addr.is_empty() {
                        None
                    } else {
                        let (host, port) = addr
                            .rsplit_once(':')
                            .ok_or_else(|| invalid(k, v, "expected host:port"))?;
                        let port: u16 = port
                            .parse()
                            .map_err(|_| invalid(k, v, "port must be 0-65535"))?;
                        let host = host.trim_matches(|c| c == '[' || c == ']');
                        let host = if host.is_empty() { "0.0.0.0" } else { host };
                        Some(
                            host.parse::<std::net::IpAddr>()
                                .map(|ip| SocketAddr::new(ip, port))
                                .map_err(|_| invalid(k, v, "host must be an IP address"))?,
                        )
                    }
                }
                "log.dirs" | "log.dir" => {
                    let dirs: Vec<PathBuf> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect();
                    if dirs.is_empty() {
                        return Err(invalid(k, v, "at least one directory"));
                    }
                    refuse_duplicate_dirs(k, v, &dirs)?;
                    c.log_dirs = dirs;
                }
                "num.partitions" => c.num_partitions = parse_int(k, v, 1)? as i32,
                "default.replication.factor" => {
                    c.default_replication_factor = parse_range(k, v, 1, i16::MAX as i64)? as i16
                }
                "auto.create.topics.enable" => c.auto_create_topics = parse_bool(k, v)?,
                "delete.topic.enable" => c.delete_topic_enable = parse_bool(k, v)?,
                "message.max.bytes" => {
                    c.log_defaults.max_message_bytes = parse_int(k, v, 0)? as usize
                }
                "socket.request.max.bytes" => {
                    c.socket_request_max_bytes = parse_int(k, v, 1024)? as usize
                }
                "fetch.max.bytes" => c.limits.fetch_max_bytes = parse_int(k, v, 1024)? as usize,
                "replica.fetch.response.max.bytes" => {
                    c.limits.replica_fetch_response_max_bytes = parse_int(k, v, 0)? as usize
                }
                "queued.max.request.bytes" => {
                    let n = parse_i64(k, v, -1)?;
                    if n == 0 {
                        return Err(invalid(k, v, "must be -1 (unbounded) or at least 1"));
                    }
                    c.limits.queued_max_request_bytes = (n > 0).then_some(n as usize)
                }
                "connection.queued.max.request.bytes" => {
                    c.limits.connection_queued_max_request_bytes = parse_i64(k, v, 1)? as usize
                }
                "connections.max.idle.ms" => {
                    c.limits.connections_max_idle_ms = parse_i64(k, v, 1)? as u64
                }
                "request.read.timeout.ms" => {
                    c.limits.request_read_timeout_ms = parse_i64(k, v, 1)? as u64
                }
                "max.connections" => c.limits.max_connections = parse_int(k, v, 0)? as usize,
                "max.connections.per.ip" => {
                    c.limits.max_connections_per_ip = parse_int(k, v, 0)? as usize
                }
                "max.connections.per.ip.overrides" => {
                    c.limits.max_connections_per_ip_overrides = parse_ip_overrides(k, v)?
                }
                "max.partitions.per.request" => {
                    c.limits.max_partitions_per_request = parse_int(k, v, 1)? as usize
                }
                "max.partitions.per.broker" => {
                    c.limits.max_partitions_per_broker = parse_int(k, v, 1)? as usize
                }
                "log.segment.bytes" => c.log_defaults.segment_bytes = parse_int(k, v, 14)? as u64,
                // Kafka's types: the ms keys are longs, the hour and minute keys ints.
                "log.roll.ms" => roll_ms = Some(parse_i64(k, v, 1)?),
                "log.roll.hours" => {
                    let h = parse_int(k, v, 1)?;
                    roll_hours = Some(checked_mul(k, v, h, 3_600_000)?)
                }
                "log.retention.ms" => retention_ms = Some(parse_i64(k, v, -1)?),
                "log.retention.minutes" => {
                    let m = parse_int(k, v, -1)?;
                    retention_minutes = Some(if m < 0 {
                        -1
                    } else {
                        checked_mul(k, v, m, 60_000)?
                    })
                }
                "log.retention.hours" => {
                    let h = parse_int(k, v, -1)?;
                    retention_hours = Some(if h < 0 {
                        -1
                    } else {
                        checked_mul(k, v, h, 3_600_000)?
                    })
                }
                "log.retention.bytes" => c.log_defaults.retention_bytes = parse_i64(k, v, -1)?,
                "log.retention.check.interval.ms" => {
                    c.retention_check_interval_ms = parse_i64(k, v, 1)? as u64
                }
                "log.cleaner.backoff.ms" => c.cleaner_backoff_ms = parse_i64(k, v, 1)? as u64,
                "log.index.interval.bytes" => {
                    c.log_defaults.index_interval_bytes = parse_i64(k, v, 0)? as u64
                }
                "log.message.timestamp.type" => {
                    c.log_defaults.timestamp_type = parse_timestamp_type(k, v)?
                }
                "log.flush.interval.messages" => {
                    c.log_defaults.flush_messages = parse_i64(k, v, 1)?
                }
                "log.flush.interval.ms" => c.flush_interval_ms = Some(parse_i64(k, v, 1)? as u64),
                "log.cleaner.enable" => {
                    if !parse_bool(k, v)? {
                        return Err(invalid(k, v, "the log cleaner cannot be disabled: compacted topics (and __consumer_offsets) rely on it"));
                    }
                }
                "log.flush.on.acks.all" => c.flush_on_acks_all = parse_bool(k, v)?,
                "min.insync.replicas" => c.min_insync_replicas = parse_int(k, v, 1)? as i32,
                "broker.rack" => c.rack = Some(v.clone()),
                "group.initial.rebalance.delay.ms" => {
                    c.groups.initial_rebalance_delay_ms = parse_i64(k, v, 0)? as u64
                }
                "group.min.session.timeout.ms" => {
                    c.groups.min_session_timeout_ms = parse_int(k, v, 0)? as i32
                }
                "group.max.session.timeout.ms" => {
                    c.groups.max_session_timeout_ms = parse_int(k, v, 0)? as i32
                }
                "offsets.retention.minutes" => {
                    c.groups.offsets_retention_ms = checked_mul(k, v, parse_i64(k, v, 1)?, 60_000)?
                }
                "offsets.topic.num.partitions" => {
                    c.groups.offsets_topic_partitions = parse_range(k, v, 1, 100_000)? as i32
                }
                "transaction.max.timeout.ms" => c.txn.max_timeout_ms = parse_int(k, v, 1)? as i32,
                "transaction.state.log.num.partitions" => {
                    c.txn.partitions = parse_range(k, v, 1, 100_000)? as i32
                }
                "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                    c.txn.abort_check_interval_ms = parse_i64(k, v, 1)? as u64
                }
                "group.consumer.heartbeat.interval.ms" => {
                    c.groups.consumer_heartbeat_interval_ms = parse_int(k, v, 1)? as i32
                }
                "group.consumer.session.timeout.ms" => {
                    c.groups.consumer_session_timeout_ms = parse_int(k, v, 1)? as i32
                }
                "controller.quorum.voters" => {
                    c.cluster.voters =
                        runnel_meta::parse_voters(v).map_err(|why| invalid(k, v, why))?;
                    c.cluster.voter_hosts = voter_hosts(v);
                }
                "process.roles" => {
                    let roles: Vec<&str> = v.split(',').map(str::trim).collect();
                    if roles.is_empty()
                        || roles.iter().any(|r| !matches!(*r, "broker" | "controller"))
                    {
                        return Err(invalid(
                            k,
                            v,
                            "expected broker, controller, or broker,controller",
                        ));
                    }
                    c.cluster.broker_role = roles.contains(&"broker");
                    c.cluster.controller_role = roles.contains(&"controller");
                }
                "metadata.log.dir" => c.cluster.metadata_dir = Some(PathBuf::from(v.trim())),
                "replica.lag.time.max.ms" => {
                    c.cluster.replica_lag_time_max_ms = parse_i64(k, v, 1)? as u64
                }
                "replica.fetch.wait.max.ms" => {
                    c.cluster.replica_fetch_wait_max_ms = parse_range(k, v, 1, 60_000)? as u64
                }
                "replica.fetch.max.bytes" => {
                    c.cluster.replica_fetch_max_bytes = parse_int(k, v, 1)? as usize
                }
                "broker.session.timeout.ms" => {
                    c.cluster.broker_session_timeout_ms = parse_i64(k, v, 1)? as u64
                }
                "broker.heartbeat.interval.ms" => {
                    c.cluster.broker_heartbeat_interval_ms = parse_i64(k, v, 1)? as u64
                }
                "controller.quorum.election.timeout.ms" => {
                    c.cluster.quorum_election_timeout_ms = parse_range(k, v, 10, 3_600_000)? as u64
                }
                "controller.quorum.fetch.timeout.ms" => {
                    c.cluster.quorum_fetch_timeout_ms = parse_range(k, v, 10, 3_600_000)? as u64
                }
                "offsets.topic.replication.factor" => {
                    c.cluster.offsets_topic_replication_factor =
                        parse_range(k, v, 1, i16::MAX as i64)? as i16
                }
                "transaction.state.log.replication.factor" => {
                    c.cluster.transaction_state_replication_factor =
                        parse_range(k, v, 1, i16::MAX as i64)? as i16
                }
                "unclean.leader.election.enable" => {
                    if parse_bool(k, v)? {
                        return Err(invalid(k, v, "unclean leader election is not supported: it loses acknowledged records"));
                    }
                }
                "controlled.shutdown.enable" => c.cluster.controlled_shutdown = parse_bool(k, v)?,
                "replica.selector.class" => {
                    c.cluster.rack_aware_replica_selector = match v.trim() {
                        RACK_AWARE_REPLICA_SELECTOR => true,
                        "" => false,
                        _ => {
                            return Err(invalid(
                                k,
                                v,
                                format!(
                                "Runnel has one replica selector: {RACK_AWARE_REPLICA_SELECTOR}"
                            ),
                            ))
                        }
                    }
                }
                "follower.replication.throttled.rate" => {
                    c.cluster.follower_throttle_rate = Some(parse_i64(k, v, 1)? as u64)
                }
                "offset.metadata.max.bytes" => {
                    c.groups.offset_metadata_max_bytes = parse_i64(k, v, 0)? as usize
                }
                _ if c.authz.set(k, v)? => {}
                _ if c.quota.set(k, v)? => {}
                k if crate::share::config::is_share_key(k) => {
                    c.share.set(k, v).map_err(|why| invalid(k, v, why))?
                }
                _ if ACCEPTED_WITHOUT_EFFECT.contains(&k) => {}
                _ if crate::security::is_security_key(k) => {
                    c.security.keys.insert(k.to_string(), v.clone());
                }
                _ => {
                    let hint = " (see docs/configuration.md for the keys Runnel knows)".to_string();
                    return Err(ConfigError::UnknownKey {
                        key: k.to_string(),
                        hint,
                    });
                }
            }
            if !crate::security::is_sensitive(k) {
                // Passwords and JAAS configs are never shown (Kafka reports them null).
                c.explicit.insert(k.to_string(), v.clone());
            }
        }
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
        if let Some(ms) = retention_ms.or(retention_minutes).or(retention_hours) {
            c.log_defaults.retention_ms = ms;
        }
        if let Some(ms) = roll_ms.or(roll_hours) {
            c.log_defaults.segment_ms = ms;
        }
        if let Some(servers) = quorum_bootstrap.filter(|_| c.cluster.voters.is_empty()) {
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
        c.security = crate::security::SecurityConfig::validate(
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
            .filter(|k| ACCEPTED_WITHOUT_EFFECT.contains(k))
            .collect()
    }
}

/// How a topic-level config value is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Long(i64),
    Int(i64),
    Bool,
    Ratio,
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    List,
    /// Any text (a class name, a path, a password).
    Str,
    /// A non-negative number.
    Double,
}

/// Every topic config Kafka lets a user set, with its check. Runnel acts on
/// retention.ms, retention.bytes, segment.bytes, segment.ms, max.message.bytes,
/// message.timestamp.type, index.interval.bytes and flush.messages; the others are
/// stored and reported as set.
const TOPIC_CONFIGS: &[(&str, Kind)] = &[
    ("cleanup.policy", Kind::ListOf(&["delete", "compact"])),
    (
        "compression.type",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    ("compression.gzip.level", Kind::Int(-1)),
    ("compression.lz4.level", Kind::Int(1)),
    ("compression.zstd.level", Kind::Int(-131072)),
    ("delete.retention.ms", Kind::Long(0)),
    ("file.delete.delay.ms", Kind::Long(0)),
    ("flush.messages", Kind::Long(1)),
    ("flush.ms", Kind::Long(0)),
    ("follower.replication.throttled.replicas", Kind::List),
    ("index.interval.bytes", Kind::Int(0)),
    ("leader.replication.throttled.replicas", Kind::List),
    ("local.retention.bytes", Kind::Long(-2)),
    ("local.retention.ms", Kind::Long(-2)),
    ("max.compaction.lag.ms", Kind::Long(1)),
    ("max.message.bytes", Kind::Int(0)),
    ("message.timestamp.after.max.ms", Kind::Long(0)),
    ("message.timestamp.before.max.ms", Kind::Long(0)),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    ("min.cleanable.dirty.ratio", Kind::Ratio),
    ("min.compaction.lag.ms", Kind::Long(0)),
    ("min.insync.replicas", Kind::Int(1)),
    ("preallocate", Kind::Bool),
    ("remote.storage.enable", Kind::Bool),
    ("remote.log.copy.disable", Kind::Bool),
    ("remote.log.delete.on.disable", Kind::Bool),
    ("retention.bytes", Kind::Long(i64::MIN)),
    ("retention.ms", Kind::Long(-1)),
    ("segment.bytes", Kind::Int(14)),
    ("segment.index.bytes", Kind::Int(4)),
    ("segment.jitter.ms", Kind::Long(0)),
    ("segment.ms", Kind::Long(1)),
    ("unclean.leader.election.enable", Kind::Bool),
];

/// Checks one topic config; the error names the key and says what is wrong.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), ConfigError> {
    let Some((_, kind)) = TOPIC_CONFIGS.iter().find(|(k, _)| *k == key) else {
        return Err(ConfigError::UnknownKey {
            key: key.to_string(),
            hint: " (not a Kafka topic config)".into(),
        });
    };
    check_kind(key, value, *kind)
}

/// Checks a value against its kind; the error names the key and says what is wrong.
fn check_kind(key: &str, value: &str, kind: Kind) -> Result<(), ConfigError> {
    match kind {
        Kind::Long(min) => {
            parse_i64(key, value, min)?;
        }
        Kind::Int(min) => {
            let n = parse_i64(key, value, min)?;
            if n > i32::MAX as i64 {
                return Err(invalid(key, value, "must fit in a 32-bit integer"));
            }
        }
        Kind::Bool => {
            parse_bool(key, value)?;
        }
        Kind::Ratio => {
            let r: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid(key, value, "expected a number"))?;
            if !(0.0..=1.0).contains(&r) {
                return Err(invalid(key, value, "must be between 0 and 1"));
            }
        }
        Kind::OneOf(allowed) => {
            if !allowed.contains(&value.trim()) {
                return Err(invalid(
                    key,
                    value,
                    format!("expected one of {}", allowed.join(", ")),
                ));
            }
        }
        Kind::ListOf(allowed) => {
            for item in value.split(',').map(str::trim) {
                if !allowed.contains(&item) {
                    return Err(invalid(
                        key,
                        value,
                        format!("items must be among {}", allowed.join(", ")),
                    ));
                }
            }
        }
        Kind::Double => {
            let r: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid(key, value, "expected a number"))?;
            if r.is_nan() || r < 0.0 {
                return Err(invalid(key, value, "must be at least 0"));
            }
        }
        Kind::List | Kind::Str => {}
    }
    Ok(())
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

/// The value Kafka reports for a topic config nobody set, derived from the broker.
pub fn topic_config_default(key: &str, broker: &BrokerConfig) -> Option<String> {
    let d = &broker.log_defaults;
    Some(match key {
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        "retention.ms" => d.retention_ms.to_string(),
        "retention.bytes" => d.retention_bytes.to_string(),
        "segment.bytes" => d.segment_bytes.to_string(),
        "segment.ms" => d.segment_ms.to_string(),
        "max.message.bytes" => d.max_message_bytes.to_string(),
        "index.interval.bytes" => d.index_interval_bytes.to_string(),
        "flush.messages" => d.flush_messages.to_string(),
        "message.timestamp.type" => if d.timestamp_type == TimestampType::LogAppendTime {
            "LogAppendTime"
        } else {
            "CreateTime"
        }
        .into(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "delete.retention.ms" => "86400000".into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "unclean.leader.election.enable" => "false".into(),
        "compression.gzip.level" => "-1".into(),
        "compression.lz4.level" => "9".into(),
        "compression.zstd.level" => "3".into(),
        "file.delete.delay.ms" => "60000".into(),
        "flush.ms" => i64::MAX.to_string(),
        "follower.replication.throttled.replicas" | "leader.replication.throttled.replicas" => {
            String::new()
        }
        "local.retention.bytes" | "local.retention.ms" => "-2".into(),
        "max.compaction.lag.ms" => i64::MAX.to_string(),
        "message.timestamp.after.max.ms" => "3600000".into(),
        "message.timestamp.before.max.ms" => i64::MAX.to_string(),
        "preallocate"
        | "remote.storage.enable"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable" => "false".into(),
        "segment.index.bytes" => "10485760".into(),
        "segment.jitter.ms" => "0".into(),
        _ => return None,
    })
}

/// Kafka's ConfigType code for a topic config (DescribeConfigs v3+): BOOLEAN 1,
/// STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7.
pub fn topic_config_type(key: &str) -> i8 {
    TOPIC_CONFIGS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(0, |(_, kind)| kind_type_code(*kind))
}

fn kind_type_code(kind: Kind) -> i8 {
    match kind {
        Kind::Bool => 1,
        Kind::OneOf(_) | Kind::Str => 2,
        Kind::Int(_) => 3,
        Kind::Long(_) => 5,
        Kind::Ratio | Kind::Double => 6,
        Kind::ListOf(_) | Kind::List => 7,
    }
}

/// Broker keys that AlterConfigs/IncrementalAlterConfigs may change while the broker
/// runs (Kafka's dynamic per-broker log defaults). They take effect at once on every
/// partition that has no topic-level override, and persist across restarts.
pub const DYNAMIC_BROKER_KEYS: &[&str] = &[
    "log.retention.ms",
    "log.retention.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "message.max.bytes",
    "log.index.interval.bytes",
    "log.message.timestamp.type",
    "log.flush.interval.messages",
    "min.insync.replicas",
    "follower.replication.throttled.rate",
    // Acted on as a file key is: `false` (Runnel's only election) is accepted, `true` refused.
    "unclean.leader.election.enable",
];

/// Kafka's other dynamic broker keys (those its documentation lists with update mode
/// per-broker or cluster-wide): security, thread pools, connection quotas, cleaner and
/// remote-storage tuning, and log defaults Runnel does not have. Runnel validates their
/// type, stores them and reports them as set, but does not act on them (logged when set).
const DYNAMIC_BROKER_KEYS_IGNORED: &[(&str, Kind)] = &[
    ("advertised.listeners", Kind::List),
    ("background.threads", Kind::Int(1)),
    ("compression.gzip.level", Kind::Int(-1)),
    ("compression.lz4.level", Kind::Int(1)),
    (
        "compression.type",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    ("compression.zstd.level", Kind::Int(-131072)),
    ("leader.replication.throttled.rate", Kind::Long(0)),
    ("listener.security.protocol.map", Kind::List),
    ("listeners", Kind::List),
    ("log.cleaner.backoff.ms", Kind::Long(0)),
    ("log.cleaner.dedupe.buffer.size", Kind::Long(0)),
    ("log.cleaner.delete.retention.ms", Kind::Long(0)),
    ("log.cleaner.io.buffer.load.factor", Kind::Double),
    ("log.cleaner.io.buffer.size", Kind::Int(0)),
    ("log.cleaner.io.max.bytes.per.second", Kind::Double),
    ("log.cleaner.max.compaction.lag.ms", Kind::Long(1)),
    ("log.cleaner.min.cleanable.ratio", Kind::Ratio),
    ("log.cleaner.min.compaction.lag.ms", Kind::Long(0)),
    ("log.cleaner.threads", Kind::Int(0)),
    ("log.cleanup.policy", Kind::ListOf(&["delete", "compact"])),
    ("log.flush.interval.ms", Kind::Long(0)),
    ("log.index.size.max.bytes", Kind::Int(4)),
    ("log.local.retention.bytes", Kind::Long(-2)),
    ("log.local.retention.ms", Kind::Long(-2)),
    ("log.message.timestamp.after.max.ms", Kind::Long(0)),
    ("log.message.timestamp.before.max.ms", Kind::Long(0)),
    ("log.preallocate", Kind::Bool),
    ("log.roll.jitter.ms", Kind::Long(0)),
    ("log.segment.delete.delay.ms", Kind::Long(0)),
    ("max.connection.creation.rate", Kind::Int(0)),
    ("max.connections", Kind::Int(0)),
    ("max.connections.per.ip", Kind::Int(0)),
    ("max.connections.per.ip.overrides", Kind::Str),
    ("metric.reporters", Kind::List),
    ("num.io.threads", Kind::Int(1)),
    ("num.network.threads", Kind::Int(1)),
    ("num.recovery.threads.per.data.dir", Kind::Int(1)),
    ("num.replica.fetchers", Kind::Int(1)),
    ("producer.id.expiration.ms", Kind::Int(1)),
    ("remote.fetch.max.wait.ms", Kind::Int(1)),
    ("remote.list.offsets.request.timeout.ms", Kind::Long(1)),
    (
        "remote.log.index.file.cache.total.size.bytes",
        Kind::Long(1),
    ),
    ("remote.log.manager.copier.thread.pool.size", Kind::Int(1)),
    (
        "remote.log.manager.copy.max.bytes.per.second",
        Kind::Long(1),
    ),
    (
        "remote.log.manager.expiration.thread.pool.size",
        Kind::Int(1),
    ),
    (
        "remote.log.manager.fetch.max.bytes.per.second",
        Kind::Long(1),
    ),
    ("remote.log.manager.follower.thread.pool.size", Kind::Int(1)),
    (
        "replica.alter.log.dirs.io.max.bytes.per.second",
        Kind::Long(0),
    ),
    ("sasl.enabled.mechanisms", Kind::List),
    ("sasl.jaas.config", Kind::Str),
    ("sasl.kerberos.kinit.cmd", Kind::Str),
    ("sasl.kerberos.min.time.before.relogin", Kind::Long(0)),
    ("sasl.kerberos.principal.to.local.rules", Kind::List),
    ("sasl.kerberos.service.name", Kind::Str),
    ("sasl.kerberos.ticket.renew.jitter", Kind::Double),
    ("sasl.kerberos.ticket.renew.window.factor", Kind::Double),
    ("sasl.login.refresh.buffer.seconds", Kind::Int(0)),
    ("sasl.login.refresh.min.period.seconds", Kind::Int(0)),
    ("sasl.login.refresh.window.factor", Kind::Double),
    ("sasl.login.refresh.window.jitter", Kind::Double),
    ("sasl.mechanism.inter.broker.protocol", Kind::Str),
    ("ssl.allow.dn.changes", Kind::Bool),
    ("ssl.allow.san.changes", Kind::Bool),
    ("ssl.cipher.suites", Kind::List),
    (
        "ssl.client.auth",
        Kind::OneOf(&["required", "requested", "none"]),
    ),
    ("ssl.enabled.protocols", Kind::List),
    ("ssl.endpoint.identification.algorithm", Kind::Str),
    ("ssl.engine.factory.class", Kind::Str),
    ("ssl.key.password", Kind::Str),
    ("ssl.keymanager.algorithm", Kind::Str),
    ("ssl.keystore.certificate.chain", Kind::Str),
    ("ssl.keystore.key", Kind::Str),
    ("ssl.keystore.location", Kind::Str),
    ("ssl.keystore.password", Kind::Str),
    ("ssl.keystore.type", Kind::Str),
    ("ssl.protocol", Kind::Str),
    ("ssl.provider", Kind::Str),
    ("ssl.secure.random.implementation", Kind::Str),
    ("ssl.trustmanager.algorithm", Kind::Str),
    ("ssl.truststore.certificates", Kind::Str),
    ("ssl.truststore.location", Kind::Str),
    ("ssl.truststore.password", Kind::Str),
    ("ssl.truststore.type", Kind::Str),
    ("transaction.partition.verification.enable", Kind::Bool),
];

/// A dynamic broker key Runnel stores and reports but does not act on.
pub fn is_ignored_dynamic_key(key: &str) -> bool {
    DYNAMIC_BROKER_KEYS_IGNORED.iter().any(|(k, _)| *k == key)
}

/// Any key AlterConfigs may change on a broker while it runs.
pub fn is_dynamic_broker_key(key: &str) -> bool {
    DYNAMIC_BROKER_KEYS.contains(&key) || is_ignored_dynamic_key(key)
}

/// Kafka's ConfigType code of a broker key Runnel stores without acting on (0 otherwise).
pub fn ignored_dynamic_key_type(key: &str) -> i8 {
    DYNAMIC_BROKER_KEYS_IGNORED
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(0, |(_, kind)| kind_type_code(*kind))
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
                .filter(|(k, _)| crate::security::is_sensitive(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        for (k, v) in dynamic {
            if let Some((_, kind)) = DYNAMIC_BROKER_KEYS_IGNORED.iter().find(|(key, _)| key == k) {
                check_kind(k, v, *kind)?;
                continue;
            }
            if !DYNAMIC_BROKER_KEYS.contains(&k.as_str()) {
                return Err(ConfigError::UnknownKey {
                    key: k.clone(),
                    hint: format!(
                        " (not changeable while the broker runs; dynamic keys: {})",
                        DYNAMIC_BROKER_KEYS.join(", ")
                    ),
                });
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

/// The broker's settings as (key, value, set explicitly) for DescribeConfigs.
pub fn broker_config_entries(c: &BrokerConfig) -> Vec<(String, String, bool)> {
    let d = &c.log_defaults;
    let dirs: Vec<String> = c.log_dirs.iter().map(|p| p.display().to_string()).collect();
    let mut entries: Vec<(&str, String)> = vec![("node.id", c.node_id.to_string())];
    entries.extend(c.listeners.describe());
    entries.extend([
        ("log.dirs", dirs.join(",")),
        ("num.partitions", c.num_partitions.to_string()),
        (
            "default.replication.factor",
            c.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        ("delete.topic.enable", c.delete_topic_enable.to_string()),
        ("message.max.bytes", d.max_message_bytes.to_string()),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
        ),
        ("log.segment.bytes", d.segment_bytes.to_string()),
        ("log.roll.ms", d.segment_ms.to_string()),
        ("log.retention.ms", d.retention_ms.to_string()),
        ("log.retention.bytes", d.retention_bytes.to_string()),
        (
            "log.retention.check.interval.ms",
            c.retention_check_interval_ms.to_string(),
        ),
        ("log.cleaner.backoff.ms", c.cleaner_backoff_ms.to_string()),
        (
            "log.index.interval.bytes",
            d.index_interval_bytes.to_string(),
        ),
        (
            "log.message.timestamp.type",
            if d.timestamp_type == TimestampType::LogAppendTime {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
        ),
        ("log.flush.interval.messages", d.flush_messages.to_string()),
        ("log.flush.on.acks.all", c.flush_on_acks_all.to_string()),
        ("min.insync.replicas", c.min_insync_replicas.to_string()),
        (
            "group.initial.rebalance.delay.ms",
            c.groups.initial_rebalance_delay_ms.to_string(),
        ),
        (
            "offsets.topic.num.partitions",
            c.groups.offsets_topic_partitions.to_string(),
        ),
        (
            "transaction.max.timeout.ms",
            c.txn.max_timeout_ms.to_string(),
        ),
        (
            "transaction.state.log.num.partitions",
            c.txn.partitions.to_string(),
        ),
    ]);
    let l = &c.limits;
    let overrides: Vec<String> = l
        .max_connections_per_ip_overrides
        .iter()
        .map(|(ip, n)| format!("{ip}:{n}"))
        .collect();
    entries.extend([
        ("fetch.max.bytes", l.fetch_max_bytes.to_string()),
        (
            "replica.fetch.response.max.bytes",
            l.replica_fetch_response_max_bytes.to_string(),
        ),
        (
            "queued.max.request.bytes",
            l.queued_max_request_bytes
                .map_or("-1".to_string(), |n| n.to_string()),
        ),
        (
            "connection.queued.max.request.bytes",
            l.connection_queued_max_request_bytes.to_string(),
        ),
        (
            "connections.max.idle.ms",
            l.connections_max_idle_ms.to_string(),
        ),
        (
            "request.read.timeout.ms",
            l.request_read_timeout_ms.to_string(),
        ),
        ("max.connections", l.max_connections.to_string()),
        (
            "max.connections.per.ip",
            l.max_connections_per_ip.to_string(),
        ),
        ("max.connections.per.ip.overrides", overrides.join(",")),
        (
            "max.partitions.per.request",
            l.max_partitions_per_request.to_string(),
        ),
        (
            "max.partitions.per.broker",
            l.max_partitions_per_broker.to_string(),
        ),
    ]);
    if let Some(ms) = c.flush_interval_ms {
        entries.push(("log.flush.interval.ms", ms.to_string()));
    }
    if let Some(rack) = &c.rack {
        entries.push(("broker.rack", rack.clone()));
    }
    if c.cluster.rack_aware_replica_selector {
        entries.push((
            "replica.selector.class",
            RACK_AWARE_REPLICA_SELECTOR.to_string(),
        ));
    }
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v, c.explicit.contains_key(k)))
        .collect()
}

/// Names of all settable topic configs, in Kafka's order.
pub fn topic_config_names() -> impl Iterator<Item = &'static str> {
    TOPIC_CONFIGS.iter().map(|(k, _)| *k)
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
            ("CONTROLLER", crate::security::Protocol::Ssl)
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
        let e = crate::security::Security::build(&c).err().unwrap();
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
    fn topic_configs_are_validated() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-5").is_err());
        assert!(validate_topic_config("retention.mss", "1").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
    }
}
