//! Where the cluster is and how to reach it, in the spellings Kafka's tools, kcat and rpk
//! users bring: `-b/--bootstrap-server`, `--command-config FILE` (Java client
//! properties), `-X key=value` (librdkafka properties), `RUNNEL_BROKERS`, and `--timeout`.
//!
//! Precedence, strongest first: `--bootstrap-server`, `-X`, `--command-config`,
//! `RUNNEL_BROKERS`, then 127.0.0.1:9092. Security settings (`security.protocol`, TLS
//! with PEM files, SASL PLAIN/SCRAM with Java- or librdkafka-style keys) are honoured, and
//! what cannot be is refused with a message rather than ignored.

use super::UsageError;
use clap::Args;
use runnel_client::{Client, ClientConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable naming the bootstrap servers when no flag or file does.
pub const BROKERS_ENV: &str = "RUNNEL_BROKERS";
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Client properties the tools act on; any other key gets a warning naming it.
const KNOWN_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "request.timeout.ms",
    "socket.timeout.ms",
    "group.id",
    "auto.offset.reset",
];

fn is_known(key: &str) -> bool {
    KNOWN_KEYS.contains(&key) || runnel_client::security::SECURITY_KEYS.contains(&key)
}

/// Where the cluster is.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Broker(s) to bootstrap from, host:port[,host:port...] [default: $RUNNEL_BROKERS,
    /// else 127.0.0.1:9092].
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        visible_alias = "bootstrap-servers",
        alias = "broker-list",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: Option<String>,
    /// Client properties file, as Kafka's tools take it (bootstrap.servers, client.id,
    /// request.timeout.ms, security.protocol, ssl.truststore.location, sasl.mechanism,
    /// sasl.jaas.config or sasl.username/sasl.password).
    #[arg(
        long = "command-config",
        alias = "consumer.config",
        alias = "producer.config",
        value_name = "FILE"
    )]
    pub command_config: Option<PathBuf>,
    /// A client property, as kcat takes it, e.g. -X bootstrap.servers=HOST:PORT (repeatable).
    #[arg(
        short = 'X',
        long = "property",
        alias = "consumer-property",
        alias = "producer-property",
        value_name = "KEY=VALUE",
        value_parser = super::parse_key_value
    )]
    pub properties: Vec<(String, String)>,
    /// Give up when no broker answers within this many seconds.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 10.0,
          value_parser = parse_timeout)]
    pub connect_timeout_secs: f64,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The settings after every source was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub bootstrap: String,
    /// Where `bootstrap` came from, for the "connecting to" line.
    pub source: String,
    /// Every property given (file, then -X), keys as written.
    pub properties: BTreeMap<String, String>,
}

impl Resolved {
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }
}

/// TLS and SASL settings from the properties (runnel-client reads them, as cluster
/// links do); what cannot be honoured is a usage error naming the key.
fn client_security(
    props: &BTreeMap<String, String>,
) -> Result<Option<runnel_client::security::ClientSecurity>, UsageError> {
    runnel_client::security::security_from_properties(props).map_err(UsageError)
}

impl ConnArgs {
    /// Reads every source; `env` is the value of RUNNEL_BROKERS (passed in for tests).
    pub fn resolve_with(&self, env: Option<String>) -> Result<Resolved, UsageError> {
        let mut properties = BTreeMap::new();
        let mut origins = BTreeMap::new();
        if let Some(path) = &self.command_config {
            let pairs = runnel_broker::BrokerConfig::read_properties(path)
                .map_err(|e| UsageError(format!("--command-config: {e}")))?;
            for (k, v) in pairs {
                origins.insert(k.clone(), path.display().to_string());
                properties.insert(k, v);
            }
        }
        for (k, v) in &self.properties {
            origins.insert(k.clone(), "-X".to_string());
            properties.insert(k.clone(), v.clone());
        }
        for k in properties.keys() {
            if !is_known(k) {
                errln!(
                    "warning: ignoring client property {k} ({}); the tools use {}, {}",
                    origins[k],
                    KNOWN_KEYS.join(", "),
                    runnel_client::security::SECURITY_KEYS.join(", ")
                );
            }
        }
        let from_props = ["bootstrap.servers", "metadata.broker.list"]
            .iter()
            .find_map(|k| {
                properties
                    .get(*k)
                    .map(|v| (v.clone(), format!("{k} in {}", origins[*k])))
            });
        let (bootstrap, source) = match (&self.bootstrap_server, from_props, env) {
            (Some(b), _, _) => (b.clone(), "--bootstrap-server".to_string()),
            (None, Some(p), _) => p,
            (None, None, Some(e)) if !e.trim().is_empty() => (e, BROKERS_ENV.to_string()),
            _ => (DEFAULT_BOOTSTRAP.to_string(), "the default".to_string()),
        };
        Ok(Resolved {
            bootstrap,
            source,
            properties,
        })
    }

    pub fn resolve(&self) -> Result<Resolved, UsageError> {
        self.resolve_with(std::env::var(BROKERS_ENV).ok())
    }

    /// The first bootstrap address and the connection settings (TLS, SASL, timeouts)
    /// the properties give, for tools that open raw connections.
    pub fn connection_config(
        &self,
    ) -> Result<(String, runnel_client::ConnectionConfig), UsageError> {
        let resolved = self.resolve()?;
        let mut config = ClientConfig::default();
        apply_properties(&resolved, &mut config)?;
        config.connection.connect_timeout = self.timeout();
        let first = runnel_client::parse_bootstrap(&resolved.bootstrap)
            .map_err(|e| UsageError(e.to_string()))?
            .remove(0);
        Ok((first, config.connection))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_secs)
    }

    /// Connects, saying where on stderr (once a process), and fails within `--timeout`
    /// naming the address when nothing answers.
    pub async fn connect(&self, config: ClientConfig) -> anyhow::Result<Client> {
        let resolved = self.resolve()?;
        self.connect_resolved(&resolved, config).await
    }

    pub async fn connect_resolved(
        &self,
        resolved: &Resolved,
        mut config: ClientConfig,
    ) -> anyhow::Result<Client> {
        apply_properties(resolved, &mut config)?;
        let timeout = self.timeout();
        config.connection.connect_timeout = timeout;
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            errln!(
                "connecting to {} (from {})",
                resolved.bootstrap,
                resolved.source
            );
        }
        match tokio::time::timeout(timeout, Client::connect(&resolved.bootstrap, config)).await {
            Ok(result) => Ok(result?),
            Err(_) => anyhow::bail!(
                "no broker answered at {} within {} s (from {}); is the broker running? \
                 For a slower one: --timeout SECS",
                resolved.bootstrap,
                self.connect_timeout_secs,
                resolved.source
            ),
        }
    }
}

/// Applies client.id and the timeouts; a malformed number is a usage error.
fn apply_properties(resolved: &Resolved, config: &mut ClientConfig) -> Result<(), UsageError> {
    if let Some(id) = resolved.property("client.id") {
        config.connection.client_id = id.to_string();
    }
    for key in ["request.timeout.ms", "socket.timeout.ms"] {
        if let Some(v) = resolved.property(key) {
            let ms: u64 = v
                .parse()
                .map_err(|_| UsageError(format!("{key}={v}: expected milliseconds")))?;
            config.connection.request_timeout = Duration::from_millis(ms.max(1));
        }
    }
    config.connection.security = client_security(&resolved.properties)?.map(std::sync::Arc::new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(b: Option<&str>, x: &[(&str, &str)]) -> ConnArgs {
        ConnArgs {
            bootstrap_server: b.map(str::to_string),
            properties: x
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            connect_timeout_secs: 10.0,
            ..ConnArgs::default()
        }
    }

    #[test]
    fn bootstrap_precedence_is_flag_then_properties_then_env_then_default() {
        let env = || Some("env:1".to_string());
        let r = args(Some("flag:1"), &[("bootstrap.servers", "x:1")])
            .resolve_with(env())
            .unwrap();
        assert_eq!(
            (r.bootstrap.as_str(), r.source.as_str()),
            ("flag:1", "--bootstrap-server")
        );
        let r = args(None, &[("bootstrap.servers", "x:1")])
            .resolve_with(env())
            .unwrap();
        assert_eq!(r.bootstrap, "x:1");
        assert!(r.source.contains("-X"), "{}", r.source);
        let r = args(None, &[("metadata.broker.list", "m:1")])
            .resolve_with(None)
            .unwrap();
        assert_eq!(r.bootstrap, "m:1");
        let r = args(None, &[]).resolve_with(env()).unwrap();
        assert_eq!(
            (r.bootstrap.as_str(), r.source.as_str()),
            ("env:1", BROKERS_ENV)
        );
        let r = args(None, &[]).resolve_with(Some(" ".into())).unwrap();
        assert_eq!(r.bootstrap, DEFAULT_BOOTSTRAP);
    }

    #[test]
    fn properties_file_is_read_and_x_wins_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.properties");
        std::fs::write(
            &path,
            "# a comment\nbootstrap.servers=file:1\nclient.id = me\n",
        )
        .unwrap();
        let mut a = args(None, &[("client.id", "x")]);
        a.command_config = Some(path.clone());
        let r = a.resolve_with(None).unwrap();
        assert_eq!(r.bootstrap, "file:1");
        assert!(r.source.contains("client.properties"), "{}", r.source);
        assert_eq!(r.property("client.id"), Some("x"));
        let mut config = ClientConfig::default();
        apply_properties(&r, &mut config).unwrap();
        assert_eq!(config.connection.client_id, "x");
        a.command_config = Some(dir.path().join("missing"));
        assert!(a.resolve_with(None).unwrap_err().0.contains("missing"));
    }

    #[test]
    fn security_keys_are_read_and_unusable_ones_refused() {
        let props = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            client_security(&props(&[("security.protocol", "plaintext")]))
                .unwrap()
                .is_none()
        );
        let s = client_security(&props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="pw";"#,
            ),
        ]))
        .unwrap()
        .unwrap();
        let sasl = s.sasl.unwrap();
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("alice", "pw")
        );
        let s = client_security(&props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "bob"),
            ("sasl.password", "x"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.sasl.unwrap().username, "bob");
        for (p, needle) in [
            (vec![("security.protocol", "SASL_SSL")], "ssl"),
            (vec![("security.protocol", "SSL")], "CA"),
            (
                vec![
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "GSSAPI"),
                ],
                "GSSAPI",
            ),
            (
                vec![
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "PLAIN"),
                ],
                "password",
            ),
            (vec![("security.protocol", "BOGUS")], "BOGUS"),
            (
                vec![("security.protocol", "SSL"), ("ssl.truststore.type", "JKS")],
                "PEM",
            ),
        ] {
            let e = client_security(&props(&p)).unwrap_err().0;
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn malformed_timeouts_are_usage_errors() {
        let r = args(None, &[("request.timeout.ms", "soon")])
            .resolve_with(None)
            .unwrap();
        let e = apply_properties(&r, &mut ClientConfig::default()).unwrap_err();
        assert!(e.0.contains("request.timeout.ms"), "{}", e.0);
        assert!(parse_timeout("0").is_err() && parse_timeout("x").is_err());
        assert_eq!(parse_timeout("2.5"), Ok(2.5));
    }
}
