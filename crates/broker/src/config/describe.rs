//! DescribeConfigs' view of the broker and topic keys, from the table in `keys.rs`:
//! value, Kafka's config source, synonyms, read-only and sensitive flags, type and
//! documentation. The Kafka handler and the HTTP config listing both render it.
//!
//! Kafka's rules (`ConfigHelper`): a key's synonyms are every place its value may come
//! from, in precedence order (a topic's own config; then each broker synonym as set
//! dynamically, in the file, or by default); the entry's source is the first synonym's,
//! or DEFAULT_CONFIG when there is none.

use std::collections::BTreeMap;

use super::keys::{self, ConfigDef, Dynamic};
use super::BrokerConfig;

/// Kafka's ConfigSource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Topic,
    DynamicBroker,
    StaticBroker,
    Default,
}

impl Source {
    /// The wire value (DescribeConfigs v1+).
    pub fn code(self) -> i8 {
        match self {
            Source::Topic => 1,
            Source::DynamicBroker => 2,
            Source::StaticBroker => 4,
            Source::Default => 5,
        }
    }

    /// The Java enum's name (`ConfigEntry.ConfigSource`), as the HTTP API shows it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Topic => "DYNAMIC_TOPIC_CONFIG",
            Source::DynamicBroker => "DYNAMIC_BROKER_CONFIG",
            Source::StaticBroker => "STATIC_BROKER_CONFIG",
            Source::Default => "DEFAULT_CONFIG",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: Option<String>,
    pub source: Source,
}

/// One described key.
#[derive(Debug, Clone)]
pub struct Described {
    pub name: String,
    pub value: Option<String>,
    pub source: Source,
    pub read_only: bool,
    pub sensitive: bool,
    /// Kafka's ConfigType code (0: unknown).
    pub config_type: i8,
    pub doc: &'static str,
    pub synonyms: Vec<Synonym>,
}

/// Where a broker key's value is defined: dynamically, in the file, by default.
fn broker_sources(
    def: &ConfigDef,
    c: &BrokerConfig,
    dynamic: &BTreeMap<String, String>,
) -> Vec<Synonym> {
    let shown = |v: &str| (!def.sensitive()).then(|| v.to_string());
    let mut out = Vec::new();
    let mut add = |value: Option<String>, source| {
        out.push(Synonym {
            name: def.name.to_string(),
            value,
            source,
        })
    };
    if let Some(v) = dynamic.get(def.name) {
        add(shown(v), Source::DynamicBroker);
    }
    // Secrets are kept out of `explicit`; the security keys say they were set.
    if let Some(v) = c.explicit.get(def.name) {
        add(shown(v), Source::StaticBroker);
    } else if def.sensitive() && c.security.keys.contains_key(def.name) {
        add(None, Source::StaticBroker);
    }
    if let Some(v) = def.default_value() {
        add(shown(v), Source::Default);
    }
    out
}

/// A broker key's synonyms: the key itself, then the coarser units that stand in for
/// it (`log.retention.ms`: `.minutes`, `.hours`).
fn broker_synonyms(
    def: &ConfigDef,
    c: &BrokerConfig,
    dynamic: &BTreeMap<String, String>,
) -> Vec<Synonym> {
    let mut out = broker_sources(def, c, dynamic);
    if let Some(topic) = def.topic {
        let coarser = keys::broker_synonyms(topic).skip_while(|d| d.name != def.name);
        for d in coarser.skip(1) {
            out.extend(broker_sources(d, c, dynamic));
        }
    }
    out
}

/// Every broker key with its value in force. `c` is the effective configuration
/// (static keys with the `dynamic` ones applied).
pub fn broker(c: &BrokerConfig, dynamic: &BTreeMap<String, String>) -> Vec<Described> {
    let mut out: Vec<Described> = keys::broker_keys()
        .map(|def| {
            let synonyms = broker_synonyms(def, c, dynamic);
            // A stored-only key, or one without a parsed form, shows what was set.
            let as_set = def.dynamic == Dynamic::Stored || def.get.is_none();
            let value = if def.sensitive() {
                None
            } else if let Some(v) = dynamic.get(def.name).filter(|_| as_set) {
                Some(v.clone())
            } else if let Some(get) = def.get {
                get(c)
            } else {
                c.explicit
                    .get(def.name)
                    .cloned()
                    .or_else(|| def.default_value().map(String::from))
            };
            Described {
                name: def.name.to_string(),
                value,
                source: synonyms.first().map_or(Source::Default, |s| s.source),
                read_only: def.dynamic == Dynamic::ReadOnly,
                sensitive: def.sensitive(),
                config_type: def.kind.type_code(),
                doc: def.doc,
                synonyms,
            }
        })
        .collect();
    // Keys set that the table does not declare (per-listener security keys).
    for (k, v) in &c.explicit {
        if keys::broker_key(k).is_none() {
            out.push(Described {
                name: k.clone(),
                value: Some(v.clone()),
                source: Source::StaticBroker,
                read_only: true,
                sensitive: false,
                config_type: 0,
                doc: "",
                synonyms: vec![Synonym {
                    name: k.clone(),
                    value: Some(v.clone()),
                    source: Source::StaticBroker,
                }],
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every topic config of a topic whose own configs are `configs`.
pub fn topic(
    c: &BrokerConfig,
    dynamic: &BTreeMap<String, String>,
    configs: &BTreeMap<String, String>,
) -> Vec<Described> {
    let mut out: Vec<Described> = keys::topic_keys()
        .map(|def| {
            let mut synonyms = Vec::new();
            if let Some(v) = configs.get(def.name) {
                synonyms.push(Synonym {
                    name: def.name.to_string(),
                    value: Some(v.clone()),
                    source: Source::Topic,
                });
            }
            for b in keys::broker_synonyms(def.name) {
                synonyms.extend(broker_sources(b, c, dynamic));
            }
            let value = configs
                .get(def.name)
                .cloned()
                .or_else(|| super::topic_config_default(def.name, c));
            Described {
                name: def.name.to_string(),
                value,
                source: synonyms.first().map_or(Source::Default, |s| s.source),
                read_only: false,
                sensitive: false,
                config_type: def.kind.type_code(),
                doc: def.doc,
                synonyms,
            }
        })
        .collect();
    // Validated when set, so never expected; shown rather than hidden if there.
    for (k, v) in configs {
        if keys::topic_key(k).is_none() {
            out.push(Described {
                name: k.clone(),
                value: Some(v.clone()),
                source: Source::Topic,
                read_only: false,
                sensitive: false,
                config_type: 0,
                doc: "",
                synonyms: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BrokerConfig {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BrokerConfig::from_pairs(&pairs).unwrap()
    }

    fn find<'a>(all: &'a [Described], name: &str) -> &'a Described {
        all.iter().find(|d| d.name == name).unwrap()
    }

    #[test]
    fn an_unset_topic_config_takes_its_broker_synonyms_source() {
        let c = config(&[
            ("log.retention.hours", "2"),
            ("log.segment.bytes", "1048576"),
        ]);
        let none = BTreeMap::new();
        let topic_set = BTreeMap::from([("segment.bytes".to_string(), "2000000".to_string())]);
        let all = topic(&c, &none, &topic_set);
        let retention = find(&all, "retention.ms");
        // Kafka: the hours key set in the file makes retention.ms STATIC_BROKER_CONFIG.
        assert_eq!(retention.value.as_deref(), Some("7200000"));
        assert_eq!(retention.source, Source::StaticBroker);
        let names: Vec<(&str, Source)> = retention
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.source))
            .collect();
        assert_eq!(
            names,
            [
                ("log.retention.hours", Source::StaticBroker),
                ("log.retention.hours", Source::Default)
            ]
        );
        let segment = find(&all, "segment.bytes");
        assert_eq!(segment.source, Source::Topic);
        assert_eq!(segment.synonyms[1].source, Source::StaticBroker);
        assert_eq!(find(&all, "cleanup.policy").source, Source::Default);
        // A dynamic broker value wins over the file.
        let dynamic = BTreeMap::from([("log.retention.ms".to_string(), "5000".to_string())]);
        let effective = c.with_dynamic(&dynamic).unwrap();
        let all = topic(&effective, &dynamic, &none);
        let retention = find(&all, "retention.ms");
        assert_eq!(
            (retention.value.as_deref(), retention.source),
            (Some("5000"), Source::DynamicBroker)
        );
    }

    #[test]
    fn broker_keys_are_all_described_with_kafkas_flags() {
        let c = config(&[("num.partitions", "3"), ("ssl.truststore.password", "x")]);
        let all = broker(&c, &BTreeMap::new());
        assert_eq!(all.len(), keys::broker_keys().count());
        let n = find(&all, "num.partitions");
        assert_eq!(
            (n.value.as_deref(), n.source, n.read_only, n.config_type),
            (Some("3"), Source::StaticBroker, true, 3)
        );
        let secret = find(&all, "ssl.truststore.password");
        assert!(secret.sensitive && secret.value.is_none());
        assert_eq!(secret.source, Source::StaticBroker);
        let dynamic = find(&all, "log.retention.bytes");
        assert!(!dynamic.read_only && dynamic.source == Source::Default);
        assert_eq!(find(&all, "broker.rack").value, None);
    }
}
