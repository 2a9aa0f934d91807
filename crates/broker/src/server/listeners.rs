//! Kafka's listener model: named listeners (`listeners=PLAINTEXT://h:9092,CONTROLLER://h:9093`),
//! what clients are told (`advertised.listeners`), each name's security protocol
//! (`listener.security.protocol.map`), the listener brokers use among themselves
//! (`inter.broker.listener.name`) and the ones the metadata quorum uses
//! (`controller.listener.names`), so a Kafka KRaft `server.properties` starts Runnel
//! unchanged.
//!
//! The broker serves the Kafka protocol on every listener that is not a controller
//! listener. A controller listener is where this node's quorum voter listens: its port is
//! the one `controller.quorum.voters` gives for this node (the quorum's own RPC runs
//! there, not the Kafka protocol). Every listener may be PLAINTEXT, SSL, SASL_PLAINTEXT or
//! SASL_SSL (see `security/`); the first controller listener's protocol secures both the
//! voters' Raft traffic and the brokers' requests to the controller (`security/quorum.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::ConfigError;

/// Kafka's default `listener.security.protocol.map`.
const DEFAULT_PROTOCOL_MAP: &[(&str, &str)] = &[
    ("PLAINTEXT", "PLAINTEXT"),
    ("SSL", "SSL"),
    ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
    ("SASL_SSL", "SASL_SSL"),
];
const SECURITY_PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// One `NAME://host:port` entry. An empty host means every interface when binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The address to bind: the host must be an IP address (or empty: all interfaces).
    pub fn bind_addr(&self) -> Result<SocketAddr, String> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        host.parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, self.port))
            .map_err(|_| format!("{}: host must be an IP address, not {host:?}", self.name))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.name, self.host, self.port)
        }
    }
}

/// The listener keys, as set (validated by `validate` once every key is read).
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub listeners: Vec<Endpoint>,
    /// `advertised.listeners`; a listener missing here is advertised as bound.
    pub advertised: Vec<Endpoint>,
    pub protocol_map: BTreeMap<String, String>,
    /// Whether `listener.security.protocol.map` was set (Kafka maps controller listeners
    /// to PLAINTEXT only when it was not).
    pub protocol_map_set: bool,
    pub inter_broker: Option<String>,
    pub controller_names: Vec<String>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
            }],
            advertised: Vec::new(),
            protocol_map: DEFAULT_PROTOCOL_MAP
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            protocol_map_set: false,
            inter_broker: None,
            controller_names: Vec::new(),
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Parses `NAME://host:port[,NAME://host:port...]` (`listeners`, `advertised.listeners`).
pub fn parse_endpoints(key: &str, v: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let mut out: Vec<Endpoint> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, v, format!("{item:?}: expected NAME://host:port")))?;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(key, v, format!("{item:?}: bad listener name")));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, v, format!("{item:?}: expected NAME://host:port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(key, v, format!("{item:?}: port must be 0-65535")))?;
        let host = host.trim_matches(|c| c == '[' || c == ']').to_string();
        if out.iter().any(|e| e.name == name) {
            return Err(invalid(
                key,
                v,
                format!("listener name {name} is used twice"),
            ));
        }
        out.push(Endpoint { name, host, port });
    }
    if out.is_empty() {
        return Err(invalid(key, v, "expected at least one NAME://host:port"));
    }
    Ok(out)
}

/// Parses `NAME:PROTOCOL[,NAME:PROTOCOL...]`.
pub fn parse_protocol_map(key: &str, v: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, protocol) = item
            .split_once(':')
            .ok_or_else(|| invalid(key, v, format!("{item:?}: expected NAME:PROTOCOL")))?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !SECURITY_PROTOCOLS.contains(&protocol.as_str()) {
            return Err(invalid(
                key,
                v,
                format!(
                    "{protocol}: expected one of {}",
                    SECURITY_PROTOCOLS.join(", ")
                ),
            ));
        }
        map.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(map)
}

/// Parses a comma-separated list of listener names.
pub fn parse_names(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The validated listener model.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// Listeners that serve the Kafka protocol, in the order given.
    pub broker: Vec<Endpoint>,
    /// What clients of each broker listener are told (port 0: the bound port).
    pub advertised: BTreeMap<String, Endpoint>,
    /// The broker listener other brokers reach this one on.
    pub inter_broker: String,
    pub controller_names: Vec<String>,
    /// Controller listeners given in `listeners` (where the quorum voter listens).
    pub controller: Vec<Endpoint>,
    /// Each listener's security protocol (`listener.security.protocol.map`).
    pub protocols: BTreeMap<String, String>,
    /// The first of `controller.listener.names` and its security protocol: what the
    /// quorum port speaks (None: no controller listener named, PLAINTEXT).
    pub controller_protocol: Option<(String, String)>,
}

impl ListenerConfig {
    /// Checks the listener keys together, as Kafka's KafkaConfig does. `voter_port` is
    /// this node's port in `controller.quorum.voters`, if it is a voter.
    pub fn validate(
        &self,
        broker_role: bool,
        voter_port: Option<u16>,
    ) -> Result<Listeners, ConfigError> {
        let mut map = self.protocol_map.clone();
        for name in &self.controller_names {
            // Kafka: without an explicit map, a controller listener whose name is not a
            // security protocol is PLAINTEXT.
            if !self.protocol_map_set && !map.contains_key(name) {
                map.insert(name.clone(), "PLAINTEXT".into());
            }
        }
        let listed = self
            .listeners
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for e in &self.listeners {
            if !map.contains_key(&e.name) {
                return Err(invalid(
                    "listener.security.protocol.map",
                    &format_map(&map),
                    format!("listener {} has no security protocol", e.name),
                ));
            }
        }
        // Kafka: brokers reach the controllers on the first controller listener, which a
        // broker-only node names without listing it in `listeners`.
        let controller_protocol = match self.controller_names.first() {
            None => None,
            Some(name) => Some((
                name.clone(),
                map.get(name).cloned().ok_or_else(|| {
                    invalid(
                        "listener.security.protocol.map",
                        &format_map(&map),
                        format!("controller listener {name} has no security protocol"),
                    )
                })?,
            )),
        };
        let (controller, broker): (Vec<Endpoint>, Vec<Endpoint>) = self
            .listeners
            .iter()
            .cloned()
            .partition(|e| self.controller_names.contains(&e.name));
        if let (Some(port), Some(c)) = (voter_port, controller.first()) {
            if c.port != port && c.port != 0 {
                return Err(invalid(
                    "listeners",
                    &listed,
                    format!(
                        "controller listener {c} must be on this node's port in controller.quorum.voters ({port})"
                    ),
                ));
            }
        }
        if broker_role && broker.is_empty() {
            return Err(invalid(
                "listeners",
                &listed,
                "a broker needs a listener that is not in controller.listener.names",
            ));
        }
        let inter_broker = match &self.inter_broker {
            Some(name) if broker.iter().any(|e| &e.name == name) => name.clone(),
            Some(name) => {
                return Err(invalid(
                    "inter.broker.listener.name",
                    name,
                    format!("no such broker listener in listeners ({listed})"),
                ))
            }
            None if broker.iter().any(|e| e.name == "PLAINTEXT") => "PLAINTEXT".into(),
            None if broker.len() <= 1 => broker.first().map_or(String::new(), |e| e.name.clone()),
            None => return Err(invalid(
                "inter.broker.listener.name",
                "",
                "several broker listeners and none is named PLAINTEXT: name the one brokers use",
            )),
        };
        for a in &self.advertised {
            if !self.listeners.iter().any(|e| e.name == a.name) {
                return Err(invalid(
                    "advertised.listeners",
                    &a.to_string(),
                    format!("{} is not in listeners", a.name),
                ));
            }
        }
        let advertised = broker
            .iter()
            .map(|e| {
                let a = self
                    .advertised
                    .iter()
                    .find(|a| a.name == e.name)
                    .unwrap_or(e)
                    .clone();
                (e.name.clone(), a)
            })
            .collect();
        Ok(Listeners {
            broker,
            advertised,
            inter_broker,
            controller_names: self.controller_names.clone(),
            controller,
            controller_protocol,
            protocols: self
                .listeners
                .iter()
                .filter_map(|e| Some((e.name.clone(), map.get(&e.name)?.clone())))
                .collect(),
        })
    }
}

fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Listeners {
    /// `listener.security.protocol.map` as DescribeConfigs shows it.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let all: Vec<String> = self
            .broker
            .iter()
            .chain(&self.controller)
            .map(ToString::to_string)
            .collect();
        let advertised: Vec<String> = self.advertised.values().map(ToString::to_string).collect();
        vec![
            ("listeners", all.join(",")),
            ("advertised.listeners", advertised.join(",")),
            ("inter.broker.listener.name", self.inter_broker.clone()),
            ("controller.listener.names", self.controller_names.join(",")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> ListenerConfig {
        let mut c = ListenerConfig::default();
        for (k, v) in pairs {
            match *k {
                "listeners" => c.listeners = parse_endpoints(k, v).unwrap(),
                "advertised.listeners" => c.advertised = parse_endpoints(k, v).unwrap(),
                "listener.security.protocol.map" => {
                    c.protocol_map = parse_protocol_map(k, v).unwrap();
                    c.protocol_map_set = true;
                }
                "inter.broker.listener.name" => c.inter_broker = Some(v.to_string()),
                "controller.listener.names" => c.controller_names = parse_names(v),
                _ => panic!("{k}"),
            }
        }
        c
    }

    #[test]
    fn kafkas_kraft_combined_node_is_accepted() {
        let l = config(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .validate(true, Some(9093))
        .unwrap();
        assert_eq!(l.broker.len(), 1);
        assert_eq!(l.broker[0].port, 9092);
        assert_eq!(l.inter_broker, "PLAINTEXT");
        assert_eq!(l.controller[0].port, 9093);
    }

    #[test]
    fn a_separate_replication_listener() {
        let l = config(&[
            (
                "listeners",
                "CLIENT://127.0.0.1:9092,REPLICATION://127.0.0.1:9094,CONTROLLER://:9093",
            ),
            (
                "listener.security.protocol.map",
                "CLIENT:PLAINTEXT,REPLICATION:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("inter.broker.listener.name", "REPLICATION"),
            ("controller.listener.names", "CONTROLLER"),
            ("advertised.listeners", "CLIENT://localhost:9092"),
        ])
        .validate(true, Some(9093))
        .unwrap();
        assert_eq!(l.inter_broker, "REPLICATION");
        assert_eq!(l.advertised["CLIENT"].host, "localhost");
        assert_eq!(l.advertised["REPLICATION"].port, 9094);
    }

    #[test]
    fn refusals_name_the_key() {
        let err = |c: ListenerConfig, voter| c.validate(true, voter).unwrap_err().to_string();
        // An explicit map must name every listener.
        let e = err(
            config(&[
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT"),
                ("controller.listener.names", "CONTROLLER"),
            ]),
            None,
        );
        assert!(
            e.contains("listener.security.protocol.map") && e.contains("CONTROLLER"),
            "{e}"
        );
        let e = err(
            config(&[
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT"),
                ("controller.listener.names", "CONTROLLER"),
            ]),
            None,
        );
        // A secured controller listener (the quorum speaks TLS / SASL), named also by a
        // broker-only node that does not list it.
        let l = config(&[
            ("listeners", "PLAINTEXT://:9092"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .validate(true, None)
        .unwrap();
        assert_eq!(
            l.controller_protocol,
            Some(("CONTROLLER".into(), "SASL_SSL".into()))
        );
        assert!(
            e.contains("listener.security.protocol.map") && e.contains("CONTROLLER"),
            "{e}"
        );
        let ok = config(&[("listeners", "SSL://:9093")])
            .validate(true, None)
            .unwrap();
        assert_eq!(ok.protocols["SSL"], "SSL");
        let e = err(
            config(&[
                ("listeners", "A://:1,B://:2"),
                ("listener.security.protocol.map", "A:PLAINTEXT,B:PLAINTEXT"),
            ]),
            None,
        );
        assert!(e.contains("inter.broker.listener.name"), "{e}");
        let e = err(
            config(&[
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9099"),
                ("controller.listener.names", "CONTROLLER"),
            ]),
            Some(9093),
        );
        assert!(e.contains("controller.quorum.voters"), "{e}");
        let e = err(
            config(&[
                ("listeners", "PLAINTEXT://:9092"),
                ("advertised.listeners", "OTHER://h:1"),
            ]),
            None,
        );
        assert!(e.contains("advertised.listeners"), "{e}");
        assert!(parse_endpoints("listeners", "127.0.0.1:9092").is_err());
        assert!(parse_endpoints("listeners", "A://:1,A://:2").is_err());
    }
}
