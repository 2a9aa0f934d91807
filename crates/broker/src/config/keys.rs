//! Every configuration key in one table, declared once as Kafka's `ConfigDef` declares
//! its keys: name, type and valid range, default, whether AlterConfigs may change it
//! while the broker runs, the topic config it is the default of (Kafka's synonyms), and
//! its documentation. Parsing (`BrokerConfig::from_pairs`), validation of topic configs
//! and of dynamic broker configs, DescribeConfigs (wire and HTTP, see `describe.rs`) and
//! the reference tables of `docs/configuration.md` (see `docs.rs`) all read this table.
//!
//! Not in the table: the TLS/SASL keys that only `security/` reads, which may also be
//! given per listener (`listener.name.<l>.<key>`, see `security::is_security_key`).

use super::{
    checked_mul, invalid, parse_bool, parse_range, BrokerConfig, ConfigError, Parsing,
    RACK_AWARE_REPLICA_SELECTOR,
};

/// Which resource a key configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Broker,
    Topic,
}

/// Kafka's update modes for broker keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {
    /// Only from the file (`--config`/`--set`): DescribeConfigs says read-only.
    ReadOnly,
    /// AlterConfigs on the broker changes it at once (and it persists).
    PerBroker,
    /// Kafka lets AlterConfigs change it: Runnel type-checks, stores and reports the
    /// value but does not act on it.
    Stored,
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// A value, as it would be written in server.properties ("" = empty).
    Value(&'static str),
    /// No value (Kafka's null).
    None,
    /// Derived at start; the text says from what (shown in the docs, never on the wire).
    Doc(&'static str),
}

/// Kafka's config types, with the range a value must lie in.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int(i64, i64),
    Long(i64, i64),
    Short(i64),
    Bool,
    Double(f64, f64),
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    List,
    Str,
    Class,
    /// A secret: never logged nor described (DescribeConfigs: sensitive, value null).
    Password,
}

const I32: i64 = i32::MAX as i64;

const fn int(min: i64) -> Kind {
    Kind::Int(min, I32)
}

const fn long(min: i64) -> Kind {
    Kind::Long(min, i64::MAX)
}

const RATIO: Kind = Kind::Double(0.0, 1.0);
const NON_NEGATIVE: Kind = Kind::Double(0.0, f64::INFINITY);
const COMPRESSION: Kind =
    Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]);
const CLEANUP_POLICY: Kind = Kind::ListOf(&["delete", "compact"]);
const TIMESTAMP_TYPE: Kind = Kind::OneOf(&["CreateTime", "LogAppendTime"]);

impl Kind {
    /// Checks `value`; returns the number for numeric kinds (1/0 for a boolean). The
    /// error names the key and says what is wrong.
    pub fn check(self, key: &str, value: &str) -> Result<i64, ConfigError> {
        match self {
            Kind::Int(min, max) | Kind::Long(min, max) => parse_range(key, value, min, max),
            Kind::Short(min) => parse_range(key, value, min, i16::MAX as i64),
            Kind::Bool => parse_bool(key, value).map(i64::from),
            Kind::Double(min, max) => {
                let r: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(key, value, "expected a number"))?;
                if r.is_nan() || r < min || r > max {
                    let why = if max.is_finite() {
                        format!("must be between {min} and {max}")
                    } else {
                        format!("must be at least {min}")
                    };
                    return Err(invalid(key, value, why));
                }
                Ok(0)
            }
            Kind::OneOf(allowed) => {
                if !allowed.contains(&value.trim()) {
                    let why = format!("expected one of {}", allowed.join(", "));
                    return Err(invalid(key, value, why));
                }
                Ok(0)
            }
            Kind::ListOf(allowed) => {
                if value.split(',').any(|item| !allowed.contains(&item.trim())) {
                    let why = format!("items must be among {}", allowed.join(", "));
                    return Err(invalid(key, value, why));
                }
                Ok(0)
            }
            Kind::List | Kind::Str | Kind::Class | Kind::Password => Ok(0),
        }
    }

    /// Kafka's ConfigType code (DescribeConfigs v3+).
    pub fn type_code(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::OneOf(_) | Kind::Str => 2,
            Kind::Int(..) => 3,
            Kind::Short(_) => 4,
            Kind::Long(..) => 5,
            Kind::Double(..) => 6,
            Kind::ListOf(_) | Kind::List => 7,
            Kind::Class => 8,
            Kind::Password => 9,
        }
    }

    pub fn is_list(self) -> bool {
        matches!(self, Kind::List | Kind::ListOf(_))
    }
}

/// A value being parsed: the key as given, the raw text, and the number `Kind::check`
/// read from it.
pub struct Value<'a> {
    pub key: &'a str,
    pub raw: &'a str,
    pub n: i64,
}

impl Value<'_> {
    pub fn invalid(&self, why: impl Into<String>) -> ConfigError {
        invalid(self.key, self.raw, why)
    }

    fn flag(&self) -> bool {
        self.n != 0
    }
}

/// Applies a checked value to the configuration being built.
pub type Setter = fn(&mut Parsing, &Value) -> Result<(), ConfigError>;
/// The value in force, for DescribeConfigs (None: Kafka's null).
pub type Getter = fn(&BrokerConfig) -> Option<String>;

/// The table of `docs/configuration.md` a key is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Server,
    Http,
    Limits,
    Cluster,
    Authz,
    Quota,
    /// Accepted from the file for compatibility, no effect.
    NoEffect,
    /// Kafka's dynamic keys Runnel stores without acting on.
    StoredDynamic,
    Topic,
}

impl Section {
    pub const ALL: [Section; 9] = [
        Section::Server,
        Section::Http,
        Section::Limits,
        Section::Cluster,
        Section::Authz,
        Section::Quota,
        Section::NoEffect,
        Section::StoredDynamic,
        Section::Topic,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Section::Server => "server",
            Section::Http => "http",
            Section::Limits => "limits",
            Section::Cluster => "cluster",
            Section::Authz => "authz",
            Section::Quota => "quota",
            Section::NoEffect => "no-effect",
            Section::StoredDynamic => "stored-dynamic",
            Section::Topic => "topic",
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub scope: Scope,
    pub kind: Kind,
    pub default: DefaultValue,
    pub dynamic: Dynamic,
    /// (Broker keys) the topic config whose default this key is, as Kafka's synonyms:
    /// an unset topic config reports this key's value and source.
    pub topic: Option<&'static str>,
    pub section: Section,
    pub doc: &'static str,
    /// How the value configures the broker; None: accepted, no effect.
    pub set: Option<Setter>,
    /// The value in force when it differs from what was written (units, parsed forms).
    pub get: Option<Getter>,
}

const fn broker(
    name: &'static str,
    kind: Kind,
    default: DefaultValue,
    section: Section,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        scope: Scope::Broker,
        kind,
        default,
        dynamic: Dynamic::ReadOnly,
        topic: None,
        section,
        doc,
        set: None,
        get: None,
    }
}

const fn topic(
    name: &'static str,
    kind: Kind,
    default: DefaultValue,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        scope: Scope::Topic,
        kind,
        default,
        dynamic: Dynamic::PerBroker,
        topic: None,
        section: Section::Topic,
        doc,
        set: None,
        get: None,
    }
}

/// A Kafka dynamic key Runnel stores and reports without acting on.
const fn stored(name: &'static str, kind: Kind) -> ConfigDef {
    broker(name, kind, DefaultValue::None, Section::StoredDynamic, "").stored()
}

impl ConfigDef {
    const fn set(mut self, f: Setter) -> Self {
        self.set = Some(f);
        self
    }

    const fn get(mut self, f: Getter) -> Self {
        self.get = Some(f);
        self
    }

    const fn per_broker(mut self) -> Self {
        self.dynamic = Dynamic::PerBroker;
        self
    }

    const fn stored(mut self) -> Self {
        self.dynamic = Dynamic::Stored;
        self
    }

    const fn topic(mut self, name: &'static str) -> Self {
        self.topic = Some(name);
        self
    }

    /// The security module reads it (see `security::SecurityConfig::validate`).
    const fn security(mut self) -> Self {
        if self.doc.is_empty() {
            self.doc = STORED_SECURITY_DOC;
        }
        self.set(to_security)
    }

    pub fn sensitive(&self) -> bool {
        matches!(self.kind, Kind::Password)
    }

    /// The default as a value (None for no value or one derived at start).
    pub fn default_value(&self) -> Option<&'static str> {
        match self.default {
            DefaultValue::Value(v) => Some(v),
            _ => None,
        }
    }
}

fn to_security(p: &mut Parsing, v: &Value) -> Result<(), ConfigError> {
    p.c.security
        .keys
        .insert(v.key.to_string(), v.raw.to_string());
    Ok(())
}

fn text(x: impl ToString) -> Option<String> {
    Some(x.to_string())
}

fn listener_value(c: &BrokerConfig, key: &str) -> Option<String> {
    c.listeners
        .describe()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn log_dirs(p: &mut Parsing, v: &Value) -> Result<(), ConfigError> {
    let dirs: Vec<std::path::PathBuf> = v
        .raw
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .collect();
    if dirs.is_empty() {
        return Err(v.invalid("at least one directory"));
    }
    super::refuse_duplicate_dirs(v.key, v.raw, &dirs)?;
    p.c.log_dirs = dirs;
    Ok(())
}

fn http_listener(p: &mut Parsing, v: &Value) -> Result<(), ConfigError> {
    let trimmed = v.raw.trim();
    p.c.http_tls = trimmed.starts_with("https://");
    let addr = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    if addr.is_empty() {
        p.c.http_listener = None;
        return Ok(());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| v.invalid("expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| v.invalid("port must be 0-65535"))?;
    let host = host.trim_matches(|c| c == '[' || c == ']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| v.invalid("host must be an IP address"))?;
    p.c.http_listener = Some(std::net::SocketAddr::new(ip, port));
    Ok(())
}

fn retention_in(v: &Value, unit: i64) -> Result<Option<i64>, ConfigError> {
    Ok(Some(if v.n < 0 {
        -1
    } else {
        checked_mul(v.key, v.raw, v.n, unit)?
    }))
}

fn share(p: &mut Parsing, v: &Value) -> Result<(), ConfigError> {
    p.c.share.set(v.key, v.raw).map_err(|why| v.invalid(why))
}

fn authz(p: &mut Parsing, v: &Value) -> Result<(), ConfigError> {
    p.c.authz.set(v.key, v.raw).map(drop)
}

fn quota(p: &mut Parsing, v: &Value) -> Result<(), ConfigError> {
    p.c.quota.set(v.key, v.raw).map(drop)
}

use DefaultValue::{Doc, None as Unset, Value as Is};
use Section::*;

const STORED_SECURITY_DOC: &str = "read from the file (see \"Security\" above); a value set through AlterConfigs is type-checked, stored and reported, not applied";
pub const STORED_DOC: &str = "Kafka's dynamic key: type-checked, stored and reported by DescribeConfigs; Runnel does not act on it";

/// Every key, broker keys first, then topic configs (Kafka's order within each).
pub static CONFIGS: &[ConfigDef] = &[
    // ------------------------------------------------------------------ server
    broker("node.id", int(0), Is("1"), Server, "this broker's id in metadata; recorded in each log dir's `meta.properties`")
        .set(|p, v| { p.c.node_id = v.n as i32; Ok(()) })
        .get(|c| text(c.node_id)),
    broker("broker.id", int(0), Is("1"), Server, "Kafka's older name of `node.id`")
        .set(|p, v| { p.c.node_id = v.n as i32; Ok(()) })
        .get(|c| text(c.node_id)),
    broker("listeners", Kind::List, Is("PLAINTEXT://127.0.0.1:9092"), Server, "`NAME://host:port,...`: Kafka's named listeners. Every listener not in `controller.listener.names` serves the Kafka protocol; port 0 picks a free port (the first listener's is printed at start). Every listener may be `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (see \"Security\" below), a controller listener too (see \"The metadata quorum's port\")")
        .stored()
        .set(|p, v| {
            let endpoints = crate::server::listeners::parse_endpoints(v.key, v.raw)?;
            for e in &endpoints {
                e.bind_addr().map_err(|why| v.invalid(why))?;
            }
            p.c.listener_config.listeners = endpoints;
            Ok(())
        })
        .get(|c| listener_value(c, "listeners")),
    broker("advertised.listeners", Kind::List, Doc("each listener as bound"), Server, "`NAME://host:port,...` given to clients in Metadata, FindCoordinator and DescribeCluster: a client is told the endpoints of the listener it connected to (Kafka's rule), so internal and external networks each see addresses they can reach")
        .stored()
        .set(|p, v| { p.c.listener_config.advertised = crate::server::listeners::parse_endpoints(v.key, v.raw)?; Ok(()) })
        .get(|c| listener_value(c, "advertised.listeners")),
    broker("listener.security.protocol.map", Kind::List, Is("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"), Server, "each listener name's security protocol; when not set, controller listeners are `PLAINTEXT` (as in Kafka)")
        .stored()
        .set(|p, v| {
            p.c.listener_config.protocol_map = crate::server::listeners::parse_protocol_map(v.key, v.raw)?;
            p.c.listener_config.protocol_map_set = true;
            Ok(())
        }),
    broker("inter.broker.listener.name", Kind::Str, Doc("`PLAINTEXT` (or the only broker listener)"), Server, "the listener other brokers reach this one on: followers fetch from it, transaction markers go to it; it is the endpoint registered with the controller")
        .set(|p, v| { p.c.listener_config.inter_broker = Some(v.raw.trim().to_ascii_uppercase()); Ok(()) })
        .get(|c| listener_value(c, "inter.broker.listener.name")),
    broker("controller.listener.names", Kind::List, Is(""), Server, "listeners where the metadata quorum listens rather than the Kafka protocol; such a listener's port must be this node's port in `controller.quorum.voters`. The first name's protocol secures the quorum's port (Raft between voters, brokers' controller requests); a broker-only node names it without listing it in `listeners`")
        .set(|p, v| { p.c.listener_config.controller_names = crate::server::listeners::parse_names(v.raw); Ok(()) })
        .get(|c| listener_value(c, "controller.listener.names")),
    broker("security.inter.broker.protocol", Kind::Str, Is("PLAINTEXT"), Server, "only `PLAINTEXT` is accepted")
        .set(|_, v| {
            if v.raw.trim() != "PLAINTEXT" {
                return Err(v.invalid("only PLAINTEXT is served yet (TLS and SASL are not built)"));
            }
            Ok(())
        }),
    broker("log.dirs", Kind::List, Is("./runnel-data"), Server, "comma-separated data directories; new partitions go to the one with the fewest; one directory listed twice (also through `..` or a symlink) is refused")
        .set(log_dirs)
        .get(|c| text(c.log_dirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","))),
    broker("log.dir", Kind::Str, Unset, Server, "Kafka's one-directory form of `log.dirs`")
        .set(log_dirs),
    broker("num.partitions", int(1), Is("1"), Server, "partitions of an auto-created topic, or of CreateTopics with -1")
        .set(|p, v| { p.c.num_partitions = v.n as i32; Ok(()) })
        .get(|c| text(c.num_partitions)),
    broker("default.replication.factor", Kind::Int(1, i16::MAX as i64), Is("1"), Server, "replicas of an auto-created topic, or of CreateTopics with -1")
        .set(|p, v| { p.c.default_replication_factor = v.n as i16; Ok(()) })
        .get(|c| text(c.default_replication_factor)),
    broker("auto.create.topics.enable", Kind::Bool, Is("true"), Server, "Metadata for an unknown topic creates it")
        .set(|p, v| { p.c.auto_create_topics = v.flag(); Ok(()) })
        .get(|c| text(c.auto_create_topics)),
    broker("delete.topic.enable", Kind::Bool, Is("true"), Server, "DeleteTopics allowed")
        .set(|p, v| { p.c.delete_topic_enable = v.flag(); Ok(()) })
        .get(|c| text(c.delete_topic_enable)),
    broker("message.max.bytes", int(0), Is("1048588"), Server, "largest record batch; a larger one gets MESSAGE_TOO_LARGE and nothing is stored")
        .per_broker()
        .topic("max.message.bytes")
        .set(|p, v| { p.c.log_defaults.max_message_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.log_defaults.max_message_bytes)),
    broker("socket.request.max.bytes", int(1024), Is("104857600"), Server, "a larger request frame closes the connection")
        .set(|p, v| { p.c.socket_request_max_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.socket_request_max_bytes)),
    broker("log.segment.bytes", int(14), Is("1073741824"), Server, "roll the active segment at this size")
        .per_broker()
        .topic("segment.bytes")
        .set(|p, v| { p.c.log_defaults.segment_bytes = v.n as u64; Ok(()) })
        .get(|c| text(c.log_defaults.segment_bytes)),
    // Kafka's types: the ms keys are longs, the hour and minute keys ints. The finest
    // unit given wins (resolved after all keys are read).
    broker("log.roll.ms", long(1), Unset, Server, "roll the active segment at this age; when unset, `log.roll.hours` applies")
        .per_broker()
        .topic("segment.ms")
        .set(|p, v| { p.roll[0] = Some(v.n); Ok(()) })
        .get(|c| text(c.log_defaults.segment_ms)),
    broker("log.roll.hours", int(1), Is("168"), Server, "the same in hours")
        .topic("segment.ms")
        .set(|p, v| { p.roll[1] = Some(checked_mul(v.key, v.raw, v.n, 3_600_000)?); Ok(()) }),
    broker("log.retention.ms", long(-1), Unset, Server, "delete segments whose newest record is older; -1 keeps forever; when unset, `log.retention.minutes`, then `log.retention.hours` applies")
        .per_broker()
        .topic("retention.ms")
        .set(|p, v| { p.retention[0] = Some(v.n); Ok(()) })
        .get(|c| text(c.log_defaults.retention_ms)),
    broker("log.retention.minutes", int(-1), Unset, Server, "the same in minutes")
        .topic("retention.ms")
        .set(|p, v| { p.retention[1] = retention_in(v, 60_000)?; Ok(()) }),
    broker("log.retention.hours", int(-1), Is("168"), Server, "the same in hours")
        .topic("retention.ms")
        .set(|p, v| { p.retention[2] = retention_in(v, 3_600_000)?; Ok(()) }),
    broker("log.retention.bytes", long(-1), Is("-1"), Server, "delete oldest segments while a partition is larger; -1: no limit")
        .per_broker()
        .topic("retention.bytes")
        .set(|p, v| { p.c.log_defaults.retention_bytes = v.n; Ok(()) })
        .get(|c| text(c.log_defaults.retention_bytes)),
    broker("log.retention.check.interval.ms", long(1), Is("300000"), Server, "how often retention runs")
        .set(|p, v| { p.c.retention_check_interval_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.retention_check_interval_ms)),
    broker("log.cleaner.backoff.ms", long(1), Is("15000"), Server, "how often compacted topics are checked for cleaning")
        .stored()
        .set(|p, v| { p.c.cleaner_backoff_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cleaner_backoff_ms)),
    broker("log.cleaner.enable", Kind::Bool, Is("true"), Server, "`false` is refused: compacted topics (and `__consumer_offsets`) rely on the cleaner")
        .set(|_, v| {
            if !v.flag() {
                return Err(v.invalid("the log cleaner cannot be disabled: compacted topics (and __consumer_offsets) rely on it"));
            }
            Ok(())
        }),
    broker("log.index.interval.bytes", int(0), Is("4096"), Server, "bytes between sparse index entries")
        .per_broker()
        .topic("index.interval.bytes")
        .set(|p, v| { p.c.log_defaults.index_interval_bytes = v.n as u64; Ok(()) })
        .get(|c| text(c.log_defaults.index_interval_bytes)),
    broker("log.message.timestamp.type", TIMESTAMP_TYPE, Is("CreateTime"), Server, "or LogAppendTime (the broker stamps batches)")
        .per_broker()
        .topic("message.timestamp.type")
        .set(|p, v| { p.c.log_defaults.timestamp_type = super::parse_timestamp_type(v.key, v.raw)?; Ok(()) })
        .get(|c| text(if c.log_defaults.timestamp_type == runnel_log::TimestampType::LogAppendTime { "LogAppendTime" } else { "CreateTime" })),
    broker("log.flush.interval.messages", long(1), Is("9223372036854775807"), Server, "fsync after this many records per partition")
        .per_broker()
        .topic("flush.messages")
        .set(|p, v| { p.c.log_defaults.flush_messages = v.n; Ok(()) })
        .get(|c| text(c.log_defaults.flush_messages)),
    broker("log.flush.interval.ms", long(1), Unset, Server, "fsync every partition at this interval")
        .stored()
        .set(|p, v| { p.c.flush_interval_ms = Some(v.n as u64); Ok(()) })
        .get(|c| c.flush_interval_ms.map(|ms| ms.to_string())),
    broker("log.flush.on.acks.all", Kind::Bool, Is("true"), Server, "Runnel's own key: acks=all waits for fdatasync (see \"Durability\" below)")
        .set(|p, v| { p.c.flush_on_acks_all = v.flag(); Ok(()) })
        .get(|c| text(c.flush_on_acks_all)),
    broker("min.insync.replicas", int(1), Is("1"), Server, "acks=all needs this many replicas in the ISR, else NOT_ENOUGH_REPLICAS (also a topic config)")
        .per_broker()
        .topic("min.insync.replicas")
        .set(|p, v| { p.c.min_insync_replicas = v.n as i32; Ok(()) })
        .get(|c| text(c.min_insync_replicas)),
    broker("broker.rack", Kind::Str, Unset, Server, "reported in metadata; the controller puts a partition's replicas on different racks")
        .set(|p, v| { p.c.rack = Some(v.raw.to_string()); Ok(()) })
        .get(|c| c.rack.clone()),
    broker("group.initial.rebalance.delay.ms", int(0), Is("3000"), Server, "how long a new group waits for more members before its first rebalance")
        .set(|p, v| { p.c.groups.initial_rebalance_delay_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.groups.initial_rebalance_delay_ms)),
    broker("group.min.session.timeout.ms", int(0), Is("6000"), Server, "the shortest session.timeout.ms a consumer may ask for")
        .set(|p, v| { p.c.groups.min_session_timeout_ms = v.n as i32; Ok(()) })
        .get(|c| text(c.groups.min_session_timeout_ms)),
    broker("group.max.session.timeout.ms", int(0), Is("1800000"), Server, "the longest session.timeout.ms a consumer may ask for")
        .set(|p, v| { p.c.groups.max_session_timeout_ms = v.n as i32; Ok(()) })
        .get(|c| text(c.groups.max_session_timeout_ms)),
    broker("group.consumer.heartbeat.interval.ms", int(1), Is("5000"), Server, "KIP-848 (`group.protocol=consumer`): the heartbeat interval members are told")
        .set(|p, v| { p.c.groups.consumer_heartbeat_interval_ms = v.n as i32; Ok(()) })
        .get(|c| text(c.groups.consumer_heartbeat_interval_ms)),
    broker("group.consumer.session.timeout.ms", int(1), Is("45000"), Server, "KIP-848: a member without a heartbeat this long is removed")
        .set(|p, v| { p.c.groups.consumer_session_timeout_ms = v.n as i32; Ok(()) })
        .get(|c| text(c.groups.consumer_session_timeout_ms)),
    broker("offsets.retention.minutes", int(1), Is("10080"), Server, "committed offsets of an empty group expire after this")
        .set(|p, v| { p.c.groups.offsets_retention_ms = checked_mul(v.key, v.raw, v.n, 60_000)?; Ok(()) })
        .get(|c| text(c.groups.offsets_retention_ms / 60_000)),
    broker("offsets.topic.num.partitions", Kind::Int(1, 100_000), Is("50"), Server, "partitions of `__consumer_offsets`")
        .set(|p, v| { p.c.groups.offsets_topic_partitions = v.n as i32; Ok(()) })
        .get(|c| text(c.groups.offsets_topic_partitions)),
    broker("offset.metadata.max.bytes", int(0), Is("4096"), Server, "largest metadata string on a committed offset")
        .set(|p, v| { p.c.groups.offset_metadata_max_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.groups.offset_metadata_max_bytes)),
    broker("group.share.session.timeout.ms", int(1), Is("45000"), Server, "share groups (KIP-932): a member that sends no ShareGroupHeartbeat for this long is removed (its acquired records are released)")
        .set(share),
    broker("group.share.heartbeat.interval.ms", int(1), Is("5000"), Server, "the heartbeat interval share-group members are told")
        .set(share),
    broker("group.share.record.lock.duration.ms", int(1), Is("30000"), Server, "how long a share consumer holds a record it fetched before it is offered again; must lie between the next two")
        .set(share),
    broker("group.share.min.record.lock.duration.ms", int(1), Is("15000"), Server, "lower bound on the lock duration")
        .set(share),
    broker("group.share.max.record.lock.duration.ms", int(1), Is("60000"), Server, "upper bound on the lock duration")
        .set(share),
    broker("group.share.delivery.count.limit", Kind::Int(2, 10), Is("5"), Server, "a record released (or whose lock expired) after this many deliveries is archived, never delivered again")
        .set(share),
    broker("group.share.partition.max.record.locks", Kind::Int(100, 10_000), Is("2000"), Server, "in-flight records (start offset to end offset) per share-partition; no more are acquired beyond it")
        .set(share),
    broker("group.share.max.size", Kind::Int(1, 1000), Is("200"), Server, "members per share group; one more gets GROUP_MAX_SIZE_REACHED")
        .set(share),
    broker("group.share.max.share.sessions", int(1), Is("2000"), Server, "share sessions a broker keeps; a new one beyond it gets SHARE_SESSION_LIMIT_REACHED")
        .set(share),
    broker("share.coordinator.state.topic.num.partitions", Kind::Int(1, 100_000), Is("50"), Server, "partitions of `__share_group_state` (durable share-partition state; created when the first share group appears)")
        .set(share),
    broker("share.coordinator.state.topic.replication.factor", Kind::Short(1), Is("3"), Server, "replicas of `__share_group_state` in a cluster (capped by the live brokers)")
        .set(share),
    broker("transaction.max.timeout.ms", int(1), Is("900000"), Server, "largest transaction.timeout.ms a producer may ask for")
        .set(|p, v| { p.c.txn.max_timeout_ms = v.n as i32; Ok(()) })
        .get(|c| text(c.txn.max_timeout_ms)),
    broker("transaction.state.log.num.partitions", Kind::Int(1, 100_000), Is("50"), Server, "partitions of `__transaction_state`")
        .set(|p, v| { p.c.txn.partitions = v.n as i32; Ok(()) })
        .get(|c| text(c.txn.partitions)),
    broker("transaction.abort.timed.out.transaction.cleanup.interval.ms", long(1), Is("10000"), Server, "how often transactions past their timeout are aborted")
        .set(|p, v| { p.c.txn.abort_check_interval_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.txn.abort_check_interval_ms)),
    // ------------------------------------------------------------------ HTTP API
    broker("http.listeners", Kind::Str, Is("127.0.0.1:9644"), Http, "the HTTP admin API, `/metrics` and the web console at `/` (see docs/metrics.md, docs/openapi.yaml); port 0 picks a free port, empty disables it. `https://host:port`: TLS, with `listener.name.http.ssl.*` over `ssl.*` (keystore, `ssl.client.auth`, truststore, `ssl.principal.mapping.rules`, protocols, cipher suites; files reloaded like a Kafka listener's); HTTPS without a keystore is refused at start, and a plain-HTTP client on the HTTPS port gets no answer. The API can change topics, configs, records, group offsets and ACLs (the ACLs through CreateAcls/DeleteAcls, so the authorizer decides): bind it to a trusted address or turn on `http.authentication.method`")
        .set(http_listener)
        .get(|c| text(c.http_listener.map(|a| a.to_string()).unwrap_or_default())),
    broker("http.authentication.method", Kind::Str, Is("NONE"), Http, "`BASIC`: HTTP Basic against the broker's users: SCRAM users (SHA-512, else SHA-256: the password salted with the stored salt and iterations, compared with the StoredKey; a verified password is remembered for 60 s unless the credential changes) and the PLAIN JAAS users (`user_<name>`) of the SASL listeners. `BEARER`: `Authorization: Bearer <JWT>`, validated with the OAUTHBEARER settings of the first (by name) broker listener that enables OAUTHBEARER (refused at start without one). `BASIC,BEARER`: either")
        .security(),
    broker("http.authentication.skip.paths", Kind::List, Unset, Http, "comma-separated exact paths served without credentials, e.g. `/metrics,/v1/health,/v1/ready` for Prometheus and probes. Unset: `/metrics` and the probes need credentials like the rest")
        .security(),
    // ------------------------------------------------------------------ limits
    broker("fetch.max.bytes", int(1024), Is("57671680"), Limits, "the most a consumer's Fetch response carries, whatever its `max_bytes` (as in Kafka, the first batch still goes out whole if it alone is larger)")
        .set(|p, v| { p.c.limits.fetch_max_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.fetch_max_bytes)),
    broker("replica.fetch.response.max.bytes", int(0), Is("10485760"), Limits, "the same for a follower's Fetch")
        .set(|p, v| { p.c.limits.replica_fetch_response_max_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.replica_fetch_response_max_bytes)),
    broker("queued.max.request.bytes", long(-1), Is("536870912"), Limits, "request bytes read but not yet answered, all connections together; readers wait for room. Kafka's default is -1 (unbounded), which is accepted; Runnel bounds it by default. At least `socket.request.max.bytes`")
        .set(|p, v| {
            if v.n == 0 {
                return Err(v.invalid("must be -1 (unbounded) or at least 1"));
            }
            p.c.limits.queued_max_request_bytes = (v.n > 0).then_some(v.n as usize);
            Ok(())
        })
        .get(|c| text(c.limits.queued_max_request_bytes.map_or(-1, |n| n as i64))),
    broker("connection.queued.max.request.bytes", long(1), Is("104857600"), Limits, "Runnel's: the same for one connection (at least `socket.request.max.bytes`)")
        .set(|p, v| { p.c.limits.connection_queued_max_request_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.connection_queued_max_request_bytes)),
    broker("connections.max.idle.ms", long(1), Is("600000"), Limits, "a connection that sends nothing for this long is closed")
        .set(|p, v| { p.c.limits.connections_max_idle_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.limits.connections_max_idle_ms)),
    broker("request.read.timeout.ms", long(1), Is("30000"), Limits, "Runnel's: a request frame must arrive whole within this of its first byte, or the connection is closed (slow or stalled senders)")
        .set(|p, v| { p.c.limits.request_read_timeout_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.limits.request_read_timeout_ms)),
    broker("max.connections", int(0), Is("2147483647"), Limits, "client connections at once; a newer one is closed at once (logged). Also capped by the open-file limit: at most half of what is left after an eighth is kept for storage")
        .stored()
        .set(|p, v| { p.c.limits.max_connections = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.max_connections)),
    broker("max.connections.per.ip", int(0), Is("2147483647"), Limits, "connections from one address")
        .stored()
        .set(|p, v| { p.c.limits.max_connections_per_ip = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.max_connections_per_ip)),
    broker("max.connections.per.ip.overrides", Kind::Str, Is(""), Limits, "`ip:count,...` (addresses only; Kafka also takes host names)")
        .stored()
        .set(|p, v| { p.c.limits.max_connections_per_ip_overrides = super::parse_ip_overrides(v.key, v.raw)?; Ok(()) })
        .get(|c| text(c.limits.max_connections_per_ip_overrides.iter().map(|(ip, n)| format!("{ip}:{n}")).collect::<Vec<_>>().join(","))),
    broker("max.partitions.per.request", int(1), Is("10000"), Limits, "Runnel's: partitions one CreateTopics or CreatePartitions may add, its topics together; more is refused whole with POLICY_VIOLATION")
        .set(|p, v| { p.c.limits.max_partitions_per_request = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.max_partitions_per_request)),
    broker("max.partitions.per.broker", int(1), Is("50000"), Limits, "Runnel's: partitions this broker may hold; POLICY_VIOLATION past it")
        .set(|p, v| { p.c.limits.max_partitions_per_broker = v.n as usize; Ok(()) })
        .get(|c| text(c.limits.max_partitions_per_broker)),
    // ------------------------------------------------------------------ cluster
    broker("controller.quorum.voters", Kind::List, Is(""), Cluster, "`1@127.0.0.1:19093,2@127.0.0.1:19094,...`: the metadata-quorum voters (Raft, openraft) and their controller addresses")
        .set(|p, v| {
            // Kafka's default is the empty list: no voters.
            if v.raw.trim().is_empty() {
                p.c.cluster.voters.clear();
                p.c.cluster.voter_hosts.clear();
                return Ok(());
            }
            p.c.cluster.voters = runnel_meta::parse_voters(v.raw).map_err(|why| v.invalid(why))?;
            p.c.cluster.voter_hosts = super::voter_hosts(v.raw);
            Ok(())
        }),
    broker("controller.quorum.bootstrap.servers", Kind::List, Is(""), Cluster, "KIP-853's bootstrap list. Runnel's voter set is fixed, so without `controller.quorum.voters` this may name only one server: this combined node, which then is its quorum's single voter (Kafka's `kafka-storage format --standalone`); Kafka 4's default `server.properties` starts that way")
        .set(|p, v| {
            let servers = v.raw.trim();
            p.quorum_bootstrap = (!servers.is_empty()).then(|| servers.to_string());
            Ok(())
        }),
    broker("process.roles", Kind::List, Is("broker,controller"), Cluster, "`broker`, `controller` or both (KRaft's combined mode); a controller's `node.id` must be among the voters")
        .set(|p, v| {
            let roles: Vec<&str> = v.raw.split(',').map(str::trim).collect();
            if roles.iter().any(|r| !matches!(*r, "broker" | "controller")) {
                return Err(v.invalid("expected broker, controller, or broker,controller"));
            }
            p.c.cluster.broker_role = roles.contains(&"broker");
            p.c.cluster.controller_role = roles.contains(&"controller");
            Ok(())
        }),
    broker("metadata.log.dir", Kind::Str, Doc("`<first log dir>/__cluster_metadata/quorum`"), Cluster, "where the quorum keeps its vote, log and snapshots")
        .set(|p, v| { p.c.cluster.metadata_dir = Some(v.raw.trim().into()); Ok(()) }),
    broker("broker.session.timeout.ms", long(1), Is("9000"), Cluster, "a broker without a heartbeat for this long is fenced; its partitions get new leaders from their ISR")
        .set(|p, v| { p.c.cluster.broker_session_timeout_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cluster.broker_session_timeout_ms)),
    broker("broker.heartbeat.interval.ms", long(1), Is("2000"), Cluster, "how often a broker heartbeats to the controller")
        .set(|p, v| { p.c.cluster.broker_heartbeat_interval_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cluster.broker_heartbeat_interval_ms)),
    broker("controller.quorum.election.timeout.ms", Kind::Int(10, 3_600_000), Is("1000"), Cluster, "a voter that hears no quorum leader waits a random time between this and twice this, then stands for election (Kafka's range)")
        .set(|p, v| { p.c.cluster.quorum_election_timeout_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cluster.quorum_election_timeout_ms)),
    broker("controller.quorum.fetch.timeout.ms", Kind::Int(10, 3_600_000), Is("2000"), Cluster, "the quorum leader contacts every voter at least four times within this: Runnel's Raft heartbeat is a quarter of it (and of the election timeout, whichever is smaller)")
        .set(|p, v| { p.c.cluster.quorum_fetch_timeout_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cluster.quorum_fetch_timeout_ms)),
    broker("replica.lag.time.max.ms", long(1), Is("30000"), Cluster, "a follower that has not caught up for this long leaves the ISR")
        .set(|p, v| { p.c.cluster.replica_lag_time_max_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cluster.replica_lag_time_max_ms)),
    broker("replica.fetch.wait.max.ms", Kind::Int(1, 60_000), Is("500"), Cluster, "a follower's fetch long-polls this long on the leader")
        .set(|p, v| { p.c.cluster.replica_fetch_wait_max_ms = v.n as u64; Ok(()) })
        .get(|c| text(c.cluster.replica_fetch_wait_max_ms)),
    broker("replica.fetch.max.bytes", int(1), Is("1048576"), Cluster, "bytes per partition per follower fetch")
        .set(|p, v| { p.c.cluster.replica_fetch_max_bytes = v.n as usize; Ok(()) })
        .get(|c| text(c.cluster.replica_fetch_max_bytes)),
    broker("offsets.topic.replication.factor", Kind::Short(1), Is("3"), Cluster, "replicas of `__consumer_offsets`, capped at the live brokers when it is created")
        .set(|p, v| { p.c.cluster.offsets_topic_replication_factor = v.n as i16; Ok(()) })
        .get(|c| text(c.cluster.offsets_topic_replication_factor)),
    broker("transaction.state.log.replication.factor", Kind::Short(1), Is("3"), Cluster, "replicas of `__transaction_state`, capped at the live brokers when it is created")
        .set(|p, v| { p.c.cluster.transaction_state_replication_factor = v.n as i16; Ok(()) })
        .get(|c| text(c.cluster.transaction_state_replication_factor)),
    broker("replica.selector.class", Kind::Class, Unset, Cluster, "`org.apache.kafka.common.replica.RackAwareReplicaSelector` (the only value accepted): KIP-392 fetch from follower. A partition leader answers a consumer's fetch (Fetch v11+) whose `client.rack` is the `broker.rack` of a follower that has the fetch offset with that follower as `preferred_read_replica` (and no records); the consumer then reads from that follower, which serves records up to the high watermark it learned from its leader. Without the key, followers still serve consumers that fetch from them (as Kafka does)")
        .set(|p, v| {
            p.c.cluster.rack_aware_replica_selector = match v.raw.trim() {
                RACK_AWARE_REPLICA_SELECTOR => true,
                "" => false,
                _ => return Err(v.invalid(format!("Runnel has one replica selector: {RACK_AWARE_REPLICA_SELECTOR}"))),
            };
            Ok(())
        })
        .get(|c| c.cluster.rack_aware_replica_selector.then(|| RACK_AWARE_REPLICA_SELECTOR.to_string())),
    broker("follower.replication.throttled.rate", long(1), Doc("unlimited"), Cluster, "bytes/s a broker copies for replicas a reassignment is adding (`runnel partitions reassign --throttle` sets and removes it)")
        .per_broker()
        .set(|p, v| { p.c.cluster.follower_throttle_rate = Some(v.n as u64); Ok(()) })
        .get(|c| c.cluster.follower_throttle_rate.map(|r| r.to_string())),
    broker("unclean.leader.election.enable", Kind::Bool, Is("false"), Cluster, "`true` is refused: it would lose acknowledged records")
        .per_broker()
        .set(|_, v| {
            if v.flag() {
                return Err(v.invalid("unclean leader election is not supported: it loses acknowledged records"));
            }
            Ok(())
        }),
    broker("controlled.shutdown.enable", Kind::Bool, Is("true"), Cluster, "on SIGTERM, ask the controller to move leadership away before stopping")
        .set(|p, v| { p.c.cluster.controlled_shutdown = v.flag(); Ok(()) })
        .get(|c| text(c.cluster.controlled_shutdown)),
    // ------------------------------------------------------------------ authorization
    broker("authorizer.class.name", Kind::Class, Is(""), Authz, "`org.apache.kafka.metadata.authorizer.StandardAuthorizer` or `kafka.security.authorizer.AclAuthorizer` (the same authorizer, Kafka's StandardAuthorizer semantics) switches ACL checks on; any other value refuses to start, naming the accepted classes")
        .set(authz),
    broker("super.users", Kind::Str, Is(""), Authz, "semicolon-separated principals (`User:admin;User:broker`) that may do everything")
        .set(authz),
    broker("allow.everyone.if.no.acl.found", Kind::Bool, Is("false"), Authz, "a resource with no ACL at all (for any principal) is open to everyone")
        .set(authz),
    // ------------------------------------------------------------------ quotas
    broker("quota.window.num", int(1), Is("11"), Quota, "samples of the windowed rate a quota is measured with")
        .set(quota),
    broker("quota.window.size.seconds", int(1), Is("1"), Quota, "length of each sample")
        .set(quota),
    // ------------------------------------------------------------------ accepted, no effect
    // Thread pools and buffers Runnel sizes itself, settings of features not built:
    // accepted so an existing Kafka properties file starts; each is logged at start.
    broker("num.network.threads", int(1), Is("3"), NoEffect, "Runnel sizes its own pools").stored(),
    broker("num.io.threads", int(1), Is("8"), NoEffect, "Runnel sizes its own pools").stored(),
    broker("num.replica.fetchers", int(1), Is("1"), NoEffect, "Runnel sizes its own pools").stored(),
    broker("num.recovery.threads.per.data.dir", int(1), Is("2"), NoEffect, "Runnel sizes its own pools").stored(),
    broker("socket.send.buffer.bytes", Kind::Int(-1, I32), Is("102400"), NoEffect, "the OS sizes socket buffers"),
    broker("socket.receive.buffer.bytes", Kind::Int(-1, I32), Is("102400"), NoEffect, "the OS sizes socket buffers"),
    broker("queued.max.requests", int(1), Is("500"), NoEffect, "see `queued.max.request.bytes`"),
    broker("transaction.state.log.min.isr", int(1), Is("2"), NoEffect, "transaction state is written with the broker's acks=all policy"),
    broker("log.cleaner.threads", int(0), Is("1"), NoEffect, "Runnel runs one cleaner").stored(),
    broker("compression.type", COMPRESSION, Is("producer"), NoEffect, "batches are stored as the producer sent them").stored(),
    broker("share.coordinator.state.topic.min.isr", Kind::Short(1), Is("2"), NoEffect, "share state is written with the broker's acks=all policy"),
    // Kafka's other share keys (ShareGroupConfig, ShareCoordinatorConfig), found in its
    // sample server.properties: checked for type, no effect here.
    broker("share.coordinator.state.topic.segment.bytes", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.state.topic.prune.interval.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.snapshot.update.records.per.snapshot", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.threads", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.load.buffer.size", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.append.linger.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.write.timeout.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("share.coordinator.cold.partition.snapshot.interval.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.min.session.timeout.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.max.session.timeout.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.min.heartbeat.interval.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.max.heartbeat.interval.ms", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.fetch.purgatory.purge.interval.requests", int(0), Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.max.groups", Kind::Int(1, 100), Unset, NoEffect, "Kafka 4.0's cap, removed in 4.1 (KAFKA-19156) for `group.share.max.share.sessions`: accepted so 4.0 configs load").set(share),
    broker("share.coordinator.state.topic.compression.codec", Kind::Str, Unset, NoEffect, "share-group tuning Runnel does not have").set(share),
    broker("group.share.enable", Kind::Str, Unset, NoEffect, "share groups are always on").set(share),
    broker("group.share.assignors", Kind::Str, Unset, NoEffect, "Runnel has one share assignor").set(share),
    broker("group.share.persister.class.name", Kind::Str, Unset, NoEffect, "share state always goes to `__share_group_state`").set(share),
    // ------------------------------------------------------------------ stored dynamic
    // Kafka's other dynamic broker keys (its documentation lists them with update mode
    // per-broker or cluster-wide).
    stored("background.threads", int(1)),
    stored("compression.gzip.level", Kind::Int(-1, 9)),
    stored("compression.lz4.level", Kind::Int(1, 17)),
    stored("compression.zstd.level", Kind::Int(-131072, 22)),
    stored("leader.replication.throttled.rate", long(0)),
    stored("log.cleaner.dedupe.buffer.size", long(0)),
    stored("log.cleaner.delete.retention.ms", long(0)),
    stored("log.cleaner.io.buffer.load.factor", NON_NEGATIVE),
    stored("log.cleaner.io.buffer.size", int(0)),
    stored("log.cleaner.io.max.bytes.per.second", NON_NEGATIVE),
    stored("log.cleaner.max.compaction.lag.ms", long(1)),
    stored("log.cleaner.min.cleanable.ratio", RATIO),
    stored("log.cleaner.min.compaction.lag.ms", long(0)),
    stored("log.cleanup.policy", CLEANUP_POLICY),
    stored("log.index.size.max.bytes", int(4)),
    stored("log.local.retention.bytes", long(-2)),
    stored("log.local.retention.ms", long(-2)),
    stored("log.message.timestamp.after.max.ms", long(0)),
    stored("log.message.timestamp.before.max.ms", long(0)),
    stored("log.preallocate", Kind::Bool),
    stored("log.roll.jitter.ms", long(0)),
    stored("log.segment.delete.delay.ms", long(0)),
    stored("max.connection.creation.rate", int(0)),
    stored("metric.reporters", Kind::List),
    stored("producer.id.expiration.ms", int(1)),
    stored("remote.fetch.max.wait.ms", int(1)),
    stored("remote.list.offsets.request.timeout.ms", long(1)),
    stored("remote.log.index.file.cache.total.size.bytes", long(1)),
    stored("remote.log.manager.copier.thread.pool.size", int(1)),
    stored("remote.log.manager.copy.max.bytes.per.second", long(1)),
    stored("remote.log.manager.expiration.thread.pool.size", int(1)),
    stored("remote.log.manager.fetch.max.bytes.per.second", long(1)),
    stored("remote.log.manager.follower.thread.pool.size", int(1)),
    stored("replica.alter.log.dirs.io.max.bytes.per.second", long(0)),
    stored("sasl.enabled.mechanisms", Kind::List).security(),
    stored("sasl.jaas.config", Kind::Password).security(),
    stored("sasl.kerberos.kinit.cmd", Kind::Str),
    stored("sasl.kerberos.min.time.before.relogin", long(0)),
    stored("sasl.kerberos.principal.to.local.rules", Kind::List),
    stored("sasl.kerberos.service.name", Kind::Str),
    stored("sasl.kerberos.ticket.renew.jitter", NON_NEGATIVE),
    stored("sasl.kerberos.ticket.renew.window.factor", NON_NEGATIVE),
    stored("sasl.login.refresh.buffer.seconds", int(0)),
    stored("sasl.login.refresh.min.period.seconds", int(0)),
    stored("sasl.login.refresh.window.factor", NON_NEGATIVE),
    stored("sasl.login.refresh.window.jitter", NON_NEGATIVE),
    stored("sasl.mechanism.inter.broker.protocol", Kind::Str).security(),
    stored("ssl.allow.dn.changes", Kind::Bool),
    stored("ssl.allow.san.changes", Kind::Bool),
    stored("ssl.cipher.suites", Kind::List).security(),
    stored("ssl.client.auth", Kind::OneOf(&["required", "requested", "none"])).security(),
    stored("ssl.enabled.protocols", Kind::List).security(),
    stored("ssl.endpoint.identification.algorithm", Kind::Str).security(),
    stored("ssl.engine.factory.class", Kind::Class),
    stored("ssl.key.password", Kind::Password).security(),
    stored("ssl.keymanager.algorithm", Kind::Str).security(),
    stored("ssl.keystore.certificate.chain", Kind::Str).security(),
    stored("ssl.keystore.key", Kind::Password).security(),
    stored("ssl.keystore.location", Kind::Str).security(),
    stored("ssl.keystore.password", Kind::Password).security(),
    stored("ssl.keystore.type", Kind::Str).security(),
    stored("ssl.protocol", Kind::Str).security(),
    stored("ssl.provider", Kind::Str).security(),
    stored("ssl.secure.random.implementation", Kind::Str).security(),
    stored("ssl.trustmanager.algorithm", Kind::Str).security(),
    stored("ssl.truststore.certificates", Kind::Str).security(),
    stored("ssl.truststore.location", Kind::Str).security(),
    stored("ssl.truststore.password", Kind::Password).security(),
    stored("ssl.truststore.type", Kind::Str).security(),
    stored("transaction.partition.verification.enable", Kind::Bool),
    // ------------------------------------------------------------------ topic configs
    // Every topic config Kafka lets a user set. Runnel acts on those whose text says
    // what they do; the others are validated, stored and reported as set.
    topic("cleanup.policy", CLEANUP_POLICY, Is("delete"), "`compact` keeps the latest record per key (records without a key are refused with INVALID_RECORD); time and size retention apply only when the policy includes `delete`"),
    topic("compression.type", COMPRESSION, Is("producer"), "stored; batches are kept as the producer sent them"),
    topic("compression.gzip.level", Kind::Int(-1, 9), Is("-1"), "stored"),
    topic("compression.lz4.level", Kind::Int(1, 17), Is("9"), "stored"),
    topic("compression.zstd.level", Kind::Int(-131072, 22), Is("3"), "stored"),
    topic("delete.retention.ms", long(0), Is("86400000"), "how long a compacted topic keeps tombstones"),
    topic("file.delete.delay.ms", long(0), Is("60000"), "stored"),
    topic("flush.messages", long(1), Is("9223372036854775807"), "fsync after this many records"),
    topic("flush.ms", long(0), Is("9223372036854775807"), "stored"),
    topic("follower.replication.throttled.replicas", Kind::List, Is(""), "stored"),
    topic("index.interval.bytes", int(0), Is("4096"), "bytes between sparse index entries"),
    topic("leader.replication.throttled.replicas", Kind::List, Is(""), "stored"),
    topic("local.retention.bytes", long(-2), Is("-2"), "stored (no tiered storage)"),
    topic("local.retention.ms", long(-2), Is("-2"), "stored (no tiered storage)"),
    topic("max.compaction.lag.ms", long(1), Is("9223372036854775807"), "stored"),
    topic("max.message.bytes", int(0), Is("1048588"), "largest record batch"),
    topic("message.timestamp.after.max.ms", long(0), Is("3600000"), "stored"),
    topic("message.timestamp.before.max.ms", long(0), Is("9223372036854775807"), "stored"),
    topic("message.timestamp.type", TIMESTAMP_TYPE, Is("CreateTime"), "`LogAppendTime`: the broker stamps batches"),
    topic("min.cleanable.dirty.ratio", RATIO, Is("0.5"), "a compacted partition is cleaned when this share of it is uncleaned"),
    topic("min.compaction.lag.ms", long(0), Is("0"), "a record stays uncompacted at least this long"),
    topic("min.insync.replicas", int(1), Is("1"), "acks=all needs this many replicas in the ISR"),
    topic("preallocate", Kind::Bool, Is("false"), "stored"),
    topic("remote.storage.enable", Kind::Bool, Is("false"), "stored (no tiered storage)"),
    topic("remote.log.copy.disable", Kind::Bool, Is("false"), "stored (no tiered storage)"),
    topic("remote.log.delete.on.disable", Kind::Bool, Is("false"), "stored (no tiered storage)"),
    topic("retention.bytes", long(i64::MIN), Is("-1"), "delete oldest segments while a partition is larger"),
    topic("retention.ms", long(-1), Is("604800000"), "delete segments whose newest record is older; -1 keeps forever"),
    topic("segment.bytes", int(14), Is("1073741824"), "roll the active segment at this size"),
    topic("segment.index.bytes", int(4), Is("10485760"), "stored"),
    topic("segment.jitter.ms", long(0), Is("0"), "stored"),
    topic("segment.ms", long(1), Is("604800000"), "roll the active segment at this age"),
    topic("unclean.leader.election.enable", Kind::Bool, Is("false"), "stored; Runnel never elects an out-of-sync replica"),
];

/// The broker key named `name`.
pub fn broker_key(name: &str) -> Option<&'static ConfigDef> {
    CONFIGS
        .iter()
        .find(|d| d.scope == Scope::Broker && d.name == name)
}

/// The topic config named `name`.
pub fn topic_key(name: &str) -> Option<&'static ConfigDef> {
    CONFIGS
        .iter()
        .find(|d| d.scope == Scope::Topic && d.name == name)
}

pub fn broker_keys() -> impl Iterator<Item = &'static ConfigDef> {
    CONFIGS.iter().filter(|d| d.scope == Scope::Broker)
}

pub fn topic_keys() -> impl Iterator<Item = &'static ConfigDef> {
    CONFIGS.iter().filter(|d| d.scope == Scope::Topic)
}

/// The broker keys whose value an unset topic config takes, finest first (Kafka's
/// synonyms: `retention.ms` from `log.retention.ms`, `.minutes`, `.hours`).
pub fn broker_synonyms(topic: &str) -> impl Iterator<Item = &'static ConfigDef> + '_ {
    broker_keys().filter(move |d| d.topic == Some(topic))
}

/// The keys AlterConfigs may change on a broker and Runnel applies at once.
pub fn applied_dynamic_keys() -> impl Iterator<Item = &'static str> {
    broker_keys()
        .filter(|d| d.dynamic == Dynamic::PerBroker)
        .map(|d| d.name)
}

/// A dynamic broker key Runnel stores and reports but does not act on.
pub fn is_stored_only(key: &str) -> bool {
    broker_key(key).is_some_and(|d| d.dynamic == Dynamic::Stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_per_scope() {
        let mut seen = BTreeSet::new();
        for d in CONFIGS {
            assert!(
                seen.insert((d.scope == Scope::Topic, d.name)),
                "{} twice",
                d.name
            );
        }
    }

    #[test]
    fn every_default_is_accepted_and_is_what_the_broker_runs_with() {
        let defaults = BrokerConfig::default();
        for d in broker_keys() {
            let Some(value) = d.default_value() else {
                continue;
            };
            let pairs = vec![(d.name.to_string(), value.to_string())];
            let c = BrokerConfig::from_pairs(&pairs)
                .unwrap_or_else(|e| panic!("{}={value:?} (its default) is refused: {e}", d.name));
            if let Some(get) = d.get {
                assert_eq!(
                    get(&defaults).as_deref(),
                    Some(value),
                    "{}: table default vs BrokerConfig::default()",
                    d.name
                );
                assert_eq!(get(&c).as_deref(), Some(value), "{}", d.name);
            }
        }
        for d in topic_keys() {
            let value = d
                .default_value()
                .unwrap_or_else(|| panic!("{} has no default", d.name));
            d.kind.check(d.name, value).unwrap();
            let derived = super::super::topic_config_default(d.name, &defaults);
            assert_eq!(
                derived.as_deref(),
                Some(value),
                "{}: default vs the broker's",
                d.name
            );
        }
    }

    #[test]
    fn security_keys_in_the_table_go_to_the_security_module() {
        for d in broker_keys() {
            if crate::server::security::is_security_key(d.name) {
                assert!(
                    d.set.is_some(),
                    "{} is read by security/ but the table drops it",
                    d.name
                );
            }
            if crate::server::security::is_sensitive(d.name) {
                assert!(
                    d.sensitive(),
                    "{} is a secret: its kind must be Password",
                    d.name
                );
            }
        }
    }

    #[test]
    fn every_synonym_names_a_topic_config() {
        for d in broker_keys() {
            if let Some(t) = d.topic {
                assert!(
                    topic_key(t).is_some(),
                    "{} names unknown topic config {t}",
                    d.name
                );
            }
        }
    }
}
